"""Answers to callers: from the cache or the engine, one verification per address at once.

Owns deduplication (every request for a normalised address shares one verification), the
caller's deadline (past it, a partial answer while the verification goes on in the background)
and saving finished results to the cache. It decides nothing about an address: the engine does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from mailprobe.engine import (
    Address,
    DnsError,
    MailRoute,
    VerificationResult,
    Verifier,
    parse_address,
)

from .cache import ResultCache
from .metrics import ApiMetrics
from .partial import partial_result

log = logging.getLogger(__package__)  # "mailprobe.api", the one logger of the whole API


def _now() -> datetime:
    return datetime.now(UTC)


class Source(StrEnum):
    """Where an answer came from (the `source` label of mailprobe_api_answers_total)."""

    VERIFIED = "verified"  # this request started the verification
    JOINED = "joined"  # another request's verification of the same address was in flight
    CACHE = "cache"  # a fresh stored answer
    PARTIAL = "partial"  # the deadline passed first: unknown/timeout with what is known
    SYNTAX = "syntax"  # not an address: no lookup needed


@dataclass(frozen=True, slots=True)
class CallerAnswer:
    """One address's answer to a caller."""

    result: VerificationResult
    source: Source

    def to_json(self) -> dict[str, Any]:
        """Return the result JSON with `cached` and `partial` added."""
        return {
            **self.result.to_json(),
            "cached": self.source is Source.CACHE,
            "partial": self.source is Source.PARTIAL,
        }


@dataclass(frozen=True, slots=True)
class _Outcome:
    result: VerificationResult
    cached: bool


@dataclass(slots=True, eq=False)
class _Pending:
    """One normalised address being answered; every request for it shares `outcome`."""

    email: str
    address: Address
    outcome: asyncio.Future[_Outcome]
    route: asyncio.Task[MailRoute | None] | None = None


def _known_route(job: _Pending) -> MailRoute | None:
    """Return the job's mail route if its lookup has finished, else None."""
    lookup = job.route
    if lookup is None or not lookup.done() or lookup.cancelled() or lookup.exception():
        return None
    return lookup.result()


def _stop_route(job: _Pending) -> None:
    """Cancel the job's mail route lookup: a settled job needs no partial answer."""
    if job.route is not None and not job.route.done():
        job.route.cancel()  # the router shields its lookups: the verifier's go on


class Verifications:
    """Answers addresses from the cache or the engine, one verification per address at once."""

    def __init__(self, verifier: Verifier, cache: ResultCache, *, metrics: ApiMetrics) -> None:
        self._verifier = verifier
        self._cache = cache
        self._metrics = metrics
        self._allow_test = verifier.settings.syntax.allow_test_domains
        self._pending: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        """Return how many addresses are being looked up or verified now."""
        return len(self._pending)

    async def wait_idle(self) -> None:
        """Return once no verification is in flight (its answer is in the cache by then)."""
        await self._idle.wait()

    async def answer(self, emails: Sequence[str], *, timeout_s: float) -> list[CallerAnswer]:
        """Return one answer per address, in order, within `timeout_s` of waiting for SMTP."""
        started = time.perf_counter()
        parsed = [
            (email, parse_address(email, allow_test_domains=self._allow_test)) for email in emails
        ]
        claims = self._claim([(e, a) for e, a in parsed if isinstance(a, Address)])
        waiting = {job.outcome for job, _ in claims.values() if not job.outcome.done()}
        if waiting:
            await asyncio.wait(waiting, timeout=timeout_s)
        answers: list[CallerAnswer] = []
        for email, address in parsed:
            if not isinstance(address, Address):
                answers.append(CallerAnswer(await self._verifier.verify(email), Source.SYNTAX))
                continue
            job, joined = claims[address.normalized]
            answers.append(self._answer_of(email, job, joined=joined, started=started))
        for answer in answers:
            self._metrics.answers.labels(answer.source).inc()
        return answers

    def _answer_of(
        self, email: str, job: _Pending, *, joined: bool, started: float
    ) -> CallerAnswer:
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        if not job.outcome.done():
            result = partial_result(
                email, job.address, _known_route(job), elapsed_ms=elapsed_ms, now=_now()
            )
            return CallerAnswer(result, Source.PARTIAL)
        outcome = job.outcome.result()  # an engine bug raises here: a 500, as it should
        result = replace(outcome.result, email=email, response_time_ms=elapsed_ms)
        if outcome.cached:
            return CallerAnswer(result, Source.CACHE)
        return CallerAnswer(result, Source.JOINED if joined else Source.VERIFIED)

    def _claim(self, wanted: Iterable[tuple[str, Address]]) -> dict[str, tuple[_Pending, bool]]:
        """Return each address's job and whether it was already in flight; start the new ones."""
        loop = asyncio.get_running_loop()
        claims: dict[str, tuple[_Pending, bool]] = {}
        new: list[_Pending] = []
        for email, address in wanted:
            key = address.normalized
            if key in claims:
                continue
            job = self._pending.get(key)
            if job is None:
                job = self._new_pending(email, address)
                new.append(job)
                claims[key] = (job, False)
            else:
                claims[key] = (job, True)
        if new:
            self._idle.clear()
            task = loop.create_task(self._run(new))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return claims

    def _new_pending(self, email: str, address: Address) -> _Pending:
        outcome: asyncio.Future[_Outcome] = asyncio.get_running_loop().create_future()
        # Mark a failure retrieved even when every waiter has given up on it.
        outcome.add_done_callback(lambda done: done.cancelled() or done.exception())
        job = _Pending(email, address, outcome)
        self._pending[address.normalized] = job
        return job

    async def _run(self, jobs: list[_Pending]) -> None:
        """Answer the addresses from the cache, else verify them together; settle every one."""
        try:
            misses: list[_Pending] = []
            for job in jobs:
                hit = await self._cache.fresh(job.address.normalized, now=_now())
                if hit is None:
                    misses.append(job)
                else:
                    self._settle(job, _Outcome(hit, cached=True))
            if misses:
                await self._verify(misses)
        except asyncio.CancelledError:
            for job in jobs:
                job.outcome.cancel()
            raise
        except Exception as exc:
            log.exception("verifying %d address(es) failed", len(jobs))
            for job in jobs:
                if not job.outcome.done():
                    job.outcome.set_exception(exc)
        finally:
            for job in jobs:
                if not job.outcome.done():
                    job.outcome.set_exception(RuntimeError("the engine gave no answer"))
                self._forget(job)

    async def _verify(self, jobs: list[_Pending]) -> None:
        """Verify addresses in one engine run (one domain's addresses share sessions)."""
        by_key = {job.address.normalized: job for job in jobs}
        for job in jobs:
            job.route = asyncio.get_running_loop().create_task(self._route(job.address.domain))
        async for result in self._verifier.verify_many([job.email for job in jobs]):
            job = by_key.get(result.normalized)
            if job is None or job.outcome.done():
                continue
            self._settle(job, _Outcome(result, cached=False))
            self._metrics.record(result)
            await self._cache.save(result, now=_now())
            self._forget(job)

    async def _route(self, domain: str) -> MailRoute | None:
        """Return the domain's mail route for a partial answer; None when DNS cannot tell.

        The verifier's own route() shares its DNS cache and shields its lookups, so cancelling
        a partial answer's lookup leaves the verification's running.
        """
        try:
            return await self._verifier.route(domain)
        except DnsError:
            return None

    def _settle(self, job: _Pending, outcome: _Outcome) -> None:
        job.outcome.set_result(outcome)
        _stop_route(job)

    def _forget(self, job: _Pending) -> None:
        """Drop a settled job (after its answer is saved, so a new request finds it cached)."""
        if self._pending.get(job.address.normalized) is job:
            del self._pending[job.address.normalized]
        _stop_route(job)
        if not self._pending:
            self._idle.set()

    async def aclose(self) -> None:
        """Stop background verifications (their answers are lost, not cached)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
