"""Partial answers: `unknown/timeout` with what is known before the SMTP answer.

Owns the partial result (syntax, mail route, flags) and the one place that reaches the engine's
mail router. It decides no status of its own: engine's Verdict, enrich and score do.
"""

from __future__ import annotations

from datetime import datetime

from engine import enrich, score
from engine.mx import MailRoute, RouteKind
from engine.result import Checks, Reason, Verdict, VerificationResult
from engine.syntax import Address, suggest_correction


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
    verdict = Verdict.of(Reason.TIMEOUT)
    role = enrich.is_role(address.local_part)
    free = enrich.is_free(address.domain)
    provider = enrich.provider_name([host.name for host in route.hosts]) if route else None
    checks = Checks(
        syntax=True,
        domain=None if route is None else route.kind is not RouteKind.DOMAIN_NOT_FOUND,
        mx_record=None if route is None else route.kind is RouteKind.MX,
        smtp=None,
        disposable=enrich.is_disposable(address.domain),
        catch_all=False,
        role=role,
        free=free,
    )
    return VerificationResult(
        email=email,
        normalized=address.normalized,
        status=verdict.status,
        reason=verdict.reason,
        action=score.action(verdict.status, verdict.reason),
        score=score.score(
            verdict.status, verdict.reason, role=role, free=free, provider_known=bool(provider)
        ),
        checks=checks,
        suggestion=suggest_correction(address),
        verified_at=now,
        response_time_ms=elapsed_ms,
    )
