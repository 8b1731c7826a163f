"""Serving the app under uvicorn: standalone (`mailprobe serve`) or inside the daemon's loop.

Owns the uvicorn configuration, SIGTERM/SIGINT when serving alone, and the graceful stop:
no new connections, requests in flight finish, then background verifications are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from mailprobe.engine import Verifier

from ..settings import AppSettings
from ..store import Store
from ..store_async import AsyncStore
from .app import create_app
from .listen import bind, listen_address
from .requests import MAX_TIMEOUT_MS

log = logging.getLogger(__package__)  # "mailprobe.api", the one logger of the whole API

#: uvicorn's wait for requests in flight at shutdown: the longest timeout_ms, and a margin.
GRACEFUL_SHUTDOWN_S = MAX_TIMEOUT_MS / 1000 + 5


#: Longest wait for a request's headers, from the connection (or the first byte after a
#: response) on: a client that drips them (slowloris) or says nothing is hung up on.
HEADER_TIMEOUT_S = 10.0


class _HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers.

    uvicorn (0.3x) times out only idle keep-alive connections: one that sends half a request
    line, or nothing at all, holds its socket forever, so a few thousand of them exhaust our
    file descriptors. The deadline is armed when the connection is idle and not re-armed by
    the bytes that trickle in, so dripping headers does not extend it.
    """

    _deadline: asyncio.TimerHandle | None = None
    _idle_cycle: object = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._idle_cycle = self.cycle
        self._deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        if self.cycle is self._idle_cycle:  # no request began since the deadline was armed
            self.transport.close()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: serve_app() decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install nothing; serve_app() owns SIGTERM and SIGINT, or its caller does."""
        yield


async def serve_app(
    app: ASGIApp,
    sock: socket.socket,
    *,
    shutdown: asyncio.Event | None = None,
    hurry: asyncio.Event | None = None,
) -> None:
    """Serve `app` on a listening socket until `shutdown` is set (wiring.py sets it on SIGTERM
    or SIGINT; `hurry` on a second one: stop at once); without one, until the process ends.

    Stopping is graceful: no new connections, requests in flight finish (within the longest
    timeout_ms), then the app's background verifications are cancelled.
    """
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,  # the application configures logging
        access_log=False,  # it would log query strings, which hold addresses; _Observe logs
        server_header=False,
        http=_HeaderDeadline,
        timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S),
    )
    server = _Server(config)

    stop = shutdown or asyncio.Event()

    async def stop_when_asked() -> None:
        await stop.wait()
        server.should_exit = True
        if hurry is not None:
            await hurry.wait()
            server.force_exit = True

    stopper = asyncio.get_running_loop().create_task(stop_when_asked())
    try:
        await server.serve(sockets=[sock])
    finally:
        stopper.cancel()


def _listening(settings: AppSettings) -> socket.socket:
    """Return the socket on api.listen, checked and bound; log where the API is."""
    host, port = listen_address(settings.api)
    sock = bind(host, port)
    bound = sock.getsockname()
    url = f"http://{f'[{bound[0]}]' if ':' in bound[0] else bound[0]}:{bound[1]}"
    log.info("API listening on %s (dashboard at %s/, reference at %s/docs)", url, url, url)
    return sock


async def serve(
    settings: AppSettings,
    *,
    verifier: Verifier | None = None,
    store: AsyncStore | Store | None = None,
    shutdown: asyncio.Event | None = None,
    hurry: asyncio.Event | None = None,
) -> None:
    """Serve the API on api.listen until `shutdown` is set (`mailprobe api`: on SIGTERM/SIGINT).

    ConfigError before anything listens when api.listen is bad or taken, or not loopback while
    no api.keys are set.
    """
    sock = _listening(settings)
    try:
        app = create_app(settings, verifier=verifier, store=store)
        await serve_app(app, sock, shutdown=shutdown, hurry=hurry)
    finally:
        sock.close()


async def start_api(
    settings: AppSettings,
    store: AsyncStore | Store | None = None,
    *,
    verifier: Verifier | None = None,
) -> Callable[[], Awaitable[None]]:
    """Start the API as a task on this loop (the daemon's hook); return what stops it gracefully.

    ConfigError at once, as serve() raises it; the caller owns the signals.
    """
    sock = _listening(settings)
    return serve_in_background(create_app(settings, verifier=verifier, store=store), sock)


def serve_in_background(app: ASGIApp, sock: socket.socket) -> Callable[[], Awaitable[None]]:
    """Serve `app` on `sock` as a task of the running loop; return what stops it gracefully."""
    shutdown = asyncio.Event()
    task = asyncio.get_running_loop().create_task(serve_app(app, sock, shutdown=shutdown))

    async def stop() -> None:
        shutdown.set()
        try:
            await task
        finally:
            sock.close()

    return stop
