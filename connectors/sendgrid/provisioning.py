"""What must exist in the SendGrid account before a pass: its lists and custom fields.

Configured list names (or ids) become list ids; mailprobe's fields (connectors.fields) become
this account's custom field ids, created when missing, never retyped when a user's field of
the same name has another type.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx

from ..errors import FatalConnectorError
from ..fields import FIELDS, FieldKind, FieldSpec
from .formats import FIELD_TYPES
from .http import SendGridHttp, describe_errors

log = logging.getLogger(__name__)

#: "You can have up to 500 custom fields."
CUSTOM_FIELD_LIMIT = 500

_FIELDS_PATH = "/v3/marketing/field_definitions"
_LISTS_PATH = "/v3/marketing/lists"
_LIST_PAGE_SIZE = 1000  # the lists endpoint's maximum
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


@dataclass(frozen=True, slots=True)
class CustomField:
    """One of this account's custom fields that mailprobe writes: its id, name and kind."""

    id: str  # e.g. "e3_N"; upserts key custom_fields by id, never by name
    name: str
    kind: FieldKind


@dataclass(frozen=True, slots=True)
class Lists:
    """The ids of the lists pulled (empty: all contacts) and of the list invalid ones join."""

    pulled: tuple[str, ...]
    invalid: str | None


async def resolve_lists(http: SendGridHttp, wanted: Sequence[str], invalid: str | None) -> Lists:
    """Return the ids of the configured lists; create the invalid list when it is a new name."""
    known = await _all_lists(http)
    pulled = tuple(_match_list(http.connector, name, known) for name in wanted)
    if not invalid:
        return Lists(pulled, None)
    try:
        return Lists(pulled, _match_list(http.connector, invalid, known))
    except FatalConnectorError:
        if _UUID.match(invalid):
            raise
    return Lists(pulled, await _create_list(http, invalid))


async def _all_lists(http: SendGridHttp) -> list[dict[str, Any]]:
    """Return every contact list of the account, following page tokens."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"page_size": _LIST_PAGE_SIZE}
    while True:
        body = (await http.call("GET", _LISTS_PATH, bucket="lists", params=params)).json()
        found.extend(item for item in body.get("result", []) if isinstance(item, dict))
        next_url = (body.get("_metadata") or {}).get("next")
        token = httpx.URL(next_url).params.get("page_token") if next_url else None
        if not token or token == params.get("page_token"):
            return found
        params = {"page_size": _LIST_PAGE_SIZE, "page_token": token}


def _match_list(connector: str, wanted: str, known: Sequence[Mapping[str, Any]]) -> str:
    """Return the id of the list named or identified by `wanted`."""
    for item in known:
        if item.get("id") == wanted:
            return str(item["id"])
    same = [item for item in known if item.get("name") == wanted]
    if not same:
        same = [item for item in known if str(item.get("name", "")).casefold() == wanted.casefold()]
    if len(same) == 1:
        return str(same[0]["id"])
    if len(same) > 1:
        ids = ", ".join(str(item["id"]) for item in same)
        raise FatalConnectorError(
            connector, f"several SendGrid lists are named {wanted!r} ({ids}); give the list id"
        )
    names = ", ".join(sorted(repr(item.get("name")) for item in known)[:20]) or "none"
    raise FatalConnectorError(
        connector,
        f"unknown SendGrid list {wanted!r} in `lists`/`invalid_list`; the account's lists "
        f"are {names}",
    )


async def _create_list(http: SendGridHttp, name: str) -> str:
    response = await http.call("POST", _LISTS_PATH, bucket="lists", json_body={"name": name})
    list_id = str(response.json()["id"])
    log.info(
        "%s: created SendGrid list %r (%s) for invalid contacts", http.connector, name, list_id
    )
    return list_id


async def resolve_fields(http: SendGridHttp, *, field_limit: int) -> dict[str, CustomField]:
    """Return field name → this account's custom field, creating the missing ones."""
    body = (await http.call("GET", _FIELDS_PATH, bucket="fields")).json()
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
            http.connector,
            "custom fields exist with another type: "
            + "; ".join(conflicts)
            + ". Delete or rename them in SendGrid (Marketing → Custom Fields) and retry",
        )
    too_many = partial(_field_limit_error, http.connector, field_limit, len(custom), missing)
    if missing and len(custom) + len(missing) > field_limit:
        raise too_many()
    for spec in missing:
        resolved[spec.name] = await _create_field(http, spec, too_many)
    return resolved


def _field_limit_error(
    connector: str, limit: int, existing: int, missing: Sequence[FieldSpec], detail: str = ""
) -> FatalConnectorError:
    """Return the error that says how many custom fields to free, and which mailprobe needs."""
    names = ", ".join(spec.name for spec in missing)
    tail = f" (SendGrid: {detail})" if detail else ""
    return FatalConnectorError(
        connector,
        f"the SendGrid account has {existing} of its {limit} custom fields and mailprobe "
        f"needs {len(missing)} more ({names}){tail}; delete unused custom fields in SendGrid "
        "(Marketing → Custom Fields) and retry",
    )


async def _create_field(
    http: SendGridHttp, spec: FieldSpec, too_many: Callable[[str], FatalConnectorError]
) -> CustomField:
    response = await http.call(
        "POST",
        _FIELDS_PATH,
        bucket="fields",
        json_body={"name": spec.name, "field_type": FIELD_TYPES[spec.kind]},
        accept=(400,),
    )
    if response.status_code == 400:
        text = describe_errors(response)
        if re.search(r"limit|maximum|max\b|too many", text, re.I):
            raise too_many(text)
        raise FatalConnectorError(
            http.connector, f"SendGrid refused to create custom field {spec.name}: {text}"
        )
    log.info("%s: created SendGrid custom field %s", http.connector, spec.name)
    return CustomField(str(response.json()["id"]), spec.name, spec.kind)
