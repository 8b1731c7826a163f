"""Made-up local parts and what the made-up address's answer means for the real recipients.

Ask about a made-up address first: if the server takes it, a 250 for a real one proves nothing.
Pure decisions; the SMTP session happens in probe.py.
"""

from __future__ import annotations

import random
import string
from enum import StrEnum

from .result import Reason, Status, Verdict

_ALPHABET = string.ascii_lowercase + string.digits


class CatchAllOutcome(StrEnum):
    """What the made-up address's RCPT reply says about the domain."""

    REJECTS_UNKNOWN = "rejects_unknown"  # refused as nonexistent: answers can be trusted
    ACCEPTS_ALL = "accepts_all"  # took a made-up address: the domain is catch-all
    BLOCKED = "blocked"  # refused *us*: nothing said in this session is trusted
    UNDECIDED = "undecided"  # greylisted, temporary, protocol trouble: ask again later


def made_up_local_part(rng: random.Random) -> str:
    """Return a local part no one has: 14 random letters and digits, starting with a letter."""
    return rng.choice(string.ascii_lowercase) + "".join(rng.choices(_ALPHABET, k=13))


def catch_all_outcome(verdict: Verdict) -> CatchAllOutcome:
    """Return what the made-up address's verdict says about the domain."""
    if verdict.status is Status.VALID:
        return CatchAllOutcome.ACCEPTS_ALL
    if verdict.status is Status.INVALID:
        return CatchAllOutcome.REJECTS_UNKNOWN
    if verdict.reason is Reason.BLOCKED:
        return CatchAllOutcome.BLOCKED
    return CatchAllOutcome.UNDECIDED


def recipient_verdict(outcome: CatchAllOutcome, made_up: Verdict, verdict: Verdict) -> Verdict:
    """Return a recipient's verdict once the made-up address's outcome is known."""
    if outcome is CatchAllOutcome.BLOCKED:
        # The server refused us for the made-up address; its other answers may be a policy act.
        return made_up
    if verdict.status is not Status.VALID:
        # An explicit refusal of this recipient stands whatever the domain does with others.
        return verdict
    if outcome is CatchAllOutcome.ACCEPTS_ALL:
        return Verdict.of(Reason.ACCEPT_ALL)
    if outcome is CatchAllOutcome.UNDECIDED:
        # Accepted, but we cannot tell a real mailbox from a catch-all yet: the made-up's doubt.
        return made_up
    return verdict
