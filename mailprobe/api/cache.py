"""The result cache in front of the engine: the store's (shared with the daemon) or in memory.

Owns where answers wait between requests; the async store keeps sqlite3 off the event loop.
What is reused and for how long is freshness.py's decision; the SQL is the store's verbs only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from mailprobe.engine import VerificationResult

from ..errors import StoreError
from ..freshness import Cached, Freshness
from ..store import StatusSummary, Store
from ..store_async import AsyncStore, SQLiteAsyncStore

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


class StoreCache:
    """The store's result cache: the daemon's passes and the API share one set of answers.

    Through the async store's verbs: its reads run beside its writes (WAL: a read never waits
    for a writer), so a pass holding the write lock cannot delay cached answers. `owned`: the
    cache closes the store with itself (the API opened it); else its opener closes it.
    """

    def __init__(self, store: AsyncStore, *, owned: bool = False) -> None:
        self._store = store
        self._owned = owned

    async def fresh(self, normalized: str, *, now: datetime) -> VerificationResult | None:
        """Return the store's reusable answer, or None (also when the store fails: logged)."""
        try:
            return await self._store.fresh_result(normalized, now=now)
        except StoreError as exc:
            log.warning("result cache read failed, verifying instead: %s", exc)
            return None

    async def save(self, result: VerificationResult, *, now: datetime) -> None:
        """Save the result through the store (logged, not raised, when the store fails)."""
        try:
            await self._store.save_result(result, now=now)
        except StoreError as exc:
            log.warning("result cache write failed: %s", exc)

    async def problem(self) -> str | None:
        """Return None when the store can be read and its file written, else what is wrong.

        Read-only on purpose: a probe every few seconds must not queue for the write lock the
        daemon's passes and the API's saves need (nor hold it, however briefly).
        """
        try:
            await self._store.check_usable()
        except StoreError as exc:
            return str(exc)
        return None

    async def summary(self, connectors: Sequence[str]) -> StatusSummary | None:
        """Return the store's per-connector figures."""
        return await self._store.status_summary(connectors)

    async def figures(self, read: Callable[[Store], _T]) -> _T | None:
        """Return `read(store)` run on the store's long-read lane, off the event loop."""
        return await self._store.figures(read)

    async def aclose(self) -> None:
        """Close the store when this cache opened it."""
        if self._owned:
            await self._store.aclose()


def store_cache(store: AsyncStore | Store) -> StoreCache:
    """Return the cache over `store`; a plain Store gets async verbs the cache owns."""
    if isinstance(store, Store):
        return StoreCache(SQLiteAsyncStore.over(store), owned=True)
    return StoreCache(store)
