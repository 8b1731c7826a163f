"""mailprobe's verification engine: a pure asyncio library with no CRM knowledge.

`Verifier(settings)` is the entry point; `await verifier.verify(email)` and
`async for result in verifier.verify_many(emails)` return `VerificationResult`s whose
`to_json()` is the result JSON the README documents; `await verifier.route(domain)` is the
domain's mail route from the verifier's own DNS cache.
"""

from .errors import (
    DnsError,
    MailprobeError,
    ProbeConnectError,
    ProbeError,
    ProbeProtocolError,
    ProbeTimeout,
)
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
)
from .settings import EngineSettings
from .verifier import Verifier

__all__ = [
    "Action",
    "Checks",
    "DnsError",
    "EngineSettings",
    "MailprobeError",
    "ProbeConnectError",
    "ProbeError",
    "ProbeProtocolError",
    "ProbeTimeout",
    "Reason",
    "SmtpCheck",
    "SmtpReply",
    "Stage",
    "Status",
    "Verdict",
    "VerificationResult",
    "Verifier",
]
