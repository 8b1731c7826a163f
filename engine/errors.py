"""The engine's exceptions: one root, a type per failure a caller treats differently.

An exception means *we could not get an answer*; answers (NXDOMAIN, a null MX, a 550 to RCPT) are
values in the result, never exceptions. Exceptions never choose a status: replies.classify() and
the verifier do.

    MailprobeError                     `except MailprobeError` catches all of ours
    ├── DnsError(domain, rdtype)       SERVFAIL, timeout, no nameserver answered: we do not know
    ├── ProbeError(mx_host, stage, reply)
    │   ├── ProbeConnectError          refused, unreachable, TLS failed (also ConnectionError)
    │   ├── ProbeTimeout               no reply in time (also TimeoutError)
    │   └── ProbeProtocolError         garbage, over-long or out-of-sequence reply
    ├── ConnectorError(connector)      connectors/errors.py
    └── ConfigError(setting, hint)     mailprobe/errors.py
"""

from __future__ import annotations

from .result import SmtpReply, Stage


class MailprobeError(Exception):
    """Root of every exception mailprobe raises on purpose."""


class DnsError(MailprobeError):
    """The resolver gave no usable answer (SERVFAIL, timeout, no nameserver): we do not know."""

    def __init__(self, domain: str, rdtype: str, detail: str = "") -> None:
        self.domain = domain
        self.rdtype = rdtype
        self.detail = detail
        super().__init__(domain, rdtype, detail)

    def __str__(self) -> str:
        text = f"DNS lookup of {self.rdtype} {self.domain} failed"
        return f"{text}: {self.detail}" if self.detail else text


class ProbeError(MailprobeError):
    """An SMTP conversation ended before it could answer; `stage` says where."""

    def __init__(
        self, mx_host: str, stage: Stage | str, reply: SmtpReply | None = None, detail: str = ""
    ) -> None:
        self.mx_host = mx_host
        self.stage = Stage(stage)
        self.reply = reply
        self.detail = detail
        super().__init__(mx_host, str(stage), reply, detail)

    def __str__(self) -> str:
        text = f"SMTP {self.stage} with {self.mx_host} failed"
        if self.reply is not None:
            text += f" ({self.reply})"
        return f"{text}: {self.detail}" if self.detail else text


class ProbeConnectError(ProbeError, ConnectionError):
    """The connection could not be made or was lost (refused, unreachable, TLS failed, dropped)."""


class ProbeTimeout(ProbeError, TimeoutError):
    """The server did not answer within the configured timeout."""


class ProbeProtocolError(ProbeError):
    """The server sent garbage, an over-long reply or a reply out of sequence."""
