"""The score rubric and actions: bands never overlap, flags move scores within their band."""

import pytest
from mailprobe.engine.result import STATUS_OF_REASON, Action, Reason, Status
from mailprobe.engine.score import BANDS, BASE_SCORE, action, score


@pytest.mark.parametrize("reason", list(Reason))
@pytest.mark.parametrize("role", [False, True])
@pytest.mark.parametrize("free", [False, True])
@pytest.mark.parametrize("provider_known", [False, True])
def test_every_score_lies_in_its_status_band(
    reason: Reason, role: bool, free: bool, provider_known: bool
) -> None:
    status = STATUS_OF_REASON[reason]
    low, high = BANDS[status]
    value = score(status, reason, role=role, free=free, provider_known=provider_known)
    assert low <= value <= high


def test_bands_do_not_overlap_so_a_score_filter_never_contradicts_the_status() -> None:
    spans = sorted(BANDS.values())
    for (_, high), (low, _) in zip(spans, spans[1:], strict=False):
        assert high < low


def test_every_reason_has_a_base_score() -> None:
    assert set(BASE_SCORE) == set(Reason)


def test_valid_role_and_free_addresses_score_lower_than_plain_valid() -> None:
    plain = score(Status.VALID, Reason.ACCEPTED)
    assert score(Status.VALID, Reason.ACCEPTED, role=True) < plain
    assert score(Status.VALID, Reason.ACCEPTED, free=True) < plain


def test_catch_all_business_domain_with_known_provider_scores_higher() -> None:
    business = score(Status.CATCH_ALL, Reason.ACCEPT_ALL, provider_known=True)
    free = score(Status.CATCH_ALL, Reason.ACCEPT_ALL, free=True)
    assert business > free


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (Status.VALID, Reason.ACCEPTED, Action.SEND),
        (Status.INVALID, Reason.MAILBOX_NOT_FOUND, Action.DO_NOT_SEND),
        (Status.CATCH_ALL, Reason.ACCEPT_ALL, Action.CAUTION),
        (Status.RISKY, Reason.DISPOSABLE, Action.DO_NOT_SEND),
        (Status.RISKY, Reason.MAILBOX_FULL, Action.CAUTION),
        (Status.RISKY, Reason.ROLE_ACCOUNT, Action.CAUTION),
        (Status.UNKNOWN, Reason.GREYLISTED, Action.RETRY),
        (Status.UNKNOWN, Reason.BLOCKED, Action.RETRY),
        (Status.UNKNOWN, Reason.UNVERIFIABLE_PROVIDER, Action.CAUTION),
    ],
)
def test_action_follows_status_and_reason(status: Status, reason: Reason, expected: Action) -> None:
    assert action(status, reason) is expected
