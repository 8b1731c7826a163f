"""Passes of a CSV drop folder.

Each ready file is registered, its distinct addresses queued (streamed in batches: bounded
memory at a million rows), verified, then the output written from the stored results in one
atomic file, then the input archived. Each stage is recorded, so a restart after a kill resumes:
every row is in the output exactly once and no saved result is verified again. Rows whose answer
is an unknown awaiting a retry are counted per file with the earliest retry time, in the
transaction that records the output; when due, a retry (every pass of the folder, and the
daemon's retry job) verifies them and rewrites the output in place from itself, again
atomically, so a kill at any point leaves the previous output whole and the retry to redo.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from mailprobe.connectors.csvdrop import CsvFileError, CsvTable, DropFolder
from mailprobe.engine import format_time

from .csvoutput import MissingResult, OutputReport, Stopped, due_retries, write_output
from .errors import StoreError
from .passes import PassContext, Tally
from .store import CsvFileRecord, CsvFileState
from .store_async import ResultLookup

log = logging.getLogger("mailprobe.pipeline")  # one name for every pass's lines (log filters)

#: Distinct addresses of a dropped file queued per transaction.
FILE_BATCH = 5000


@dataclass(frozen=True, slots=True)
class CsvDrop:
    """A drop-folder connector, as wired from settings."""

    name: str
    folder: DropFolder


class DropPasses:
    """Runs the passes of drop folders: new files, then the due retries of verified ones."""

    def __init__(self, ctx: PassContext) -> None:
        self.ctx = ctx
        self._seen_files: dict[str, set[str]] = {}  # per drop folder: files announced as seen

    async def run(self, drop: CsvDrop, tally: Tally, *, retry_only: bool) -> None:
        """Run one pass of `drop` (with `retry_only`, its due retries only)."""
        if not retry_only:
            await self._csv_pass(drop, tally)
        if not self.ctx.stopping:
            await self._csv_retries(drop, tally)

    async def _csv_pass(self, drop: CsvDrop, tally: Tally) -> None:
        drop.folder.ensure_layout()
        self._announce_settling(drop, tally)
        for path in drop.folder.ready_files():
            if self.ctx.stopping:
                return
            self._seen_files.get(drop.name, set()).discard(path.name)
            await self._csv_file(drop, path, tally)

    def _announce_settling(self, drop: CsvDrop, tally: Tally) -> None:
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

    async def _csv_file(self, drop: CsvDrop, path: Path, tally: Tally) -> None:
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

    async def _csv_file_steps(self, drop: CsvDrop, path: Path, tally: Tally) -> None:
        name, folder = drop.name, drop.folder
        info = path.lstat()
        record = await self.ctx.store.take_csv_file(
            name,
            path.name,
            size=info.st_size,
            # A file replaced by another of the same name and size is a new file to read.
            fingerprint=f"{info.st_ino}:{info.st_mtime_ns}",
            now=self.ctx.clock(),
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
        await self.ctx.store.set_csv_file(record.id, CsvFileState.DONE, now=self.ctx.clock())
        log.info("file done", extra={"connector": name, "file": path.name})

    async def _verify_file(
        self, drop: CsvDrop, table: CsvTable, record: CsvFileRecord, tally: Tally
    ) -> bool:
        """Queue, verify and write one file; return True once its output is complete."""
        name = drop.name
        if record.state is CsvFileState.TAKEN:
            counted = await self._queue_file(name, table)
            if counted is None:
                return False
            rows, queued = counted
            await self.ctx.store.set_csv_file(
                record.id, CsvFileState.QUEUED, rows=rows, queued=queued, now=self.ctx.clock()
            )
            tally.pulled += rows
            tally.queued += queued
        else:
            rows, queued = record.rows, record.queued
        _log_verifying(name, table.path.name, rows=rows, queued=queued)
        tally.verified += await self.ctx.verify_queue(name)
        if self.ctx.stopping:
            return False
        out = drop.folder.output_path(table.path)
        report = await self.ctx.store.with_results(
            lambda lookup: self._write_output(drop, table, out, lookup)
        )
        if report is None:
            # Some address lacks a result: queue the file's addresses again on the next pass.
            await self.ctx.store.set_csv_file(record.id, CsvFileState.TAKEN, now=self.ctx.clock())
            return False
        await self.ctx.store.csv_file_written(
            record.id,
            rows=report.rows,
            output=str(out),
            pending=report.pending,
            retry_at=report.retry_at,
            now=self.ctx.clock(),
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
        tally: Tally,
    ) -> None:
        tally.failed += 1  # the pass summary counts failed files; `mailprobe status` names them
        moved = drop.folder.fail(path, reason)
        if record is not None:
            await self.ctx.store.set_csv_file(
                record.id, CsvFileState.FAILED, error=reason, now=self.ctx.clock()
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
                    queued += await self.ctx.store.queue_emails(name, batch, now=self.ctx.clock())
                if read == 0 or len(batch) < FILE_BATCH:
                    return counted, queued
                if self.ctx.stopping:
                    return None
        finally:
            rows.close()

    def _write_output(
        self, drop: CsvDrop, table: CsvTable, out: Path, lookup: ResultLookup
    ) -> OutputReport | None:
        """Write a file's output from stored results (a store lane's thread); None: it waits."""
        try:
            columns = drop.folder.column_names
            return write_output(lookup, table, out, columns=columns, stop=self.ctx.stop)
        except Stopped:
            return None
        except MissingResult as exc:
            log.error(
                "no stored result for an address of the file; it is queued again",
                extra={"file": table.path.name, "email": str(exc)},
            )
            return None

    # -- drop-folder retries: unknown rows verified again, the output rewritten -----------------

    async def _csv_retries(self, drop: CsvDrop, tally: Tally) -> None:
        """Retry the due unknown rows of verified files and rewrite their outputs."""
        for record in await self.ctx.store.csv_files_due(drop.name, now=self.ctx.clock()):
            if self.ctx.stopping:
                return
            await self._rewrite_file(drop, record, tally)

    async def _rewrite_file(self, drop: CsvDrop, record: CsvFileRecord, tally: Tally) -> None:
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
            await self.ctx.store.reschedule_csv_file(
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
        now = self.ctx.clock()
        due = await self.ctx.store.with_results(lambda lookup: due_retries(lookup, table, now=now))
        tally.queued += await self.ctx.store.queue_emails(name, due, now=now)
        tally.verified += await self.ctx.verify_queue(name)
        if self.ctx.stopping:
            return
        report = await self.ctx.store.with_results(
            lambda lookup: self._rewrite_output(drop, table, out, lookup)
        )
        if report is None:
            return
        revision = await self.ctx.store.reschedule_csv_file(
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
                stop=self.ctx.stop,
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
