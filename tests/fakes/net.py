"""A test's little internet: the fake DNS zone, SMTP servers on one port, a verifier aimed at them.

Owns `Net`, the `net` and `quick_backoff` fixtures and the checks every in-process engine test
repeats. It builds on tests/fakes/dns.py and tests/fakes/smtp.py and must not script servers
itself, nor know what any one test expects of the engine.

    (server,) = await net.serve(ScriptedSmtp(IP1, mailboxes={"john@acme.test"}))
    net.mx("acme.test", ("mx.acme.test", IP1))
    results = await verify_all(net.verifier(smtp={"max_sessions_per_host": 2}), emails)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import pytest
from mailprobe.engine import EngineSettings, VerificationResult, Verifier
from mailprobe.engine import throttle as throttle_module

from tests.fakes.dns import DnsServer
from tests.fakes.smtp import ScriptedSmtp, shared_port

IP1, IP2, IP3, IP4 = (f"127.0.0.{n}" for n in range(2, 6))
#: Short enough to keep a file fast, long enough for a loaded 2-core machine.
TIMEOUT_S = 0.4
#: The whole time for one DNS lookup; the fake answers at once unless told to drop.
DNS_TIMEOUT_S = 2.0


class Net:
    """A test's little internet: the fake DNS zone, SMTP servers on one port, a verifier."""

    def __init__(
        self,
        dns: DnsServer,
        start: Callable[..., Awaitable[int]],
        *,
        timeout_s: float = TIMEOUT_S,
        dns_timeout_s: float = DNS_TIMEOUT_S,
    ) -> None:
        self.dns = dns
        self._start = start
        self.port = 0
        self.timeout_s = timeout_s  # SMTP connect and command timeouts
        self.dns_timeout_s = dns_timeout_s

    async def serve(self, *servers: ScriptedSmtp) -> list[ScriptedSmtp]:
        """Start the servers on one port (the engine dials one port for every MX)."""
        self.port = await self._start(*servers)
        return list(servers)

    def idle_port(self, *hosts: str) -> None:
        """Pick a port nothing listens on, for tests whose MX hosts are all down."""
        self.port = shared_port(list(hosts))

    def mx(self, domain: str, *hosts: tuple[str, str], first: int = 10) -> None:
        """Declare MX records for `domain`, preference 10, 20... in the order given."""
        for rank, (name, ip) in enumerate(hosts):
            self.dns.add_mx(domain, first + 10 * rank, name)
            self.dns.add(name, "AAAA" if ":" in ip else "A", ip)

    def settings(self, **knobs: Any) -> EngineSettings:
        """Return engine settings aimed at this net, with its timeouts; knobs override."""
        if not self.port:  # no server in this test: any dial must find nothing listening
            self.idle_port(IP1, IP2, IP3)
        smtp = {
            "port": self.port,
            "connect_timeout_s": self.timeout_s,
            "greeting_timeout_s": self.timeout_s,
            "command_timeout_s": self.timeout_s,
            "allowed_private_networks": ["127.0.0.0/8", "::1/128"],
            **knobs.pop("smtp", {}),
        }
        greylist = {"retry_delays_s": [0.05], "max_wait_s": 5.0, **knobs.pop("greylist", {})}
        dns = self.dns.dns_settings(timeout_s=knobs.pop("dns_timeout_s", self.dns_timeout_s))
        return EngineSettings(
            helo_hostname="probe.example.test",
            mail_from="bounce@probe.example.test",
            dns=dns,
            smtp=smtp,
            greylist=greylist,
            syntax={"allow_test_domains": True},
            **knobs,
        )

    def verifier(self, *, role_is_risky: bool = False, **knobs: Any) -> Verifier:
        """Return a verifier for this net."""
        return Verifier(self.settings(**knobs), role_is_risky=role_is_risky)


@pytest.fixture
async def net(
    dns_server: DnsServer, smtp_servers: Callable[..., Awaitable[int]]
) -> AsyncIterator[Net]:
    """Yield a fresh Net: its own DNS server and SMTP servers, stopped after the test."""
    yield Net(dns_server, smtp_servers)


@pytest.fixture
def backoff_first_s() -> float:
    """Return the first per-host back-off quick_backoff sets; a module overrides it to taste."""
    return 0.01


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch, backoff_first_s: float) -> None:
    """Shrink the per-host back-off (seconds in production) so 421s do not slow a file.

    Not autouse: a module opts in with `pytestmark = pytest.mark.usefixtures("quick_backoff")`.
    """
    monkeypatch.setattr(throttle_module, "BACKOFF_FIRST_S", backoff_first_s)


async def verify_all(verifier: Verifier, emails: list[str]) -> list[VerificationResult]:
    """Return verify_many's results in completion order."""
    return [result async for result in verifier.verify_many(emails)]


def assert_no_message_sent(servers: Iterable[ScriptedSmtp]) -> None:
    """Fail if any server received DATA or BDAT: the engine asks, it never sends a message."""
    for server in servers:
        assert "DATA" not in server.commands, f"DATA sent to {server.host}"
        assert "BDAT" not in server.commands, f"BDAT sent to {server.host}"
