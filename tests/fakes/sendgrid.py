"""A fake SendGrid Marketing API on loopback, following SendGrid's documented behaviour.

Starlette under uvicorn, in a background thread with its own event loop, on 127.0.0.1 port 0.
It serves the endpoints the connector uses, as the v3 reference describes them:

    GET/POST /v3/marketing/field_definitions   ids like "e3_N" vs names; a custom-field limit
    GET/POST /v3/marketing/lists               page_size / page_token paging
    POST     /v3/marketing/contacts/exports    export job, `pending` for N polls, then `ready`
    GET      /v3/marketing/contacts/exports/ID with `urls` of gzip files (CSV or NDJSON) served
    GET      /files/TOKEN.gz                   from "pre-signed" URLs: no Authorization accepted
    PUT      /v3/marketing/contacts            ≤ 30,000 contacts and ≤ 6 MB; 202 {"job_id"}
    GET      /v3/marketing/contacts/imports/ID `pending` for N polls, then completed / errored /
                                               failed; errored rows listed at its errors_url

Bearer auth (401 for a wrong key, 403 when the key "lacks a scope"), error bodies
{"errors": [{"field", "message"}]}, X-RateLimit-Limit/-Remaining/-Reset on every answer and 429
past a configured limit, updated_at bumped to the second on every write. Every request is
counted per endpoint and every upsert recorded, so tests can assert what the connector sent.
Knows nothing of mailprobe; only binds loopback.

    api = sendgrid_api                        # the fixture: a running SendGridFake
    list_id = api.add_list("Newsletter")
    api.add_contacts(50_000, list_id=list_id)
    api.inject("PUT /v3/marketing/contacts", 500, times=2)
    api.rate_limit("GET /v3/marketing/field_definitions", limit=2, window_s=60)
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import secrets
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

API_KEY = "SG.fake-key-for-tests"
MAX_CONTACTS = 30_000
MAX_BYTES = 6_000_000
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_TYPE_SUFFIX = {"Text": "T", "Number": "N", "Date": "D"}
_CSV_RESERVED = (
    "EMAIL",
    "FIRST_NAME",
    "LAST_NAME",
    "ADDRESS_LINE_1",
    "ADDRESS_LINE_2",
    "CITY",
    "STATE_PROVINCE_REGION",
    "POSTAL_CODE",
    "COUNTRY",
    "ALTERNATE_EMAILS",
    "PHONE_NUMBER",
    "CREATED_AT",
    "UPDATED_AT",
    "CONTACT_ID",
)


def _errors(*messages: str | tuple[str | None, str]) -> dict[str, Any]:
    """Return a SendGrid error body."""
    items = []
    for message in messages:
        where, text = message if isinstance(message, tuple) else (None, message)
        items.append({"field": where, "message": text})
    return {"errors": items}


class FakeClock:
    """A clock tests move by hand; the connector's injected sleep can advance it."""

    def __init__(self, start: float | None = None) -> None:
        self.now = float(start if start is not None else int(time.time()))
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Advance instead of waiting, and record the wait."""
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class Upsert:
    """One PUT /v3/marketing/contacts the fake accepted."""

    job_id: str
    list_ids: list[str]
    contacts: list[dict[str, Any]]
    size: int


@dataclass
class _Job:
    id: str
    upsert: Upsert
    polls_left: int
    fail: bool = False
    status: str = "pending"
    errors: list[tuple[str, str]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Export:
    id: str
    list_ids: list[str]
    file_type: str
    polls_left: int
    fail: bool = False
    urls: list[str] = field(default_factory=list)
    contact_count: int = 0


@dataclass
class _Injection:
    status: int
    times: int
    headers: dict[str, str]
    body: dict[str, Any]


class SendGridFake:
    """The fake's state and its Starlette app; tests set it up, then read what it received."""

    def __init__(self, *, api_key: str = API_KEY, clock: Callable[[], float] = time.time) -> None:
        self.api_key = api_key
        self.clock = clock
        self.base_url = ""  # set once serving
        self.field_limit = 500
        self.export_polls = 2  # answers `pending` this many times before `ready`
        self.import_polls = 1
        self.file_contacts = 20_000  # contacts per export file, so big lists span several files
        self.forbidden = False  # every call answers 403, as for a key without the scope
        self.fail_exports = 0  # the next N exports end in `failure`
        self.fail_imports = 0  # the next N import jobs end `failed`
        self.reject: dict[str, str] = {}  # email → why its row errors in an import job
        self.calls: Counter[str] = Counter()
        self.upserts: list[Upsert] = []
        self.file_downloads = 0
        self.file_requests_with_auth = 0
        self.stream_files = False  # serve export files chunked, with no Content-Length
        self.export_requests: list[dict[str, Any]] = []  # bodies of POST …/exports, in order
        self.fields: dict[str, dict[str, str]] = {}  # id → {id, name, field_type}
        self.lists: dict[str, str] = {}  # id → name
        self.contacts: dict[str, dict[str, Any]] = {}  # id → contact
        self._by_email: dict[str, str] = {}
        self._jobs: dict[str, _Job] = {}
        self._exports: dict[str, _Export] = {}
        self._files: dict[str, bytes] = {}
        self._injections: dict[str, list[_Injection]] = {}
        self._limits: dict[str, tuple[int, float]] = {}  # endpoint → (limit, window)
        self._windows: dict[str, tuple[float, int]] = {}  # endpoint → (reset, used)
        self._field_seq = 0
        self._lock = threading.RLock()
        self._applied = threading.Condition(self._lock)
        self.jobs_applied = 0  # import jobs that ran to completed or errored
        self.app = Starlette(routes=self._routes())

    # -- set-up, from tests ------------------------------------------------------------------

    def add_list(self, name: str) -> str:
        """Create a contact list; return its id."""
        with self._lock:
            list_id = str(uuid.uuid4())
            self.lists[list_id] = name
            return list_id

    def add_field(self, name: str, field_type: str) -> str:
        """Create a custom field (Text, Number or Date); return its id."""
        with self._lock:
            self._field_seq += 1
            field_id = f"e{self._field_seq}_{_TYPE_SUFFIX[field_type]}"
            self.fields[field_id] = {"id": field_id, "name": name, "field_type": field_type}
            return field_id

    def add_contact(
        self,
        email: str,
        *,
        lists: tuple[str, ...] = (),
        custom: dict[str, Any] | None = None,
        updated_at: datetime | None = None,
    ) -> str:
        """Create a contact (custom values keyed by field name); return its id."""
        with self._lock:
            moment = updated_at or datetime.fromtimestamp(int(self.clock()), tz=UTC)
            contact_id = str(uuid.uuid4())
            self.contacts[contact_id] = {
                "id": contact_id,
                "email": email.lower(),
                "first_name": "",
                "list_ids": list(lists),
                "custom_fields": {self._field_id(name): v for name, v in (custom or {}).items()},
                "created_at": moment,
                "updated_at": moment,
            }
            self._by_email[email.lower()] = contact_id
            return contact_id

    def add_contacts(self, count: int, *, list_id: str, domain: str = "example.test") -> list[str]:
        """Create `count` contacts person0@domain… on a list; return their ids."""
        return [self.add_contact(f"person{n}@{domain}", lists=(list_id,)) for n in range(count)]

    def inject(
        self,
        endpoint: str,
        status: int,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next `times` calls to `endpoint` ("PUT /v3/…/{id}") with `status`."""
        with self._lock:
            default = _errors("too many requests" if status == 429 else f"injected {status}")
            self._injections.setdefault(endpoint, []).append(
                _Injection(status, times, headers or {}, body or default)
            )

    def rate_limit(self, endpoint: str, *, limit: int, window_s: float = 60) -> None:
        """Allow `limit` calls to `endpoint` per refresh period, then answer 429."""
        with self._lock:
            self._limits[endpoint] = (limit, window_s)

    # -- reading, from tests -----------------------------------------------------------------

    def field_id(self, name: str) -> str:
        """Return the id of the custom field named `name`."""
        return self._field_id(name)

    def values(self, email: str) -> dict[str, Any]:
        """Return a contact's custom field values keyed by field name."""
        with self._lock:
            contact = self.contacts[self._by_email[email.lower()]]
            return {self.fields[k]["name"]: v for k, v in contact["custom_fields"].items()}

    def contact(self, email: str) -> dict[str, Any]:
        """Return a contact's record."""
        with self._lock:
            return self.contacts[self._by_email[email.lower()]]

    def wait_for_applied_jobs(self, count: int, *, timeout: float) -> bool:
        """Block until `count` import jobs have been applied; False when `timeout` passes."""
        with self._applied:
            return self._applied.wait_for(lambda: self.jobs_applied >= count, timeout)

    def members(self, list_id: str) -> set[str]:
        """Return the emails of a list's contacts."""
        with self._lock:
            return {c["email"] for c in self.contacts.values() if list_id in c["list_ids"]}

    def _field_id(self, name: str) -> str:
        for field_id, item in self.fields.items():
            if item["name"].casefold() == name.casefold():
                return field_id
        raise KeyError(name)

    # -- the HTTP surface --------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        table: list[tuple[str, str, Callable[..., Any], bool]] = [
            ("GET", "/v3/marketing/field_definitions", self._get_fields, True),
            ("POST", "/v3/marketing/field_definitions", self._post_field, True),
            ("GET", "/v3/marketing/lists", self._get_lists, True),
            ("POST", "/v3/marketing/lists", self._post_list, True),
            ("PUT", "/v3/marketing/contacts", self._put_contacts, True),
            ("POST", "/v3/marketing/contacts/exports", self._post_export, True),
            ("GET", "/v3/marketing/contacts/exports/{id}", self._get_export, True),
            ("GET", "/v3/marketing/contacts/imports/errors/{id}", self._get_import_errors, True),
            ("GET", "/v3/marketing/contacts/imports/{id}", self._get_import, True),
            ("GET", "/files/{token}", self._get_file, False),
        ]
        return [
            Route(path, self._endpoint(f"{method} {path}", handler, api), methods=[method])
            for method, path, handler, api in table
        ]

    def _endpoint(
        self, name: str, handler: Callable[..., Any], api: bool
    ) -> Callable[[Request], Any]:
        async def serve(request: Request) -> Response:
            body = await request.body()
            with self._lock:
                self.calls[name] += 1
                response = self._injected(name) or (self._refused(request) if api else None)
                headers, over = self._count_against_limit(name) if api else ({}, False)
                if response is None and over:
                    response = JSONResponse(_errors("too many requests"), status_code=429)
                if response is None:
                    response = handler(request, body)
            for key, value in headers.items():
                response.headers.setdefault(key, value)  # an injected answer's own headers win
            return response

        return serve

    def _injected(self, name: str) -> Response | None:
        queue = self._injections.get(name) or []
        if not queue:
            return None
        injection = queue[0]
        injection.times -= 1
        if injection.times <= 0:
            queue.pop(0)
        return JSONResponse(injection.body, status_code=injection.status, headers=injection.headers)

    def _refused(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return JSONResponse(_errors("authorization required"), status_code=401)
        if self.forbidden:
            return JSONResponse(_errors("access forbidden"), status_code=403)
        return None

    def _count_against_limit(self, name: str) -> tuple[dict[str, str], bool]:
        """Count a call in its endpoint's refresh period; return the headers and if it is over."""
        limit, window = self._limits.get(name, (10_000, 60.0))
        now = self.clock()
        reset, used = self._windows.get(name, (0.0, 0))
        if now >= reset:
            reset, used = float(int(now + window)), 0
        used += 1
        self._windows[name] = (reset, used)
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(limit - used, 0)),
            "X-RateLimit-Reset": str(int(reset)),
        }
        return headers, used > limit

    def _now(self) -> datetime:
        """Return now to the second, as SendGrid's timestamps are."""
        return datetime.fromtimestamp(int(self.clock()), tz=UTC)

    # -- field definitions -------------------------------------------------------------------

    def _get_fields(self, request: Request, body: bytes) -> Response:
        reserved = [
            {"id": "_rf0_T", "name": "first_name", "field_type": "Text"},
            {"id": "_rf2_T", "name": "email", "field_type": "Text"},
            {"id": "_rf22_D", "name": "updated_at", "field_type": "Date", "read_only": True},
        ]
        return JSONResponse(
            {
                "custom_fields": list(self.fields.values()),
                "reserved_fields": reserved,
                "_metadata": {"self": f"{self.base_url}/v3/marketing/field_definitions"},
            }
        )

    def _post_field(self, request: Request, body: bytes) -> Response:
        data = json.loads(body or b"{}")
        name, field_type = data.get("name", ""), data.get("field_type")
        if field_type not in _TYPE_SUFFIX:
            return JSONResponse(_errors(("field_type", "invalid field type")), status_code=400)
        if not _NAME.match(name):
            return JSONResponse(_errors(("name", "invalid field name")), status_code=400)
        if any(f["name"].casefold() == name.casefold() for f in self.fields.values()):
            return JSONResponse(_errors(("name", "field name already exists")), status_code=400)
        if len(self.fields) >= self.field_limit:
            return JSONResponse(
                _errors(("name", "maximum number of custom fields reached")), status_code=400
            )
        field_id = self.add_field(name, field_type)
        return JSONResponse(dict(self.fields[field_id]))

    # -- lists ---------------------------------------------------------------------------------

    def _get_lists(self, request: Request, body: bytes) -> Response:
        size = min(int(request.query_params.get("page_size", 100)), 1000)
        start = int(request.query_params.get("page_token") or 0)
        items = list(self.lists.items())
        page = [
            {"id": list_id, "name": name, "contact_count": len(self.members(list_id))}
            for list_id, name in items[start : start + size]
        ]
        metadata: dict[str, Any] = {
            "self": f"{self.base_url}/v3/marketing/lists?page_size={size}&page_token={start}",
            "count": len(items),
        }
        if start + size < len(items):
            metadata["next"] = (
                f"{self.base_url}/v3/marketing/lists?page_size={size}&page_token={start + size}"
            )
        return JSONResponse({"result": page, "_metadata": metadata})

    def _post_list(self, request: Request, body: bytes) -> Response:
        name = json.loads(body or b"{}").get("name", "")
        if not name:
            return JSONResponse(_errors(("name", "name is required")), status_code=400)
        list_id = self.add_list(name)
        return JSONResponse({"id": list_id, "name": name, "contact_count": 0}, status_code=201)

    # -- upserts and import jobs ---------------------------------------------------------------

    def _put_contacts(self, request: Request, body: bytes) -> Response:
        if len(body) > MAX_BYTES:
            return JSONResponse(_errors("request body exceeds 6MB"), status_code=413)
        data = json.loads(body)
        contacts = data.get("contacts") or []
        list_ids = data.get("list_ids") or []
        if not contacts or len(contacts) > MAX_CONTACTS:
            return JSONResponse(
                _errors(("contacts", "contacts must hold 1 to 30000 items")), status_code=400
            )
        problems: list[tuple[str | None, str]] = []
        for list_id in list_ids:
            if list_id not in self.lists:
                problems.append(("list_ids", f"list '{list_id}' does not exist"))
        for index, contact in enumerate(contacts):
            email = str(contact.get("email", ""))
            if not _EMAIL.match(email):
                problems.append((f"contacts[{index}].email", f"email '{email}' is not valid"))
            unknown = [k for k in contact.get("custom_fields") or {} if k not in self.fields]
            if unknown:
                problems.append(
                    (
                        f"contacts[{index}].custom_fields",
                        "invalid custom field ids supplied - " + ",".join(unknown),
                    )
                )
        if problems:
            return JSONResponse(_errors(*problems), status_code=400)
        job_id = str(uuid.uuid4())
        upsert = Upsert(job_id, list_ids, contacts, len(body))
        self.upserts.append(upsert)
        fail = self.fail_imports > 0
        self.fail_imports -= 1 if fail else 0
        self._jobs[job_id] = _Job(job_id, upsert, self.import_polls, fail)
        return JSONResponse({"job_id": job_id}, status_code=202)

    def _get_import(self, request: Request, body: bytes) -> Response:
        job = self._jobs.get(request.path_params["id"])
        if job is None:
            return JSONResponse(_errors("job not found"), status_code=404)
        if job.status == "pending":
            if job.polls_left > 0:
                job.polls_left -= 1
            else:
                self._run(job)
        answer: dict[str, Any] = {"id": job.id, "status": job.status, "job_type": "upsert"}
        if job.results:
            answer["results"] = job.results
        return JSONResponse(answer)

    def _run(self, job: _Job) -> None:
        """Apply an upsert as SendGrid's job would: each row written whole, or errored."""
        contacts = job.upsert.contacts
        if job.fail:
            job.status = "failed"
            job.errors = [(c.get("email", ""), "internal processing error") for c in contacts]
        else:
            for contact in contacts:
                problem = self.reject.get(contact["email"].lower()) or self._bad_value(
                    contact.get("custom_fields") or {}
                )
                if problem:
                    job.errors.append((contact["email"], problem))
                else:
                    self._apply(contact, job.upsert.list_ids)
            errored = len(job.errors)
            job.status = (
                "completed" if not errored else "failed" if errored == len(contacts) else "errored"
            )
        job.results = {
            "requested_count": len(contacts),
            "created_count": 0,
            "updated_count": len(contacts) - len(job.errors),
            "deleted_count": 0,
            "errored_count": len(job.errors),
        }
        if job.errors:
            job.results["errors_url"] = (
                f"{self.base_url}/v3/marketing/contacts/imports/errors/{job.id}"
            )
        with self._applied:
            self.jobs_applied += 1
            self._applied.notify_all()

    def _bad_value(self, custom: dict[str, Any]) -> str | None:
        for field_id, value in custom.items():
            field_type = self.fields[field_id]["field_type"]
            if value == "":
                continue
            if field_type == "Text" and not isinstance(value, str):
                return f"custom field {field_id} (Text) must be a string"
            if field_type == "Number" and _number(value) is None:
                return f"custom field {field_id} (Number) given {value!r}, not a number"
            if field_type == "Date" and _day(value) is None:
                return f"custom field {field_id} (Date) given {value!r}, not a date"
        return None

    def _apply(self, contact: dict[str, Any], list_ids: list[str]) -> None:
        email = contact["email"].lower()
        contact_id = self._by_email.get(email) or self.add_contact(email)
        record = self.contacts[contact_id]
        for field_id, value in (contact.get("custom_fields") or {}).items():
            field_type = self.fields[field_id]["field_type"]
            if value == "":
                record["custom_fields"].pop(field_id, None)
            elif field_type == "Number":
                record["custom_fields"][field_id] = _number(value)
            elif field_type == "Date":
                record["custom_fields"][field_id] = _day(value).isoformat() + "T00:00:00Z"
            else:
                record["custom_fields"][field_id] = value
        for list_id in list_ids:
            if list_id not in record["list_ids"]:
                record["list_ids"].append(list_id)
        record["updated_at"] = self._now()

    def _get_import_errors(self, request: Request, body: bytes) -> Response:
        job = self._jobs.get(request.path_params["id"])
        if job is None:
            return JSONResponse(_errors("job not found"), status_code=404)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["email", "error"])
        writer.writerows(job.errors)
        return Response(out.getvalue(), media_type="text/csv")

    # -- exports -------------------------------------------------------------------------------

    def _post_export(self, request: Request, body: bytes) -> Response:
        data = json.loads(body or b"{}")
        self.export_requests.append(data)
        list_ids = data.get("list_ids") or []
        file_type = data.get("file_type", "csv")
        missing = [list_id for list_id in list_ids if list_id not in self.lists]
        if missing:
            return JSONResponse(
                _errors(("list_ids", f"lists not found: {', '.join(missing)}")), status_code=404
            )
        if file_type not in ("csv", "json"):
            return JSONResponse(_errors(("file_type", "must be csv or json")), status_code=400)
        for job in self._jobs.values():
            if job.status == "pending":  # SendGrid runs jobs in the background, polled or not
                self._run(job)
        export_id = str(uuid.uuid4())
        fail = self.fail_exports > 0
        self.fail_exports -= 1 if fail else 0
        self._exports[export_id] = _Export(export_id, list_ids, file_type, self.export_polls, fail)
        return JSONResponse(
            {
                "id": export_id,
                "_metadata": {"self": f"{self.base_url}/v3/marketing/contacts/exports/{export_id}"},
            },
            status_code=202,
        )

    def _get_export(self, request: Request, body: bytes) -> Response:
        export = self._exports.get(request.path_params["id"])
        if export is None:
            return JSONResponse(_errors("export not found"), status_code=404)
        now = self._now()
        answer: dict[str, Any] = {
            "id": export.id,
            "status": "pending",
            "created_at": now.isoformat(),
            "updated_at": now.isoformat(),
            "expires_at": now.replace(year=now.year + 1).isoformat(),
        }
        if export.polls_left > 0:
            export.polls_left -= 1
        elif export.fail:
            answer.update(status="failure", message="export could not be generated")
        else:
            if not export.urls:
                self._write_files(export)
            answer.update(status="ready", urls=export.urls, contact_count=export.contact_count)
        return JSONResponse(answer)

    def _write_files(self, export: _Export) -> None:
        wanted = set(export.list_ids)
        rows = [
            c for c in self.contacts.values() if not wanted or wanted.intersection(c["list_ids"])
        ]
        export.contact_count = len(rows)
        for start in range(0, max(len(rows), 1), self.file_contacts):
            part = rows[start : start + self.file_contacts]
            content = self._csv(part) if export.file_type == "csv" else self._ndjson(part)
            token = secrets.token_urlsafe(16)
            self._files[token] = gzip.compress(content.encode(), compresslevel=1)
            export.urls.append(f"{self.base_url}/files/{token}?X-Amz-Signature={token[:8]}")

    def _custom_by_name(self, contact: dict[str, Any]) -> dict[str, Any]:
        return {self.fields[k]["name"]: v for k, v in contact["custom_fields"].items()}

    def _csv(self, contacts: list[dict[str, Any]]) -> str:
        names = [f["name"] for f in self.fields.values()]
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([*_CSV_RESERVED, *names])
        for contact in contacts:
            custom = self._custom_by_name(contact)
            reserved = {
                "EMAIL": contact["email"],
                "FIRST_NAME": contact["first_name"],
                "CREATED_AT": _stamp(contact["created_at"]),
                "UPDATED_AT": _stamp(contact["updated_at"]),
                "CONTACT_ID": contact["id"],
            }
            writer.writerow(
                [reserved.get(column, "") for column in _CSV_RESERVED]
                + [_csv_value(custom.get(name)) for name in names]
            )
        return out.getvalue()

    def _ndjson(self, contacts: list[dict[str, Any]]) -> str:
        lines = []
        for contact in contacts:
            lines.append(
                json.dumps(
                    {
                        "contact_id": contact["id"],
                        "email": contact["email"],
                        "first_name": contact["first_name"],
                        "list_ids": contact["list_ids"],
                        "created_at": _stamp(contact["created_at"]),
                        "updated_at": _stamp(contact["updated_at"]),
                        "custom_fields": self._custom_by_name(contact),
                    }
                )
            )
        return "\n".join(lines) + "\n"

    def _get_file(self, request: Request, body: bytes) -> Response:
        # A pre-signed URL carries its own signature; S3 refuses a second auth mechanism.
        if "authorization" in request.headers:
            self.file_requests_with_auth += 1
            return Response("Only one auth mechanism allowed", status_code=400)
        content = self._files.get(request.path_params["token"])
        if content is None:
            return Response("NoSuchKey", status_code=404)
        self.file_downloads += 1
        if self.stream_files:
            blocks = (content[i : i + 4096] for i in range(0, len(content), 4096))
            return StreamingResponse(iter(blocks), media_type="application/gzip")
        return Response(content, media_type="application/gzip")


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else number


def _day(value: Any) -> date | None:
    text = str(value).strip()
    match = _US_DATE.match(text)
    try:
        if match:
            month, day, year = (int(part) for part in match.groups())
            return date(year, month, day)
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError:
        return None


@contextmanager
def serve(fake: SendGridFake) -> Iterator[SendGridFake]:
    """Run the fake on 127.0.0.1, port 0, in a background thread, until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until the server accepts: no start race
    fake.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        fake.app, lifespan="off", log_level="warning", access_log=False, timeout_keep_alive=30
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def sendgrid_api() -> Iterator[SendGridFake]:
    """A running fake SendGrid API (real clock); `.base_url` is where to point the connector."""
    with serve(SendGridFake()) as fake:
        yield fake
