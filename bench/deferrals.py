"""Deferred answers against scripted servers: accuracy, wall time next to the bound, violations.

Each scenario starts, in threads (127.0.21.x only), a fake DNS server and scripted SMTP hosts,
runs the engine (`Verifier.verify_many`, the path of `mailprobe verify`, the API's batch and
daemon passes) with the documented defaults plus the overrides printed with it, and prints:
accuracy against the farm's truth, wall time against the lower bound (the waits the servers
impose plus their round trips; formula printed), and the limit refusals provoked.

    greylist     postgrey-like, no stated delay, clears 10 s after the first try; greylist
                 waits shortened to [5, 5, 10, 30] s (the defaults are 60/240 s)
    rate         anvil-like recipient rate limit, 20 per window; the window shortened from
                 60 s to 10 s on both sides (deferral.rate_window_s) to keep the bench short
    greeting     every session's banner comes after 20 s, beside a prompt domain
    slow-drip    one host answers every command after 2 s, beside 20 prompt domains: how much
                 later the prompt domains finish than without it (target: < one round trip)
    big-domain   1,200 addresses of one domain on two equal-preference MX hosts

    python bench/deferrals.py [--only greylist,rate,...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailprobe.engine import EngineSettings, VerificationResult, Verifier  # noqa: E402

from tests.fakes.dns import DnsServer, running_dns_server  # noqa: E402
from tests.fakes.smtp import (  # noqa: E402
    AnvilSmtp,
    Misbehave,
    PostgreySmtp,
    ScriptedSmtp,
    Trick,
    running_smtp_server,
)

NET = "127.0.21"
LATENCY_MS = 20
#: Round trips a session costs besides its RCPTs: connect + banner, EHLO, MAIL FROM, QUIT.
FIXED_ROUND_TRIPS = 4
RCPT_PER_SESSION = 20  # the default max_rcpt_per_session
SESSIONS_PER_HOST = 2  # the default max_sessions_per_host
MAX_RATIO = 1.3
LIMIT_WORDS = ("too many connections", "too many recipients", "too many errors")


@dataclass
class Scenario:
    """One farm, the addresses with their truth, and the bound the servers impose."""

    name: str
    servers: list[ScriptedSmtp]
    mx: dict[str, list[tuple[int, str, str]]]  # domain -> (preference, host name, ip)
    truth: dict[str, str]  # address -> expected status
    bound_s: float
    formula: str
    knobs: dict[str, Any] = field(default_factory=dict)
    #: Addresses whose completion is compared with a run without the slow host.
    watched: set[str] = field(default_factory=set)


def _ip(n: int) -> str:
    return f"{NET}.{n}"


def _session_s(rcpts: int, latency_ms: float = LATENCY_MS) -> float:
    return (FIXED_ROUND_TRIPS + rcpts) * latency_ms / 1000


def _people(domain: str, count: int) -> dict[str, str]:
    """Return `count` addresses at `domain`, every third one without a mailbox."""
    return {f"user{n}@{domain}": "invalid" if n % 3 == 2 else "valid" for n in range(count)}


def _valid(truth: dict[str, str]) -> set[str]:
    return {email for email, status in truth.items() if status == "valid"}


def greylist() -> Scenario:
    truth = _people("grey.test", 200)
    server = PostgreySmtp(_ip(2), delay_s=10.0, mailboxes=_valid(truth), latency_ms=LATENCY_MS)
    sessions = math.ceil(math.ceil((len(truth) + 1) / RCPT_PER_SESSION) / SESSIONS_PER_HOST)
    bound = 10.0 + sessions * _session_s(RCPT_PER_SESSION)
    return Scenario(
        "greylist", [server], {"grey.test": [(10, "mx.grey.test", _ip(2))]}, truth, bound,
        "10 s greylist delay + one pass of sessions after it",
        knobs={"greylist": {"retry_delays_s": [5, 5, 10, 30], "max_wait_s": 90}},
    )  # fmt: skip


def rate() -> Scenario:
    truth = _people("paced.test", 60)
    server = AnvilSmtp(
        _ip(3), window_s=10.0, rcpt_rate=20, mailboxes=_valid(truth), latency_ms=LATENCY_MS
    )
    windows = math.ceil((len(truth) + 1) / 20)
    bound = (windows - 1) * 10.0 + _session_s(RCPT_PER_SESSION)
    return Scenario(
        "rate", [server], {"paced.test": [(10, "mx.paced.test", _ip(3))]}, truth, bound,
        f"({windows} windows of 20 recipients - 1) x 10 s + one session",
        knobs={"deferral": {"rate_window_s": 10.0}},
    )  # fmt: skip


def greeting() -> Scenario:
    slow_truth, fast_truth = _people("slowgreet.test", 30), _people("prompt.test", 30)
    slow = ScriptedSmtp(
        _ip(4), mailboxes=_valid(slow_truth), latency_ms=LATENCY_MS,
        misbehave=[Misbehave("BANNER", Trick.DELAY, delay_s=20.0)],
    )  # fmt: skip
    fast = ScriptedSmtp(_ip(5), mailboxes=_valid(fast_truth), latency_ms=LATENCY_MS)
    mx = {
        "slowgreet.test": [(10, "mx.slowgreet.test", _ip(4))],
        "prompt.test": [(10, "mx.prompt.test", _ip(5))],
    }
    bound = 20.0 + _session_s(RCPT_PER_SESSION)
    return Scenario(
        "greeting", [slow, fast], mx, slow_truth | fast_truth, bound,
        "20 s banner + one session (31 RCPTs fit two parallel sessions)",
    )  # fmt: skip


def slow_drip(*, with_drip: bool = True) -> Scenario:
    truth: dict[str, str] = {}
    mx: dict[str, list[tuple[int, str, str]]] = {}
    servers: list[ScriptedSmtp] = []
    for n in range(20):
        domain = f"prompt{n}.test"
        people = _people(domain, 10)
        truth |= people
        host = _ip(10 + n % 4)
        mx[domain] = [(10, f"mx{n % 4}.farm.test", host)]
    for k in range(4):
        servers.append(ScriptedSmtp(_ip(10 + k), mailboxes=_valid(truth), latency_ms=LATENCY_MS))
    watched = set(truth)
    drip_truth = _people("drip.test", 5)
    if with_drip:
        truth |= drip_truth
        mx["drip.test"] = [(10, "mx.drip.test", _ip(20))]
        servers.append(ScriptedSmtp(_ip(20), mailboxes=_valid(drip_truth), latency_ms=2000))
    # The drip host: banner, EHLO, MAIL and 6 RCPTs of 2 s (its QUIT reply is not waited for).
    bound = 9 * 2.0 if with_drip else _session_s(11 * 5 // 2)
    return Scenario(
        "slow-drip" if with_drip else "slow-drip-baseline", servers, mx, truth, bound,
        "the drip host's own 9 round trips of 2 s" if with_drip else "prompt domains alone",
        watched=watched,
    )  # fmt: skip


def big_domain() -> Scenario:
    truth = _people("big.test", 1200)
    servers = [ScriptedSmtp(_ip(n), mailboxes=_valid(truth), latency_ms=LATENCY_MS) for n in (6, 7)]
    mx = {"big.test": [(10, "mx1.big.test", _ip(6)), (10, "mx2.big.test", _ip(7))]}
    rcpts = len(truth) + 2  # a catch-all probe per MX host
    rounds = math.ceil(rcpts / RCPT_PER_SESSION / (2 * SESSIONS_PER_HOST))
    bound = rounds * _session_s(RCPT_PER_SESSION)
    return Scenario(
        "big-domain", servers, mx, truth, bound,
        f"{rounds} rounds of 4 parallel sessions (2 hosts x 2) of 20 RCPTs",
    )  # fmt: skip


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "greylist": greylist,
    "rate": rate,
    "greeting": greeting,
    "slow-drip": slow_drip,
    "big-domain": big_domain,
}


@contextlib.contextmanager
def running(scenario: Scenario) -> Iterator[tuple[DnsServer, int]]:
    """Yield the DNS server and the SMTP port of the scenario's farm, run in threads."""
    with (
        running_dns_server(host=f"{NET}.250") as dns,
        running_smtp_server(*scenario.servers) as first,
    ):
        for domain, hosts in scenario.mx.items():
            for preference, name, ip in hosts:
                dns.add_mx(domain, preference, name)
                dns.add(name, "A", ip)
        yield dns, first.port


def settings(scenario: Scenario, dns: DnsServer, port: int) -> EngineSettings:
    """Return the documented defaults, aimed at the farm, with the scenario's overrides."""
    knobs = dict(scenario.knobs)
    return EngineSettings(
        helo_hostname="probe.bench.test",
        mail_from="bounce@probe.bench.test",
        dns=dns.dns_settings(timeout_s=5.0),
        smtp={"port": port, "allowed_private_networks": ["127.0.0.0/8"]},
        syntax={"allow_test_domains": True},
        **knobs,
    )


@dataclass
class Outcome:
    wall_s: float
    accuracy: float
    wrong: list[str]
    violations: int
    crowded: int
    done_at: dict[str, float]  # address -> seconds from the start when its result came


async def _verify(verifier: Verifier, emails: list[str]) -> tuple[list[VerificationResult], dict]:
    started = time.perf_counter()
    results, done_at = [], {}
    async for result in verifier.verify_many(emails):
        results.append(result)
        done_at[result.email] = time.perf_counter() - started
    return results, done_at


def run(scenario: Scenario) -> Outcome:
    """Run the engine over the scenario's addresses and compare with the truth."""
    with running(scenario) as (dns, port):
        verifier = Verifier(settings(scenario, dns, port))
        started = time.perf_counter()
        results, done_at = asyncio.run(_verify(verifier, list(scenario.truth)))
        wall = time.perf_counter() - started
    wrong = [
        f"{r.email}: {r.status}/{r.reason} (truth {scenario.truth[r.email]})"
        for r in results
        if str(r.status) != scenario.truth[r.email]
    ]
    replies = [reply for s in scenario.servers for rec in s.sessions for reply in rec.replies]
    violations = sum(any(w in reply.lower() for w in LIMIT_WORDS) for reply in replies)
    crowded = sum("too many connections" in reply.lower() for reply in replies)
    accuracy = 100 * (len(results) - len(wrong)) / len(scenario.truth)
    return Outcome(wall, accuracy, wrong, violations, crowded, done_at)


def report(scenario: Scenario, outcome: Outcome, extra: str = "") -> bool:
    """Print one scenario's figures; return whether it met its targets."""
    ratio = outcome.wall_s / scenario.bound_s
    ok = outcome.accuracy == 100 and ratio <= MAX_RATIO and outcome.crowded == 0
    print(
        f"{scenario.name:<11} {len(scenario.truth):>5} addresses  accuracy {outcome.accuracy:6.2f}%"
        f"  wall {outcome.wall_s:6.2f} s  bound {scenario.bound_s:6.2f} s  ratio {ratio:4.2f}"
        f"  limit refusals {outcome.violations} (too many connections {outcome.crowded})"
        f"  {'ok' if ok else 'MISSED'}"
    )
    print(f"{'':<11} bound: {scenario.formula}{extra}")
    for line in outcome.wrong[:5]:
        print(f"{'':<11} wrong: {line}")
    return ok


def drip_delay(repeats: int = 3) -> bool:
    """Run the prompt domains with and without the slow-drip host; report the delay it adds.

    The median of `repeats` runs each: on a shared machine two runs differ by tens of ms.
    """
    alone = [run(slow_drip(with_drip=False)) for _ in range(repeats)]
    scenario = slow_drip()
    runs = [run(slow_drip()) for _ in range(repeats)]
    # When the last prompt address was answered, with the drip host and without it.
    finish_alone = statistics.median(max(o.done_at.values()) for o in alone)
    finish = statistics.median(max(o.done_at[e] for e in scenario.watched) for o in runs)
    later = finish - finish_alone
    outcome = runs[len(runs) // 2]
    rtt_s = LATENCY_MS / 1000
    extra = f"; prompt domains finish {later * 1000:+.0f} ms vs alone (median of {repeats})"
    ok = report(scenario, outcome, extra)
    verdict = "ok" if later <= rtt_s else "MISSED"
    print(f"{'':<11} one round trip = {rtt_s * 1000:.0f} ms: {verdict}")
    return ok and later <= rtt_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios, comma-separated")
    names = parser.parse_args(argv).only.split(",")
    # The farm hangs up on the drip host's last sessions when it stops: not the engine's doing.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    ok = True
    for name in names:
        if name == "slow-drip":
            ok &= drip_delay()
        else:
            scenario = SCENARIOS[name]()
            ok &= report(scenario, run(scenario))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
