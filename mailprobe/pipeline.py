"""One pass of one connector: pull → store and queue → verify → write back (docs/architecture.md).

CRM connectors (a Source and Sink, e.g. HubSpot, SendGrid):

1. pull pages changed since the cursor, up to the signpost (the pass's start); each page's
   contacts are stored with the cursor in one transaction (sorted sources), or the cursor moves
   once the whole pull is stored (unsorted sources);
2. queue only new addresses, changed addresses and expired results: a fresh cached answer is
   reused without any SMTP;
3. verify the queue with the bulk engine (grouped by domain there), saving each result as it
   arrives, so a kill loses at most the verifications in flight;
4. write back, in batches, only the fields whose value changed: compared with what we last
   wrote and with what the source showed; gone records are retired, failed ones retried later.

CSV drop folders: each ready file is registered, its distinct addresses queued (streamed in
batches: bounded memory at a million rows), verified, then the output written from the stored
results in one atomic file, then the input archived. Each stage is recorded, so a restart after
a kill resumes: every row is in the output exactly once and no saved result is verified again.
Rows whose answer is an unknown awaiting a retry are counted per file with the earliest retry
time, in the transaction that records the output; when due, a retry (every pass of the folder,
and the daemon's retry job) verifies them and rewrites the output in place from itself, again
atomically, so a kill at any point leaves the previous output whole and the retry to redo.

Unknown answers never block a pass: they are saved with their retry time (freshness.py), and a
later pass or the retry job queues them again. A stop request (SIGTERM) is honoured between
steps: the current page, result or file stage completes, the rest waits for the next start.
No SQL here (store.py) and no wire formats (connectors).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import aclosing, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from connectors.base import Contact, FieldUpdate, FieldValue, Page, PushReport
from connectors.csvdrop import CsvFileError, CsvTable, DropFolder
from connectors.errors import ConnectorError, FatalConnectorError
from connectors.fields import field_text, field_values, shows_value
from engine.errors import MailprobeError
from engine.result import VerificationResult, format_time, parse_time
from engine.untrusted import clean_text

from .csvoutput import MissingResult, OutputReport, Stopped, due_retries, write_output
from .errors import StoreError
from .locks import ConnectorBusy, pass_lock
from .logs import mask_secrets
from .store import ContactToWrite, CsvFileRecord, CsvFileState, RunCounts, RunOutcome, Store
from .store_async import AsyncStore, ResultLookup, SQLiteAsyncStore

log = logging.getLogger(__name__)

#: Addresses read from the queue per query while feeding the engine.
QUEUE_BATCH = 500
#: Distinct addresses of a dropped file queued per transaction.
FILE_BATCH = 5000
#: Records per Sink.push() call (HubSpot's batch limit is 100).
PUSH_BATCH = 100
#: Wait before writing again to a record the sink refused.
WRITE_RETRY = timedelta(minutes=15)

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


class CrmClient(Protocol):
    """A connector that is both Source and Sink (HubSpotConnector, SendGridConnector)."""

    name: str
    is_sorted: bool

    async def prepare(self) -> None: ...

    def pull(self, since: str | None, *, signpost: datetime) -> AsyncIterator[Page]: ...

    async def push(self, updates: Sequence[FieldUpdate]) -> PushReport: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CsvDrop:
    """A drop-folder connector, as wired from settings."""

    name: str
    folder: DropFolder


@dataclass(frozen=True, slots=True)
class CrmConnector:
    """A CRM or ESP connector, as wired from settings."""

    name: str
    client: CrmClient


Connector = CsvDrop | CrmConnector


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
class _Tally:
    pulled: int = 0
    queued: int = 0
    verified: int = 0
    written: int = 0
    failed: int = 0
    wake_in_s: float | None = None

    def counts(self) -> RunCounts:
        return RunCounts(self.pulled, self.queued, self.verified, self.written, self.failed)




def changed_fields(contact: ContactToWrite) -> tuple[dict[str, FieldValue], dict[str, str]]:
    """Return the fields to write (changed since written and not already at the source) and
    the canonical text of every field, to record once written."""
    values = field_values(contact.result, next_check=contact.expires_at.date())
    texts = {name: field_text(value) for name, value in values.items()}
    source = contact.source
    changed = {
        name: value
        for name, value in values.items()
        if texts[name] != contact.written.get(name)
        and not (source and shows_value(source.get(name), value))
    }
    return changed, texts


def next_cursor(since: str | None, newest: datetime | None, *, signpost: datetime) -> str | None:
    """Return the cursor after a complete unsorted pull, or None to keep `since`.

    The newest `updated_at` seen, never past the signpost: contacts a search index had not yet
    caught up with are read again next time rather than skipped. A first pass that saw nothing
    starts the next one from the signpost.
    """
    if newest is not None:
        return format_time(min(newest, signpost))
    return format_time(signpost) if since is None else None


def capped(cursor: str | None, *, signpost: datetime) -> str | None:
    """Return a sorted page's cursor, moved back to the signpost if it is past it."""
    if cursor is None:
        return None
    try:
        moment = parse_time(cursor)
    except ValueError:
        return cursor  # an opaque token: the connector's own business
    return format_time(signpost) if moment > signpost else cursor


class Pipeline:
    """Runs connector passes against one store and one verifier."""

    def __init__(
        self,
        store: AsyncStore | Store,
        verifier: BulkVerifier,
        *,
        stop: threading.Event | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        # A plain Store (tests, one-shot tools) gets the async verbs on connections of its own.
        self.store: AsyncStore = (
            SQLiteAsyncStore.over(store) if isinstance(store, Store) else store
        )
        self.verifier = verifier
        self.stop = stop or threading.Event()
        self.clock = clock
        self._prepared: set[str] = set()
        self._seen_files: dict[str, set[str]] = {}  # per drop folder: files announced as seen

    @property
    def stopping(self) -> bool:
        """Return True once a stop was requested: finish the current step, start no other."""
        return self.stop.is_set()

    # -- a pass, recorded ---------------------------------------------------------------------

    async def run_pass(self, connector: Connector, *, retry_only: bool = False) -> PassReport:
        """Run one pass (or, with `retry_only`, only the due retries) and log it in the store.

        A connector's failure ends its pass and is reported, never raised: other connectors
        go on. Store errors are raised, since no pass can work without the store.
        """
        try:
            with pass_lock(self.store.path, connector.name):
                # Holding the lock, a pass still marked running belongs to a dead process.
                await self.store.interrupt_runs([connector.name], now=self.clock())
                return await self._locked_pass(connector, retry_only=retry_only)
        except ConnectorBusy as exc:
            log.warning("pass skipped", extra={"connector": connector.name, "why": str(exc)})
            return PassReport(connector.name, RunOutcome.FAILED, _Tally().counts(), str(exc))

    async def _locked_pass(self, connector: Connector, *, retry_only: bool) -> PassReport:
        kind = "retry" if retry_only else "pass"
        run_id = await self.store.start_run(connector.name, kind=kind, now=self.clock())
        tally = _Tally()
        try:
            await self._run(connector, tally, retry_only=retry_only)
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
            outcome, error = _failure(exc, connector.name)
        # An error text may quote a library that quoted a credential: masked before it is kept.
        error = mask_secrets(error) if error else error
        report = PassReport(
            connector.name, outcome, tally.counts(), error, tally.wake_in_s, run_id=run_id
        )
        await self.store.finish_run(
            run_id, outcome=outcome, counts=report.counts, error=error, now=self.clock()
        )
        self._log(report, kind)
        return report

    async def _run(self, connector: Connector, tally: _Tally, *, retry_only: bool) -> None:
        if isinstance(connector, CsvDrop):
            if not retry_only:
                await self._csv_pass(connector, tally)
            if not self.stopping:
                await self._csv_retries(connector, tally)
        elif retry_only:
            await self._retry(connector, tally)
        else:
            await self._crm_pass(connector, tally)

    def _log(self, report: PassReport, kind: str) -> None:
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

    # -- CRM connectors -----------------------------------------------------------------------

    async def _crm_pass(self, connector: CrmConnector, tally: _Tally) -> None:
        await self._prepare(connector)
        await self._pull(connector, tally)
        if not self.stopping:
            await self._retry(connector, tally)

    async def _retry(self, connector: CrmConnector, tally: _Tally) -> None:
        """Queue expired answers of live contacts, verify the queue, write what changed."""
        tally.queued += await self.store.enqueue_expired(connector.name, now=self.clock())
        tally.verified += await self.verify_queue(connector.name)
        if not self.stopping:
            await self._push(connector, tally)

    async def _pull(self, connector: CrmConnector, tally: _Tally) -> None:
        name, client = connector.name, connector.client
        signpost = self.clock()
        since = await self.store.cursor(name)
        newest: datetime | None = None
        async with aclosing(_closable(client.pull(since, signpost=signpost))) as pages:
            async for page in pages:
                cursor = capped(page.cursor, signpost=signpost) if client.is_sorted else None
                contacts = [_valid_text(contact) for contact in page.contacts]
                counts = await self.store.record_page(
                    name, contacts, retired=page.retired, cursor=cursor, now=self.clock()
                )
                tally.pulled += counts.stored
                tally.queued += counts.queued
                stamps = [c.updated_at for c in page.contacts if c.updated_at is not None]
                newest = max([*stamps, newest] if newest else stamps, default=None)
                if self.stopping:
                    return  # an unsorted pull's cursor stays: the next pass reads it all again
        if not client.is_sorted:
            cursor = next_cursor(since, newest, signpost=signpost)
        elif await self.store.cursor(name) is None:
            # A first pass that found nothing: the next one starts here, not at the backfill.
            cursor = format_time(signpost)
        else:
            cursor = None
        if cursor is not None:
            await self.store.advance_cursor(name, cursor, now=self.clock())

    async def _prepare(self, connector: CrmConnector) -> None:
        if connector.name not in self._prepared:
            await connector.client.prepare()
            self._prepared.add(connector.name)

    async def write_back(self, connector: CrmConnector, emails: Sequence[str]) -> RunCounts:
        """Write the current answer to the contacts holding one of `emails`, as a pass would
        (only fields whose value changed); return what was written and what failed.

        Holds the connector's pass lock (ConnectorBusy when a pass has it). Not logged as a
        pass: `mailprobe recheck` reports it.
        """
        tally = _Tally()
        with pass_lock(self.store.path, connector.name):
            await self._prepare(connector)
            await self._push(connector, tally, emails=emails)
        return tally.counts()

    async def _push(
        self, connector: CrmConnector, tally: _Tally, *, emails: Sequence[str] | None = None
    ) -> None:
        name = connector.name
        # Sinks with large bulk calls (SendGrid: 30,000 per upsert) say so; one job per batch.
        batch_size = getattr(connector.client, "push_batch", PUSH_BATCH)
        after = 0
        while not self.stopping:
            batch = await self.store.contacts_to_write(
                name, after_id=after, limit=batch_size, now=self.clock(), emails=emails
            )
            if not batch:
                return
            after = batch[-1].id
            updates, texts, in_sync = [], {}, {}
            for contact in batch:
                changed, all_texts = changed_fields(contact)
                if changed:
                    updates.append(FieldUpdate(contact.external_id, changed, email=contact.email))
                    texts[contact.external_id] = {k: all_texts[k] for k in changed}
                else:
                    in_sync[contact.external_id] = all_texts
            if in_sync:
                await self.store.mark_written(name, in_sync)
            if updates:
                report = await connector.client.push(updates)
                await self._record_push(name, report, texts, tally)

    async def _record_push(
        self,
        name: str,
        report: PushReport,
        texts: Mapping[str, Mapping[str, str]],
        tally: _Tally,
    ) -> None:
        await self.store.mark_written(name, {i: texts[i] for i in report.written if i in texts})
        await self.store.retire(name, report.gone)
        reported = {*report.written, *report.gone, *(i for i, _ in report.failed)}
        failed = [
            *report.failed,
            *((i, "not reported by the sink") for i in texts if i not in reported),
        ]
        for external_id, why in failed:
            log.warning(
                "write failed", extra={"connector": name, "external_id": external_id, "error": why}
            )
        await self.store.mark_write_failed(
            name, [i for i, _ in failed], retry_at=self.clock() + WRITE_RETRY
        )
        tally.written += len(report.written)
        tally.failed += len(failed)

    # -- verification -------------------------------------------------------------------------

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

    # -- CSV drop folders ---------------------------------------------------------------------

    async def _csv_pass(self, drop: CsvDrop, tally: _Tally) -> None:
        drop.folder.ensure_layout()
        self._announce_settling(drop, tally)
        for path in drop.folder.ready_files():
            if self.stopping:
                return
            self._seen_files.get(drop.name, set()).discard(path.name)
            await self._csv_file(drop, path, tally)

    def _announce_settling(self, drop: CsvDrop, tally: _Tally) -> None:
        """Log each file still being copied once, and when the pass that takes it comes."""
        seen = self._seen_files.setdefault(drop.name, set())
        for path, left_s in drop.folder.settling_files():
            tally.wake_in_s = left_s if tally.wake_in_s is None else min(tally.wake_in_s, left_s)
            if path.name not in seen:
                seen.add(path.name)
                log.info(
                    "seen %s, taking it in %d s",
                    path.name,
                    math.ceil(left_s),
                    extra={"connector": drop.name, "file": path.name},
                )

    async def _csv_file(self, drop: CsvDrop, path: Path, tally: _Tally) -> None:
        """Work one dropped file; whatever goes wrong with it, the pass goes on to the next.

        Only the store failing stops the pass (no file can be worked without it).
        """
        try:
            await self._csv_file_steps(drop, path, tally)
        except StoreError:
            raise
        except FileNotFoundError:
            # Removed (or moved) by someone between listing and reading: nothing to do.
            log.warning(
                "file gone before it was read", extra={"connector": drop.name, "file": path.name}
            )
        except Exception:
            log.exception("file failed", extra={"connector": drop.name, "file": path.name})
            with suppress(OSError):
                await self._fail_file(
                    drop,
                    path,
                    None,
                    "internal error while verifying this file "
                    "(the service log has the details); drop it again to retry",
                    tally,
                )

    async def _csv_file_steps(self, drop: CsvDrop, path: Path, tally: _Tally) -> None:
        name, folder = drop.name, drop.folder
        info = path.lstat()
        record = await self.store.take_csv_file(
            name,
            path.name,
            size=info.st_size,
            # A file replaced by another of the same name and size is a new file to read.
            fingerprint=f"{info.st_ino}:{info.st_mtime_ns}",
            now=self.clock(),
        )
        if record.state is not CsvFileState.WRITTEN:
            try:
                table = folder.open(path)
                done = await self._verify_file(drop, table, record, tally)
            except CsvFileError as exc:
                await self._fail_file(drop, path, record, str(exc), tally)
                return
            if not done:
                return
        folder.archive(path)
        await self.store.set_csv_file(record.id, CsvFileState.DONE, now=self.clock())
        log.info("file done", extra={"connector": name, "file": path.name})

    async def _verify_file(
        self, drop: CsvDrop, table: CsvTable, record: CsvFileRecord, tally: _Tally
    ) -> bool:
        """Queue, verify and write one file; return True once its output is complete."""
        name = drop.name
        if record.state is CsvFileState.TAKEN:
            counted = await self._queue_file(name, table)
            if counted is None:
                return False
            rows, queued = counted
            await self.store.set_csv_file(
                record.id, CsvFileState.QUEUED, rows=rows, queued=queued, now=self.clock()
            )
            tally.pulled += rows
            tally.queued += queued
        else:
            rows, queued = record.rows, record.queued
        _log_verifying(name, table.path.name, rows=rows, queued=queued)
        tally.verified += await self.verify_queue(name)
        if self.stopping:
            return False
        out = drop.folder.output_path(table.path)
        report = await self.store.with_results(
            lambda lookup: self._write_output(drop, table, out, lookup)
        )
        if report is None:
            # Some address lacks a result: queue the file's addresses again on the next pass.
            await self.store.set_csv_file(record.id, CsvFileState.TAKEN, now=self.clock())
            return False
        await self.store.csv_file_written(
            record.id,
            rows=report.rows,
            output=str(out),
            pending=report.pending,
            retry_at=report.retry_at,
            now=self.clock(),
        )
        tally.written += report.rows
        _log_written(name, table.path.name, out, report)
        return True

    async def _fail_file(
        self,
        drop: CsvDrop,
        path: Path,
        record: CsvFileRecord | None,
        reason: str,
        tally: _Tally,
    ) -> None:
        tally.failed += 1  # the pass summary counts failed files; `mailprobe status` names them
        moved = drop.folder.fail(path, reason)
        if record is not None:
            await self.store.set_csv_file(
                record.id, CsvFileState.FAILED, error=reason, now=self.clock()
            )
        log.warning(
            "file failed",
            extra={
                "connector": drop.name,
                "file": path.name,
                "moved_to": str(moved),
                "error": reason,
            },
        )

    async def _queue_file(self, name: str, table: CsvTable) -> tuple[int, int] | None:
        """Queue a file's distinct addresses in batches; return (rows, queued) or None if stopped.

        The file is read in a worker thread, a batch at a time; each batch is one store write.
        """
        rows = table.rows()
        counted = queued = 0
        try:
            while True:
                read, batch = await asyncio.to_thread(_next_batch, rows, FILE_BATCH)
                counted += read
                if batch:
                    queued += await self.store.queue_emails(name, batch, now=self.clock())
                if read == 0 or len(batch) < FILE_BATCH:
                    return counted, queued
                if self.stopping:
                    return None
        finally:
            rows.close()

    def _write_output(
        self, drop: CsvDrop, table: CsvTable, out: Path, lookup: ResultLookup
    ) -> OutputReport | None:
        """Write a file's output from stored results (a store lane's thread); None: it waits."""
        try:
            columns = drop.folder.column_names
            return write_output(lookup, table, out, columns=columns, stop=self.stop)
        except Stopped:
            return None
        except MissingResult as exc:
            log.error(
                "no stored result for an address of the file; it is queued again",
                extra={"file": table.path.name, "email": str(exc)},
            )
            return None

    # -- drop-folder retries: unknown rows verified again, the output rewritten -----------------

    async def _csv_retries(self, drop: CsvDrop, tally: _Tally) -> None:
        """Retry the due unknown rows of verified files and rewrite their outputs."""
        for record in await self.store.csv_files_due(drop.name, now=self.clock()):
            if self.stopping:
                return
            await self._rewrite_file(drop, record, tally)

    async def _rewrite_file(self, drop: CsvDrop, record: CsvFileRecord, tally: _Tally) -> None:
        """Verify a file's due retries, then rewrite its output in place with the answers.

        Read back from the output itself, so hand edits to it are kept and the input need not
        be found in archive/. Each step can be repeated: a kill before the record is updated
        only makes the next retry pass do it again, and the atomic write keeps the old output
        until the new one is complete.
        """
        name, out = drop.name, Path(record.output or "")
        try:
            table = drop.folder.open(out)
        except CsvFileError as exc:
            await self.store.reschedule_csv_file(
                record.id, pending=0, retry_at=None, rewritten=False
            )
            log.warning(
                "%s: its output %s cannot be updated (%s); its %d unknown rows stay as they are",
                record.name,
                out,
                exc,
                record.pending,
                extra={"connector": name, "file": record.name},
            )
            return
        now = self.clock()
        due = await self.store.with_results(lambda lookup: due_retries(lookup, table, now=now))
        tally.queued += await self.store.queue_emails(name, due, now=now)
        tally.verified += await self.verify_queue(name)
        if self.stopping:
            return
        report = await self.store.with_results(
            lambda lookup: self._rewrite_output(drop, table, out, lookup)
        )
        if report is None:
            return
        revision = await self.store.reschedule_csv_file(
            record.id, pending=report.pending, retry_at=report.retry_at, rewritten=True
        )
        tally.written += report.rows
        _log_rewritten(name, record, out, report, revision=revision, retried=len(due))

    def _rewrite_output(
        self, drop: CsvDrop, table: CsvTable, out: Path, lookup: ResultLookup
    ) -> OutputReport | None:
        try:
            return write_output(
                lookup,
                table,
                out,
                columns=drop.folder.column_names,
                stop=self.stop,
                rewriting=True,
            )
        except Stopped:
            return None


def _next_batch(rows: Iterator[tuple[int, str]], size: int) -> tuple[int, list[str]]:
    """Read rows until `size` new distinct addresses (worker thread); return (rows read, them).

    Distinct within the batch; the queue's key dedups across batches. An empty cell says
    "No address" in the output: counted, nothing to verify.
    """
    read = 0
    batch: dict[str, None] = {}  # insertion-ordered set
    for _, email in rows:
        read += 1
        if email:
            batch[email] = None
            if len(batch) >= size:
                break
    return read, list(batch)


def _valid_text(contact: Contact) -> Contact:
    """Return the contact with an id and address that are valid Unicode.

    JSON can carry a lone surrogate ("\\udcff"), which no UTF-8 store or file can hold: one such
    record would fail its page on every pass. It becomes U+FFFD (the address is then
    invalid_syntax), where the CRM's text enters the application.
    """
    email, external_id = contact.email or "", contact.external_id
    if email.isascii() and external_id.isascii():
        return contact
    return replace(
        contact,
        email=clean_text(email, limit=len(email) or 1) if email else contact.email,
        external_id=clean_text(external_id, limit=len(external_id) or 1),
    )


def _log_verifying(connector: str, file: str, *, rows: int, queued: int) -> None:
    log.info(
        "verifying %s: %s addresses (%s to check, the rest known)",
        file,
        f"{rows:,}",
        f"{queued:,}",
        extra={"connector": connector, "file": file, "rows": rows, "queued": queued},
    )


def _retry_note(report: OutputReport) -> str:
    """Return what the log adds about rows waiting for a retry ("" when none)."""
    if not report.pending or report.retry_at is None:
        return ""
    when = format_time(report.retry_at)
    return (
        f"; {report.pending:,} unknown rows are verified again from {when} and the output"
        " rewritten with their answers"
    )


def _log_written(connector: str, file: str, out: Path, report: OutputReport) -> None:
    log.info(
        "verified %s: %s; output: %s%s",
        file,
        report.described(),
        out.resolve(),
        _retry_note(report),
        extra={
            "connector": connector,
            "file": file,
            "output": str(out),
            "rows": report.rows,
            "pending": report.pending,
        },
    )


def _log_rewritten(
    connector: str,
    record: CsvFileRecord,
    out: Path,
    report: OutputReport,
    *,
    revision: int,
    retried: int,
) -> None:
    resolved = max(0, record.pending - report.pending)
    log.info(
        "%s: retried %s unknown addresses, %s rows resolved; rewrote %s (revision %d): %s%s",
        record.name,
        f"{retried:,}",
        f"{resolved:,}",
        out.resolve(),
        revision,
        report.described(),
        _retry_note(report) or "; no rows left to retry",
        extra={
            "connector": connector,
            "file": record.name,
            "output": str(out),
            "revision": revision,
            "pending": report.pending,
        },
    )


def _failure(exc: Exception, connector: str) -> tuple[RunOutcome, str]:
    """Return how a pass that raised `exc` ended; call from the `except` block (traceback)."""
    if isinstance(exc, FatalConnectorError):
        return RunOutcome.FATAL, str(exc)  # bad token or configuration: retrying will not help
    if isinstance(exc, ConnectorError | MailprobeError):
        return RunOutcome.FAILED, str(exc)
    log.exception("pass failed", extra={"connector": connector})  # a bug: keep the traceback
    return RunOutcome.FAILED, f"internal error: {type(exc).__name__}: {exc}"


def _closable(pages: AsyncIterator[Page]) -> Any:
    """Return `pages` with an aclose() (async generators have one; plain iterators get one)."""
    if hasattr(pages, "aclose"):
        return pages

    async def wrapped() -> AsyncIterator[Page]:
        async for page in pages:
            yield page

    return wrapped()
