"""HubSpot contacts as a source and a sink: the search API in, batch update out.

This module owns the HubSpot wire: provisioning the `mailprobe` property group and properties,
reading changed contacts with the CRM search API, writing fields with batch update, HubSpot's
own rate windows and 429 policies, and turning hubspot-api-client's exceptions into
ConnectorErrors (in `_connector_error`, and nowhere else); when to retry, how long to back off
and how to pace inside a window is the shared policy's (connectors.http_policy). It keeps no
state between calls, opens no database and must not import `mailprobe`: the pipeline saves
cursors and decides what to write.

The client's calls block, so each runs in a thread; one connector makes one call at a time.
Responses are read as plain JSON (`_preload_content=False`): the client's models reject replies
HubSpot is known to vary (a missing `links` in a 207 error), and 25,000 contacts parse faster.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

import urllib3
from hubspot import HubSpot
from hubspot.crm.contacts.exceptions import ApiException as ContactsApiException
from hubspot.crm.properties.exceptions import ApiException as PropertiesApiException
from urllib3.util.retry import Retry

from .base import Contact, FieldUpdate, FieldValue, Page, PushOutcome, PushReport
from .errors import (
    ConnectorAuthError,
    ConnectorError,
    FatalConnectorError,
    RetriableConnectorError,
)
from .fields import FIELDS, GROUP_LABEL, GROUP_NAME, FieldKind, FieldSpec, field_text, number_text
from .http_policy import (
    RetryPolicy,
    RollingWindow,
    error_class,
    pace,
    retry_after_seconds,
    retrying,
)

__all__ = ["DEFAULT_BASE_URL", "REQUIRED_SCOPES", "HubSpotConnector", "wire_value"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.hubapi.com"

#: What a private app needs: read and write contacts, read and create their properties.
REQUIRED_SCOPES = (
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.schemas.contacts.read",
    "crm.schemas.contacts.write",
)

_OBJECT_TYPE = "contacts"
_MODIFIED = "lastmodifieddate"
_OBJECT_ID = "hs_object_id"
_MERGED_IDS = "hs_merged_object_ids"
_PROPERTIES = ("email", _MODIFIED, _OBJECT_ID, _MERGED_IDS, *(spec.name for spec in FIELDS))
_KINDS: dict[str, FieldKind] = {spec.name: spec.kind for spec in FIELDS}

_MAX_PAGE = 200  # HubSpot's search limit per page
_MAX_BATCH = 100  # HubSpot's batch update limit
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# HubSpot counts requests per rolling window on its side; a little slack absorbs network jitter.
_WINDOW_SLACK_S = 0.25
# Never wait longer than this inside one call; a longer wait (a DAILY limit) ends the pass.
_MAX_WAIT_S = 60.0
# 423 Locked: HubSpot documents it as "try again shortly" (a contact being merged or imported).
_ALSO_RETRIABLE = frozenset({423})

# HubSpot type/fieldType per kind, and the types a user's property may have for us to use it.
_CREATE_AS: dict[FieldKind, tuple[str, str]] = {
    FieldKind.ENUM: ("enumeration", "select"),
    FieldKind.NUMBER: ("number", "number"),
    FieldKind.DATETIME: ("datetime", "date"),
    FieldKind.DATE: ("date", "date"),
    FieldKind.TEXT: ("string", "text"),
    FieldKind.BOOL: ("bool", "booleancheckbox"),
}
_COMPATIBLE: dict[FieldKind, frozenset[str]] = {
    FieldKind.ENUM: frozenset({"enumeration"}),
    FieldKind.NUMBER: frozenset({"number"}),
    FieldKind.DATETIME: frozenset({"datetime"}),
    FieldKind.DATE: frozenset({"date"}),
    FieldKind.TEXT: frozenset({"string"}),
    # Older portals model checkboxes as enumeration/booleancheckbox with options true/false.
    FieldKind.BOOL: frozenset({"bool", "enumeration"}),
}
_BOOL_OPTIONS = (("true", "Yes"), ("false", "No"))


class _Op(StrEnum):
    """The HubSpot calls this connector makes; searches have their own, tighter rate limit."""

    SEARCH = "search contacts"
    BATCH_UPDATE = "batch update contacts"
    LIST_PROPERTIES = "list contact properties"
    GET_PROPERTY = "read a contact property"
    CREATE_PROPERTY = "create a contact property"
    UPDATE_PROPERTY = "update a contact property"
    GET_GROUP = "read the property group"
    CREATE_GROUP = "create the property group"


class _Rejected(FatalConnectorError):
    """HubSpot refused a request (a 4xx other than auth and rate limits); callers may act on it."""

    def __init__(
        self,
        connector: str,
        message: str,
        *,
        status: int,
        category: str | None,
        codes: frozenset[str] = frozenset(),
        ids: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(connector, message)
        self.status = status
        self.category = category
        self.codes = codes  # errors[].code, e.g. INVALID_OPTION, PROPERTY_DOESNT_EXIST
        self.ids = ids  # object ids the error names, when it names any


# -- wire format ---------------------------------------------------------------------------------


def wire_value(value: FieldValue, kind: FieldKind | None = None) -> str:
    """Return a field value as HubSpot takes it, and as pulled Contact.fields hold it.

    Datetimes are UTC ISO 8601 with milliseconds and `Z` (HubSpot keeps milliseconds), dates
    `YYYY-MM-DD` (midnight UTC), booleans `true`/`false`, numbers in decimal, None "" (clears).
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if kind is FieldKind.DATE:
            return _utc(value).date().isoformat()
        return _iso_ms(_ms(value))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int | float):
        return number_text(value)
    return str(value)


def _read_back(raw: object, kind: FieldKind | None) -> str:
    """Return a value HubSpot sent in the canonical text form (fields.field_text), "" if empty."""
    if raw is None or raw == "":
        return ""
    text = str(raw)
    try:
        if kind is FieldKind.DATETIME:
            return field_text(_EPOCH + timedelta(milliseconds=_parse_ms(text)))
        if kind is FieldKind.DATE:
            return text[:10] if not text.isdigit() else _iso_ms(int(text))[:10]
        if kind is FieldKind.NUMBER:
            return number_text(float(text))
    except ValueError:
        return text  # a user typed something odd: keep it, the pipeline will overwrite it
    if kind is FieldKind.BOOL:
        return text.lower()
    return text


def _utc(moment: datetime) -> datetime:
    # A naive datetime is UTC: every time in mailprobe is.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _ms(moment: datetime) -> int:
    return (_utc(moment) - _EPOCH) // timedelta(milliseconds=1)


def _iso_ms(ms: int) -> str:
    moment = _EPOCH + timedelta(milliseconds=ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def _parse_ms(text: str) -> int:
    """Return epoch milliseconds from HubSpot's ISO 8601 text or epoch-milliseconds string."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    return _ms(datetime.fromisoformat(text.replace("Z", "+00:00")))


# -- reading contacts ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Found:
    """One search result with its id and lastmodifieddate read once."""

    id: str
    modified_ms: int
    result: Mapping[str, Any]

    @classmethod
    def of(cls, result: Mapping[str, Any]) -> _Found:
        """Return a search result with its keys read out."""
        properties = result.get("properties") or {}
        modified = _parse_ms(properties.get(_MODIFIED) or result["updatedAt"])
        return cls(str(result["id"]), modified, result)


def _contact(found: _Found) -> Contact:
    """Return the Contact a search result describes; mailprobe fields in canonical text."""
    properties = found.result.get("properties") or {}
    fields = {
        name: text
        for name, kind in _KINDS.items()
        if (text := _read_back(properties.get(name), kind))
    }
    email = (properties.get("email") or "").strip() or None
    updated_at = _EPOCH + timedelta(milliseconds=found.modified_ms)
    return Contact(found.id, email, updated_at, fields)


def _merged_ids(found: _Found) -> list[str]:
    """Return the ids merged into this contact: they no longer exist on their own."""
    raw = (found.result.get("properties") or {}).get(_MERGED_IDS) or ""
    return [part.strip() for part in raw.split(";") if part.strip()]


def _filter(name: str, operator: str, value: int) -> dict[str, str]:
    return {"propertyName": name, "operator": operator, "value": str(value)}


@dataclass(slots=True)
class _Keyset:
    """Where one pass's scan of lastmodifieddate stands: the next search, and what is new.

    Every page is a fresh query from the last timestamp reached (keyset paging) instead of
    `after` offsets: offsets stop at HubSpot's 10,000-result cap, and they skip contacts when
    the result set shifts under them (our own writes move contacts past the signpost). HubSpot
    sorts by one property only, so when a whole page shares one timestamp, that timestamp is
    drained in hs_object_id order before the scan moves past it.
    """

    end_ms: int
    limit: int
    t_ms: int | None = None  # the last timestamp reached; every earlier contact has been read
    strict: bool = False  # t_ms is fully read: continue after it, not from it
    seen: set[str] = field(default_factory=set)  # ids already read at t_ms
    tie_after: int | None = None  # draining t_ms by id, above this id; None: scanning by time
    done: bool = False

    def request(self) -> dict[str, Any]:
        """Return the search request body for the next page."""
        if self.tie_after is not None and self.t_ms is not None:
            filters = [
                _filter(_MODIFIED, "GTE", self.t_ms),
                _filter(_MODIFIED, "LTE", self.t_ms),
                _filter(_OBJECT_ID, "GT", self.tie_after),
            ]
            sort = _OBJECT_ID
        else:
            filters = [_filter(_MODIFIED, "LTE", self.end_ms)]
            if self.t_ms is not None:
                filters.insert(0, _filter(_MODIFIED, "GT" if self.strict else "GTE", self.t_ms))
            sort = _MODIFIED
        return {
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
            "properties": list(_PROPERTIES),
            "limit": self.limit,
        }

    def take(self, results: Sequence[_Found]) -> list[_Found]:
        """Return the results this pass has not read yet, and move the scan past the page."""
        if self.tie_after is not None:
            return self._take_tie(results)
        fresh = [r for r in results if not (r.modified_ms == self.t_ms and r.id in self.seen)]
        if results:
            last = results[-1].modified_ms
            if last != self.t_ms:
                self.t_ms, self.strict, self.seen = last, False, set()
            self.seen.update(r.id for r in results if r.modified_ms == last)
        if len(results) < self.limit:
            self.done = True
        elif results[0].modified_ms == self.t_ms:
            self.tie_after = 0  # a full page of one timestamp: there may be more of it
        return fresh

    def _take_tie(self, results: Sequence[_Found]) -> list[_Found]:
        fresh = [r for r in results if r.id not in self.seen]
        self.seen.update(r.id for r in results)
        if len(results) < self.limit:
            self.tie_after, self.strict = None, True
        else:
            self.tie_after = int(results[-1].id)
        return fresh


# -- rate limits and errors ----------------------------------------------------------------------


_CLIENT_ERRORS = (ContactsApiException, PropertiesApiException, urllib3.exceptions.HTTPError)


def _body(exc: BaseException) -> dict[str, Any]:
    raw = getattr(exc, "body", None)
    try:
        data = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _header(exc: BaseException, name: str) -> str | None:
    headers = getattr(exc, "headers", None)
    return headers.get(name) if headers is not None else None


def _named_ids(body: Mapping[str, Any]) -> frozenset[str]:
    """Return the object ids an error body names (context.ids, errors[].context.id(s))."""
    contexts = [body.get("context") or {}]
    contexts += [(e or {}).get("context") or {} for e in body.get("errors") or []]
    return frozenset(
        str(value)
        for context in contexts
        for key in ("ids", "id", "objectId", "objectIds")
        for value in context.get(key) or []
    )


def _seconds_to_utc_midnight(now: datetime) -> float:
    # HubSpot resets DAILY at midnight in the portal's time zone, which the API does not tell
    # us; UTC midnight is when we try again (a 429 then just pauses us again).
    now = _utc(now)
    midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    return (midnight - now).total_seconds()


def _rate_limited(
    connector: str, detail: str, body: Mapping[str, Any], *, retry_after: str | None, now: datetime
) -> RetriableConnectorError:
    """Return the wait a 429 asks for: its Retry-After, else what its policyName implies."""
    policy = str(body.get("policyName") or "")
    asked = retry_after_seconds(retry_after, now=_utc(now))
    if policy == "DAILY":
        wait = asked if asked is not None else _seconds_to_utc_midnight(now)
        message = f"HubSpot's daily API limit is used up; pausing until it resets ({detail})"
        return RetriableConnectorError(connector, message, retry_after=wait)
    default = 1.0 if policy == "SECONDLY" else 10.0  # TEN_SECONDLY_ROLLING and unknown: 10 s
    message = f"HubSpot rate limit {policy or 'unknown'} reached ({detail})"
    return RetriableConnectorError(
        connector, message, retry_after=asked if asked is not None else default
    )


def _connector_error(
    connector: str, op: _Op, exc: BaseException, *, now: datetime
) -> ConnectorError:
    """Return the ConnectorError for a failed client call: the one place that maps them."""
    if isinstance(exc, urllib3.exceptions.HTTPError) or not getattr(exc, "status", 0):
        reason = getattr(exc, "reason", None) or type(exc).__name__
        return RetriableConnectorError(connector, f"cannot reach HubSpot to {op}: {reason}")
    status = int(exc.status)  # type: ignore[attr-defined]
    body = _body(exc)
    category = body.get("category") or body.get("errorType")
    detail = (
        f"{status} {category or ''}".strip() + f" on {op}: {str(body.get('message', ''))[:300]}"
    )
    if body.get("correlationId"):
        detail += f" (correlationId {body['correlationId']})"
    scopes = ", ".join(REQUIRED_SCOPES)
    kind = error_class(status, also_retriable=_ALSO_RETRIABLE)
    if kind is ConnectorAuthError and status == 401:
        message = f"HubSpot rejected the access token ({detail}); use a private app token"
        return ConnectorAuthError(connector, f"{message} with scopes {scopes}")
    if kind is ConnectorAuthError:
        message = f"HubSpot refused the call, the private app lacks a scope ({detail})"
        return ConnectorAuthError(connector, f"{message}; it needs the scopes {scopes}")
    if status == 429:
        header = _header(exc, "Retry-After")
        return _rate_limited(connector, detail, body, retry_after=header, now=now)
    if kind is RetriableConnectorError:
        return RetriableConnectorError(connector, f"HubSpot is unavailable ({detail})")
    codes = frozenset(str((e or {}).get("code")) for e in body.get("errors") or [])
    return _Rejected(
        connector,
        f"HubSpot refused the request ({detail})",
        status=status,
        category=category,
        codes=codes,
        ids=_named_ids(body),
    )


# -- the connector -------------------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC)


class HubSpotConnector:
    """HubSpot contacts as a Source (search API) and a Sink (batch update) of mailprobe fields."""

    is_sorted = True

    def __init__(
        self,
        name: str,
        *,
        access_token: str,
        base_url: str = DEFAULT_BASE_URL,
        backfill_since: datetime | None = None,
        page_size: int = _MAX_PAGE,
        overlap_s: float = 120.0,
        requests_per_10s: int = 100,
        searches_per_s: int = 4,
        max_attempts: int = 5,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.name = name
        self._backfill_since = backfill_since
        self._page_size = max(1, min(page_size, _MAX_PAGE))
        # Search lags writes by seconds: each pass re-reads this much before its cursor.
        self._overlap_ms = int(overlap_s * 1000)
        self._policy = RetryPolicy(max_attempts=max(1, max_attempts), max_wait_s=_MAX_WAIT_S)
        self._timeout = (min(10.0, timeout_s), timeout_s)
        self._sleep = sleep
        self._now = now
        self._clock = clock
        self._requests = RollingWindow(requests_per_10s, 10.0 + _WINDOW_SLACK_S)
        self._searches = RollingWindow(searches_per_s, 1.0 + _WINDOW_SLACK_S / 10)
        # Connection retries only (the request never left): status and read retries are ours,
        # so the client's retry middleware never fights the pacing and backoff here.
        retry = Retry(total=None, connect=2, read=0, redirect=0, status=0, other=0)
        client = HubSpot(access_token=access_token, host=base_url.rstrip("/"), retry=retry)
        # Each discovery property builds a new ApiClient and pool: take each one once.
        self._search_api = client.crm.contacts.search_api
        self._batch_api = client.crm.contacts.batch_api
        self._properties_api = client.crm.properties.core_api
        self._groups_api = client.crm.properties.groups_api

    # -- calls -----------------------------------------------------------------------------------

    async def _call(self, op: _Op, method: Callable[..., Any], *args: Any) -> dict[str, Any]:
        """Return the JSON body of one API call, paced, retried on 429/423/5xx, errors mapped."""
        windows = (self._requests, self._searches) if op is _Op.SEARCH else (self._requests,)

        async def attempt() -> dict[str, Any]:
            await pace(windows, clock=self._clock, sleep=self._sleep)
            try:
                return await asyncio.to_thread(self._blocking, method, *args)
            except _CLIENT_ERRORS as exc:
                raise _connector_error(self.name, op, exc, now=self._now()) from exc

        return await retrying(attempt, self._policy, sleep=self._sleep)

    def _blocking(self, method: Callable[..., Any], *args: Any) -> dict[str, Any]:
        response = method(*args, _preload_content=False, _request_timeout=self._timeout)
        try:
            raw = response.data
        finally:
            response.release_conn()
        return json.loads(raw) if raw else {}

    async def aclose(self) -> None:
        """Close the client's connection pools."""
        for api in (self._search_api, self._batch_api, self._properties_api, self._groups_api):
            api.api_client.rest_client.pool_manager.clear()
            api.api_client.close()

    # -- provisioning ----------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Create the mailprobe group and properties when missing; never retype a user's."""
        await self._ensure_group()
        listing = await self._call(_Op.LIST_PROPERTIES, self._properties_api.get_all, _OBJECT_TYPE)
        existing = {p.get("name"): p for p in listing.get("results") or []}
        for spec in FIELDS:
            current = existing.get(spec.name)
            if current is None:
                current = await self._create_property(spec)
            await self._reconcile(spec, current)

    async def _ensure_group(self) -> None:
        get = self._groups_api.get_by_name
        try:
            await self._call(_Op.GET_GROUP, get, _OBJECT_TYPE, GROUP_NAME)
            return
        except _Rejected as error:
            if error.status != 404:
                raise
        group = {"name": GROUP_NAME, "label": GROUP_LABEL, "displayOrder": -1}
        try:
            await self._call(_Op.CREATE_GROUP, self._groups_api.create, _OBJECT_TYPE, group)
        except _Rejected as error:
            if error.status != 409:  # created meanwhile: as good as ours
                raise

    async def _create_property(self, spec: FieldSpec) -> dict[str, Any]:
        """Return the property as HubSpot holds it after creating it (or finding it exists)."""
        create = self._properties_api.create
        try:
            return await self._call(_Op.CREATE_PROPERTY, create, _OBJECT_TYPE, _definition(spec))
        except _Rejected as error:
            if error.status != 409:
                raise
        get = self._properties_api.get_by_name
        return await self._call(_Op.GET_PROPERTY, get, _OBJECT_TYPE, spec.name)

    async def _reconcile(self, spec: FieldSpec, current: Mapping[str, Any]) -> None:
        """Add enumeration options we write and the property lacks; refuse another type."""
        kind_type, field_type = _CREATE_AS[spec.kind]
        if current.get("type") not in _COMPATIBLE[spec.kind]:
            found = f"{current.get('type')}/{current.get('fieldType')}"
            raise FatalConnectorError(
                self.name,
                f"HubSpot contact property {spec.name} exists as {found}, but mailprobe writes "
                f"{kind_type}/{field_type} there; rename or delete that property in HubSpot "
                "(mailprobe never changes the type of an existing property)",
            )
        wanted = _options(spec)
        if current.get("type") == "bool" or not wanted:
            return
        options = list(current.get("options") or [])
        have = {str(o.get("value")) for o in options}
        missing = [(value, label) for value, label in wanted if value not in have]
        if not missing:
            return
        # PATCH replaces the option list: send the existing options first, unchanged.
        start = len(options)
        options += [_option(v, label, start + i) for i, (v, label) in enumerate(missing)]
        update = self._properties_api.update
        await self._call(_Op.UPDATE_PROPERTY, update, _OBJECT_TYPE, spec.name, {"options": options})
        log.info("%s: added %d option(s) to %s", self.name, len(missing), spec.name)

    # -- pull ------------------------------------------------------------------------------------

    async def pull(self, since: str | None, *, signpost: datetime) -> AsyncIterator[Page]:
        """Yield pages of contacts modified from `since` (less the overlap) up to `signpost`.

        Pages come in lastmodifieddate order; each page's cursor is the timestamp reached. A
        contact appears once per pass unless it changed again during the pass. Contacts merged
        into another come as that contact's `retired` ids; archived ones no longer appear in
        search at all, and push() reports them gone.
        """
        scan = _Keyset(end_ms=_ms(signpost), limit=self._page_size, t_ms=self._start_ms(since))
        while not scan.done:
            data = await self._call(_Op.SEARCH, self._search_api.do_search, scan.request())
            fresh = scan.take([_Found.of(r) for r in data.get("results") or []])
            if fresh and scan.t_ms is not None:
                contacts = tuple(_contact(r) for r in fresh)
                retired = tuple(i for r in fresh for i in _merged_ids(r))
                yield Page(contacts, cursor=_iso_ms(scan.t_ms), retired=retired)

    def _start_ms(self, since: str | None) -> int | None:
        if since is None:
            backfill = self._backfill_since
            return _ms(backfill) if backfill is not None else None
        try:
            return _parse_ms(since) - self._overlap_ms
        except ValueError as exc:
            message = f"the saved HubSpot cursor {since!r} is not a timestamp"
            raise FatalConnectorError(self.name, message) from exc

    # -- push ------------------------------------------------------------------------------------

    async def push(self, updates: Sequence[FieldUpdate]) -> PushReport:
        """Write the updates in batches of 100; report each contact written, gone or failed.

        A whole-batch failure after some batches were written reports the rest as failed (to
        retry on a later pass) instead of raising, so nothing written goes unrecorded.
        """
        merged = _merge_by_id(updates)
        outcome = PushOutcome(written=[u.external_id for u in merged if not u.fields])
        pending = [u for u in merged if u.fields]
        for start in range(0, len(pending), _MAX_BATCH):
            chunk = pending[start : start + _MAX_BATCH]
            try:
                outcome.add(await self._push_batch(chunk))
            except ConnectorError as error:
                if not (outcome.written or outcome.gone):
                    raise
                rest = pending[start:]
                outcome.failed += [(u.external_id, error.message) for u in rest]
                break
        return outcome.report()

    async def _push_batch(self, chunk: Sequence[FieldUpdate]) -> PushOutcome:
        body = {"inputs": [_input(update) for update in chunk]}
        try:
            data = await self._call(_Op.BATCH_UPDATE, self._batch_api.update, body)
        except _Rejected as error:
            if error.status != 400 or not _is_bad_value(error):
                raise
            return await self._isolate(chunk, error)
        return _batch_outcome(chunk, data)

    async def _isolate(self, chunk: Sequence[FieldUpdate], error: _Rejected) -> PushOutcome:
        """Return the outcome of a batch HubSpot refused for bad values, without the bad ones.

        HubSpot refuses the whole batch for one bad value. When the error names the contacts,
        they fail and the others go again; otherwise the batch is split in halves until the bad
        contacts stand alone (about 2·log2(100) more calls per bad value).
        """
        named = [u for u in chunk if u.external_id in error.ids]
        if named:
            outcome = PushOutcome(failed=[(u.external_id, error.message) for u in named])
            rest = [u for u in chunk if u.external_id not in error.ids]
            if rest:
                outcome.add(await self._push_batch(rest))
            return outcome
        if len(chunk) == 1:
            return PushOutcome(failed=[(chunk[0].external_id, error.message)])
        middle = len(chunk) // 2
        outcome = await self._push_batch(chunk[:middle])
        outcome.add(await self._push_batch(chunk[middle:]))
        return outcome


def _definition(spec: FieldSpec) -> dict[str, Any]:
    """Return the HubSpot property definition that creates one mailprobe field."""
    kind_type, field_type = _CREATE_AS[spec.kind]
    definition: dict[str, Any] = {
        "name": spec.name,
        "label": spec.label,
        "description": spec.description,
        "groupName": GROUP_NAME,
        "type": kind_type,
        "fieldType": field_type,
        "formField": False,
    }
    options = _options(spec)
    if options:
        definition["options"] = [_option(v, label, i) for i, (v, label) in enumerate(options)]
    return definition


def _options(spec: FieldSpec) -> tuple[tuple[str, str], ...]:
    return _BOOL_OPTIONS if spec.kind is FieldKind.BOOL else spec.options


def _option(value: str, label: str, order: int) -> dict[str, Any]:
    return {"value": value, "label": label, "displayOrder": order, "hidden": False}


def _merge_by_id(updates: Iterable[FieldUpdate]) -> list[FieldUpdate]:
    """Return one update per contact (later values win): HubSpot refuses duplicate ids."""
    merged: dict[str, dict[str, FieldValue]] = {}
    for update in updates:
        merged.setdefault(update.external_id, {}).update(update.fields)
    return [FieldUpdate(external_id, fields) for external_id, fields in merged.items()]


def _input(update: FieldUpdate) -> dict[str, Any]:
    properties = {name: wire_value(v, _KINDS.get(name)) for name, v in update.fields.items()}
    return {"id": update.external_id, "properties": properties}


def _is_bad_value(error: _Rejected) -> bool:
    # A value HubSpot will not store is one contact's problem; a property that does not exist
    # (deleted since prepare()) is every contact's, and splitting would only multiply calls.
    return error.category == "VALIDATION_ERROR" and "PROPERTY_DOESNT_EXIST" not in error.codes


def _batch_outcome(chunk: Sequence[FieldUpdate], data: Mapping[str, Any]) -> PushOutcome:
    """Return which contacts a 200 or 207 batch reply wrote, found gone, or failed."""
    asked = {u.external_id for u in chunk}
    outcome = PushOutcome(written=[str(r["id"]) for r in data.get("results") or []])
    for error in data.get("errors") or []:
        ids = [i for i in _named_ids({"errors": [error]}) if i in asked]
        if error.get("category") == "OBJECT_NOT_FOUND":
            outcome.gone += ids
        else:
            why = f"{error.get('category')}: {str(error.get('message', ''))[:300]}"
            outcome.failed += [(i, why) for i in ids]
    outcome.written = [i for i in outcome.written if i in asked]
    accounted = set(outcome.written) | set(outcome.gone) | {i for i, _ in outcome.failed}
    silent = [u.external_id for u in chunk if u.external_id not in accounted]
    outcome.failed += [(i, "HubSpot did not report this contact") for i in silent]
    return outcome
