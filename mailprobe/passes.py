"""What every pass shares: the verifier and store it works with, the run log, the lock, the
report, and verifying the queue (docs/architecture.md, "One contact from pull to write-back").

A pass of a CRM connector is crm_pass.py's; a pass of a drop folder is drop_pass.py's;
pipeline.py picks one per connector. A stop request (SIGTERM) is honoured between steps: the
current page, result or file stage completes, the rest waits for the next start. No SQL here
(store.py) and no wire formats (connectors).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from mailprobe.connectors.errors import ConnectorError, FatalConnectorError
from mailprobe.engine import MailprobeError, VerificationResult

from .errors import StoreError
from .locks import ConnectorBusy, pass_lock
from .logs import mask_secrets
from .store import RunCounts, RunOutcome, Store
from .store_async import AsyncStore, SQLiteAsyncStore

log = logging.getLogger("mailprobe.pipeline")  # one name for every pass's lines (log filters)

#: Addresses read from the queue per query while feeding the engine.
QUEUE_BATCH = 500


def utc_now() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)


class BulkVerifier(Protocol):
    """What the pipeline needs of engine.Verifier."""

    def verify_many(
        self, emails: Iterable[str] | AsyncIterable[str]
    ) -> AsyncIterator[VerificationResult]:
        """Yield one result per address, in completion order; `result.email` is the input."""
        ...


@dataclass(frozen=True, slots=True)
class PassReport:
    """How one pass ended and what it did."""

    connector: str
    outcome: RunOutcome
    counts: RunCounts
    error: str | None = None
    #: A drop folder's file still changing: a pass in this many seconds will take it.
    wake_in_s: float | None = None
    run_id: int | None = None  # its row in the run log; None for a pass that was skipped

    @property
    def ok(self) -> bool:
        """Return True unless the pass failed."""
        return self.outcome in (RunOutcome.OK, RunOutcome.STOPPED)


@dataclass(slots=True)
class Tally:
    pulled: int = 0
    queued: int = 0
    verified: int = 0
    written: int = 0
    failed: int = 0
    wake_in_s: float | None = None

    def counts(self) -> RunCounts:
        return RunCounts(self.pulled, self.queued, self.verified, self.written, self.failed)


class PassContext:
    """The store, verifier, stop flag and clock the passes share, and verifying the queue."""

    def __init__(
        self,
        store: AsyncStore | Store,
        verifier: BulkVerifier,
        *,
        stop: threading.Event | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        # A plain Store (tests, one-shot tools) gets the async verbs on connections of its own.
        self.store: AsyncStore = SQLiteAsyncStore.over(store) if isinstance(store, Store) else store
        self.verifier = verifier
        self.stop = stop or threading.Event()
        self.clock = clock

    @property
    def stopping(self) -> bool:
        """Return True once a stop was requested: finish the current step, start no other."""
        return self.stop.is_set()

    async def verify_queue(self, connector: str) -> int:
        """Verify what `connector` waits for, saving each result as it arrives; return how many."""
        verified = 0
        async with aclosing(self.verifier.verify_many(self._due(connector))) as results:
            async for result in results:
                await self.store.save_result(result, now=self.clock())
                verified += 1
                if self.stopping:
                    break
        return verified

    async def _due(self, connector: str) -> AsyncIterator[str]:
        """Yield queued addresses in (domain, email) order, reading the queue in batches."""
        after: tuple[str, str] | None = None
        while not self.stopping:
            batch, after = await self.store.take_due(
                connector, after=after, limit=QUEUE_BATCH, now=self.clock()
            )
            if after is None:
                return
            for item in batch:
                yield item.email

    # -- a pass, recorded ---------------------------------------------------------------------

    async def recorded(
        self, name: str, kind: str, work: Callable[[Tally], Awaitable[None]]
    ) -> PassReport:
        """Run `work` as one pass of connector `name` under its lock, logged in the store.

        A connector's failure ends its pass and is reported, never raised: other connectors
        go on. Store errors are raised, since no pass can work without the store.
        """
        try:
            with pass_lock(self.store.path, name):
                # Holding the lock, a pass still marked running belongs to a dead process.
                await self.store.interrupt_runs([name], now=self.clock())
                return await self._locked(name, kind, work)
        except ConnectorBusy as exc:
            log.warning("pass skipped", extra={"connector": name, "why": str(exc)})
            return PassReport(name, RunOutcome.FAILED, Tally().counts(), str(exc))

    async def _locked(
        self, name: str, kind: str, work: Callable[[Tally], Awaitable[None]]
    ) -> PassReport:
        run_id = await self.store.start_run(name, kind=kind, now=self.clock())
        tally = Tally()
        try:
            await work(tally)
            outcome, error = (RunOutcome.STOPPED if self.stopping else RunOutcome.OK), None
        except StoreError as exc:
            with suppress(StoreError):
                await self.store.finish_run(
                    run_id,
                    outcome=RunOutcome.FAILED,
                    counts=tally.counts(),
                    error=mask_secrets(str(exc)),
                    now=self.clock(),
                )
            raise
        except Exception as exc:
            outcome, error = _failure(exc, name)
        # An error text may quote a library that quoted a credential: masked before it is kept.
        error = mask_secrets(error) if error else error
        report = PassReport(name, outcome, tally.counts(), error, tally.wake_in_s, run_id=run_id)
        await self.store.finish_run(
            run_id, outcome=outcome, counts=report.counts, error=error, now=self.clock()
        )
        _log(report, kind)
        return report


def _log(report: PassReport, kind: str) -> None:
    counts = report.counts
    fields = {
        "connector": report.connector,
        "kind": kind,
        "outcome": str(report.outcome),
        "pulled": counts.pulled,
        "queued": counts.queued,
        "verified": counts.verified,
        "written": counts.written,
        "failed": counts.failed,
    }
    if report.error:
        log.error("%s failed: %s", kind, report.error, extra=fields)
    else:
        log.info("%s finished", kind, extra=fields)


def _failure(exc: Exception, connector: str) -> tuple[RunOutcome, str]:
    """Return how a pass that raised `exc` ended; call from the `except` block (traceback)."""
    if isinstance(exc, FatalConnectorError):
        return RunOutcome.FATAL, str(exc)  # bad token or configuration: retrying will not help
    if isinstance(exc, ConnectorError | MailprobeError):
        return RunOutcome.FAILED, str(exc)
    log.exception("pass failed", extra={"connector": connector})  # a bug: keep the traceback
    return RunOutcome.FAILED, f"internal error: {type(exc).__name__}: {exc}"
