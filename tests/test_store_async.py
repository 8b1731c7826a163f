"""The async store: another process holding the write lock stalls nothing and ends nothing."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mailprobe import api
from mailprobe.freshness import Freshness
from mailprobe.pipeline import Pipeline
from mailprobe.settings import AppSettings, PolicySettings
from mailprobe.store import RunOutcome, Store
from mailprobe.store_async import SQLiteAsyncStore
from tests.fakes.pipeline import Clock, FakeVerifier, csv_drop, drop_in

#: Holds BEGIN IMMEDIATE on the store until a line arrives on stdin (another process's writer).
HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


class LoopLag:
    """Measures how late the event loop wakes a 20 ms sleeper: a blocked loop shows here."""

    def __init__(self) -> None:
        self.worst_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.02)
            self.worst_s = max(self.worst_s, loop.time() - before - 0.02)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()


class BusySeen(logging.Handler):
    """Sets an event when the store says it is busy (the pass is waiting for the lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "store busy" in record.getMessage():
            self.seen.set()


@pytest.fixture
async def lock_holder(tmp_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """Another process holding the store's write lock until its stdin gets a line."""
    Store(tmp_path / "state.db").close()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        str(tmp_path / "state.db"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 30) == b"held\n"
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def release(process: asyncio.subprocess.Process) -> None:
    assert process.stdin is not None
    process.stdin.write(b"go\n")
    await process.stdin.drain()
    assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_a_held_write_lock_blocks_neither_the_loop_nor_healthz_and_the_pass_completes(
    tmp_path: Path, lock_holder: asyncio.subprocess.Process, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    busy = BusySeen()
    logging.getLogger("mailprobe.store_async").addHandler(busy)
    drop_in(tmp_path, "list.csv", [("email",), ("a@x.test",), ("b@y.test",)])
    settings = AppSettings(store={"path": tmp_path / "state.db"}, api={"listen": "127.0.0.1:0"})
    # The lock outlasts the busy timeout, so the wait-and-retry path runs too; sqlite3 waiting
    # that long on the loop's thread would show as loop lag.
    store = SQLiteAsyncStore(
        tmp_path / "state.db", freshness=Freshness(PolicySettings()), busy_timeout_s=1.0
    )
    stop_api = await api.start_api(settings, store)
    said = [r.getMessage() for r in caplog.records if "listening on http://" in r.getMessage()]
    url = said[0].split("listening on ", 1)[1].split()[0]
    try:
        with LoopLag() as lag:
            passing = asyncio.create_task(
                Pipeline(store, FakeVerifier(Clock())).run_pass(csv_drop(tmp_path))
            )
            await asyncio.wait_for(busy.seen.wait(), 30)
            async with httpx.AsyncClient() as client:
                started = asyncio.get_running_loop().time()
                answer = await client.get(f"{url}/healthz", timeout=5)
                took_s = asyncio.get_running_loop().time() - started
            assert not passing.done()  # still waiting for the lock
            await release(lock_holder)
            report = await asyncio.wait_for(passing, 30)
        assert answer.status_code == 200 and took_s < 1.0
        assert lag.worst_s < 0.5, f"the event loop was blocked for {lag.worst_s:.2f} s"
        assert report.outcome is RunOutcome.OK and report.counts.verified == 2
        assert (tmp_path / "drop" / "outbox" / "list.verified.csv").exists()
    finally:
        logging.getLogger("mailprobe.store_async").removeHandler(busy)
        await stop_api()
        await store.aclose()


async def test_reads_answer_while_another_process_holds_the_write_lock(
    tmp_path: Path, lock_holder: asyncio.subprocess.Process
) -> None:
    async with SQLiteAsyncStore(
        tmp_path / "state.db", freshness=Freshness(PolicySettings()), busy_timeout_s=0.2
    ) as store:
        summary = await asyncio.wait_for(store.status_summary(["drop"]), 5)
        await asyncio.wait_for(store.check_usable(), 5)
    assert [c.connector for c in summary.connectors] == ["drop"]
    await release(lock_holder)
