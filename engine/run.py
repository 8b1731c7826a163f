"""A verify_many run: read-ahead, per-domain queues, linger, greylist retries, delivery.

Owns the scheduling of one verify_many call: how far input is read ahead of the caller, which
domain queue an address waits in, when a session leaves with the addresses it found, when
greylisted addresses are asked again, and handing results back in completion order, shared
with duplicates. It decides no verdict: it drives two narrow protocols, `Steps` (the verifier
parses, routes and builds results) and `Conversations` (conversation.py asks the servers), the
way dnspython's async resolver drives its I/O-free resolution.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from .answer import INTERNAL_ERROR, Answer, DomainAnswer, Job
from .mx import MailRoute
from .result import Reason, VerificationResult
from .sanity import ListGuard
from .settings import EngineSettings, GreylistSettings

log = logging.getLogger("mailprobe.engine")

#: A domain's next session waits at most this long (from its oldest address's arrival) for
#: enough addresses to fill it, unless the input has ended: fewer, fuller sessions.
_LINGER_S = 1.0
#: ...but its first one leaves soon: it brings the catch-all answer and the host's limits that
#: size the next ones, and a host idle at the start is time lost for good.
_FIRST_LINGER_S = 0.1
#: Answers kept for duplicates that come after their first copy was answered (~1 KB each).
_RECENT_ANSWERS = 10_000
#: Addresses read before the reader lets sessions run: parsing one costs ~0.2 ms of CPU, and
#: every millisecond the event loop is busy delays the replies of every session in flight.
_READ_CHUNK = 2

_Item = VerificationResult | BaseException | None  # None: every result was handed back


@dataclass(slots=True)
class _Queue:
    """One domain's addresses waiting for a session, and how many workers drain them."""

    domain: str
    smtputf8: bool
    jobs: deque[Job] = field(default_factory=deque)
    workers: int = 0
    want: int = 1  # queued addresses that fill a session: a lingering worker goes then
    most: int = 1  # workers worth running: the sessions its MX hosts may hold for it
    filled: asyncio.Event = field(default_factory=asyncio.Event)


class Steps(Protocol):
    """The verifier's steps a Run drives (Verifier implements them); none schedules anything."""

    settings: EngineSettings

    def parse(self, email: str) -> Job | VerificationResult:
        """Return the job for an address, or its final result when its syntax is invalid."""
        ...

    async def plan(
        self, domain: str, *, guard: ListGuard | None = None
    ) -> MailRoute | DomainAnswer:
        """Return the route to ask the domain's MX over, or the answer that needs no session."""
        ...

    def made_up_address(self, domain: str) -> str:
        """Return an address at the domain that no one has (the catch-all question)."""
        ...

    def result(self, job: Job, answer: Answer, *, route: MailRoute | None) -> VerificationResult:
        """Return the contract result for one job from its answer and the domain's facts."""
        ...


class Conversations(Protocol):
    """The SMTP step a Run drives (conversation.SmtpStep implements it)."""

    def sessions_for(self, route: MailRoute) -> int:
        """Return how many sessions the domain may use at once."""
        ...

    def session_room(self, route: MailRoute) -> int:
        """Return how many addresses fill the domain's next session."""
        ...

    def knows_catch_all(self, route: MailRoute) -> bool:
        """Return True once the domain's catch-all answer is known."""
        ...

    async def converse(
        self, route: MailRoute, jobs: list[Job], *, made_up: str, queue: deque[Job] | None = None
    ) -> dict[Job, Answer]:
        """Return an answer for every job (and the queued jobs its first session took)."""
        ...


class Run:
    """One verify_many call: queues addresses per domain, drains the queues, hands results back.

    Addresses wait in their domain's queue until a session to the domain's MX can take them,
    so sessions to a busy host leave full, sized by what the host has taught us; a host with
    room waits at most _LINGER_S for a session to fill. Up to max_sessions_per_host workers
    drain a domain; greylisted addresses are asked again by a task of their own, so the
    domain's other addresses keep flowing meanwhile. A duplicate shares the answer of the copy
    in flight, or of one answered among the last _RECENT_ANSWERS that took a session.
    """

    def __init__(self, steps: Steps, smtp: Conversations, *, read_ahead: int) -> None:
        self._steps = steps
        self._smtp = smtp
        self._window = asyncio.Semaphore(read_ahead)  # released as the caller takes results
        self._results: asyncio.Queue[_Item] = asyncio.Queue()
        self._queues: dict[tuple[str, bool], _Queue] = {}
        self._waiting: dict[str, list[Job]] = {}  # normalised address → jobs sharing its answer
        # Answers that took a session, for duplicates further down the input (bounded: the
        # whole input's answers would grow with it).
        self._recent: OrderedDict[str, VerificationResult] = OrderedDict()
        self._input_done = False
        self._guard = ListGuard(steps.settings.dns)  # DNS verdicts wait for its judgement
        self._tasks: asyncio.TaskGroup | None = None
        limits = steps.settings.smtp
        self._batch = limits.max_rcpt_per_session
        self._max_workers = limits.max_sessions_per_host  # until the domain's route is known

    async def results(
        self, emails: Iterable[str] | AsyncIterable[str]
    ) -> AsyncIterator[VerificationResult]:
        """Yield one result per input address, in completion order, reading input lazily."""
        feeder = asyncio.create_task(self._feed(emails))
        try:
            for count in itertools.count(1):
                if count % _READ_CHUNK == 0:
                    # A session's batch finishing hands over many results at once: let replies
                    # of the sessions in flight through between the caller's turns.
                    await asyncio.sleep(0)
                if (item := await self._results.get()) is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
                self._window.release()
        finally:
            if not feeder.done():
                feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)

    async def _feed(self, emails: Iterable[str] | AsyncIterable[str]) -> None:
        """Read and queue every address, drain the queues; put None (or the input's error) last."""
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                async for email in _read(emails):
                    if self._window.locked():
                        self._guard.release()  # held DNS verdicts fill the window: judge now
                    await self._window.acquire()
                    self._add(self._steps.parse(email))
                self._input_done = True
                self._guard.input_ended()
                for queue in self._queues.values():
                    queue.filled.set()  # no address can come any more: lingering is pointless
        except BaseExceptionGroup as group:  # input iteration failed: hand it to the caller
            self._results.put_nowait(group.exceptions[0])
            return
        self._results.put_nowait(None)

    def _add(self, job: Job | VerificationResult) -> None:
        """Queue a job on its domain (or pass its syntax result on), starting workers as needed."""
        if isinstance(job, VerificationResult):
            self._results.put_nowait(job)
            return
        if self._shared(job):
            return
        self._waiting[job.address.normalized] = [job]
        key = (job.address.domain, job.address.smtputf8)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(*key, most=self._max_workers)
            self._guard.expect(job.address.domain)
        queue.jobs.append(job)
        if len(queue.jobs) >= queue.want:
            queue.filled.set()
        self._staff(queue)

    def _staff(self, queue: _Queue) -> None:
        """Start a worker for the queue when its jobs fill more sessions than its workers run."""
        if queue.workers < queue.most and len(queue.jobs) > queue.workers * self._batch:
            # More workers than its hosts' session limits would only wait for their slots.
            assert self._tasks is not None
            work = self._work(queue)
            try:
                self._tasks.create_task(work)
            except RuntimeError:  # the run is being cancelled: no new worker is wanted
                work.close()
                return
            queue.workers += 1

    def _shared(self, job: Job) -> bool:
        """Return True when a duplicate's answer is in flight or recent: it needs no session."""
        sharing = self._waiting.get(job.address.normalized)
        if sharing is not None:
            sharing.append(job)
            return True
        answered = self._recent.get(job.address.normalized)
        if answered is None:
            return False
        self._recent.move_to_end(job.address.normalized)
        self._results.put_nowait(replace(answered, email=job.email, response_time_ms=0))
        return True

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
        taken: list[Job] = []
        try:
            plan = await self._steps.plan(queue.domain, guard=self._guard)
            if isinstance(plan, DomainAnswer):
                taken += queue.jobs
                queue.jobs.clear()
                for job in taken:
                    self._finish(job, plan.answer, plan.route)
                return
            # A domain's equal-preference MX hosts share its sessions (RFC 5321 §5.1).
            if (most := self._smtp.sessions_for(plan)) != queue.most:
                queue.most = most
                self._staff(queue)
            await self._linger(queue, plan)
            made_up = self._steps.made_up_address(plan.domain)
            answers = await self._smtp.converse(plan, taken, made_up=made_up, queue=queue.jobs)
            self._settle(plan, taken, answers, made_up=made_up)
        except Exception:
            log.exception("internal error verifying %d address(es)", len(taken) or 1)
            if not taken and queue.jobs:
                taken.append(queue.jobs.popleft())  # the failing step must not spin forever
            for job in taken:
                if job.address.normalized in self._waiting:
                    self._finish(job, INTERNAL_ERROR, None)

    async def _linger(self, queue: _Queue, route: MailRoute) -> None:
        """Wait until the queue fills a session, the input ends, or its oldest job waited enough."""
        queue.want = self._smtp.session_room(route)
        if not queue.jobs or len(queue.jobs) >= queue.want or self._input_done:
            return  # empty: another worker of the domain took them while we looked up the route
        queue.filled.clear()
        linger = _LINGER_S if self._smtp.knows_catch_all(route) else _FIRST_LINGER_S
        wait = queue.jobs[0].started + linger - time.perf_counter()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await queue.filled.wait()

    def _settle(
        self, route: MailRoute, jobs: list[Job], answers: dict[Job, Answer], *, made_up: str
    ) -> None:
        """Deliver the answered jobs; greylisted ones are asked again later by a task of theirs."""
        greylisted = [job for job in jobs if answers[job].verdict.reason is Reason.GREYLISTED]
        for job in jobs:
            if answers[job].verdict.reason is not Reason.GREYLISTED:
                self._finish(job, answers[job], route)
        if greylisted:
            assert self._tasks is not None
            self._tasks.create_task(self._retry(route, greylisted, answers, made_up=made_up))

    async def _retry(
        self, route: MailRoute, jobs: list[Job], answers: dict[Job, Answer], *, made_up: str
    ) -> None:
        """Ask greylisted jobs again after the server's delay while max_wait_s allows; deliver."""
        greylist = self._steps.settings.greylist
        # max_wait_s counts from the first greylisting, not from when the address was read:
        # waiting for a busy host's slot is not waiting for the greylist.
        deadline = time.monotonic() + greylist.max_wait_s
        pending = jobs
        # One made-up address for every try: greylisting keys on (client, sender, recipient), so
        # a fresh one on each retry would be greylisted afresh and keep the batch undecided.
        try:
            for attempt in itertools.count():
                delay = _greylist_delay(greylist, [answers[job] for job in pending], attempt)
                if delay is None or time.monotonic() + delay > deadline:
                    break
                log.info("greylisted, retrying", extra={"domain": route.domain, "delay_s": delay})
                await asyncio.sleep(delay)
                answers.update(await self._smtp.converse(route, pending, made_up=made_up))
                pending = [j for j in pending if answers[j].verdict.reason is Reason.GREYLISTED]
                if not pending:
                    break
        except Exception:
            log.exception("internal error retrying %d greylisted address(es)", len(pending))
            answers.update(dict.fromkeys(pending, INTERNAL_ERROR))
        for job in jobs:
            self._finish(job, answers[job], route)

    def _finish(self, job: Job, answer: Answer, route: MailRoute | None) -> None:
        """Deliver the result the verifier builds from the job's answer and its domain's route."""
        self._deliver(job, self._steps.result(job, answer, route=route))

    def _deliver(self, job: Job, result: VerificationResult) -> None:
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


def _greylist_delay(
    greylist: GreylistSettings, answers: list[Answer], attempt: int
) -> float | None:
    """Return how long to wait before asking greylisted recipients again, or None: stop."""
    delays = greylist.retry_delays_s
    if attempt >= len(delays):
        return None
    asked = [a.verdict.retry_after_s for a in answers if a.verdict.retry_after_s]
    # The server's own delay wins: asking sooner only restarts its clock.
    return max([delays[attempt], *asked])


async def _read(emails: Iterable[str] | AsyncIterable[str]) -> AsyncIterator[str]:
    """Yield the addresses, letting sessions run every few: a long list is read in slices."""
    # An async source need not suspend either: the pause is ours, whatever the source.
    source = emails if isinstance(emails, AsyncIterable) else _async(emails)
    count = 0
    async for email in source:
        yield email
        count += 1
        if count % _READ_CHUNK == 0:
            await asyncio.sleep(0)


async def _async(emails: Iterable[str]) -> AsyncIterator[str]:
    """Yield a plain iterable's addresses (read() then treats every source alike)."""
    for email in emails:
        yield email
