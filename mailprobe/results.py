"""`mailprobe results export`: the store's answers as CSV or JSON lines, filtered.

Owns the export's formats and its filters' syntax; the store's verb reads the rows. Cells that a
spreadsheet would run as a formula are neutralised, as in the drop folder's output.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import IO, Literal

from mailprobe.connectors.csvdrop import format_value, neutralise
from mailprobe.connectors.fields import FIELD_NAMES, field_values
from mailprobe.engine import Status, format_time, parse_time

from .errors import InputError
from .freshness import Cached
from .settings import interval_seconds

ExportFormat = Literal["csv", "jsonl"]


def parse_statuses(values: Iterable[str]) -> list[str]:
    """Return the statuses asked for (`--status valid,catch_all` or repeated); InputError else."""
    wanted = [part.strip().lower() for value in values for part in value.split(",") if part.strip()]
    known = [str(status) for status in Status]
    unknown = [status for status in wanted if status not in known]
    if unknown:
        raise InputError(f"--status {unknown[0]!r} is not a status; use {', '.join(known)}")
    return list(dict.fromkeys(wanted))


def parse_since(text: str, *, now: datetime) -> datetime:
    """Return the moment `--since` names: a date, a UTC time, or an age (`7d`, `24h`, `30m`)."""
    seconds = interval_seconds(text)
    if seconds is not None:
        return now - timedelta(seconds=seconds)
    try:
        if len(text.strip()) == 10:
            return datetime.combine(date.fromisoformat(text.strip()), datetime.min.time(), UTC)
        return parse_time(text.strip())
    except ValueError:
        raise InputError(
            f"--since {text!r} is neither a date (2026-11-01), a UTC time "
            "(2026-11-01T12:00:00Z) nor an age (7d, 24h, 30m)"
        ) from None


def write_export(answers: Iterable[Cached], out: IO[str], *, fmt: ExportFormat) -> int:
    """Write each answer as a CSV row or a JSON line; return how many were written."""
    count = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["email", *FIELD_NAMES])
        for cached in answers:
            values = field_values(cached.result, next_check=cached.expires_at.date())
            cells = [cached.result.normalized, *(format_value(values[n]) for n in FIELD_NAMES)]
            writer.writerow([neutralise(cell) for cell in cells])
            count += 1
        return count
    for cached in answers:
        line = cached.result.to_json() | {"expires_at": format_time(cached.expires_at)}
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
        count += 1
    return count
