"""A fake HubSpot CRM API on loopback: contact search, batch update, properties and groups.

Starlette serves it under uvicorn in a background thread, so the real hubspot-api-client talks
HTTP to it through its `host` setting. It follows HubSpot's documented behaviour for the
endpoints mailprobe uses: bearer tokens (401) and scopes (403 MISSING_SCOPES); search filters,
one sort, `after` paging, 200 per page and the 10,000-result cap (400 beyond); a search index
that lags writes by `index_lag_s` on the fake's own clock; lastmodifieddate bumped on every
write; property and group creation with type and option validation; batch update with 207
OBJECT_NOT_FOUND for archived, merged or unknown contacts and 400 VALIDATION_ERROR for a bad
value; 429 bodies with policyName when its limits are exceeded; injected failures. Every
request is recorded. It only binds loopback and knows nothing of mailprobe.

    api.add_contacts(25_000)                      # seed (indexed at once)
    api.edit_contact(cid, email="new@acme.test")  # a user's edit: bumps lastmodifieddate
    api.fail_next("batch_update", 502, count=2)   # inject failures
    api.calls["search"], api.writes[cid]          # what happened
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TOKEN = "pat-na1-fake-0000-token"
ALL_SCOPES = frozenset(
    {
        "crm.objects.contacts.read",
        "crm.objects.contacts.write",
        "crm.schemas.contacts.read",
        "crm.schemas.contacts.write",
    }
)
SEARCH_CAP = 10_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DEFAULT_SEARCH_PROPERTIES = (
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
)
_ALWAYS_RETURNED = ("createdate", "hs_object_id", "lastmodifieddate")
_READ_ONLY = frozenset({"createdate", "hs_object_id", "lastmodifieddate", "hs_merged_object_ids"})
_OPERATORS = frozenset(
    {
        "EQ",
        "NEQ",
        "LT",
        "LTE",
        "GT",
        "GTE",
        "BETWEEN",
        "IN",
        "NOT_IN",
        "HAS_PROPERTY",
        "NOT_HAS_PROPERTY",
    }
)
_FIELD_TYPES = {
    "string": {"text", "textarea", "phonenumber", "html", "file"},
    "number": {"number", "calculation_equation"},
    "date": {"date"},
    "datetime": {"date"},
    "enumeration": {"select", "radio", "checkbox", "booleancheckbox"},
    "bool": {"booleancheckbox"},
}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_MAX_FILTER_GROUPS, _MAX_FILTERS_PER_GROUP, _MAX_FILTERS = 5, 10, 25
_MAX_BATCH, _MAX_LIMIT = 100, 200

# Endpoint -> the scope HubSpot requires for it.
_SCOPES = {
    "search": "crm.objects.contacts.read",
    "batch_update": "crm.objects.contacts.write",
    "list_properties": "crm.schemas.contacts.read",
    "get_property": "crm.schemas.contacts.read",
    "create_property": "crm.schemas.contacts.write",
    "update_property": "crm.schemas.contacts.write",
    "get_group": "crm.schemas.contacts.read",
    "create_group": "crm.schemas.contacts.write",
}


# -- time ----------------------------------------------------------------------------------------


class FakeClock:
    """The fake's time: real time plus an offset a test advances, or frozen until advanced.

    lastmodifieddate, the search index lag and the rate-limit windows all read it. A connector
    given `clock=api.clock.monotonic, sleep=api.clock.sleep` waits in virtual time.
    """

    def __init__(self, *, start: datetime | None = None, frozen: bool = False) -> None:
        self._lock = threading.Lock()
        self._frozen = frozen
        self._base_wall = (start or datetime.now(UTC)).timestamp()
        self._base_mono = time.monotonic()
        self._offset = 0.0

    def monotonic(self) -> float:
        """Return seconds on the fake's clock (only differences mean anything)."""
        with self._lock:
            elapsed = 0.0 if self._frozen else time.monotonic() - self._base_mono
            return elapsed + self._offset

    def now(self) -> datetime:
        """Return the fake's current UTC time."""
        return _EPOCH + timedelta(milliseconds=self.now_ms())

    def now_ms(self) -> int:
        """Return the fake's current time in epoch milliseconds, as HubSpot stores times."""
        return int((self._base_wall + self.monotonic()) * 1000)

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        with self._lock:
            self._offset += seconds

    async def sleep(self, seconds: float) -> None:
        """Advance the clock instead of waiting: a connector's sleep in virtual time."""
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


@functools.lru_cache(maxsize=200_000)
def iso_ms(ms: int) -> str:
    """Return epoch milliseconds as HubSpot writes times: ISO 8601, milliseconds, Z."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def to_ms(value: datetime | str | int) -> int:
    """Return epoch milliseconds from a datetime, ISO 8601 text or milliseconds."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.strip().lstrip("-").isdigit():
            return int(value)
        value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(milliseconds=1)


# -- records -------------------------------------------------------------------------------------


@dataclass
class FakeContact:
    """One contact as the fake stores it; values are HubSpot's strings (None when unset)."""

    id: int
    properties: dict[str, str | None]
    created_ms: int
    modified_ms: int
    archived: bool = False
    merged_into: int | None = None

    def value(self, name: str) -> str | None:
        """Return a property's value, computed ones included."""
        if name == "hs_object_id":
            return str(self.id)
        if name == "lastmodifieddate":
            return iso_ms(self.modified_ms)
        if name == "createdate":
            return iso_ms(self.created_ms)
        return self.properties.get(name)

    def snapshot(self) -> FakeContact:
        """Return a copy, as the search index holds it."""
        return FakeContact(
            self.id, dict(self.properties), self.created_ms, self.modified_ms, self.archived
        )


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the fake received and the status it answered."""

    endpoint: str
    method: str
    path: str
    body: Any
    status: int


@dataclass
class _Failure:
    status: int
    policy: str | None
    retry_after: float | str | None  # seconds, or a header text as sent (an HTTP-date)
    apply: bool  # run the request, then answer with the failure (a 504 that wrote anyway)
    category: str | None
    remaining: int
    skip: int = 0  # let this many requests through first


def _property(
    name: str,
    label: str,
    type_: str,
    field_type: str,
    *,
    group: str = "contactinformation",
    options: Iterable[dict[str, Any]] = (),
    description: str = "",
    hubspot_defined: bool = False,
    now_ms: int = 0,
) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": type_,
        "fieldType": field_type,
        "description": description,
        "groupName": group,
        "options": [_clean_option(o, i) for i, o in enumerate(options)],
        "displayOrder": -1,
        "calculated": False,
        "externalOptions": False,
        "hasUniqueValue": False,
        "hidden": False,
        "hubspotDefined": hubspot_defined,
        "formField": False,
        "modificationMetadata": {
            "archivable": not hubspot_defined,
            "readOnlyDefinition": hubspot_defined,
            "readOnlyValue": name in _READ_ONLY,
        },
        "createdAt": iso_ms(now_ms),
        "updatedAt": iso_ms(now_ms),
        "archived": False,
    }


def _clean_option(option: dict[str, Any], order: int) -> dict[str, Any]:
    return {
        "label": str(option.get("label", option.get("value", ""))),
        "value": str(option.get("value", "")),
        "displayOrder": int(option.get("displayOrder", order)),
        "hidden": bool(option.get("hidden", False)),
    }


def _builtin_properties(now_ms: int) -> dict[str, dict[str, Any]]:
    rows = [
        ("email", "Email", "string", "text"),
        ("firstname", "First Name", "string", "text"),
        ("lastname", "Last Name", "string", "text"),
        ("createdate", "Create Date", "datetime", "date"),
        ("lastmodifieddate", "Last Modified Date", "datetime", "date"),
        ("hs_object_id", "Record ID", "number", "number"),
        ("hs_merged_object_ids", "Merged Contact IDs", "enumeration", "checkbox"),
    ]
    return {
        name: _property(name, label, t, ft, hubspot_defined=True, now_ms=now_ms)
        for name, label, t, ft in rows
    }


# -- the fake ------------------------------------------------------------------------------------


class FakeHubSpot:
    """HubSpot's contact and property endpoints over real HTTP on 127.0.0.1."""

    def __init__(
        self,
        *,
        token: str = TOKEN,
        scopes: Iterable[str] = ALL_SCOPES,
        clock: FakeClock | None = None,
        index_lag_s: float = 0.0,
        search_cap: int = SEARCH_CAP,
        requests_per_10s: int | None = None,
        searches_per_s: int | None = None,
        daily_limit: int | None = None,
        validation_names_object: bool = True,
    ) -> None:
        self.token = token
        self.scopes = set(scopes)
        self.clock = clock or FakeClock()
        self.index_lag_s = index_lag_s
        self.search_cap = search_cap
        self.requests_per_10s = requests_per_10s
        self.searches_per_s = searches_per_s
        self.daily_limit = daily_limit
        #: a 400 for a bad value lists the contact's id in `context.ids` (else only the property)
        self.validation_names_object = validation_names_object
        self.base_url = ""
        self.calls: Counter[str] = Counter()  # endpoint -> requests received
        self.writes: Counter[str] = Counter()  # contact id -> batch updates applied to it
        self.requests: list[RecordedRequest] = []
        self._lock = threading.RLock()
        self._arrived = threading.Condition(self._lock)  # notified after each request
        self._contacts: dict[int, FakeContact] = {}
        self._next_id = 1001
        self._index: dict[int, FakeContact] = {}
        self._by_modified: list[tuple[int, int, int]] = []  # (modified_ms, tie scramble, id)
        self._pending: deque[tuple[int, int, FakeContact | None]] = deque()
        self._properties = _builtin_properties(self.clock.now_ms())
        self._groups: dict[str, dict[str, Any]] = {
            "contactinformation": {"name": "contactinformation", "label": "Contact information"}
        }
        self._failures: dict[str, deque[_Failure]] = {}
        self._recent: dict[str, deque[float]] = {"all": deque(), "search": deque()}
        self._today: tuple[str, int] = ("", 0)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- seeding and editing (the test's side) ---------------------------------------------------

    def add_contact(
        self,
        email: str | None = None,
        *,
        properties: dict[str, str | None] | None = None,
        modified_at: datetime | str | int | None = None,
    ) -> str:
        """Create a contact that is already in the search index; return its id."""
        return self.add_contacts(1, emails=[email], properties=properties, modified_at=modified_at)[
            0
        ]

    def add_contacts(
        self,
        count: int,
        *,
        emails: Iterable[str | None] | None = None,
        domain: str = "acme.test",
        properties: dict[str, str | None] | None = None,
        modified_at: datetime | str | int | None = None,
        step_ms: int = 0,
    ) -> list[str]:
        """Create `count` contacts (user{id}@domain unless `emails`), indexed at once.

        They share `modified_at` (default: now), each `step_ms` later than the one before.
        """
        start = self.clock.now_ms() if modified_at is None else to_ms(modified_at)
        addresses = list(emails) if emails is not None else [None] * count
        ids = []
        with self._lock:
            for n in range(count):
                cid = self._next_id
                self._next_id += 1
                email = addresses[n] if emails is not None else f"user{cid}@{domain}"
                props = {"email": email, **(properties or {})}
                moment = start + n * step_ms
                contact = FakeContact(cid, props, moment, moment)
                self._contacts[cid] = contact
                self._reindex(cid, contact.snapshot())
                ids.append(str(cid))
        return ids

    def edit_contact(self, contact_id: str, **properties: str | None) -> None:
        """Change a contact as a user would: lastmodifieddate bumps, search sees it after lag."""
        with self._lock:
            contact = self._contacts[int(contact_id)]
            contact.properties.update(properties)
            self._touch(contact)

    def archive_contact(self, contact_id: str) -> None:
        """Archive (delete) a contact: it leaves search and cannot be updated."""
        with self._lock:
            contact = self._contacts[int(contact_id)]
            contact.archived = True
            self._schedule(contact.id, None)

    def merge_contacts(self, primary_id: str, secondary_id: str) -> None:
        """Merge `secondary` into `primary`: the primary lists it in hs_merged_object_ids."""
        with self._lock:
            primary = self._contacts[int(primary_id)]
            secondary = self._contacts[int(secondary_id)]
            secondary.merged_into = primary.id
            merged = [m for m in (primary.properties.get("hs_merged_object_ids") or "").split(";")]
            merged = [m for m in merged if m] + [str(secondary.id)]
            primary.properties["hs_merged_object_ids"] = ";".join(merged)
            self._touch(primary)
            self._schedule(secondary.id, None)

    def add_property(
        self,
        name: str,
        type_: str,
        field_type: str,
        *,
        label: str | None = None,
        group: str = "contactinformation",
        options: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Create a property as a user would (e.g. one that collides with ours)."""
        opts = [{"value": v, "label": label_} for v, label_ in options]
        with self._lock:
            self._properties[name] = _property(
                name,
                label or name,
                type_,
                field_type,
                group=group,
                options=opts,
                now_ms=self.clock.now_ms(),
            )

    def add_group(self, name: str, label: str) -> None:
        """Create a property group as a user would."""
        with self._lock:
            self._groups[name] = {"name": name, "label": label}

    def contact(self, contact_id: str) -> dict[str, str | None]:
        """Return a contact's live values (computed ones included)."""
        with self._lock:
            contact = self._contacts[int(contact_id)]
            names = set(contact.properties) | set(_ALWAYS_RETURNED)
            return {name: contact.value(name) for name in names}

    def property(self, name: str) -> dict[str, Any] | None:
        """Return a property definition as the API would, or None."""
        with self._lock:
            prop = self._properties.get(name)
            return json.loads(json.dumps(prop)) if prop else None

    def group(self, name: str) -> dict[str, Any] | None:
        """Return a property group, or None."""
        with self._lock:
            return dict(self._groups[name]) if name in self._groups else None

    def fail_next(
        self,
        endpoint: str,
        status: int,
        *,
        count: int = 1,
        policy: str | None = None,
        retry_after: float | str | None = None,
        apply: bool = False,
        category: str | None = None,
        after: int = 0,
    ) -> None:
        """Answer `count` requests to `endpoint` ("*" for any) with `status`, `after` others.

        `apply=True` runs the request first (a 504 that wrote anyway); 429s carry `policy`.
        """
        failure = _Failure(status, policy, retry_after, apply, category, count, after)
        with self._lock:
            self._failures.setdefault(endpoint, deque()).append(failure)

    def wait_for(self, endpoint: str, count: int = 1, *, timeout: float = 30.0) -> bool:
        """Block until `endpoint` has received `count` requests; return False on timeout."""
        with self._arrived:
            return self._arrived.wait_for(lambda: self.calls[endpoint] >= count, timeout)

    def statuses(self, endpoint: str) -> list[int]:
        """Return the statuses answered to `endpoint`, in order."""
        with self._lock:
            return [r.status for r in self.requests if r.endpoint == endpoint]

    # -- the index -------------------------------------------------------------------------------

    def _touch(self, contact: FakeContact) -> None:
        contact.modified_ms = self.clock.now_ms()
        self._schedule(contact.id, contact.snapshot())

    def _schedule(self, contact_id: int, snapshot: FakeContact | None) -> None:
        """Make a change visible to search after the index lag."""
        if self.index_lag_s <= 0:
            self._reindex(contact_id, snapshot)
            return
        visible_ms = self.clock.now_ms() + int(self.index_lag_s * 1000)
        self._pending.append((visible_ms, contact_id, snapshot))

    def _catch_up(self) -> None:
        now = self.clock.now_ms()
        while self._pending and self._pending[0][0] <= now:
            _visible, contact_id, snapshot = self._pending.popleft()
            self._reindex(contact_id, snapshot)

    def _reindex(self, contact_id: int, snapshot: FakeContact | None) -> None:
        old = self._index.pop(contact_id, None)
        if old is not None:
            key = (old.modified_ms, _scramble(contact_id), contact_id)
            at = bisect.bisect_left(self._by_modified, key)
            del self._by_modified[at]
        if snapshot is not None:
            self._index[contact_id] = snapshot
            bisect.insort(
                self._by_modified, (snapshot.modified_ms, _scramble(contact_id), contact_id)
            )

    # -- HTTP plumbing ---------------------------------------------------------------------------

    def app(self) -> Starlette:
        """Return the Starlette application serving the endpoints."""
        base = "/crm/v3/properties/contacts"
        routes = [
            Route("/crm/v3/objects/contacts/search", self._endpoint("search"), methods=["POST"]),
            Route(
                "/crm/v3/objects/contacts/batch/update",
                self._endpoint("batch_update"),
                methods=["POST"],
            ),
            Route(f"{base}/groups", self._endpoint("create_group"), methods=["POST"]),
            Route(f"{base}/groups/{{name}}", self._endpoint("get_group"), methods=["GET"]),
            Route(base, self._endpoint("list_properties"), methods=["GET"]),
            Route(base, self._endpoint("create_property"), methods=["POST"]),
            Route(f"{base}/{{name}}", self._endpoint("get_property"), methods=["GET"]),
            Route(f"{base}/{{name}}", self._endpoint("update_property"), methods=["PATCH"]),
        ]
        return Starlette(routes=routes)

    def _endpoint(self, name: str) -> Callable[[Request], Any]:
        handler = getattr(self, f"_{name}")

        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            with self._lock:
                response = self._answer(name, handler, request, body)
                self.calls[name] += 1
                self.requests.append(
                    RecordedRequest(
                        name, request.method, request.url.path, body, response.status_code
                    )
                )
                self._arrived.notify_all()
            return response

        return endpoint

    def _answer(
        self, name: str, handler: Callable[..., Response], request: Request, body: Any
    ) -> Response:
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {self.token}":
            return _error(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 "
                "authentication and you can find more details at "
                "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            )
        scope = _SCOPES[name]
        if scope not in self.scopes:
            return _error(
                403,
                "MISSING_SCOPES",
                "This app hasn't been granted all required scopes to make this call. Read more "
                "about required scopes here: https://developers.hubspot.com/scopes.",
                errors=[
                    {
                        "message": "One or more of the following scopes are required.",
                        "context": {"requiredGranularScopes": [scope]},
                    }
                ],
                links={"scopes": "https://developers.hubspot.com/scopes"},
            )
        limited = self._rate_limit(name)
        if limited is not None:
            return limited
        failure = self._take_failure(name)
        if failure is not None and not failure.apply:
            return _failure_response(failure)
        response = handler(request, body)
        return _failure_response(failure) if failure is not None else response

    def _take_failure(self, name: str) -> _Failure | None:
        for key in (name, "*"):
            queue = self._failures.get(key)
            if queue:
                failure = queue[0]
                if failure.skip > 0:
                    failure.skip -= 1
                    return None
                failure.remaining -= 1
                if failure.remaining <= 0:
                    queue.popleft()
                return failure
        return None

    def _rate_limit(self, name: str) -> Response | None:
        now = self.clock.monotonic()
        day = self.clock.now().date().isoformat()
        if self.daily_limit is not None:
            used = self._today[1] if self._today[0] == day else 0
            if used >= self.daily_limit:
                return _rate_limited("DAILY", "You have reached your daily limit.")
            self._today = (day, used + 1)
        windows = [("all", self.requests_per_10s, 10.0, "TEN_SECONDLY_ROLLING")]
        if name == "search":
            windows.append(("search", self.searches_per_s, 1.0, "SECONDLY"))
        for key, limit, period, policy in windows:
            if limit is None:
                continue
            recent = self._recent[key]
            while recent and recent[0] <= now - period:
                recent.popleft()
            if len(recent) >= limit:
                return _rate_limited(policy, f"You have reached your {policy.lower()} limit.")
        for key, limit, _period, _policy in windows:
            if limit is not None:
                self._recent[key].append(now)
        return None

    # -- search ----------------------------------------------------------------------------------

    def _search(self, request: Request, body: Any) -> Response:
        body = body or {}
        problem = self._search_problem(body)
        if problem:
            return _error(400, "VALIDATION_ERROR", problem)
        limit = int(body.get("limit", 10))
        after = int(body.get("after") or 0)
        if after + limit > self.search_cap:
            return _error(
                400,
                "VALIDATION_ERROR",
                f"Cannot page beyond {self.search_cap} results: the search endpoints are "
                f"limited to {self.search_cap} total results for any given query.",
            )
        self._catch_up()
        total, found = self._matches(
            body.get("filterGroups") or [], (body.get("sorts") or [None])[0], after, limit
        )
        names = list(body.get("properties") or _DEFAULT_SEARCH_PROPERTIES)
        names += [n for n in _ALWAYS_RETURNED if n not in names]
        reply: dict[str, Any] = {"total": total, "results": [_object(c, names) for c in found]}
        if after + limit < total:
            nxt = str(after + limit)
            reply["paging"] = {"next": {"after": nxt, "link": f"?after={nxt}"}}
        return JSONResponse(reply)

    def _search_problem(self, body: dict[str, Any]) -> str | None:
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or not 0 < limit <= _MAX_LIMIT:
            return f"limit must be between 1 and {_MAX_LIMIT}, got {limit!r}"
        if len(body.get("sorts") or []) > 1:
            return "Only one sort is allowed per search request."
        groups = body.get("filterGroups") or []
        filters = [f for g in groups for f in g.get("filters") or []]
        if len(groups) > _MAX_FILTER_GROUPS or len(filters) > _MAX_FILTERS:
            return f"Too many filters: at most {_MAX_FILTER_GROUPS} groups, {_MAX_FILTERS} filters"
        if any(len(g.get("filters") or []) > _MAX_FILTERS_PER_GROUP for g in groups):
            return f"Too many filters in a group: at most {_MAX_FILTERS_PER_GROUP}"
        for item in filters + [s for s in body.get("sorts") or [] if isinstance(s, dict)]:
            if item.get("propertyName") not in self._properties:
                name = item.get("propertyName")
                return f"There was a problem with the request: {name!r} is not a property"
        for item in filters:
            if item.get("operator") not in _OPERATORS:
                return f"Unknown operator {item.get('operator')!r}"
        return None

    def _matches(
        self, groups: list[dict[str, Any]], sort: Any, after: int, limit: int
    ) -> tuple[int, list[FakeContact]]:
        """Return how many contacts match and the page of them from `after`, sorted."""
        if isinstance(sort, str):
            sort = {
                "propertyName": sort.lstrip("-"),
                "direction": "DESCENDING" if sort.startswith("-") else "ASCENDING",
            }
        sort_name = (sort or {}).get("propertyName", "hs_object_id")
        descending = (sort or {}).get("direction") == "DESCENDING"
        groups = groups or [{"filters": []}]
        ranges = [self._range(group.get("filters") or []) for group in groups]
        if len(ranges) == 1 and not ranges[0][2] and sort_name == "lastmodifieddate":
            # Only lastmodifieddate bounds, sorted by it: the index slice is the answer.
            low, high, _rest = ranges[0]
            entries = self._by_modified[low:high]
            entries = entries[::-1] if descending else entries
            page = [self._index[cid] for _ms, _scr, cid in entries[after : after + limit]]
            return high - low, page
        found: dict[int, FakeContact] = {}
        for low, high, rest in ranges:
            for _ms, _scr, contact_id in self._by_modified[low:high]:
                contact = self._index[contact_id]
                if all(self._passes(contact, item) for item in rest):
                    found[contact.id] = contact
        ordered = sorted(found.values(), key=lambda c: (self._key(sort_name, c), _scramble(c.id)))
        ordered = ordered[::-1] if descending else ordered
        return len(ordered), ordered[after : after + limit]

    def _range(self, filters: list[dict[str, Any]]) -> tuple[int, int, list[dict[str, Any]]]:
        """Return the index slice a group's lastmodifieddate bounds keep, and its other filters."""
        low, high = 0, len(self._by_modified)
        rest = []
        for item in filters:
            bound = item["operator"] in {"GT", "GTE", "LT", "LTE", "EQ"}
            if item.get("propertyName") == "lastmodifieddate" and bound:
                low, high = self._narrow(low, high, item["operator"], to_ms(item["value"]))
            else:
                rest.append(item)
        return low, high, rest

    def _narrow(self, low: int, high: int, operator: str, ms: int) -> tuple[int, int]:
        """Return the slice of the modified-ordered index a lastmodifieddate filter keeps."""
        left = bisect.bisect_left(self._by_modified, (ms,))
        right = bisect.bisect_left(self._by_modified, (ms + 1,))
        if operator in {"GT", "GTE", "EQ"}:
            low = max(low, right if operator == "GT" else left)
        if operator in {"LT", "LTE", "EQ"}:
            high = min(high, left if operator == "LT" else right)
        return low, max(low, high)

    def _key(self, name: str, contact: FakeContact) -> tuple[int, Any]:
        value = contact.value(name)
        if value is None:
            return (1, 0)
        return (0, self._typed(name, value))

    def _typed(self, name: str, value: str) -> Any:
        kind = self._properties[name]["type"]
        if kind in {"datetime", "date"}:
            return to_ms(value)
        if kind == "number":
            return float(value)
        return value.lower()

    def _passes(self, contact: FakeContact, item: dict[str, Any]) -> bool:
        name, operator = item["propertyName"], item["operator"]
        raw = contact.value(name)
        if operator == "HAS_PROPERTY":
            return raw not in (None, "")
        if operator == "NOT_HAS_PROPERTY":
            return raw in (None, "")
        if raw in (None, ""):
            return operator == "NEQ"
        value = self._typed(name, raw)
        if operator in {"IN", "NOT_IN"}:
            inside = value in {self._typed(name, str(v)) for v in item.get("values") or []}
            return inside if operator == "IN" else not inside
        target = self._typed(name, str(item.get("value")))
        if operator == "BETWEEN":
            return target <= value <= self._typed(name, str(item.get("highValue")))
        return {
            "EQ": value == target,
            "NEQ": value != target,
            "LT": value < target,
            "LTE": value <= target,
            "GT": value > target,
            "GTE": value >= target,
        }[operator]

    # -- batch update ----------------------------------------------------------------------------

    def _batch_update(self, request: Request, body: Any) -> Response:
        inputs = (body or {}).get("inputs")
        if not isinstance(inputs, list) or not inputs:
            return _error(400, "VALIDATION_ERROR", "inputs must be a non-empty list")
        if len(inputs) > _MAX_BATCH:
            return _error(400, "VALIDATION_ERROR", f"Batch input size is limited to {_MAX_BATCH}")
        ids = [str(item.get("id")) for item in inputs]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            return _error(
                400, "VALIDATION_ERROR", f"Duplicate IDs found in batch input: {duplicates}"
            )
        invalid = self._invalid_values(inputs)
        if invalid is not None:
            return invalid
        started = self.clock.now_ms()
        results, missing = [], []
        for item in inputs:
            contact = self._contacts.get(int(item["id"])) if str(item["id"]).isdigit() else None
            if contact is None or contact.archived or contact.merged_into is not None:
                missing.append(str(item["id"]))
                continue
            properties = item.get("properties") or {}
            self._write(contact, properties)
            results.append(_object(contact, [*properties, *_ALWAYS_RETURNED]))
        reply: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": iso_ms(started),
            "completedAt": iso_ms(self.clock.now_ms()),
        }
        if not missing:
            return JSONResponse(reply)
        reply["numErrors"] = 1
        reply["errors"] = [
            {
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some CONTACT objects, they may be deleted or not "
                "exist. Check that ids are valid.",
                "context": {"ids": missing},
                "errors": [],
                "links": {},
            }
        ]
        return JSONResponse(reply, status_code=207)

    def _write(self, contact: FakeContact, properties: dict[str, Any]) -> None:
        for name, value in properties.items():
            contact.properties[name] = self._stored(name, value)
        self.writes[str(contact.id)] += 1
        self._touch(contact)  # HubSpot bumps lastmodifieddate on every write

    def _stored(self, name: str, value: Any) -> str | None:
        text = "" if value is None else str(value)
        if text == "":
            return None
        kind = self._properties[name]["type"]
        if kind == "datetime":
            return iso_ms(to_ms(text))
        if kind == "bool":
            return text.lower()
        return text

    def _invalid_values(self, inputs: list[dict[str, Any]]) -> Response | None:
        problems, codes, bad_ids = [], [], []
        for item in inputs:
            for name, value in (item.get("properties") or {}).items():
                code, message = self._check_value(name, value)
                if code:
                    problems.append(
                        {"isValid": False, "message": message, "error": code, "name": name}
                    )
                    codes.append(
                        {"message": message, "code": code, "context": {"propertyName": [name]}}
                    )
                    bad_ids.append(str(item.get("id")))
        if not problems:
            return None
        context = {"ids": sorted(set(bad_ids))} if self.validation_names_object else None
        return _error(
            400,
            "VALIDATION_ERROR",
            f"Property values were not valid: {json.dumps(problems)}",
            errors=codes,
            context=context,
        )

    def _check_value(self, name: str, value: Any) -> tuple[str | None, str]:
        prop = self._properties.get(name)
        if prop is None:
            return "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'
        if name in _READ_ONLY:
            return "READ_ONLY_VALUE", f"{name} is a read only property; its value cannot be set."
        text = "" if value is None else str(value)
        if text == "":
            return None, ""
        kind = prop["type"]
        try:
            if kind == "number":
                float(text)
            elif kind == "datetime":
                to_ms(text)
            elif kind == "date":
                return self._check_date(text)
        except ValueError:
            return f"INVALID_{kind.upper()}", f"{text!r} is not a valid {kind}"
        if kind == "bool" and text.lower() not in {"true", "false"}:
            return "INVALID_BOOLEAN", f"{text!r} is not a valid boolean: use true or false"
        if kind == "enumeration":
            allowed = [o["value"] for o in prop["options"]]
            chosen = text.split(";") if prop["fieldType"] == "checkbox" else [text]
            if any(c not in allowed for c in chosen):
                return "INVALID_OPTION", f"{text} was not one of the allowed options: {allowed}"
        return None, ""

    def _check_date(self, text: str) -> tuple[str | None, str]:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            datetime.strptime(text, "%Y-%m-%d")
            return None, ""
        if text.isdigit() and int(text) % 86_400_000 == 0:
            return None, ""
        return "INVALID_DATE", f"{text} is not a valid date: use YYYY-MM-DD or midnight UTC"

    # -- properties and groups -------------------------------------------------------------------

    def _list_properties(self, request: Request, body: Any) -> Response:
        return JSONResponse({"results": list(self._properties.values())})

    def _get_property(self, request: Request, body: Any) -> Response:
        prop = self._properties.get(request.path_params["name"])
        if prop is None:
            return _error(
                404, "OBJECT_NOT_FOUND", f"Unable to find property {request.path_params['name']}"
            )
        return JSONResponse(prop)

    def _create_property(self, request: Request, body: Any) -> Response:
        body = body or {}
        problem = self._definition_problem(body)
        if problem:
            return _error(400, "VALIDATION_ERROR", problem)
        name = body["name"]
        if name in self._properties:
            return _error(
                409,
                "OBJECT_ALREADY_EXISTS",
                f"A property named '{name}' already exists.",
                sub_category="PropertyCrudError.PROPERTY_EXISTS",
            )
        options = body.get("options") or []
        if body["type"] == "bool" and not options:
            options = [{"value": "true", "label": "Yes"}, {"value": "false", "label": "No"}]
        self._properties[name] = _property(
            name,
            body["label"],
            body["type"],
            body["fieldType"],
            group=body["groupName"],
            options=options,
            description=body.get("description", ""),
            now_ms=self.clock.now_ms(),
        )
        return JSONResponse(self._properties[name], status_code=201)

    def _definition_problem(self, body: dict[str, Any]) -> str | None:
        for key in ("name", "label", "type", "fieldType", "groupName"):
            if not body.get(key):
                return f"{key} is required"
        if not _NAME.match(body["name"]):
            return f"{body['name']!r} is not a valid property name"
        if body["fieldType"] not in _FIELD_TYPES.get(body["type"], set()):
            return f"fieldType {body['fieldType']!r} is not valid for type {body['type']!r}"
        if body["groupName"] not in self._groups:
            return f"property group {body['groupName']!r} does not exist"
        return _options_problem(body.get("options") or [])

    def _update_property(self, request: Request, body: Any) -> Response:
        name = request.path_params["name"]
        prop = self._properties.get(name)
        if prop is None:
            return _error(404, "OBJECT_NOT_FOUND", f"Unable to find property {name}")
        body = body or {}
        if prop["hubspotDefined"] and set(body) - {"label", "description", "options"}:
            return _error(400, "VALIDATION_ERROR", f"{name} is a HubSpot-defined property")
        type_ = body.get("type", prop["type"])
        field_type = body.get("fieldType", prop["fieldType"])
        if field_type not in _FIELD_TYPES.get(type_, set()):
            return _error(
                400, "VALIDATION_ERROR", f"fieldType {field_type!r} is not valid for type {type_!r}"
            )
        problem = _options_problem(body.get("options") or [])
        if problem:
            return _error(400, "VALIDATION_ERROR", problem)
        for key in ("label", "description", "groupName", "type", "fieldType"):
            if key in body:
                prop[key] = body[key]
        if "options" in body:  # PATCH replaces the whole option list
            prop["options"] = [_clean_option(o, i) for i, o in enumerate(body["options"])]
        prop["updatedAt"] = iso_ms(self.clock.now_ms())
        return JSONResponse(prop)

    def _get_group(self, request: Request, body: Any) -> Response:
        group = self._groups.get(request.path_params["name"])
        if group is None:
            return _error(
                404, "OBJECT_NOT_FOUND", f"Unable to find group {request.path_params['name']}"
            )
        return JSONResponse({**group, "displayOrder": -1, "archived": False})

    def _create_group(self, request: Request, body: Any) -> Response:
        body = body or {}
        if not body.get("name") or not body.get("label"):
            return _error(400, "VALIDATION_ERROR", "name and label are required")
        if body["name"] in self._groups:
            return _error(
                409, "OBJECT_ALREADY_EXISTS", f"A group named '{body['name']}' already exists."
            )
        self._groups[body["name"]] = {"name": body["name"], "label": body["label"]}
        return JSONResponse(
            {**self._groups[body["name"]], "displayOrder": -1, "archived": False}, status_code=201
        )

    # -- running ---------------------------------------------------------------------------------

    def start(self) -> FakeHubSpot:
        """Serve on 127.0.0.1, a free port, in a background thread; return self when ready."""
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP;
        # without it every reply stalls 40 ms on Nagle and delayed ACKs.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app(), log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-hubspot", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake HubSpot did not start")
            time.sleep(0.005)  # startup poll with a deadline, not test synchronisation
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
        self._server, self._thread = None, None

    def __enter__(self) -> FakeHubSpot:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _scramble(contact_id: int) -> int:
    # HubSpot does not promise an order among equal sort values; a fixed scramble makes sure
    # nothing relies on ties coming in id order.
    return (contact_id * 2_654_435_761) % 4_294_967_296


def _object(contact: FakeContact, names: Iterable[str]) -> dict[str, Any]:
    return {
        "id": str(contact.id),
        "properties": {name: contact.value(name) for name in dict.fromkeys(names)},
        "createdAt": iso_ms(contact.created_ms),
        "updatedAt": iso_ms(contact.modified_ms),
        "archived": contact.archived,
    }


def _options_problem(options: list[dict[str, Any]]) -> str | None:
    values = [str(o.get("value", "")) for o in options]
    if any(not v for v in values) or any(not o.get("label") for o in options):
        return "every option needs a label and a value"
    if len(set(values)) != len(values):
        return "option values must be unique"
    return None


def _error(
    status: int,
    category: str,
    message: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    context: dict[str, Any] | None = None,
    links: dict[str, str] | None = None,
    sub_category: str | None = None,
) -> JSONResponse:
    """Return HubSpot's error body: status, message, correlationId, category, errors."""
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
    }
    if sub_category:
        body["subCategory"] = sub_category
    if context:
        body["context"] = context
    if errors:
        body["errors"] = errors
    if links:
        body["links"] = links
    return JSONResponse(body, status_code=status)


def _rate_limited(
    policy: str, message: str, retry_after: float | str | None = None
) -> JSONResponse:
    body = {
        "status": "error",
        "message": message,
        "errorType": "RATE_LIMIT",
        "correlationId": str(uuid.uuid4()),
        "policyName": policy,
        "groupName": f"publicapi:private-app-api-calls-{policy.lower()}:1234567",
    }
    if isinstance(retry_after, str):  # a header text, e.g. an HTTP-date, sent as given
        headers = {"Retry-After": retry_after}
    else:
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
    return JSONResponse(body, status_code=429, headers=headers)


def _failure_response(failure: _Failure) -> Response:
    if failure.status == 429:
        return _rate_limited(
            failure.policy or "TEN_SECONDLY_ROLLING",
            "You have reached your limit.",
            failure.retry_after,
        )
    category = failure.category or ("LOCKED" if failure.status == 423 else "INTERNAL_ERROR")
    return _error(failure.status, category, f"Injected failure {failure.status}")


@pytest.fixture
def hubspot_api() -> Iterator[FakeHubSpot]:
    """Yield a fresh fake HubSpot on 127.0.0.1 for one test; `.base_url` points a client at it."""
    with FakeHubSpot() as api:
        yield api
