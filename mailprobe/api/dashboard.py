"""The operator's dashboard at `/`: who may see it, and the page from the store's figures.

Owns the route and its 401. A browser cannot add an `Authorization: Bearer` header by itself,
so the 401 asks for HTTP Basic, which keys.py reads as the key in the password (any user name):
the browser asks once and resends it, on the page's minute refresh and on /metrics too.
Scripts send the key as to the API. No cookie, so nothing to steal or forge across sites;
over a network, put TLS in front, as for the API itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ..errors import StoreError
from .cache import ResultCache
from .errors import RequestError
from .figures import Figures, gather
from .keys import KeyRing, presented_key
from .panels import page

log = logging.getLogger(__package__)  # "mailprobe.api", the one logger of the whole API

#: How long one read of the store's figures serves every dashboard request.
FIGURES_TTL_S = 10.0

#: No script, no outside resource, no framing: the page is HTML, inline styles and SVG.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Dashboard:
    """The `/` page: list health, passes, queue, deferring domains and the last pre-flight."""

    def __init__(self, keys: KeyRing, cache: ResultCache, *, connectors: Iterable[str]) -> None:
        self._keys = keys
        self._cache = cache
        self._connectors = list(connectors)
        self._reading = asyncio.Lock()
        self._last: tuple[float, Figures | None] | None = None

    def routes(self) -> list[Route]:
        """Return the dashboard's route, left out of the API's description."""
        return [Route("/", self.page, methods=["GET"], include_in_schema=False)]

    async def page(self, request: Request) -> Response:
        """Return the dashboard; 401 asking for HTTP Basic when keys are set and none matches."""
        self._admit(request)
        try:
            html = page(await self._figures())
        except StoreError as exc:
            log.warning("dashboard figures unavailable: %s", exc)
            html = page(None, problem=str(exc))
        return HTMLResponse(html, headers=_HEADERS)

    async def _figures(self) -> Figures | None:
        """Return the figures, read again when the last read is older than FIGURES_TTL_S:
        many open dashboards, each refreshing every minute, then cost one read between them."""
        async with self._reading:
            if self._last is not None and time.monotonic() - self._last[0] < FIGURES_TTL_S:
                return self._last[1]
            read = functools.partial(gather, connectors=self._connectors, now=datetime.now(UTC))
            figures = await self._cache.figures(read)
            self._last = (time.monotonic(), figures)
            return figures

    def _admit(self, request: Request) -> None:
        if not self._keys.required:
            client = request.client.host if request.client else "unknown"
            request.scope["mailprobe.caller"] = f"anonymous:{client}"
            return
        found = self._keys.identify(presented_key(request))
        if found is None:
            raise RequestError(
                401,
                "unauthorized",
                "the dashboard needs an API key: give it as the password when the browser "
                "asks (any user name), or send `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": 'Basic realm="mailprobe", charset="UTF-8"'},
            )
        request.scope["mailprobe.caller"] = found
