"""The score rubric and the recommended action, and nowhere else.

Scores live in non-overlapping bands per status, so a filter on the score never contradicts the
status (README, "The score"): valid 90-99, catch_all 40-75, unknown 20-39, risky 6-19, invalid 0-5.
Within a band the score says how safe sending is; the README documents this table.
"""

from __future__ import annotations

from .result import Action, Reason, Status

BANDS: dict[Status, tuple[int, int]] = {
    Status.VALID: (90, 99),
    Status.CATCH_ALL: (40, 75),
    Status.UNKNOWN: (20, 39),
    Status.RISKY: (6, 19),
    Status.INVALID: (0, 5),
}

#: The score a reason starts from, before flags move it within its status band.
BASE_SCORE: dict[Reason, int] = {
    Reason.ACCEPTED: 99,
    Reason.ACCEPT_ALL: 55,
    # unknown: how likely a retry finds a deliverable mailbox
    Reason.UNVERIFIABLE_PROVIDER: 38,
    Reason.GREYLISTED: 36,
    Reason.TEMPORARY_FAILURE: 33,
    Reason.RATE_LIMITED: 33,
    Reason.BLOCKED: 30,
    Reason.TIMEOUT: 28,
    Reason.CONNECTION_FAILED: 26,
    Reason.PROTOCOL_ERROR: 26,
    Reason.DNS_ERROR: 24,
    Reason.INTERNAL_ERROR: 20,
    # risky
    Reason.ROLE_ACCOUNT: 18,
    Reason.MAILBOX_FULL: 14,
    Reason.DISPOSABLE: 8,
    # invalid: all will bounce; a mistyped mailbox is nearer to a fix than a missing domain
    Reason.MAILBOX_DISABLED: 5,
    Reason.MAILBOX_NOT_FOUND: 4,
    Reason.UNROUTABLE_MX: 3,
    Reason.NO_MAIL_SERVER: 2,
    Reason.NULL_MX: 1,
    Reason.DOMAIN_NOT_FOUND: 1,
    Reason.INVALID_SYNTAX: 0,
}

#: Unknown reasons a later attempt may turn into an answer; the others will not change soon.
RETRIABLE: frozenset[Reason] = frozenset(
    {
        Reason.GREYLISTED,
        Reason.TIMEOUT,
        Reason.CONNECTION_FAILED,
        Reason.BLOCKED,
        Reason.RATE_LIMITED,
        Reason.TEMPORARY_FAILURE,
        Reason.DNS_ERROR,
        Reason.PROTOCOL_ERROR,
        Reason.INTERNAL_ERROR,
    }
)


def score(
    status: Status,
    reason: Reason,
    *,
    role: bool = False,
    free: bool = False,
    provider_known: bool = False,
) -> int:
    """Return the 0-100 score: the reason's base, moved by flags, clamped to the status band."""
    value = BASE_SCORE[reason]
    if status is Status.VALID:
        # Role and free mailboxes exist but engage less and complain more.
        value -= (4 if role else 0) + (3 if free else 0)
    elif status is Status.CATCH_ALL:
        # A business domain with a known mail provider usually means a real, managed mailbox.
        value += (10 if not free else -5) + (10 if provider_known else 0) - (5 if role else 0)
    low, high = BANDS[status]
    return max(low, min(high, value))


def action(status: Status, reason: Reason) -> Action:
    """Return what a CRM user should do; unknowns say retry when a retry can help."""
    if status is Status.VALID:
        return Action.SEND
    if status is Status.INVALID:
        return Action.DO_NOT_SEND
    if status is Status.RISKY:
        return Action.DO_NOT_SEND if reason is Reason.DISPOSABLE else Action.CAUTION
    if status is Status.UNKNOWN and reason in RETRIABLE:
        return Action.RETRY
    return Action.CAUTION
