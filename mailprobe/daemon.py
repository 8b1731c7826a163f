"""The long-running service and the one-shot sync: scheduling passes, stopping cleanly.

`Daemon.run()` schedules one APScheduler job per enabled connector (id = its name, never two
passes at once, missed runs coalesced) and a retry job for due unknowns and expired results (CRM
contacts, and drop-folder files whose output is then rewritten). It runs what it is given:
wiring.py builds the store, connectors and verifier, starts the HTTP API and the /metrics
listener beside it, and turns SIGTERM/SIGINT into `request_stop()`. A dropped file still
being copied brings its folder's next pass forward to when the file will have settled. A stop
lets the current step finish (a page, a result, a file stage) and return, so the process exits
0 and the next start resumes.
A connector that fails is logged and recorded for `mailprobe status`; one that cannot work until
its configuration changes (bad token) is paused until restart; the others go on.

AsyncIOScheduler runs jobs as tasks on the one event loop the engine, the store's verbs and the
API share; the store's SQLite work runs on its own threads (store_async.py), never on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import astuple, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .crm_pass import CrmConnector
from .drop_pass import CsvDrop
from .errors import StoreError
from .passes import BulkVerifier, PassReport
from .pipeline import Connector, Pipeline
from .settings import AppSettings, interval_seconds
from .store import RunCounts, RunOutcome, Store
from .store_async import AsyncStore

log = logging.getLogger(__name__)

#: Passes `sync` runs again for files that were still being copied, at most.
SETTLE_ROUNDS = 5
#: How often the retry job looks for due unknowns: of CRM contacts and of drop files' rows.
RETRY_INTERVAL_S = 300.0
RETRY_JOB_ID = "_retries"


def trigger_for(schedule: str) -> BaseTrigger:
    """Return the APScheduler trigger of a schedule: an interval (`15m`) or a crontab line."""
    seconds = interval_seconds(schedule)
    if seconds is not None:
        return IntervalTrigger(seconds=seconds, timezone=UTC)
    return CronTrigger.from_crontab(schedule, timezone=UTC)


def announce_drop_folders(connectors: Mapping[str, Connector]) -> None:
    """Create each drop folder's layout and log where to drop files."""
    for connector in connectors.values():
        if isinstance(connector, CsvDrop):
            connector.folder.ensure_layout()
            log.info(
                "drop CSV files into %s; verified copies appear in %s",
                connector.folder.inbox.resolve(),
                connector.folder.outbox.resolve(),
                extra={"connector": connector.name},
            )


class Daemon:
    """Runs connector passes on their schedules until asked to stop."""

    def __init__(
        self,
        settings: AppSettings,
        *,
        store: AsyncStore | Store,
        connectors: Mapping[str, Connector],
        verifier: BulkVerifier,
        stop: threading.Event | None = None,
        retry_interval_s: float = RETRY_INTERVAL_S,
        on_pass: Callable[[PassReport], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_pass = on_pass  # told of every finished pass (metrics, tests)
        self.connectors = dict(connectors)
        self.stop = stop or threading.Event()
        self.pipeline = Pipeline(store, verifier, stop=self.stop)
        self.store = self.pipeline.store
        self.retry_interval_s = retry_interval_s
        self.scheduler: AsyncIOScheduler | None = None
        self.failure: StoreError | None = None
        self.paused: set[str] = set()
        self._locks = {name: asyncio.Lock() for name in self.connectors}
        self._running: set[asyncio.Task[Any]] = set()
        self._wake: asyncio.Event | None = None

    def request_stop(self) -> None:
        """Ask every pass to finish its current step, then return from run()."""
        if not self.stop.is_set():
            log.info("stopping: finishing the current step")
        self.stop.set()
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Run until request_stop() (or SIGTERM/SIGINT); raise StoreError if the store failed."""
        self._wake = asyncio.Event()
        if self.stop.is_set():
            self._wake.set()
        announce_drop_folders(self.connectors)
        self.scheduler = self._schedule()
        self.scheduler.start()
        log.info(
            "mailprobe running",
            extra={"store": str(self.store.path), "connectors": sorted(self.connectors)},
        )
        try:
            await self._wake.wait()
        finally:
            # Passes finish their current step first: shutting the scheduler down cancels the
            # jobs still running, and a pass's store verbs are awaited.
            self.scheduler.pause()
            await asyncio.gather(*self._running, return_exceptions=True)
            self.scheduler.shutdown(wait=False)
        log.info("mailprobe stopped")
        if self.failure is not None:
            raise self.failure

    def _schedule(self) -> AsyncIOScheduler:
        scheduler = AsyncIOScheduler(timezone=UTC)
        now = datetime.now(UTC)
        for name in self.connectors:
            schedule = self.settings.connectors[name].schedule
            trigger = trigger_for(schedule)
            # Intervals start with a pass now; a cron line waits for its first time.
            first = now if isinstance(trigger, IntervalTrigger) else None
            scheduler.add_job(
                self._pass_job,
                trigger,
                args=[name],
                id=name,
                name=f"{name} pass",
                max_instances=1,
                coalesce=True,
                replace_existing=True,
                misfire_grace_time=None,
                **({"next_run_time": first} if first else {}),
            )
        if self.connectors:
            scheduler.add_job(
                self._retry_job,
                IntervalTrigger(seconds=self.retry_interval_s, timezone=UTC),
                id=RETRY_JOB_ID,
                name="retries",
                max_instances=1,
                coalesce=True,
                replace_existing=True,
                misfire_grace_time=None,
            )
        return scheduler

    async def _pass_job(self, name: str) -> None:
        """Run one pass of `name` unless a pass or retry of it is already running."""
        await self._guarded(name, retry_only=False)

    async def _retry_job(self) -> None:
        """Verify due retries and expired results of each connector, and write them back."""
        for name, connector in self.connectors.items():
            if name in self.paused:
                continue
            if isinstance(connector, CrmConnector) or await self._file_retry_due(name):
                await self._guarded(name, retry_only=True)

    async def _file_retry_due(self, name: str) -> bool:
        """Return True when a drop folder has a verified file with rows due for a retry."""
        try:
            return bool(await self.store.csv_files_due(name, now=datetime.now(UTC), limit=1))
        except StoreError as exc:
            log.error("store failed: %s", exc, extra={"connector": name})
            self.failure = exc
            self.request_stop()
            return False

    async def _guarded(self, name: str, *, retry_only: bool) -> None:
        lock = self._locks[name]
        if self.stop.is_set() or lock.locked():
            return
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            async with lock:
                report = await self.pipeline.run_pass(self.connectors[name], retry_only=retry_only)
            if report.outcome is RunOutcome.FATAL:
                self._pause(name, report)
            if report.wake_in_s is not None:
                self._pass_soon(name, report.wake_in_s)
            if self.on_pass is not None:
                self.on_pass(report)
        except StoreError as exc:
            log.error("store failed: %s", exc, extra={"connector": name})
            self.failure = exc
            self.request_stop()
        finally:
            if task is not None:
                self._running.discard(task)

    def _pass_soon(self, name: str, delay_s: float) -> None:
        """Run `name`'s next pass within `delay_s` (a dropped file settles then), not later."""
        job = self.scheduler.get_job(name) if self.scheduler is not None else None
        if job is None or job.next_run_time is None or self.stop.is_set():
            return
        # A little after the file settles, so the pass finds it settled.
        wanted = datetime.now(UTC) + timedelta(seconds=delay_s + 0.2)
        if wanted < job.next_run_time:
            job.modify(next_run_time=wanted)

    def _pause(self, name: str, report: PassReport) -> None:
        self.paused.add(name)
        if self.scheduler is not None and self.scheduler.get_job(name) is not None:
            self.scheduler.pause_job(name)
        log.error(
            "connector paused until its configuration is fixed and mailprobe restarts: %s",
            report.error,
            extra={"connector": name},
        )


async def sync_once(
    settings: AppSettings,
    *,
    store: AsyncStore | Store,
    connectors: Mapping[str, Connector],
    verifier: BulkVerifier,
    stop: threading.Event | None = None,
) -> list[PassReport]:
    """Run one pass of each connector in turn; setting `stop` ends it after the current step."""
    stop = stop or threading.Event()
    announce_drop_folders(connectors)
    pipeline = Pipeline(store, verifier, stop=stop)
    reports = []
    for connector in connectors.values():
        if stop.is_set():
            break
        report = await pipeline.run_pass(connector)
        reports.append(await _after_settling(pipeline, connector, report, stop))
    return reports


async def _after_settling(
    pipeline: Pipeline, connector: Connector, report: PassReport, stop: threading.Event
) -> PassReport:
    """Return the pass's report once files that were still being copied were taken as well.

    `sync` is one pass, but a file dropped a moment before would otherwise wait for the next
    sync although the log said "taking it in N s": wait for it to settle (a few rounds at most,
    for a file that keeps changing) and pass again, counting both passes as one.
    """
    for _ in range(SETTLE_ROUNDS):
        if report.wake_in_s is None or stop.is_set():
            return report
        deadline = asyncio.get_running_loop().time() + report.wake_in_s + 0.2
        while not stop.is_set() and (left := deadline - asyncio.get_running_loop().time()) > 0:
            await asyncio.sleep(min(left, 0.25))  # a wall-clock wait; SIGTERM ends it early
        if stop.is_set():
            return report
        later = await pipeline.run_pass(connector)
        pairs = zip(astuple(report.counts), astuple(later.counts), strict=True)
        report = replace(later, counts=RunCounts(*(a + b for a, b in pairs)))
    return report
