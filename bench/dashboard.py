"""Time the dashboard's store reads on a large store, and what its indexes cost each save.

    python bench/dashboard.py --results 1000000

Fills a fresh store (through sqlite-utils' bulk insert: a million save_result() calls would
take many minutes) with `--results` answers over 90 days (5 % unknown, over 2,000 domains),
as many contacts over two connectors, 10,000 logged passes and a queue; then prints the time
of each figure the dashboard reads, of one whole gather(), of GET / over HTTP, and of
save_result() with and without the dashboard's triggers (per-day counts) and index.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from mailprobe.engine.result import Reason, Status  # noqa: E402

from mailprobe import api  # noqa: E402
from mailprobe.api.figures import gather  # noqa: E402
from mailprobe.settings import ApiSettings, AppSettings, StoreSettings  # noqa: E402
from mailprobe.store import Store, _ts  # noqa: E402
from tests.test_dashboard import answer  # noqa: E402

NOW = datetime.now(UTC)
UNKNOWN_REASONS = [Reason.TIMEOUT, Reason.GREYLISTED, Reason.BLOCKED, Reason.RATE_LIMITED]
STATUSES = [Status.VALID] * 60 + [Status.INVALID] * 20 + [Status.CATCH_ALL] * 12 + [
    Status.RISKY] * 3 + [Status.UNKNOWN] * 5  # fmt: skip
REASON = {Status.VALID: Reason.ACCEPTED, Status.INVALID: Reason.MAILBOX_NOT_FOUND,
          Status.CATCH_ALL: Reason.ACCEPT_ALL, Status.RISKY: Reason.MAILBOX_FULL}  # fmt: skip


def fill(store: Store, results: int) -> None:
    """Bulk-insert answers, contacts, passes and a queue."""
    pick = random.Random(1)
    sample = json.dumps(answer("x@d.test", Status.VALID, Reason.ACCEPTED, at=NOW).to_json())
    rows, contacts = [], []
    for i in range(results):
        status = pick.choice(STATUSES)
        reason = pick.choice(UNKNOWN_REASONS) if status is Status.UNKNOWN else REASON[status]
        at = NOW - timedelta(minutes=pick.randint(0, 90 * 24 * 60))
        checked = NOW - timedelta(minutes=pick.randint(0, 48 * 60)) if status is Status.UNKNOWN \
            else at  # fmt: skip
        email = f"user{i}@d{i % 2000}.test"
        expires = at + timedelta(hours=pick.choice([-2, 1, 6]) if status is Status.UNKNOWN
                                 else 24 * 30)  # fmt: skip
        rows.append({"normalized": email, "result_json": sample, "status": str(status),
                     "reason": str(reason), "verified_at": _ts(at), "expires_at": _ts(expires),
                     "attempts": 0, "checked_at": _ts(checked)})  # fmt: skip
        contacts.append({"connector": "crm" if i % 2 else "drop", "external_id": str(i),
                         "email": email, "state": "to_write" if i % 50 == 0 else "written",
                         "seen_at": _ts(at)})  # fmt: skip
    store.db["results"].insert_all(rows, batch_size=20_000)
    store.db["contacts"].insert_all(contacts, batch_size=20_000)
    runs = [{"connector": "crm" if n % 2 else "drop", "kind": "pass", "outcome": "ok",
             "started_at": _ts(NOW - timedelta(minutes=n)), "ended_at": _ts(NOW),
             "verified": 100} for n in range(10_000)]  # fmt: skip
    store.db["runs"].insert_all(runs, batch_size=10_000)
    store.queue_emails("drop", [f"new{i}@d{i % 2000}.test" for i in range(20_000)], now=NOW)


def timed(label: str, call, repeat: int = 5) -> None:  # noqa: ANN001
    """Print the median time of `call()` over `repeat` runs, in milliseconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    print(f"  {label:<34} {statistics.median(times):8.1f} ms (median of {repeat})")


def save_rate(store: Store, count: int) -> float:
    """Return save_result() calls per second for `count` new unknown and valid answers."""
    started = time.perf_counter()
    for i in range(count):
        status = Status.UNKNOWN if i % 10 == 0 else Status.VALID
        reason = Reason.GREYLISTED if status is Status.UNKNOWN else Reason.ACCEPTED
        store.save_result(answer(f"s{i}-{time.time_ns()}@d{i}.test", status, reason, at=NOW),
                          now=NOW)  # fmt: skip
    return count / (time.perf_counter() - started)


async def http_time(path: Path) -> list[float]:
    """Return the milliseconds of five GET / over HTTP: the first reads the store, the others
    share its figures (the dashboard reads them at most every 10 s)."""
    connectors = {"crm": {"type": "csv"}, "drop": {"type": "csv"}}
    settings = AppSettings(
        api=ApiSettings(listen="127.0.0.1:0"), store=StoreSettings(path=path), connectors=connectors
    )
    with Store(path) as store:
        app = api.create_app(settings, store=store)
        sock = api.bind("127.0.0.1", 0)
        stop = asyncio.Event()
        task = asyncio.create_task(api.serve_app(app, sock, shutdown=stop))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        times = []
        async with httpx.AsyncClient(timeout=60) as client:
            for _ in range(5):
                started = time.perf_counter()
                assert (await client.get(url)).status_code == 200
                times.append((time.perf_counter() - started) * 1000)
        stop.set()
        await task
        sock.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mailprobe.db"
        with Store(path) as store:
            started = time.perf_counter()
            fill(store, args.results)
            print(f"filled {args.results:,} answers and contacts in "
                  f"{time.perf_counter() - started:.0f} s")  # fmt: skip
            reads(store)
            first, *again = asyncio.run(http_time(path))
            print(f"  GET / over HTTP                    {first:8.1f} ms, then "
                  f"{statistics.median(again):.1f} ms (figures shared for 10 s)")  # fmt: skip
            saves(store)


def reads(store: Store) -> None:
    """Print the time of each figure the dashboard reads, and of all of them."""
    since = NOW - timedelta(days=29)
    timed("results_by_status", store.results_by_status)
    timed("results_by_day (30 days)", lambda: store.results_by_day(since=since))
    timed("recent_passes x2", lambda: [store.recent_passes(c) for c in ("crm", "drop")])
    timed("queue_depths x2", lambda: store.queue_depths(["crm", "drop"]))
    timed("retry_depth", lambda: store.retry_depth(now=NOW))
    timed("deferring_domains (24 h)",
          lambda: store.deferring_domains(since=NOW - timedelta(hours=24)))  # fmt: skip
    timed("gather (the whole page's reads)", lambda: gather(store, ["crm", "drop"], now=NOW))


def saves(store: Store) -> None:
    """Print save_result() rates with the dashboard's triggers and index, without, and with."""
    names = ("result_days_insert", "result_days_delete", "result_days_update", "results_unknown")
    marks = ",".join("?" * len(names))
    found = store.db.execute(
        f"SELECT type, name, sql FROM sqlite_master WHERE name IN ({marks})", names
    ).fetchall()
    rates = [save_rate(store, 5_000)]
    for kind, name, _ in found:
        store.db.execute(f"DROP {kind.upper()} {name}")
    rates.append(save_rate(store, 5_000))
    for _, _, sql in found:
        store.db.execute(sql)
    rates.append(save_rate(store, 5_000))
    print(f"  save_result: {rates[0]:,.0f}/s with the dashboard's triggers and index, "
          f"{rates[1]:,.0f}/s without, {rates[2]:,.0f}/s with them again")  # fmt: skip


if __name__ == "__main__":
    main()
