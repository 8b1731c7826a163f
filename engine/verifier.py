"""Verifier: runs the steps for many addresses, grouped by domain, within the servers' limits.

Steps per address (design.md, "The engine"): syntax → mail route → SMTP up to RCPT, with the
catch-all probe → classification → enrichment → status, reason, score. Addresses of one domain
share sessions; sessions to one MX address share its limits (throttle.py). I/O lives in mx.py and
probe.py; decisions in replies.py, catchall.py, score.py. Never raises for an address: what we
could not find out is `unknown`, and a bug is `unknown/internal_error` with its traceback logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from . import enrich, score
from .catchall import ProbeOutcome, made_up_local_part, probe_outcome, recipient_verdict
from .errors import DnsError, ProbeConnectError, ProbeError, ProbeTimeout
from .mx import MailRoute, MailRouter, RouteKind
from .probe import Session, run_session
from .replies import classify
from .result import (
    Checks,
    Reason,
    SmtpCheck,
    SmtpReply,
    Stage,
    Status,
    Verdict,
    VerificationResult,
)
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

#: Sessions in a row that answer no recipient before a host is given up for this batch.
_MAX_STALLS = 3
#: Rounds over every MX address while they all say "too many" before the batch gives up.
_MAX_BUSY_ROUNDS = 3
#: Addresses read ahead of the results the caller has taken: bounds memory on huge inputs.
_READ_AHEAD = 4000
#: A partly filled domain batch waits at most this long for more addresses of its domain.
_LINGER_S = 0.05


@dataclass(frozen=True, slots=True)
class _Job:
    """One address being verified, as given and as parsed."""

    email: str
    address: Address
    started: float


@dataclass(frozen=True, slots=True)
class _Answer:
    """What the SMTP step found for one recipient."""

    verdict: Verdict
    reply: SmtpReply | None = None
    mx_host: str | None = None
    connected: bool = False
    tls: bool = False
    software: str | None = None  # banner and EHLO text: they name the server software
    catch_all: bool | None = None


@dataclass(slots=True)
class _Round:
    """One SMTP session's outcome for a batch: answers, and why it stopped early."""

    answers: dict[_Job, _Answer]
    problem: _Answer | None = None  # what the unanswered recipients get if nothing better comes
    move_on: bool = False  # this MX address cannot serve us now: try the next one
    busy: bool = False  # the host said "too many": it is backing off
    final: bool = False  # the problem is the answer for every recipient left (5xx, blocked)


def _now() -> datetime:
    return datetime.now(UTC)


async def _aiter(emails: Iterable[str] | AsyncIterable[str]) -> AsyncIterator[str]:
    if isinstance(emails, AsyncIterable):
        async for email in emails:
            yield email
    else:
        for count, email in enumerate(emails, 1):
            yield email
            if count % 256 == 0:
                await asyncio.sleep(0)  # let sessions start while a long list is read


def _is_session_limit(reply: SmtpReply) -> bool:
    """Return True when a RCPT reply limits the session rather than judging the recipient."""
    if reply.code == 421:
        return True
    text = reply.message.lower()
    too_many = "too many recipients" in text or "recipient limit" in text
    return reply.enhanced_code in ("4.5.3", "5.5.3") or (reply.code in (451, 452) and too_many)


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
        self.throttle = HostThrottle(self.settings.smtp, rng=self._rng)
        self._sessions = asyncio.Semaphore(self.settings.concurrency)
        self._catch_all: dict[str, tuple[ProbeOutcome, Verdict]] = {}
        sources = self.settings.smtp.source_addresses
        self._sources = itertools.cycle(sources) if sources else None

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

    async def verify_many(
        self, emails: Iterable[str] | AsyncIterable[str]
    ) -> AsyncIterator[VerificationResult]:
        """Yield one result per input address, in completion order; `result.email` is the input.

        Input is read lazily, at most a few thousand addresses ahead of what the caller has
        taken, so memory does not grow with the input. Duplicates are verified once.
        """
        window = asyncio.Semaphore(_READ_AHEAD)
        results: asyncio.Queue[VerificationResult | BaseException | None] = asyncio.Queue()
        feeder = asyncio.create_task(self._feed(emails, window, results))
        try:
            while (item := await results.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
                window.release()
        finally:
            if not feeder.done():
                feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)

    async def _feed(
        self,
        emails: Iterable[str] | AsyncIterable[str],
        window: asyncio.Semaphore,
        results: asyncio.Queue[VerificationResult | BaseException | None],
    ) -> None:
        """Read addresses, batch them per domain, run the batches, queue their results."""
        waiting: dict[str, list[_Job]] = {}  # normalised address → jobs sharing its answer
        buckets: dict[tuple[str, bool], list[_Job]] = {}
        started: dict[tuple[str, bool], float] = {}
        batch = self.settings.smtp.max_rcpt_per_session

        def deliver(result: VerificationResult, jobs: Sequence[_Job]) -> None:
            for job in jobs:
                elapsed = int((time.perf_counter() - job.started) * 1000)
                results.put_nowait(replace(result, email=job.email, response_time_ms=elapsed))

        async def run(jobs: list[_Job]) -> None:
            for job, result in zip(jobs, await self._verify_batch(jobs), strict=True):
                deliver(result, waiting.pop(job.address.normalized, [job]))

        try:
            async with asyncio.TaskGroup() as tasks:

                def flush(key: tuple[str, bool]) -> None:
                    started.pop(key, None)
                    tasks.create_task(run(buckets.pop(key)))

                async def linger() -> None:
                    # A batch of a rare domain should not wait for the whole input to be read.
                    while True:
                        await asyncio.sleep(_LINGER_S)
                        cutoff = time.perf_counter() - _LINGER_S
                        for key in [k for k, t in started.items() if t <= cutoff]:
                            flush(key)

                lingering = tasks.create_task(linger())
                async for email in _aiter(emails):
                    if window.locked():
                        for key in list(buckets):
                            flush(key)
                    await window.acquire()
                    job = self._job(email)
                    if isinstance(job, VerificationResult):
                        results.put_nowait(job)
                        continue
                    if job.address.normalized in waiting:
                        waiting[job.address.normalized].append(job)
                        continue
                    waiting[job.address.normalized] = [job]
                    key = (job.address.domain, job.address.smtputf8)
                    buckets.setdefault(key, []).append(job)
                    started.setdefault(key, time.perf_counter())
                    if len(buckets[key]) >= batch:
                        flush(key)
                for key in list(buckets):
                    flush(key)
                lingering.cancel()
        except BaseExceptionGroup as group:  # input iteration failed: hand it to the caller
            results.put_nowait(group.exceptions[0])
            return
        results.put_nowait(None)

    def _job(self, email: str) -> _Job | VerificationResult:
        """Return the job for an address, or its final result when its syntax is invalid."""
        started = time.perf_counter()
        parsed = parse_address(email, allow_test_domains=self.settings.syntax.allow_test_domains)
        if not isinstance(parsed, Address):
            return self._syntax_result(email, started)
        return _Job(email=email, address=parsed, started=started)

    def _syntax_result(self, email: str, started: float) -> VerificationResult:
        verdict = Verdict.of(Reason.INVALID_SYNTAX)
        checks = Checks(
            syntax=False, domain=None, mx_record=None, smtp=None,
            disposable=False, catch_all=False, role=False, free=False,
        )  # fmt: skip
        return VerificationResult(
            email=email,
            normalized=email.strip(),
            status=verdict.status,
            reason=verdict.reason,
            action=score.action(verdict.status, verdict.reason),
            score=score.score(verdict.status, verdict.reason),
            checks=checks,
            suggestion=None,
            verified_at=_now(),
            response_time_ms=int((time.perf_counter() - started) * 1000),
        )

    async def _verify_batch(self, jobs: list[_Job]) -> list[VerificationResult]:
        """Return results for addresses of one domain, in the order given."""
        try:
            return await self._verify_domain(jobs)
        except Exception:
            log.exception("internal error verifying %d address(es)", len(jobs))
            answer = _Answer(Verdict.of(Reason.INTERNAL_ERROR))
            return [self._result(job, answer, route=None) for job in jobs]

    async def _verify_domain(self, jobs: list[_Job]) -> list[VerificationResult]:
        domain = jobs[0].address.domain
        try:
            route = await self._router.route(domain)
        except DnsError as exc:
            log.info("dns error", extra={"domain": domain, "error": str(exc)})
            return [self._result(job, _Answer(Verdict.of(Reason.DNS_ERROR)), route=None)
                    for job in jobs]  # fmt: skip
        if route.kind in _ROUTE_VERDICTS:
            answer = _Answer(Verdict.of(_ROUTE_VERDICTS[route.kind]))
            return [self._result(job, answer, route=route) for job in jobs]
        if enrich.is_disposable(domain):
            # Throwaway inboxes exist by design; asking their servers adds load, not knowledge.
            answer = _Answer(Verdict.of(Reason.DISPOSABLE))
            return [self._result(job, answer, route=route) for job in jobs]
        provider = enrich.provider_name([host.name for host in route.hosts])
        if enrich.is_accept_all_provider(provider):
            # They answer 250 to every RCPT: a session would only tell us what we cannot know.
            answer = _Answer(Verdict.of(Reason.UNVERIFIABLE_PROVIDER))
            return [self._result(job, answer, route=route) for job in jobs]
        answers = await self._smtp(route, jobs)
        return [self._result(job, answers[job], route=route) for job in jobs]

    async def _smtp(self, route: MailRoute, jobs: list[_Job]) -> dict[_Job, _Answer]:
        """Return each job's SMTP answer, retrying greylisted ones while max_wait_s allows."""
        greylist = self.settings.greylist
        deadline = time.monotonic() + greylist.max_wait_s
        answers: dict[_Job, _Answer] = {}
        pending = jobs
        # One made-up address for every try: greylisting keys on (client, sender, recipient), so
        # a fresh probe on each retry would be greylisted afresh and keep the batch undecided.
        probe = f"{made_up_local_part(self._rng)}@{route.domain}"
        for attempt in itertools.count():
            answers.update(await self._converse(route, pending, probe=probe))
            pending = [j for j in pending if answers[j].verdict.reason is Reason.GREYLISTED]
            if not pending:
                break
            delay = self._greylist_delay([answers[j] for j in pending], attempt)
            if delay is None or time.monotonic() + delay > deadline:
                break
            log.info("greylisted, retrying", extra={"domain": route.domain, "delay_s": delay})
            await asyncio.sleep(delay)
        return answers

    def _greylist_delay(self, answers: list[_Answer], attempt: int) -> float | None:
        """Return how long to wait before asking greylisted recipients again, or None: stop."""
        delays = self.settings.greylist.retry_delays_s
        if attempt >= len(delays):
            return None
        asked = [a.verdict.retry_after_s for a in answers if a.verdict.retry_after_s]
        # The server's own delay wins: asking sooner only restarts its clock.
        return max([delays[attempt], *asked])

    def _targets(self, route: MailRoute) -> list[tuple[str, str]]:
        return [(host.name, ip) for host in route.hosts for ip in host.addresses]

    async def _converse(
        self, route: MailRoute, jobs: list[_Job], *, probe: str
    ) -> dict[_Job, _Answer]:
        """Return an answer for every job: sessions over the MX addresses, best first."""
        answers: dict[_Job, _Answer] = {}
        targets = self._targets(route)
        remaining = list(jobs)
        problem = _Answer(Verdict.of(Reason.CONNECTION_FAILED))
        index = stalls = busy_rounds = 0
        while remaining and index < len(targets):
            mx_host, ip = targets[index]
            found = await self._round(route.domain, mx_host, ip, remaining, probe=probe)
            answers.update(found.answers)
            remaining = [job for job in remaining if job not in answers]
            problem = found.problem or problem
            if found.final:
                break
            stalls = 0 if found.answers else stalls + 1
            if found.move_on or stalls >= _MAX_STALLS:
                index, stalls = index + 1, 0
            if index == len(targets) and found.busy and busy_rounds < _MAX_BUSY_ROUNDS:
                # Every MX asked us to slow down: go round again; their back-off paces us.
                index, busy_rounds = 0, busy_rounds + 1
        for job in remaining:
            answers[job] = problem
        return answers

    async def _round(
        self, domain: str, mx_host: str, ip: str, jobs: list[_Job], *, probe: str
    ) -> _Round:
        """Run one session with one MX address for as many of the jobs as it may carry."""
        known = self._catch_all.get(domain)
        limit = self.throttle.rcpt_limit(ip)
        asked_probe = None if known else probe  # a domain's known catch-all answer is reused
        batch = jobs[: max(1, limit - (1 if asked_probe else 0))]
        recipients = [asked_probe] if asked_probe else []
        recipients += [job.address.normalized for job in batch]
        try:
            async with self._sessions, self.throttle.session(ip):
                session = await run_session(
                    mx_host,
                    ip,
                    recipients,
                    settings=self.settings,
                    smtputf8=batch[0].address.smtputf8,
                    source_address=next(self._sources) if self._sources else None,
                )
        except ProbeError as exc:
            return _Round({}, problem=_Answer(_error_verdict(exc), mx_host=mx_host), move_on=True)
        return self._judge(domain, session, asked_probe, batch, known)

    def _judge(
        self,
        domain: str,
        session: Session,
        probe: str | None,
        batch: list[_Job],
        known: tuple[ProbeOutcome, Verdict] | None,
    ) -> _Round:
        """Turn one session's replies into answers, learning the host's limits on the way."""
        software = " ".join(str(r) for r in (session.banner, session.ehlo) if r is not None)
        base = _Answer(
            Verdict.of(Reason.CONNECTION_FAILED),
            mx_host=session.mx_host,
            connected=session.banner is not None,
            tls=session.tls,
            software=software or None,
        )
        if session.refusal is not None:
            return self._refused(session, base)
        replies = dict(session.rcpt_replies)
        limited = [r for r in replies.values() if _is_session_limit(r)]
        if limited:
            self._learn_limit(session)
        else:
            self.throttle.succeeded(session.ip)
        # A 421 that blames us ("low reputation ... blocked") is a refusal, not a session size:
        # asking again only digs deeper. A host that limits the first RCPT of a session takes
        # no recipient now: another MX address may.
        blocked = bool(limited) and classify(Stage.RCPT, limited[0]).reason is Reason.BLOCKED
        refused_first = bool(session.rcpt_replies) and _is_session_limit(session.rcpt_replies[0][1])
        if known is None and probe is not None:
            probe_reply = replies.get(probe)
            if probe_reply is None or _is_session_limit(probe_reply):
                problem = self._session_problem(session, base, limited)
                return _Round(
                    {}, problem=problem, move_on=refused_first, busy=bool(limited), final=blocked
                )
            probe_verdict = classify(Stage.RCPT, probe_reply)
            known = (probe_outcome(probe_verdict), probe_verdict)
            if known[0] in (ProbeOutcome.ACCEPTS_ALL, ProbeOutcome.REJECTS_UNKNOWN):
                self._catch_all[domain] = known
        outcome, probe_verdict = known
        catch_all = {ProbeOutcome.ACCEPTS_ALL: True, ProbeOutcome.REJECTS_UNKNOWN: False}
        answers: dict[_Job, _Answer] = {}
        for job in batch:
            reply = replies.get(job.address.normalized)
            if reply is None or _is_session_limit(reply):
                continue
            verdict = recipient_verdict(outcome, probe_verdict, classify(Stage.RCPT, reply))
            answers[job] = replace(
                base, verdict=verdict, reply=reply, catch_all=catch_all.get(outcome)
            )
        problem = (
            None if len(answers) == len(batch) else self._session_problem(session, base, limited)
        )
        return _Round(
            answers,
            problem=problem,
            move_on=refused_first,
            busy=bool(limited) and not blocked,
            final=blocked and problem is not None,
        )

    def _refused(self, session: Session, base: _Answer) -> _Round:
        """Return the round for a session refused before RCPT (banner, EHLO or MAIL FROM)."""
        assert session.refusal is not None
        stage, reply = session.refusal
        answer = replace(base, verdict=classify(stage, reply), reply=reply)
        if reply.code // 100 == 4:
            # A busy or temporarily failing server: another MX address may serve us.
            busy = reply.code == 421
            if busy:
                self.throttle.back_off(session.ip)
            return _Round({}, problem=answer, move_on=True, busy=busy)
        return _Round({}, problem=answer, final=True)

    def _learn_limit(self, session: Session) -> None:
        """Remember how many recipients the host took before it stopped us, and back off.

        design.md: back off on 421, 452 and "too many". Learning the limit keeps the next
        sessions under it (also Postfix's smtpd_hard_error_limit 421), so the back-off does not
        escalate with every session.
        """
        answered = sum(1 for _, r in session.rcpt_replies if not _is_session_limit(r))
        self.throttle.back_off(session.ip)
        if answered:
            self.throttle.learn_rcpt_limit(session.ip, answered)

    def _session_problem(
        self, session: Session, base: _Answer, limited: list[SmtpReply]
    ) -> _Answer:
        """Return what unanswered recipients get if no later session answers them."""
        if session.error is not None:
            answered = len(session.rcpt_replies)
            if answered:
                # Dropped after some recipients (Postfix smtpd_hard_error_limit): ask fewer.
                self.throttle.learn_rcpt_limit(session.ip, answered)
            return replace(base, verdict=_error_verdict(session.error))
        if limited:
            # The reply itself says why (corpus rule 6: a plain limit is temporary_failure;
            # one justified by our reputation is blocked).
            return replace(base, verdict=classify(Stage.RCPT, limited[0]), reply=limited[0])
        return replace(base, verdict=Verdict.of(Reason.PROTOCOL_ERROR))

    def _result(self, job: _Job, answer: _Answer, *, route: MailRoute | None) -> VerificationResult:
        """Return the contract result for one job from its answer and the domain's facts."""
        address = job.address
        role = enrich.is_role(address.local_part)
        free = enrich.is_free(address.domain)
        verdict = answer.verdict
        if verdict.status is Status.VALID and role and self.role_is_risky:
            verdict = Verdict.of(Reason.ROLE_ACCOUNT)
        mx_names = [host.name for host in route.hosts] if route else []
        provider = enrich.provider_name(mx_names, answer.software)
        checks = Checks(
            syntax=True,
            domain=None if route is None else route.kind is not RouteKind.DOMAIN_NOT_FOUND,
            mx_record=None if route is None else route.kind is RouteKind.MX,
            smtp=_smtp_check(answer, provider),
            disposable=enrich.is_disposable(address.domain),
            catch_all=answer.catch_all is True,
            role=role,
            free=free,
        )
        return VerificationResult(
            email=job.email,
            normalized=address.normalized,
            status=verdict.status,
            reason=verdict.reason,
            action=score.action(verdict.status, verdict.reason),
            score=score.score(
                verdict.status,
                verdict.reason,
                role=role,
                free=free,
                provider_known=provider is not None,
            ),  # fmt: skip
            checks=checks,
            suggestion=suggest_correction(address),
            verified_at=_now(),
            response_time_ms=int((time.perf_counter() - job.started) * 1000),
        )


def _error_verdict(error: ProbeError) -> Verdict:
    """Return the verdict for a conversation that broke: timeouts and drops are not answers."""
    if isinstance(error, ProbeTimeout):
        return Verdict.of(Reason.TIMEOUT)
    if isinstance(error, ProbeConnectError):
        return Verdict.of(Reason.CONNECTION_FAILED)
    return Verdict.of(Reason.PROTOCOL_ERROR)


_EXISTS: dict[Reason, bool] = {
    Reason.ACCEPTED: True,
    Reason.MAILBOX_FULL: True,
    Reason.MAILBOX_NOT_FOUND: False,
    Reason.MAILBOX_DISABLED: False,
}


def _smtp_check(answer: _Answer, provider: str | None) -> SmtpCheck | None:
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
