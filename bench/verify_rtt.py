"""Round trips per verification: elapsed time over the server's per-reply delay L.

Starts the fake DNS server and a ScriptedSmtp that delays every reply by L ms (threads on
loopback), verifies one address of its domain with a fresh Verifier, and prints elapsed / L next
to the round trips the protocol needs:

    connect + banner, EHLO, [STARTTLS, EHLO], MAIL FROM, RCPT (catch-all probe), RCPT, QUIT
    = 6 without TLS, 8 with TLS

A verifier that wastes round trips (RSET before QUIT, a second EHLO without TLS, waiting on
something it need not) shows up as a larger ratio. Exit status 1 when a row is off by more
than 0.5. The route is looked up before the clock starts (see _verify_once). Run from the
repository root: `python bench/verify_rtt.py [--latency-ms 50 100]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailprobe.engine import EngineSettings, Verifier  # noqa: E402

from tests.fakes.dns import DnsServer, running_dns_server  # noqa: E402
from tests.fakes.smtp import ScriptedSmtp, running_smtp_server  # noqa: E402

MX_IP = "127.0.0.2"
DOMAIN = "rtt.test"
ADDRESS = f"john@{DOMAIN}"
TOLERANCE = 0.5


def expected_round_trips(*, tls: bool) -> int:
    """Return the protocol's round trips for one address, with the catch-all probe."""
    steps = ["connect+banner", "EHLO", "MAIL", "RCPT probe", "RCPT", "QUIT"]
    if tls:
        steps[2:2] = ["STARTTLS", "EHLO again"]
    return len(steps)


@dataclass(frozen=True, slots=True)
class Row:
    """One measurement: the delay, TLS or not, what it took and what the protocol needs."""

    latency_ms: float
    tls: bool
    elapsed_ms: float
    dns_ms: float  # the cold route lookup, done before the clock started
    commands: tuple[str, ...]

    @property
    def ratio(self) -> float:
        return self.elapsed_ms / self.latency_ms

    @property
    def expected(self) -> int:
        return expected_round_trips(tls=self.tls)

    @property
    def ok(self) -> bool:
        return abs(self.ratio - self.expected) <= TOLERANCE


def _settings(dns: DnsServer, port: int) -> EngineSettings:
    return EngineSettings(
        helo_hostname="probe.rtt.test",
        mail_from="bounce@probe.rtt.test",
        dns=dns.dns_settings(timeout_s=5.0),
        smtp={"port": port, "allowed_private_networks": ["127.0.0.0/8"]},
        syntax={"allow_test_domains": True},
    )


async def _verify_once(settings: EngineSettings) -> tuple[float, float]:
    """Return (verification ms, DNS ms) for ADDRESS with a fresh verifier, DNS warmed first.

    The count is about SMTP: a cold lookup against the fake DNS (a Python thread) costs
    5-10 ms per query here, far more than a real resolver's cache, so the verifier's own route
    cache is filled before the clock starts (no catch-all answer is cached by this).
    """
    verifier = Verifier(settings)
    started = time.perf_counter()
    await verifier.route(DOMAIN)  # warm the route: DNS is not what this bench measures
    dns_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    result = await verifier.verify(ADDRESS)
    elapsed = (time.perf_counter() - started) * 1000
    if str(result.status) != "valid":
        raise SystemExit(f"expected a valid result, got {result.status}/{result.reason}")
    return elapsed, dns_ms


def measure(dns: DnsServer, latency_ms: float, *, tls: bool, repeat: int) -> Row:
    """Return the median of `repeat` verifications against a server delaying each reply."""
    server = ScriptedSmtp(MX_IP, tls=tls, latency_ms=latency_ms, mailboxes={ADDRESS})
    with running_smtp_server(server):
        settings = _settings(dns, server.port)
        runs = [asyncio.run(_verify_once(settings)) for _ in range(repeat)]
        commands = tuple(server.sessions[-1].verbs)
    if "DATA" in server.commands:
        raise SystemExit("the verifier sent DATA")
    elapsed = statistics.median(ms for ms, _ in runs)
    return Row(latency_ms, tls, elapsed, statistics.median(ms for _, ms in runs), commands)


def main(argv: list[str] | None = None) -> int:
    """Print the table; return 1 when a ratio is off the protocol's count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[50.0, 100.0])
    parser.add_argument("--repeat", type=int, default=3, help="Runs per row; the median counts.")
    args = parser.parse_args(argv)
    with running_dns_server() as dns:
        dns.add_mx(DOMAIN, 10, f"mx.{DOMAIN}")
        dns.add(f"mx.{DOMAIN}", "A", MX_IP)
        rows = [
            measure(dns, latency, tls=tls, repeat=args.repeat)
            for latency in args.latency_ms
            for tls in (False, True)
        ]
    print(
        f"{'L (ms)':>7} {'TLS':>4} {'elapsed (ms)':>13} {'elapsed/L':>10} {'expected':>9}"
        f" {'ok':>3}   {'cold DNS (ms), not counted':>26}"
    )
    for row in rows:
        print(
            f"{row.latency_ms:7.0f} {'yes' if row.tls else 'no':>4} {row.elapsed_ms:13.1f}"
            f" {row.ratio:10.2f} {row.expected:9d} {'yes' if row.ok else 'NO':>3}"
            f"   {row.dns_ms:26.1f}"
        )
    print("\nsession (last run):")
    for row in rows:
        print(
            f"  L={row.latency_ms:.0f} tls={'yes' if row.tls else 'no'}: {' '.join(row.commands)}"
        )
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
