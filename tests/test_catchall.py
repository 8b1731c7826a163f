"""Catch-all decisions: what the made-up address's answer means for real recipients."""

import random

import pytest

from engine.catchall import ProbeOutcome, made_up_local_part, probe_outcome, recipient_verdict
from engine.result import Reason, Status, Verdict

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
    ("probe", "outcome"),
    [
        (ACCEPTED, ProbeOutcome.ACCEPTS_ALL),
        (NOT_FOUND, ProbeOutcome.REJECTS_UNKNOWN),
        (Verdict.of(Reason.MAILBOX_DISABLED), ProbeOutcome.REJECTS_UNKNOWN),
        (BLOCKED, ProbeOutcome.BLOCKED),
        (GREYLISTED, ProbeOutcome.UNDECIDED),
        (Verdict.of(Reason.TEMPORARY_FAILURE), ProbeOutcome.UNDECIDED),
    ],
)
def test_probe_outcome_from_probe_verdict(probe: Verdict, outcome: ProbeOutcome) -> None:
    assert probe_outcome(probe) is outcome


def test_accepted_recipient_on_catch_all_domain_is_catch_all() -> None:
    verdict = recipient_verdict(ProbeOutcome.ACCEPTS_ALL, ACCEPTED, ACCEPTED)
    assert (verdict.status, verdict.reason) == (Status.CATCH_ALL, Reason.ACCEPT_ALL)


def test_rejected_recipient_on_catch_all_domain_stays_invalid() -> None:
    assert recipient_verdict(ProbeOutcome.ACCEPTS_ALL, ACCEPTED, NOT_FOUND) == NOT_FOUND


def test_blocked_probe_makes_every_answer_of_the_session_blocked() -> None:
    assert recipient_verdict(ProbeOutcome.BLOCKED, BLOCKED, ACCEPTED) == BLOCKED
    assert recipient_verdict(ProbeOutcome.BLOCKED, BLOCKED, NOT_FOUND) == BLOCKED


def test_accepted_recipient_is_valid_when_unknown_addresses_are_rejected() -> None:
    assert recipient_verdict(ProbeOutcome.REJECTS_UNKNOWN, NOT_FOUND, ACCEPTED) == ACCEPTED


def test_accepted_recipient_takes_the_probes_doubt_when_the_probe_was_greylisted() -> None:
    assert recipient_verdict(ProbeOutcome.UNDECIDED, GREYLISTED, ACCEPTED) == GREYLISTED
