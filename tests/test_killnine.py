"""kill -9 during a CSV pass, again and again, then a clean finish: nothing lost, nothing twice.

`mailprobe sync` runs as a subprocess against a fake DNS and a slow fake SMTP server in this
process. The test waits for progress by polling the store (read-only, short interval, deadline),
kills the process with SIGKILL at random points, restarts it, and finally lets it finish.

What can be asserted exactly:
- the output holds every input row exactly once, in order, and no partial output ever appears;
- every address has exactly one result row (one answer per normalised address);
- an address whose result was saved before a kill is never probed (RCPT) again afterwards;
  only verifications in flight at the kill may be repeated, so RCPTs per address never exceed
  the number of runs.
"""

from __future__ import annotations

import csv
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.fakes.dns import DnsServer
from tests.fakes.smtp import ScriptedSmtp, running_smtp_server
from tests.test_cli_daemon import clean_env, engine_env

_RCPT = re.compile(r"RCPT TO:\s*<([^>]*)>", re.IGNORECASE)
DOMAINS = ("alpha.test", "beta.test", "gamma.test", "delta.test")
DISTINCT = 240
ROWS = 12_000


def _addresses() -> list[str]:
    known = [f"user{i}@{DOMAINS[i % len(DOMAINS)]}" for i in range(DISTINCT)]
    return known + ["x@missing.test", "not an address"]


def _write_input(path: Path, rng: random.Random) -> list[tuple[str, str]]:
    """Write ROWS rows (id, email) drawn from the addresses; return them in order."""
    addresses = _addresses()
    rows = [
        (str(n), addresses[n] if n < len(addresses) else rng.choice(addresses)) for n in range(ROWS)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(("id", "email"))
        writer.writerows(rows)
    old = time.time() - 60  # settled
    os.utime(path, (old, old))
    return rows


class StoreProbe:
    """Reads the store of the process under test, read-only, tolerating its absence."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def query(self, sql: str) -> list[tuple[object, ...]]:
        if not self.path.exists():
            return []
        try:
            with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5) as conn:
                return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # schema not created yet
            return []

    def results(self) -> int:
        rows = self.query("SELECT count(*) FROM results")
        return int(rows[0][0]) if rows else 0

    def saved(self) -> set[str]:
        return {str(row[0]) for row in self.query("SELECT normalized FROM results")}

    def file_state(self) -> str | None:
        rows = self.query("SELECT state FROM csv_files ORDER BY id DESC LIMIT 1")
        return str(rows[0][0]) if rows else None


def _wait(condition: Callable[[], bool], process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Poll `condition` every 20 ms until it holds, the process ends, or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def _rcpts(server: ScriptedSmtp) -> list[str]:
    return [m[1] for line in server.lines if (m := _RCPT.match(line))]


def _quiet(server: ScriptedSmtp) -> None:
    """Wait until the server has seen every killed client hang up (its records are final)."""
    deadline = time.monotonic() + 10
    while server._active and time.monotonic() < deadline:
        time.sleep(0.01)


def test_kill_9_at_random_points_loses_nothing_and_repeats_nothing(
    tmp_path: Path, dns_server: DnsServer
) -> None:
    seed = int(time.time())
    rng = random.Random(seed)
    for domain in DOMAINS:
        dns_server.add_mx(domain, 10, f"mx.{domain}")
        dns_server.add(f"mx.{domain}", "A", "127.0.0.2")
    accepted = {a.lower() for a in _addresses()[::2]}
    smtp = ScriptedSmtp("127.0.0.2", mailboxes=accepted, latency_ms=8)
    rows = _write_input(tmp_path / "drop" / "inbox" / "list.csv", rng)
    config = tmp_path / "m.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "store": {"path": "state.db"},
                "connectors": {"drop": {"type": "csv", "folder": "drop", "settle_s": 0}},
            }
        )
    )
    probe = StoreProbe(tmp_path / "state.db")
    distinct = len(set(_addresses()))
    kills: list[tuple[str, set[str], int]] = []  # (where, results saved, RCPTs seen) per kill

    with running_smtp_server(smtp) as server:
        env = clean_env(**engine_env(dns_server, server.port))
        command = [sys.executable, "-m", "mailprobe.cli", "--config", str(config), "sync"]

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                command,
                cwd=tmp_path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        # Kill points: while the file is queued, three times while verifying, once writing.
        points: list[tuple[str, Callable[[], bool]]] = [
            ("queueing", lambda: probe.file_state() is not None),
        ]
        for low, high in ((0.05, 0.3), (0.35, 0.6), (0.65, 0.95)):
            target = int(distinct * rng.uniform(low, high))
            points.append((f"verifying@{target}", lambda t=target: probe.results() >= t))
        outbox = tmp_path / "drop" / "outbox"
        points.append(("writing", lambda: any(p.name.startswith(".") for p in outbox.glob("*"))))

        for where, reached in points:
            process = start()
            try:
                _wait(reached, process, timeout=60)
            finally:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
            _quiet(server)
            kills.append((where, probe.saved(), len(_rcpts(server))))
            output = tmp_path / "drop" / "outbox" / "list.verified.csv"
            if output.exists():  # a kill after the output was complete: it must be whole
                with output.open(encoding="utf-8", newline="") as stream:
                    assert sum(1 for _ in stream) == ROWS + 1, f"seed {seed}: partial output"

        final = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=120)
        assert final.returncode == 0, final.stderr.decode()
        rcpts = _rcpts(server)

    context = f"seed {seed}, kills {[(w, len(s), n) for w, s, n in kills]}"
    with (tmp_path / "drop" / "outbox" / "list.verified.csv").open(newline="") as stream:
        out = list(csv.DictReader(stream))
    assert [(r["id"], r["email"]) for r in out] == rows, context
    assert all(r["mailprobe_status"] for r in out), context
    statuses = {r["email"]: r["mailprobe_status"] for r in out}
    assert statuses["user0@alpha.test"] == "valid" and statuses["user1@beta.test"] == "invalid"
    assert statuses["not an address"] == "invalid"

    counts = probe.query("SELECT count(*), count(DISTINCT normalized) FROM results")[0]
    assert counts == (distinct, distinct), context
    assert probe.query("SELECT state FROM csv_files") == [("done",)], context
    assert (tmp_path / "drop" / "archive" / "list.csv").exists()

    probed = Counter(r.lower() for r in rcpts if r.lower() in {a.lower() for a in _addresses()})
    runs = len(kills) + 1
    assert set(probed) == {a.lower() for a in _addresses() if "@" in a and "missing" not in a}
    assert max(probed.values()) <= runs, context
    for where, saved, seen in kills:
        again = {r.lower() for r in rcpts[seen:]} & {s.lower() for s in saved}
        assert not again, f"{context}: saved before the kill {where}, probed again: {again}"
