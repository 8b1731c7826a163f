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

from connectors.base import Contact
from engine.result import VerificationResult

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

    async def __aenter__(self) -> SQLiteAsyncStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- results ------------------------------------------------------------------------------

    async def save_result(self, result: VerificationResult, *, now: datetime) -> Decision:
        return await self._writes.call(lambda s: s.save_result(result, now=now))

    async def fresh_result(self, email: str, *, now: datetime) -> VerificationResult | None:
        return await self._reads.call(lambda s: s.fresh_result(email, now=now))

    async def address_forms(self, normalized: str) -> list[str]:
        return await self._reads.call(lambda s: s.address_forms(normalized))

    async def share_result(self, normalized: str, emails: Sequence[str], *, now: datetime) -> None:
        await self._writes.call(lambda s: s.share_result(normalized, emails, now=now))

    async def connectors_holding(self, emails: Sequence[str]) -> dict[str, int]:
        return await self._reads.call(lambda s: s.connectors_holding(emails))

    # -- the queue ----------------------------------------------------------------------------

    async def queue_emails(self, connector: str, emails: Iterable[str], *, now: datetime) -> int:
        chosen = list(emails)  # taken now: the caller may reuse its collection meanwhile
        return await self._writes.call(lambda s: s.queue_emails(connector, chosen, now=now))

    async def enqueue_expired(self, connector: str, *, now: datetime) -> int:
        return await self._writes.call(lambda s: s.enqueue_expired(connector, now=now))

    async def take_due(
        self, connector: str, *, after: tuple[str, str] | None, limit: int, now: datetime
    ) -> tuple[list[QueuedAddress], tuple[str, str] | None]:
        return await self._writes.call(
            lambda s: s.take_due(connector, after=after, limit=limit, now=now)
        )

    # -- contacts and cursors -----------------------------------------------------------------

    async def record_page(
        self,
        connector: str,
        contacts: Sequence[Contact],
        *,
        retired: Sequence[str] = (),
        cursor: str | None = None,
        now: datetime,
    ) -> PageCounts:
        return await self._writes.call(
            lambda s: s.record_page(connector, contacts, retired=retired, cursor=cursor, now=now)
        )

    async def contacts_to_write(
        self,
        connector: str,
        *,
        after_id: int = 0,
        limit: int = 100,
        now: datetime,
        emails: Sequence[str] | None = None,
    ) -> list[ContactToWrite]:
        return await self._reads.call(
            lambda s: s.contacts_to_write(
                connector, after_id=after_id, limit=limit, now=now, emails=emails
            )
        )

    async def mark_written(self, connector: str, written: Mapping[str, Mapping[str, str]]) -> None:
        await self._writes.call(lambda s: s.mark_written(connector, written))

    async def retire(self, connector: str, external_ids: Sequence[str]) -> int:
        return await self._writes.call(lambda s: s.retire(connector, external_ids))

    async def mark_write_failed(
        self, connector: str, external_ids: Sequence[str], *, retry_at: datetime
    ) -> None:
        await self._writes.call(
            lambda s: s.mark_write_failed(connector, external_ids, retry_at=retry_at)
        )

    async def cursor(self, connector: str, name: str = "updated_at") -> str | None:
        return await self._reads.call(lambda s: s.cursor(connector, name))

    async def advance_cursor(
        self, connector: str, value: str, *, name: str = "updated_at", now: datetime
    ) -> None:
        await self._writes.call(lambda s: s.advance_cursor(connector, value, name=name, now=now))

    # -- drop-folder files --------------------------------------------------------------------

    async def take_csv_file(
        self, connector: str, name: str, *, size: int, fingerprint: str, now: datetime
    ) -> CsvFileRecord:
        return await self._writes.call(
            lambda s: s.take_csv_file(connector, name, size=size, fingerprint=fingerprint, now=now)
        )

    async def set_csv_file(
        self,
        file_id: int,
        state: CsvFileState,
        *,
        rows: int | None = None,
        queued: int | None = None,
        error: str | None = None,
        now: datetime,
    ) -> None:
        await self._writes.call(
            lambda s: s.set_csv_file(file_id, state, rows=rows, queued=queued, error=error, now=now)
        )

    async def csv_file_written(
        self,
        file_id: int,
        *,
        rows: int,
        output: str,
        pending: int,
        retry_at: datetime | None,
        now: datetime,
    ) -> None:
        await self._writes.call(
            lambda s: s.csv_file_written(
                file_id, rows=rows, output=output, pending=pending, retry_at=retry_at, now=now
            )
        )

    async def csv_files_due(
        self, connector: str, *, now: datetime, limit: int = 100
    ) -> list[CsvFileRecord]:
        return await self._reads.call(lambda s: s.csv_files_due(connector, now=now, limit=limit))

    async def reschedule_csv_file(
        self, file_id: int, *, pending: int, retry_at: datetime | None, rewritten: bool
    ) -> int:
        return await self._writes.call(
            lambda s: s.reschedule_csv_file(
                file_id, pending=pending, retry_at=retry_at, rewritten=rewritten
            )
        )

    async def with_results(self, read: Callable[[ResultLookup], _T]) -> _T:
        """Return `read(lookup)` run on the long-read lane: a blocking pass over a file that
        looks up many answers (a drop file's output), never in front of a cached answer."""
        return await self._long_reads.call(read)

    # -- the run log, health and figures ------------------------------------------------------

    async def start_run(self, connector: str, *, kind: str = "pass", now: datetime) -> int:
        return await self._writes.call(lambda s: s.start_run(connector, kind=kind, now=now))

    async def finish_run(
        self,
        run_id: int,
        *,
        outcome: RunOutcome,
        counts: RunCounts,
        error: str | None = None,
        now: datetime,
    ) -> None:
        await self._writes.call(
            lambda s: s.finish_run(run_id, outcome=outcome, counts=counts, error=error, now=now)
        )

    async def interrupt_runs(self, connectors: Iterable[str], *, now: datetime) -> int:
        names = list(connectors)
        return await self._writes.call(lambda s: s.interrupt_runs(names, now=now))

    async def recent_outcomes(self, connector: str, *, limit: int) -> list[RunOutcome]:
        return await self._reads.call(lambda s: s.recent_outcomes(connector, limit=limit))

    async def status_summary(self, connectors: Iterable[str] = ()) -> StatusSummary:
        names = list(connectors)
        return await self._reads.call(lambda s: s.status_summary(names))

    async def check_usable(self) -> None:
        """Raise StoreError unless the store can be read and its files written; lock-free."""
        await self._reads.call(lambda s: s.check_usable())

    async def save_doctor_report(self, report: Mapping[str, Any], *, now: datetime) -> None:
        await self._writes.call(lambda s: s.save_doctor_report(report, now=now))

    async def figures(self, read: Callable[[Store], _T]) -> _T:
        """Return `read(store)` (the dashboard's read-only figures) on the long-read lane."""
        return await self._long_reads.call(read)
