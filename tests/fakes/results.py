"""Plausible engine results for tests that need stored answers without running the engine."""

from __future__ import annotations

from datetime import UTC, datetime

from mailprobe.engine import score
from mailprobe.engine.result import Checks, Reason, SmtpCheck, Status, VerificationResult

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

_DEFAULT_REASON = {
    Status.VALID: Reason.ACCEPTED,
    Status.INVALID: Reason.MAILBOX_NOT_FOUND,
    Status.CATCH_ALL: Reason.ACCEPT_ALL,
    Status.RISKY: Reason.MAILBOX_FULL,
    Status.UNKNOWN: Reason.TIMEOUT,
}


def make_result(
    email: str,
    status: Status = Status.VALID,
    reason: Reason | None = None,
    *,
    at: datetime = NOW,
    mx_host: str = "mx.example.test",
    catch_all: bool = False,
) -> VerificationResult:
    """Return a plausible engine result for `email` (normalised = stripped input)."""
    reason = reason or _DEFAULT_REASON[status]
    smtp = SmtpCheck(
        connected=True,
        mailbox_exists=status is Status.VALID,
        is_catch_all=catch_all,
        smtp_provider="Postfix",
        response_code=250 if status is Status.VALID else 550,
        enhanced_code="2.1.5" if status is Status.VALID else "5.1.1",
        response_message="ok",
        mx_host=mx_host,
        tls=False,
    )
    checks = Checks(True, True, True, smtp, False, catch_all, False, False)
    return VerificationResult(
        email=email,
        normalized=email.strip(),
        status=status,
        reason=reason,
        action=score.action(status, reason),
        score=score.score(status, reason),
        checks=checks,
        suggestion=None,
        verified_at=at,
        response_time_ms=5,
    )
