"""Catch-all decisions: what the made-up address's answer means for real recipients."""

import random

import pytest
from mailprobe.engine.catchall import (
    CatchAllOutcome,
    catch_all_outcome,
    made_up_local_part,
    recipient_verdict,
)
from mailprobe.engine.result import Reason, Status, Verdict

ACCEPTED = Verdict.of(Reason.ACCEPTED)
NOT_FOUND = Verdict.of(Reason.MAILBOX_NOT_FOUND)
BLOCKED = Verdict.of(Reason.BLOCKED)
GREYLISTED = Verdict.of(Reason.GREYLISTED, 60)


def test_made_up_local_parts_differ_and_start_with_a_letter() -> None:
    rng = random.Random(1)
    parts = {made_up_local_part(rng) for _ in range(100)}
    assert len(parts) == 100
    assert all(p[0].isalpha() and len(p) == 14 and p.isalnum() for p in parts)


@pytest.mark.parametrize(
    ("made_up", "outcome"),
    [
        (ACCEPTED, CatchAllOutcome.ACCEPTS_ALL),
        (NOT_FOUND, CatchAllOutcome.REJECTS_UNKNOWN),
        (Verdict.of(Reason.MAILBOX_DISABLED), CatchAllOutcome.REJECTS_UNKNOWN),
        (BLOCKED, CatchAllOutcome.BLOCKED),
        (GREYLISTED, CatchAllOutcome.UNDECIDED),
        (Verdict.of(Reason.TEMPORARY_FAILURE), CatchAllOutcome.UNDECIDED),
    ],
)
def test_catch_all_outcome_from_made_up_verdict(made_up: Verdict, outcome: CatchAllOutcome) -> None:
    assert catch_all_outcome(made_up) is outcome


def test_accepted_recipient_on_catch_all_domain_is_catch_all() -> None:
    verdict = recipient_verdict(CatchAllOutcome.ACCEPTS_ALL, ACCEPTED, ACCEPTED)
    assert (verdict.status, verdict.reason) == (Status.CATCH_ALL, Reason.ACCEPT_ALL)


def test_rejected_recipient_on_catch_all_domain_stays_invalid() -> None:
    assert recipient_verdict(CatchAllOutcome.ACCEPTS_ALL, ACCEPTED, NOT_FOUND) == NOT_FOUND


def test_blocked_made_up_address_makes_every_answer_of_the_session_blocked() -> None:
    assert recipient_verdict(CatchAllOutcome.BLOCKED, BLOCKED, ACCEPTED) == BLOCKED
    assert recipient_verdict(CatchAllOutcome.BLOCKED, BLOCKED, NOT_FOUND) == BLOCKED


def test_accepted_recipient_is_valid_when_unknown_addresses_are_rejected() -> None:
    assert recipient_verdict(CatchAllOutcome.REJECTS_UNKNOWN, NOT_FOUND, ACCEPTED) == ACCEPTED


def test_accepted_recipient_takes_the_doubt_of_a_greylisted_made_up_address() -> None:
    assert recipient_verdict(CatchAllOutcome.UNDECIDED, GREYLISTED, ACCEPTED) == GREYLISTED
