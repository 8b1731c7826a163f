"""A drop file's output: each row's columns from the stored results, and what the rows say.

Runs in a pipeline worker thread on its own store connection. Besides writing (atomically, in
connectors/csvdrop.py) it counts the rows per status and the rows whose answer is an `unknown`
waiting for a retry, with the earliest retry time, so the pipeline can say where the output is
and when the file will be rewritten with the final answers. No SQL (store.py), no file format.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from mailprobe.connectors.base import FieldValue
from mailprobe.connectors.csvcolumns import no_address_values, plain_values
from mailprobe.connectors.csvdrop import CsvTable, unneutralised
from mailprobe.connectors.fields import field_values
from mailprobe.engine import Action

from .freshness import Cached
from .store_async import ResultLookup

#: Distinct addresses whose stored values are kept while a file is written.
_LOOKUPS = 1024
_NO_ADDRESS = "no address"


class MissingResult(Exception):
    """A row's address has no stored result when the output is written."""


class Stopped(Exception):
    """A stop was requested while the output was being written."""


@dataclass(frozen=True, slots=True)
class OutputReport:
    """What a written output holds."""

    rows: int
    by_status: Mapping[str, int]  # rows per status; rows without an address as "no address"
    pending: int  # rows whose answer is an unknown with a retry scheduled
    retry_at: datetime | None  # when the earliest of those is due; None when none

    def described(self) -> str:
        """Return "1,200 rows: 800 valid, 300 invalid, 100 unknown" for a log line."""
        parts = ", ".join(f"{count:,} {status}" for status, count in self.by_status.items())
        return f"{self.rows:,} rows" + (f": {parts}" if parts else "")


@dataclass(frozen=True, slots=True)
class _Row:
    values: Mapping[str, FieldValue]
    status: str
    retry_at: datetime | None  # set when the answer waits for a retry


def _row_of(cached: Cached) -> _Row:
    result = cached.result
    values = field_values(result, next_check=cached.expires_at.date()) | plain_values(result)
    retry_at = cached.expires_at if result.action is Action.RETRY else None
    return _Row(values, str(result.status), retry_at)


def write_output(
    store: ResultLookup,
    table: CsvTable,
    out: Path,
    *,
    columns: tuple[str, ...],
    stop: threading.Event,
    rewriting: bool = False,
) -> OutputReport:
    """Write `table`'s rows with their stored answers to `out` atomically; return what it holds.

    A first write needs every address's result (MissingResult otherwise). A rewrite reads back
    an output we wrote, so its cells are un-neutralised, and a row whose address the store
    does not know (edited by hand) keeps the values it has. Raises Stopped on a stop request.
    """
    by_status: Counter[str] = Counter()
    pending = 0
    earliest: datetime | None = None

    @lru_cache(maxsize=_LOOKUPS)  # repeated addresses in a file cost one lookup
    def row_of(email: str) -> _Row | None:
        cached = store.cached(email)
        if cached is None and not rewriting:
            raise MissingResult(email)
        return None if cached is None else _row_of(cached)

    def fields_for_row(_number: int, cell: str) -> Mapping[str, FieldValue]:
        nonlocal pending, earliest
        if stop.is_set():
            raise Stopped
        email = unneutralised(cell) if rewriting else cell
        if not email:
            by_status[_NO_ADDRESS] += 1
            return no_address_values()
        row = row_of(email)
        if row is None:
            return {}
        by_status[row.status] += 1
        if row.retry_at is not None:
            pending += 1
            earliest = row.retry_at if earliest is None else min(earliest, row.retry_at)
        return row.values

    rows = table.write_verified(out, fields_for_row, columns=columns)
    return OutputReport(rows, dict(by_status.most_common()), pending, earliest)


def due_retries(store: ResultLookup, table: CsvTable, *, now: datetime) -> list[str]:
    """Return the distinct addresses of an output whose answer is an unknown due for a retry.

    Streams the file; only the due addresses are kept (a retry concerns a few rows of many).
    """

    @lru_cache(maxsize=_LOOKUPS)
    def is_due(email: str) -> bool:
        cached = store.cached(email)
        return (
            cached is not None and cached.result.action is Action.RETRY and cached.expires_at <= now
        )

    due: dict[str, None] = {}  # insertion-ordered set
    for _, cell in table.rows():
        email = unneutralised(cell)
        if email and is_due(email):
            due[email] = None
    return list(due)
