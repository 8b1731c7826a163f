"""SendGrid's value and file formats: field values out and back, export rows, errors files.

Pure: no HTTP here. Custom fields are Text, Number or Date; an upsert sends a Date as
MM/DD/YYYY and an export may show it as that or as ISO 8601. Values read back come out in the
canonical text form (connectors.fields.field_text) so one comparison decides what to write.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from ..base import FieldValue
from ..fields import FieldKind, field_text, number_text

#: Text for strings and enums, Number for the score and for flags (1/0), Date for dates.
FIELD_TYPES: dict[FieldKind, str] = {
    FieldKind.ENUM: "Text",
    FieldKind.TEXT: "Text",
    FieldKind.NUMBER: "Number",
    FieldKind.BOOL: "Number",
    FieldKind.DATE: "Date",
    FieldKind.DATETIME: "Date",
}

_US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")


def wire_value(value: FieldValue, kind: FieldKind) -> str | int | float:
    """Return a field value as an upsert sends it: text, a 1/0 or number, or an MM/DD/YYYY day.

    None clears the field, sent as "". Dates are written MM/DD/YYYY, the format SendGrid
    documents for Date fields; a datetime keeps its UTC day, as Date fields hold no time.
    """
    if value is None:
        return ""
    if kind is FieldKind.ENUM or kind is FieldKind.TEXT:
        return str(value)
    if kind is FieldKind.BOOL:
        return 1 if value else 0
    if kind is FieldKind.NUMBER:
        number = float(value)  # type: ignore[arg-type]
        return int(number) if number.is_integer() else number
    if kind in (FieldKind.DATE, FieldKind.DATETIME):
        day = _as_day(value)
        if day is None:
            raise ValueError(f"{value!r} is not a date")
        return day.strftime("%m/%d/%Y")
    raise ValueError(f"no SendGrid form for {kind}")


def read_back(raw: Any, kind: FieldKind) -> str:
    """Return a stored field value in the canonical text form ("" when empty).

    Numbers as `98`, flags (stored 1/0) as true/false, Date fields as ISO days (they hold no
    time), text as is; a value that does not parse is kept as it is, and will be overwritten.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return ""
    try:
        if kind is FieldKind.NUMBER:
            return number_text(float(raw))
        if kind is FieldKind.BOOL:
            return field_text(float(raw) != 0)
    except (TypeError, ValueError):
        return str(raw)
    if kind in (FieldKind.DATE, FieldKind.DATETIME):
        day = parse_day(str(raw))
        return field_text(day) if day is not None else str(raw)
    return str(raw)


def parse_day(text: str) -> date | None:
    """Return the day a SendGrid Date value names (MM/DD/YYYY, ISO date or ISO timestamp)."""
    text = text.strip()
    match = _US_DATE.match(text)
    if match:
        month, day, year = (int(part) for part in match.groups())
        try:
            return date(year, month, day)
        except ValueError:
            return None
    moment = parse_time(text)
    return moment.date() if moment is not None else None


def parse_time(text: str | None) -> datetime | None:
    """Return an aware UTC datetime from an ISO 8601 (or epoch seconds) export timestamp."""
    if not text:
        return None
    text = str(text).strip()
    if text.isdigit():
        return datetime.fromtimestamp(int(text), tz=UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _as_day(value: FieldValue) -> date | None:
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).date()
    if isinstance(value, date):
        return value
    return parse_day(str(value)) if value else None


def rows_of_export(path: Path) -> Iterator[dict[str, Any]]:
    """Yield an export file's rows as dicts, whether gzip or plain, CSV or (ND)JSON."""
    with path.open("rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as text:  # type: ignore[operator]
        first = text.read(1)
        while first and first.isspace():
            first = text.read(1)
        text.seek(0)
        if first == "[":
            yield from (row for row in json.load(text) if isinstance(row, dict))
        elif first == "{":
            yield from (json.loads(line) for line in text if line.strip())
        elif first:
            yield from csv.DictReader(text)


def errors_of_file(content: bytes) -> dict[str, str]:
    """Return email → message from an import job's errors file (CSV or JSON, maybe gzip).

    SendGrid does not document this file's columns, so any column or key named like an email
    and any named like an error is taken.
    """
    if content[:2] == b"\x1f\x8b":
        content = gzip.decompress(content)
    text = codecs.decode(content, "utf-8-sig", errors="replace").strip()
    if not text:
        return {}
    if text[0] in "[{":
        try:
            parsed = json.loads(text)
            records = parsed if isinstance(parsed, list) else parsed.get("errors", [parsed])
        except ValueError:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        records = list(csv.DictReader(io.StringIO(text)))
    found: dict[str, str] = {}
    for record in records:
        if not isinstance(record, dict):
            continue
        lowered = {str(k).strip().lower(): v for k, v in record.items() if k is not None}
        email = next((v for k, v in lowered.items() if "email" in k and v), None)
        message = next(
            (v for k, v in lowered.items() if k.startswith(("error", "message", "reason")) and v),
            None,
        )
        if email:
            found[str(email).strip().lower()] = str(message or "rejected by SendGrid")
    return found
