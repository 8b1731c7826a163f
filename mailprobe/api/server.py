"""Serving the app under uvicorn: standalone (`mailprobe serve`) or inside the daemon's loop.

Owns the uvicorn configuration, SIGTERM/SIGINT when serving alone, and the graceful stop:
no new connections, requests in flight finish, then background verifications are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from starlette.types import ASGIApp

from engine.verifier import Verifier

from ..settings import AppSettings
from ..store import Store
from .app import create_app
from .listen import bind, listen_address
from .requests import MAX_TIMEOUT_MS

log = logging.getLogger(__package__)  # "mailprobe.api", the one logger of the whole API

#: uvicorn's wait for requests in flight at shutdown: the longest timeout_ms, and a margin.
GRACEFUL_SHUTDOWN_S = MAX_TIMEOUT_MS / 1000 + 5


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
    log.info("API listening on %s (dashboard at %s/, reference at %s/docs)", url, url, url)
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
