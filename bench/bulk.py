"""Bulk verification against a local server farm: wall time next to the farm's lower bound.

Starts, in this process (threads, own event loops, 127.0.20.x only), a fake DNS server and a
farm of scripted SMTP servers on one port: several MX hosts, each serving many domains (as
Google Workspace serves many), each with its own per-reply latency, a concurrent-session limit
that answers 421 beyond it (equal to the engine's max_sessions_per_host, so a polite client
never sees it), on some hosts a per-session recipient limit below the engine's (452 beyond it)
or an error limit that hangs up (Postfix smtpd_hard_error_limit); domains that greylist for a
short time, catch-all domains, and addresses with invalid syntax, NXDOMAIN and null MX domains.
It generates N addresses with a known answer each, writes them to a CSV, runs
`mailprobe verify --file in.csv --format csv --quiet` as a subprocess pointed at the farm, and
prints wall time, the farm's lower bound (formula printed with it), their ratio, sessions
opened, recipients per session, limit violations provoked, accuracy over every row, and the
subprocess's peak RSS. Exit status 1 when a target is missed. Bounded in time: the subprocess
is killed after a generous multiple of the lower bound.

Per-reply latency is drawn per host from 10-30 ms by default. Real MX hosts take 30-300 ms a
reply; on a shared 2-core machine each round trip also costs ~1-3 ms of Python and scheduling
in the client and in the farm itself, which the bound (latency only) does not count, so very
short latencies measure that overhead more than the scheduling. `--latency-ms 5,20` runs the
harsher farm.

    python bench/bulk.py [--sizes 10000,100000] [--seed 7] [--latency-ms 10,30]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.dns import CANARY, DnsServer, running_dns_server  # noqa: E402
from tests.fakes.smtp import ScriptedSmtp, SessionRecord, running_smtp_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NET = "127.0.20"
#: The engine's politeness settings for the run; the farm's session limit equals the first.
SESSIONS_PER_HOST = 2
RCPT_PER_SESSION = 20
#: Round trips every session costs besides its RCPTs: connect + banner, EHLO, MAIL FROM, QUIT.
FIXED_ROUND_TRIPS = 4
#: Targets (issue 3).
MAX_RATIO_AT_10K = 1.3
MAX_RSS_MB_AT_100K = 200.0

TOO_MANY_CONNECTIONS = "too many connections"
TOO_MANY_RECIPIENTS = "too many recipients"
TOO_MANY_ERRORS = "too many errors"


class Kind(StrEnum):
    """What a domain of the farm does with recipients."""

    NORMAL = "normal"  # listed mailboxes 250, others 550 5.1.1
    CATCH_ALL = "catch_all"  # 250 to everyone
    GREYLIST = "greylist"  # 451 4.7.1 until greylist_s after a recipient's first try


@dataclass(frozen=True, slots=True)
class Host:
    """One MX address of the farm and its limits."""

    ip: str
    name: str
    latency_ms: float
    max_rcpt: int | None  # 452 beyond this many recipients per session
    hard_error_limit: int | None  # 421 and hang up after this many rejected commands

    def session_cap(self) -> int:
        """Return the most recipients one polite session can carry on this host.

        A client cannot know beforehand which recipients will be rejected, and a host with an
        error limit E hangs up once a session has had E rejections (Postfix answers even the
        QUIT with 421 then): so at most E - 1 recipients per session there.
        """
        error_cap = self.hard_error_limit - 1 if self.hard_error_limit is not None else None
        limits = [RCPT_PER_SESSION, self.max_rcpt, error_cap]
        return min(limit for limit in limits if limit is not None)


@dataclass(frozen=True, slots=True)
class Domain:
    """One domain whose MX is one farm host."""

    name: str
    host: int  # index into Farm.hosts
    kind: Kind
    weight: float  # share of the generated addresses


@dataclass(slots=True)
class Farm:
    """The whole farm: hosts, mail domains, and domains that take no mail."""

    hosts: list[Host]
    domains: list[Domain]
    nxdomains: list[str]
    null_mx: list[str]
    greylist_s: float


@dataclass(frozen=True, slots=True)
class Row:
    """One generated input row and its known answer."""

    id: int
    email: str
    status: str
    reason: str
    domain: int | None  # index into Farm.domains when the address needs SMTP


def plan_farm(
    rng: random.Random,
    *,
    hosts: int,
    domains: int,
    greylist_s: float,
    latency_ms: tuple[int, int] = (10, 30),
) -> Farm:
    """Return a farm: hosts with mixed latencies and limits, domains spread unevenly over them."""
    farm_hosts = [
        Host(
            ip=f"{NET}.{index + 1}",
            name=f"mx{index + 1}.farm.test",
            latency_ms=float(rng.randint(*latency_ms)),
            max_rcpt=10 if index % 4 == 1 else None,  # below the engine's 20: learnt from 452
            hard_error_limit=6 if index % 5 == 3 else None,  # hangs up after 6 rejections
        )
        for index in range(hosts)
    ]
    host_weights = [rng.uniform(0.5, 2.0) for _ in farm_hosts]
    kinds = [Kind.CATCH_ALL] * 8 + [Kind.GREYLIST] * 4 + [Kind.NORMAL] * 88
    farm_domains = [
        Domain(
            # Distinct registrable domains, as distinct customers have: subdomains of one
            # share engine.smtp.max_sessions_per_registrable_domain.
            name=f"d{index:04d}-farm.test",
            host=rng.choices(range(hosts), weights=host_weights)[0],
            kind=rng.choice(kinds),
            weight=1 / (1 + index % 50) ** 0.7,  # a few big domains, a long tail of small ones
        )
        for index in range(domains)
    ]
    return Farm(
        hosts=farm_hosts,
        domains=farm_domains,
        nxdomains=[f"gone{index}.farm.test" for index in range(20)],
        null_mx=[f"nomail{index}.farm.test" for index in range(5)],
        greylist_s=greylist_s,
    )


def generate(rng: random.Random, farm: Farm, count: int) -> list[Row]:
    """Return `count` rows: about 4 % bad syntax, 4 % NXDOMAIN, 2 % null MX, 1 % duplicates."""
    rows: list[Row] = []
    weights = [domain.weight for domain in farm.domains]
    for index in range(count):
        draw = rng.random()
        if draw < 0.04:
            email = f"user{index}@@{farm.domains[0].name}"
            row = Row(index, email, "invalid", "invalid_syntax", None)
        elif draw < 0.08:
            email = f"u{index}@{rng.choice(farm.nxdomains)}"
            row = Row(index, email, "invalid", "domain_not_found", None)
        elif draw < 0.10:
            row = Row(index, f"u{index}@{rng.choice(farm.null_mx)}", "invalid", "null_mx", None)
        elif draw < 0.11 and rows:
            earlier = rng.choice(rows)
            row = Row(index, earlier.email, earlier.status, earlier.reason, earlier.domain)
        else:
            which = rng.choices(range(len(farm.domains)), weights=weights)[0]
            row = _mail_row(rng, farm.domains[which], which, index)
        rows.append(row)
    return rows


def _mail_row(rng: random.Random, domain: Domain, which: int, index: int) -> Row:
    email = f"u{index}@{domain.name}"
    if domain.kind is Kind.CATCH_ALL:
        return Row(index, email, "catch_all", "accept_all", which)
    if rng.random() < 0.6:
        return Row(index, email, "valid", "accepted", which)
    return Row(index, email, "invalid", "mailbox_not_found", which)


# The lower bound -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostBound:
    """The least work one host needs for the generated rows, at its concurrency limit."""

    host: Host
    domains: int
    recipients: int  # RCPTs: each unique address, one catch-all probe per domain; x2 greylisted
    sessions: int  # per domain ceil(recipients / session cap); x2 for greylisting domains

    @property
    def round_trips(self) -> int:
        return self.sessions * FIXED_ROUND_TRIPS + self.recipients

    @property
    def seconds(self) -> float:
        return self.round_trips * self.host.latency_ms / 1000 / SESSIONS_PER_HOST


@dataclass(frozen=True, slots=True)
class Bound:
    """The farm's lower bound: the busiest host's work, plus the greylist wait."""

    hosts: list[HostBound]
    greylist_s: float

    @property
    def seconds(self) -> float:
        return max(host.seconds for host in self.hosts) + self.greylist_s

    FORMULA = """per host: round trips = sum over its domains of
      sessions x 4 (connect+banner, EHLO, MAIL, QUIT) + recipients,
    recipients = each unique address + 1 catch-all probe per domain (greylisting domains: x2),
    sessions = ceil(recipients / cap), cap = min(engine's 20, host's RCPT limit, host's error
      limit - 1: a client cannot know which recipients a server will reject),
    time = round trips x the host's latency / its 2 concurrent sessions.
  bound = max over hosts + the greylist wait (the last greylisted addresses are read near the
    end of the input, and cannot be answered before the server's delay has passed)."""


def lower_bound(farm: Farm, rows: list[Row]) -> Bound:
    """Return the bound for these rows on this farm (see Bound.FORMULA)."""
    unique: dict[int, set[str]] = defaultdict(set)
    for row in rows:
        if row.domain is not None:
            unique[row.domain].add(row.email)
    totals: dict[int, list[int]] = {index: [0, 0, 0] for index in range(len(farm.hosts))}
    for which, emails in unique.items():
        domain = farm.domains[which]
        cap = farm.hosts[domain.host].session_cap()
        recipients = len(emails) + 1
        sessions = math.ceil(recipients / cap)
        times = 2 if domain.kind is Kind.GREYLIST else 1
        total = totals[domain.host]
        total[0] += 1
        total[1] += recipients * times
        total[2] += sessions * times
    hosts = [HostBound(farm.hosts[i], *totals[i]) for i in range(len(farm.hosts))]
    greylisted = any(farm.domains[which].kind is Kind.GREYLIST for which in unique)
    return Bound(hosts, farm.greylist_s if greylisted else 0.0)


# The farm --------------------------------------------------------------------------------------


class FarmSmtp(ScriptedSmtp):
    """One farm host: answers each recipient as its domain's kind says."""

    def __init__(
        self, host: Host, *, kinds: dict[str, Kind], mailboxes: set[str], greylist_s: float
    ) -> None:
        super().__init__(
            host.ip,
            hostname=host.name,
            mailboxes=mailboxes,
            latency_ms=host.latency_ms,
            max_sessions=SESSIONS_PER_HOST,
            max_rcpt=host.max_rcpt,
            hard_error_limit=host.hard_error_limit,
        )
        self.kinds = kinds
        self.greylist_s = greylist_s
        self._first_try: dict[tuple[str, str], float] = {}

    def rcpt_reply(self, record: SessionRecord, recipient: str) -> str:
        kind = self.kinds.get(recipient.rpartition("@")[2].lower(), Kind.NORMAL)
        if kind is Kind.CATCH_ALL:
            return "250 2.1.5 Ok"
        if kind is Kind.GREYLIST:
            # Postgrey-style: greylisted until greylist_s after the first try of this triplet.
            first = self._first_try.setdefault((record.client_ip, recipient.lower()), _now())
            if _now() - first < self.greylist_s:
                return f"451 4.7.1 <{recipient}>: Recipient address rejected: Greylisted"
        return super().rcpt_reply(record, recipient)


def _now() -> float:
    return time.monotonic()


@contextlib.contextmanager
def running_farm(farm: Farm, rows: list[Row]) -> Iterator[tuple[DnsServer, list[FarmSmtp]]]:
    """Yield the DNS server and the SMTP hosts, serving `rows`' truth, in threads."""
    kinds_by_host: list[dict[str, Kind]] = [{} for _ in farm.hosts]
    for domain in farm.domains:
        kinds_by_host[domain.host][domain.name] = domain.kind
    mailboxes: list[set[str]] = [set() for _ in farm.hosts]
    for row in rows:
        if row.domain is not None and row.status == "valid":
            mailboxes[farm.domains[row.domain].host].add(row.email)
    servers = [
        FarmSmtp(host, kinds=kinds_by_host[i], mailboxes=mailboxes[i], greylist_s=farm.greylist_s)
        for i, host in enumerate(farm.hosts)
    ]
    with running_dns_server(host=f"{NET}.250") as dns, running_smtp_server(*servers):
        for host in farm.hosts:
            dns.add(host.name, "A", host.ip)
        for domain in farm.domains:
            dns.add_mx(domain.name, 10, farm.hosts[domain.host].name)
        for name in farm.null_mx:
            dns.add_mx(name, 0, ".")
        yield dns, servers


# Running the CLI -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """One `mailprobe verify` run: how long, how much memory, how it ended."""

    wall_s: float
    peak_rss_mb: float
    cpu_s: float  # the subprocess's user + system CPU time
    returncode: int
    stderr: str


def _env(dns: DnsServer, port: int, greylist_s: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPROBE_")}
    env.update(
        PYTHONPATH=str(ROOT),
        MAILPROBE_ENGINE__HELO_HOSTNAME="probe.bench.test",
        MAILPROBE_ENGINE__MAIL_FROM="bounce@probe.bench.test",
        MAILPROBE_ENGINE__DNS__NAMESERVERS=json.dumps([dns.host]),
        MAILPROBE_ENGINE__DNS__PORT=str(dns.port),
        MAILPROBE_ENGINE__DNS__TIMEOUT_S="5",
        # The farm's resolver check: its own canary, and made-up names under .test.
        MAILPROBE_ENGINE__DNS__CANARIES=json.dumps([CANARY]),
        MAILPROBE_ENGINE__DNS__NXDOMAIN_ZONE="test",
        MAILPROBE_ENGINE__SMTP__PORT=str(port),
        MAILPROBE_ENGINE__SMTP__CONNECT_TIMEOUT_S="10",
        MAILPROBE_ENGINE__SMTP__COMMAND_TIMEOUT_S="10",
        MAILPROBE_ENGINE__SMTP__ALLOWED_PRIVATE_NETWORKS='["127.0.0.0/8"]',
        MAILPROBE_ENGINE__SMTP__MAX_SESSIONS_PER_HOST=str(SESSIONS_PER_HOST),
        MAILPROBE_ENGINE__SMTP__MAX_RCPT_PER_SESSION=str(RCPT_PER_SESSION),
        MAILPROBE_ENGINE__GREYLIST__RETRY_DELAYS_S=json.dumps([greylist_s]),
        MAILPROBE_ENGINE__GREYLIST__MAX_WAIT_S="60",
        MAILPROBE_ENGINE__SYNTAX__ALLOW_TEST_DOMAINS="true",
        MAILPROBE_LOG__LEVEL="WARNING",
    )
    return env


def _command(profile: Path | None = None) -> list[str]:
    if profile is not None:
        return [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "mailprobe.cli"]
    script = Path(sys.executable).with_name("mailprobe")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from mailprobe.cli import main; main(prog_name='mailprobe')"]


def run_cli(
    workdir: Path, env: dict[str, str], *, timeout_s: float, profile: Path | None = None
) -> Run:
    """Run the verify command over workdir/in.csv into out.csv; kill it after timeout_s."""
    args = ["verify", "--file", "in.csv", "--format", "csv", "--quiet"]
    with open(workdir / "out.csv", "w") as out, open(workdir / "err.txt", "w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen(
            [*_command(profile), *args], stdout=out, stderr=err, env=env, cwd=workdir
        )
        process = psutil.Process(child.pid)
        polled = 0
        while True:
            # wait4 (not Popen.wait) returns this child's own rusage: its exact peak RSS.
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            with contextlib.suppress(psutil.Error):
                polled = max(polled, process.memory_info().rss)
            if time.perf_counter() - started > timeout_s:
                child.kill()
            time.sleep(0.02)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    peak = max(polled, usage.ru_maxrss * 1024)  # ru_maxrss is in KiB on Linux
    cpu = usage.ru_utime + usage.ru_stime
    return Run(wall, peak / 2**20, cpu, child.returncode, stderr)


# Checking and reporting ------------------------------------------------------------------------


@dataclass(slots=True)
class Accuracy:
    """Every output row compared with the truth, in input order."""

    rows: int = 0
    right: int = 0
    out_of_order: int = 0
    wrong: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def percent(self) -> float:
        return 100 * self.right / self.rows if self.rows else 0.0


def check(rows: list[Row], output: Path) -> Accuracy:
    """Return how many output rows carry the right status and reason, in the right place."""
    accuracy = Accuracy(rows=len(rows))
    with open(output, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        for row, got in zip(rows, reader, strict=False):
            if got["id"] != str(row.id) or got["email"] != row.email:
                accuracy.out_of_order += 1
                continue
            answer = (got["mailprobe_status"], got["mailprobe_reason"])
            if answer == (row.status, row.reason):
                accuracy.right += 1
            else:
                accuracy.wrong[(f"{row.status}/{row.reason}", "/".join(answer))] += 1
    return accuracy


@dataclass(frozen=True, slots=True)
class Traffic:
    """What the farm saw."""

    sessions: int
    rcpts: int
    sessions_with_rcpt: int
    peak_concurrent: int
    violations: dict[str, int]
    per_host_sessions: list[int]


def traffic(servers: list[FarmSmtp]) -> Traffic:
    """Return the farm's counts: sessions, RCPTs, limit replies."""
    violations = dict.fromkeys((TOO_MANY_CONNECTIONS, TOO_MANY_RECIPIENTS, TOO_MANY_ERRORS), 0)
    rcpts = with_rcpt = 0
    for server in servers:
        for record in server.sessions:
            count = record.verbs.count("RCPT")
            rcpts += count
            with_rcpt += bool(count)
            for reply in record.replies:
                for words in violations:
                    violations[words] += words in reply
    return Traffic(
        sessions=sum(server.session_count for server in servers),
        rcpts=rcpts,
        sessions_with_rcpt=with_rcpt,
        peak_concurrent=max(server.max_concurrent for server in servers),
        violations=violations,
        per_host_sessions=[server.session_count for server in servers],
    )


def report(
    size: int, bound: Bound, run: Run, seen: Traffic, accuracy: Accuracy, *, farm_cpu_s: float
) -> list[str]:
    """Print the figures for one size; return the targets missed."""
    ratio = run.wall_s / bound.seconds
    print(f"\n== {size:,} addresses ==")
    print(f"  wall time                  {run.wall_s:8.2f} s   (exit {run.returncode})")
    print(f"  lower bound                {bound.seconds:8.2f} s")
    print(f"  ratio                      {ratio:8.2f}     (target <= {MAX_RATIO_AT_10K} at 10,000)")
    print(f"  sessions opened            {seen.sessions:8d}     (bound: {_bound_sessions(bound)})")
    mean = seen.rcpts / seen.sessions_with_rcpt if seen.sessions_with_rcpt else 0
    print(f"  recipients per session     {mean:8.2f}     ({seen.rcpts} RCPTs)")
    print(f"  peak sessions on one host  {seen.peak_concurrent:8d}     (limit {SESSIONS_PER_HOST})")
    for words, count in seen.violations.items():
        print(f"  {'421' if words != TOO_MANY_RECIPIENTS else '452'} {words:<23}{count:8d}")
    print(
        f"  accuracy                   {accuracy.percent:8.2f} %   "
        f"({accuracy.right}/{accuracy.rows} rows; {accuracy.out_of_order} out of order)"
    )
    for (expected, got), count in accuracy.wrong.most_common(8):
        print(f"      expected {expected:<28} got {got:<28} x{count}")
    print(f"  peak RSS                   {run.peak_rss_mb:8.1f} MB")
    print(f"  CPU: mailprobe {run.cpu_s:.1f} s, farm (DNS + SMTP threads) {farm_cpu_s:.1f} s")
    print("  per host: ip latency cap domains recipients sessions(bound/seen) bound_s")
    for hb, seen_sessions in zip(bound.hosts, seen.per_host_sessions, strict=True):
        print(
            f"    {hb.host.ip:<12} {hb.host.latency_ms:4.0f}ms {hb.host.session_cap():3d}"
            f" {hb.domains:4d} {hb.recipients:7d} {hb.sessions:6d}/{seen_sessions:<6d}"
            f" {hb.seconds:7.2f}"
        )
    missed = []
    if run.returncode != 0:
        missed.append(f"{size}: exit status {run.returncode}: {run.stderr.strip()[-500:]}")
    if size <= 10_000 and ratio > MAX_RATIO_AT_10K:
        missed.append(f"{size}: ratio {ratio:.2f} > {MAX_RATIO_AT_10K}")
    if seen.violations[TOO_MANY_CONNECTIONS]:
        missed.append(f"{size}: {seen.violations[TOO_MANY_CONNECTIONS]} too-many-connections")
    if accuracy.right != accuracy.rows:
        missed.append(f"{size}: accuracy {accuracy.percent:.2f} %")
    if size >= 100_000 and run.peak_rss_mb >= MAX_RSS_MB_AT_100K:
        missed.append(f"{size}: peak RSS {run.peak_rss_mb:.0f} MB")
    return missed


def _bound_sessions(bound: Bound) -> int:
    return sum(host.sessions for host in bound.hosts)


@dataclass(frozen=True, slots=True)
class Options:
    """How the farm is built and the run observed (the command line's options)."""

    seed: int = 7
    hosts: int = 12
    domains: int = 400
    greylist_s: float = 1.5
    latency_ms: tuple[int, int] = (10, 30)
    profile: Path | None = None


def bench(size: int, options: Options) -> list[str]:
    """Run one size end to end; return the targets it missed."""
    rng = random.Random(options.seed)
    farm = plan_farm(
        rng,
        hosts=options.hosts,
        domains=options.domains,
        greylist_s=options.greylist_s,
        latency_ms=options.latency_ms,
    )
    rows = generate(rng, farm, size)
    bound = lower_bound(farm, rows)
    with tempfile.TemporaryDirectory(prefix="mailprobe-bench-") as tmp:
        workdir = Path(tmp)
        with open(workdir / "in.csv", "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(["id", "email"])
            writer.writerows([row.id, row.email] for row in rows)
        with running_farm(farm, rows) as (dns, servers):
            env = _env(dns, servers[0].port, options.greylist_s)
            timeout_s = max(120.0, 10 * bound.seconds)
            cpu_before = time.process_time()
            run = run_cli(workdir, env, timeout_s=timeout_s, profile=options.profile)
            farm_cpu_s = time.process_time() - cpu_before
            seen = traffic(servers)
        accuracy = check(rows, workdir / "out.csv")
    return report(size, bound, run, seen, accuracy, farm_cpu_s=farm_cpu_s)


def main(argv: list[str] | None = None) -> int:
    """Run the bench for each size; return 1 when a target is missed."""
    defaults = Options()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="Comma-separated input sizes.")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--hosts", type=int, default=defaults.hosts, help="MX addresses.")
    parser.add_argument("--domains", type=int, default=defaults.domains, help="Mail domains.")
    parser.add_argument(
        "--greylist-s", type=float, default=defaults.greylist_s, help="Greylisting delay."
    )
    parser.add_argument(
        "--latency-ms",
        default="10,30",
        help="Per-reply latency range LOW,HIGH in ms, drawn per host (default 10,30).",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="Run mailprobe under cProfile into this file."
    )
    args = parser.parse_args(argv)
    low, high = (int(text) for text in args.latency_ms.split(","))
    options = Options(
        seed=args.seed,
        hosts=args.hosts,
        domains=args.domains,
        greylist_s=args.greylist_s,
        latency_ms=(low, high),
        profile=args.profile,
    )
    print(__doc__.split("\n\n")[0])
    print(
        f"\nfarm: {options.hosts} MX hosts, {options.domains} domains, per-reply latency"
        f" {low}-{high} ms, greylisting {options.greylist_s} s, seed {options.seed}"
    )
    print(f"\nlower bound: {Bound.FORMULA}")
    missed: list[str] = []
    for size in (int(text) for text in args.sizes.split(",")):
        missed += bench(size, options)
    print("\ntargets: " + ("all met" if not missed else "MISSED\n  " + "\n  ".join(missed)))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
