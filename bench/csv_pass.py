"""Time and peak RSS of one drop-folder pass (`mailprobe sync`) over a large CSV.

    python bench/csv_pass.py --rows 1000000 --distinct 100000

Starts a DNS server and 8 SMTP servers on 127.0.0.x (half the mailboxes exist), drops a CSV of
`--rows` rows holding `--distinct` different addresses over 1,000 domains into a fresh folder,
runs `mailprobe sync` in a subprocess and prints wall time, rows and addresses per second, and
the subprocess's peak RSS. Stops by itself: the pass ends when the file is done.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from tests.fakes.dns import running_dns_server  # noqa: E402
from tests.fakes.smtp import ScriptedSmtp, running_smtp_server  # noqa: E402

DOMAINS = 1000
IPS = [f"127.0.0.{i}" for i in range(2, 10)]


def write_input(path: Path, rows: int, distinct: int) -> None:
    """Write the CSV: id, email, name; addresses repeat every `distinct` rows."""
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "email", "name"])
        for n in range(rows):
            i = n % distinct
            writer.writerow([n, f"user{i}@d{i % DOMAINS}.test", f"Person {n}"])
    settled = time.time() - 60
    os.utime(path, (settled, settled))


def rcpt(recipient: str) -> str | None:
    """Even-numbered users exist; the rest get the server's default 550 5.1.1."""
    local = recipient.split("@")[0]
    exists = local.startswith("user") and local[4:].isdigit() and int(local[4:]) % 2 == 0
    return "250 2.1.5 Ok" if exists else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--distinct", type=int, default=20_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mailprobe-csv-pass-"))
    inbox = work / "drop" / "inbox"
    inbox.mkdir(parents=True)
    write_input(inbox / "big.csv", args.rows, args.distinct)
    servers = [ScriptedSmtp(ip, rcpt=rcpt) for ip in IPS]
    with running_dns_server() as dns, running_smtp_server(*servers) as smtp:
        for d in range(DOMAINS):
            dns.add_mx(f"d{d}.test", 10, f"mx.d{d}.test")
            dns.add(f"mx.d{d}.test", "A", IPS[d % len(IPS)])
        config = work / "mailprobe.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "store": {"path": "state.db"},
                    "connectors": {"drop": {"type": "csv", "folder": "drop", "settle_s": 0}},
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPROBE_")}
        env.update(
            PYTHONPATH=str(ROOT),
            MAILPROBE_ENGINE__HELO_HOSTNAME="probe.mailprobe.test",
            MAILPROBE_ENGINE__DNS__NAMESERVERS=json.dumps([dns.host]),
            MAILPROBE_ENGINE__DNS__PORT=str(dns.port),
            MAILPROBE_ENGINE__SMTP__PORT=str(smtp.port),
            MAILPROBE_ENGINE__SMTP__ALLOWED_PRIVATE_NETWORKS='["127.0.0.0/8"]',
            MAILPROBE_ENGINE__SYNTAX__ALLOW_TEST_DOMAINS="true",
        )
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "mailprobe.cli", "--config", str(config), "sync"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=4 * 3600,
        )
        elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    outputs = list((work / "drop" / "outbox").glob("*.verified.csv"))
    written = sum(1 for _ in outputs[0].open()) - 1 if outputs else 0
    print(f"rows                {args.rows:,}  ({args.distinct:,} distinct addresses)")
    print(f"exit code           {done.returncode}")
    print(f"wall time           {elapsed:.1f} s")
    print(f"rows per second     {args.rows / elapsed:,.0f}")
    print(f"addresses per s     {args.distinct / elapsed:,.0f}")
    print(f"output rows         {written:,}")
    print(f"peak RSS (sync)     {peak_mb:.1f} MB")
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
    return 0 if done.returncode == 0 and written == args.rows else 1


if __name__ == "__main__":
    sys.exit(main())
