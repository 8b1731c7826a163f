"""The doctor's checks of this installation: the store, connector credentials, API keys.

The store is opened (and so migrated) as `mailprobe run` would; a connector is asked what its
first pass asks first (`prepare()`: its fields and lists, with the token's scopes), so a missing
scope is named before a pass fails on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from mailprobe.connectors.errors import ConnectorError, RetriableConnectorError
from mailprobe.engine import MailprobeError

from ..errors import ConfigError, StoreError
from ..migrations import KNOWN
from ..settings import AppSettings, CsvConnectorSettings
from ..store import Store
from .report import Finding, Outcome

#: A connector's first calls must answer within this, or the check says it could not tell.
CONNECTOR_TIMEOUT_S = 30.0


@contextmanager
def opened_store(settings: AppSettings) -> Iterator[tuple[Store | None, Finding]]:
    """Yield the store (None when it cannot be opened) and the finding about it."""
    from ..wiring import open_store

    path = settings.store.path
    try:
        store = open_store(settings)
    except (StoreError, OSError) as exc:
        fix = f"make {path.parent.resolve()} writable, or set store.path to a writable file"
        yield None, Finding("store", Outcome.FAIL, f"{path}: {exc}", fix)
        return
    try:
        yield store, _store_finding(store, path)
    finally:
        store.close()


def _store_finding(store: Store, path: object) -> Finding:
    try:
        store.check_writable()
        applied = store.schema()
    except StoreError as exc:
        return Finding("store", Outcome.FAIL, f"{path}: {exc}", "stop other writers, then retry")
    if tuple(applied) != KNOWN:
        return Finding(
            "store", Outcome.FAIL, f"{path}: schema {list(applied)} is not this version's",
            "use the mailprobe version that wrote this store, or a fresh store.path",
        )  # fmt: skip
    return Finding("store", Outcome.OK, f"{path}: writable, {len(applied)} migrations current")


def check_api(settings: AppSettings) -> Finding:
    """Return whether the API would listen safely: keys are required beyond loopback."""
    from ..api import listen_address

    try:
        host, port = listen_address(settings.api)
    except ConfigError as exc:
        return Finding("api", Outcome.FAIL, str(exc), exc.hint)
    keys = f"{len(settings.api.keys)} key(s)" if settings.api.keys else "no keys (loopback only)"
    state = "enabled" if settings.api.enabled else "off in `run`; `serve` uses it"
    return Finding("api", Outcome.OK, f"listens on {host}:{port} with {keys}; {state}")


async def check_connectors(settings: AppSettings) -> list[Finding]:
    """Return one finding per enabled connector: its credentials and permissions work."""
    from ..wiring import build_connector, close_connectors

    findings = []
    for name, conf in settings.connectors.items():
        if not conf.enabled:
            continue
        if isinstance(conf, CsvConnectorSettings):
            findings.append(_drop_folder(name, conf))
            continue
        try:
            connector = build_connector(name, conf, now=datetime.now(UTC))
        except ConfigError as exc:
            findings.append(Finding(f"connector {name}", Outcome.FAIL, str(exc), exc.hint))
            continue
        try:
            findings.append(await _prepared(name, connector.client))  # type: ignore[attr-defined]
        finally:
            await close_connectors({name: connector})
    return findings


async def _prepared(name: str, client: object) -> Finding:
    check = f"connector {name}"
    try:
        await asyncio.wait_for(client.prepare(), CONNECTOR_TIMEOUT_S)  # type: ignore[attr-defined]
    except RetriableConnectorError as exc:
        return Finding(check, Outcome.WARN, f"could not tell now: {exc}", "try again later")
    except (ConnectorError, MailprobeError) as exc:
        return Finding(check, Outcome.FAIL, str(exc), _credential_fix(name))
    except TimeoutError:
        return Finding(check, Outcome.WARN, f"no answer within {CONNECTOR_TIMEOUT_S:g} s")
    return Finding(check, Outcome.OK, "credentials accepted; fields and lists ready")


def _credential_fix(name: str) -> str:
    return (
        f"give connectors.{name}'s token the permission named above (HubSpot: the private "
        "app's scopes; SendGrid: the API key's permissions), then run `mailprobe doctor` again"
    )


def _drop_folder(name: str, conf: CsvConnectorSettings) -> Finding:
    from mailprobe.connectors.csvdrop import DropFolder

    folder = DropFolder(conf.folder)
    try:
        folder.ensure_layout()
    except OSError as exc:
        fix = f"make {conf.folder} writable or set connectors.{name}.folder"
        return Finding(f"connector {name}", Outcome.FAIL, f"{conf.folder}: {exc}", fix)
    return Finding(f"connector {name}", Outcome.OK, f"drop folder {folder.inbox} ready")
