"""Bulk verification within what servers tolerate (issue 3), over real sockets on 127.0.0.x.

Each server reaction has a scripted server: shared session limits, 421 too many connections,
452 too many recipients, a hang-up after N rejections, greylisting, the pause between sessions,
the global cap. Then `mailprobe verify --file` end to end: bounded memory and read-ahead, input
order, duplicates, the progress bar on a terminal (a pty), and Ctrl-C. Timing assertions read
the servers' own monotonic clocks; nothing waits by sleeping.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mailprobe.connectors.fields import FIELD_NAMES
from mailprobe.engine import VerificationResult
from mailprobe.engine import verifier as verifier_module
from rich.console import Console

from mailprobe import bulk
from mailprobe.bulk import InputTable, ProgressView, Tally, open_input, verify_table
from tests.fakes.dns import DnsServer, running_dns_server
from tests.fakes.net import IP1, IP2, IP3, IP4, Net, assert_no_message_sent, verify_all
from tests.fakes.smtp import (
    GreylistingSmtp,
    ScriptedSmtp,
    SessionRecord,
    running_smtp_server,
)

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("quick_backoff")


# In-process nets: a DNS zone, servers on one port, a verifier -----------------------------


@pytest.fixture
def backoff_first_s() -> float:
    """Shrink the back-off (seconds in production) so a 421 costs the test 50 ms, not 2 s."""
    return 0.05


@pytest.fixture
def net(net: Net) -> Net:
    """Return the shared net with roomier timeouts: bulk runs keep many sessions busy at once."""
    net.timeout_s, net.dns_timeout_s = 2.0, 5.0
    return net


def outcomes(results: list[VerificationResult]) -> dict[str, tuple[str, str]]:
    return {r.email: (str(r.status), str(r.reason)) for r in results}


def rcpt_count(record: SessionRecord) -> int:
    return record.verbs.count("RCPT")


def expected(valid: list[str], invalid: list[str]) -> dict[str, tuple[str, str]]:
    answers = {email: ("valid", "accepted") for email in valid}
    return answers | {email: ("invalid", "mailbox_not_found") for email in invalid}


def people(domain: str, count: int) -> tuple[list[str], list[str]]:
    """Return (mailboxes that exist, addresses that do not): alternate users of the domain."""
    emails = [f"user{n}@{domain}" for n in range(count)]
    return emails[::2], emails[1::2]


def most_at_once(records: list[SessionRecord]) -> int:
    """Return the most sessions open at the same moment, by the servers' own clocks."""
    events = sorted(
        [(r.started, 1) for r in records] + [(r.ended or float("inf"), -1) for r in records],
        key=lambda event: (event[0], event[1]),  # a close before an open at the same instant
    )
    open_now = peak = 0
    for _, change in events:
        open_now += change
        peak = max(peak, open_now)
    return peak


# Per-host limits ------------------------------------------------------------------------------


async def test_domains_sharing_an_mx_host_share_its_session_limit(net: Net) -> None:
    valid, invalid = [], []
    for n in range(8):  # eight domains, one mail host: as Google Workspace hosts many
        good, bad = people(f"tenant{n}.test", 4)
        valid += good
        invalid += bad
        net.mx(f"tenant{n}.test", ("aspmx.shared.test", IP1))
    (server,) = await net.serve(ScriptedSmtp(IP1, latency_ms=5, mailboxes=valid))

    results = await verify_all(net.verifier(smtp={"max_sessions_per_host": 2}), valid + invalid)

    assert outcomes(results) == expected(valid, invalid)
    assert server.max_concurrent == 2  # the limit was used, and never exceeded


async def test_421_too_many_connections_backs_off_and_verifies_the_addresses_later(
    net: Net,
) -> None:
    valid, invalid = [], []
    for n in range(6):
        good, bad = people(f"d{n}.test", 4)
        valid += good
        invalid += bad
        net.mx(f"d{n}.test", ("mx.busy.test", IP1))
    # The server takes one session at a time; the engine starts with two.
    (server,) = await net.serve(ScriptedSmtp(IP1, latency_ms=5, max_sessions=1, mailboxes=valid))

    results = await verify_all(net.verifier(smtp={"max_sessions_per_host": 2}), valid + invalid)

    assert outcomes(results) == expected(valid, invalid)  # none failed: asked again later
    refused = [r for r in server.sessions if "too many connections" in r.replies[0]]
    assert len(refused) == 1  # learnt: the host's limit was never exceeded again
    later = [r.started for r in server.sessions if r.started > refused[0].started]
    # Back-off: 0.05 s x jitter 0.5-1.5 before the next session, whatever domain it serves.
    assert later and min(later) - refused[0].started >= 0.02


async def test_452_sends_the_rest_in_a_new_session_and_later_sessions_carry_the_learned_batch(
    net: Net,
) -> None:
    valid, invalid = people("acme.test", 15)
    net.mx("acme.test", ("mx.acme.test", IP1))
    (server,) = await net.serve(ScriptedSmtp(IP1, max_rcpt=4, mailboxes=valid))

    results = await verify_all(net.verifier(smtp={"max_sessions_per_host": 1}), valid + invalid)

    assert outcomes(results) == expected(valid, invalid)
    first, *later = server.sessions
    assert rcpt_count(first) == 5 and "too many recipients" in first.replies[-2]
    assert later and all(rcpt_count(record) <= 4 for record in later)
    too_many = [reply for record in server.sessions for reply in record.replies if "452" in reply]
    assert len(too_many) == 1


async def test_rcptmax_advertised_in_ehlo_limits_caps_later_sessions(net: Net) -> None:
    valid, invalid = people("acme.test", 30)
    net.mx("acme.test", ("mx.acme.test", IP1))
    # RFC 9422: the server announces its recipient limit; it never has to say 452.
    ehlo = "250 mx.acme.test\nPIPELINING\nLIMITS RCPTMAX=3 MAILMAX=10\nENHANCEDSTATUSCODES"
    (server,) = await net.serve(ScriptedSmtp(IP1, replies={"EHLO": ehlo}, mailboxes=valid))

    results = await verify_all(net.verifier(smtp={"max_sessions_per_host": 1}), valid + invalid)

    assert outcomes(results) == expected(valid, invalid)
    assert len(server.sessions) >= 2
    assert all(rcpt_count(record) <= 3 for record in server.sessions[1:])


async def test_hang_up_after_n_rejections_reconnects_and_keeps_later_sessions_under_it(
    net: Net,
) -> None:
    valid, invalid = people("acme.test", 12)
    net.mx("acme.test", ("mx.acme.test", IP1))
    # Postfix smtpd_hard_error_limit: after 3 rejected commands, 421 and hang up.
    (server,) = await net.serve(ScriptedSmtp(IP1, hard_error_limit=3, mailboxes=valid))

    results = await verify_all(net.verifier(smtp={"max_sessions_per_host": 1}), valid + invalid)

    assert outcomes(results) == expected(valid, invalid)  # every address answered correctly
    dropped = [r for r in server.sessions if any("too many errors" in x for x in r.replies)]
    assert dropped == server.sessions[:1]  # only the session that taught us the limit
    assert len(server.sessions) >= 3
    assert all(rcpt_count(record) <= 2 for record in server.sessions[1:])


async def test_greylisted_addresses_are_retried_after_the_delay_while_other_domains_flow(
    net: Net,
) -> None:
    grey = [f"user{n}@grey.test" for n in range(3)]
    fast_valid, fast_invalid = people("fast.test", 10)
    net.mx("grey.test", ("mx.grey.test", IP1))
    net.mx("fast.test", ("mx.fast.test", IP2))
    grey_server, _ = await net.serve(
        GreylistingSmtp(IP1, times=1, mailboxes=grey),
        ScriptedSmtp(IP2, latency_ms=5, mailboxes=fast_valid),
    )
    verifier = net.verifier(greylist={"retry_delays_s": [0.3], "max_wait_s": 5.0})

    results = await verify_all(verifier, grey + fast_valid + fast_invalid)

    assert outcomes(results) == expected(grey + fast_valid, fast_invalid)
    order = [r.email for r in results]
    assert set(order[-3:]) == set(grey)  # the other domain's results came out meanwhile
    first, retry = grey_server.sessions
    assert retry.started - first.started >= 0.3


async def test_min_session_interval_is_kept_between_sessions_to_one_host(net: Net) -> None:
    valid, invalid = [], []
    for n in range(4):
        good, bad = people(f"d{n}.test", 2)
        valid += good
        invalid += bad
        net.mx(f"d{n}.test", ("mx.shared.test", IP1))
    (server,) = await net.serve(ScriptedSmtp(IP1, mailboxes=valid))

    verifier = net.verifier(smtp={"max_sessions_per_host": 2, "min_session_interval_ms": 80})
    results = await verify_all(verifier, valid + invalid)

    assert outcomes(results) == expected(valid, invalid)
    starts = sorted(record.started for record in server.sessions)
    assert len(starts) >= 4
    # The client waits 80 ms between connects; the accept clock may see a few ms less.
    assert min(b - a for a, b in zip(starts, starts[1:], strict=False)) >= 0.07


async def test_engine_concurrency_caps_sessions_overall(net: Net) -> None:
    servers, valid, invalid = [], [], []
    for n, ip in enumerate((IP1, IP2, IP3, IP4)):
        good, bad = people(f"d{n}.test", 4)
        valid += good
        invalid += bad
        net.mx(f"d{n}.test", (f"mx.d{n}.test", ip))
        servers.append(ScriptedSmtp(ip, latency_ms=10, mailboxes=good))
    await net.serve(*servers)

    results = await verify_all(net.verifier(concurrency=2), valid + invalid)

    assert outcomes(results) == expected(valid, invalid)
    assert most_at_once([record for s in servers for record in s.sessions]) == 2


# Streaming ------------------------------------------------------------------------------------


class _Out(io.StringIO):
    """An output stream that notes how many input rows had been read at each write."""

    def __init__(self, rows_read: Callable[[], int]) -> None:
        super().__init__()
        self._rows_read = rows_read
        self.read_at_write: list[int] = []

    def write(self, text: str) -> int:
        self.read_at_write.append(self._rows_read())
        return super().write(text)


async def test_a_slow_first_row_holds_csv_output_and_input_reading_stays_bounded(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "MAX_BACKLOG", 100)
    monkeypatch.setattr(verifier_module, "READ_AHEAD", 50)
    net.mx("slow.test", ("mx.slow.test", IP1))
    await net.serve(ScriptedSmtp(IP1, latency_ms=100, mailboxes={"john@slow.test"}))
    read = 0

    def rows() -> Iterator[list[str]]:
        nonlocal read
        for index in range(2000):
            read += 1
            yield [str(index), "john@slow.test" if index == 0 else f"not-an-address-{index}"]

    out = _Out(lambda: read)
    tally = await verify_table(
        net.verifier(), InputTable(["id", "email"], 1, rows()), out, fmt="csv"
    )

    assert tally.done == 2000
    lines = list(csv.reader(io.StringIO(out.getvalue())))
    assert [line[0] for line in lines[1:]] == [str(n) for n in range(2000)]  # input order
    assert lines[1][-len(FIELD_NAMES) :][0] == "valid"
    # Until the slow row was written (the first write after the header), reading stopped at
    # the reorder buffer's bound, not at the end of the input.
    assert out.read_at_write[1] <= 1 + 100 + 50


def _command() -> list[str]:
    script = Path(sys.executable).with_name("mailprobe")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from mailprobe.cli import main; main(prog_name='mailprobe')"]


@dataclass(frozen=True, slots=True)
class World:
    """DNS and SMTP fakes in threads, for the CLI in a subprocess."""

    dns: DnsServer
    port: int
    slow: ScriptedSmtp  # slow.test: 30 ms a reply, for runs that must still be going
    dup: ScriptedSmtp  # dup.test

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPROBE_")}
        env.update(
            PYTHONPATH=str(ROOT),
            MAILPROBE_ENGINE__HELO_HOSTNAME="probe.mailprobe.test",
            MAILPROBE_ENGINE__DNS__NAMESERVERS=json.dumps([self.dns.host]),
            MAILPROBE_ENGINE__DNS__PORT=str(self.dns.port),
            MAILPROBE_ENGINE__DNS__TIMEOUT_S="5",
            MAILPROBE_ENGINE__SMTP__PORT=str(self.port),
            MAILPROBE_ENGINE__SMTP__ALLOWED_PRIVATE_NETWORKS='["127.0.0.0/8"]',
            MAILPROBE_ENGINE__SYNTAX__ALLOW_TEST_DOMAINS="true",
            MAILPROBE_LOG__LEVEL="WARNING",
        )
        env.update(extra)
        return env


SLOW_IP, DUP_IP = "127.0.5.1", "127.0.5.2"
SLOW_VALID = {f"user{n}@slow.test" for n in range(0, 400, 2)}
DUP_VALID = {f"{name}{n}@dup.test" for name in ("dup", "user") for n in range(0, 40, 2)}


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    slow = ScriptedSmtp(SLOW_IP, latency_ms=30, mailboxes=SLOW_VALID)
    dup = ScriptedSmtp(DUP_IP, mailboxes=DUP_VALID)
    with running_dns_server() as dns, running_smtp_server(slow, dup) as first:
        for domain, ip in (("slow.test", SLOW_IP), ("dup.test", DUP_IP)):
            dns.add_mx(domain, 10, f"mx.{domain}")
            dns.add(f"mx.{domain}", "A", ip)
        yield World(dns, first.port, slow, dup)
    assert_no_message_sent([slow, dup])


def write_csv(path: Path, emails: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["id", "email"])
        writer.writerows([index, email] for index, email in enumerate(emails))


def run_measured(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, int]:
    """Run mailprobe ARGS; return (exit status, stdout, peak RSS in bytes of that process)."""
    with open(cwd / "out.txt", "w+", encoding="utf-8") as out:
        child = subprocess.Popen([*_command(), *args], stdout=out, env=env, cwd=cwd)
        # wait4 reports this child's own peak RSS (ru_maxrss, KiB on Linux).
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return child.returncode, out.read(), usage.ru_maxrss * 1024


def cheap_list(count: int) -> list[str]:
    """Return addresses that need no SMTP: bad syntax and a domain that does not exist."""
    return [f"u{n}@gone.test" if n % 10 == 0 else f"no-at-sign-{n}" for n in range(count)]


def test_verify_file_streams_50000_rows_in_bounded_memory_input_order_duplicates_once(
    world: World, tmp_path: Path
) -> None:
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    write_csv(small, cheap_list(5_000))
    emails = cheap_list(50_000)
    dups = [f"dup{n}@dup.test" for n in range(40)]
    for n, email in enumerate(dups):  # each twice, a few hundred rows apart
        emails[1000 * n + 7] = emails[1000 * n + 407] = email
    write_csv(large, emails)
    args = ["verify", "--format", "csv", "--quiet", "--file"]

    small_status, _, small_rss = run_measured([*args, str(small)], world.env(), tmp_path)
    status, output, large_rss = run_measured([*args, str(large)], world.env(), tmp_path)

    assert small_status == status == 0
    rows = list(csv.DictReader(io.StringIO(output)))
    assert [row["email"] for row in rows] == emails  # every row, in input order
    # Ten times the rows, the same memory: nothing is kept per row read (holding 45,000 more
    # results would take ~90 MB).
    assert large_rss - small_rss < 20 * 2**20
    asked = Counter(line.split(":", 1)[1] for line in world.dup.lines if line.startswith("RCPT"))
    assert all(asked[f"<{email}>"] == 1 for email in dups)  # duplicates verified once
    statuses = {row["email"]: row["mailprobe_status"] for row in rows if row["email"] in dups}
    assert statuses == {e: "valid" if e in DUP_VALID else "invalid" for e in dups}


# Progress -------------------------------------------------------------------------------------


def _render(view: ProgressView, width: int = 160) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    console.print(view.progress.get_renderable())
    return console.file.getvalue()  # type: ignore[attr-defined]


def _tally(**counts: int) -> Tally:
    tally = Tally()
    tally.done = sum(counts.values())
    tally.by_status.update(counts)
    return tally


def test_progress_line_shows_done_of_total_counts_per_status_rate_and_eta() -> None:
    now = [0.0]
    view = ProgressView(Console(file=io.StringIO()), total=100, clock=lambda: now[0])

    now[0] = 5.0
    view.show(_tally(valid=15, invalid=10))
    now[0] = 10.0
    view.show(_tally(valid=30, invalid=15, unknown=5))
    line = _render(view)

    assert "50/100" in line
    assert "valid 30" in line and "invalid 15" in line and "unknown 5" in line
    assert "catch_all 0" in line and "risky 0" in line
    assert "5/s" in line  # 50 done in 10 s
    assert "ETA 0:00:10" in line  # 50 left at 5 a second


def test_progress_line_without_a_total_shows_no_eta() -> None:
    now = [0.0]
    view = ProgressView(Console(file=io.StringIO()), total=None, clock=lambda: now[0])

    now[0] = 4.0
    view.show(_tally(valid=8))
    line = _render(view)

    assert "8/?" in line and "2/s" in line and "0:00:04" in line
    assert "ETA" not in line


def test_progress_redraws_at_most_ten_times_a_second() -> None:
    now = [0.0]
    view = ProgressView(Console(file=io.StringIO()), total=10, clock=lambda: now[0])

    now[0] = 1.0
    view.show(_tally(valid=1))
    now[0] = 1.05
    view.show(_tally(valid=2))  # too soon: skipped
    assert "1/10" in _render(view)
    view.show(_tally(valid=3), now=True)
    assert "3/10" in _render(view)


def test_input_rows_of_a_regular_file_are_counted_for_the_eta_stdin_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text("name,email\nAnn,ann@x.test\n\nBob,bob@x.test\nCy,cy@x.test\n")
    plain = tmp_path / "list.txt"
    plain.write_text("# leads\nann@x.test\n\nbob@x.test\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("ann@x.test\nbob@x.test\n"))

    tables = [open_input(str(path), ())[0] for path in (listing, plain)]
    piped, _ = open_input("-", ())

    assert [table.total for table in tables] == [3, 2]
    assert [len(list(table.rows)) for table in tables] == [3, 2]  # counting read nothing off
    assert piped.total is None


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_on_a_terminal(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run mailprobe with stderr on a pseudo-terminal; return (exit status, what it drew)."""
    leader, follower = pty.openpty()
    child = subprocess.Popen(
        [*_command(), *args],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env={**env, "TERM": "xterm", "COLUMNS": "200"},
        cwd=cwd,
    )
    os.close(follower)
    drawn = bytearray()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if not ready:
            if child.poll() is not None:
                break
            continue
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    status = child.wait(timeout=30)
    return status, _ANSI.sub("", drawn.decode("utf-8", "replace"))


def test_verify_on_a_terminal_draws_the_progress_bar_and_a_summary(
    world: World, tmp_path: Path
) -> None:
    listing = tmp_path / "list.csv"
    write_csv(listing, [f"user{n}@dup.test" for n in range(30)] + ["not-an-address"])

    status, drawn = run_on_a_terminal(
        ["verify", "--file", str(listing), "--format", "csv"], world.env(), tmp_path
    )

    assert status == 0, drawn
    assert "31/31" in drawn and "valid 15" in drawn and "invalid 16" in drawn
    assert "/s" in drawn and "ETA" in drawn
    assert "31 verified: 15 valid, 16 invalid" in drawn


def test_verify_draws_nothing_with_quiet_or_when_stderr_is_not_a_terminal(
    world: World, tmp_path: Path
) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("user0@dup.test\nuser1@dup.test\n")
    args = ["verify", "--file", str(listing), "--format", "jsonl"]

    status, drawn = run_on_a_terminal([*args, "--quiet"], world.env(), tmp_path)
    piped = subprocess.run(
        [*_command(), *args], capture_output=True, text=True, env=world.env(), cwd=tmp_path
    )

    assert status == 0 and drawn.strip() == ""
    assert piped.returncode == 0 and piped.stderr == ""
    assert len(piped.stdout.splitlines()) == 2


# Ctrl-C ---------------------------------------------------------------------------------------


def read_lines_until(child: subprocess.Popen[bytes], count: int) -> bytes:
    """Return stdout read so far, once it holds `count` complete lines (or 30 s passed)."""
    assert child.stdout is not None
    data = b""
    deadline = time.monotonic() + 30
    while data.count(b"\n") < count and time.monotonic() < deadline:
        ready, _, _ = select.select([child.stdout], [], [], 1.0)
        if ready:
            chunk = os.read(child.stdout.fileno(), 65536)
            if not chunk:
                break
            data += chunk
    return data


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_ctrl_c_stops_with_exit_130_complete_lines_and_no_traceback(
    world: World, tmp_path: Path, fmt: str
) -> None:
    listing = tmp_path / "list.csv"
    write_csv(listing, [f"user{n}@slow.test" for n in range(400)])  # ~10 s of sessions
    child = subprocess.Popen(
        [*_command(), "verify", "--file", str(listing), "--format", fmt, "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=world.env(),
        cwd=tmp_path,
    )
    head = read_lines_until(child, 2)  # a result is out: the run is under way

    child.send_signal(signal.SIGINT)
    rest, errors = child.communicate(timeout=30)

    assert child.returncode == 130
    text = (head + rest).decode("utf-8")
    assert text.endswith("\n") and 1 <= len(text.splitlines()) < 401
    if fmt == "csv":
        lines = list(csv.reader(io.StringIO(text)))
        assert lines[0] == ["id", "email", *FIELD_NAMES]
        assert all(len(line) == len(lines[0]) for line in lines)
    else:
        assert all(json.loads(line)["email"].endswith("@slow.test") for line in text.splitlines())
    assert b"Traceback" not in errors
    assert b"interrupted" in errors
