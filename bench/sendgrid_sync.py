"""A first `mailprobe sync --connector sendgrid` of a large list, end to end: calls and time.

    python bench/sendgrid_sync.py --contacts 50000

The fake SendGrid API, a DNS server and two SMTP servers run here on loopback; `mailprobe sync`
runs in a subprocess with the real engine. Prints wall time, SendGrid calls per endpoint, and
whether every contact got the right fields exactly once. Stops by itself when the pass ends.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from tests.fakes.mailworld import address, expected_status, world  # noqa: E402
from tests.fakes.sendgrid import API_KEY, SendGridFake, serve  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=50_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mailprobe-sendgrid-"))
    emails = [address(n) for n in range(args.contacts)]
    with serve(SendGridFake()) as api, world(args.contacts) as mail:
        api.export_polls = api.import_polls = 1
        newsletter = api.add_list("Newsletter")
        for email in emails:
            api.add_contact(email, lists=(newsletter,))
        engine = mail.engine()
        engine["smtp"]["max_rcpt_per_session"] = 100
        config = {
            "store": {"path": str(work / "state.db")},
            "engine": engine,
            "connectors": {
                "newsletter": {
                    "type": "sendgrid",
                    "base_url": api.base_url,
                    "lists": ["Newsletter"],
                }
            },
            "log": {"level": "WARNING"},
        }
        (work / "mailprobe.yaml").write_text(yaml.safe_dump(config))
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "MAILPROBE_CONNECTORS__NEWSLETTER__API_KEY": API_KEY,
        }
        command = [sys.executable, "-m", "mailprobe.cli", "--config", str(work / "mailprobe.yaml")]
        started = time.perf_counter()
        done = subprocess.run(
            [*command, "sync", "--connector", "newsletter"],
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        elapsed = time.perf_counter() - started
        written = Counter(row["email"] for upsert in api.upserts for row in upsert.contacts)
        wrong = sum(
            api.values(email).get("mailprobe_status") != expected_status(n)
            for n, email in enumerate(emails)
        )
        calls = dict(api.calls)
    print(f"contacts            {args.contacts:,}")
    print(f"exit code           {done.returncode}")
    print(f"wall time           {elapsed:.1f} s (poll interval 2 s, as in production)")
    print(f"SendGrid calls      {sum(calls.values())}")
    for endpoint, count in sorted(calls.items()):
        print(f"  {count:6}  {endpoint}")
    print(f"contacts written    {len(written):,} (written more than once: "
          f"{sum(1 for n in written.values() if n > 1)})")  # fmt: skip
    print(f"wrong fields        {wrong}")
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
    ok = done.returncode == 0 and wrong == 0 and set(written.values()) == {1}
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
