"""`mailprobe verify`: read addresses, verify them, write JSON, JSONL or CSV as they complete.

Input is read lazily and results are written as they arrive, so a 100,000-line file needs no
more memory than the work in flight (CSV output keeps input order: rows that finish early wait
in a small buffer as formatted text). No SMTP here: the engine does it.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Literal

from connectors.csvdrop import email_column_index, format_value
from connectors.fields import FIELD_NAMES, field_values
from engine import Status, VerificationResult, Verifier

from .errors import InputError

Format = Literal["json", "jsonl", "csv"]


@dataclass(slots=True)
class InputTable:
    """Addresses to verify, with the columns they came with (CSV input) or alone."""

    header: list[str]  # original columns; ["email"] for a plain list
    email_index: int
    rows: Iterator[list[str]]


def _plain(lines: Iterator[str], first: str | None) -> Iterator[list[str]]:
    if first is not None:
        yield [first]
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            yield [text]


def read_input(stream: IO[str]) -> InputTable:
    """Return the addresses of a plain list (one per line) or of a CSV with an email column."""
    first_line = ""
    for line in stream:
        if line.strip():
            first_line = line
            break
    if not first_line:
        return InputTable(["email"], 0, iter(()))
    dialect_delimiter = max(",;\t|", key=first_line.count)
    header = next(csv.reader([first_line], delimiter=dialect_delimiter))
    index = email_column_index(tuple(header)) if first_line.count(dialect_delimiter) else None
    if index is None:
        if "@" not in first_line and first_line.count(dialect_delimiter):
            raise InputError("input looks like CSV but has no email column (name it 'email')")
        return InputTable(["email"], 0, _plain(stream, first_line.strip()))
    return InputTable(header, index, csv.reader(stream, delimiter=dialect_delimiter))


def open_input(path: str | None, addresses: tuple[str, ...]) -> tuple[InputTable, IO[str] | None]:
    """Return the input table for `--file PATH` (`-` is stdin) or the addresses given."""
    if path is None:
        return InputTable(["email"], 0, iter([[a] for a in addresses])), None
    if path == "-":
        return read_input(sys.stdin), None
    try:
        stream = open(path, encoding="utf-8-sig", errors="replace", newline="")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    return read_input(stream), stream


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


def _csv_line(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


class _Writer:
    """Writes results in the chosen format; CSV keeps input order."""

    def __init__(self, out: IO[str], fmt: Format, header: list[str], *, single: bool) -> None:
        self._out = out
        self._fmt = fmt
        self._single = single
        self._count = 0
        self._pending: dict[int, str] = {}  # CSV rows that finished before an earlier one
        self._next = 0
        if fmt == "csv":
            out.write(_csv_line([*header, *FIELD_NAMES]))
        elif fmt == "json" and not single:
            out.write("[")

    def write(self, index: int, row: list[str], result: VerificationResult) -> None:
        """Write one result (CSV: as soon as every earlier row is written)."""
        if self._fmt == "csv":
            values = field_values(result, next_check=None)
            self._pending[index] = _csv_line(
                [*row, *(format_value(values[name]) for name in FIELD_NAMES)]
            )
            while self._next in self._pending:
                self._out.write(self._pending.pop(self._next))
                self._next += 1
        elif self._fmt == "jsonl":
            self._out.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
        else:
            text = json.dumps(result.to_json(), ensure_ascii=False, indent=2)
            separator = "" if self._single else ("\n" if self._count == 0 else ",\n")
            self._out.write(separator + text)
        self._count += 1
        self._out.flush()

    def close(self) -> None:
        """Write what finished out of order (after an interrupt) and close the document."""
        for index in sorted(self._pending):
            self._out.write(self._pending.pop(index))
        if self._fmt == "json":
            self._out.write("\n" if self._single else "\n]\n")
        self._out.flush()


async def verify_table(
    verifier: Verifier,
    table: InputTable,
    out: IO[str],
    *,
    fmt: Format,
    single: bool = False,
    on_result: callable | None = None,  # type: ignore[valid-type]
) -> Tally:
    """Verify every row's address and write one result per row; return the counts."""
    waiting: dict[str, deque[tuple[int, list[str]]]] = defaultdict(deque)
    writer = _Writer(out, fmt, table.header, single=single)
    tally = Tally()

    def addresses() -> Iterator[str]:
        for index, row in enumerate(table.rows):
            email = row[table.email_index].strip() if len(row) > table.email_index else ""
            waiting[email].append((index, row))
            yield email

    try:
        async for result in verifier.verify_many(addresses()):
            index, row = waiting[result.email].popleft()
            if not waiting[result.email]:
                del waiting[result.email]
            writer.write(index, row, result)
            tally.add(result)
            if on_result is not None:
                on_result(result, tally)
    finally:
        writer.close()
    return tally


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
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        SpinnerColumn(),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.fields[statuses]}"),
        TextColumn("{task.fields[rate]}/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("verify", total=None, statuses="", rate="0")

        def on_result(result: VerificationResult, tally: Tally) -> None:
            elapsed = bar.tasks[0].elapsed or 1e-9
            counts = " ".join(f"{k}={v}" for k, v in sorted(tally.by_status.items()))
            bar.update(
                task, completed=tally.done, statuses=counts, rate=f"{tally.done / elapsed:.0f}"
            )

        return asyncio.run(
            verify_table(verifier, table, out, fmt=fmt, single=single, on_result=on_result)
        )
