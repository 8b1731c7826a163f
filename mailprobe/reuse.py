"""`mailprobe verify` with the store: reuse the answers it keeps, and keep the new ones.

The daemon, the API and earlier runs of `verify` share one result cache, the store. A fresh
answer there (freshness.py decides how long one lives) comes back without any SMTP; every
other address goes to the engine and its answer is saved (in batches, one transaction each),
so `mailprobe results export`, `forget` and the daemon's passes see it. With `fresh=True`
(`verify --fresh`) every address is verified now and the answers still replace the stored
ones. No SQL here: the store's verbs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mailprobe.engine import VerificationResult

from .store_async import AsyncStore

if TYPE_CHECKING:
    from .passes import BulkVerifier

#: Results waiting for the caller: bounds what reading ahead through cached answers can hold.
_BUFFER = 1000
#: New answers saved per transaction (one commit per address would double a big run's time),
#: and at least this often while answers trickle in.
_SAVE_BATCH = 500
_SAVE_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception


_DONE = object()


def _now() -> datetime:
    return datetime.now(UTC)


async def _each(emails: Iterable[str] | AsyncIterable[str]) -> AsyncIterator[str]:
    if isinstance(emails, AsyncIterable):
        async for email in emails:
            yield email
    else:
        for email in emails:
            yield email


class StoreBacked:
    """A verifier that answers from the store when it can, and saves what the engine finds."""

    def __init__(
        self,
        verifier: BulkVerifier,
        store: AsyncStore,
        *,
        fresh: bool = False,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.verifier = verifier
        self.store = store
        self.fresh = fresh  # verify every address now, whatever the store holds
        self.clock = clock
        self.reused = 0  # answers that came from the store

    def verify_many(
        self, emails: Iterable[str] | AsyncIterable[str]
    ) -> AsyncIterator[VerificationResult]:
        """Return one result per address, in completion order; `result.email` is the input."""
        return self._results(emails)

    async def _results(
        self, emails: Iterable[str] | AsyncIterable[str]
    ) -> AsyncIterator[VerificationResult]:
        out: asyncio.Queue[object] = asyncio.Queue(maxsize=_BUFFER)
        task = asyncio.create_task(self._verify(self._misses(emails, out), out))
        try:
            while (item := await out.get()) is not _DONE:
                if isinstance(item, _Failed):
                    raise item.error
                assert isinstance(item, VerificationResult)
                yield item
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _misses(
        self, emails: Iterable[str] | AsyncIterable[str], out: asyncio.Queue[object]
    ) -> AsyncIterator[str]:
        """Yield the addresses the store has no fresh answer for; hand the others to `out`."""
        async for email in _each(emails):
            stored = None if self.fresh else await self.store.fresh_result(email, now=self.clock())
            if stored is None:
                yield email
            else:
                self.reused += 1
                await out.put(replace(stored, email=email))

    async def _verify(self, misses: AsyncIterator[str], out: asyncio.Queue[object]) -> None:
        """Verify the misses, saving the answers in batches, then mark the end (or the
        failure) in `out`."""
        unsaved: list[VerificationResult] = []
        since = time.monotonic()
        try:
            async with aclosing(self.verifier.verify_many(misses)) as results:
                async for result in results:
                    if not unsaved:
                        since = time.monotonic()
                    unsaved.append(result)
                    if len(unsaved) >= _SAVE_BATCH or time.monotonic() - since >= _SAVE_EVERY_S:
                        await self._save(unsaved)
                    await out.put(result)
        except Exception as exc:  # handed to the caller, who raises it
            await out.put(_Failed(exc))
            return
        finally:
            await self._save(unsaved)  # also after Ctrl-C: what was printed is kept
        await out.put(_DONE)

    async def _save(self, unsaved: list[VerificationResult]) -> None:
        """Save the batch off the event loop (the store's writer thread), then empty it."""
        if unsaved:
            batch = list(unsaved)
            unsaved.clear()
            await self.store.save_results(batch, now=self.clock())
