"""The result cache in front of the engine: the store's (shared with the daemon) or in memory.

Owns where answers wait between requests and the threads that keep sqlite3 off the event loop.
What is reused and for how long is freshness.py's decision; the SQL is the store's verbs only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Protocol, TypeVar

from engine import VerificationResult

from ..errors import StoreError
from ..freshness import Cached, Freshness
from ..store import StatusSummary, Store

log = logging.getLogger(__package__)  # "mailprobe.api", the one logger of the whole API

_T = TypeVar("_T")


class ResultCache(Protocol):
    """Where answers wait between requests; `fresh()` returns only what may still be reused."""

    async def fresh(self, normalized: str, *, now: datetime) -> VerificationResult | None:
        """Return the reusable answer for a normalised address, or None."""
        ...

    async def save(self, result: VerificationResult, *, now: datetime) -> None:
        """Keep a finished verification (freshness decides what is kept and for how long)."""
        ...

    async def problem(self) -> str | None:
        """Return None when the cache can be written, else what is wrong (for /readyz)."""
        ...

    async def summary(self, connectors: Sequence[str]) -> StatusSummary | None:
        """Return the store's queue and pass figures for /metrics, None without a store."""
        ...

    async def figures(self, read: Callable[[Store], _T]) -> _T | None:
        """Return `read(store)` run on a store connection (the dashboard), None without a store."""
        ...

    async def aclose(self) -> None:
        """Release what the cache holds."""
        ...


class MemoryCache:
    """Answers in a dict with freshness.py's expiry, for an API run without a store."""

    def __init__(self, freshness: Freshness, *, max_entries: int = 100_000) -> None:
        self._freshness = freshness
        self._max_entries = max_entries
        self._entries: dict[str, Cached] = {}

    async def fresh(self, normalized: str, *, now: datetime) -> VerificationResult | None:
        """Return the reusable answer for a normalised address, or None."""
        entry = self._entries.get(normalized)
        return entry.result if entry is not None and entry.expires_at > now else None

    async def save(self, result: VerificationResult, *, now: datetime) -> None:
        """Keep a finished verification as the store would (an unknown never replaces valid)."""
        decision = self._freshness.decide(self._entries.get(result.normalized), result, now=now)
        if len(self._entries) >= self._max_entries:
            self._entries = {k: v for k, v in self._entries.items() if v.expires_at > now}
            if len(self._entries) >= self._max_entries:  # still full: keep the newer half
                self._entries = dict(list(self._entries.items())[self._max_entries // 2 :])
        self._entries.pop(result.normalized, None)  # re-inserted last: dict order is age order
        self._entries[result.normalized] = Cached(
            decision.result, decision.expires_at, decision.attempts
        )

    async def problem(self) -> str | None:
        """Return None: memory is always writable."""
        return None

    async def summary(self, connectors: Sequence[str]) -> StatusSummary | None:
        """Return None: there is no store to report on."""
        return None

    async def figures(self, read: Callable[[Store], _T]) -> _T | None:
        """Return None: there is no store to read."""
        return None

    async def aclose(self) -> None:
        """Forget every answer."""
        self._entries.clear()


class _StoreThread:
    """One worker thread with its own store connection: sqlite3 connections stay in the
    thread that opened them, and a write waiting for the lock must not block the event loop."""

    def __init__(self, store: Store, name: str) -> None:
        self._path = store.path
        self._freshness = store.freshness
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._store: Store | None = None

    async def call(self, verb: Callable[[Store], _T]) -> _T:
        """Return `verb(store)` run in this thread (the connection opens on first use)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, verb)

    def _run(self, verb: Callable[[Store], _T]) -> _T:
        if self._store is None:
            self._store = Store(self._path, freshness=self._freshness)
        return verb(self._store)

    def close(self) -> None:
        """Close the connection in its thread and end the thread."""

        def close_store() -> None:
            if self._store is not None:
                self._store.close()
                self._store = None

        self._pool.submit(close_store)
        self._pool.shutdown(wait=True)


class StoreCache:
    """The store's result cache: the daemon's passes and the API share one set of answers.

    Reads and writes use separate threads and connections: in WAL mode a read never waits
    for a writer, so a pass holding the write lock cannot delay cached answers.
    """

    def __init__(self, store: Store) -> None:
        self._reads = _StoreThread(store, "mailprobe-api-store-read")
        self._writes = _StoreThread(store, "mailprobe-api-store-write")
        # The dashboard's reads take a while on a big store: never in front of a cached answer.
        self._figures = _StoreThread(store, "mailprobe-api-store-figures")

    async def fresh(self, normalized: str, *, now: datetime) -> VerificationResult | None:
        """Return the store's reusable answer, or None (also when the store fails: logged)."""
        try:
            return await self._reads.call(lambda store: store.fresh_result(normalized, now=now))
        except StoreError as exc:
            log.warning("result cache read failed, verifying instead: %s", exc)
            return None

    async def save(self, result: VerificationResult, *, now: datetime) -> None:
        """Save the result through the store (logged, not raised, when the store fails)."""
        try:
            await self._writes.call(lambda store: store.save_result(result, now=now))
        except StoreError as exc:
            log.warning("result cache write failed: %s", exc)

    async def problem(self) -> str | None:
        """Return None when the store can be read and its file written, else what is wrong.

        Read-only on purpose: a probe every few seconds must not queue for the write lock the
        daemon's passes and the API's saves need (nor hold it, however briefly).
        """
        try:
            await self._reads.call(lambda store: store.check_usable())
        except StoreError as exc:
            return str(exc)
        return None

    async def summary(self, connectors: Sequence[str]) -> StatusSummary | None:
        """Return the store's per-connector figures."""
        return await self._reads.call(lambda store: store.status_summary(connectors))

    async def figures(self, read: Callable[[Store], _T]) -> _T | None:
        """Return `read(store)` run on a connection of its own, off the event loop."""
        return await self._figures.call(read)

    async def aclose(self) -> None:
        """Close the connections and their threads."""
        await asyncio.to_thread(self._reads.close)
        await asyncio.to_thread(self._writes.close)
        await asyncio.to_thread(self._figures.close)
