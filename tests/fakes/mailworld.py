"""A small mail world for end-to-end tests: DNS and SMTP on loopback serving a few domains.

Every address u<n>@d<k>.test is a mailbox except each tenth (n % 10 == 3), which the servers
reject with 550 5.1.1, so a sync's expected fields are known without asking the engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.fakes.dns import DnsServer, running_dns_server
from tests.fakes.smtp import ScriptedSmtp, running_smtp_server

DOMAINS = tuple(f"d{n}.test" for n in range(5))
MX_HOSTS = ("127.0.0.2", "127.0.0.3")


def address(n: int) -> str:
    return f"u{n}@{DOMAINS[n % len(DOMAINS)]}"


def expected_status(n: int) -> str:
    return "invalid" if n % 10 == 3 else "valid"  # every tenth mailbox does not exist


@dataclass
class World:
    """DNS and SMTP fakes serving DOMAINS, with every address but each tenth a mailbox."""

    dns: DnsServer
    smtp: ScriptedSmtp
    servers: tuple[ScriptedSmtp, ...]
    mailboxes: set[str]

    def engine(self) -> dict[str, Any]:
        return {
            "helo_hostname": "probe.test",
            "dns": self.dns.dns_settings(timeout_s=2.0),
            "smtp": {
                "port": self.smtp.port,
                "allowed_private_networks": ["127.0.0.0/8"],
                "max_rcpt_per_session": 100,
                "max_sessions_per_host": 4,
            },
            "syntax": {"allow_test_domains": True},
        }

    def rcpts(self, email: str) -> int:
        lines = [c for s in self.servers for r in s.sessions for c in r.commands]
        return sum(line.upper().startswith("RCPT") and f"<{email}>" in line for line in lines)


@contextmanager
def world(count: int) -> Iterator[World]:
    mailboxes = {address(n) for n in range(count + 50) if expected_status(n) == "valid"}
    servers = tuple(ScriptedSmtp(host, mailboxes=mailboxes) for host in MX_HOSTS)
    with running_dns_server() as dns, running_smtp_server(*servers) as smtp:
        for n, domain in enumerate(DOMAINS):
            dns.add_mx(domain, 10, f"mx.{domain}")
            dns.add(f"mx.{domain}", "A", MX_HOSTS[n % len(MX_HOSTS)])
        yield World(dns, smtp, servers, mailboxes)
