"""The CRM fields mailprobe writes, named once, for every connector (see docs/architecture.md).

Internal names cannot be renamed once created in a CRM, so they are fixed here. Values are
plain Python (str, int, bool, date, datetime, None); each connector turns them into its API's
wire format. No HTTP here.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum

from mailprobe.engine.result import (
    Action,
    Reason,
    Status,
    VerificationResult,
    format_time,
    parse_time,
)

from .base import FieldValue


class FieldKind(StrEnum):
    """The kind of value a field holds; connectors map it to their own types."""

    ENUM = "enum"
    NUMBER = "number"
    DATETIME = "datetime"
    DATE = "date"
    TEXT = "text"
    BOOL = "bool"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One CRM field: internal name, label, kind and, for enumerations, its options."""

    name: str
    label: str
    kind: FieldKind
    description: str
    options: tuple[tuple[str, str], ...] = ()  # (value, label) for ENUM fields


STATUS_LABELS: dict[Status, str] = {
    Status.VALID: "Valid",
    Status.INVALID: "Invalid",
    Status.CATCH_ALL: "Catch-all (unconfirmed)",
    Status.RISKY: "Risky",
    Status.UNKNOWN: "Unknown",
}

REASON_LABELS: dict[Reason, str] = {
    Reason.ACCEPTED: "Mailbox accepted",
    Reason.INVALID_SYNTAX: "Not a valid address",
    Reason.DOMAIN_NOT_FOUND: "Domain does not exist",
    Reason.NULL_MX: "Domain takes no mail",
    Reason.NO_MAIL_SERVER: "Domain has no mail server",
    Reason.UNROUTABLE_MX: "Mail server unreachable from the internet",
    Reason.MAILBOX_NOT_FOUND: "Mailbox does not exist",
    Reason.MAILBOX_DISABLED: "Mailbox disabled",
    Reason.ACCEPT_ALL: "Domain accepts every address",
    Reason.DISPOSABLE: "Disposable address",
    Reason.MAILBOX_FULL: "Mailbox full",
    Reason.ROLE_ACCOUNT: "Role address",
    Reason.GREYLISTED: "Server asked to retry later (greylisting)",
    Reason.TIMEOUT: "Mail server too slow",
    Reason.CONNECTION_FAILED: "Mail server unreachable",
    Reason.BLOCKED: "Mail server refused the check",
    Reason.RATE_LIMITED: "Mail server rate limit",
    Reason.TEMPORARY_FAILURE: "Temporary mail server failure",
    Reason.DNS_ERROR: "DNS lookup failed",
    Reason.UNVERIFIABLE_PROVIDER: "Provider does not allow verification",
    Reason.PROTOCOL_ERROR: "Mail server protocol error",
    Reason.INTERNAL_ERROR: "Internal error",
}

ACTION_LABELS: dict[Action, str] = {
    Action.SEND: "Send",
    Action.CAUTION: "Send with caution",
    Action.DO_NOT_SEND: "Do not send",
    Action.RETRY: "Retry later",
}

#: The property group (HubSpot) the fields live in.
GROUP_NAME = "mailprobe"
GROUP_LABEL = "Email verification"

FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(
        "mailprobe_status",
        "Email status",
        FieldKind.ENUM,
        "Whether the address can receive mail, as last verified by mailprobe.",
        tuple((str(s), label) for s, label in STATUS_LABELS.items()),
    ),
    FieldSpec(
        "mailprobe_reason",
        "Email status reason",
        FieldKind.ENUM,
        "Why mailprobe gave this status.",
        tuple((str(r), label) for r, label in REASON_LABELS.items()),
    ),
    FieldSpec(
        "mailprobe_action",
        "Email send recommendation",
        FieldKind.ENUM,
        "What to do with the address.",
        tuple((str(a), label) for a, label in ACTION_LABELS.items()),
    ),
    FieldSpec(
        "mailprobe_score", "Email score", FieldKind.NUMBER, "0-100, higher is safer to send to."
    ),
    FieldSpec("mailprobe_verified_at", "Email last verified", FieldKind.DATETIME, "When (UTC)."),
    FieldSpec(
        "mailprobe_verified_email",
        "Email address verified",
        FieldKind.TEXT,
        "The address these fields describe.",
    ),
    FieldSpec(
        "mailprobe_next_check",
        "Email next verification",
        FieldKind.DATE,
        "When the result expires and the address is verified again.",
    ),
    FieldSpec(
        "mailprobe_suggestion",
        "Email suggested correction",
        FieldKind.TEXT,
        "A likely fix for a mistyped address.",
    ),
    FieldSpec("mailprobe_provider", "Mailbox provider", FieldKind.TEXT, "Who hosts the mailbox."),
    FieldSpec(
        "mailprobe_smtp_reply",
        "Email server reply",
        FieldKind.TEXT,
        "The mail server's answer to the check.",
    ),
    FieldSpec(
        "mailprobe_catch_all", "Catch-all domain", FieldKind.BOOL, "The domain takes any address."
    ),
    FieldSpec("mailprobe_role", "Role address", FieldKind.BOOL, "A shared address (info@...)."),
    FieldSpec(
        "mailprobe_disposable",
        "Disposable address",
        FieldKind.BOOL,
        "A throwaway mailbox service.",
    ),
    FieldSpec(
        "mailprobe_free",
        "Free email provider",
        FieldKind.BOOL,
        "A free mailbox provider (gmail.com...).",
    ),
)

FIELD_NAMES: tuple[str, ...] = tuple(spec.name for spec in FIELDS)


def number_text(value: float) -> str:
    """Return a number as CRMs show it back: `98`, not `98.0`."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def field_text(value: FieldValue) -> str:
    """Return a field value in the one canonical text form; pulled values come in it too.

    "" for None, true/false, numbers as `number_text`, ISO days, UTC times to the second with Z.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return number_text(value)
    if isinstance(value, datetime):
        # Times are UTC; a naive one is taken as UTC rather than the machine's local time.
        return format_time(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def shows_value(shown: str | None, value: FieldValue) -> bool:
    """Return True when a record whose field reads `shown` already holds `value`.

    The one answer to "does the CRM already show this?". Connectors hand pulled values over in
    field_text's form; beyond equal text, a time matches a day (a sink whose field keeps only
    the day, as SendGrid's Date) and the same second, and numbers and flags match by value, so a
    value recorded in an older form is not written again for its spelling alone.
    """
    text = (shown or "").strip()
    if text == field_text(value):
        return True
    if not text or value is None or isinstance(value, str):
        return False
    try:
        return _same(text, value)
    except ValueError:
        return False


def _same(text: str, value: FieldValue) -> bool:
    """Compare a non-empty shown text with a value by the value's type; ValueError: unreadable."""
    if isinstance(value, bool):
        return (text.lower() in ("true", "1", "yes")) == value
    if isinstance(value, int | float):
        return float(text) == float(value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        if len(text) == 10:  # only the day is kept
            return date.fromisoformat(text) == moment.astimezone(UTC).date()
        return format_time(parse_time(text)) == format_time(moment)
    if isinstance(value, date):
        return text[:10] == value.isoformat()
    return False


def smtp_reply_text(result: VerificationResult) -> str | None:
    """Return the server's reply as one line (`550 5.1.1 User unknown`), or None."""
    smtp = result.checks.smtp
    if smtp is None or smtp.response_code is None:
        return None
    text = f"{smtp.response_code} {smtp.response_message or ''}"
    return printable(text)[:500]


def printable(text: str) -> str:
    """Return text from outside on one line, without control or invisible formatting characters.

    A server's reply is untrusted: terminal escapes, NULs and bidirectional overrides (which
    make a cell read differently from what it holds) are dropped; runs of whitespace become one
    space.
    """
    kept = "".join(
        char
        for char in text
        if char.isspace() or unicodedata.category(char) not in ("Cc", "Cf", "Co", "Cs")
    )
    return " ".join(kept.split())


def field_values(result: VerificationResult, *, next_check: date | None) -> dict[str, FieldValue]:
    """Return every mailprobe field's value for a result (plain Python values)."""
    smtp = result.checks.smtp
    verified_at: datetime = result.verified_at
    return {
        "mailprobe_status": str(result.status),
        "mailprobe_reason": str(result.reason),
        "mailprobe_action": str(result.action),
        "mailprobe_score": result.score,
        "mailprobe_verified_at": verified_at,
        "mailprobe_verified_email": result.normalized or result.email,
        "mailprobe_next_check": next_check,
        "mailprobe_suggestion": result.suggestion,
        "mailprobe_provider": smtp.smtp_provider if smtp is not None else None,
        "mailprobe_smtp_reply": smtp_reply_text(result),
        "mailprobe_catch_all": result.checks.catch_all,
        "mailprobe_role": result.checks.role,
        "mailprobe_disposable": result.checks.disposable,
        "mailprobe_free": result.checks.free,
    }
