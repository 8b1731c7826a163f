"""The application's settings: one YAML file, overridden by `MAILPROBE_…` environment variables.

Sources, strongest first: values passed in code, the environment (`__` nests:
`MAILPROBE_ENGINE__SMTP__PORT=2525`), the YAML file, the defaults below. Unknown keys and bad
values become one ConfigError that names the key. Secrets are SecretStr: never logged or echoed.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from mailprobe.engine import EngineSettings

from .config_advice import describe
from .errors import ConfigError

DEFAULT_CONFIG = Path("mailprobe.yaml")

_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def interval_seconds(schedule: str) -> float | None:
    """Return the seconds of an interval schedule (`30s`, `15m`, `1h`, `1d`), None for cron."""
    match = _INTERVAL.match(schedule)
    return float(match[1]) * _UNIT_S[match[2]] if match else None


def _check_schedule(value: str) -> str:
    seconds = interval_seconds(value)
    if seconds is not None:
        if seconds <= 0:
            raise ValueError("an interval must be longer than 0")
        return value.strip()
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value, timezone="UTC")
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is neither an interval (30s, 15m, 1h, 1d) nor a cron expression "
            f"('*/15 * * * *'): {exc}"
        ) from None
    return value.strip()


def _clean_secret(value: Any) -> Any:
    """Return a secret without surrounding whitespace; refuse whitespace inside it.

    A token pasted with its line break would otherwise reach an HTTP header, and the library's
    error ("Invalid header value b'Bearer …\\n'") would carry the token into logs and the runs
    table. The message never repeats the value.
    """
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not isinstance(text, str):
        return value
    text = text.strip()
    if any(char.isspace() for char in text):
        raise ValueError(
            "the secret has whitespace inside it (a line break pasted with it?); "
            "give it on one line"
        )
    return text


#: A token or key: stripped and checked where settings load, masked wherever shown.
Secret = Annotated[SecretStr, BeforeValidator(_clean_secret)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreSettings(_Section):
    """Where mailprobe keeps its state."""

    path: Path = Field(Path("mailprobe.db"), description="SQLite database file.")


class FreshnessDays(_Section):
    """How long a result is reused before the address is verified again."""

    valid: float = 30
    catch_all: float = 30
    risky: float = 30
    invalid: float = 90


class PolicySettings(_Section):
    """How results are judged and how long they stay fresh."""

    role_is_risky: bool = Field(False, description="Role addresses (info@...) become risky.")
    fresh_days: FreshnessDays = Field(default_factory=FreshnessDays)
    unknown_retry_min_s: float = Field(900, gt=0, description="First retry of an unknown.")
    unknown_retry_max_s: float = Field(86400, gt=0, description="Longest retry back-off.")
    unknown_max_attempts: int = Field(
        6, ge=1, description="After this many unknowns in a row, stop retrying (action caution)."
    )


class _ConnectorBase(_Section):
    enabled: bool = True
    schedule: str = Field("15m", description="Interval (30s, 15m, 1h, 1d) or cron expression.")

    @field_validator("schedule")
    @classmethod
    def _schedule_is_valid(cls, value: str) -> str:
        return _check_schedule(value)


class CsvConnectorSettings(_ConnectorBase):
    """A drop folder: CSV files in inbox/ come back verified in outbox/."""

    type: Literal["csv"] = "csv"
    schedule: str = "1m"
    folder: Path = Path("mailprobe-drop")
    settle_s: float = Field(5.0, ge=0, description="A file must be unchanged this long.")
    email_column: str | None = Field(None, description="Header of the email column; auto.")
    columns: Literal["full", "basic"] = Field(
        "full",
        description="Output columns: full (summary, labels and every field code) or basic "
        "(summary, status, recommendation, suggested fix).",
    )


class HubSpotConnectorSettings(_ConnectorBase):
    """A HubSpot portal reached with a private app token."""

    type: Literal["hubspot"] = "hubspot"
    access_token: Secret | None = Field(None, description="Private app token (environment).")
    base_url: str = "https://api.hubapi.com"
    backfill: bool | date = Field(
        True, description="Verify existing contacts on the first pass: true, false or a date."
    )
    requests_per_10s: int = Field(
        100,
        ge=1,
        le=190,
        description="API requests per 10 s (private apps: 100, or 190 on "
        "Professional and Enterprise).",
    )


class SendGridConnectorSettings(_ConnectorBase):
    """SendGrid Marketing Campaigns contacts, read from lists."""

    type: Literal["sendgrid"] = "sendgrid"
    api_key: Secret | None = Field(None, description="API key (environment).")
    base_url: str = "https://api.sendgrid.com"
    lists: list[str] = Field(default_factory=list, description="List ids or names; none = all.")
    invalid_list: str | None = Field(None, description="List that invalid contacts are added to.")


ConnectorSettings = Annotated[
    CsvConnectorSettings | HubSpotConnectorSettings | SendGridConnectorSettings,
    Field(discriminator="type"),
]


def _default_connectors() -> dict[str, Any]:
    return {"drop": CsvConnectorSettings()}


class ApiSettings(_Section):
    """The HTTP API for real-time checks."""

    enabled: bool = False
    listen: str = Field("127.0.0.1:8080", description="host:port to listen on.")
    keys: list[Secret] = Field(default_factory=list, description="Accepted API keys.")
    rate_limit_per_minute: int = Field(600, ge=1, description="Requests per key per minute.")
    default_timeout_ms: int = Field(5000, ge=100, le=60000)
    allow_private_networks: bool = Field(
        False,
        description="Let API callers' addresses reach engine.smtp.allowed_private_networks; "
        "off, the API contacts only globally routable mail servers.",
    )


class DoctorSettings(_Section):
    """What `mailprobe doctor` asks: the hosts it dials on port 25 and the blocklists."""

    smtp_hosts: list[str] = Field(
        default_factory=lambda: [
            "gmail-smtp-in.l.google.com",
            "hotmail-com.olc.protection.outlook.com",
            "mta5.am0.yahoodns.net",
        ],
        description="MX hosts dialled on engine.smtp.port to prove outbound port 25 is open.",
    )
    blocklists: list[str] = Field(
        default_factory=lambda: ["zen.spamhaus.org", "b.barracudacentral.org", "bl.spamcop.net"],
        description="DNS blocklist zones the source addresses are looked up in.",
    )


class LogSettings(_Section):
    """How mailprobe logs."""

    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


#: What a webhook is told about (notify.events).
NotifyEvent = Literal["pass_failed", "connector_failing", "connector_recovered", "check_failed"]


class NotifySettings(_Section):
    """Webhook notifications to the operator, signed with HMAC-SHA256."""

    webhook_url: str | None = Field(None, description="Where events are POSTed; none = off.")
    secret: SecretStr | None = Field(None, description="HMAC-SHA256 key (environment).")
    events: list[NotifyEvent] = Field(
        default_factory=lambda: [
            "pass_failed",
            "connector_failing",
            "connector_recovered",
            "check_failed",
        ],
        description="Events to send.",
    )
    failures_in_a_row: int = Field(3, ge=1, description="connector_failing after this many.")
    timeout_s: float = Field(10.0, gt=0, description="Per delivery attempt.")
    attempts: int = Field(5, ge=1, description="Delivery attempts before giving up.")
    backoff_s: float = Field(2.0, ge=0, description="Wait after the first failed attempt.")

    @field_validator("webhook_url")
    @classmethod
    def _url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value.strip()):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.strip() if value else None


class MetricsSettings(_Section):
    """A listener for /metrics and /healthz alone, for a daemon whose HTTP API is off."""

    listen: str | None = Field(None, description="host:port, e.g. 127.0.0.1:9108; none = off.")


class AppSettings(BaseSettings):
    """Every setting of mailprobe; `load_settings()` builds it from file and environment."""

    model_config = SettingsConfigDict(
        env_prefix="MAILPROBE_", env_nested_delimiter="__", extra="forbid"
    )

    engine: EngineSettings = Field(default_factory=EngineSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    connectors: dict[str, ConnectorSettings] = Field(default_factory=_default_connectors)
    api: ApiSettings = Field(default_factory=ApiSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    doctor: DoctorSettings = Field(default_factory=DoctorSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)


def _yaml_mapping(path: Path) -> Any:
    """Return the file's YAML; ConfigError unless it is readable and a mapping (or nothing)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the config file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"not valid YAML: {exc}".replace("\n", " ")) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(str(path), "the config file must be a mapping of sections") from None
    return data


def config_file(path: Path | None) -> Path | None:
    """Return the YAML file settings are read from: `path`, else ./mailprobe.yaml if present."""
    if path is None and DEFAULT_CONFIG.exists():
        return DEFAULT_CONFIG
    return path


def load_settings(path: Path | None = None, **overrides: Any) -> AppSettings:
    """Return the settings from `path` (default ./mailprobe.yaml if present) and the environment."""
    path = config_file(path)
    data = None
    if path is not None:
        if not path.exists():
            raise ConfigError(str(path), "config file not found (mailprobe init writes one)")
        data = _yaml_mapping(path)
    yaml_file = path

    class _FromFile(AppSettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if yaml_file is not None:
                sources.append(
                    YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file, deep_merge=True)
                )
            return tuple(sources)

    try:
        return _FromFile(**overrides)
    except ValidationError as exc:
        raise ConfigError("", describe(exc, path=path, data=data)) from None
    except SettingsError as exc:
        raise ConfigError("", _describe_env(exc)) from None


def _describe_env(error: SettingsError) -> str:
    """Return one line for an environment value pydantic-settings could not parse (bad JSON)."""
    field = re.search(r'field "([^"]+)"', str(error))
    prefix = f"MAILPROBE_{field[1].upper()}__" if field else "MAILPROBE_"
    cause = error.__cause__
    why = f" ({str(cause).splitlines()[0]})" if cause else ""
    return (
        f"{prefix}...: a list or mapping given in an environment variable must be JSON{why}; "
        f'e.g. MAILPROBE_API__KEYS=\'["k-1", "k-2"]\''
    )
