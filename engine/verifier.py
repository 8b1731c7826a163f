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
from collections import OrderedDict, deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field, replace
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
_READ_AHEAD = 10_000
#: A domain's next session waits at most this long (from its oldest address's arrival) for
#: enough addresses to fill it, unless the input has ended: fewer, fuller sessions.
_LINGER_S = 1.0
#: ...but its first one leaves soon: it brings the catch-all answer and the host's limits that
#: size the next ones, and a host idle at the start is time lost for good.
_FIRST_LINGER_S = 0.1
#: What servers say when we hold too many sessions with them (Postfix, Exim, Sendmail, Exchange).
_TOO_MANY_CONNECTIONS_WORDS = (
    "too many connections",
    "too many concurrent",
    "too many open connections",
    "concurrent connections",
    "too many sessions",
    "connection limit",
)
#: What servers say when they end a session over the commands they refused (lower case).
_ERROR_LIMIT_WORDS = ("too many errors", "too many invalid", "too many unknown", "too many bad")
#: Answers kept for duplicates that come after their first copy was answered (~1 KB each).
_RECENT_ANSWERS = 10_000
#: Distinct RCPT replies (and domains) whose verdict (typo correction) is remembered.
_MAX_VERDICTS = 10_000
#: What stands for the recipient in a remembered reply: any address reads the same to classify().
_SOMEONE = "someone@example.test"
_ACCEPTED = Verdict.of(Reason.ACCEPTED)
#: Addresses read before the reader lets sessions run: parsing one costs ~0.2 ms of CPU, and
#: every millisecond the event loop is busy delays the replies of every session in flight.
_READ_CHUNK = 2


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


@dataclass(frozen=True, slots=True)
class _Final:
    """The answer every address of a domain gets without a session (no route, disposable...)."""

    answer: _Answer
    route: MailRoute | None


@dataclass(slots=True)
class _Round:
    """One SMTP session's outcome for a batch: answers, and why it stopped early."""

    answers: dict[_Job, _Answer]
    problem: _Answer | None = None  # what the unanswered recipients get if nothing better comes
    move_on: bool = False  # this MX address cannot serve us now: try the next one
    busy: bool = False  # the host said "too many": it is backing off
    final: bool = False  # the problem is the answer for every recipient left (5xx, blocked)


@dataclass(slots=True)
class _Queue:
    """One domain's addresses waiting for a session, and how many workers drain them."""

    domain: str
    smtputf8: bool
    jobs: deque[_Job] = field(default_factory=deque)
    workers: int = 0
    want: int = 1  # queued addresses that fill a session: a lingering worker goes then
    filled: asyncio.Event = field(default_factory=asyncio.Event)


def _now() -> datetime:
    return datetime.now(UTC)


async def _aiter(emails: Iterable[str] | AsyncIterable[str]) -> AsyncIterator[str]:
    """Yield the addresses, letting sessions run every few: a long list is read in slices."""
    if isinstance(emails, AsyncIterable):
        count = 0
        async for email in emails:  # an async source need not suspend: yield to sessions here
            yield email
            count += 1
            if count % _READ_CHUNK == 0:
                await asyncio.sleep(0)
    else:
        for count, email in enumerate(emails, 1):
            yield email
            if count % _READ_CHUNK == 0:
                await asyncio.sleep(0)


def _is_session_limit(reply: SmtpReply) -> bool:
    """Return True when a RCPT reply limits the session rather than judging the recipient."""
    if reply.code == 421:
        return True
    text = reply.message.lower()
    too_many = "too many recipients" in text or "recipient limit" in text
    return reply.enhanced_code in ("4.5.3", "5.5.3") or (reply.code in (451, 452) and too_many)


def _is_too_many_connections(reply: SmtpReply) -> bool:
    """Return True when a refusal says we hold too many sessions with the server at once."""
    text = reply.message.lower()
    return any(words in text for words in _TOO_MANY_CONNECTIONS_WORDS)


def _is_error_limit(reply: SmtpReply) -> bool:
    """Return True when the server ends the session over how many of our commands it refused.

    Postfix's smtpd_hard_error_limit ("421 4.7.0 Error: too many errors"), Exim's and others'
    limits on unknown recipients: a dictionary attack looks like this, so stay under it.
    """
    text = reply.message.lower()
    return any(words in text for words in _ERROR_LIMIT_WORDS)


def _is_size_limit(reply: SmtpReply) -> bool:
    """Return True when a limit reply is about how much one session carries, not our pace.

    "Too many recipients" (RFC 5321 §4.5.3.1.10) and error limits are cured by smaller
    sessions, which we learn; backing the host off as well would only idle it.
    """
    text = reply.message.lower()
    return (
        reply.enhanced_code in ("4.5.3", "5.5.3")
        or "too many recipients" in text
        or "recipient limit" in text
        or _is_error_limit(reply)
    )


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
        self._verdicts: dict[SmtpReply, Verdict] = {}  # RCPT replies without the recipient
        self._corrections: dict[str, str | None] = {}  # domain → the domain it is a typo of
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
        feeder = asyncio.create_task(_Run(self, results).feed(emails, window))
        try:
            for count in itertools.count(1):
                if count % _READ_CHUNK == 0:
                    # A session's batch finishing hands over many results at once: let replies
                    # of the sessions in flight through between the caller's turns.
                    await asyncio.sleep(0)
                if (item := await results.get()) is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
                window.release()
        finally:
            if not feeder.done():
                feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)

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

    async def _plan(self, domain: str) -> MailRoute | _Final:
        """Return the route to ask the domain's MX over, or the answer that needs no session."""
        try:
            route = await self._router.route(domain)
        except DnsError as exc:
            log.info("dns error", extra={"domain": domain, "error": str(exc)})
            return _Final(_Answer(Verdict.of(Reason.DNS_ERROR)), route=None)
        if route.kind in _ROUTE_VERDICTS:
            return _Final(_Answer(Verdict.of(_ROUTE_VERDICTS[route.kind])), route)
        if enrich.is_disposable(domain):
            # Throwaway inboxes exist by design; asking their servers adds load, not knowledge.
            return _Final(_Answer(Verdict.of(Reason.DISPOSABLE)), route)
        provider = enrich.provider_name([host.name for host in route.hosts])
        if enrich.is_accept_all_provider(provider):
            # They answer 250 to every RCPT: a session would only tell us what we cannot know.
            return _Final(_Answer(Verdict.of(Reason.UNVERIFIABLE_PROVIDER)), route)
        if not self._targets(route):  # no address to dial: nothing would ever take the queue
            return _Final(_Answer(Verdict.of(Reason.CONNECTION_FAILED)), route)
        return route

    def _session_room(self, route: MailRoute) -> int:
        """Return how many addresses fill the domain's next session on its first MX address."""
        _, ip = self._targets(route)[0]
        probe = 0 if route.domain in self._catch_all else 1
        return max(1, self.throttle.rcpt_limit(ip) - probe)

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
        self,
        route: MailRoute,
        jobs: list[_Job],
        *,
        probe: str,
        queue: deque[_Job] | None = None,
    ) -> dict[_Job, _Answer]:
        """Return an answer for every job: sessions over the MX addresses, best first.

        With a queue, the first session also takes as many of its jobs as the host lets one
        session carry, when a session slot is free; they are appended to `jobs`.
        """
        answers: dict[_Job, _Answer] = {}
        targets = self._targets(route)
        remaining = jobs
        problem = _Answer(Verdict.of(Reason.CONNECTION_FAILED))
        index = stalls = busy_rounds = 0
        while (remaining or queue is not None) and index < len(targets):
            mx_host, ip = targets[index]
            found = await self._round(
                route.domain, mx_host, ip, remaining, probe=probe, queue=queue
            )
            queue = None  # later sessions carry what this conversation took
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
        self,
        domain: str,
        mx_host: str,
        ip: str,
        jobs: list[_Job],
        *,
        probe: str,
        queue: deque[_Job] | None = None,
    ) -> _Round:
        """Run one session with one MX address for as many of the jobs as it may carry."""
        try:
            # The host's slot first, then the global one: a session waiting for a busy host
            # must not hold a global slot another host could use.
            async with self.throttle.session(ip) as slot, self._sessions:
                known = self._catch_all.get(domain)
                asked_probe = None if known else probe  # a known catch-all answer is reused
                batch = self._batch(ip, jobs, queue, probe=asked_probe is not None)
                if not batch:
                    return _Round({})
                session = await self._session(mx_host, ip, batch, probe=asked_probe)
                if session.refusal is not None and _is_too_many_connections(session.refusal[1]):
                    # The sessions we hold besides this one are what the host tolerates.
                    slot.one_too_many()
        except ProbeError as exc:
            return _Round({}, problem=_Answer(_error_verdict(exc), mx_host=mx_host), move_on=True)
        return self._judge(domain, session, asked_probe, batch, known)

    def _batch(
        self, ip: str, jobs: list[_Job], queue: deque[_Job] | None, *, probe: bool
    ) -> list[_Job]:
        """Return the jobs the next session carries, topping `jobs` up from the queue.

        Sized when the session starts, not when the jobs were queued: the host's learned limit
        and the catch-all answer are freshest, and the queue has grown while we waited.
        """
        room = max(1, self.throttle.rcpt_limit(ip) - (1 if probe else 0))
        while queue and len(jobs) < room:
            jobs.append(queue.popleft())
        return jobs[:room]

    async def _session(
        self, mx_host: str, ip: str, batch: list[_Job], *, probe: str | None
    ) -> Session:
        """Return one conversation asking the probe (when given), then each job's address."""
        recipients = [probe] if probe else []
        recipients += [job.address.normalized for job in batch]
        return await run_session(
            mx_host,
            ip,
            recipients,
            settings=self.settings,
            smtputf8=batch[0].address.smtputf8,
            source_address=next(self._sources) if self._sources else None,
        )

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
        if (advertised := _rcpt_max(session.ehlo)) is not None:
            self.throttle.learn_rcpt_limit(session.ip, advertised)
        if session.refusal is not None:
            return self._refused(session, base)
        replies = dict(session.rcpt_replies)
        limited = [r for r in replies.values() if _is_session_limit(r)]
        if limited:
            self._learn_limit(session, limited)
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
            probe_verdict = self._rcpt_verdict(probe, probe_reply)
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
            verdict = self._rcpt_verdict(job.address.normalized, reply)
            verdict = recipient_verdict(outcome, probe_verdict, verdict)
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

    def _rcpt_verdict(self, recipient: str, reply: SmtpReply) -> Verdict:
        """Return classify()'s verdict on a RCPT reply, once per distinct reply of the run.

        classify() costs up to a millisecond (hundreds of multilingual patterns) and masks
        addresses before it reads a reply, so "550 5.1.1 <ann@x>: User unknown" and the same
        for <bob@x> read alike: keyed without the recipient, thousands of replies are one.
        """
        if 200 <= reply.code < 300:
            return _ACCEPTED
        key = replace(reply, message=reply.message.replace(recipient, _SOMEONE))
        verdict = self._verdicts.get(key)
        if verdict is None:
            if len(self._verdicts) >= _MAX_VERDICTS:
                self._verdicts.clear()  # distinct replies are few; this only bounds the odd run
            verdict = self._verdicts[key] = classify(Stage.RCPT, key)
        return verdict

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

    def _learn_limit(self, session: Session, limited: list[SmtpReply]) -> None:
        """Remember how many recipients the host took before it stopped us; back off if asked.

        Learning the limit keeps the next sessions under it: after "452 too many recipients",
        as many as it answered; after an error limit, one rejection fewer than it allowed, since
        we cannot know which recipients it will reject. Only a limit on our pace (a bare 421,
        "too many connections", rate limits) also backs the host off (design.md).
        """
        answered = [r for _, r in session.rcpt_replies if not _is_session_limit(r)]
        if any(_is_error_limit(reply) for reply in limited):
            refused = sum(1 for reply in answered if reply.code >= 400)
            self.throttle.learn_rcpt_limit(session.ip, max(1, refused - 1))
        elif answered:
            self.throttle.learn_rcpt_limit(session.ip, len(answered))
        if not all(_is_size_limit(reply) for reply in limited):
            self.throttle.back_off(session.ip)

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

    def _suggestion(self, address: Address) -> str | None:
        """Return suggest_correction(address), worked out once per domain of the run."""
        # The correction depends on the domain alone; computing it costs ~20 µs an address.
        corrected = self._corrections.get(address.domain, "")
        if corrected == "":
            if len(self._corrections) >= _MAX_VERDICTS:
                self._corrections.clear()
            suggestion = suggest_correction(address)
            corrected = suggestion.rpartition("@")[2] if suggestion else None
            self._corrections[address.domain] = corrected
        return f"{address.local_part}@{corrected}" if corrected else None

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
            suggestion=self._suggestion(address),
            verified_at=_now(),
            response_time_ms=int((time.perf_counter() - job.started) * 1000),
        )


class _Run:
    """One verify_many call: queues addresses per domain, drains the queues, hands results back.

    Addresses wait in their domain's queue until a session to the domain's MX can take them,
    so sessions to a busy host leave full, sized by what the host has taught us; a host with
    room waits at most _LINGER_S for a session to fill. Up to max_sessions_per_host workers
    drain a domain; greylisted addresses are asked again by a task of their own, so the
    domain's other addresses keep flowing meanwhile. A duplicate shares the answer of the copy
    in flight, or of one answered among the last _RECENT_ANSWERS that took a session.
    """

    def __init__(
        self,
        verifier: Verifier,
        results: asyncio.Queue[VerificationResult | BaseException | None],
    ) -> None:
        self._verifier = verifier
        self._results = results
        self._queues: dict[tuple[str, bool], _Queue] = {}
        self._waiting: dict[str, list[_Job]] = {}  # normalised address → jobs sharing its answer
        # Answers that took a session, for duplicates further down the input (bounded: the
        # whole input's answers would grow with it).
        self._recent: OrderedDict[str, VerificationResult] = OrderedDict()
        self._input_done = False
        self._tasks: asyncio.TaskGroup | None = None
        smtp = verifier.settings.smtp
        self._batch = smtp.max_rcpt_per_session
        self._max_workers = smtp.max_sessions_per_host

    async def feed(
        self, emails: Iterable[str] | AsyncIterable[str], window: asyncio.Semaphore
    ) -> None:
        """Read and queue every address, drain the queues; put None (or the input's error) last."""
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                async for email in _aiter(emails):
                    await window.acquire()
                    self._add(self._verifier._job(email))
                self._input_done = True
                for queue in self._queues.values():
                    queue.filled.set()  # no address can come any more: lingering is pointless
        except BaseExceptionGroup as group:  # input iteration failed: hand it to the caller
            self._results.put_nowait(group.exceptions[0])
            return
        self._results.put_nowait(None)

    def _add(self, job: _Job | VerificationResult) -> None:
        """Queue a job on its domain (or pass its syntax result on), starting workers as needed."""
        if isinstance(job, VerificationResult):
            self._results.put_nowait(job)
            return
        sharing = self._waiting.get(job.address.normalized)
        if sharing is not None:
            sharing.append(job)
            return
        answered = self._recent.get(job.address.normalized)
        if answered is not None:
            self._recent.move_to_end(job.address.normalized)
            self._results.put_nowait(replace(answered, email=job.email, response_time_ms=0))
            return
        self._waiting[job.address.normalized] = [job]
        key = (job.address.domain, job.address.smtputf8)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(*key)
        queue.jobs.append(job)
        if len(queue.jobs) >= queue.want:
            queue.filled.set()
        if queue.workers < self._max_workers and len(queue.jobs) > queue.workers * self._batch:
            # More workers than the host's session limit would only wait for its slots.
            assert self._tasks is not None
            queue.workers += 1
            self._tasks.create_task(self._work(queue))

    async def _work(self, queue: _Queue) -> None:
        """Drain one domain's queue, then forget the queue if no other worker still drains it."""
        try:
            while queue.jobs:
                await self._drain_once(queue)
        finally:
            queue.workers -= 1
            key = (queue.domain, queue.smtputf8)
            if not queue.workers and not queue.jobs and self._queues.get(key) is queue:
                del self._queues[key]  # bounded memory: only domains with work are kept

    async def _drain_once(self, queue: _Queue) -> None:
        """Answer the queue's jobs that need no session, or run one conversation for a batch."""
        verifier = self._verifier
        taken: list[_Job] = []
        try:
            plan = await verifier._plan(queue.domain)
            if isinstance(plan, _Final):
                taken += queue.jobs
                queue.jobs.clear()
                for job in taken:
                    self._deliver(job, verifier._result(job, plan.answer, route=plan.route))
                return
            await self._linger(queue, plan)
            probe = f"{made_up_local_part(verifier._rng)}@{plan.domain}"
            answers = await verifier._converse(plan, taken, probe=probe, queue=queue.jobs)
            self._settle(plan, taken, answers, probe=probe)
        except Exception:
            log.exception("internal error verifying %d address(es)", len(taken) or 1)
            if not taken and queue.jobs:
                taken.append(queue.jobs.popleft())  # the failing step must not spin forever
            answer = _Answer(Verdict.of(Reason.INTERNAL_ERROR))
            for job in taken:
                if job.address.normalized in self._waiting:
                    self._deliver(job, verifier._result(job, answer, route=None))

    async def _linger(self, queue: _Queue, route: MailRoute) -> None:
        """Wait until the queue fills a session, the input ends, or its oldest job waited enough."""
        queue.want = self._verifier._session_room(route)
        if not queue.jobs or len(queue.jobs) >= queue.want or self._input_done:
            return  # empty: another worker of the domain took them while we looked up the route
        queue.filled.clear()
        known = route.domain in self._verifier._catch_all
        linger = _LINGER_S if known else _FIRST_LINGER_S
        wait = queue.jobs[0].started + linger - time.perf_counter()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await queue.filled.wait()

    def _settle(
        self, route: MailRoute, jobs: list[_Job], answers: dict[_Job, _Answer], *, probe: str
    ) -> None:
        """Deliver the answered jobs; greylisted ones are asked again later by a task of theirs."""
        greylisted = [job for job in jobs if answers[job].verdict.reason is Reason.GREYLISTED]
        for job in jobs:
            if answers[job].verdict.reason is not Reason.GREYLISTED:
                self._deliver(job, self._verifier._result(job, answers[job], route=route))
        if greylisted:
            assert self._tasks is not None
            self._tasks.create_task(self._retry(route, greylisted, answers, probe=probe))

    async def _retry(
        self, route: MailRoute, jobs: list[_Job], answers: dict[_Job, _Answer], *, probe: str
    ) -> None:
        """Ask greylisted jobs again after the server's delay while max_wait_s allows; deliver."""
        verifier = self._verifier
        # max_wait_s counts from the first greylisting, not from when the address was read:
        # waiting for a busy host's slot is not waiting for the greylist.
        deadline = time.monotonic() + verifier.settings.greylist.max_wait_s
        pending = jobs
        # One made-up address for every try: greylisting keys on (client, sender, recipient), so
        # a fresh probe on each retry would be greylisted afresh and keep the batch undecided.
        try:
            for attempt in itertools.count():
                delay = verifier._greylist_delay([answers[job] for job in pending], attempt)
                if delay is None or time.monotonic() + delay > deadline:
                    break
                log.info("greylisted, retrying", extra={"domain": route.domain, "delay_s": delay})
                await asyncio.sleep(delay)
                answers.update(await verifier._converse(route, pending, probe=probe))
                pending = [j for j in pending if answers[j].verdict.reason is Reason.GREYLISTED]
                if not pending:
                    break
        except Exception:
            log.exception("internal error retrying %d greylisted address(es)", len(pending))
            for job in pending:
                answers[job] = _Answer(Verdict.of(Reason.INTERNAL_ERROR))
        for job in jobs:
            self._deliver(job, verifier._result(job, answers[job], route=route))

    def _deliver(self, job: _Job, result: VerificationResult) -> None:
        """Queue the result for the job and every duplicate of its address."""
        if result.checks.smtp is not None:  # the others cost no session to work out again
            self._recent[job.address.normalized] = result
            if len(self._recent) > _RECENT_ANSWERS:
                self._recent.popitem(last=False)
        for each in self._waiting.pop(job.address.normalized, [job]):
            if each is not job:  # a duplicate: the same answer, its own input and wait
                elapsed = int((time.perf_counter() - each.started) * 1000)
                result = replace(result, email=each.email, response_time_ms=elapsed)
            self._results.put_nowait(result)


def _rcpt_max(ehlo: SmtpReply | None) -> int | None:
    """Return the recipients per transaction the EHLO reply's LIMITS line allows (RFC 9422)."""
    for line in ehlo.message.splitlines() if ehlo is not None else ():
        words = line.split()
        if not words or words[0].upper() != "LIMITS":
            continue
        for param in words[1:]:
            name, _, value = param.partition("=")
            if name.upper() == "RCPTMAX" and value.isdigit() and int(value) > 0:
                return int(value)
    return None


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
