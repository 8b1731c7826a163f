"""The one place that wires the application: settings in, running parts out.

It builds the store (sync for the one-shot commands, async for everything on the event loop),
the verifier, the freshness rules, the connectors, the notifier, the HTTP API and the /metrics
listener, and installs the one SIGTERM/SIGINT handler. The daemon, the pipeline and the API
receive what they use; none of them builds another.

Connectors take plain keyword arguments and never import `mailprobe`; this module reads the
settings, unwraps secrets, and reports a missing one as a ConfigError naming the environment
variable to set. No I/O happens while building connectors: they connect on their first call.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from pydantic import SecretStr

from mailprobe.connectors.csvcolumns import Columns
from mailprobe.connectors.csvdrop import DropFolder
from mailprobe.engine import Verifier

from .crm_pass import CrmConnector
from .drop_pass import CsvDrop
from .errors import ConfigError
from .freshness import freshness_for
from .notify import Notifier, install
from .pipeline import Connector
from .settings import (
    AppSettings,
    ConnectorSettings,
    CsvConnectorSettings,
    HubSpotConnectorSettings,
    SendGridConnectorSettings,
)
from .store import Store
from .store_async import AsyncStore, SQLiteAsyncStore

log = logging.getLogger(__name__)

Stop = Callable[[], Awaitable[None]]


def _secret(value: SecretStr | None, name: str, key: str, what: str) -> str:
    """Return a connector's secret, or raise ConfigError naming the variable that sets it."""
    if value is None:
        variable = f"MAILPROBE_CONNECTORS__{name.upper()}__{key.upper()}"
        raise ConfigError(f"connectors.{name}.{key}", f"missing; set {variable} to {what}")
    return value.get_secret_value()


def backfill_since(backfill: bool | date, *, now: datetime) -> datetime | None:
    """Return where a first HubSpot pass starts: None = every contact, else that moment."""
    if backfill is True:
        return None
    if backfill is False:
        return now
    return datetime.combine(backfill, time.min, UTC)


def build_connector(name: str, settings: ConnectorSettings, *, now: datetime) -> Connector:
    """Return the connector one settings entry describes."""
    if isinstance(settings, CsvConnectorSettings):
        folder = DropFolder(
            settings.folder,
            settle_s=settings.settle_s,
            email_column=settings.email_column,
            columns=Columns(settings.columns),
        )
        return CsvDrop(name, folder)
    if isinstance(settings, HubSpotConnectorSettings):
        token = _secret(settings.access_token, name, "access_token", "a private app token")
        from mailprobe.connectors.hubspot import HubSpotConnector

        client = HubSpotConnector(
            name,
            access_token=token,
            base_url=settings.base_url,
            backfill_since=backfill_since(settings.backfill, now=now),
            requests_per_10s=settings.requests_per_10s,
        )
        return CrmConnector(name, client)
    if isinstance(settings, SendGridConnectorSettings):
        key = _secret(settings.api_key, name, "api_key", "a SendGrid API key")
        from mailprobe.connectors.sendgrid import SendGridConnector

        client = SendGridConnector(
            name,
            api_key=key,
            base_url=settings.base_url,
            lists=list(settings.lists),
            invalid_list=settings.invalid_list,
        )
        return CrmConnector(name, client)
    raise ConfigError(f"connectors.{name}.type", "unknown connector type")  # pragma: no cover


def build_connectors(
    settings: AppSettings, *, only: str | None = None, now: datetime | None = None
) -> dict[str, Connector]:
    """Return the enabled connectors by name, or just `only` (even when disabled)."""
    now = now or datetime.now(UTC)
    chosen: Mapping[str, ConnectorSettings]
    if only is not None:
        if only not in settings.connectors:
            known = ", ".join(sorted(settings.connectors)) or "none"
            raise ConfigError("--connector", f"no connector named {only!r} (configured: {known})")
        chosen = {only: settings.connectors[only]}
    else:
        chosen = {name: c for name, c in settings.connectors.items() if c.enabled}
    return {name: build_connector(name, c, now=now) for name, c in chosen.items()}


async def close_connectors(connectors: Mapping[str, Connector]) -> None:
    """Close every CRM connector's HTTP clients (drop folders hold nothing open)."""
    for connector in connectors.values():
        if isinstance(connector, CrmConnector):
            await connector.client.aclose()


# -- the store, the verifier, the notifier -----------------------------------------------------


def open_store(settings: AppSettings) -> Store:
    """Open (creating or migrating) the store the settings name, for one-shot commands."""
    return Store(settings.store.path, freshness=freshness_for(settings))


async def open_async_store(settings: AppSettings) -> SQLiteAsyncStore:
    """Open the store the settings name for event-loop callers (created or migrated first)."""
    return await SQLiteAsyncStore.open(settings.store.path, freshness=freshness_for(settings))


def build_verifier(settings: AppSettings) -> Verifier:
    """Return the verification engine the settings describe."""
    return Verifier(settings.engine, role_is_risky=settings.policy.role_is_risky)


def build_notifier(settings: AppSettings, store: AsyncStore | None) -> Notifier:
    """Return the process's notifier (installed for notify() callers), warning when unsigned."""
    from .logs import secret_values

    notifier = Notifier(settings.notify, store=store, secrets=secret_values(settings))
    install(notifier)
    if notifier.enabled and settings.notify.secret is None:
        logging.getLogger("mailprobe.notify").warning(
            "notify.secret is not set: webhook deliveries are not signed "
            "(set MAILPROBE_NOTIFY__SECRET)"
        )
    return notifier


@dataclass(frozen=True, slots=True)
class Service:
    """What `run` and `sync` work with, opened together and closed together."""

    settings: AppSettings
    store: AsyncStore
    connectors: Mapping[str, Connector]
    verifier: Verifier


@asynccontextmanager
async def service(settings: AppSettings, *, only: str | None = None) -> AsyncIterator[Service]:
    """Open the store, connectors and verifier (`only`: just that connector); close them after."""
    connectors = build_connectors(settings, only=only)
    try:
        store = await open_async_store(settings)
        try:
            async with build_verifier(settings) as verifier:
                yield Service(settings, store, connectors, verifier)
        finally:
            await store.aclose()
    finally:
        await close_connectors(connectors)


# -- listeners beside the daemon ---------------------------------------------------------------


async def start_listeners(
    settings: AppSettings, store: AsyncStore, *, verifier: Verifier | None = None
) -> Stop:
    """Start the HTTP API (when api.enabled) and the /metrics listener (when metrics.listen is
    set) on this loop; return what stops them. The API first: a bad api.listen fails the start
    before anything else runs."""
    from .api import start_api
    from .api.ops import start_ops

    stops: list[Stop] = []
    if settings.api.enabled:
        stops.append(await start_api(settings, store, verifier=verifier))
    stop_ops = await start_ops(settings, store)
    if stop_ops is not None:
        stops.append(stop_ops)

    async def stop() -> None:
        for each in stops:
            await each()

    return stop


# -- signals -----------------------------------------------------------------------------------


@contextmanager
def stop_signals(on_signal: Callable[[], None]) -> Iterator[None]:
    """Call `on_signal` on SIGTERM and SIGINT while the block runs (the process's one handler).

    Outside the main thread (tests) or where the loop cannot (Windows), nothing is installed.
    """
    loop = asyncio.get_running_loop()
    handled = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, on_signal)
            except (NotImplementedError, RuntimeError):
                continue
            handled.append(sig)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


async def serve_api(settings: AppSettings, *, store: AsyncStore | None) -> None:
    """Serve the API alone (`mailprobe api`) until SIGTERM/SIGINT; a second signal: at once."""
    from .api import serve

    shutdown, hurry = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        (hurry if shutdown.is_set() else shutdown).set()

    with stop_signals(on_signal):
        await serve(settings, store=store, shutdown=shutdown, hurry=hurry)
