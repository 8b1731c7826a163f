"""The operations listener: /metrics and /healthz alone, on metrics.listen, for the daemon.

Prometheus can scrape a daemon whose verification API is off, and a container's HEALTHCHECK
can ask it whether the process answers. It serves the store's figures (queue depth, per-
connector passes, results by status, read at scrape time through the API's store cache) and
the process's own (CPU, memory, open files); nothing else, no verification, no keys. Meant for
loopback: a wider address (a container's) is logged, since anyone who reaches it reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import StoreError
from ..settings import AppSettings
from ..store import Store
from ..store_async import AsyncStore
from .cache import store_cache
from .endpoints import READY_TIMEOUT_S
from .listen import bind, host_port, is_loopback
from .metrics import _StoreFigures
from .server import serve_in_background

log = logging.getLogger(__package__)


def create_ops_app(store: AsyncStore | Store, connectors: Sequence[str]) -> Starlette:
    """Return the app serving /metrics (the store's and the process's figures) and /healthz."""
    registry = CollectorRegistry()
    figures = _StoreFigures()
    registry.register(figures)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    cache = store_cache(store)

    async def metrics(request: Request) -> Response:
        try:
            figures.summary = await asyncio.wait_for(cache.summary(connectors), READY_TIMEOUT_S)
        except (StoreError, TimeoutError) as exc:
            log.warning("store figures left out of /metrics: %s", exc or "timed out")
            figures.summary = None
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await cache.aclose()

    routes = [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


async def start_ops(
    settings: AppSettings, store: AsyncStore | Store
) -> Callable[[], Awaitable[None]] | None:
    """Start the listener on metrics.listen (None when unset); return what stops it."""
    if settings.metrics.listen is None:
        return None
    host, port = host_port(settings.metrics.listen, setting="metrics.listen")
    sock = bind(host, port, setting="metrics.listen")
    bound = sock.getsockname()
    shown = f"{f'[{bound[0]}]' if ':' in bound[0] else bound[0]}:{bound[1]}"
    if not is_loopback(host):
        log.warning("metrics listener on %s is not loopback: anyone who reaches it reads it", shown)
    log.info("metrics on http://%s/metrics, liveness on /healthz", shown)
    return serve_in_background(create_ops_app(store, list(settings.connectors)), sock)
