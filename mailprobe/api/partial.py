"""Partial answers: `unknown/timeout` with what is known before the SMTP answer.

Owns the partial result (syntax, mail route, flags). It decides and builds nothing of its own:
the engine's result builder does (`result_without_session`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from mailprobe.engine import (
    Address,
    MailRoute,
    Reason,
    Verdict,
    VerificationResult,
    result_without_session,
)


def partial_result(
    email: str,
    address: Address,
    route: MailRoute | None,
    *,
    elapsed_ms: int,
    now: datetime,
) -> VerificationResult:
    """Return `unknown/timeout` with what is known before the SMTP answer: syntax, route, flags.

    `route` is None when the mail route was not known by the deadline either.
    """
    timed_out = Verdict.of(Reason.TIMEOUT)  # no session answered: checks.smtp is null
    result = result_without_session(email, address, timed_out, route=route)
    return replace(result, verified_at=now, response_time_ms=elapsed_ms)
