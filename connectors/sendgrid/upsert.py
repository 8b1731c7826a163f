"""Writing fields: upserts of at most 30,000 contacts and 6 MB, each import job polled to its end.

PUT /v3/marketing/contacts is asynchronous: it answers with a job id, and only the job says
which rows were stored. Every record ends written or failed, with SendGrid's own reason when
it names one; rows it cannot tell apart are failed (retried next pass), never reported written.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..base import FieldUpdate, PushOutcome
from .formats import FIELD_TYPES, errors_of_file, wire_value
from .http import SendGridHttp, describe_errors, error_messages
from .provisioning import CustomField

log = logging.getLogger(__name__)

#: PUT /v3/marketing/contacts takes "up to 30,000 contacts, or 6MB of data, whichever is lower".
MAX_UPSERT_CONTACTS = 30_000
#: 6 MB read as the smaller 6,000,000 bytes, less room for the envelope, so we never cross it.
MAX_UPSERT_BYTES = 6_000_000 - 4_096

_CONTACTS_PATH = "/v3/marketing/contacts"
_IMPORTS_PATH = "/v3/marketing/contacts/imports"
_ROW_INDEX = re.compile(r"contacts\[(\d+)\]")
_QUOTED_EMAIL = re.compile(r"'([^'\s]+@[^'\s]+)'")


@dataclass(frozen=True, slots=True)
class Row:
    """One contact of an upsert, already encoded, so a chunk's size is known before sending."""

    external_id: str
    email: str
    payload: bytes  # {"email": ..., "custom_fields": {...}} as JSON
    to_invalid_list: bool


def _ids(rows: Iterable[Row]) -> Iterator[str]:
    return (row.external_id for row in rows)


def encode(
    update: FieldUpdate, email: str, fields: Mapping[str, CustomField], *, to_invalid: bool
) -> Row | None:
    """Return an update as an upsert row, or None when none of its fields is ours to write.

    ValueError names a value its field's SendGrid type cannot hold.
    """
    custom: dict[str, str | int | float] = {}
    for name, value in update.fields.items():
        if name not in fields:
            continue
        try:
            custom[fields[name].id] = wire_value(value, fields[name].kind)
        except (TypeError, ValueError):
            sendgrid_type = FIELD_TYPES[fields[name].kind]
            raise ValueError(f"{name}: {value!r} is not a {sendgrid_type}") from None
    if not custom:
        return None
    payload = json.dumps({"email": email, "custom_fields": custom}).encode()
    return Row(update.external_id, email, payload, to_invalid)


def chunks(
    rows: Sequence[Row], *, envelope: int, max_count: int, max_bytes: int
) -> Iterator[list[Row]]:
    """Yield runs of rows whose request body stays within both upsert limits."""
    chunk: list[Row] = []
    size = envelope
    for row in rows:
        extra = len(row.payload) + (1 if chunk else 0)
        if chunk and (len(chunk) >= max_count or size + extra > max_bytes):
            yield chunk
            chunk, size, extra = [], envelope, len(row.payload)
        chunk.append(row)
        size += extra
    if chunk:
        yield chunk


def upsert_body(rows: Sequence[Row], list_ids: Sequence[str]) -> bytes:
    """Return the PUT /v3/marketing/contacts body for already-encoded rows."""
    head = {"list_ids": list(list_ids)} if list_ids else {}
    prefix = json.dumps(head)[:-1] + (", " if head else "") + '"contacts": ['
    return prefix.encode() + b",".join(row.payload for row in rows) + b"]}"


def _attributed(pairs: Iterable[tuple[str | None, str]], rows: Sequence[Row]) -> dict[int, str]:
    """Return row index → message for errors that name a row (contacts[3]) or its address."""
    by_email = {row.email: index for index, row in enumerate(rows)}
    found: dict[int, str] = {}
    for where, message in pairs:
        text = f"{where or ''} {message}"
        index_match = _ROW_INDEX.search(text)
        if index_match and int(index_match[1]) < len(rows):
            found[int(index_match[1])] = message or text.strip()
            continue
        email_match = _QUOTED_EMAIL.search(message)
        if email_match and email_match[1].lower() in by_email:
            found[by_email[email_match[1].lower()]] = message
    return found


async def submit(
    http: SendGridHttp,
    rows: list[Row],
    list_ids: Sequence[str],
    outcome: PushOutcome,
    *,
    again: bool = True,
) -> list[tuple[str, list[Row]]]:
    """Send one upsert; return its (job id, rows). Rows SendGrid names as bad are failed."""
    body = upsert_body(rows, list_ids)
    response = await http.call("PUT", _CONTACTS_PATH, bucket="upsert", content=body, accept=(400,))
    if response.status_code != 400:
        return [(str(response.json()["job_id"]), rows)]
    bad = _attributed(error_messages(response), rows)
    if not bad or not again:
        outcome.fail(_ids(rows), f"SendGrid refused the upsert: {describe_errors(response)}")
        return []
    outcome.failed.extend((rows[i].external_id, f"SendGrid: {msg}") for i, msg in bad.items())
    rest = [row for index, row in enumerate(rows) if index not in bad]
    return await submit(http, rest, list_ids, outcome, again=False) if rest else []


async def settle(http: SendGridHttp, job_id: str, rows: list[Row], outcome: PushOutcome) -> None:
    """Poll one import job to its end and record each of its rows as written or failed."""
    job: dict[str, Any] = {}
    async for _ in http.poll_delays():
        job = (await http.call("GET", f"{_IMPORTS_PATH}/{job_id}", bucket="import_status")).json()
        status = job.get("status")
        if status == "completed":
            outcome.written.extend(_ids(rows))
            return
        if status in ("failed", "errored"):
            url = (job.get("results") or {}).get("errors_url")
            errors = await _import_errors(http, str(url)) if url else {}
            if status == "failed":
                _settle_failed(job_id, rows, errors, outcome)
            else:
                count = (job.get("results") or {}).get("errored_count")
                _settle_errored(job_id, count, rows, errors, outcome)
            return
    outcome.fail(
        _ids(rows),
        f"SendGrid import job {job_id} still {job.get('status', 'pending')} after "
        f"{http.limits.max_poll_s:.0f}s; retried next pass",
    )


def _settle_failed(
    job_id: str, rows: list[Row], errors: Mapping[str, str], outcome: PushOutcome
) -> None:
    """Record every row of a failed job as failed, with its own reason when one is given."""
    generic = f"SendGrid import job {job_id} failed; retried next pass"
    outcome.failed.extend(
        (row.external_id, f"SendGrid: {errors[row.email]}" if row.email in errors else generic)
        for row in rows
    )


def _settle_errored(
    job_id: str, count: object, rows: list[Row], errors: Mapping[str, str], outcome: PushOutcome
) -> None:
    """Record the rows an errored job names as failed, the others as written.

    `count` is the job's errored_count, when it gave one.
    """
    bad = [row for row in rows if row.email in errors]
    if not bad or (isinstance(count, int | float) and len(bad) < count):
        # Rows we cannot tell apart are retried rather than reported written.
        outcome.fail(
            _ids(rows),
            f"SendGrid import job {job_id} errored for {count or 'some'} of {len(rows)} "
            "rows and its errors file does not name them all; retried next pass",
        )
        return
    outcome.failed.extend((row.external_id, f"SendGrid: {errors[row.email]}") for row in bad)
    outcome.written.extend(row.external_id for row in rows if row.email not in errors)


async def _import_errors(http: SendGridHttp, url: str) -> dict[str, str]:
    """Return email → message from an import job's errors file."""
    response = await http.get_file(url)
    if response is None:
        return {}
    try:
        return errors_of_file(response.content)
    except (ValueError, csv.Error) as exc:
        log.warning("%s: unreadable import errors file (%s)", http.connector, exc)
        return {}
