"""SendGrid Marketing Campaigns as a source and a sink: list contacts in, verification fields out.

Owns the translation between SendGrid's v3 Marketing API and connectors.base: whole lists are
read through the contacts export API (search returns at most 50 matches and cannot page a list),
fields are written with the asynchronous upsert (PUT /v3/marketing/contacts) whose import job is
polled so errored rows are reported, never dropped. It keeps no state beyond one process's
contact id → email map, opens no database, knows nothing of SMTP and must not import mailprobe.

    prepare()  list names → ids; design.md field names → this account's custom field ids
    pull()     export → poll → download every gzip file → CSV or NDJSON rows → Pages
    push()     chunks of ≤ 30,000 contacts and ≤ 6 MB → PUT → poll import jobs → PushReport

One private function, _error_for(), maps an HTTP response to our ConnectorError tree. The API key
is sent only to base_url's origin: export files are pre-signed URLs, fetched without it.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import gzip
import io
import json
import logging
import re
import tempfile
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx

from engine.result import format_time

from .base import Contact, FieldUpdate, FieldValue, Page, PushReport
from .errors import (
    ConnectorAuthError,
    ConnectorError,
    FatalConnectorError,
    RetriableConnectorError,
)
from .fields import FIELDS, FieldKind, FieldSpec

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.sendgrid.com"

#: PUT /v3/marketing/contacts takes "up to 30,000 contacts, or 6MB of data, whichever is lower".
MAX_UPSERT_CONTACTS = 30_000
#: 6 MB read as the smaller 6,000,000 bytes, less room for the envelope, so we never cross it.
MAX_UPSERT_BYTES = 6_000_000 - 4_096
#: "You can have up to 500 custom fields."
CUSTOM_FIELD_LIMIT = 500

#: design.md: Text for strings and enums, Number for the score and flags (1/0), Date for dates.
FIELD_TYPES: dict[FieldKind, str] = {
    FieldKind.ENUM: "Text",
    FieldKind.TEXT: "Text",
    FieldKind.NUMBER: "Number",
    FieldKind.BOOL: "Number",
    FieldKind.DATE: "Date",
    FieldKind.DATETIME: "Date",
}

#: What an API key needs, in the words of SendGrid's API key permissions page.
NEEDED_PERMISSION = (
    "Marketing Campaigns with full access (scopes marketing.read, marketing_campaigns.read, "
    "marketing_campaigns.create, marketing_campaigns.update)"
)

_FIELDS_PATH = "/v3/marketing/field_definitions"
_LISTS_PATH = "/v3/marketing/lists"
_CONTACTS_PATH = "/v3/marketing/contacts"
_EXPORTS_PATH = "/v3/marketing/contacts/exports"
_IMPORTS_PATH = "/v3/marketing/contacts/imports"

_LIST_PAGE_SIZE = 1000  # the lists endpoint's maximum
_MAX_POLL_INTERVAL_S = 30.0
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_ROW_INDEX = re.compile(r"contacts\[(\d+)\]")
_QUOTED_EMAIL = re.compile(r"'([^'\s]+@[^'\s]+)'")
_US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class CustomField:
    """One of this account's custom fields that mailprobe writes: its id, name and kind."""

    id: str  # e.g. "e3_N"; upserts key custom_fields by id, never by name
    name: str
    kind: FieldKind


@dataclass(frozen=True, slots=True)
class _Row:
    """One contact of an upsert, already encoded, so a chunk's size is known before sending."""

    external_id: str
    email: str
    payload: bytes  # {"email": ..., "custom_fields": {...}} as JSON
    to_invalid_list: bool


@dataclass(slots=True)
class _Outcome:
    """What push() learned so far about each record."""

    written: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def fail(self, rows: Iterable[_Row], why: str) -> None:
        self.failed.extend((row.external_id, why) for row in rows)

    def report(self) -> PushReport:
        return PushReport(written=tuple(self.written), failed=tuple(self.failed))


def _error_messages(response: httpx.Response) -> list[tuple[str | None, str]]:
    """Return (field, message) pairs of a SendGrid error body {"errors": [...]}."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()[:200]
        return [(None, text)] if text else []
    errors = body.get("errors") if isinstance(body, dict) else body
    if isinstance(errors, dict):
        errors = [errors]
    if not isinstance(errors, list):
        return []
    pairs = []
    for error in errors:
        if isinstance(error, dict):
            pairs.append((error.get("field") or None, str(error.get("message") or "").strip()))
    return pairs


def _describe_errors(response: httpx.Response) -> str:
    """Return the API's messages as one line, or the status reason when it sent none."""
    parts = [f"{f}: {m}" if f else m for f, m in _error_messages(response) if m]
    return "; ".join(parts) or response.reason_phrase or "no message"


def _where(request: httpx.Request) -> str:
    """Return `METHOD /path` of a request, without a query string (it may hold a signature)."""
    return f"{request.method} {request.url.path}"


def _error_for(
    connector: str, response: httpx.Response, *, retry_after: float | None = None
) -> ConnectorError:
    """Return the ConnectorError an unsuccessful SendGrid response stands for."""
    status = response.status_code
    where = _where(response.request)
    if status == 401:
        return ConnectorAuthError(
            connector,
            f"SendGrid rejected the API key ({where}: {_describe_errors(response)}); "
            "check the connector's api_key",
        )
    if status == 403:
        return ConnectorAuthError(
            connector,
            f"the API key may not call {where} ({_describe_errors(response)}); "
            f"give it {NEEDED_PERMISSION}",
        )
    if status == 429:
        return RetriableConnectorError(
            connector, f"SendGrid rate limit reached at {where}", retry_after=retry_after
        )
    if status >= 500:
        return RetriableConnectorError(
            connector,
            f"SendGrid server error {status} at {where}: {_describe_errors(response)}",
            retry_after=retry_after,
        )
    return FatalConnectorError(
        connector, f"{where} failed with {status}: {_describe_errors(response)}"
    )


def _header_float(response: httpx.Response, name: str) -> float | None:
    value = response.headers.get(name)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _number_text(value: float) -> str:
    """Return a number as SendGrid shows it back: `98`, not `98.0`."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _parse_day(text: str) -> date | None:
    """Return the day a SendGrid Date value names (MM/DD/YYYY, ISO date or ISO timestamp)."""
    text = text.strip()
    match = _US_DATE.match(text)
    if match:
        month, day, year = (int(part) for part in match.groups())
        try:
            return date(year, month, day)
        except ValueError:
            return None
    moment = _parse_time(text)
    return moment.date() if moment is not None else None


def _parse_time(text: str | None) -> datetime | None:
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


def wire_value(kind: FieldKind, value: FieldValue) -> str | int:
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
        return int(number) if number.is_integer() else number  # type: ignore[return-value]
    if kind in (FieldKind.DATE, FieldKind.DATETIME):
        day = _as_day(value)
        if day is None:
            raise ValueError(f"{value!r} is not a date")
        return day.strftime("%m/%d/%Y")
    raise ValueError(f"no SendGrid form for {kind}")


def _as_day(value: FieldValue) -> date | None:
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).date()
    if isinstance(value, date):
        return value
    return _parse_day(str(value)) if value else None


def read_back(kind: FieldKind, raw: Any) -> str:
    """Return a stored field value in the one text form pull() reports ("" when empty).

    Numbers and flags as integers (`98`, `1`), dates as ISO days (`2026-11-27`), text as is:
    the form expected_fields() gives, so the pipeline can compare the two.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return ""
    if kind in (FieldKind.NUMBER, FieldKind.BOOL):
        try:
            return _number_text(float(raw))
        except (TypeError, ValueError):
            return str(raw)
    if kind in (FieldKind.DATE, FieldKind.DATETIME):
        day = _parse_day(str(raw))
        return day.isoformat() if day is not None else str(raw)
    return str(raw)


def _chunks(
    rows: Sequence[_Row], *, envelope: int, max_count: int, max_bytes: int
) -> Iterator[list[_Row]]:
    """Yield runs of rows whose request body stays within both upsert limits."""
    chunk: list[_Row] = []
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


def _upsert_body(rows: Sequence[_Row], list_ids: Sequence[str]) -> bytes:
    """Return the PUT /v3/marketing/contacts body for already-encoded rows."""
    head = {"list_ids": list(list_ids)} if list_ids else {}
    prefix = json.dumps(head)[:-1] + (", " if head else "") + '"contacts": ['
    return prefix.encode() + b",".join(row.payload for row in rows) + b"]}"


def _attributed(pairs: Iterable[tuple[str | None, str]], rows: Sequence[_Row]) -> dict[int, str]:
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


def _rows_of_export(path: Path) -> Iterator[dict[str, Any]]:
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


def _errors_of_file(content: bytes) -> dict[str, str]:
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


class SendGridConnector:
    """SendGrid Marketing lists as a Source and a Sink, over httpx."""

    is_sorted = False
    #: Records one push() can take at once: it splits them into upserts of ≤ 30,000 / ≤ 6 MB
    #: itself, and each upsert costs a job poll, so bigger batches mean far fewer calls.
    push_batch = MAX_UPSERT_CONTACTS

    def __init__(
        self,
        name: str,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        lists: Sequence[str] = (),
        invalid_list: str | None = None,
        poll_interval_s: float = 2.0,
        max_poll_s: float = 600,
        file_type: str = "csv",
        page_size: int = 1000,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_rate_wait_s: float = 300,
        timeout_s: float = 60,
        field_limit: int = CUSTOM_FIELD_LIMIT,
        max_upsert_contacts: int = MAX_UPSERT_CONTACTS,
        max_upsert_bytes: int = MAX_UPSERT_BYTES,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
    ) -> None:
        if file_type not in ("csv", "json"):
            raise ValueError("file_type must be 'csv' or 'json'")
        self.name = name
        self._base = base_url.rstrip("/")
        self._lists_wanted = tuple(lists)
        self._invalid_wanted = invalid_list
        self._poll_interval_s = poll_interval_s
        self._max_poll_s = max_poll_s
        self._file_type = file_type
        self._page_size = page_size
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._max_rate_wait_s = max_rate_wait_s
        self._field_limit = field_limit
        # Smaller chunks are allowed (lighter requests, tests); larger ones never.
        self._max_upsert_contacts = min(max_upsert_contacts, MAX_UPSERT_CONTACTS)
        self._max_upsert_bytes = min(max_upsert_bytes, MAX_UPSERT_BYTES)
        self._sleep = sleep
        self._clock = clock
        timeout = httpx.Timeout(timeout_s)
        self._api = httpx.AsyncClient(
            base_url=self._base,
            timeout=timeout,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
        )
        # Pre-signed export URLs live on another host and carry their own signature: the key
        # must never travel there.
        self._files = httpx.AsyncClient(timeout=timeout, follow_redirects=True)
        self._rate: dict[str, tuple[float, float]] = {}  # bucket → (remaining, reset epoch)
        self._list_ids: tuple[str, ...] | None = None
        self._invalid_list_id: str | None = None
        self._fields: dict[str, CustomField] | None = None
        self._emails: dict[str, str] = {}  # contact id → email, from the last pull

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> SendGridConnector:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._api.aclose()
        await self._files.aclose()

    async def prepare(self) -> None:
        """Resolve the configured lists and create the custom fields this sink writes."""
        await self._resolve_lists()
        await self._resolve_fields()

    @property
    def fields(self) -> Mapping[str, CustomField]:
        """Return field name → this account's custom field, once prepare() has run."""
        return dict(self._fields or {})

    @property
    def list_ids(self) -> tuple[str, ...]:
        """Return the ids of the lists pulled (empty: all contacts), once resolved."""
        return self._list_ids or ()

    @property
    def invalid_list_id(self) -> str | None:
        """Return the id of the list invalid contacts are added to, once resolved."""
        return self._invalid_list_id

    def expected_fields(self, values: Mapping[str, FieldValue]) -> dict[str, str]:
        """Return the text pull() will report for these values once written ("" = empty)."""
        kinds = {spec.name: spec.kind for spec in FIELDS}
        return {
            name: read_back(kinds[name], wire_value(kinds[name], value))
            for name, value in values.items()
            if name in kinds
        }

    # -- HTTP --------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        url: str,
        *,
        bucket: str,
        json_body: Any = None,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        accept: Sequence[int] = (),
    ) -> httpx.Response:
        """Return SendGrid's response, after waiting out rate limits and retrying 429 and 5xx."""
        headers = {"Content-Type": "application/json"} if content is not None else None
        attempt = 0
        while True:
            await self._respect_rate_limit(bucket)
            try:
                response = await self._api.request(
                    method, url, json=json_body, content=content, params=params, headers=headers
                )
            except httpx.TransportError as exc:
                delay = self._backoff(attempt)
                attempt += 1
                if attempt > self._max_retries:
                    raise RetriableConnectorError(
                        self.name,
                        f"cannot reach SendGrid at {self._base} ({type(exc).__name__})",
                        retry_after=delay,
                    ) from exc
                await self._sleep(delay)
                continue
            self._note_rate_limit(bucket, response)
            if response.is_success or response.status_code in accept:
                return response
            delay = self._retry_delay(response, attempt)
            error = _error_for(self.name, response, retry_after=delay)
            if (
                not isinstance(error, RetriableConnectorError)
                or attempt >= self._max_retries
                or delay > self._max_rate_wait_s
            ):
                raise error
            attempt += 1
            log.info("%s: %s, retrying in %.1fs", self.name, error.message, delay)
            await self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Return the wait before retry `attempt` (0-based): exponential, bounded at 60 s."""
        return min(self._backoff_s * 2**attempt, 60.0)

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float:
        """Return how long to wait before repeating a request that got a 429 or a 5xx."""
        if response.status_code == 429:
            retry_after = _header_float(response, "Retry-After")
            if retry_after is not None:
                return max(retry_after, 0.0)
            reset = _header_float(response, "X-RateLimit-Reset")
            if reset is not None:
                return max(reset - self._clock(), 1.0)
        return self._backoff(attempt)

    def _note_rate_limit(self, bucket: str, response: httpx.Response) -> None:
        remaining = _header_float(response, "X-RateLimit-Remaining")
        reset = _header_float(response, "X-RateLimit-Reset")
        if remaining is not None and reset is not None:
            self._rate[bucket] = (remaining, reset)

    async def _respect_rate_limit(self, bucket: str) -> None:
        """Wait for the endpoint's refresh period when its last answer said none are left."""
        remaining, reset = self._rate.get(bucket, (1.0, 0.0))
        if remaining > 0:
            return
        wait = reset - self._clock()
        del self._rate[bucket]
        if wait <= 0:
            return
        if wait > self._max_rate_wait_s:
            raise RetriableConnectorError(
                self.name,
                f"SendGrid rate limit for {bucket} resets in {wait:.0f}s",
                retry_after=wait,
            )
        log.info("%s: SendGrid rate limit for %s, waiting %.1fs", self.name, bucket, wait)
        await self._sleep(wait)

    async def _poll_delays(self) -> AsyncIterator[float]:
        """Yield after each wait of a bounded, growing poll schedule, until max_poll_s is spent."""
        waited = 0.0
        interval = self._poll_interval_s
        while waited < self._max_poll_s:
            delay = min(interval, self._max_poll_s - waited)
            await self._sleep(delay)
            waited += delay
            yield waited
            interval = min(interval * 1.5, _MAX_POLL_INTERVAL_S)

    # -- lists -------------------------------------------------------------------------------

    async def _all_lists(self) -> list[dict[str, Any]]:
        """Return every contact list of the account, following page tokens."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"page_size": _LIST_PAGE_SIZE}
        while True:
            body = (await self._call("GET", _LISTS_PATH, bucket="lists", params=params)).json()
            found.extend(item for item in body.get("result", []) if isinstance(item, dict))
            next_url = (body.get("_metadata") or {}).get("next")
            token = httpx.URL(next_url).params.get("page_token") if next_url else None
            if not token or token == params.get("page_token"):
                return found
            params = {"page_size": _LIST_PAGE_SIZE, "page_token": token}

    async def _resolve_lists(self) -> None:
        known = await self._all_lists()
        self._list_ids = tuple(self._match_list(wanted, known) for wanted in self._lists_wanted)
        self._invalid_list_id = None
        if self._invalid_wanted:
            try:
                self._invalid_list_id = self._match_list(self._invalid_wanted, known)
            except FatalConnectorError:
                if _UUID.match(self._invalid_wanted):
                    raise
                self._invalid_list_id = await self._create_list(self._invalid_wanted)

    def _match_list(self, wanted: str, known: Sequence[Mapping[str, Any]]) -> str:
        """Return the id of the list named or identified by `wanted`."""
        for item in known:
            if item.get("id") == wanted:
                return str(item["id"])
        same = [item for item in known if item.get("name") == wanted]
        if not same:
            same = [
                item for item in known if str(item.get("name", "")).casefold() == wanted.casefold()
            ]
        if len(same) == 1:
            return str(same[0]["id"])
        if len(same) > 1:
            ids = ", ".join(str(item["id"]) for item in same)
            raise FatalConnectorError(
                self.name, f"several SendGrid lists are named {wanted!r} ({ids}); give the list id"
            )
        names = ", ".join(sorted(repr(item.get("name")) for item in known)[:20]) or "none"
        raise FatalConnectorError(
            self.name,
            f"unknown SendGrid list {wanted!r} in `lists`/`invalid_list`; the account's lists "
            f"are {names}",
        )

    async def _create_list(self, name: str) -> str:
        response = await self._call("POST", _LISTS_PATH, bucket="lists", json_body={"name": name})
        list_id = str(response.json()["id"])
        log.info("%s: created SendGrid list %r (%s) for invalid contacts", self.name, name, list_id)
        return list_id

    async def _ensure_lists(self) -> None:
        if self._list_ids is None:
            await self._resolve_lists()

    # -- custom fields -----------------------------------------------------------------------

    async def _resolve_fields(self) -> None:
        body = (await self._call("GET", _FIELDS_PATH, bucket="fields")).json()
        custom = [item for item in body.get("custom_fields", []) if isinstance(item, dict)]
        by_name = {str(item.get("name", "")).casefold(): item for item in custom}
        resolved: dict[str, CustomField] = {}
        missing: list[FieldSpec] = []
        conflicts: list[str] = []
        for spec in FIELDS:
            item = by_name.get(spec.name.casefold())
            if item is None:
                missing.append(spec)
            elif item.get("field_type") != FIELD_TYPES[spec.kind]:
                conflicts.append(
                    f"{item.get('name')} is {item.get('field_type')}, mailprobe needs "
                    f"{FIELD_TYPES[spec.kind]}"
                )
            else:
                resolved[spec.name] = CustomField(str(item["id"]), spec.name, spec.kind)
        if conflicts:
            raise FatalConnectorError(
                self.name,
                "custom fields exist with another type: "
                + "; ".join(conflicts)
                + ". Delete or rename them in SendGrid (Marketing → Custom Fields) and retry",
            )
        if missing and len(custom) + len(missing) > self._field_limit:
            raise self._field_limit_error(len(custom), missing)
        for spec in missing:
            resolved[spec.name] = await self._create_field(
                spec, existing=len(custom), missing=missing
            )
        self._fields = resolved

    async def _create_field(
        self, spec: FieldSpec, *, existing: int, missing: Sequence[FieldSpec]
    ) -> CustomField:
        response = await self._call(
            "POST",
            _FIELDS_PATH,
            bucket="fields",
            json_body={"name": spec.name, "field_type": FIELD_TYPES[spec.kind]},
            accept=(400,),
        )
        if response.status_code == 400:
            text = _describe_errors(response)
            if re.search(r"limit|maximum|max\b|too many", text, re.I):
                raise self._field_limit_error(existing, missing, detail=text)
            raise FatalConnectorError(
                self.name, f"SendGrid refused to create custom field {spec.name}: {text}"
            )
        log.info("%s: created SendGrid custom field %s", self.name, spec.name)
        return CustomField(str(response.json()["id"]), spec.name, spec.kind)

    def _field_limit_error(
        self, existing: int, missing: Sequence[FieldSpec], *, detail: str = ""
    ) -> FatalConnectorError:
        names = ", ".join(spec.name for spec in missing)
        tail = f" (SendGrid: {detail})" if detail else ""
        return FatalConnectorError(
            self.name,
            f"the SendGrid account has {existing} of its {self._field_limit} custom fields and "
            f"mailprobe needs {len(missing)} more ({names}){tail}; delete unused custom fields "
            "in SendGrid (Marketing → Custom Fields) and retry",
        )

    async def _ensure_fields(self) -> dict[str, CustomField]:
        if self._fields is None:
            await self._resolve_fields()
        assert self._fields is not None
        return self._fields

    # -- pull --------------------------------------------------------------------------------

    async def pull(self, since: str | None, *, signpost: datetime) -> AsyncIterator[Page]:
        """Yield every contact of the lists, in pages; the last page carries the cursor.

        An export has no "changed since" filter, so `since` is not used: each pass reads the
        whole lists and the pipeline compares addresses and values with its store. Export
        timestamps are to the second and our own writes bump updated_at, so the cursor
        (the newest updated_at seen, capped at the signpost) must not decide what is new.
        """
        await self._ensure_lists()
        urls = await self._export()
        newest: datetime | None = None
        held: list[Contact] | None = None
        seen: set[str] = set()
        with tempfile.TemporaryDirectory(prefix="mailprobe-sendgrid-") as folder:
            for number, url in enumerate(urls):
                path = await self._download(url, Path(folder) / f"part-{number}")
                for batch in self._batches(self._contacts_in(path, seen)):
                    for contact in batch:
                        if contact.updated_at and (newest is None or contact.updated_at > newest):
                            newest = contact.updated_at
                    if held is not None:
                        yield Page(tuple(held))
                    held = batch
                path.unlink()
        cursor = format_time(min(newest, signpost)) if newest is not None else None
        yield Page(tuple(held or ()), cursor=cursor)

    def _batches(self, contacts: Iterable[Contact]) -> Iterator[list[Contact]]:
        batch: list[Contact] = []
        for contact in contacts:
            batch.append(contact)
            if len(batch) >= self._page_size:
                yield batch
                batch = []
        if batch:
            yield batch

    async def _export(self) -> list[str]:
        """Return the download URLs of a fresh export of the configured lists."""
        request: dict[str, Any] = {"file_type": self._file_type}
        if self._list_ids:
            request["list_ids"] = list(self._list_ids)
        response = await self._call("POST", _EXPORTS_PATH, bucket="exports", json_body=request)
        export_id = str(response.json()["id"])
        status: dict[str, Any] = {}
        async for waited in self._poll_delays():
            status = (
                await self._call("GET", f"{_EXPORTS_PATH}/{export_id}", bucket="export_status")
            ).json()
            state = status.get("status")
            if state == "ready":
                urls = [str(url) for url in status.get("urls") or []]
                log.info(
                    "%s: export %s ready after %.0fs, %d file(s)",
                    self.name,
                    export_id,
                    waited,
                    len(urls),
                )
                return urls
            if state == "failure":
                raise RetriableConnectorError(
                    self.name,
                    f"SendGrid export {export_id} failed: {status.get('message') or 'no reason'}",
                )
        raise RetriableConnectorError(
            self.name,
            f"SendGrid export {export_id} still {status.get('status', 'pending')} after "
            f"{self._max_poll_s:.0f}s",
            retry_after=self._poll_interval_s,
        )

    async def _download(self, url: str, path: Path) -> Path:
        """Stream one export file to disk, as it came (gzip), and return its path."""
        attempt = 0
        while True:
            try:
                async with self._files.stream("GET", url) as response:
                    if response.is_success:
                        with path.open("wb") as out:
                            async for block in response.aiter_bytes():
                                out.write(block)
                        return path
                    status = response.status_code
            except httpx.TransportError as exc:
                status = 0
                cause: Exception | None = exc
            else:
                cause = None
            where = f"{httpx.URL(url).host}{httpx.URL(url).path}"  # no query: it is the signature
            if 0 < status < 500:
                raise RetriableConnectorError(
                    self.name,
                    f"export file {where} could not be read ({status}); it may have expired, "
                    "the next pass exports again",
                )
            attempt += 1
            if attempt > self._max_retries:
                raise RetriableConnectorError(
                    self.name, f"export file {where} failed ({status or 'network error'})"
                ) from cause
            await self._sleep(self._backoff(attempt - 1))

    def _contacts_in(self, path: Path, seen: set[str]) -> Iterator[Contact]:
        """Yield the contacts of one export file, each contact id once per pull."""
        names = {spec.name.casefold(): spec for spec in FIELDS}
        ids = {custom.id.casefold(): custom.name for custom in (self._fields or {}).values()}
        keys: dict[str, str] = {}  # column → its casefolded name, worked out once per file
        skipped = 0
        for row in _rows_of_export(path):
            contact = _contact_from(row, names, ids, keys)
            if contact is None:
                skipped += 1
                continue
            if contact.external_id in seen:
                continue
            seen.add(contact.external_id)
            if contact.email:
                self._emails[contact.external_id] = contact.email
            yield contact
        if skipped:
            log.warning(
                "%s: %d export row(s) had no contact id and were skipped", self.name, skipped
            )

    # -- push --------------------------------------------------------------------------------

    async def push(self, updates: Sequence[FieldUpdate]) -> PushReport:
        """Upsert the updates by email, poll their import jobs, and report every record."""
        fields = await self._ensure_fields()
        await self._ensure_lists()
        outcome = _Outcome()
        plain, invalid = self._rows(updates, fields, outcome)
        jobs: list[tuple[str, list[_Row]]] = []
        for rows, list_ids in ((plain, ()), (invalid, (self._invalid_list_id,))):
            ids = [list_id for list_id in list_ids if list_id]
            envelope = len(_upsert_body([], ids))
            for chunk in _chunks(
                rows,
                envelope=envelope,
                max_count=self._max_upsert_contacts,
                max_bytes=self._max_upsert_bytes,
            ):
                jobs.extend(await self._submit(chunk, ids, outcome))
        for job_id, rows in jobs:
            await self._settle(job_id, rows, outcome)
        return outcome.report()

    def _rows(
        self,
        updates: Sequence[FieldUpdate],
        fields: Mapping[str, CustomField],
        outcome: _Outcome,
    ) -> tuple[list[_Row], list[_Row]]:
        """Return the updates encoded as upsert rows: (others, those for the invalid list)."""
        latest = {update.external_id: update for update in updates}
        plain: list[_Row] = []
        invalid: list[_Row] = []
        for update in latest.values():
            email = self._email_of(update)
            if not email:
                outcome.failed.append(
                    (
                        update.external_id,
                        "no email address known for this contact; SendGrid upserts by email",
                    )
                )
                continue
            try:
                custom = self._custom_fields(update, fields)
            except ValueError as exc:
                outcome.failed.append((update.external_id, str(exc)))
                continue
            if not custom:
                outcome.written.append(update.external_id)
                continue
            payload = json.dumps({"email": email, "custom_fields": custom}).encode()
            to_invalid = (
                self._invalid_list_id is not None
                and update.fields.get("mailprobe_status") == "invalid"
            )
            (invalid if to_invalid else plain).append(
                _Row(update.external_id, email, payload, to_invalid)
            )
        return plain, invalid

    @staticmethod
    def _custom_fields(
        update: FieldUpdate, fields: Mapping[str, CustomField]
    ) -> dict[str, str | int | float]:
        """Return an update's values keyed by custom field id; ValueError names a bad value."""
        custom: dict[str, str | int | float] = {}
        for name, value in update.fields.items():
            if name not in fields:
                continue
            try:
                custom[fields[name].id] = wire_value(fields[name].kind, value)
            except (TypeError, ValueError):
                sendgrid_type = FIELD_TYPES[fields[name].kind]
                raise ValueError(f"{name}: {value!r} is not a {sendgrid_type}") from None
        return custom

    def _email_of(self, update: FieldUpdate) -> str | None:
        """Return the address to upsert: the update's, the last pull's, or the verified one."""
        email = update.email or self._emails.get(update.external_id)
        if not email:
            verified = update.fields.get("mailprobe_verified_email")
            email = verified if isinstance(verified, str) else None
        return email.strip().lower() if email else None

    async def _submit(
        self, rows: list[_Row], list_ids: Sequence[str], outcome: _Outcome, *, again: bool = True
    ) -> list[tuple[str, list[_Row]]]:
        """Send one upsert; return its (job id, rows). Rows SendGrid names as bad are failed."""
        response = await self._call(
            "PUT",
            _CONTACTS_PATH,
            bucket="upsert",
            content=_upsert_body(rows, list_ids),
            accept=(400,),
        )
        if response.status_code != 400:
            return [(str(response.json()["job_id"]), rows)]
        pairs = _error_messages(response)
        bad = _attributed(pairs, rows)
        if not bad or not again:
            outcome.fail(rows, f"SendGrid refused the upsert: {_describe_errors(response)}")
            return []
        outcome.failed.extend((rows[i].external_id, f"SendGrid: {msg}") for i, msg in bad.items())
        rest = [row for index, row in enumerate(rows) if index not in bad]
        return await self._submit(rest, list_ids, outcome, again=False) if rest else []

    async def _settle(self, job_id: str, rows: list[_Row], outcome: _Outcome) -> None:
        """Poll one import job to its end and record each of its rows as written or failed."""
        job: dict[str, Any] = {}
        async for _ in self._poll_delays():
            job = (
                await self._call("GET", f"{_IMPORTS_PATH}/{job_id}", bucket="import_status")
            ).json()
            status = job.get("status")
            if status == "completed":
                outcome.written.extend(row.external_id for row in rows)
                return
            if status == "failed":
                await self._settle_failed(job_id, job, rows, outcome)
                return
            if status == "errored":
                await self._settle_errored(job_id, job, rows, outcome)
                return
        outcome.fail(
            rows,
            f"SendGrid import job {job_id} still {job.get('status', 'pending')} after "
            f"{self._max_poll_s:.0f}s; retried next pass",
        )

    async def _settle_failed(
        self, job_id: str, job: Mapping[str, Any], rows: list[_Row], outcome: _Outcome
    ) -> None:
        """Record every row of a failed job as failed, with its own reason when one is given."""
        url = (job.get("results") or {}).get("errors_url")
        errors = await self._import_errors(str(url)) if url else {}
        generic = f"SendGrid import job {job_id} failed; retried next pass"
        outcome.failed.extend(
            (row.external_id, f"SendGrid: {errors[row.email]}" if row.email in errors else generic)
            for row in rows
        )

    async def _settle_errored(
        self, job_id: str, job: Mapping[str, Any], rows: list[_Row], outcome: _Outcome
    ) -> None:
        """Record the rows an errored job names as failed, the others as written."""
        results = job.get("results") or {}
        errors: dict[str, str] = {}
        url = results.get("errors_url")
        if url:
            errors = await self._import_errors(str(url))
        bad = [row for row in rows if row.email in errors]
        count = results.get("errored_count")
        if not bad or (isinstance(count, int | float) and len(bad) < count):
            # Rows we cannot tell apart are retried rather than reported written.
            outcome.fail(
                rows,
                f"SendGrid import job {job_id} errored for {count or 'some'} of {len(rows)} "
                "rows and its errors file does not name them all; retried next pass",
            )
            return
        outcome.failed.extend((row.external_id, f"SendGrid: {errors[row.email]}") for row in bad)
        outcome.written.extend(row.external_id for row in rows if row.email not in errors)

    async def _import_errors(self, url: str) -> dict[str, str]:
        """Return email → message from an import job's errors file."""
        if httpx.URL(url).host == httpx.URL(self._base).host:
            response = await self._call("GET", url, bucket="import_errors")
        else:
            response = await self._files.get(url)
            if not response.is_success:
                return {}
        try:
            return _errors_of_file(response.content)
        except (ValueError, csv.Error) as exc:
            log.warning("%s: unreadable import errors file (%s)", self.name, exc)
            return {}


def _contact_from(
    row: Mapping[str, Any],
    names: Mapping[str, FieldSpec],
    ids: Mapping[str, str],
    keys: dict[str, str],
) -> Contact | None:
    """Return the Contact an export row describes, or None when it has no contact id."""
    lowered: dict[str, Any] = {}
    for key, value in row.items():
        if key is None:
            continue  # csv puts surplus cells under None
        folded = keys.get(key)
        if folded is None:
            folded = keys[key] = str(key).strip().casefold()
        lowered[folded] = value
    contact_id = lowered.get("contact_id") or lowered.get("id")
    if not contact_id:
        return None
    email = str(lowered.get("email") or "").strip().lower() or None
    raw: dict[str, Any] = {key: value for key, value in lowered.items() if key in names}
    custom = lowered.get("custom_fields")
    if isinstance(custom, dict):
        for key, value in custom.items():
            key = str(key).casefold()
            name = key if key in names else ids.get(key, "").casefold()
            if name in names:
                raw[name] = value
    values = {}
    for name, value in raw.items():
        text = read_back(names[name].kind, value)
        if text:
            values[names[name].name] = text
    return Contact(
        external_id=str(contact_id),
        email=email,
        updated_at=_parse_time(lowered.get("updated_at")),
        fields=values,
    )
