"""The API as one Starlette app: its parts wired together, and their shutdown in order.

Owns create_app() only; serving it on a socket is server.py's job.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware

from mailprobe.engine import EngineSettings, Verifier

from ..freshness import freshness_for
from ..settings import AppSettings
from ..store import Store
from ..store_async import AsyncStore
from .cache import MemoryCache, ResultCache, store_cache
from .dashboard import Dashboard
from .endpoints import Endpoints
from .errors import EXCEPTION_HANDLERS
from .hosts import LoopbackHostOnly
from .keys import KeyRing
from .metrics import ApiMetrics, Observe
from .verifications import Verifications


def _for_api_callers(settings: AppSettings) -> EngineSettings:
    """Return the engine settings for API callers' addresses: without the allowed private
    networks unless api.allow_private_networks, since a caller chooses the domain and so where
    its MX points (an intranet host, through the operator's allowance for the CRM's domains).

    A separate verifier then serves the API inside `mailprobe run`; hosts it shares with the
    passes see up to twice the per-host session limit.
    """
    engine = settings.engine
    if settings.api.allow_private_networks or not engine.smtp.allowed_private_networks:
        return engine
    smtp = engine.smtp.model_copy(update={"allowed_private_networks": []})
    return engine.model_copy(update={"smtp": smtp})


def create_app(
    settings: AppSettings,
    *,
    verifier: Verifier | None = None,
    store: AsyncStore | Store | None = None,
) -> Starlette:
    """Return the API app; it uses `verifier` and `store` when given (the daemon shares its own).

    With a store, answers are shared with the daemon's passes through the store's result cache
    (the API opens its own connections to the same file); without one, they live in memory.
    """
    engine_settings = _for_api_callers(settings)
    if engine_settings is not settings.engine:
        verifier = None  # the shared verifier may reach private networks; callers may not
    own_verifier = verifier is None
    engine = verifier or Verifier(engine_settings, role_is_risky=settings.policy.role_is_risky)
    cache: ResultCache = (
        store_cache(store) if store is not None else MemoryCache(freshness_for(settings))
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

    dashboard = Dashboard(KeyRing(settings.api.keys), cache, connectors=settings.connectors)
    middleware = [Middleware(Observe, metrics=metrics)]
    if not settings.api.keys:
        # Keyless means loopback only; the Host check keeps browsers' rebinding pages out too.
        middleware.insert(0, Middleware(LoopbackHostOnly))
    app = Starlette(
        routes=[*endpoints.routes(), *dashboard.routes()],
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.verifications = verifications
    app.state.metrics = metrics
    return app
