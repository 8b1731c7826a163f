"""The engine's answers: frozen values and the only builder of the contract JSON.

Everything here is a frozen, slotted dataclass or a StrEnum of the documented strings: cheap by the
million, hashable, safe to cache and share between tasks. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any


class Status(StrEnum):
    """What a CRM user needs to know first about an address."""

    VALID = "valid"
    INVALID = "invalid"
    CATCH_ALL = "catch_all"
    RISKY = "risky"
    UNKNOWN = "unknown"


class Reason(StrEnum):
    """Why the status is what it is (README, "Statuses, reasons and actions")."""

    ACCEPTED = "accepted"
    # invalid
    INVALID_SYNTAX = "invalid_syntax"
    DOMAIN_NOT_FOUND = "domain_not_found"
    NULL_MX = "null_mx"
    NO_MAIL_SERVER = "no_mail_server"
    UNROUTABLE_MX = "unroutable_mx"
    MAILBOX_NOT_FOUND = "mailbox_not_found"
    MAILBOX_DISABLED = "mailbox_disabled"
    # catch_all
    ACCEPT_ALL = "accept_all"
    # risky
    DISPOSABLE = "disposable"
    MAILBOX_FULL = "mailbox_full"
    ROLE_ACCOUNT = "role_account"
    # unknown
    GREYLISTED = "greylisted"
    TIMEOUT = "timeout"
    CONNECTION_FAILED = "connection_failed"
    BLOCKED = "blocked"
    RATE_LIMITED = "rate_limited"
    TEMPORARY_FAILURE = "temporary_failure"
    DNS_ERROR = "dns_error"
    UNVERIFIABLE_PROVIDER = "unverifiable_provider"
    PROTOCOL_ERROR = "protocol_error"
    INTERNAL_ERROR = "internal_error"


class Action(StrEnum):
    """What a CRM user should do with the address."""

    SEND = "send"
    CAUTION = "caution"
    DO_NOT_SEND = "do_not_send"
    RETRY = "retry"


#: The status each reason belongs to; a (status, reason) pair outside this table is a bug.
STATUS_OF_REASON: dict[Reason, Status] = {
    Reason.ACCEPTED: Status.VALID,
    Reason.INVALID_SYNTAX: Status.INVALID,
    Reason.DOMAIN_NOT_FOUND: Status.INVALID,
    Reason.NULL_MX: Status.INVALID,
    Reason.NO_MAIL_SERVER: Status.INVALID,
    Reason.UNROUTABLE_MX: Status.INVALID,
    Reason.MAILBOX_NOT_FOUND: Status.INVALID,
    Reason.MAILBOX_DISABLED: Status.INVALID,
    Reason.ACCEPT_ALL: Status.CATCH_ALL,
    Reason.DISPOSABLE: Status.RISKY,
    Reason.MAILBOX_FULL: Status.RISKY,
    Reason.ROLE_ACCOUNT: Status.RISKY,
    Reason.GREYLISTED: Status.UNKNOWN,
    Reason.TIMEOUT: Status.UNKNOWN,
    Reason.CONNECTION_FAILED: Status.UNKNOWN,
    Reason.BLOCKED: Status.UNKNOWN,
    Reason.RATE_LIMITED: Status.UNKNOWN,
    Reason.TEMPORARY_FAILURE: Status.UNKNOWN,
    Reason.DNS_ERROR: Status.UNKNOWN,
    Reason.UNVERIFIABLE_PROVIDER: Status.UNKNOWN,
    Reason.PROTOCOL_ERROR: Status.UNKNOWN,
    Reason.INTERNAL_ERROR: Status.UNKNOWN,
}


class ReplyCode(IntEnum):
    """SMTP reply codes the engine branches on (RFC 5321 §4.2.3)."""

    READY = 220
    CLOSING = 221
    OK = 250
    WILL_FORWARD = 251
    SERVICE_NOT_AVAILABLE = 421
    MAILBOX_BUSY = 450
    LOCAL_ERROR = 451
    INSUFFICIENT_STORAGE = 452
    SYNTAX_ERROR = 500
    PARAMETER_ERROR = 501
    NOT_IMPLEMENTED = 502
    BAD_SEQUENCE = 503
    MAILBOX_UNAVAILABLE = 550


class Stage(StrEnum):
    """Where in the SMTP conversation a reply was received."""

    CONNECT = "connect"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    MAIL = "mail"
    RCPT = "rcpt"


@dataclass(frozen=True, slots=True)
class SmtpReply:
    """One reply as the server sent it; replies.classify() decides what it means."""

    code: int  # 550
    enhanced_code: str | None  # "5.1.1" (RFC 3463); None when the server sends none
    message: str  # text after the codes, continuation lines joined with "\n"

    def __str__(self) -> str:
        parts = [str(self.code)]
        if self.enhanced_code:
            parts.append(self.enhanced_code)
        if self.message:
            parts.append(self.message)
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A status with its reason: what one reply, or one session, says about an address."""

    status: Status
    reason: Reason
    #: seconds the server asked us to wait (greylisting), when it said so
    retry_after_s: float | None = None

    @classmethod
    def of(cls, reason: Reason, retry_after_s: float | None = None) -> Verdict:
        """Return the verdict for a reason, with the status the README gives it."""
        return cls(STATUS_OF_REASON[reason], reason, retry_after_s)


@dataclass(frozen=True, slots=True)
class SmtpCheck:
    """What the SMTP conversation showed about one address (the `checks.smtp` object)."""

    connected: bool
    mailbox_exists: bool | None
    is_catch_all: bool | None
    smtp_provider: str | None
    response_code: int | None
    enhanced_code: str | None
    response_message: str | None
    mx_host: str | None
    tls: bool

    def to_json(self) -> dict[str, Any]:
        """Return the `checks.smtp` object of the contract."""
        return {
            "connected": self.connected,
            "mailbox_exists": self.mailbox_exists,
            "is_catch_all": self.is_catch_all,
            "smtp_provider": self.smtp_provider,
            "response_code": self.response_code,
            "enhanced_code": self.enhanced_code,
            "response_message": self.response_message,
            "mx_host": self.mx_host,
            "tls": self.tls,
        }


@dataclass(frozen=True, slots=True)
class Checks:
    """Every check's outcome; flags are reported independently of the status."""

    syntax: bool
    domain: bool | None
    mx_record: bool | None
    smtp: SmtpCheck | None
    disposable: bool
    catch_all: bool
    role: bool
    free: bool

    def to_json(self) -> dict[str, Any]:
        """Return the `checks` object of the contract."""
        return {
            "syntax": self.syntax,
            "domain": self.domain,
            "mx_record": self.mx_record,
            "smtp": self.smtp.to_json() if self.smtp is not None else None,
            "disposable": self.disposable,
            "catch_all": self.catch_all,
            "role": self.role,
            "free": self.free,
        }


def format_time(moment: datetime) -> str:
    """Return a UTC ISO 8601 timestamp with `Z`, to the second, as the contract writes times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """Return the aware UTC datetime of a contract timestamp (`...Z` or with an offset)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class VerificationResult:
    """The engine's whole answer for one address; to_json() is the documented contract."""

    email: str
    normalized: str
    status: Status
    reason: Reason
    action: Action
    score: int
    checks: Checks
    suggestion: str | None
    verified_at: datetime
    response_time_ms: int
    #: seconds a greylisting server asked us to wait before asking again, when it said so;
    #: not in the JSON contract: the store turns it into the time of the next attempt
    retry_after_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the result JSON (the README's "The result"; field order as documented)."""
        return {
            "email": self.email,
            "normalized": self.normalized,
            "status": str(self.status),
            "reason": str(self.reason),
            "action": str(self.action),
            "score": self.score,
            "checks": self.checks.to_json(),
            "suggestion": self.suggestion,
            "verified_at": format_time(self.verified_at),
            "response_time_ms": self.response_time_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VerificationResult:
        """Return the result a to_json() dict describes (the store and API read results back)."""
        checks = data["checks"]
        smtp = checks.get("smtp")
        return cls(
            email=data["email"],
            normalized=data["normalized"],
            status=Status(data["status"]),
            reason=Reason(data["reason"]),
            action=Action(data["action"]),
            score=int(data["score"]),
            checks=Checks(
                syntax=checks["syntax"],
                domain=checks["domain"],
                mx_record=checks["mx_record"],
                smtp=SmtpCheck(**smtp) if smtp is not None else None,
                disposable=checks["disposable"],
                catch_all=checks["catch_all"],
                role=checks["role"],
                free=checks["free"],
            ),
            suggestion=data.get("suggestion"),
            verified_at=parse_time(data["verified_at"]),
            response_time_ms=int(data["response_time_ms"]),
        )
