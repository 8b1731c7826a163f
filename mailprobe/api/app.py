"""The API as one Starlette app: its parts wired together, and their shutdown in order.

Owns create_app() only; serving it on a socket is server.py's job.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware

from engine.verifier import Verifier

from ..daemon import freshness_for
from ..settings import AppSettings
from ..store import Store
from .cache import MemoryCache, ResultCache, StoreCache
from .endpoints import Endpoints
from .errors import EXCEPTION_HANDLERS
from .metrics import ApiMetrics, Observe
from .verifications import Verifications


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
    endpoints = Endpoints(
        settings,
        verifications=verifications,
        cache=cache,
        metrics=metrics,
        store_configured=store is not None,
        resolver_health=getattr(engine, "resolver_health", None),
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
        middleware=[Middleware(Observe, metrics=metrics)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.verifications = verifications
    app.state.metrics = metrics
    return app
