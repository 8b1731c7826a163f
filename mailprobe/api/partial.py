"""Partial answers: `unknown/timeout` with what is known before the SMTP answer.

Owns the partial result (syntax, mail route, flags). It decides and builds nothing of its own:
the engine's result builder does, from an answer that no session gave.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime

from engine.answer import Answer, Job
from engine.mx import MailRoute
from engine.result import Reason, Verdict, VerificationResult
from engine.syntax import Address, suggest_correction
from engine.verifier import result_of


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
    job = Job(email, address, started=time.perf_counter())
    timed_out = Answer(Verdict.of(Reason.TIMEOUT))  # no session answered: checks.smtp is null
    result = result_of(job, timed_out, route=route, suggestion=suggest_correction(address))
    return replace(result, verified_at=now, response_time_ms=elapsed_ms)
