"""The real-time verification HTTP API (`mailprobe serve`, or inside `mailprobe run`).

This module is the public surface: it re-exports what the CLI, the daemon, tests and benches
use. The API owns the HTTP edge; it decides nothing about addresses (the engine does;
freshness.py says how long an answer is reused), holds no SQL (the store's verbs only), and
never logs API keys, Authorization headers, query strings or addresses.

    GET  /v1/verify?email=…&timeout_ms=…   one result: the result JSON plus `cached`, `partial`
    POST /v1/verify         {"email": …, "timeout_ms": …}
    POST /v1/verify/batch   {"emails": [… at most 100], "timeout_ms": …}   a list, input order
    GET  /healthz  /readyz  /metrics  /openapi.json  /docs
    GET  /                  the operator's dashboard (HTML)

A caller's deadline bounds its wait, never the verification: when it passes before the SMTP
answer, the answer is `unknown/timeout` with what is known so far (`"partial": true`) and the
verification goes on in the background, so the next call answers from the cache.

    app.py            create_app(): the parts wired into one Starlette app
    endpoints.py      the handlers, 401/429, readiness
    requests.py       request models, limits, body and query readers, 413/422
    errors.py         RequestError and the JSON error answers
    keys.py           API keys: presented, matched in constant time
    limits.py         per-caller token buckets
    verifications.py  one verification per address, deadlines, background completion
    partial.py        partial answers, and the one reach into the engine's mail router
    cache.py          the result cache: the store's, or in memory
    metrics.py        Prometheus metrics and the per-request log line
    docs.py           /openapi.json and the /docs page (Swagger UI, served from here)
    dashboard.py      the operator's dashboard at /, and how a browser presents a key
    figures.py        what the dashboard shows, read from the store
    panels.py         the dashboard page as HTML
    charts.py         inline SVG charts
    listen.py         api.listen checked and bound
    server.py         uvicorn, serve() and start_api() (wiring.py starts it beside the daemon)
"""

from .app import create_app
from .cache import MemoryCache, ResultCache, StoreCache
from .docs import swagger_ui_assets
from .endpoints import READY_TIMEOUT_S
from .errors import Problem, RequestError
from .keys import KeyRing, presented_key
from .limits import RateLimiter
from .listen import bind, listen_address
from .metrics import ApiMetrics
from .partial import partial_result
from .requests import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    MAX_EMAIL_LENGTH,
    MAX_TIMEOUT_MS,
    MIN_TIMEOUT_MS,
    BatchRequest,
    EmailText,
    TimeoutMs,
    VerifyRequest,
    problems_of,
    query_request,
    read_json,
    validate,
)
from .server import GRACEFUL_SHUTDOWN_S, serve, serve_app, start_api
from .verifications import CallerAnswer, Source, Verifications

__all__ = [
    "GRACEFUL_SHUTDOWN_S",
    "MAX_BATCH",
    "MAX_BODY_BYTES",
    "MAX_EMAIL_LENGTH",
    "MAX_TIMEOUT_MS",
    "MIN_TIMEOUT_MS",
    "READY_TIMEOUT_S",
    "ApiMetrics",
    "BatchRequest",
    "CallerAnswer",
    "EmailText",
    "KeyRing",
    "MemoryCache",
    "Problem",
    "RateLimiter",
    "RequestError",
    "ResultCache",
    "Source",
    "StoreCache",
    "TimeoutMs",
    "Verifications",
    "VerifyRequest",
    "bind",
    "create_app",
    "listen_address",
    "partial_result",
    "presented_key",
    "problems_of",
    "query_request",
    "read_json",
    "serve",
    "serve_app",
    "start_api",
    "swagger_ui_assets",
    "validate",
]
