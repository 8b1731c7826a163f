"""The engine's settings: validated once, at the edge, then read as plain attributes.

Plain pydantic models (no environment or file reading here): the application's settings
(`mailprobe/settings.py`) nest `EngineSettings` under `engine` and load it from YAML and the
environment. Unknown keys are errors, so a typo in a config file is caught, not ignored.
"""

from __future__ import annotations

import re
import socket
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: MX host names of large mailbox providers: every working resolver on the internet finds them.
DEFAULT_CANARIES = (
    "gmail-smtp-in.l.google.com",
    "hotmail-com.olc.protection.outlook.com",
    "mta5.am0.yahoodns.net",
    "mx01.mail.icloud.com",
)


class DnsSettings(_Section):
    """How the mail route is looked up."""

    nameservers: list[str] = Field(
        default_factory=list, description="Resolver IPs; empty = the system resolver."
    )
    port: int = Field(53, ge=1, le=65535, description="UDP/TCP port of the nameservers.")
    timeout_s: float = Field(5.0, gt=0, description="Whole time allowed for one DNS lookup.")
    canaries: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CANARIES),
        description="Names that must resolve; a resolver denying them is not trusted. [] = off.",
    )
    nxdomain_zone: str = Field(
        "com",
        description="A random name under this zone must not exist; an answer for it is "
        "NXDOMAIN hijacking. '' = off.",
    )
    check_interval_s: float = Field(
        300.0, gt=0, description="How long a resolver check holds before it is asked again."
    )
    list_guard_min_domains: int = Field(
        50, ge=1, description="Distinct domains a run needs before the list guard judges it."
    )
    list_guard_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of a run's domains failing DNS the same way that makes those "
        "answers unknown/dns_error.",
    )


class SmtpSettings(_Section):
    """How, and how politely, the engine talks to mail servers."""

    port: int = Field(25, ge=1, le=65535, description="Port of the receiving mail servers.")
    connect_timeout_s: float = Field(10.0, gt=0, description="TCP connect (or SOCKS) only.")
    greeting_timeout_s: float = Field(
        60.0, gt=0, description="Wait for the 220 banner (RFC 5321 §4.5.3.2 says up to 5 min)."
    )
    command_timeout_s: float = Field(30.0, gt=0, description="Each reply after the banner.")
    session_timeout_s: float = Field(
        300.0, gt=0, description="Whole session, banner to last RCPT: a slow drip ends here."
    )
    starttls: Literal["opportunistic", "never"] = "opportunistic"
    allowed_private_networks: list[IPv4Network | IPv6Network] = Field(
        default_factory=list,
        description="Non-global networks the engine may still contact (tests, intranets).",
    )
    max_sessions_per_host: int = Field(2, ge=1, description="Concurrent sessions per MX IP.")
    max_sessions_per_domain: int = Field(
        4, ge=1, description="Concurrent sessions for one recipient domain, over all its MX."
    )
    max_sessions_per_registrable_domain: int = Field(
        8, ge=1, description="Concurrent sessions for all subdomains of one registrable domain."
    )
    max_rcpt_per_session: int = Field(20, ge=1, description="Recipients per SMTP session.")
    min_session_interval_ms: int = Field(0, ge=0, description="Pause between sessions per host.")
    source_addresses: list[str] = Field(
        default_factory=list, description="Local IPs to connect from, rotated; empty = any."
    )
    proxy: str | None = Field(None, description="socks5://user:pass@host:port, or none.")

    @field_validator("allowed_private_networks", mode="before")
    @classmethod
    def _networks_are_cidr(cls, value: Any) -> Any:
        """Parse each network here, so a typo gets one plain message instead of pydantic's
        account of every type in the union."""
        if not isinstance(value, list):
            return value
        networks = []
        for item in value:
            try:
                networks.append(ip_network(str(item)))
            except ValueError:
                raise ValueError(
                    f"{str(item)[:60]!r} is not a network: write it as 10.0.0.0/8 or fd00::/8 "
                    "(no host bits set after the prefix)"
                ) from None
        return networks

    @field_validator("proxy")
    @classmethod
    def _proxy_is_socks(cls, value: str | None) -> str | None:
        if value and not value.startswith(("socks5://", "socks4://", "socks5h://")):
            raise ValueError("must look like socks5://user:pass@host:port")
        return value or None


class GreylistSettings(_Section):
    """When greylisted addresses are tried again within one verification run."""

    retry_delays_s: list[float] = Field(
        default_factory=lambda: [60.0, 240.0],
        description="Waits before each retry; the server's own delay wins when it says one.",
    )
    max_wait_s: float = Field(
        360.0, ge=0, description="Give up (unknown/greylisted) after this long."
    )


class DeferralSettings(_Section):
    """How long one run waits out a server's pace (rate limits) before answering unknown."""

    max_wait_s: float = Field(
        600.0,
        ge=0,
        description="Longest wait for a rate-limited host, counted from the address's arrival.",
    )
    rate_window_s: float = Field(
        60.0, gt=0, description="Window of a host's per-time limits (Postfix anvil: 60 s)."
    )


class SyntaxSettings(_Section):
    """Which address forms are accepted."""

    allow_test_domains: bool = Field(
        False, description="Accept special-use names such as .test (test environments only)."
    )


#: A host name of letters, digits, hyphens and dots, or an address literal ([192.0.2.1]).
_HELO = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\.?|\[[0-9A-Fa-f:.]+\]")


def _default_helo() -> str:
    name = socket.getfqdn()
    return name if "." in name else "localhost.localdomain"


class EngineSettings(_Section):
    """Everything the verification engine needs to know; defaults work on a mail-capable host."""

    helo_hostname: str = Field(
        default_factory=_default_helo,
        description="Name sent in EHLO/HELO; should have matching forward and reverse DNS.",
    )
    mail_from: str = Field(
        "", description="Envelope sender for MAIL FROM; empty = postmaster@<helo_hostname>."
    )
    concurrency: int = Field(100, ge=1, description="Verifications in flight at once (global).")
    dns: DnsSettings = Field(default_factory=DnsSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    greylist: GreylistSettings = Field(default_factory=GreylistSettings)
    deferral: DeferralSettings = Field(default_factory=DeferralSettings)
    syntax: SyntaxSettings = Field(default_factory=SyntaxSettings)

    @field_validator("helo_hostname")
    @classmethod
    def _helo_is_ascii(cls, value: str) -> str:
        """Refuse a name EHLO cannot carry (RFC 5321 §4.1.1.1: a domain in ASCII, or an address
        literal), at load time rather than as internal_error on every verification."""
        if not value.isascii() or not _HELO.fullmatch(value):
            try:
                hint = f" (the ASCII form is {value.encode('idna').decode('ascii')})"
            except UnicodeError:
                hint = ""
            raise ValueError(f"must be an ASCII host name such as mx.example.com{hint}")
        return value

    @property
    def envelope_sender(self) -> str:
        """Return the MAIL FROM address actually used."""
        return self.mail_from or f"postmaster@{self.helo_hostname}"
