"""Verifier: runs the steps for many addresses, grouped by domain, and builds their results.

Steps per address (docs/architecture.md, "One address through the engine"): syntax → mail
route → SMTP up to RCPT, with a made-up address first → classification → enrichment → status,
reason, score. Here: parsing, the mail route and the answers that need no session, and each
address's result, as the public steps run.py's `Steps` protocol names; run.py schedules a
verify_many run, conversation.py is the SMTP step. I/O lives in mx.py and probe.py; decisions in
replies.py, catchall.py, score.py. Never raises for an address: what we could not find out is
`unknown`, and a bug is `unknown/internal_error` with its traceback logged.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from datetime import UTC, datetime

from . import enrich, score
from .answer import Answer, DomainAnswer, Job
from .catchall import made_up_local_part
from .conversation import SmtpStep
from .errors import DnsError
from .mx import MailRoute, MailRouter, RouteKind
from .repeats import Repeats
from .result import Checks, Reason, SmtpCheck, SmtpReply, Status, Verdict, VerificationResult
from .run import Run
from .sanity import ListGuard, ResolverHealth, ResolverSanity
from .settings import EngineSettings
from .syntax import Address, parse_address, suggest_correction
from .throttle import HostThrottle

log = logging.getLogger("mailprobe.engine")

_ROUTE_VERDICTS: dict[RouteKind, Reason] = {
    RouteKind.DOMAIN_NOT_FOUND: Reason.DOMAIN_NOT_FOUND,
    RouteKind.NULL_MX: Reason.NULL_MX,
    RouteKind.NO_MAIL_SERVER: Reason.NO_MAIL_SERVER,
    RouteKind.UNROUTABLE: Reason.UNROUTABLE_MX,
}
#: Addresses read ahead of the results the caller has taken: bounds memory on huge inputs.
READ_AHEAD = 10_000
#: Domains whose typo correction is remembered.
_MAX_CORRECTIONS = 10_000
#: What a reason says of `checks.smtp.mailbox_exists`; any other reason leaves it unknown.
_EXISTS: dict[Reason, bool] = {
    Reason.ACCEPTED: True,
    Reason.MAILBOX_FULL: True,
    Reason.MAILBOX_NOT_FOUND: False,
    Reason.MAILBOX_DISABLED: False,
}


class Verifier:
    """Verifies addresses; one instance per process keeps DNS, catch-all and host state."""

    def __init__(
        self,
        settings: EngineSettings | None = None,
        *,
        role_is_risky: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings or EngineSettings()
        self.role_is_risky = role_is_risky
        self._rng = rng or random.Random()
        self._router = MailRouter(self.settings, rng=self._rng)
        self._sanity = ResolverSanity(self.settings.dns)
        self._distrusted = False  # a DNS verdict was withheld since the last route cache reset
        self.throttle = HostThrottle(
            self.settings.smtp, rng=self._rng, window_s=self.settings.deferral.rate_window_s
        )
        self._step = SmtpStep(self.settings, throttle=self.throttle)
        self._corrections: dict[str, str | None] = {}  # domain → the domain it is a typo of
        self._dns_errors = Repeats()

    async def __aenter__(self) -> Verifier:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release what the verifier holds (nothing is kept open between sessions today)."""

    async def verify(self, email: str) -> VerificationResult:
        """Return the result for one address."""
        # aclosing: stop verify_many's reader task now, not whenever the generator is collected.
        async with contextlib.aclosing(self.verify_many([email])) as results:
            async for result in results:
                return result
        raise AssertionError("verify_many yields one result per address")  # pragma: no cover

    def verify_many(
        self, emails: Iterable[str] | AsyncIterable[str]
    ) -> AsyncIterator[VerificationResult]:
        """Return an async iterator of one result per input address, in completion order.

        `result.email` is the input. Input is read lazily, at most a few thousand addresses
        ahead of what the caller has taken, so memory does not grow with the input. Duplicates
        are verified once.
        """
        return Run(self, self._step, read_ahead=READ_AHEAD).results(emails)

    async def route(self, domain: str) -> MailRoute:
        """Return the domain's mail route (an A-label); raise DnsError when DNS cannot tell.

        It is the lookup and cache the verifier's own sessions use. MailRouter shields every
        query in flight, so a caller that gives up cancels only its own wait, never the
        lookup a verification shares.
        """
        return await self._router.route(domain)

    async def resolver_health(self, *, fresh: bool = False) -> ResolverHealth:
        """Return whether the resolver may decide DNS verdicts (checked every check_interval_s).

        The same check gates this verifier's verdicts, so /readyz and the results agree.
        """
        return await self._sanity.health(fresh=fresh)

    # The steps a Run drives (run.Steps): each is one decision or lookup, no scheduling.

    def parse(self, email: str) -> Job | VerificationResult:
        """Return the job for an address, or its final result when its syntax is invalid."""
        started = time.perf_counter()
        parsed = parse_address(email, allow_test_domains=self.settings.syntax.allow_test_domains)
        if not isinstance(parsed, Address):
            checks = Checks(
                syntax=False, domain=None, mx_record=None, smtp=None,
                disposable=False, catch_all=False, role=False, free=False,
            )  # fmt: skip
            verdict = Verdict.of(Reason.INVALID_SYNTAX)
            return _contract(email, email.strip(), verdict, checks, started=started)
        return Job(email=email, address=parsed, started=started)

    async def plan(
        self, domain: str, *, guard: ListGuard | None = None
    ) -> MailRoute | DomainAnswer:
        """Return the route to ask the domain's MX over, or the answer that needs no session.

        With a guard (the run's ListGuard), a verdict from DNS alone waits for its judgement.
        """
        try:
            route = await self.route(domain)
        except DnsError as exc:
            hushed = self._dns_errors.due(domain)
            if hushed is not None:  # once per domain and window, not per group of addresses
                extra = {"domain": domain, "error": str(exc)}
                log.info("dns error", extra=extra | ({"repeats": hushed} if hushed else {}))
            route = None
        except BaseException:
            if guard is not None:
                guard.skip(domain)  # its answer will never come: others must not wait for it
            raise
        reason = await self._dns_reason(domain, route, guard)
        if reason is not None:
            return _final(reason, route if reason is not Reason.DNS_ERROR else None)
        assert route is not None
        if enrich.is_disposable(domain):
            # Throwaway inboxes exist by design; asking their servers adds load, not knowledge.
            return _final(Reason.DISPOSABLE, route)
        provider = enrich.provider_name([host.name for host in route.hosts])
        if enrich.is_accept_all_provider(provider):
            # They answer 250 to every RCPT: a session would only tell us what we cannot know.
            return _final(Reason.UNVERIFIABLE_PROVIDER, route)
        if not route.deliverable:  # no address to dial: nothing would ever take the queue
            return _final(Reason.CONNECTION_FAILED, route)
        return route

    async def _dns_reason(
        self, domain: str, route: MailRoute | None, guard: ListGuard | None
    ) -> Reason | None:
        """Return the reason DNS alone gives the domain, or None when it found a mail route.

        A verdict from DNS alone needs a resolver we trust and a run that is not failing en
        masse; otherwise it is unknown/dns_error, never invalid.
        """
        reason = Reason.DNS_ERROR if route is None else _ROUTE_VERDICTS.get(route.kind)
        if guard is not None:
            reason = await guard.vet(domain, reason)
        if reason not in _ROUTE_VERDICTS.values():
            return reason
        if not await self._sanity.trusted():
            self._distrusted = True
            return Reason.DNS_ERROR
        if self._distrusted:
            # Trusted again: negative answers cached while it lied must not decide anything.
            self._distrusted = False
            self._router = MailRouter(self.settings, rng=self._rng)
            return Reason.DNS_ERROR
        return reason

    def made_up_address(self, domain: str) -> str:
        """Return an address at the domain that no one has, asked before the real recipients."""
        return f"{made_up_local_part(self._rng)}@{domain}"

    def result(self, job: Job, answer: Answer, *, route: MailRoute | None) -> VerificationResult:
        """Return the contract result for one job from its answer and the domain's facts."""
        suggestion = self._suggestion(job.address)
        return result_of(
            job, answer, route=route, suggestion=suggestion, role_is_risky=self.role_is_risky
        )

    def _suggestion(self, address: Address) -> str | None:
        """Return suggest_correction(address), worked out once per domain of the run."""
        # The correction depends on the domain alone; computing it costs ~20 µs an address.
        corrected = self._corrections.get(address.domain, "")
        if corrected == "":
            if len(self._corrections) >= _MAX_CORRECTIONS:
                self._corrections.clear()
            suggestion = suggest_correction(address)
            corrected = suggestion.rpartition("@")[2] if suggestion else None
            self._corrections[address.domain] = corrected
        return f"{address.local_part}@{corrected}" if corrected else None


def result_of(
    job: Job,
    answer: Answer,
    *,
    route: MailRoute | None,
    suggestion: str | None,
    role_is_risky: bool = False,
) -> VerificationResult:
    """Return the contract result for a parsed address from its answer and the domain's facts.

    The one builder of results for addresses with valid syntax: the verifier's answers and the
    API's partial ones (an answer with no session) both come from here.
    """
    address = job.address
    mx_names = [host.name for host in route.hosts] if route else []
    provider = enrich.provider_name(mx_names, answer.software)
    checks = Checks(
        syntax=True,
        domain=None if route is None else route.kind is not RouteKind.DOMAIN_NOT_FOUND,
        mx_record=None if route is None else route.kind is RouteKind.MX,
        smtp=_smtp_check(answer, provider),
        disposable=enrich.is_disposable(address.domain),
        catch_all=answer.catch_all is True,
        role=enrich.is_role(address.local_part),
        free=enrich.is_free(address.domain),
    )
    verdict = answer.verdict
    if verdict.status is Status.VALID and checks.role and role_is_risky:
        verdict = Verdict.of(Reason.ROLE_ACCOUNT)
    return _contract(
        job.email,
        address.normalized,
        verdict,
        checks,
        started=job.started,
        suggestion=suggestion,
        provider_known=provider is not None,
    )


def result_without_session(
    email: str, address: Address, verdict: Verdict, *, route: MailRoute | None
) -> VerificationResult:
    """Return the result of a parsed address that no session answered: `checks.smtp` is null.

    For the HTTP API's partial answer (unknown/timeout with what is known before the SMTP
    answer): built by the same result_of as every other result, with its typo suggestion.
    """
    job = Job(email, address, started=time.perf_counter())
    suggestion = suggest_correction(address)
    return result_of(job, Answer(verdict), route=route, suggestion=suggestion)


def _final(reason: Reason, route: MailRoute | None) -> DomainAnswer:
    """Return the answer a whole domain gets for `reason`, without a session."""
    return DomainAnswer(Answer(Verdict.of(reason)), route)


def _contract(
    email: str,
    normalized: str,
    verdict: Verdict,
    checks: Checks,
    *,
    started: float,
    suggestion: str | None = None,
    provider_known: bool = False,
) -> VerificationResult:
    """Return the result the contract shows: the verdict, its action and score, the checks."""
    return VerificationResult(
        email=email,
        normalized=normalized,
        status=verdict.status,
        reason=verdict.reason,
        action=score.action(verdict.status, verdict.reason),
        score=score.score(
            verdict.status,
            verdict.reason,
            role=checks.role,
            free=checks.free,
            provider_known=provider_known,
        ),
        checks=checks,
        suggestion=suggestion,
        verified_at=datetime.now(UTC),
        response_time_ms=int((time.perf_counter() - started) * 1000),
        retry_after_s=verdict.retry_after_s,
    )


def _smtp_check(answer: Answer, provider: str | None) -> SmtpCheck | None:
    """Return the `checks.smtp` object, or None when no session was attempted."""
    if answer.mx_host is None:
        return None
    reply = answer.reply
    return SmtpCheck(
        connected=answer.connected,
        mailbox_exists=_EXISTS.get(answer.verdict.reason),
        is_catch_all=answer.catch_all,
        smtp_provider=provider,
        response_code=reply.code if reply else None,
        enhanced_code=reply.enhanced_code if reply else None,
        response_message=_reply_text(reply),
        mx_host=answer.mx_host,
        tls=answer.tls,
    )


def _reply_text(reply: SmtpReply | None) -> str | None:
    """Return the reply as the contract shows it: enhanced code and text (`2.1.5 Recipient OK`)."""
    if reply is None:
        return None
    text = " ".join(reply.message.split())
    return f"{reply.enhanced_code} {text}".strip() if reply.enhanced_code else text
