"""`mailprobe verify`: read addresses, verify them, write JSON, JSONL or CSV as they complete.

Input is read lazily and results are written as they arrive, so a 100,000-line file needs no
more memory than the work in flight: the engine reads a few thousand addresses ahead, and CSV
and JSON output, which keep input order, hold rows that finished before an earlier one in a
bounded buffer of formatted text (reading pauses while it is full). JSONL is in completion
order, each line carrying its address. No SMTP here: the engine does it. The progress bar is
drawn by rich on stderr; stdout carries only results.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import csv
import io
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mailprobe.connectors.csvdrop import (
    CsvFileError,
    detect_delimiter,
    detect_encoding,
    email_column_index,
    find_email_column,
    format_value,
    neutralised,
)
from mailprobe.connectors.fields import FIELD_NAMES, field_values
from mailprobe.engine import Status, VerificationResult, Verifier, clean_text

from .errors import InputError
from .logs import through_console

Format = Literal["json", "jsonl", "csv"]

#: CSV rows finished ahead of an earlier, slower one (a greylisted address, say) that are held
#: before reading pauses: this, not the input's size, bounds the reorder buffer (~10 MB).
MAX_BACKLOG = 20_000
#: Output is flushed at least this often and at the end, not per row (a syscall each).
_FLUSH_EVERY_S = 0.2
#: The progress line is redrawn at most this often; more would cost CPU the sessions need.
_REDRAW_EVERY_S = 0.1
_STATUS_STYLES = {
    Status.VALID: "green",
    Status.INVALID: "red",
    Status.CATCH_ALL: "yellow",
    Status.RISKY: "magenta",
    Status.UNKNOWN: "dim",
}

OnResult = Callable[[VerificationResult, "Tally"], None]


@dataclass(slots=True)
class InputTable:
    """Addresses to verify, with the columns they came with (CSV input) or alone."""

    header: list[str]  # original columns; ["email"] for a plain list
    email_index: int
    rows: Iterator[list[str]]
    total: int | None = None  # rows to expect, when known beforehand (for the ETA)


def _plain(lines: Iterable[str]) -> Iterator[list[str]]:
    """Yield one row per address line; blank lines and # comments are not rows."""
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            yield [text]


def _csv_rows(rows: Iterator[list[str]]) -> Iterator[list[str]]:
    """Yield the CSV's rows but blank lines, which carry nothing to verify."""
    return (row for row in rows if any(cell.strip() for cell in row))


def read_input(
    stream: IO[str], *, delimiter: str | None = None, email_column: str | None = None
) -> InputTable:
    """Return the addresses of a plain list (one per line) or of a CSV with an email column.

    `delimiter` is the one the drop folder's sniffer found in the file; without it (a stream
    given directly) the first line's most frequent candidate is taken. The column is found by
    its header as in the drop folder, or named by `email_column`.
    """
    first_line = ""
    for line in stream:
        if line.strip():
            first_line = line
            break
    if not first_line:
        return InputTable(["email"], 0, iter(()), total=0)
    dialect_delimiter = delimiter or max(",;\t|", key=first_line.count)
    header = next(csv.reader([first_line], delimiter=dialect_delimiter))
    looks_like_header = "@" not in first_line and (
        first_line.count(dialect_delimiter) > 0 or email_column_index(tuple(header)) is not None
    )
    if email_column is None and not looks_like_header:
        return InputTable(["email"], 0, _plain(itertools.chain([first_line], stream)))
    try:
        found, index = find_email_column("input", header, email_column)
    except CsvFileError as exc:
        # The drop folder's message, with the command line's way to name the column.
        text = re.sub(r"(set|fix) email_column", "give --email-column NAME", str(exc))
        # The drop folder's notes never quote a file; here the user reads their own file on
        # their own terminal, so the header helps (control characters removed).
        shown = clean_text(", ".join(header), limit=300)
        raise InputError(f"input: {text} (the header is: {shown})") from None
    if not found:  # one address alone on the first line: a plain list after all
        return InputTable(["email"], 0, _plain(itertools.chain([first_line], stream)))
    rows = csv.reader(stream, delimiter=dialect_delimiter)
    return InputTable(list(found), index, _csv_rows(rows))


def open_input(
    path: str | None, addresses: tuple[str, ...], *, email_column: str | None = None
) -> tuple[InputTable, IO[str] | None]:
    """Return the input table for `--file PATH` (`-` is stdin) or the addresses given.

    For a regular file the rows are counted first (one quick pass), so progress can show an
    ETA; stdin and pipes have no total.
    """
    if path is None:
        rows = iter([[a] for a in addresses])
        return InputTable(["email"], 0, rows, total=len(addresses)), None
    if path == "-":
        return _read_file(_spooled_stdin(), "stdin", count=False, email_column=email_column)
    return _read_file(Path(path), path, count=os.path.isfile(path), email_column=email_column)


def _read_file(
    path: Path, shown: str, *, count: bool, email_column: str | None
) -> tuple[InputTable, IO[str]]:
    """Return the table of a file read the drop folder's way (one reader for both paths):
    encoding detected (BOM, strict UTF-8, Windows-1252, Latin-1; never mangled by
    errors="replace") and the delimiter sniffed on a real sample of the file."""
    try:
        encoding, _ = detect_encoding(path)
        delimiter = detect_delimiter(path, encoding)
        stream = open(path, encoding=encoding, newline="")  # noqa: SIM115
    except CsvFileError as exc:
        raise InputError(f"cannot use {shown}: {exc}") from None
    except OSError as exc:
        raise InputError(f"cannot read {shown}: {exc.strerror}") from None
    try:
        table = read_input(stream, delimiter=delimiter, email_column=email_column)
    except InputError:
        stream.close()
        raise
    if count and table.total is None:
        with open(path, encoding=encoding, newline="") as again:
            rows = read_input(again, delimiter=delimiter, email_column=email_column).rows
            table.total = sum(1 for _ in rows)
    return table, stream


def _spooled_stdin() -> Path:
    """Return a temporary file holding stdin's bytes, so its encoding can be detected over the
    whole input as a file's is; the file is removed when the process ends."""
    source = getattr(sys.stdin, "buffer", None)
    spool = tempfile.NamedTemporaryFile(prefix="mailprobe-stdin-", delete=False)  # noqa: SIM115
    atexit.register(Path(spool.name).unlink, missing_ok=True)
    with spool:
        if source is None:  # a text stream without bytes underneath (tests, embedding)
            spool.write(sys.stdin.read().encode("utf-8"))
        else:
            shutil.copyfileobj(source, spool)
    return Path(spool.name)


@dataclass(slots=True)
class Tally:
    """Counts per status, for the progress bar and the closing summary."""

    done: int = 0
    by_status: Counter[str] = field(default_factory=Counter)

    def add(self, result: VerificationResult) -> None:
        self.done += 1
        self.by_status[str(result.status)] += 1

    def summary(self) -> str:
        parts = [f"{self.by_status.get(str(s), 0)} {s}" for s in Status]
        return f"{self.done} verified: " + ", ".join(parts)


class _Writer:
    """Writes results in the chosen format; CSV and JSON keep input order, JSONL is as they come."""

    def __init__(self, out: IO[str], fmt: Format, header: list[str], *, single: bool) -> None:
        self._out = out
        self._fmt = fmt
        self._single = single
        self._count = 0
        self._pending: dict[int, str] = {}  # CSV rows that finished before an earlier one
        self._next = 0
        self._line = io.StringIO()
        self._csv = csv.writer(self._line, lineterminator="\n")
        if fmt == "csv":
            out.write(self._csv_line(neutralised([*header, *FIELD_NAMES])))
        elif fmt == "json" and not single:
            out.write("[")
        out.flush()
        self._flushed = time.monotonic()

    @property
    def backlog(self) -> int:
        """Return how many finished CSV rows wait for an earlier one."""
        return len(self._pending)

    def _csv_line(self, cells: list[str]) -> str:
        self._line.seek(0)
        self._line.truncate()
        self._csv.writerow(cells)
        return _utf8(self._line.getvalue())

    def write(self, index: int, row: list[str], result: VerificationResult) -> None:
        """Write one result (CSV and JSON: as soon as every earlier row is written)."""
        if self._fmt == "jsonl":
            self._out.write(_utf8(json.dumps(result.to_json(), ensure_ascii=False)) + "\n")
        else:
            if self._fmt == "csv":
                values = field_values(result, next_check=None)
                # The drop folder's writer rule: a cell a spreadsheet would run gets a leading '.
                text = self._csv_line(
                    neutralised([*row, *(format_value(values[name]) for name in FIELD_NAMES)])
                )
            else:
                text = _utf8(json.dumps(result.to_json(), ensure_ascii=False, indent=2))
            self._pending[index] = text
            while self._next in self._pending:
                self._emit(self._pending.pop(self._next))
                self._next += 1
        now = time.monotonic()
        if now - self._flushed >= _FLUSH_EVERY_S:
            self._out.flush()
            self._flushed = now

    def _emit(self, text: str) -> None:
        """Write one formatted result; JSON items of an array get their separators."""
        if self._fmt == "json" and not self._single:
            text = ("\n" if self._count == 0 else ",\n") + text
        self._out.write(text)
        self._count += 1

    def close(self) -> None:
        """Write what finished out of order (after an interrupt) and close the document."""
        for index in sorted(self._pending):
            self._emit(self._pending.pop(index))
        if self._fmt == "json":
            self._out.write("\n" if self._single else "\n]\n")
        self._out.flush()


def _utf8(text: str) -> str:
    """Return the text encodable as UTF-8, bytes that were not UTF-8 shown as U+FFFD.

    An address given on the command line arrives with its undecodable bytes as surrogates
    (surrogateescape); the engine cleans server replies where they enter. Either way, one such
    line must neither end the output nor make it invalid UTF-8.
    """
    if text.isascii():
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate surrogateescape did not make
        return text.encode("utf-8", "replace").decode("utf-8")


async def verify_table(
    verifier: Verifier,
    table: InputTable,
    out: IO[str],
    *,
    fmt: Format,
    single: bool = False,
    on_result: OnResult | None = None,
) -> Tally:
    """Verify every row's address and write one result per row; return the counts."""
    waiting: dict[str, deque[tuple[int, list[str]]]] = defaultdict(deque)
    writer = _Writer(out, fmt, table.header, single=single)
    tally = Tally()
    room = asyncio.Event()
    room.set()

    async def addresses() -> AsyncIterator[str]:
        for index, row in enumerate(table.rows):
            if writer.backlog >= MAX_BACKLOG:
                # An early row is slow: hold the input until the rows behind it can be written.
                room.clear()
                await room.wait()
            email = row[table.email_index].strip() if len(row) > table.email_index else ""
            waiting[email].append((index, row))
            yield email

    try:
        async with contextlib.aclosing(verifier.verify_many(addresses())) as results:
            async for result in results:
                index, row = waiting[result.email].popleft()
                if not waiting[result.email]:
                    del waiting[result.email]
                writer.write(index, row, result)
                if writer.backlog < MAX_BACKLOG // 2:
                    room.set()
                tally.add(result)
                if on_result is not None:
                    on_result(result, tally)
    finally:
        writer.close()
    return tally


class ProgressView:
    """The live progress line: done of total, bar, counts per status, rate, elapsed and ETA."""

    def __init__(
        self, console: Console, *, total: int | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        # Without a total (stdin) there is no ETA to show, and the bar just pulses.
        eta = (TextColumn("ETA"), TimeRemainingColumn()) if total is not None else ()
        self.progress = Progress(
            SpinnerColumn(),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.fields[statuses]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            *eta,
            console=console,
            get_time=clock,
            redirect_stdout=False,  # stdout carries the results, never the bar
        )
        self._task = self.progress.add_task("verify", total=total, statuses="", rate="")
        self._started = clock()
        self._drawn = float("-inf")

    def show(self, tally: Tally, *, now: bool = False) -> None:
        """Update the line from the counts (at most every _REDRAW_EVERY_S unless `now`)."""
        moment = self._clock()
        if not now and moment - self._drawn < _REDRAW_EVERY_S:
            return
        self._drawn = moment
        rate = tally.done / max(moment - self._started, 1e-9)
        self.progress.update(
            self._task, completed=tally.done, statuses=status_counts(tally), rate=f"{rate:,.0f}/s"
        )


def status_counts(tally: Tally) -> str:
    """Return the counts per status as rich markup, every status shown (zero included)."""
    return "  ".join(
        f"[{style}]{status} {tally.by_status.get(str(status), 0):,}[/]"
        for status, style in _STATUS_STYLES.items()
    )


def run_verify(
    verifier: Verifier,
    table: InputTable,
    out: IO[str],
    *,
    fmt: Format,
    single: bool,
    progress: bool,
) -> Tally:
    """Run verify_table on a fresh event loop, with a progress bar on stderr when asked."""
    if not progress:
        return asyncio.run(verify_table(verifier, table, out, fmt=fmt, single=single))
    console = Console(stderr=True)
    view = ProgressView(console, total=table.total)
    last = Tally()

    def on_result(result: VerificationResult, tally: Tally) -> None:
        nonlocal last
        last = tally
        view.show(tally)

    with view.progress, through_console(console):
        try:
            return asyncio.run(
                verify_table(verifier, table, out, fmt=fmt, single=single, on_result=on_result)
            )
        finally:
            view.show(last, now=True)
