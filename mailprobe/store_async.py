"""The store as every event-loop caller reaches it: awaitable verbs, SQLite kept off the loop.

`AsyncStore` is the contract (a Protocol of verbs in the domain's words, mirroring store.Store's)
that the pipeline, the daemon, the API and the CLI's async commands use; a second backend
implements the same verbs. `SQLiteAsyncStore` is the SQLite backend: writes are serialised on
one writer thread with its own connection, reads run on a reader thread beside it (WAL: a read
never waits for a writer), and long reads (a drop file's output, the dashboard's figures) on a
third, so they never delay a cached answer. sqlite3 connections stay in the thread that opened
them.

The write lock held elsewhere (another process's transaction) is waited out: a verb that finds
the store busy (StoreBusy) is tried again with back-off, logged, never fatal; the event loop keeps
serving meanwhile. Other store errors are raised as they are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from mailprobe.connectors.base import Contact
from mailprobe.engine import VerificationResult

from .errors import StoreBusy
from .freshness import Cached, Decision, Freshness
from .store import (
    ContactToWrite,
    CsvFileRecord,
    CsvFileState,
    PageCounts,
    QueuedAddress,
    RunCounts,
    RunOutcome,
    StatusSummary,
    Store,
)

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: First and longest wait before a busy store is tried again.
BUSY_FIRST_WAIT_S = 0.05
BUSY_LONGEST_WAIT_S = 2.0


class ResultLookup(Protocol):
    """What a blocking reader of many stored answers needs (a drop file's output)."""

    def cached(self, email: str) -> Cached | None:
        """Return the stored answer of a raw address, expired or not, or None."""
        ...


class AsyncStore(Protocol):
    """The store's verbs for event-loop callers; every verb is one transaction of the backend."""

    path: Path
    freshness: Freshness

    # -- results
    async def save_result(self, result: VerificationResult, *, now: datetime) -> Decision: ...
    async def save_results(
        self, results: Sequence[VerificationResult], *, now: datetime
    ) -> list[Decision]: ...
    async def fresh_result(self, email: str, *, now: datetime) -> VerificationResult | None: ...
    async def address_forms(self, normalized: str) -> list[str]: ...
    async def share_result(
        self, normalized: str, emails: Sequence[str], *, now: datetime
    ) -> None: ...
    async def connectors_holding(self, emails: Sequence[str]) -> dict[str, int]: ...

    # -- the queue
    async def queue_emails(
        self, connector: str, emails: Iterable[str], *, now: datetime
    ) -> int: ...
    async def enqueue_expired(self, connector: str, *, now: datetime) -> int: ...
    async def take_due(
        self, connector: str, *, after: tuple[str, str] | None, limit: int, now: datetime
    ) -> tuple[list[QueuedAddress], tuple[str, str] | None]: ...

    # -- contacts and cursors
    async def record_page(
        self,
        connector: str,
        contacts: Sequence[Contact],
        *,
        retired: Sequence[str] = (),
        cursor: str | None = None,
        now: datetime,
    ) -> PageCounts: ...
    async def contacts_to_write(
        self,
        connector: str,
        *,
        after_id: int = 0,
        limit: int = 100,
        now: datetime,
        emails: Sequence[str] | None = None,
    ) -> list[ContactToWrite]: ...
    async def mark_written(
        self, connector: str, written: Mapping[str, Mapping[str, str]]
    ) -> None: ...
    async def retire(self, connector: str, external_ids: Sequence[str]) -> int: ...
    async def mark_write_failed(
        self, connector: str, external_ids: Sequence[str], *, retry_at: datetime
    ) -> None: ...
    async def cursor(self, connector: str, name: str = "updated_at") -> str | None: ...
    async def advance_cursor(
        self, connector: str, value: str, *, name: str = "updated_at", now: datetime
    ) -> None: ...

    # -- drop-folder files
    async def take_csv_file(
        self, connector: str, name: str, *, size: int, fingerprint: str, now: datetime
    ) -> CsvFileRecord: ...
    async def set_csv_file(
        self,
        file_id: int,
        state: CsvFileState,
        *,
        rows: int | None = None,
        queued: int | None = None,
        error: str | None = None,
        now: datetime,
    ) -> None: ...
    async def csv_file_written(
        self,
        file_id: int,
        *,
        rows: int,
        output: str,
        pending: int,
        retry_at: datetime | None,
        now: datetime,
    ) -> None: ...
    async def csv_files_due(
        self, connector: str, *, now: datetime, limit: int = 100
    ) -> list[CsvFileRecord]: ...
    async def reschedule_csv_file(
        self, file_id: int, *, pending: int, retry_at: datetime | None, rewritten: bool
    ) -> int: ...
    async def with_results(self, read: Callable[[ResultLookup], _T]) -> _T: ...

    # -- the run log, health and figures
    async def start_run(self, connector: str, *, kind: str = "pass", now: datetime) -> int: ...
    async def finish_run(
        self,
        run_id: int,
        *,
        outcome: RunOutcome,
        counts: RunCounts,
        error: str | None = None,
        now: datetime,
    ) -> None: ...
    async def interrupt_runs(self, connectors: Iterable[str], *, now: datetime) -> int: ...
    async def recent_outcomes(self, connector: str, *, limit: int) -> list[RunOutcome]: ...
    async def status_summary(self, connectors: Iterable[str] = ()) -> StatusSummary: ...
    async def check_usable(self) -> None: ...
    async def save_doctor_report(self, report: Mapping[str, Any], *, now: datetime) -> None: ...
    async def figures(self, read: Callable[[Store], _T]) -> _T: ...
    async def aclose(self) -> None: ...


class _Lane:
    """One thread with its own connection to the store (opened there, on first use)."""

    def __init__(self, open_store: Callable[[], Store], name: str) -> None:
        self._open = open_store
        self._name = name
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._store: Store | None = None

    async def call(self, verb: Callable[[Store], _T]) -> _T:
        """Return `verb(store)` run in this lane's thread; a busy store is waited out."""
        loop = asyncio.get_running_loop()
        wait_s = BUSY_FIRST_WAIT_S
        while True:
            try:
                return await loop.run_in_executor(self._pool, self._run, verb)
            except StoreBusy as exc:
                log.warning("store busy, trying again in %.2f s: %s", wait_s, exc)
                await asyncio.sleep(wait_s)
                wait_s = min(wait_s * 2, BUSY_LONGEST_WAIT_S)

    def _run(self, verb: Callable[[Store], _T]) -> _T:
        if self._store is None:
            self._store = self._open()
        return verb(self._store)

    def close(self) -> None:
        """Close the connection in its thread and end the thread."""

        def close_store() -> None:
            if self._store is not None:
                self._store.close()
                self._store = None

        self._pool.submit(close_store)
        self._pool.shutdown(wait=True)


def _on(lane: str, name: str) -> Any:
    """Return the async verb `name`: the Store verb of that name, run on the lane's thread.

    Arguments that are iterables are taken into a list first: the caller may reuse them while
    the verb waits. The signatures are AsyncStore's (and Store's); written once, there.
    """

    async def run(self: SQLiteAsyncStore, *args: Any, **kwargs: Any) -> Any:
        args = tuple(_taken(a) for a in args)
        return await getattr(self, lane).call(lambda store: getattr(store, name)(*args, **kwargs))

    run.__name__ = run.__qualname__ = name
    run.__doc__ = getattr(Store, name).__doc__
    return run


def _taken(value: Any) -> Any:
    """Return a one-shot or changing iterable (a generator, a set, a dict's keys) as a list;
    sequences, mappings and plain values as they are."""
    if isinstance(value, Sequence | Mapping) or not isinstance(value, Iterable):
        return value
    return list(value)


def _create(path: Path, freshness: Freshness) -> None:
    """Create or migrate the store and check it can be written (in one thread: sqlite3)."""
    Store(path, freshness=freshness).close()


class SQLiteAsyncStore:
    """The SQLite backend of AsyncStore: a writer, a reader and a long-read lane (threads).

    Open with `open()` (creates or migrates the schema, off the loop) or `over(store)` for a
    store already open; the lanes attach their own connections to the same file.
    """

    def __init__(
        self, path: Path | str, *, freshness: Freshness, busy_timeout_s: float = 10.0
    ) -> None:
        self.path = Path(path)
        self.freshness = freshness

        def attach() -> Store:
            return Store(
                self.path, freshness=freshness, busy_timeout_s=busy_timeout_s, migrate=False
            )

        self._writes = _Lane(attach, "mailprobe-store-write")
        self._reads = _Lane(attach, "mailprobe-store-read")
        self._long_reads = _Lane(attach, "mailprobe-store-long-read")

    @classmethod
    async def open(
        cls, path: Path | str, *, freshness: Freshness, busy_timeout_s: float = 10.0
    ) -> SQLiteAsyncStore:
        """Open the store at `path`: create or migrate it, check it can be written (StoreError)."""
        await asyncio.to_thread(_create, Path(path), freshness)
        return cls(path, freshness=freshness, busy_timeout_s=busy_timeout_s)

    @classmethod
    def over(cls, store: Store) -> SQLiteAsyncStore:
        """Return the async verbs of a store already open (its file, its freshness rules)."""
        return cls(store.path, freshness=store.freshness)

    async def aclose(self) -> None:
        """Close every lane's connection and thread."""
        for lane in (self._writes, self._reads, self._long_reads):
            await asyncio.to_thread(lane.close)

    def close(self) -> None:
        """Close every lane from outside a running loop (a command's ExitStack)."""
        for lane in (self._writes, self._reads, self._long_reads):
            lane.close()

    async def __aenter__(self) -> SQLiteAsyncStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the verbs: each runs the Store verb of the same name on its lane -----------------------

    save_result = _on("_writes", "save_result")
    save_results = _on("_writes", "save_results")  # one transaction for the batch
    fresh_result = _on("_reads", "fresh_result")
    address_forms = _on("_reads", "address_forms")
    share_result = _on("_writes", "share_result")
    connectors_holding = _on("_reads", "connectors_holding")
    queue_emails = _on("_writes", "queue_emails")
    enqueue_expired = _on("_writes", "enqueue_expired")
    take_due = _on("_writes", "take_due")  # drops addresses answered meanwhile: a write
    record_page = _on("_writes", "record_page")
    contacts_to_write = _on("_reads", "contacts_to_write")
    mark_written = _on("_writes", "mark_written")
    retire = _on("_writes", "retire")
    mark_write_failed = _on("_writes", "mark_write_failed")
    cursor = _on("_reads", "cursor")
    advance_cursor = _on("_writes", "advance_cursor")
    take_csv_file = _on("_writes", "take_csv_file")
    set_csv_file = _on("_writes", "set_csv_file")
    csv_file_written = _on("_writes", "csv_file_written")
    csv_files_due = _on("_reads", "csv_files_due")
    reschedule_csv_file = _on("_writes", "reschedule_csv_file")
    start_run = _on("_writes", "start_run")
    finish_run = _on("_writes", "finish_run")
    interrupt_runs = _on("_writes", "interrupt_runs")
    recent_outcomes = _on("_reads", "recent_outcomes")
    status_summary = _on("_reads", "status_summary")
    check_usable = _on("_reads", "check_usable")  # lock-free: schema read, permissions
    save_doctor_report = _on("_writes", "save_doctor_report")

    async def with_results(self, read: Callable[[ResultLookup], _T]) -> _T:
        """Return `read(lookup)` run on the long-read lane: a blocking pass over a file that
        looks up many answers (a drop file's output), never in front of a cached answer."""
        return await self._long_reads.call(read)

    async def figures(self, read: Callable[[Store], _T]) -> _T:
        """Return `read(store)` (the dashboard's read-only figures) on the long-read lane."""
        return await self._long_reads.call(read)
