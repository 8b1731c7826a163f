"""Structured logging: key=value text or JSON lines, with secrets masked on the way out.

`configure()` installs one handler on the root logger. Extra fields passed with
`log.info("pass finished", extra={"connector": "drop", "verified": 12})` become `key=value`
pairs (text) or JSON members. Every formatted line, tracebacks included, goes through
`SecretMask` last: configured secret values, `Authorization` headers, `Bearer …` tokens,
`api_key=…`-style parameters, passwords in URLs, and HubSpot/SendGrid-shaped keys become
`**********`. This module knows nothing else about the application.

Hand-written rather than python-json-logger/structlog: neither is a dependency, and the two
formatters plus the mask are a few dozen lines.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from logging import StreamHandler
from typing import Any, TextIO

from pydantic import BaseModel, SecretStr

MASK = "**********"

# LogRecord's own attributes: everything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

_PATTERNS: tuple[re.Pattern[str], ...] = (
    # Authorization: Bearer xyz / 'authorization': 'Basic xyz'
    re.compile(
        r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(?:(?:bearer|basic|token)\s+)?[^\s'\",}]+"
    ),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(
        r"(?i)((?:api[_-]?key|access[_-]?token|token|secret|password|passwd)['\"]?\s*[=:]\s*"
        r"['\"]?)[^\s'\"&,}]+"
    ),
    # scheme://user:password@host
    re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/\s@]+:)[^@\s/]+(?=@)"),
    # SendGrid keys (SG.<id>.<secret>) and HubSpot private app tokens (pat-<region>-<uuid>)
    re.compile(r"()\bSG\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    re.compile(r"()\bpat-[a-z0-9]{2,4}-[0-9a-f]{8}-[0-9a-f-]{27}"),
)


class SecretMask:
    """Replaces secrets in text: the configured values and anything shaped like a credential."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is masked whole; very short values would
        # mask ordinary words, so they are left to the patterns.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """Return `text` with every secret replaced by MASK."""
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        return text


#: The mask of this process: configure() gives it the configured secrets; before that, and in
#: library use, it still masks everything shaped like a credential.
_active = SecretMask()


def mask_secrets(text: str) -> str:
    """Return `text` through this process's secret mask: for every error text that is stored
    (runs table), printed (`mailprobe status`, `mailprobe sync`) or logged."""
    return _active(text)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Return the fields a call passed with `extra=`, in the order given."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _time(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    # Quoted (and so escaped) when it holds a control character too: a file name or reply with
    # a terminal escape in it must not rewrite the operator's screen or forge a log line.
    if text == "" or any(ch in text for ch in ' "=\n\t') or not text.isprintable():
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """`2026-11-27T12:00:00.000Z INFO mailprobe.pipeline pass finished connector=drop ...`."""

    def __init__(self, mask: SecretMask) -> None:
        super().__init__()
        self.mask = mask

    def format(self, record: logging.LogRecord) -> str:
        parts = [_time(record), record.levelname, record.name, record.getMessage()]
        parts += [f"{key}={_text_value(value)}" for key, value in extra_fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return self.mask(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the extra fields, exception."""

    def __init__(self, mask: SecretMask) -> None:
        super().__init__()
        self.mask = mask

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            data.setdefault(key, value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return self.mask(json.dumps(data, default=str, ensure_ascii=False))


#: Libraries that narrate every request or job at INFO; their warnings still show.
_CHATTY = ("apscheduler", "httpx", "httpcore", "hubspot", "urllib3")


def configure(
    *,
    level: str = "INFO",
    fmt: str = "text",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Install the one mailprobe log handler on the root logger and return it."""
    global _active
    mask = _active = SecretMask(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(mask) if fmt == "json" else TextFormatter(mask))
    handler.set_name("mailprobe")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "mailprobe"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return handler


class _ConsoleLines:
    """A stream for the log handler that prints whole lines through a rich console.

    Printed through the console, a line goes above its live progress bar, which is redrawn
    below it; written to stderr directly, it would land in the middle of the bar.
    """

    def __init__(self, console: Any) -> None:
        self.console = console
        self._partial = ""

    def write(self, text: str) -> int:
        from rich.text import Text

        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self.console.print(Text(line), soft_wrap=True, highlight=False)
        return len(text)

    def flush(self) -> None:
        """Nothing waits: every whole line was printed."""


@contextmanager
def through_console(console: Any) -> Iterator[None]:
    """Send the mailprobe handler's lines through a rich console while the block runs."""
    handlers = [
        h
        for h in logging.getLogger().handlers
        if h.get_name() == "mailprobe" and isinstance(h, StreamHandler)
    ]
    old = [h.setStream(_ConsoleLines(console)) for h in handlers]
    try:
        yield
    finally:
        for handler, stream in zip(handlers, old, strict=True):
            if stream is not None:
                handler.setStream(stream)


def secret_values(model: Any) -> list[str]:
    """Return every SecretStr value inside a settings model (nested models, lists, dicts)."""
    if isinstance(model, SecretStr):
        return [model.get_secret_value()]
    if isinstance(model, BaseModel):
        return [v for name in type(model).model_fields for v in secret_values(getattr(model, name))]
    if isinstance(model, dict):
        return [v for item in model.values() for v in secret_values(item)]
    if isinstance(model, list | tuple):
        return [v for item in model for v in secret_values(item)]
    return []
