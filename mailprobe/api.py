"""The real-time verification HTTP API (`mailprobe serve`, or inside `mailprobe run`).

Owns the HTTP edge: routes, API keys, per-key rate limits, request validation, the result cache
in front of the engine (the store's, or a small in-memory one), one verification in flight per
normalised address, `unknown/timeout` answers when a caller's deadline passes first, health,
readiness, Prometheus metrics and the OpenAPI description. It decides nothing about addresses
(the engine does; freshness.py says how long an answer is reused) and holds no SQL (the store's
verbs only). It never logs API keys, Authorization headers, query strings or addresses.

    GET  /v1/verify?email=…&timeout_ms=…   one result: design.md's JSON plus `cached`, `partial`
    POST /v1/verify         {"email": …, "timeout_ms": …}
    POST /v1/verify/batch   {"emails": [… at most 100], "timeout_ms": …}   a list, input order
    GET  /healthz  /readyz  /metrics  /openapi.json  /docs

A caller's deadline bounds its wait, never the verification: when it passes before the SMTP
answer, the answer is `unknown/timeout` with what is known so far (`"partial": true`) and the
verification goes on in the background, so the next call answers from the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import ipaddress
import json
import logging
import math
import secrets
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Protocol, TypeVar

import uvicorn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine import enrich, score
from engine.errors import DnsError
from engine.mx import MailRoute, MailRouter, RouteKind
from engine.result import Checks, Reason, Verdict, VerificationResult
from engine.syntax import Address, parse_address, suggest_correction
from engine.verifier import Verifier

from .daemon import freshness_for
from .errors import ConfigError, StoreError
from .freshness import Cached, Freshness
from .settings import ApiSettings, AppSettings
from .store import StatusSummary, Store

log = logging.getLogger("mailprobe.api")

MAX_EMAIL_LENGTH = 254  # RFC 5321 §4.5.3.1.3 path limit less the angle brackets
MAX_BATCH = 100
MIN_TIMEOUT_MS = 100
MAX_TIMEOUT_MS = 60_000
#: 100 addresses of 254 characters, each escaped as \uXXXX, fit with room to spare.
MAX_BODY_BYTES = 256 * 1024
#: How long /readyz waits for each dependency before calling it not ready.
READY_TIMEOUT_S = 2.0
#: uvicorn's wait for requests in flight at shutdown: the longest timeout_ms, and a margin.
GRACEFUL_SHUTDOWN_S = MAX_TIMEOUT_MS / 1000 + 5

_T = TypeVar("_T")


def _now() -> datetime:
    return datetime.now(UTC)


# --- request bodies --------------------------------------------------------------------------


def _address_text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


EmailText = Annotated[StrictStr, Field(max_length=MAX_EMAIL_LENGTH), AfterValidator(_address_text)]
TimeoutMs = Annotated[StrictInt, Field(ge=MIN_TIMEOUT_MS, le=MAX_TIMEOUT_MS)]


class VerifyRequest(BaseModel):
    """One address to verify, and how long the caller waits for the SMTP answer."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    email: EmailText
    timeout_ms: TimeoutMs | None = None


class BatchRequest(BaseModel):
    """Up to 100 addresses to verify together (addresses of one domain share SMTP sessions)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    emails: Annotated[list[EmailText], Field(min_length=1, max_length=MAX_BATCH)]
    timeout_ms: TimeoutMs | None = None


_RANGE = f"must be an integer from {MIN_TIMEOUT_MS} to {MAX_TIMEOUT_MS}"
_PROBLEMS: dict[str, str] = {
    "missing": "is required",
    "string_type": "must be a string",
    # A lone surrogate (JSON "\ud800") could not even be written back in the answer.
    "string_unicode": "must be valid Unicode text (no lone surrogates)",
    "string_too_long": f"is longer than {MAX_EMAIL_LENGTH} characters",
    "int_type": _RANGE,
    "greater_than_equal": _RANGE,
    "less_than_equal": _RANGE,
    "list_type": "must be a list of addresses",
    "too_short": "must hold at least one address",
    "too_long": f"may hold at most {MAX_BATCH} addresses",
    "model_type": "the body must be a JSON object",
    "model_attributes_type": "the body must be a JSON object",
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a request: where (`emails[3]`, `body`) and what, in plain words."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def problems_of(error: ValidationError) -> list[Problem]:
    """Return pydantic's findings as plain problems (`emails[3]: must be a string`)."""
    found: list[Problem] = []
    for item in error.errors(include_url=False):
        loc = item["loc"]
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
        message = _PROBLEMS.get(item["type"])
        if message is None:
            cause = item.get("ctx", {}).get("error")
            message = str(cause) if cause is not None else item["msg"]
        found.append(Problem(where.lstrip(".") or "body", message))
    return found


class RequestError(Exception):
    """A request we refuse, as the status and JSON body to answer with."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        problems: Sequence[Problem] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.problems = tuple(problems)
        self.headers = headers or {}
        super().__init__(status, code, message)

    def response(self) -> JSONResponse:
        """Return the JSON error answer: `{"error", "message", "problems"?}`."""
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.problems:
            body["problems"] = [{"field": p.field, "message": p.message} for p in self.problems]
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _invalid(problems: Sequence[Problem]) -> RequestError:
    return RequestError(422, "invalid_request", "; ".join(map(str, problems)), problems=problems)


_M = TypeVar("_M", bound=BaseModel)


def validate(model: type[_M], data: Any) -> _M:
    """Return the validated request, or raise a 422 RequestError naming every problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(problems_of(exc)) from None


async def read_json(request: Request) -> Any:
    """Return the JSON body; raise a 413 or 422 RequestError for an oversized or broken one."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(413, "body_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise _invalid([Problem("body", "is empty; send a JSON object")])
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # bad UTF-8 or JSON; absurd nesting
        raise _invalid([Problem("body", "is not valid JSON")]) from None


def query_request(request: Request) -> VerifyRequest:
    """Return the GET request's parameters validated like a POST body."""
    params = request.query_params
    data: dict[str, Any] = {}
    if "email" in params:
        data["email"] = params["email"]
    if "timeout_ms" in params:
        text = params["timeout_ms"].strip()
        data["timeout_ms"] = int(text) if text.isascii() and text.isdigit() else text
    return validate(VerifyRequest, data)


# --- keys and rate limits --------------------------------------------------------------------


def presented_key(request: Request) -> bytes | None:
    """Return the key the caller sent (`Authorization: Bearer …` or `X-API-Key`), as bytes."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        text = token.strip()
    else:
        text = request.headers.get("x-api-key", "").strip()
    # Starlette decodes headers as Latin-1: encoding back gives the bytes that were sent.
    return text.encode("latin-1") if text else None


class KeyRing:
    """The accepted API keys; they are compared in constant time and never handed out."""

    def __init__(self, keys: Sequence[SecretStr]) -> None:
        # Digests make every comparison the same length, so timing tells nothing about a key.
        self._digests = [hashlib.sha256(k.get_secret_value().encode()).digest() for k in keys]

    @property
    def required(self) -> bool:
        """Return True when callers must present a key."""
        return bool(self._digests)

    def identify(self, presented: bytes | None) -> str | None:
        """Return the id of the matching key (`key1`, `key2`, … in config order), or None."""
        if presented is None:
            return None
        digest = hashlib.sha256(presented).digest()
        found = None
        for index, known in enumerate(self._digests, start=1):
            # No early exit: every key is compared, matching or not.
            if hmac.compare_digest(digest, known) and found is None:
                found = f"key{index}"
        return found


class RateLimiter:
    """Token buckets per caller: `per_minute` tokens a minute, in bursts of up to as many.

    Hand-written: no installed library limits rates; a bucket is two numbers.
    """

    _MAX_CALLERS = 10_000

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # caller → (tokens, when)

    def take(self, caller: str, cost: int = 1) -> float:
        """Return 0 and take `cost` tokens when the caller may go ahead, else seconds to wait.

        A cost above the capacity is charged as the capacity, so a batch is never refused
        forever.
        """
        now = self._clock()
        tokens, then = self._buckets.get(caller, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        cost_f = min(float(cost), self.capacity)
        if len(self._buckets) >= self._MAX_CALLERS:
            self._forget_full(now)
        if tokens >= cost_f:
            self._buckets[caller] = (tokens - cost_f, now)
            return 0.0
        self._buckets[caller] = (tokens, now)
        return (cost_f - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: they hold nothing a fresh bucket would not."""
        self._buckets = {
            caller: (tokens, then)
            for caller, (tokens, then) in self._buckets.items()
            if tokens + (now - then) * self.rate < self.capacity
        }


# --- the result cache ------------------------------------------------------------------------


class ResultCache(Protocol):
    """Where answers wait between requests; `fresh()` returns only what may still be reused."""

    async def fresh(self, normalized: str, *, now: datetime) -> VerificationResult | None:
        """Return the reusable answer for a normalised address, or None."""
        ...

    async def save(self, result: VerificationResult, *, now: datetime) -> None:
        """Keep a finished verification (freshness decides what is kept and for how long)."""
        ...

    async def problem(self) -> str | None:
        """Return None when the cache can be written, else what is wrong (for /readyz)."""
        ...

    async def summary(self, connectors: Sequence[str]) -> StatusSummary | None:
        """Return the store's queue and pass figures for /metrics, None without a store."""
        ...

    async def aclose(self) -> None:
        """Release what the cache holds."""
        ...


class MemoryCache:
    """Answers in a dict with freshness.py's expiry, for an API run without a store."""

    def __init__(self, freshness: Freshness, *, max_entries: int = 100_000) -> None:
        self._freshness = freshness
        self._max_entries = max_entries
        self._entries: dict[str, Cached] = {}

    async def fresh(self, normalized: str, *, now: datetime) -> VerificationResult | None:
        """Return the reusable answer for a normalised address, or None."""
        entry = self._entries.get(normalized)
        return entry.result if entry is not None and entry.expires_at > now else None

    async def save(self, result: VerificationResult, *, now: datetime) -> None:
        """Keep a finished verification as the store would (an unknown never replaces valid)."""
        decision = self._freshness.decide(self._entries.get(result.normalized), result, now=now)
        if len(self._entries) >= self._max_entries:
            self._entries = {k: v for k, v in self._entries.items() if v.expires_at > now}
            if len(self._entries) >= self._max_entries:  # still full: keep the newer half
                self._entries = dict(list(self._entries.items())[self._max_entries // 2 :])
        self._entries.pop(result.normalized, None)  # re-inserted last: dict order is age order
        self._entries[result.normalized] = Cached(
            decision.result, decision.expires_at, decision.attempts
        )

    async def problem(self) -> str | None:
        """Return None: memory is always writable."""
        return None

    async def summary(self, connectors: Sequence[str]) -> StatusSummary | None:
        """Return None: there is no store to report on."""
        return None

    async def aclose(self) -> None:
        """Forget every answer."""
        self._entries.clear()


class _StoreThread:
    """One worker thread with its own store connection: sqlite3 connections stay in the
    thread that opened them, and a write waiting for the lock must not block the event loop."""

    def __init__(self, store: Store, name: str) -> None:
        self._path = store.path
        self._freshness = store.freshness
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._store: Store | None = None

    async def call(self, verb: Callable[[Store], _T]) -> _T:
        """Return `verb(store)` run in this thread (the connection opens on first use)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, verb)

    def _run(self, verb: Callable[[Store], _T]) -> _T:
        if self._store is None:
            self._store = Store(self._path, freshness=self._freshness)
        return verb(self._store)

    def close(self) -> None:
        """Close the connection in its thread and end the thread."""

        def close_store() -> None:
            if self._store is not None:
                self._store.close()
                self._store = None

        self._pool.submit(close_store)
        self._pool.shutdown(wait=True)


class StoreCache:
    """The store's result cache: the daemon's passes and the API share one set of answers.

    Reads and writes use separate threads and connections: in WAL mode a read never waits
    for a writer, so a pass holding the write lock cannot delay cached answers.
    """

    def __init__(self, store: Store) -> None:
        self._reads = _StoreThread(store, "mailprobe-api-store-read")
        self._writes = _StoreThread(store, "mailprobe-api-store-write")

    async def fresh(self, normalized: str, *, now: datetime) -> VerificationResult | None:
        """Return the store's reusable answer, or None (also when the store fails: logged)."""
        try:
            return await self._reads.call(lambda store: store.fresh_result(normalized, now=now))
        except StoreError as exc:
            log.warning("result cache read failed, verifying instead: %s", exc)
            return None

    async def save(self, result: VerificationResult, *, now: datetime) -> None:
        """Save the result through the store (logged, not raised, when the store fails)."""
        try:
            await self._writes.call(lambda store: store.save_result(result, now=now))
        except StoreError as exc:
            log.warning("result cache write failed: %s", exc)

    async def problem(self) -> str | None:
        """Return None when a write transaction can start, else the store's message."""
        try:
            # An empty write: BEGIN IMMEDIATE takes the write lock, then nothing changes. The
            # store has no verb for "can I write?" yet; this one is harmless with no ids.
            await self._writes.call(lambda store: store.check_writable())
        except StoreError as exc:
            return str(exc)
        return None

    async def summary(self, connectors: Sequence[str]) -> StatusSummary | None:
        """Return the store's per-connector figures."""
        return await self._reads.call(lambda store: store.status_summary(connectors))

    async def aclose(self) -> None:
        """Close both connections and their threads."""
        await asyncio.to_thread(self._reads.close)
        await asyncio.to_thread(self._writes.close)


# --- answers: cache, one verification per address, partial answers ---------------------------


class Source(StrEnum):
    """Where an answer came from (the `source` label of mailprobe_api_answers_total)."""

    VERIFIED = "verified"  # this request started the verification
    JOINED = "joined"  # another request's verification of the same address was in flight
    CACHE = "cache"  # a fresh stored answer
    PARTIAL = "partial"  # the deadline passed first: unknown/timeout with what is known
    SYNTAX = "syntax"  # not an address: no lookup needed


@dataclass(frozen=True, slots=True)
class Answer:
    """One address's answer to a caller."""

    result: VerificationResult
    source: Source

    def to_json(self) -> dict[str, Any]:
        """Return design.md's result JSON with `cached` and `partial` added."""
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
class _Job:
    """One normalised address being answered; every request for it shares `outcome`."""

    email: str
    address: Address
    outcome: asyncio.Future[_Outcome]
    route: asyncio.Task[MailRoute | None] | None = None


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


def _known_route(job: _Job) -> MailRoute | None:
    """Return the job's mail route if its lookup has finished, else None."""
    lookup = job.route
    if lookup is None or not lookup.done() or lookup.cancelled() or lookup.exception():
        return None
    return lookup.result()


def _mail_router(verifier: Verifier) -> MailRouter | None:
    """Return the verifier's router, so partial answers share its DNS cache and lookups.

    A private attribute: Verifier has no public route lookup yet (asked for in the report).
    """
    return getattr(verifier, "_router", None)


class Verifications:
    """Answers addresses from the cache or the engine, one verification per address at once."""

    def __init__(self, verifier: Verifier, cache: ResultCache, *, metrics: ApiMetrics) -> None:
        self._verifier = verifier
        self._cache = cache
        self._metrics = metrics
        self._router = _mail_router(verifier)
        self._allow_test = verifier.settings.syntax.allow_test_domains
        self._jobs: dict[str, _Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        """Return how many addresses are being looked up or verified now."""
        return len(self._jobs)

    async def wait_idle(self) -> None:
        """Return once no verification is in flight (its answer is in the cache by then)."""
        await self._idle.wait()

    async def answer(self, emails: Sequence[str], *, timeout_s: float) -> list[Answer]:
        """Return one answer per address, in order, within `timeout_s` of waiting for SMTP."""
        started = time.perf_counter()
        parsed = [
            (email, parse_address(email, allow_test_domains=self._allow_test)) for email in emails
        ]
        claims = self._claim([(e, a) for e, a in parsed if isinstance(a, Address)])
        waiting = {job.outcome for job, _ in claims.values() if not job.outcome.done()}
        if waiting:
            await asyncio.wait(waiting, timeout=timeout_s)
        answers: list[Answer] = []
        for email, address in parsed:
            if not isinstance(address, Address):
                answers.append(Answer(await self._verifier.verify(email), Source.SYNTAX))
                continue
            job, joined = claims[address.normalized]
            answers.append(self._answer_of(email, job, joined=joined, started=started))
        for answer in answers:
            self._metrics.answers.labels(answer.source).inc()
        return answers

    def _answer_of(self, email: str, job: _Job, *, joined: bool, started: float) -> Answer:
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        if not job.outcome.done():
            result = partial_result(
                email, job.address, _known_route(job), elapsed_ms=elapsed_ms, now=_now()
            )
            return Answer(result, Source.PARTIAL)
        outcome = job.outcome.result()  # an engine bug raises here: a 500, as it should
        result = replace(outcome.result, email=email, response_time_ms=elapsed_ms)
        if outcome.cached:
            return Answer(result, Source.CACHE)
        return Answer(result, Source.JOINED if joined else Source.VERIFIED)

    def _claim(self, wanted: Iterable[tuple[str, Address]]) -> dict[str, tuple[_Job, bool]]:
        """Return each address's job and whether it was already in flight; start the new ones."""
        loop = asyncio.get_running_loop()
        claims: dict[str, tuple[_Job, bool]] = {}
        new: list[_Job] = []
        for email, address in wanted:
            key = address.normalized
            if key in claims:
                continue
            job = self._jobs.get(key)
            if job is None:
                job = self._new_job(email, address)
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

    def _new_job(self, email: str, address: Address) -> _Job:
        outcome: asyncio.Future[_Outcome] = asyncio.get_running_loop().create_future()
        # Mark a failure retrieved even when every waiter has given up on it.
        outcome.add_done_callback(lambda done: done.cancelled() or done.exception())
        job = _Job(email, address, outcome)
        self._jobs[address.normalized] = job
        return job

    async def _run(self, jobs: list[_Job]) -> None:
        """Answer the jobs from the cache, else verify them together; settle every one."""
        try:
            misses: list[_Job] = []
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

    async def _verify(self, jobs: list[_Job]) -> None:
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
        """Return the domain's mail route for a partial answer; None when DNS cannot tell."""
        if self._router is None:
            return None
        try:
            return await self._router.route(domain)
        except DnsError:
            return None

    def _settle(self, job: _Job, outcome: _Outcome) -> None:
        job.outcome.set_result(outcome)
        if job.route is not None and not job.route.done():
            job.route.cancel()  # the router shields its lookups: the verifier's go on

    def _forget(self, job: _Job) -> None:
        """Drop a settled job (after its answer is saved, so a new request finds it cached)."""
        if self._jobs.get(job.address.normalized) is job:
            del self._jobs[job.address.normalized]
        if job.route is not None and not job.route.done():
            job.route.cancel()
        if not self._jobs:
            self._idle.set()

    async def aclose(self) -> None:
        """Stop background verifications (their answers are lost, not cached)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# --- metrics ---------------------------------------------------------------------------------


class _StoreFigures(Collector):
    """Queue depth and pass figures read from the store at scrape time."""

    def __init__(self) -> None:
        self.summary: StatusSummary | None = None

    def collect(self) -> Iterable[Metric]:
        """Yield the figures of the last summary; nothing without a store."""
        summary = self.summary
        if summary is None:
            return
        queue = GaugeMetricFamily(
            "mailprobe_queue_depth", "Addresses waiting for verification.", labels=["connector"]
        )
        families = {
            "verified": "Addresses verified by the connector's passes.",
            "written": "Records or rows written back by the connector's passes.",
            "errors": "Failed passes and failed writes of the connector.",
        }
        counters = {
            name: CounterMetricFamily(f"mailprobe_connector_{name}", text, labels=["connector"])
            for name, text in families.items()
        }
        last = GaugeMetricFamily(
            "mailprobe_connector_last_pass_end_timestamp_seconds",
            "When the connector's last pass ended (Unix time), by its outcome.",
            labels=["connector", "outcome"],
        )
        for status in summary.connectors:
            queue.add_metric([status.connector], status.queued)
            for name, family in counters.items():
                family.add_metric([status.connector], getattr(status, name))
            if status.last_ended is not None and status.last_outcome is not None:
                last.add_metric(
                    [status.connector, str(status.last_outcome)], status.last_ended.timestamp()
                )
        stored = GaugeMetricFamily(
            "mailprobe_results_stored", "Results in the store, by status.", labels=["status"]
        )
        for name, count in summary.results_by_status.items():
            stored.add_metric([name], count)
        yield queue
        yield from counters.values()
        yield last
        yield stored


_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_VERIFY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class ApiMetrics:
    """The API's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.verifications = Counter(
            "mailprobe_verifications",
            "Verifications the engine finished for the API, by status and reason.",
            ["status", "reason"],
            registry=r,
        )
        self.smtp_checks = Counter(
            "mailprobe_smtp_checks",
            "Addresses that reached the SMTP step, by provider and outcome (the result's "
            "reason); addresses of one domain may share a session.",
            ["provider", "outcome"],
            registry=r,
        )
        self.verification_seconds = Histogram(
            "mailprobe_verification_seconds",
            "Time the engine took to verify one address.",
            buckets=_VERIFY_BUCKETS,
            registry=r,
        )
        self.answers = Counter(
            "mailprobe_api_answers",
            "Addresses answered, by source: verified, joined, cache, partial, syntax.",
            ["source"],
            registry=r,
        )
        self.requests = Counter(
            "mailprobe_api_requests", "HTTP requests, by route and status.", ["route", "code"],
            registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "mailprobe_api_request_seconds",
            "Time to answer an HTTP request, by route.",
            ["route"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "mailprobe_api_verifications_in_flight",
            "Addresses being looked up or verified now, background ones included.",
            registry=r,
        )
        self.store_figures = _StoreFigures()
        r.register(self.store_figures)

    def record(self, result: VerificationResult) -> None:
        """Count one finished verification."""
        self.verifications.labels(str(result.status), str(result.reason)).inc()
        smtp = result.checks.smtp
        if smtp is not None:
            self.smtp_checks.labels(smtp.smtp_provider or "unknown", str(result.reason)).inc()
        self.verification_seconds.observe(result.response_time_ms / 1000)

    def exposition(self) -> bytes:
        """Return the metrics in Prometheus' text format."""
        return generate_latest(self.registry)


class _Observe:
    """ASGI middleware: times and counts every request, and logs one line without secrets."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.request_seconds.labels(path).observe(seconds)
            level = logging.DEBUG if status < 400 else logging.INFO
            if status >= 500:
                level = logging.WARNING
            # The route, never the URL: query strings carry addresses.
            log.log(level, "%s %s %d %.1fms caller=%s", scope["method"], path, status,
                    seconds * 1000, scope.get("mailprobe.caller", "-"))  # fmt: skip


# --- endpoints -------------------------------------------------------------------------------


class _Endpoints:
    """The API's handlers; the YAML after `---` in a docstring is its OpenAPI operation."""

    def __init__(
        self,
        settings: AppSettings,
        *,
        verifications: Verifications,
        cache: ResultCache,
        metrics: ApiMetrics,
        store_configured: bool,
    ) -> None:
        self._api = settings.api
        self._store_configured = store_configured
        self._connectors = list(settings.connectors)
        self._verifications = verifications
        self._cache = cache
        self._metrics = metrics
        self._keys = KeyRing(settings.api.keys)
        self._limiter = RateLimiter(settings.api.rate_limit_per_minute)
        # Its own router: readiness probes must not fill the verifier's DNS cache.
        self._readiness_router = MailRouter(settings.engine)
        self._schemas = SchemaGenerator(_openapi_base())
        self._spec: dict[str, Any] | None = None

    def routes(self) -> list[Route]:
        """Return the routes, API first."""
        return [
            Route("/v1/verify", self.verify_get, methods=["GET"]),
            Route("/v1/verify", self.verify_post, methods=["POST"]),
            Route("/v1/verify/batch", self.verify_batch, methods=["POST"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"], include_in_schema=False),
            Route("/docs", self.docs, methods=["GET"], include_in_schema=False),
        ]

    # Who may ask --------------------------------------------------------------------------

    def _caller(self, request: Request) -> str:
        """Return who is asking (`key1`…, or the client address without keys); 401 otherwise."""
        if not self._keys.required:
            client = request.client.host if request.client else "unknown"
            caller = f"anonymous:{client}"
        else:
            found = self._keys.identify(presented_key(request))
            if found is None:
                raise RequestError(
                    401,
                    "unauthorized",
                    "a valid API key is required: send `Authorization: Bearer <key>` or "
                    "`X-API-Key: <key>`",
                    headers={"WWW-Authenticate": 'Bearer realm="mailprobe"'},
                )
            caller = found
        request.scope["mailprobe.caller"] = caller
        return caller

    def _admit(self, request: Request, cost: int) -> None:
        """Raise 401 for a missing or wrong key, 429 when the caller's rate is spent."""
        wait_s = self._limiter.take(self._caller(request), cost)
        if wait_s > 0:
            raise RequestError(
                429,
                "rate_limited",
                f"more than {self._api.rate_limit_per_minute} addresses a minute for this key; "
                "retry after the Retry-After seconds",
                headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
            )

    def _timeout_s(self, timeout_ms: int | None) -> float:
        return (timeout_ms if timeout_ms is not None else self._api.default_timeout_ms) / 1000

    # /v1 ------------------------------------------------------------------------------------

    async def verify_get(self, request: Request) -> Response:
        """Return the result for one address given in the query string.
        ---
        summary: Verify one address
        description: >-
          Answers from the cache when fresh (`cached: true`); otherwise verifies, waiting at
          most `timeout_ms` for the SMTP answer. Past the deadline the answer is
          `unknown/timeout` with what is known so far (`partial: true`) and the verification
          goes on, so the next call answers from the cache.
        security: [{bearer: []}, {apiKey: []}]
        parameters:
          - {$ref: '#/components/parameters/email'}
          - {$ref: '#/components/parameters/timeout_ms'}
        responses:
          '200': {$ref: '#/components/responses/Result'}
          '401': {$ref: '#/components/responses/Error'}
          '422': {$ref: '#/components/responses/Error'}
          '429': {$ref: '#/components/responses/RateLimited'}
        """
        self._admit(request, 1)
        body = query_request(request)
        return await self._one(body)

    async def verify_post(self, request: Request) -> Response:
        """Return the result for one address given in a JSON body.
        ---
        summary: Verify one address (JSON body)
        description: The same answer as `GET /v1/verify`.
        security: [{bearer: []}, {apiKey: []}]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: '#/components/schemas/VerifyRequest'}
        responses:
          '200': {$ref: '#/components/responses/Result'}
          '401': {$ref: '#/components/responses/Error'}
          '413': {$ref: '#/components/responses/Error'}
          '422': {$ref: '#/components/responses/Error'}
          '429': {$ref: '#/components/responses/RateLimited'}
        """
        self._admit(request, 1)
        body = validate(VerifyRequest, await read_json(request))
        return await self._one(body)

    async def _one(self, body: VerifyRequest) -> Response:
        timeout_s = self._timeout_s(body.timeout_ms)
        [answer] = await self._verifications.answer([body.email], timeout_s=timeout_s)
        return JSONResponse(answer.to_json())

    async def verify_batch(self, request: Request) -> Response:
        """Return a list of results, one per address, in input order.
        ---
        summary: Verify up to 100 addresses
        description: >-
          Addresses of one domain share SMTP sessions. One deadline (`timeout_ms`) covers the
          whole batch; addresses not answered by then come back as partial `unknown/timeout`.
          Each address counts against the rate limit.
        security: [{bearer: []}, {apiKey: []}]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: '#/components/schemas/BatchRequest'}
        responses:
          '200':
            description: One result per address, in input order.
            content:
              application/json:
                schema: {type: array, items: {$ref: '#/components/schemas/Result'}}
          '401': {$ref: '#/components/responses/Error'}
          '413': {$ref: '#/components/responses/Error'}
          '422': {$ref: '#/components/responses/Error'}
          '429': {$ref: '#/components/responses/RateLimited'}
        """
        self._caller(request)  # a stranger learns nothing, not even whether the body is valid
        body = validate(BatchRequest, await read_json(request))
        self._admit(request, len(body.emails))
        timeout_s = self._timeout_s(body.timeout_ms)
        answers = await self._verifications.answer(body.emails, timeout_s=timeout_s)
        return JSONResponse([answer.to_json() for answer in answers])

    # Operations -----------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        """Return ok while the process serves requests.
        ---
        summary: Liveness
        responses:
          '200': {description: 'The process answers: {"status": "ok"}.'}
        """
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Return ready when the resolver answers and the store (if any) can be written.
        ---
        summary: Readiness
        description: >-
          `resolver`: a lookup of a random name under `.invalid` gets an answer (NXDOMAIN
          counts: the resolver answered) within 2 s; SERVFAIL, REFUSED or silence does not.
          `store`: a write transaction can start within 2 s (absent without a store).
        responses:
          '200': {description: 'Ready: {"status": "ready", "checks": {...}}.'}
          '503': {description: 'Not ready; `checks` says which dependency failed and why.'}
        """
        resolver, store = await asyncio.gather(self._resolver_problem(), self._store_problem())
        checks = {"resolver": resolver or "ok"}
        if self._store_configured:
            checks["store"] = store or "ok"
        ready = resolver is None and store is None
        body = {"status": "ready" if ready else "not_ready", "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _resolver_problem(self) -> str | None:
        # A random name, so the answer comes from the resolver now, not from a cache; .invalid
        # never exists (RFC 6761), so NXDOMAIN is the expected answer.
        name = f"mailprobe-readyz-{secrets.token_hex(6)}.invalid"
        try:
            await asyncio.wait_for(self._readiness_router.route(name), READY_TIMEOUT_S)
        except (DnsError, TimeoutError) as exc:
            return f"the resolver does not answer: {exc or 'timed out'}"
        return None

    async def _store_problem(self) -> str | None:
        try:
            return await asyncio.wait_for(self._cache.problem(), READY_TIMEOUT_S)
        except TimeoutError:
            return f"no write transaction within {READY_TIMEOUT_S:g} s (locked?)"

    async def metrics(self, request: Request) -> Response:
        """Return the Prometheus metrics (a key is required when keys are configured).
        ---
        summary: Prometheus metrics
        security: [{bearer: []}, {apiKey: []}]
        responses:
          '200': {description: Prometheus text exposition format.}
          '401': {$ref: '#/components/responses/Error'}
        """
        self._caller(request)
        self._metrics.in_flight.set(self._verifications.in_flight)
        try:
            summary = await asyncio.wait_for(self._cache.summary(self._connectors), READY_TIMEOUT_S)
        except (StoreError, TimeoutError) as exc:
            log.warning("store figures left out of /metrics: %s", exc or "timed out")
            summary = None
        self._metrics.store_figures.summary = summary
        return Response(self._metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    def _openapi_spec(self, request: Request) -> dict[str, Any]:
        # Built once: parsing the docstrings' YAML takes tens of milliseconds.
        if self._spec is None:
            self._spec = self._schemas.get_schema(routes=request.app.routes)
        return self._spec

    async def openapi(self, request: Request) -> Response:
        """Return the OpenAPI 3.1 description of this API."""
        return JSONResponse(self._openapi_spec(request))

    async def docs(self, request: Request) -> Response:
        """Return the API reference as one self-contained HTML page (no external assets)."""
        return HTMLResponse(docs_page(self._openapi_spec(request)))


# --- OpenAPI and /docs -----------------------------------------------------------------------


def _openapi_base() -> dict[str, Any]:
    """Return the OpenAPI document without paths; schemas come from the types themselves."""
    ref = "#/components/schemas/{model}"
    result = TypeAdapter(VerificationResult).json_schema(ref_template=ref, mode="serialization")
    schemas: dict[str, Any] = result.pop("$defs")
    result["properties"]["cached"] = {
        "type": "boolean", "description": "Answered from the result cache."
    }  # fmt: skip
    result["properties"]["partial"] = {
        "type": "boolean",
        "description": "The deadline passed before the SMTP answer: unknown/timeout with what "
        "is known so far; the verification goes on in the background.",
    }
    result["required"] += ["cached", "partial"]
    schemas["Result"] = result
    for model in (VerifyRequest, BatchRequest):
        schema = model.model_json_schema(ref_template=ref)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["Error"] = {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "examples": ["invalid_request"]},
            "message": {"type": "string"},
            "problems": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
    }
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mailprobe",
            "version": "1",
            "description": "Real-time email address verification, without sending mail.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "parameters": {
                "email": {
                    "name": "email",
                    "in": "query",
                    "required": True,
                    "description": f"The address, at most {MAX_EMAIL_LENGTH} characters.",
                    "schema": {"type": "string", "maxLength": MAX_EMAIL_LENGTH},
                },
                "timeout_ms": {
                    "name": "timeout_ms",
                    "in": "query",
                    "required": False,
                    "description": "Longest wait for the SMTP answer, in milliseconds "
                    "(default api.default_timeout_ms).",
                    "schema": {
                        "type": "integer",
                        "minimum": MIN_TIMEOUT_MS,
                        "maximum": MAX_TIMEOUT_MS,
                    },
                },
            },  # fmt: skip
            "responses": {
                "Result": {
                    "description": "The result (design.md's JSON plus `cached` and `partial`).",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Result"}}
                    },
                },
                "Error": {
                    "description": "The request was refused; see `message`.",
                    "content": error,
                },
                "RateLimited": {
                    "description": "Too many addresses this minute for this key.",
                    "headers": {
                        "Retry-After": {
                            "description": "Seconds until a retry can succeed.",
                            "schema": {"type": "integer"},
                        }
                    },
                    "content": error,
                },
            },
        },
    }


def _ref_name(node: Any) -> str:
    if isinstance(node, dict) and "$ref" in node:
        return str(node["$ref"]).rsplit("/", 1)[-1]
    return ""


def _resolved(node: dict[str, Any], section: dict[str, Any]) -> dict[str, Any]:
    """Return the component a `$ref` node points to, or the node itself."""
    return section.get(_ref_name(node), node)


def _parameters_html(op: dict[str, Any], components: dict[str, Any]) -> str:
    e = html.escape
    params = [_resolved(p, components["parameters"]) for p in op.get("parameters", [])]
    if not params:
        return ""
    rows = "".join(
        f"<tr><td><code>{e(p['name'])}</code></td><td>{e(p['in'])}</td>"
        f"<td>{'yes' if p.get('required') else 'no'}</td><td>{e(p.get('description', ''))}</td>"
        "</tr>"
        for p in params
    )
    return f"<table><tr><th>parameter</th><th>in</th><th>required</th><th></th></tr>{rows}</table>"


def _operation_html(method: str, path: str, op: dict[str, Any], spec: dict[str, Any]) -> str:
    """Return one operation as an HTML section."""
    e = html.escape
    components = spec["components"]
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
    body_name = _ref_name(body.get("schema"))
    body_html = ""
    if body_name:
        fields = components["schemas"][body_name].get("properties", {})
        listed = ", ".join(f"<code>{e(name)}</code>" for name in fields)
        body_html = f"<p>JSON body <b>{e(body_name)}</b>: {listed}</p>"
    answers = "".join(
        f"<li><code>{e(code)}</code> "
        f"{e(_resolved(answer, components['responses']).get('description', ''))}</li>"
        for code, answer in op.get("responses", {}).items()
    )
    return (
        f"<section><h2><span class=m>{e(method.upper())}</span> <code>{e(path)}</code></h2>"
        f"<p><b>{e(op.get('summary', ''))}</b></p><p>{e(op.get('description', ''))}</p>"
        f"{_parameters_html(op, components)}{body_html}<ul>{answers}</ul></section>"
    )


def docs_page(spec: dict[str, Any]) -> str:
    """Return the API reference as HTML rendered here: a closed network cannot load a CDN."""
    sections = "".join(
        _operation_html(method, path, op, spec)
        for path, operations in spec["paths"].items()
        for method, op in operations.items()
    )
    result = spec["components"]["schemas"]["Result"]["properties"]
    result_fields = ", ".join(f"<code>{html.escape(name)}</code>" for name in result)
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>mailprobe API</title><style>"
        "body{font:15px/1.5 system-ui,sans-serif;max-width:56em;margin:2em auto;padding:0 1em}"
        "section{border-top:1px solid #ccc;padding:.5em 0}.m{background:#246;color:#fff;"
        "padding:0 .4em;border-radius:3px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}</style></head><body>"
        f"<h1>mailprobe API</h1><p>{html.escape(spec['info']['description'])} Authenticate "
        "with <code>Authorization: Bearer &lt;key&gt;</code> or <code>X-API-Key</code> when "
        'keys are configured. Errors are JSON: <code>{"error", "message"}</code>. '
        'The machine-readable description is at <a href="openapi.json">/openapi.json</a>.</p>'
        f"<p>A result carries: {result_fields}.</p>{sections}</body></html>"
    )


# --- the app ---------------------------------------------------------------------------------


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        {"error": code, "message": str(exc.detail)},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Only our bugs land here (uvicorn logs the traceback); the caller learns nothing of it.
    return JSONResponse(
        {"error": "internal_error", "message": "an internal error occurred; it has been logged"},
        status_code=500,
    )


def create_app(
    settings: AppSettings, *, verifier: Verifier | None = None, store: Store | None = None
) -> Starlette:
    """Return the API app; it uses `verifier` and `store` when given (the daemon shares its own).

    With a store, answers are shared with the daemon's passes through the store's result cache
    (the API opens its own connections to the same file); without one, they live in memory.
    """
    own_verifier = verifier is None
    engine = verifier or Verifier(settings.engine, role_is_risky=settings.policy.role_is_risky)
    cache: ResultCache = (
        StoreCache(store) if store is not None else MemoryCache(freshness_for(settings))
    )
    metrics = ApiMetrics()
    verifications = Verifications(engine, cache, metrics=metrics)
    endpoints = _Endpoints(
        settings,
        verifications=verifications,
        cache=cache,
        metrics=metrics,
        store_configured=store is not None,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await verifications.aclose()
            await cache.aclose()
            if own_verifier:
                await engine.aclose()

    app = Starlette(
        routes=endpoints.routes(),
        middleware=[Middleware(_Observe, metrics=metrics)],
        exception_handlers={
            RequestError: _request_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
    app.state.verifications = verifications
    app.state.metrics = metrics
    return app


# --- serving ---------------------------------------------------------------------------------


def listen_address(api: ApiSettings) -> tuple[str, int]:
    """Return (host, port) from api.listen; ConfigError for a bad one, or a non-loopback host
    without api.keys (an open verifier on a network is an abuse magnet)."""
    text = api.listen.strip()
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError("api.listen", f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    if not api.keys and not _is_loopback(host):
        raise ConfigError(
            "api.keys",
            f"refusing to listen on {host} without API keys; set MAILPROBE_API__KEYS='[\"…\"]' "
            "or listen on 127.0.0.1",
        )
    return host, int(port_text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:  # a host name: every address it stands for must be loopback
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def bind(host: str, port: int) -> socket.socket:
    """Return a listening socket on host:port; ConfigError when it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError("api.listen", f"cannot listen on {host}:{port} ({exc})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            "api.listen", f"cannot listen on {host}:{port} ({exc.strerror or exc})"
        ) from None
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: serve_app() decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install nothing; serve_app() owns SIGTERM and SIGINT, or its caller does."""
        yield


def _watch_signals(stop: asyncio.Event, server: _Server) -> Callable[[], None]:
    """Make SIGTERM/SIGINT stop the server gracefully (twice: at once); return the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            server.force_exit = True
        stop.set()

    handled = (signal.SIGTERM, signal.SIGINT)
    for sig in handled:
        loop.add_signal_handler(sig, on_signal)

    def undo() -> None:
        for sig in handled:
            loop.remove_signal_handler(sig)

    return undo


async def serve_app(
    app: ASGIApp, sock: socket.socket, *, shutdown: asyncio.Event | None = None
) -> None:
    """Serve `app` on a listening socket until `shutdown` is set, or SIGTERM/SIGINT without one.

    Stopping is graceful: no new connections, requests in flight finish (within the longest
    timeout_ms), then the app's background verifications are cancelled.
    """
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,  # the application configures logging
        access_log=False,  # it would log query strings, which hold addresses; _Observe logs
        server_header=False,
        timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S),
    )
    server = _Server(config)
    stop = shutdown or asyncio.Event()
    undo = _watch_signals(stop, server) if shutdown is None else (lambda: None)

    async def stop_when_asked() -> None:
        await stop.wait()
        server.should_exit = True

    stopper = asyncio.get_running_loop().create_task(stop_when_asked())
    try:
        await server.serve(sockets=[sock])
    finally:
        stopper.cancel()
        undo()


def _listening(settings: AppSettings) -> socket.socket:
    """Return the socket on api.listen, checked and bound; log where the API is."""
    host, port = listen_address(settings.api)
    sock = bind(host, port)
    bound = sock.getsockname()
    url = f"http://{f'[{bound[0]}]' if ':' in bound[0] else bound[0]}:{bound[1]}"
    log.info("API listening on %s (reference at %s/docs)", url, url)
    return sock


async def serve(
    settings: AppSettings,
    *,
    verifier: Verifier | None = None,
    store: Store | None = None,
    shutdown: asyncio.Event | None = None,
) -> None:
    """Serve the API on api.listen until SIGTERM/SIGINT, or until `shutdown` is set.

    ConfigError before anything listens when api.listen is bad or taken, or not loopback while
    no api.keys are set.
    """
    sock = _listening(settings)
    try:
        app = create_app(settings, verifier=verifier, store=store)
        await serve_app(app, sock, shutdown=shutdown)
    finally:
        sock.close()


async def start_api(
    settings: AppSettings, store: Store | None = None, *, verifier: Verifier | None = None
) -> Callable[[], Awaitable[None]]:
    """Start the API as a task on this loop (the daemon's hook); return what stops it gracefully.

    ConfigError at once, as serve() raises it; the caller owns the signals.
    """
    sock = _listening(settings)
    shutdown = asyncio.Event()
    app = create_app(settings, verifier=verifier, store=store)
    task = asyncio.get_running_loop().create_task(serve_app(app, sock, shutdown=shutdown))

    async def stop() -> None:
        shutdown.set()
        try:
            await task
        finally:
            sock.close()

    return stop


__all__ = [
    "Answer",
    "ApiMetrics",
    "BatchRequest",
    "KeyRing",
    "MemoryCache",
    "RateLimiter",
    "RequestError",
    "ResultCache",
    "Source",
    "StoreCache",
    "Verifications",
    "VerifyRequest",
    "bind",
    "create_app",
    "docs_page",
    "listen_address",
    "partial_result",
    "serve",
    "serve_app",
    "start_api",
]
