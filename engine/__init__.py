"""mailprobe's verification engine: a pure asyncio library with no CRM knowledge.

`Verifier(settings)` is the entry point; `await verifier.verify(email)` and
`async for result in verifier.verify_many(emails)` return `VerificationResult`s whose
`to_json()` is the result JSON the README documents; `await verifier.route(domain)` is the
domain's mail route from the verifier's own DNS cache.

This module is the engine's public surface: the application imports from `engine`, never from
its modules. Besides the verifier: the result model, the settings, the exceptions, the pieces the
HTTP API answers with before the SMTP answer (parsing, mail routes, `result_without_session`),
and the checks `mailprobe doctor` and `/readyz` run on our own side (resolver sanity, plain
lookups, a port-25 greeting).
"""

from .errors import (
    DnsError,
    MailprobeError,
    ProbeConnectError,
    ProbeError,
    ProbeProtocolError,
    ProbeTimeout,
)
from .lookup import Lookup, Records
from .mx import MailRoute, MailRouter, MxHost, RouteKind
from .probe import greet
from .result import (
    Action,
    Checks,
    Reason,
    SmtpCheck,
    SmtpReply,
    Stage,
    Status,
    Verdict,
    VerificationResult,
    format_time,
    parse_time,
)
from .sanity import ResolverHealth, ResolverSanity
from .score import RETRIABLE
from .settings import (
    DeferralSettings,
    DnsSettings,
    EngineSettings,
    GreylistSettings,
    SmtpSettings,
    SyntaxSettings,
)
from .syntax import Address, InvalidAddress, parse_address, suggest_correction
from .untrusted import clean_text
from .verifier import Verifier, result_without_session

__all__ = [
    "RETRIABLE",
    "Action",
    "Address",
    "Checks",
    "DeferralSettings",
    "DnsError",
    "DnsSettings",
    "EngineSettings",
    "GreylistSettings",
    "InvalidAddress",
    "Lookup",
    "MailRoute",
    "MailRouter",
    "MailprobeError",
    "MxHost",
    "ProbeConnectError",
    "ProbeError",
    "ProbeProtocolError",
    "ProbeTimeout",
    "Reason",
    "Records",
    "ResolverHealth",
    "ResolverSanity",
    "RouteKind",
    "SmtpCheck",
    "SmtpReply",
    "SmtpSettings",
    "Stage",
    "Status",
    "SyntaxSettings",
    "Verdict",
    "VerificationResult",
    "Verifier",
    "clean_text",
    "format_time",
    "greet",
    "parse_address",
    "parse_time",
    "result_without_session",
    "suggest_correction",
]
