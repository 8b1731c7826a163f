"""Connectors built from settings: the one place that turns settings into connector objects.

Connectors take plain keyword arguments and never import `mailprobe`; this module reads the
settings, unwraps secrets, and reports a missing one as a ConfigError naming the environment
variable to set. No I/O happens here: connectors connect on their first call.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time

from pydantic import SecretStr

from connectors.csvcolumns import Columns
from connectors.csvdrop import DropFolder

from .errors import ConfigError
from .pipeline import Connector, CrmConnector, CsvDrop
from .settings import (
    AppSettings,
    ConnectorSettings,
    CsvConnectorSettings,
    HubSpotConnectorSettings,
    SendGridConnectorSettings,
)


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
        from connectors.hubspot import HubSpotConnector

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
        from connectors.sendgrid import SendGridConnector

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
