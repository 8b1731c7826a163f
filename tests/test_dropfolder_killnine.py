"""kill -9 while a drop file's unknown rows are retried and its output rewritten: the previous
output survives whole, and the next start finishes the rewrite without asking twice.

`mailprobe sync` runs as a subprocess against a fake DNS and a slow fake SMTP server in this
process. The server defers (451, "try again in 2 seconds") during the first sync, then answers.
The second sync is killed while verifying the deferred rows, the third while writing the new
output (when it gets there before finishing); a last one completes.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import yaml

from tests.fakes.dns import DnsServer
from tests.fakes.smtp import ScriptedSmtp, running_smtp_server
from tests.test_cli_daemon import clean_env, engine_env
from tests.test_killnine import _RCPT, StoreProbe, _quiet, _wait

ADDRESSES = [f"user{n}@grey.test" for n in range(60)]
ROWS = 20_000
DEFER = "451 4.7.1 <{}>: Greylisted, try again in 2 seconds"


def _write_input(path: Path) -> list[tuple[str, str]]:
    rows = [(str(n), ADDRESSES[n % len(ADDRESSES)]) for n in range(ROWS)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(("id", "email"))
        writer.writerows(rows)
    return rows


def _expected(email: str) -> str:
    return "invalid" if int(email[4:].partition("@")[0]) % 3 == 0 else "valid"


def _retry_due(probe: StoreProbe) -> bool:
    """Return True once the file's retry time (the server's 2 s) has passed."""
    rows = probe.query("SELECT retry_at FROM csv_files WHERE retry_at IS NOT NULL")
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return bool(rows) and str(rows[0][0]) <= now


def test_kill_9_during_a_retry_rewrite_keeps_the_old_output_then_finishes(
    tmp_path: Path, dns_server: DnsServer
) -> None:
    dns_server.add_mx("grey.test", 10, "mx.grey.test")
    dns_server.add("mx.grey.test", "A", "127.0.0.2")
    deferring = {"on": True}

    def rcpt(recipient: str) -> str | None:
        return DEFER.format(recipient) if deferring["on"] else None

    mailboxes = {a for a in ADDRESSES if _expected(a) == "valid"}
    smtp = ScriptedSmtp("127.0.0.2", mailboxes=mailboxes, rcpt=rcpt, latency_ms=15)
    rows = _write_input(tmp_path / "drop" / "inbox" / "list.csv")
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
    output = tmp_path / "drop" / "outbox" / "list.verified.csv"

    with running_smtp_server(smtp) as server:
        env = clean_env(
            **engine_env(dns_server, server.port),
            MAILPROBE_ENGINE__GREYLIST__MAX_WAIT_S="0",
            MAILPROBE_ENGINE__SMTP__MAX_RCPT_PER_SESSION="10",
        )
        command = [sys.executable, "-m", "mailprobe.cli", "--config", str(config), "sync"]
        first = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=120)
        assert first.returncode == 0, first.stderr.decode()
        old = output.read_bytes()
        with output.open(encoding="utf-8", newline="") as stream:
            assert {r["mailprobe_action"] for r in csv.DictReader(stream)} == {"retry"}
        deferring["on"] = False
        # The first sync may already have retried rows that came due during its pass.
        base = probe.query("SELECT revision FROM csv_files")[0][0]
        deadline = time.monotonic() + 30
        while not _retry_due(probe) and time.monotonic() < deadline:
            time.sleep(0.05)  # the server asked for 2 s of wall-clock time

        def valid_results() -> int:
            got = probe.query("SELECT count(*) FROM results WHERE status != 'unknown'")
            return int(got[0][0]) if got else 0

        outbox = output.parent
        points = [
            ("verifying", lambda: valid_results() >= 10),
            ("writing", lambda: any(p.name.startswith(".") for p in outbox.glob("*"))),
        ]
        kills = []
        for where, reached in points:
            process = subprocess.Popen(
                command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                hit = _wait(reached, process, timeout=60)
            finally:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
            _quiet(server)
            revision = probe.query("SELECT revision FROM csv_files")[0][0]
            kills.append((where, hit, revision, valid_results(), len(server.lines)))
            if revision == base:  # killed before the rewrite was recorded: the old output, whole
                assert output.read_bytes() == old, kills
            with output.open(encoding="utf-8", newline="") as stream:
                assert sum(1 for _ in csv.reader(stream)) == ROWS + 1, kills

        last = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=120)
        assert last.returncode == 0, last.stderr.decode()
        rcpts = [m[1].lower() for line in server.lines if (m := _RCPT.match(line))]

    assert kills[0][1] and kills[0][2] == base, kills  # the first kill came mid-verification
    with output.open(encoding="utf-8", newline="") as stream:
        out = list(csv.DictReader(stream))
    assert [(r["id"], r["email"]) for r in out] == rows
    assert [r["mailprobe_status"] for r in out] == [_expected(email) for _, email in rows]
    assert {r["mailprobe_action"] for r in out} == {"send", "do_not_send"}
    assert probe.query("SELECT pending, retry_at FROM csv_files") == [(0, None)]
    assert not [p for p in output.parent.iterdir() if p.name.startswith(".")]
    # Asked while deferring (again if the first sync retried), then once more; only
    # verifications in flight at a kill may repeat.
    asked = Counter(r for r in rcpts if r in ADDRESSES)
    assert set(asked) == set(ADDRESSES) and max(asked.values()) <= 3 + len(kills), kills
