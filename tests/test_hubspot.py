"""HubSpotConnector against the fake HubSpot, through the real hubspot-api-client over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mailprobe.connectors.base import FieldUpdate, Page, PushReport, Sink, Source
from mailprobe.connectors.errors import (
    ConnectorAuthError,
    FatalConnectorError,
    RetriableConnectorError,
)
from mailprobe.connectors.fields import (
    FIELDS,
    GROUP_LABEL,
    GROUP_NAME,
    FieldKind,
    field_text,
    shows_value,
)
from mailprobe.connectors.hubspot import REQUIRED_SCOPES, HubSpotConnector, wire_value
from mailprobe.engine import EngineSettings, Verifier

from mailprobe.pipeline import CrmConnector, Pipeline
from mailprobe.store import RunOutcome, Store
from tests.fakes.hubspot import TOKEN, FakeClock, FakeHubSpot
from tests.fakes.mailworld import World, address, expected_status, world

SPECS = {spec.name: spec for spec in FIELDS}


class Sleeps:
    """A connector's sleep that records each wait and advances the fake's clock instead."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(round(seconds, 3))
        await self.clock.sleep(seconds)


@pytest.fixture
def sleeps(hubspot_api: FakeHubSpot) -> Sleeps:
    return Sleeps(hubspot_api.clock)


def make_connector(
    api: FakeHubSpot, sleeps: Sleeps | None = None, **kwargs: Any
) -> HubSpotConnector:
    """Return a connector on the fake; unlimited pacing unless a test sets the limits."""
    options: dict[str, Any] = {
        "access_token": TOKEN,
        "base_url": api.base_url,
        "requests_per_10s": 1_000_000,
        "searches_per_s": 1_000_000,
        "clock": api.clock.monotonic,
        "sleep": sleeps or Sleeps(api.clock),
    }
    return HubSpotConnector("hubspot", **{**options, **kwargs})


@pytest.fixture
async def connector(hubspot_api: FakeHubSpot, sleeps: Sleeps) -> AsyncIterator[HubSpotConnector]:
    hubspot = make_connector(hubspot_api, sleeps)
    yield hubspot
    await hubspot.aclose()


async def pull_all(hubspot: HubSpotConnector, since: str | None, signpost: datetime) -> list[Page]:
    return [page async for page in hubspot.pull(since, signpost=signpost)]


def ids_of(pages: list[Page]) -> list[str]:
    return [c.external_id for page in pages for c in page.contacts]


def ago(api: FakeHubSpot, seconds: float) -> datetime:
    return api.clock.now() - timedelta(seconds=seconds)


# -- the protocols ------------------------------------------------------------------------------


async def test_connector_is_a_sorted_source_and_a_sink(connector: HubSpotConnector) -> None:
    assert isinstance(connector, Source) and isinstance(connector, Sink)
    assert connector.is_sorted is True and connector.name == "hubspot"


# -- provisioning -------------------------------------------------------------------------------


async def test_prepare_on_a_fresh_portal_creates_group_and_every_field(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    await connector.prepare()

    assert hubspot_api.group(GROUP_NAME) == {"name": GROUP_NAME, "label": GROUP_LABEL}
    expected = {
        FieldKind.ENUM: ("enumeration", "select"),
        FieldKind.NUMBER: ("number", "number"),
        FieldKind.DATETIME: ("datetime", "date"),
        FieldKind.DATE: ("date", "date"),
        FieldKind.TEXT: ("string", "text"),
        FieldKind.BOOL: ("bool", "booleancheckbox"),
    }
    for spec in FIELDS:
        prop = hubspot_api.property(spec.name)
        assert prop is not None, spec.name
        assert (prop["type"], prop["fieldType"]) == expected[spec.kind]
        assert (prop["label"], prop["groupName"]) == (spec.label, GROUP_NAME)
        options = [(o["value"], o["label"]) for o in prop["options"]]
        if spec.kind is FieldKind.ENUM:
            assert options == list(spec.options)
        if spec.kind is FieldKind.BOOL:
            assert [value for value, _label in options] == ["true", "false"]


async def test_prepare_on_a_provisioned_portal_only_reads(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    await connector.prepare()
    before = hubspot_api.calls.copy()

    await connector.prepare()

    assert hubspot_api.calls - before == {"get_group": 1, "list_properties": 1}


async def test_prepare_adds_a_missing_enum_option_and_keeps_the_users(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    hubspot_api.add_group(GROUP_NAME, GROUP_LABEL)
    older = [opt for opt in SPECS["mailprobe_reason"].options if opt[0] != "unroutable_mx"]
    hubspot_api.add_property(
        "mailprobe_reason",
        "enumeration",
        "select",
        group=GROUP_NAME,
        options=[*older, ("legacy", "Legacy reason")],
    )

    await connector.prepare()

    values = [o["value"] for o in hubspot_api.property("mailprobe_reason")["options"]]
    assert set(values) == {v for v, _ in SPECS["mailprobe_reason"].options} | {"legacy"}
    assert values[: len(older) + 1] == [*(v for v, _ in older), "legacy"]  # kept, in place
    assert hubspot_api.calls["update_property"] == 1


async def test_prepare_refuses_a_user_property_of_another_type_naming_it(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    hubspot_api.add_property("mailprobe_score", "string", "text", label="Our own score")

    with pytest.raises(FatalConnectorError) as raised:
        await connector.prepare()

    assert "mailprobe_score" in str(raised.value) and "string/text" in str(raised.value)
    assert not isinstance(raised.value, ConnectorAuthError)
    assert hubspot_api.property("mailprobe_score")["type"] == "string"  # never retyped
    assert hubspot_api.calls["update_property"] == 0


async def test_prepare_accepts_an_old_style_enumeration_checkbox_for_a_flag(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    hubspot_api.add_property(
        "mailprobe_role",
        "enumeration",
        "booleancheckbox",
        options=[("true", "Yes"), ("false", "No")],
    )

    await connector.prepare()

    assert hubspot_api.property("mailprobe_role")["type"] == "enumeration"
    assert hubspot_api.calls["update_property"] == 0


async def test_prepare_reads_and_compares_a_property_created_meanwhile_409(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    # Another process created the property between our listing and our create: HubSpot says
    # 409, and the property it holds is read and compared instead.
    hubspot_api.fail_next("create_property", 409, apply=True, category="OBJECT_ALREADY_EXISTS")

    await connector.prepare()

    assert hubspot_api.statuses("create_property")[0] == 409
    assert hubspot_api.calls["get_property"] == 1
    assert all(hubspot_api.property(spec.name) for spec in FIELDS)


async def test_prepare_with_a_bad_token_is_an_auth_error_that_hides_the_token(
    hubspot_api: FakeHubSpot,
) -> None:
    hubspot = make_connector(hubspot_api, access_token="pat-na1-wrong-secret-value")

    with pytest.raises(ConnectorAuthError) as raised:
        await hubspot.prepare()

    message = str(raised.value)
    assert "401" in message and "access token" in message
    assert all(scope in message for scope in REQUIRED_SCOPES)
    assert "pat-na1-wrong-secret-value" not in message and TOKEN not in message
    await hubspot.aclose()


async def test_missing_scopes_is_an_auth_error_naming_the_scopes(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    hubspot_api.scopes = {"crm.objects.contacts.read", "crm.objects.contacts.write"}

    with pytest.raises(ConnectorAuthError) as raised:
        await connector.prepare()

    message = str(raised.value)
    assert "403" in message and "MISSING_SCOPES" in message
    assert "crm.schemas.contacts.read" in message and "crm.schemas.contacts.write" in message
    assert TOKEN not in message
    assert hubspot_api.calls["get_group"] == 1  # no retry: a scope does not come back by itself


async def test_pull_with_a_bad_token_is_an_auth_error(hubspot_api: FakeHubSpot) -> None:
    hubspot = make_connector(hubspot_api, access_token="wrong")

    with pytest.raises(ConnectorAuthError):
        await pull_all(hubspot, None, hubspot_api.clock.now())
    await hubspot.aclose()


# -- pull ---------------------------------------------------------------------------------------


async def test_pull_pages_200_contacts_in_time_order_with_a_cursor_per_page(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    made = hubspot_api.add_contacts(450, modified_at=ago(hubspot_api, 600), step_ms=1000)

    pages = await pull_all(connector, None, hubspot_api.clock.now())

    assert ids_of(pages) == made
    assert [len(p.contacts) for p in pages] == [200, 199, 51]  # a keyset page re-reads 1
    for page in pages:
        assert page.cursor == wire_value(page.contacts[-1].updated_at)
    stamps = [c.updated_at for p in pages for c in p.contacts]
    assert stamps == sorted(stamps)
    bodies = [r.body for r in hubspot_api.requests if r.endpoint == "search"]
    assert all(b["limit"] == 200 and "after" not in b for b in bodies)
    assert set(bodies[0]["properties"]) >= {"email", "lastmodifieddate", "hs_object_id"}
    assert set(bodies[0]["properties"]) >= set(SPECS)


async def test_pull_stops_at_the_signpost(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    before = hubspot_api.add_contacts(5, modified_at=ago(hubspot_api, 100), step_ms=1000)
    signpost = ago(hubspot_api, 50)
    hubspot_api.add_contacts(5, modified_at=ago(hubspot_api, 10))

    pages = await pull_all(connector, None, signpost)

    assert ids_of(pages) == before
    assert all(p.cursor is not None and p.cursor <= wire_value(signpost) for p in pages)


async def test_pull_from_a_cursor_rereads_the_overlap_window(
    hubspot_api: FakeHubSpot, sleeps: Sleeps
) -> None:
    old = hubspot_api.add_contacts(3, modified_at=ago(hubspot_api, 3600))
    recent = hubspot_api.add_contacts(3, modified_at=ago(hubspot_api, 250), step_ms=60_000)
    # At -250, -190 and -130 s; from a cursor at -20 s a 120 s overlap reaches back to -140 s.
    cursor = wire_value(ago(hubspot_api, 20))
    hubspot = make_connector(hubspot_api, sleeps, overlap_s=120)

    pages = await pull_all(hubspot, cursor, hubspot_api.clock.now())

    assert ids_of(pages) == recent[2:]
    assert not set(ids_of(pages)) & set(old)
    await hubspot.aclose()


async def test_pull_backfill_since_skips_older_contacts_on_the_first_pass(
    hubspot_api: FakeHubSpot, sleeps: Sleeps
) -> None:
    hubspot_api.add_contacts(4, modified_at=ago(hubspot_api, 7200))
    newer = hubspot_api.add_contacts(4, modified_at=ago(hubspot_api, 60), step_ms=1)
    hubspot = make_connector(hubspot_api, sleeps, backfill_since=ago(hubspot_api, 3600))

    assert ids_of(await pull_all(hubspot, None, hubspot_api.clock.now())) == newer
    await hubspot.aclose()


async def test_pull_reads_many_contacts_sharing_one_timestamp_exactly_once(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    # An import or a workflow stamps hundreds of contacts with one millisecond; HubSpot sorts by
    # one property only, so their order among themselves is arbitrary (the fake scrambles it).
    t0 = ago(hubspot_api, 900)
    first = hubspot_api.add_contacts(150, modified_at=t0, step_ms=1)
    tied = hubspot_api.add_contacts(650, modified_at=t0 + timedelta(seconds=10))
    last = hubspot_api.add_contacts(130, modified_at=t0 + timedelta(seconds=20), step_ms=1)

    pages = await pull_all(connector, None, hubspot_api.clock.now())

    seen = ids_of(pages)
    assert len(seen) == len(set(seen)) == 930
    assert set(seen) == set(first) | set(tied) | set(last)
    assert seen[-130:] == last
    assert hubspot_api.calls["search"] <= 930 // 200 + 5


async def test_pull_of_a_tie_larger_than_several_pages_with_small_pages(
    hubspot_api: FakeHubSpot, sleeps: Sleeps
) -> None:
    hubspot = make_connector(hubspot_api, sleeps, page_size=7)
    t0 = ago(hubspot_api, 60)
    made = hubspot_api.add_contacts(3, modified_at=t0, step_ms=1)
    made += hubspot_api.add_contacts(40, modified_at=t0 + timedelta(seconds=1))
    made += hubspot_api.add_contacts(3, modified_at=t0 + timedelta(seconds=2), step_ms=1)

    seen = ids_of(await pull_all(hubspot, None, hubspot_api.clock.now()))

    assert sorted(seen) == sorted(made) and len(seen) == len(made)
    await hubspot.aclose()


async def test_pull_past_a_search_cap_of_1000_reads_everything_without_a_400(
    sleeps: Sleeps,
) -> None:
    with FakeHubSpot(search_cap=1000) as api:
        made = api.add_contacts(3500, modified_at=ago(api, 7200), step_ms=100)
        hubspot = make_connector(api, Sleeps(api.clock))

        seen = ids_of(await pull_all(hubspot, None, api.clock.now()))

        assert seen == made
        assert 400 not in api.statuses("search")
        await hubspot.aclose()


def test_fake_search_refuses_to_page_beyond_its_cap(hubspot_api: FakeHubSpot) -> None:
    # The cap the connector's keyset paging avoids: `after` offsets stop at 10,000.
    hubspot_api.add_contacts(250)
    body = {"limit": 200, "after": "9900"}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{hubspot_api.base_url}/crm/v3/objects/contacts/search"

    reply = httpx.post(url, json=body, headers=headers)
    first = httpx.post(url, json={"limit": 200}, headers=headers).json()

    assert reply.status_code == 400 and reply.json()["category"] == "VALIDATION_ERROR"
    assert first["total"] == 250 and first["paging"]["next"]["after"] == "200"


async def test_pull_of_25000_contacts_past_the_real_10000_cap(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector, capsys: pytest.CaptureFixture[str]
) -> None:
    made = hubspot_api.add_contacts(25_000, modified_at=ago(hubspot_api, 86_400), step_ms=7)
    started = time.perf_counter()

    seen = ids_of(await pull_all(connector, None, hubspot_api.clock.now()))

    elapsed = time.perf_counter() - started
    assert seen == made
    assert 400 not in hubspot_api.statuses("search")
    with capsys.disabled():
        print(f"\npull 25,000: {hubspot_api.calls['search']} searches, {elapsed:.1f} s")


async def test_pull_catches_a_lagging_search_index_with_the_overlap(
    hubspot_api: FakeHubSpot, sleeps: Sleeps
) -> None:
    hubspot = make_connector(hubspot_api, sleeps, overlap_s=120)
    lagging, prompt = hubspot_api.add_contacts(2, modified_at=ago(hubspot_api, 3600))
    hubspot_api.index_lag_s = 30  # this edit reaches search 30 s late...
    hubspot_api.edit_contact(lagging, email="moved@acme.test")
    hubspot_api.clock.advance(5)
    hubspot_api.index_lag_s = 0  # ...while a later edit is searchable at once
    hubspot_api.edit_contact(prompt, firstname="Ada")
    hubspot_api.clock.advance(1)

    first = await pull_all(hubspot, None, hubspot_api.clock.now())
    assert ids_of(first) == [lagging, prompt]  # the lagging one still with its old state
    assert first[0].contacts[0].email != "moved@acme.test"
    hubspot_api.clock.advance(60)
    second = await pull_all(hubspot, first[-1].cursor, hubspot_api.clock.now())

    moved = [c for p in second for c in p.contacts if c.external_id == lagging]
    assert [c.email for c in moved] == ["moved@acme.test"]
    await hubspot.aclose()


async def test_pull_without_overlap_would_lose_a_lagging_edit(
    hubspot_api: FakeHubSpot, sleeps: Sleeps
) -> None:
    # The counter-test: the overlap is what finds the edit above.
    hubspot = make_connector(hubspot_api, sleeps, overlap_s=0)
    lagging, prompt = hubspot_api.add_contacts(2, modified_at=ago(hubspot_api, 3600))
    hubspot_api.index_lag_s = 30
    hubspot_api.edit_contact(lagging, email="moved@acme.test")
    hubspot_api.clock.advance(5)
    hubspot_api.index_lag_s = 0
    hubspot_api.edit_contact(prompt, firstname="Ada")
    hubspot_api.clock.advance(1)
    first = await pull_all(hubspot, None, hubspot_api.clock.now())
    hubspot_api.clock.advance(60)

    second = await pull_all(hubspot, first[-1].cursor, hubspot_api.clock.now())

    assert lagging not in ids_of(second)
    await hubspot.aclose()


async def test_pull_gives_a_contact_without_email_as_email_none(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    nobody = hubspot_api.add_contact(None, modified_at=ago(hubspot_api, 30))
    blank = hubspot_api.add_contact("  ", modified_at=ago(hubspot_api, 20))

    contacts = [
        c for p in await pull_all(connector, None, hubspot_api.clock.now()) for c in p.contacts
    ]

    assert [(c.external_id, c.email) for c in contacts] == [(nobody, None), (blank, None)]


async def test_pull_gives_an_email_change_as_the_new_address(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    cid = hubspot_api.add_contact("old@acme.test", modified_at=ago(hubspot_api, 600))
    first = await pull_all(connector, None, hubspot_api.clock.now())
    hubspot_api.clock.advance(1)
    hubspot_api.edit_contact(cid, email="new@acme.test")
    hubspot_api.clock.advance(1)

    second = await pull_all(connector, first[-1].cursor, hubspot_api.clock.now())

    assert [(c.external_id, c.email) for p in second for c in p.contacts] == [
        (cid, "new@acme.test")
    ]


async def test_pull_retires_contacts_merged_into_another(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    keep, gone, other = hubspot_api.add_contacts(3, modified_at=ago(hubspot_api, 600))
    hubspot_api.clock.advance(1)
    hubspot_api.merge_contacts(keep, gone)
    hubspot_api.clock.advance(1)

    pages = await pull_all(connector, None, hubspot_api.clock.now())

    assert sorted(ids_of(pages)) == sorted([keep, other])
    assert [i for p in pages for i in p.retired] == [gone]


async def test_pull_no_longer_shows_an_archived_contact_and_push_reports_it_gone(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    await connector.prepare()
    alive, archived = hubspot_api.add_contacts(2, modified_at=ago(hubspot_api, 600))
    hubspot_api.archive_contact(archived)

    pages = await pull_all(connector, None, hubspot_api.clock.now())
    report = await connector.push(
        [FieldUpdate(i, {"mailprobe_status": "valid"}) for i in (alive, archived)]
    )

    assert ids_of(pages) == [alive]
    assert report == PushReport(written=(alive,), gone=(archived,))


async def test_pull_reads_mailprobe_fields_back_in_the_canonical_text_form(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    # Values as a user or an older version may have left them: the connector reads them in
    # the one text form (fields.field_text), so one comparison skips writes HubSpot has.
    hubspot_api.add_contact(
        "a@acme.test",
        modified_at=ago(hubspot_api, 60),
        properties={
            "mailprobe_status": "valid",
            "mailprobe_score": "98.0",
            "mailprobe_verified_at": "2026-05-01T12:00:00Z",
            "mailprobe_next_check": "2026-05-31",
            "mailprobe_role": "True",
            "mailprobe_suggestion": None,
            "mailprobe_smtp_reply": "",
        },
    )

    (page,) = await pull_all(connector, None, hubspot_api.clock.now())

    assert page.contacts[0].fields == {
        "mailprobe_status": "valid",
        "mailprobe_score": "98",
        "mailprobe_verified_at": "2026-05-01T12:00:00Z",
        "mailprobe_next_check": "2026-05-31",
        "mailprobe_role": "true",
    }


# -- push ---------------------------------------------------------------------------------------

VALUES: dict[str, Any] = {
    "mailprobe_status": "invalid",
    "mailprobe_reason": "mailbox_not_found",
    "mailprobe_action": "do_not_send",
    "mailprobe_score": 3,
    "mailprobe_verified_at": datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
    "mailprobe_verified_email": "gone@acme.test",
    "mailprobe_next_check": date(2026, 7, 30),
    "mailprobe_suggestion": None,
    "mailprobe_provider": "Microsoft 365",
    "mailprobe_smtp_reply": "550 5.1.1 User unknown",
    "mailprobe_catch_all": False,
    "mailprobe_role": False,
    "mailprobe_disposable": False,
    "mailprobe_free": True,
}


async def test_push_writes_values_in_hubspot_wire_format(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    await connector.prepare()
    cid = hubspot_api.add_contact("gone@acme.test", properties={"mailprobe_suggestion": "x@y.test"})

    report = await connector.push([FieldUpdate(cid, VALUES, email="gone@acme.test")])

    stored = hubspot_api.contact(cid)
    assert report == PushReport(written=(cid,))
    assert stored["mailprobe_verified_at"] == "2026-05-01T12:30:15.123Z"
    assert stored["mailprobe_next_check"] == "2026-07-30"
    assert stored["mailprobe_score"] == "3"
    assert (stored["mailprobe_free"], stored["mailprobe_role"]) == ("true", "false")
    assert stored["mailprobe_suggestion"] is None  # None clears the field
    body = hubspot_api.requests[-1].body
    assert body == {
        "inputs": [{"id": cid, "properties": {k: wire_value(v) for k, v in VALUES.items()}}]
    }


async def test_pushed_values_read_back_in_the_canonical_text_form(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    await connector.prepare()
    cid = hubspot_api.add_contact("gone@acme.test")
    await connector.push([FieldUpdate(cid, VALUES)])

    (page,) = await pull_all(connector, None, hubspot_api.clock.now())

    shown = page.contacts[0].fields
    assert shown == {k: field_text(v) for k, v in VALUES.items() if v is not None}
    assert all(shows_value(shown.get(k), v) for k, v in VALUES.items())


@pytest.mark.parametrize(
    ("value", "kind", "wire"),
    [
        (None, None, ""),
        (True, FieldKind.BOOL, "true"),
        (False, None, "false"),
        (98, FieldKind.NUMBER, "98"),
        (2.5, FieldKind.NUMBER, "2.5"),
        ("catch_all", FieldKind.ENUM, "catch_all"),
        (date(2026, 1, 2), FieldKind.DATE, "2026-01-02"),
        (datetime(2026, 1, 2, 3, 4, 5, 678999, tzinfo=UTC), None, "2026-01-02T03:04:05.678Z"),
        (datetime(2026, 1, 2, 3, 4, 5), FieldKind.DATETIME, "2026-01-02T03:04:05.000Z"),
        (datetime(2026, 1, 2, 23, 0, tzinfo=UTC), FieldKind.DATE, "2026-01-02"),
    ],
)
def test_wire_value_formats_each_kind(value: Any, kind: FieldKind | None, wire: str) -> None:
    assert wire_value(value, kind) == wire


async def test_push_sends_batches_of_at_most_100(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    await connector.prepare()
    made = hubspot_api.add_contacts(250)

    report = await connector.push([FieldUpdate(i, {"mailprobe_score": 90}) for i in made])

    sizes = [len(r.body["inputs"]) for r in hubspot_api.requests if r.endpoint == "batch_update"]
    assert sizes == [100, 100, 50]
    assert report.written == tuple(made) and not report.failed and not report.gone


async def test_push_merges_updates_for_one_contact_into_one_input(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    await connector.prepare()
    cid = hubspot_api.add_contact("a@acme.test")

    report = await connector.push(
        [FieldUpdate(cid, {"mailprobe_score": 50}), FieldUpdate(cid, {"mailprobe_score": 95})]
    )

    assert report.written == (cid,)
    assert hubspot_api.contact(cid)["mailprobe_score"] == "95"


async def test_push_207_reports_deleted_and_merged_contacts_gone_and_writes_the_rest(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    await connector.prepare()
    keep, merged, deleted, fine = hubspot_api.add_contacts(4)
    hubspot_api.merge_contacts(keep, merged)
    hubspot_api.archive_contact(deleted)
    ids = [keep, merged, deleted, fine, "999999"]

    report = await connector.push([FieldUpdate(i, {"mailprobe_status": "valid"}) for i in ids])

    assert hubspot_api.statuses("batch_update") == [207]
    assert report.written == (keep, fine)
    assert sorted(report.gone) == sorted([merged, deleted, "999999"])
    assert not report.failed
    assert hubspot_api.contact(fine)["mailprobe_status"] == "valid"


async def test_push_400_for_one_named_bad_value_fails_it_and_writes_the_others(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    await connector.prepare()
    made = hubspot_api.add_contacts(5)
    updates = [FieldUpdate(i, {"mailprobe_status": "valid"}) for i in made]
    updates[2] = FieldUpdate(made[2], {"mailprobe_status": "not_an_option"})

    report = await connector.push(updates)

    assert hubspot_api.statuses("batch_update") == [400, 200]
    assert report.written == tuple(made[:2] + made[3:])
    assert [i for i, _why in report.failed] == [made[2]]
    assert "INVALID_OPTION" in report.failed[0][1] or "VALIDATION_ERROR" in report.failed[0][1]
    assert hubspot_api.writes[made[2]] == 0


async def test_push_400_that_names_no_contact_splits_the_batch_until_it_finds_it(
    sleeps: Sleeps,
) -> None:
    with FakeHubSpot(validation_names_object=False) as api:
        hubspot = make_connector(api, Sleeps(api.clock))
        await hubspot.prepare()
        made = api.add_contacts(16)
        updates = [FieldUpdate(i, {"mailprobe_score": 90}) for i in made]
        updates[11] = FieldUpdate(made[11], {"mailprobe_score": "ninety"})

        report = await hubspot.push(updates)

        assert [i for i, _ in report.failed] == [made[11]]
        assert sorted(report.written) == sorted(set(made) - {made[11]})
        assert all(api.writes[i] == 1 for i in report.written)
        assert api.calls["batch_update"] <= 1 + 2 * 4  # bisection: two calls per level
        await hubspot.aclose()


async def test_push_400_for_a_property_that_does_not_exist_ends_the_pass_without_splitting(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    made = hubspot_api.add_contacts(10)  # prepare() never ran: the properties are missing

    with pytest.raises(FatalConnectorError) as raised:
        await connector.push([FieldUpdate(i, {"mailprobe_status": "valid"}) for i in made])

    assert "400" in str(raised.value)
    assert hubspot_api.calls["batch_update"] == 1


async def test_push_5xx_is_retried_with_the_same_batch(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector, sleeps: Sleeps
) -> None:
    await connector.prepare()
    made = hubspot_api.add_contacts(3)
    hubspot_api.fail_next("batch_update", 502, count=2)

    report = await connector.push([FieldUpdate(i, {"mailprobe_score": 91}) for i in made])

    assert hubspot_api.statuses("batch_update") == [502, 502, 200]
    bodies = [r.body for r in hubspot_api.requests if r.endpoint == "batch_update"]
    assert bodies[0] == bodies[1] == bodies[2]
    assert sleeps.waits == [1.0, 2.0]  # exponential backoff
    assert report.written == tuple(made)


async def test_push_504_that_wrote_anyway_is_retried_idempotently(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector
) -> None:
    await connector.prepare()
    cid = hubspot_api.add_contact("a@acme.test")
    hubspot_api.fail_next("batch_update", 504, apply=True)

    report = await connector.push([FieldUpdate(cid, {"mailprobe_status": "valid"})])

    assert report.written == (cid,)
    assert hubspot_api.writes[cid] == 2  # same values twice: nothing differs
    assert hubspot_api.contact(cid)["mailprobe_status"] == "valid"


async def test_push_failing_5xx_gives_up_after_bounded_attempts(
    hubspot_api: FakeHubSpot, sleeps: Sleeps
) -> None:
    hubspot = make_connector(hubspot_api, sleeps, max_attempts=3)
    await hubspot.prepare()
    made = hubspot_api.add_contacts(2)
    hubspot_api.fail_next("batch_update", 503, count=10)

    with pytest.raises(RetriableConnectorError):
        await hubspot.push([FieldUpdate(i, {"mailprobe_score": 1}) for i in made])

    assert hubspot_api.calls["batch_update"] == 3
    await hubspot.aclose()


async def test_push_failing_after_some_batches_reports_the_rest_failed(
    hubspot_api: FakeHubSpot, sleeps: Sleeps
) -> None:
    hubspot = make_connector(hubspot_api, sleeps, max_attempts=2)
    await hubspot.prepare()
    made = hubspot_api.add_contacts(150)
    hubspot_api.fail_next("batch_update", 503, count=2, after=1)

    report = await hubspot.push([FieldUpdate(i, {"mailprobe_score": 1}) for i in made])

    assert report.written == tuple(made[:100])
    assert [i for i, _ in report.failed] == made[100:]
    await hubspot.aclose()


# -- rate limits --------------------------------------------------------------------------------


async def test_429_ten_secondly_rolling_waits_ten_seconds_then_retries(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector, sleeps: Sleeps
) -> None:
    await connector.prepare()
    cid = hubspot_api.add_contact("a@acme.test")
    hubspot_api.fail_next("batch_update", 429, policy="TEN_SECONDLY_ROLLING")

    report = await connector.push([FieldUpdate(cid, {"mailprobe_score": 90})])

    assert sleeps.waits == [10.0] and report.written == (cid,)


async def test_429_with_retry_after_waits_what_it_says(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector, sleeps: Sleeps
) -> None:
    hubspot_api.add_contact("a@acme.test")
    hubspot_api.fail_next("search", 429, policy="TEN_SECONDLY_ROLLING", retry_after=3)

    await pull_all(connector, None, hubspot_api.clock.now())

    assert sleeps.waits == [3.0]


async def test_429_with_retry_after_as_an_http_date_waits_until_that_moment(
    hubspot_api: FakeHubSpot, sleeps: Sleeps
) -> None:
    hubspot = make_connector(hubspot_api, sleeps, now=hubspot_api.clock.now)
    hubspot_api.add_contact("a@acme.test")
    moment = (hubspot_api.clock.now() + timedelta(seconds=8)).replace(microsecond=0)
    date_header = format_datetime(moment, usegmt=True)  # "Fri, 04 Dec 2026 17:05:08 GMT"
    hubspot_api.fail_next("search", 429, policy="TEN_SECONDLY_ROLLING", retry_after=date_header)

    pages = await pull_all(hubspot, None, hubspot_api.clock.now())

    assert hubspot_api.statuses("search") == [429, 200] and len(ids_of(pages)) == 1
    assert len(sleeps.waits) == 1 and 6.0 < sleeps.waits[0] <= 8.0
    await hubspot.aclose()


async def test_429_secondly_on_search_waits_one_second(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector, sleeps: Sleeps
) -> None:
    hubspot_api.add_contact("a@acme.test")
    hubspot_api.fail_next("search", 429, policy="SECONDLY")

    pages = await pull_all(connector, None, hubspot_api.clock.now())

    assert sleeps.waits == [1.0] and len(ids_of(pages)) == 1


async def test_429_daily_pauses_the_connector_until_utc_midnight(
    hubspot_api: FakeHubSpot, sleeps: Sleeps
) -> None:
    late = datetime(2026, 5, 1, 22, 30, tzinfo=UTC)
    hubspot = make_connector(hubspot_api, sleeps, now=lambda: late)
    hubspot_api.fail_next("search", 429, policy="DAILY")

    with pytest.raises(RetriableConnectorError) as raised:
        await pull_all(hubspot, None, hubspot_api.clock.now())

    assert raised.value.retry_after == 5400.0
    assert "daily" in str(raised.value)
    assert hubspot_api.calls["search"] == 1 and sleeps.waits == []
    await hubspot.aclose()


async def test_423_locked_is_retried_with_backoff(
    hubspot_api: FakeHubSpot, connector: HubSpotConnector, sleeps: Sleeps
) -> None:
    hubspot_api.add_contact("a@acme.test")
    hubspot_api.fail_next("search", 423)

    pages = await pull_all(connector, None, hubspot_api.clock.now())

    assert hubspot_api.statuses("search") == [423, 200]
    assert sleeps.waits == [1.0] and len(ids_of(pages)) == 1


async def test_pacing_stays_under_the_fakes_limits_in_virtual_time() -> None:
    clock = FakeClock(frozen=True)
    with FakeHubSpot(clock=clock, requests_per_10s=10, searches_per_s=2) as api:
        made = api.add_contacts(600, modified_at=ago(api, 7200), step_ms=1000)
        hubspot = make_connector(
            api, Sleeps(clock), requests_per_10s=10, searches_per_s=2, page_size=50
        )
        start = clock.monotonic()

        await hubspot.prepare()
        seen = ids_of(await pull_all(hubspot, None, clock.now()))
        await hubspot.push([FieldUpdate(i, {"mailprobe_score": 90}) for i in made[:300]])

        total = sum(api.calls.values())
        assert seen == made
        assert 429 not in {r.status for r in api.requests}
        assert clock.monotonic() - start >= (total // 10 - 1) * 10  # it did wait, virtually
        await hubspot.aclose()


async def test_without_pacing_the_fake_answers_429(hubspot_api: FakeHubSpot) -> None:
    # The counter-test: the fake's limits bite a client that does not pace.
    hubspot_api.searches_per_s = 2
    hubspot_api.add_contacts(100)
    hubspot = make_connector(hubspot_api, page_size=10, max_attempts=1)

    with pytest.raises(RetriableConnectorError):
        await pull_all(hubspot, None, hubspot_api.clock.now())

    assert hubspot_api.statuses("search")[-1] == 429
    await hubspot.aclose()


async def test_unreachable_hubspot_is_retriable_after_bounded_attempts(
    hubspot_api: FakeHubSpot, sleeps: Sleeps
) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    hubspot = make_connector(hubspot_api, sleeps, base_url=closed, max_attempts=3)

    with pytest.raises(RetriableConnectorError) as raised:
        await pull_all(hubspot, None, hubspot_api.clock.now())

    assert "cannot reach HubSpot" in str(raised.value)
    assert sleeps.waits == [1.0, 2.0]
    await hubspot.aclose()


# -- messages -----------------------------------------------------------------------------------


@pytest.fixture
def secret_api() -> Iterator[FakeHubSpot]:
    with FakeHubSpot(token="pat-eu1-very-secret-token") as api:
        yield api


async def test_error_messages_never_carry_the_token(secret_api: FakeHubSpot) -> None:
    hubspot = make_connector(secret_api, access_token="pat-eu1-very-secret-token", max_attempts=1)
    secret_api.add_contact("a@acme.test")
    errors: list[str] = []
    for status in (400, 404, 500, 429):
        secret_api.fail_next("search", status)
        try:
            await pull_all(hubspot, None, secret_api.clock.now())
        except Exception as exc:  # noqa: BLE001 - collecting every message
            errors.append(f"{exc!s} {exc!r}")

    assert len(errors) == 4
    assert all("very-secret" not in text for text in errors)
    await hubspot.aclose()


# -- end to end: the pipeline, the real engine, DNS and SMTP on loopback -----------------------


def seed(api: FakeHubSpot, count: int) -> list[str]:
    emails = [address(n) for n in range(count)]
    return api.add_contacts(count, emails=emails, modified_at=ago(api, 86_400), step_ms=3)


def assert_fields_correct(api: FakeHubSpot, ids: list[str]) -> None:
    for n, cid in enumerate(ids):
        stored = api.contact(cid)
        assert stored["mailprobe_status"] == expected_status(n), (cid, stored)
        assert stored["mailprobe_verified_email"] == stored["email"]
        assert stored["mailprobe_verified_at"] and stored["mailprobe_next_check"]


async def sync_passes(api: FakeHubSpot, engine: dict[str, Any], db: Path, passes: int) -> list[Any]:
    """Run `passes` pipeline passes of a HubSpot connector at the real default pacing."""
    reports = []
    hubspot = HubSpotConnector("hubspot", access_token=TOKEN, base_url=api.base_url)
    with Store(db) as store:
        async with Verifier(EngineSettings(**engine)) as verifier:
            pipeline = Pipeline(store, verifier)
            for _ in range(passes):
                reports.append(await pipeline.run_pass(CrmConnector("hubspot", hubspot)))
    await hubspot.aclose()
    return reports


async def test_sync_passes_write_each_contact_once_and_never_loop(
    hubspot_api: FakeHubSpot, tmp_path: Path
) -> None:
    ids = seed(hubspot_api, 400)
    with world(400) as w:
        reports = await sync_passes(hubspot_api, w.engine(), tmp_path / "state.db", passes=3)

    assert [r.outcome for r in reports] == [RunOutcome.OK] * 3, [r.error for r in reports]
    assert [r.counts.written for r in reports] == [400, 0, 0]
    assert [r.counts.verified for r in reports] == [400, 0, 0]
    assert set(hubspot_api.writes.values()) == {1} and len(hubspot_api.writes) == 400
    assert_fields_correct(hubspot_api, ids)
    assert hubspot_api.calls["batch_update"] == 4


async def test_sync_reverifies_a_changed_email_and_writes_only_that_contact(
    hubspot_api: FakeHubSpot, tmp_path: Path
) -> None:
    ids = seed(hubspot_api, 30)
    with world(30) as w:
        await sync_passes(hubspot_api, w.engine(), tmp_path / "state.db", passes=1)
        hubspot_api.edit_contact(ids[7], email=address(40))  # a mailbox that exists
        hubspot_api.edit_contact(ids[8], email=address(43))  # one that does not

        (report,) = await sync_passes(hubspot_api, w.engine(), tmp_path / "state.db", passes=1)

        assert (w.rcpts(address(40)), w.rcpts(address(43))) == (1, 1)
    assert report.counts.verified == 2 and report.counts.written == 2
    assert hubspot_api.contact(ids[7])["mailprobe_verified_email"] == address(40)
    assert hubspot_api.contact(ids[7])["mailprobe_status"] == "valid"
    assert hubspot_api.contact(ids[8])["mailprobe_status"] == "invalid"
    assert {cid: n for cid, n in hubspot_api.writes.items() if n != 1} == {ids[7]: 2, ids[8]: 2}


def sync_command(config: Path, api: FakeHubSpot) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mailprobe.cli",
        "--config",
        str(config),
        "sync",
        "--connector",
        "hubspot",
    ]


def write_config(tmp_path: Path, api: FakeHubSpot, w: World) -> tuple[Path, dict[str, str]]:
    config = {
        "store": {"path": str(tmp_path / "state.db")},
        "engine": w.engine(),
        "connectors": {"hubspot": {"type": "hubspot", "base_url": api.base_url}},
        "log": {"level": "WARNING"},
    }
    path = tmp_path / "mailprobe.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    root = str(Path(__file__).resolve().parents[1])  # the checkout, importable from tmp_path
    path_env = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {
        **os.environ,
        "PYTHONPATH": path_env,
        "MAILPROBE_CONNECTORS__HUBSPOT__ACCESS_TOKEN": TOKEN,
    }
    return path, env


def test_mailprobe_sync_connector_hubspot_leaves_every_contact_written_once(
    hubspot_api: FakeHubSpot, tmp_path: Path
) -> None:
    ids = seed(hubspot_api, 300)
    with world(300) as w:
        config, env = write_config(tmp_path, hubspot_api, w)
        runs = [
            subprocess.run(
                sync_command(config, hubspot_api),
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                cwd=tmp_path,
            )
            for _ in range(2)
        ]

    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    assert TOKEN not in "".join(r.stdout + r.stderr for r in runs)
    assert set(hubspot_api.writes.values()) == {1} and len(hubspot_api.writes) == 300
    assert_fields_correct(hubspot_api, ids)


def test_sync_killed_mid_pass_then_rerun_loses_nothing_and_writes_nothing_twice(
    hubspot_api: FakeHubSpot, tmp_path: Path
) -> None:
    ids = seed(hubspot_api, 1500)
    with world(1500) as w:
        config, env = write_config(tmp_path, hubspot_api, w)
        command = sync_command(config, hubspot_api)
        for kill_after in (2, 9):  # batches HubSpot had received when the process died
            before = hubspot_api.calls["batch_update"]
            process = subprocess.Popen(
                command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            reached = hubspot_api.wait_for("batch_update", before + kill_after, timeout=120)
            process.send_signal(signal.SIGKILL)
            process.wait(30)
            assert reached, "the sync never got to writing"
        final = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path
        )

    assert final.returncode == 0, final.stderr
    assert_fields_correct(hubspot_api, ids)
    assert len(hubspot_api.writes) == 1500
    twice = {cid: n for cid, n in hubspot_api.writes.items() if n > 1}
    assert twice == {}


@pytest.mark.skipif(
    not os.environ.get("MAILPROBE_LONG_TESTS"),
    reason="minutes at HubSpot's real pacing: set MAILPROBE_LONG_TESTS=1 to run it",
)
@pytest.mark.timeout(900)
async def test_sync_backfill_of_25000_contacts_writes_each_once(
    hubspot_api: FakeHubSpot, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = seed(hubspot_api, 25_000)
    started = time.perf_counter()
    with world(25_000) as w:
        (first,) = await sync_passes(hubspot_api, w.engine(), tmp_path / "state.db", passes=1)
        backfill_s = time.perf_counter() - started
        calls = dict(hubspot_api.calls)
        (second,) = await sync_passes(hubspot_api, w.engine(), tmp_path / "state.db", passes=1)

    assert first.outcome is RunOutcome.OK and second.outcome is RunOutcome.OK
    assert set(hubspot_api.writes.values()) == {1} and len(hubspot_api.writes) == 25_000
    assert second.counts.written == 0
    assert_fields_correct(hubspot_api, ids)
    with capsys.disabled():
        print(f"\nbackfill 25,000: {backfill_s:.1f} s, HubSpot calls {calls}")
