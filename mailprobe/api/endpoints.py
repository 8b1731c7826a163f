"""The API's handlers: who may ask, /v1/verify, /v1/verify/batch, health, readiness, metrics.

Owns the routes, the 401 and 429 answers, and the readiness checks. Answers come from
Verifications; /openapi.json and /docs from docs.py. The YAML after `---` in a handler's
docstring is its OpenAPI operation, so each handler documents itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mailprobe.engine import DnsError, MailRouter, ResolverHealth, ResolverSanity

from ..errors import StoreError
from ..settings import AppSettings
from .cache import ResultCache
from .docs import Reference
from .errors import RequestError
from .keys import KeyRing, presented_key
from .limits import RateLimiter
from .metrics import ApiMetrics
from .requests import BatchRequest, VerifyRequest, query_request, read_json, validate
from .verifications import Verifications

log = logging.getLogger(__package__)  # "mailprobe.api", the one logger of the whole API

#: How long /readyz waits for each dependency before calling it not ready.
READY_TIMEOUT_S = 2.0
#: Wrong keys a client address may present a minute before it is answered 429: guessing keys
#: gets slow, while a caller who mistyped one still sees its 401 at once.
BAD_KEYS_PER_MINUTE = 10


class Endpoints:
    """The API's handlers; the YAML after `---` in a docstring is its OpenAPI operation."""

    def __init__(
        self,
        settings: AppSettings,
        *,
        verifications: Verifications,
        cache: ResultCache,
        metrics: ApiMetrics,
        store_configured: bool,
        resolver_health: Callable[[], Awaitable[ResolverHealth]] | None = None,
    ) -> None:
        self._api = settings.api
        self._store_configured = store_configured
        self._connectors = list(settings.connectors)
        self._verifications = verifications
        self._cache = cache
        self._metrics = metrics
        self._keys = KeyRing(settings.api.keys)
        self._limiter = RateLimiter(settings.api.rate_limit_per_minute)
        self._bad_keys = RateLimiter(BAD_KEYS_PER_MINUTE)
        # Its own router: readiness probes must not fill the verifier's DNS cache.
        self._readiness_router = MailRouter(settings.engine)
        # The verifier's own check when given: /readyz then fails exactly while verdicts wait.
        self._resolver_health = resolver_health or ResolverSanity(settings.engine.dns).health
        self._reference = Reference()

    def routes(self) -> list[BaseRoute]:
        """Return the routes, API first."""
        return [
            Route("/v1/verify", self.verify_get, methods=["GET"]),
            Route("/v1/verify", self.verify_post, methods=["POST"]),
            Route("/v1/verify/batch", self.verify_batch, methods=["POST"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            *self._reference.routes(),
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
                self._slow_down_guessing(request)
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

    def _slow_down_guessing(self, request: Request) -> None:
        """Raise 429 once a client address has presented too many wrong or missing keys."""
        client = request.client.host if request.client else "unknown"
        wait_s = self._bad_keys.take(client)
        if wait_s > 0:
            raise RequestError(
                429,
                "rate_limited",
                "too many requests without a valid API key; retry after the Retry-After seconds",
                headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
            )

    def _trusted(self, request: Request) -> bool:
        """Return True when the caller may see details: keyless (loopback) or a valid key."""
        return not self._keys.required or self._keys.identify(presented_key(request)) is not None

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
        """Return ready when the resolver answers and the store (if any) can be used.
        ---
        summary: Readiness
        description: >-
          No key needed, so orchestrators can probe it. `resolver`: a lookup of a random name
          under `.invalid` gets an answer (NXDOMAIN counts: the resolver answered) within 2 s;
          SERVFAIL, REFUSED or silence does not;
          and the resolver is trusted: it finds the canary names (`engine.dns.canaries`) and
          denies a made-up name. `store`: the store file is readable and
          writable within 2 s, checked without taking its write lock (absent without a
          store). Why a check failed is shown only to callers with a valid key (or to a keyless
          API on loopback); others see `failed`, and the reason is logged.
        responses:
          '200': {description: 'Ready: {"status": "ready", "checks": {...}}.'}
          '503': {description: 'Not ready; `checks` says which dependency failed.'}
        """
        resolver, store = await asyncio.gather(self._resolver_problem(), self._store_problem())
        trusted = self._trusted(request)
        checks = {"resolver": _shown(resolver, trusted=trusted)}
        if self._store_configured:
            checks["store"] = _shown(store, trusted=trusted)
        ready = resolver is None and store is None
        if not ready:
            log.warning("not ready: resolver %s, store %s", resolver or "ok", store or "ok")
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
        health = await self._resolver_health()
        if not health.trusted:
            return f"the resolver is not trusted: {health.problem}; to fix: {health.advice}"
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


def _shown(problem: str | None, *, trusted: bool) -> str:
    """Return a readiness check's value: ok, or why it failed (to a trusted caller only)."""
    if problem is None:
        return "ok"
    return problem if trusted else "failed"
