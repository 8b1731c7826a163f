"""SendGridConnector against the fake SendGrid API, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest
from mailprobe.connectors.base import Contact, FieldUpdate, FieldValue, Page
from mailprobe.connectors.errors import (
    ConnectorAuthError,
    FatalConnectorError,
    RetriableConnectorError,
)
from mailprobe.connectors.fields import (
    FIELD_NAMES,
    FIELDS,
    FieldKind,
    field_text,
    field_values,
    shows_value,
)
from mailprobe.connectors.sendgrid import (
    FIELD_TYPES,
    MAX_UPSERT_BYTES,
    SendGridConnector,
    read_back,
    wire_value,
)
from mailprobe.connectors.sendgrid.upsert import Row, chunks
from mailprobe.engine.result import Reason, Status

from mailprobe.pipeline import CrmConnector, Pipeline
from mailprobe.store import RunOutcome, Store
from tests.fakes.pipeline import Clock as PipelineClock
from tests.fakes.pipeline import FakeVerifier
from tests.fakes.results import make_result
from tests.fakes.sendgrid import API_KEY, FakeClock, SendGridFake, serve

SIGNPOST = datetime(2100, 1, 1, tzinfo=UTC)
VERIFIED_AT = datetime(2026, 11, 27, 12, 30, tzinfo=UTC)


def make(api: SendGridFake, clock: FakeClock | None = None, **options) -> SendGridConnector:
    """Return a connector on the fake whose waits advance a fake clock instead of sleeping."""
    clock = clock or FakeClock()
    settings = {
        "api_key": API_KEY,
        "base_url": api.base_url,
        "poll_interval_s": 0.5,
        "max_poll_s": 60,
        "backoff_s": 0.5,
        "sleep": clock.sleep,
        "clock": clock,
    }
    settings.update(options)
    return SendGridConnector("sendgrid", **settings)


def values_for(email: str, **changes: FieldValue) -> dict[str, FieldValue]:
    """Return a full set of mailprobe field values, as the pipeline would hand them over."""
    values: dict[str, FieldValue] = {
        "mailprobe_status": "valid",
        "mailprobe_reason": "accepted",
        "mailprobe_action": "send",
        "mailprobe_score": 98,
        "mailprobe_verified_at": VERIFIED_AT,
        "mailprobe_verified_email": email,
        "mailprobe_next_check": date(2026, 12, 27),
        "mailprobe_suggestion": None,
        "mailprobe_provider": "Microsoft 365",
        "mailprobe_smtp_reply": "250 2.1.5 Recipient OK",
        "mailprobe_catch_all": False,
        "mailprobe_role": False,
        "mailprobe_disposable": False,
        "mailprobe_free": True,
    }
    values.update(changes)
    return values


def needs_write(contact: Contact, values: dict[str, FieldValue]) -> bool:
    """Return whether a pulled contact lacks any of these values (the pipeline's comparison)."""
    return not all(shows_value(contact.fields.get(name), v) for name, v in values.items())


async def pull_all(connector: SendGridConnector) -> list[Page]:
    return [page async for page in connector.pull(None, signpost=SIGNPOST)]


def contacts_of(pages: list[Page]) -> list[Contact]:
    return [contact for page in pages for contact in page.contacts]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# -- pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value", "wire"),
    [
        (FieldKind.ENUM, "invalid", "invalid"),
        (FieldKind.TEXT, None, ""),
        (FieldKind.NUMBER, 98, 98),
        (FieldKind.BOOL, True, 1),
        (FieldKind.BOOL, False, 0),
        (FieldKind.DATE, date(2026, 12, 27), "12/27/2026"),
        (FieldKind.DATETIME, datetime(2026, 11, 27, 23, 30, tzinfo=UTC), "11/27/2026"),
        (FieldKind.DATE, None, ""),
    ],
)
def test_wire_value_is_text_number_flag_or_us_date(kind, value, wire) -> None:
    assert wire_value(value, kind) == wire


@pytest.mark.parametrize(
    ("kind", "raw", "text"),
    [
        (FieldKind.NUMBER, "98", "98"),
        (FieldKind.NUMBER, 98.0, "98"),
        (FieldKind.BOOL, "1", "true"),
        (FieldKind.BOOL, 0, "false"),
        (FieldKind.DATE, "2026-12-27T00:00:00Z", "2026-12-27"),
        (FieldKind.DATETIME, "11/27/2026", "2026-11-27"),
        (FieldKind.TEXT, "", ""),
        (FieldKind.ENUM, "valid", "valid"),
    ],
)
def test_read_back_gives_what_sendgrid_stores_in_the_canonical_text_form(kind, raw, text) -> None:
    assert read_back(raw, kind) == text


def test_chunks_stop_at_the_contact_count_and_at_the_byte_size() -> None:
    rows = [Row(str(n), f"p{n}@x.test", b"x" * 10, False) for n in range(25)]
    by_count = list(chunks(rows, envelope=2, max_count=10, max_bytes=10_000))
    by_bytes = list(chunks(rows, envelope=2, max_count=100, max_bytes=2 + 10 * 5 + 4))
    assert [len(chunk) for chunk in by_count] == [10, 10, 5]
    assert [len(chunk) for chunk in by_bytes] == [5, 5, 5, 5, 5]


# -- prepare ---------------------------------------------------------------------------------


async def test_prepare_creates_missing_fields_with_sendgrid_types(sendgrid_api) -> None:
    async with make(sendgrid_api) as connector:
        await connector.prepare()
    types = {f["name"]: f["field_type"] for f in sendgrid_api.fields.values()}
    assert set(types) == set(FIELD_NAMES)
    assert types["mailprobe_status"] == "Text"
    assert types["mailprobe_score"] == types["mailprobe_catch_all"] == "Number"
    assert types["mailprobe_verified_at"] == types["mailprobe_next_check"] == "Date"
    assert {name: f.id for name, f in connector.fields.items()} == {
        name: sendgrid_api.field_id(name) for name in FIELD_NAMES
    }


async def test_prepare_reuses_existing_fields_whatever_their_case(sendgrid_api) -> None:
    for spec in FIELDS:
        name = spec.name.upper() if spec.name == "mailprobe_status" else spec.name
        sendgrid_api.add_field(name, FIELD_TYPES[spec.kind])
    async with make(sendgrid_api) as connector:
        await connector.prepare()
    assert sendgrid_api.calls["POST /v3/marketing/field_definitions"] == 0
    assert connector.fields["mailprobe_status"].id == sendgrid_api.field_id("MAILPROBE_STATUS")


async def test_prepare_at_the_field_limit_is_fatal_before_creating_any(sendgrid_api) -> None:
    for n in range(490):
        sendgrid_api.add_field(f"other_{n}", "Text")
    async with make(sendgrid_api) as connector:
        with pytest.raises(FatalConnectorError) as caught:
            await connector.prepare()
    assert "490 of its 500 custom fields" in str(caught.value)
    assert "needs 14 more" in str(caught.value)
    assert "delete unused custom fields" in str(caught.value)
    assert sendgrid_api.calls["POST /v3/marketing/field_definitions"] == 0


async def test_prepare_refused_by_the_account_limit_is_fatal_and_clear(sendgrid_api) -> None:
    sendgrid_api.field_limit = 5  # a smaller plan than the connector assumes
    async with make(sendgrid_api) as connector:
        with pytest.raises(FatalConnectorError) as caught:
            await connector.prepare()
    assert "maximum number of custom fields" in str(caught.value)
    assert "delete unused custom fields" in str(caught.value)


async def test_prepare_same_name_field_of_another_type_is_fatal(sendgrid_api) -> None:
    sendgrid_api.add_field("mailprobe_score", "Text")
    async with make(sendgrid_api) as connector:
        with pytest.raises(FatalConnectorError) as caught:
            await connector.prepare()
    assert "mailprobe_score is Text, mailprobe needs Number" in str(caught.value)


async def test_prepare_unknown_list_is_fatal_and_names_the_known_ones(sendgrid_api) -> None:
    sendgrid_api.add_list("Newsletter")
    async with make(sendgrid_api, lists=["Newsleter"]) as connector:
        with pytest.raises(FatalConnectorError) as caught:
            await connector.prepare()
    assert "unknown SendGrid list 'Newsleter'" in str(caught.value)
    assert "'Newsletter'" in str(caught.value)


async def test_prepare_resolves_list_names_and_ids_across_pages(sendgrid_api) -> None:
    for n in range(1000):
        sendgrid_api.add_list(f"filler {n}")
    wanted = sendgrid_api.add_list("Customers")
    other = sendgrid_api.add_list("Trial")
    async with make(sendgrid_api, lists=["Customers", other]) as connector:
        await connector.prepare()
    assert connector.list_ids == (wanted, other)
    assert sendgrid_api.calls["GET /v3/marketing/lists"] == 2


async def test_prepare_creates_a_missing_invalid_list_by_name(sendgrid_api) -> None:
    async with make(sendgrid_api, invalid_list="Undeliverable") as connector:
        await connector.prepare()
    assert sendgrid_api.lists[connector.invalid_list_id] == "Undeliverable"


# -- pull ------------------------------------------------------------------------------------


@pytest.mark.parametrize("file_type", ["csv", "json"])
async def test_pull_reads_50000_contacts_from_every_export_file(sendgrid_api, file_type) -> None:
    customers = sendgrid_api.add_list("Customers")
    sendgrid_api.add_contacts(50_000, list_id=customers)
    sendgrid_api.add_contact("elsewhere@example.test", lists=(sendgrid_api.add_list("Other"),))
    async with make(sendgrid_api, lists=["Customers"], file_type=file_type) as connector:
        pages = await pull_all(connector)
    contacts = contacts_of(pages)
    assert len(contacts) == len({c.external_id for c in contacts}) == 50_000
    assert {c.email for c in contacts} == sendgrid_api.members(customers)
    assert sendgrid_api.file_downloads == 3  # 20,000 contacts per file
    assert sendgrid_api.file_requests_with_auth == 0  # pre-signed: the key never goes there
    assert max(len(page.contacts) for page in pages) <= 1000
    assert {page.cursor for page in pages} == {None}  # unsorted: the pipeline moves the cursor


@pytest.mark.parametrize("file_type", ["csv", "json"])
async def test_pull_reports_current_values_in_the_canonical_text_form(
    sendgrid_api, file_type
) -> None:
    newsletter = sendgrid_api.add_list("Newsletter")
    async with make(sendgrid_api, lists=["Newsletter"], file_type=file_type) as connector:
        await connector.prepare()
        sendgrid_api.add_contact(
            "jane@example.test",
            lists=(newsletter,),
            custom={
                "mailprobe_status": "valid",
                "mailprobe_score": 98,
                "mailprobe_catch_all": 0,
                "mailprobe_next_check": "2026-12-27T00:00:00Z",
            },
        )
        [jane] = contacts_of(await pull_all(connector))
    held: dict[str, FieldValue] = {
        "mailprobe_status": "valid",
        "mailprobe_score": 98,
        "mailprobe_catch_all": False,
        "mailprobe_next_check": date(2026, 12, 27),
    }
    assert jane.fields == {name: field_text(value) for name, value in held.items()}
    assert not needs_write(jane, held)


async def test_pull_lists_a_contact_on_two_lists_once(sendgrid_api) -> None:
    first, second = sendgrid_api.add_list("A"), sendgrid_api.add_list("B")
    sendgrid_api.add_contact("both@example.test", lists=(first, second))
    async with make(sendgrid_api, lists=["A", "B"]) as connector:
        contacts = contacts_of(await pull_all(connector))
    assert [c.email for c in contacts] == ["both@example.test"]


async def test_pull_without_lists_exports_all_contacts(sendgrid_api) -> None:
    sendgrid_api.add_contact("a@example.test", lists=(sendgrid_api.add_list("A"),))
    sendgrid_api.add_contact("loose@example.test")
    async with make(sendgrid_api) as connector:
        contacts = contacts_of(await pull_all(connector))
    assert {c.email for c in contacts} == {"a@example.test", "loose@example.test"}


async def test_pull_waits_for_the_export_with_growing_polls(sendgrid_api, clock) -> None:
    sendgrid_api.export_polls = 4
    async with make(sendgrid_api, clock) as connector:
        await pull_all(connector)
    assert sendgrid_api.calls["GET /v3/marketing/contacts/exports/{id}"] == 5
    assert clock.slept == sorted(clock.slept) and clock.slept[-1] > clock.slept[0]


async def test_pull_failed_export_is_retriable(sendgrid_api) -> None:
    sendgrid_api.fail_exports = 1
    async with make(sendgrid_api) as connector:
        with pytest.raises(RetriableConnectorError, match="export .* failed"):
            await pull_all(connector)


async def test_pull_export_never_ready_is_retriable_after_max_poll(sendgrid_api) -> None:
    sendgrid_api.export_polls = 10_000
    async with make(sendgrid_api, max_poll_s=10) as connector:
        with pytest.raises(RetriableConnectorError, match="still pending after 10s"):
            await pull_all(connector)


async def test_pull_builds_no_cursor_even_past_the_signpost(sendgrid_api, clock) -> None:
    sendgrid_api.add_contact("late@example.test", updated_at=datetime(2200, 1, 1, tzinfo=UTC))
    async with make(sendgrid_api) as connector:
        pages = [page async for page in connector.pull(None, signpost=SIGNPOST)]
    assert [page.cursor for page in pages] == [None]
    assert pages[0].contacts[0].updated_at == datetime(2200, 1, 1, tzinfo=UTC)


# -- push ------------------------------------------------------------------------------------


async def test_push_writes_fields_by_id_and_reports_after_the_job(sendgrid_api) -> None:
    sendgrid_api.import_polls = 2
    emails = [f"p{n}@example.test" for n in range(3)]
    ids = [sendgrid_api.add_contact(email) for email in emails]
    async with make(sendgrid_api) as connector:
        await connector.prepare()
        report = await connector.push(
            [FieldUpdate(i, values_for(e), email=e) for i, e in zip(ids, emails, strict=True)]
        )
    assert sorted(report.written) == sorted(ids) and report.failed == ()
    [upsert] = sendgrid_api.upserts
    assert set(upsert.contacts[0]["custom_fields"]) == set(
        connector.fields[n].id for n in FIELD_NAMES
    )
    assert sendgrid_api.values(emails[0]) == {
        "mailprobe_status": "valid",
        "mailprobe_reason": "accepted",
        "mailprobe_action": "send",
        "mailprobe_score": 98,
        "mailprobe_verified_at": "2026-11-27T00:00:00Z",
        "mailprobe_verified_email": emails[0],
        "mailprobe_next_check": "2026-12-27T00:00:00Z",
        "mailprobe_provider": "Microsoft 365",
        "mailprobe_smtp_reply": "250 2.1.5 Recipient OK",
        "mailprobe_catch_all": 0,
        "mailprobe_role": 0,
        "mailprobe_disposable": 0,
        "mailprobe_free": 1,
    }
    assert sendgrid_api.calls["GET /v3/marketing/contacts/imports/{id}"] == 3


async def test_push_splits_at_30000_contacts(sendgrid_api) -> None:
    updates = [
        FieldUpdate(str(n), {"mailprobe_score": 98}, email=f"p{n}@example.test")
        for n in range(50_000)
    ]
    async with make(sendgrid_api) as connector:
        report = await connector.push(updates)
    assert [len(u.contacts) for u in sendgrid_api.upserts] == [30_000, 20_000]
    assert len(report.written) == 50_000


async def test_push_splits_at_6_mb(sendgrid_api) -> None:
    updates = [
        FieldUpdate(str(n), values_for(f"p{n}@example.test"), email=f"p{n}@example.test")
        for n in range(30_000)
    ]
    async with make(sendgrid_api) as connector:
        report = await connector.push(updates)
    sizes = [u.size for u in sendgrid_api.upserts]
    counts = [len(u.contacts) for u in sendgrid_api.upserts]
    assert len(sizes) == 2 and max(sizes) <= MAX_UPSERT_BYTES  # 30,000 rows: bytes split them
    assert sizes[0] > MAX_UPSERT_BYTES - 1_000 and sum(counts) == 30_000
    assert len(report.written) == 30_000


async def test_push_errored_rows_are_failed_with_the_reason(sendgrid_api) -> None:
    sendgrid_api.reject["bad@example.test"] = "email address is on a suppression list"
    updates = [
        FieldUpdate("1", {"mailprobe_score": 98}, email="good@example.test"),
        FieldUpdate("2", {"mailprobe_score": 4}, email="bad@example.test"),
    ]
    async with make(sendgrid_api) as connector:
        report = await connector.push(updates)
    assert report.written == ("1",)
    assert report.failed == (("2", "SendGrid: email address is on a suppression list"),)
    assert sendgrid_api.values("good@example.test") == {"mailprobe_score": 98}


async def test_push_value_of_the_wrong_kind_is_failed_without_sending(sendgrid_api) -> None:
    updates = [FieldUpdate("1", {"mailprobe_score": "high"}, email="a@example.test")]
    async with make(sendgrid_api) as connector:
        report = await connector.push(updates)
    assert report.written == ()
    assert report.failed == (("1", "mailprobe_score: 'high' is not a Number"),)
    assert sendgrid_api.upserts == []


async def test_push_failed_job_fails_the_whole_chunk_for_a_retry(sendgrid_api) -> None:
    sendgrid_api.fail_imports = 1
    updates = [FieldUpdate(str(n), {"mailprobe_score": 90}, email=f"p{n}@x.test") for n in range(3)]
    async with make(sendgrid_api) as connector:
        first = await connector.push(updates)
        second = await connector.push(updates)
    assert first.written == () and len(first.failed) == 3
    assert {why for _, why in first.failed} == {"SendGrid: internal processing error"}
    assert sorted(second.written) == ["0", "1", "2"]


async def test_push_row_refused_by_the_request_is_failed_and_the_rest_sent(sendgrid_api) -> None:
    updates = [
        FieldUpdate("1", {"mailprobe_score": 90}, email="fine@example.test"),
        FieldUpdate("2", {"mailprobe_score": 5}, email="no-at-sign"),
    ]
    async with make(sendgrid_api) as connector:
        report = await connector.push(updates)
    assert report.written == ("1",)
    assert report.failed == (("2", "SendGrid: email 'no-at-sign' is not valid"),)
    assert sendgrid_api.calls["PUT /v3/marketing/contacts"] == 2


async def test_push_adds_invalid_contacts_to_the_invalid_list(sendgrid_api) -> None:
    bounced = sendgrid_api.add_list("Bounced")
    updates = [
        FieldUpdate("1", values_for("ok@example.test"), email="ok@example.test"),
        FieldUpdate(
            "2",
            values_for("gone@example.test", mailprobe_status="invalid"),
            email="gone@example.test",
        ),
    ]
    async with make(sendgrid_api, invalid_list="Bounced") as connector:
        report = await connector.push(updates)
    assert sorted(report.written) == ["1", "2"]
    assert sendgrid_api.members(bounced) == {"gone@example.test"}


async def test_push_without_email_uses_the_pulled_address_or_fails(sendgrid_api) -> None:
    contact_id = sendgrid_api.add_contact("known@example.test")
    async with make(sendgrid_api) as connector:
        await pull_all(connector)
        report = await connector.push(
            [
                FieldUpdate(contact_id, {"mailprobe_score": 97}),
                FieldUpdate("nobody", {"mailprobe_score": 97}),
            ]
        )
    assert report.written == (contact_id,)
    assert report.failed == (
        ("nobody", "no email address known for this contact; SendGrid upserts by email"),
    )
    assert sendgrid_api.values("known@example.test") == {"mailprobe_score": 97}


async def test_write_then_pull_shows_every_value_written(sendgrid_api, clock) -> None:
    contact_id = sendgrid_api.add_contact("jane@example.test")
    values = values_for("jane@example.test", mailprobe_suggestion=None)
    async with make(sendgrid_api, clock) as connector:
        await connector.push([FieldUpdate(contact_id, values, email="jane@example.test")])
        [jane] = contacts_of(await pull_all(connector))
    assert not needs_write(jane, values)
    assert jane.updated_at is not None and jane.updated_at.microsecond == 0  # to the second


# -- limits and errors -----------------------------------------------------------------------


async def test_rate_limit_exhausted_waits_until_the_reset(clock) -> None:
    with serve(SendGridFake(clock=clock)) as api:
        for n in range(1001):  # two pages of lists: two calls to one endpoint
            api.add_list(f"list {n}")
        api.rate_limit("GET /v3/marketing/lists", limit=1, window_s=30)
        async with make(api, clock) as connector:
            await connector.prepare()
    assert api.calls["GET /v3/marketing/lists"] == 2  # no 429 was needed
    assert clock.slept == [30.0]


async def test_429_is_retried_after_retry_after(sendgrid_api, clock) -> None:
    sendgrid_api.inject("GET /v3/marketing/field_definitions", 429, headers={"Retry-After": "7"})
    async with make(sendgrid_api, clock) as connector:
        await connector.prepare()
    assert clock.slept == [7.0]
    assert sendgrid_api.calls["GET /v3/marketing/field_definitions"] == 2


async def test_429_with_retry_after_as_an_http_date_waits_until_that_moment(
    sendgrid_api, clock
) -> None:
    moment = int(clock.now) + 9
    header = format_datetime(datetime.fromtimestamp(moment, UTC), usegmt=True)
    sendgrid_api.inject("GET /v3/marketing/field_definitions", 429, headers={"Retry-After": header})
    async with make(sendgrid_api, clock) as connector:
        await connector.prepare()
    assert len(clock.slept) == 1 and 8.0 < clock.slept[0] <= 9.0
    assert sendgrid_api.calls["GET /v3/marketing/field_definitions"] == 2


async def test_429_without_retry_after_waits_for_the_reset_header(clock) -> None:
    with serve(SendGridFake(clock=clock)) as api:
        reset = str(int(clock.now) + 12)
        api.inject(
            "GET /v3/marketing/field_definitions",
            429,
            headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset},
        )
        async with make(api, clock) as connector:
            await connector.prepare()
    assert clock.slept == [12.0]


async def test_429_longer_than_patience_is_retriable_with_its_delay(sendgrid_api) -> None:
    sendgrid_api.inject("GET /v3/marketing/lists", 429, headers={"Retry-After": "3600"})
    async with make(sendgrid_api, max_rate_wait_s=300) as connector:
        with pytest.raises(RetriableConnectorError) as caught:
            await connector.prepare()
    assert caught.value.retry_after == 3600


async def test_5xx_is_retried_with_exponential_backoff(sendgrid_api, clock) -> None:
    sendgrid_api.inject("PUT /v3/marketing/contacts", 500, times=2)
    async with make(sendgrid_api, clock) as connector:
        report = await connector.push([FieldUpdate("1", {"mailprobe_score": 1}, email="a@x.test")])
    assert report.written == ("1",)
    assert sendgrid_api.calls["PUT /v3/marketing/contacts"] == 3
    assert clock.slept[:2] == [0.5, 1.0]


async def test_5xx_beyond_the_retries_is_retriable(sendgrid_api) -> None:
    sendgrid_api.inject("GET /v3/marketing/lists", 503, times=10)
    async with make(sendgrid_api, max_retries=2) as connector:
        with pytest.raises(RetriableConnectorError, match="server error 503"):
            await connector.prepare()
    assert sendgrid_api.calls["GET /v3/marketing/lists"] == 3


async def test_bad_key_is_an_auth_error_that_never_shows_the_key(sendgrid_api) -> None:
    secret = "SG.wrong-key-that-must-not-leak"
    async with make(sendgrid_api, api_key=secret) as connector:
        with pytest.raises(ConnectorAuthError) as caught:
            await connector.prepare()
    assert "rejected the API key" in str(caught.value) and "api_key" in str(caught.value)
    assert secret not in str(caught.value) and "wrong-key" not in repr(caught.value.args)


async def test_key_without_marketing_scope_is_an_auth_error_naming_it(sendgrid_api) -> None:
    sendgrid_api.forbidden = True
    async with make(sendgrid_api) as connector:
        with pytest.raises(ConnectorAuthError, match="marketing.read"):
            await connector.prepare()


async def test_other_4xx_is_fatal_with_the_api_message(sendgrid_api) -> None:
    sendgrid_api.inject(
        "POST /v3/marketing/contacts/exports",
        400,
        body={"errors": [{"field": "list_ids", "message": "list is being deleted"}]},
    )
    async with make(sendgrid_api) as connector:
        with pytest.raises(FatalConnectorError, match="list_ids: list is being deleted"):
            await pull_all(connector)


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_export_file_over_the_cap_ends_the_pass_clearly_and_loses_nothing(
    sendgrid_api, tmp_path, streamed
) -> None:
    customers = sendgrid_api.add_list("Customers")
    sendgrid_api.add_contacts(2_000, list_id=customers)
    sendgrid_api.stream_files = streamed
    clock = PipelineClock()
    with Store(tmp_path / "state.db") as store:
        pipeline = Pipeline(store, FakeVerifier(clock, every_tenth_invalid), clock=clock)
        cap = {"max_export_file_bytes": 10_000}
        async with make(sendgrid_api, lists=["Customers"], **cap) as capped_sink:
            refused = await pipeline.run_pass(CrmConnector("sendgrid", capped_sink))
        cursor_after_refusal = store.cursor("sendgrid")
        async with make(sendgrid_api, lists=["Customers"]) as sink:
            report = await pipeline.run_pass(CrmConnector("sendgrid", sink))
    assert refused.outcome is RunOutcome.FATAL
    assert "larger than 10,000 bytes" in (refused.error or "")
    assert refused.counts.pulled == 0 and cursor_after_refusal is None
    assert sendgrid_api.export_requests[0]["max_file_size"] == 1  # MB: split the files for us
    assert report.ok and report.counts.pulled == report.counts.written == 2_000


# -- whole syncs -----------------------------------------------------------------------------


_KILLED_WRITER = """
import asyncio, json, os, signal, sys
from mailprobe.connectors.base import FieldUpdate
from mailprobe.connectors.sendgrid import SendGridConnector

async def main(base_url, path):
    updates = [FieldUpdate(u["id"], u["fields"], email=u["email"]) for u in json.load(open(path))]
    connector = SendGridConnector(
        "sendgrid", api_key=sys.argv[3], base_url=base_url, max_upsert_contacts=1000
    )
    submit = connector._submit

    async def submit_then_die(*args, **kwargs):
        jobs = await submit(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)  # after SendGrid took the upsert, before we knew
        return jobs

    connector._submit = submit_then_die
    await connector.push(updates)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_kill_9_after_an_upsert_then_restart_writes_each_contact_once(
    sendgrid_api, tmp_path: Path
) -> None:
    """A writer killed mid-push; the restart pulls, compares read-back values, writes the rest."""
    customers = sendgrid_api.add_list("Customers")
    sendgrid_api.add_contacts(3000, list_id=customers)
    async with make(sendgrid_api, lists=["Customers"]) as connector:
        await connector.prepare()
        contacts = contacts_of(await pull_all(connector))
    wanted = {c.external_id: values_for(c.email, mailprobe_score=95) for c in contacts}
    job = tmp_path / "updates.json"
    job.write_text(
        json.dumps(
            [
                {
                    "id": c.external_id,
                    "email": c.email,
                    "fields": _json_ready(wanted[c.external_id]),
                }
                for c in contacts
            ]
        )
    )
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, sendgrid_api.base_url, str(job), API_KEY],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr.decode()
    assert len(sendgrid_api.upserts) == 1  # one chunk reached SendGrid, then the process died

    async with make(sendgrid_api, lists=["Customers"]) as restarted:
        await restarted.prepare()
        pulled = contacts_of(await pull_all(restarted))
        todo = [c for c in pulled if needs_write(c, wanted[c.external_id])]
        report = await restarted.push(
            [FieldUpdate(c.external_id, wanted[c.external_id], email=c.email) for c in todo]
        )
        final = contacts_of(await pull_all(restarted))
    assert len(todo) == 2000 and len(report.written) == len(todo)
    written = Counter(row["email"] for upsert in sendgrid_api.upserts for row in upsert.contacts)
    assert len(written) == 3000 and set(written.values()) == {1}
    assert not any(needs_write(c, wanted[c.external_id]) for c in final)


def _json_ready(values: dict[str, FieldValue]) -> dict[str, object]:
    """Return values the subprocess can load: dates as ISO text, which it writes the same way."""
    return {k: v.isoformat() if isinstance(v, date) else v for k, v in values.items()}


# -- the pipeline end to end -------------------------------------------------------------------


def every_tenth_invalid(email: str) -> tuple[Status, Reason | None]:
    """person0, person10, … do not exist; the others are valid."""
    local = email.partition("@")[0].removeprefix("person")
    number = int(local) if local.isdigit() else 1
    return (Status.INVALID, Reason.MAILBOX_NOT_FOUND) if number % 10 == 0 else (Status.VALID, None)


def assert_fields_match_results(api: SendGridFake, emails: list[str], at: datetime) -> None:
    """Every contact holds exactly the fields of its result, as the sink formats them."""
    for email in emails:
        status, reason = every_tenth_invalid(email)
        values = field_values(make_result(email, status, reason, at=at), next_check=None)
        stored = {k: v for k, v in api.values(email).items()}
        shown = {name: read_back(value, KINDS[name]) for name, value in stored.items()}
        expected = {
            k: v for k, v in values.items() if v is not None and k != "mailprobe_next_check"
        }
        assert all(shows_value(shown.get(k), v) for k, v in expected.items()), email


KINDS = {spec.name: spec.kind for spec in FIELDS}


@pytest.mark.timeout(600)  # the store's per-result transactions dominate: about 2 minutes
async def test_pipeline_first_sync_of_50000_contacts_writes_each_once(
    sendgrid_api, tmp_path
) -> None:
    customers = sendgrid_api.add_list("Customers")
    sendgrid_api.add_contacts(50_000, list_id=customers)
    clock = PipelineClock()
    started = time.perf_counter()
    with Store(tmp_path / "state.db") as store:
        async with make(sendgrid_api, lists=["Customers"], invalid_list="Undeliverable") as sink:
            pipeline = Pipeline(store, FakeVerifier(clock, every_tenth_invalid), clock=clock)
            report = await pipeline.run_pass(CrmConnector("sendgrid", sink))
    elapsed = time.perf_counter() - started
    assert report.ok, report.error
    assert report.counts.pulled == report.counts.written == 50_000
    written = Counter(row["email"] for upsert in sendgrid_api.upserts for row in upsert.contacts)
    assert len(written) == 50_000 and set(written.values()) == {1}
    assert len(sendgrid_api.members(sink.invalid_list_id)) == 5_000
    emails = [f"person{n}@example.test" for n in (0, 1, 9, 10, 49_999)]
    assert_fields_match_results(sendgrid_api, emails, clock())
    calls = sum(sendgrid_api.calls.values())
    print(f"\npipeline: 50,000-contact SendGrid first sync: {calls} API calls, {elapsed:.1f}s")
    print(dict(sendgrid_api.calls))


async def test_pipeline_incremental_pass_writes_nothing_again(sendgrid_api, tmp_path) -> None:
    customers = sendgrid_api.add_list("Customers")
    sendgrid_api.add_contacts(2_000, list_id=customers)
    clock = PipelineClock()
    verifier = FakeVerifier(clock, every_tenth_invalid)
    with Store(tmp_path / "state.db") as store:
        async with make(sendgrid_api, lists=["Customers"]) as sink:
            pipeline = Pipeline(store, verifier, clock=clock)
            first = await pipeline.run_pass(CrmConnector("sendgrid", sink))
            upserts, verified = len(sendgrid_api.upserts), len(verifier.seen)
            clock.advance(minutes=15)
            second = await pipeline.run_pass(CrmConnector("sendgrid", sink))
            sendgrid_api.add_contact("newcomer@example.test", lists=(customers,))
            clock.advance(minutes=15)
            third = await pipeline.run_pass(CrmConnector("sendgrid", sink))
    assert first.ok and second.ok and third.ok
    assert first.counts.written == 2_000 and second.counts.written == 0
    assert len(sendgrid_api.upserts) == upserts + 1  # only the newcomer, in the third pass
    assert sendgrid_api.upserts[-1].contacts[0]["email"] == "newcomer@example.test"
    assert verifier.seen[verified:] == ["newcomer@example.test"]


_KILLED_PASS = """
import asyncio, os, signal, sys
from mailprobe.pipeline import CrmConnector, Pipeline
from mailprobe.store import Store
from mailprobe.connectors.sendgrid import SendGridConnector
from tests.fakes.pipeline import Clock, FakeVerifier
from tests.test_sendgrid import every_tenth_invalid

async def main(base_url, db, key):
    sink = SendGridConnector("sendgrid", api_key=key, base_url=base_url, lists=["Customers"],
                             poll_interval_s=0.01)
    sink.push_batch = 100  # small upserts, so the kill lands between two of them
    submit = sink._submit
    sent = 0

    async def submit_then_die(*args, **kwargs):
        nonlocal sent
        jobs = await submit(*args, **kwargs)
        sent += 1
        if sent == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # SendGrid has the upsert; the store does not
        return jobs

    sink._submit = submit_then_die
    clock = Clock()
    with Store(db) as store:
        await Pipeline(store, FakeVerifier(clock, every_tenth_invalid), clock=clock).run_pass(
            CrmConnector("sendgrid", sink)
        )

asyncio.run(main(*sys.argv[1:4]))
"""


async def test_pipeline_kill_9_mid_pass_then_restart_writes_each_contact_once(
    sendgrid_api, tmp_path
) -> None:
    customers = sendgrid_api.add_list("Customers")
    sendgrid_api.add_contacts(1_000, list_id=customers)
    db = tmp_path / "state.db"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_PASS, sendgrid_api.base_url, str(db), API_KEY],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr.decode()
    assert len(sendgrid_api.upserts) == 3  # batches of 100: 300 contacts reached SendGrid
    clock = PipelineClock()
    with Store(db) as store:
        async with make(sendgrid_api, lists=["Customers"]) as sink:
            report = await Pipeline(
                store, FakeVerifier(clock, every_tenth_invalid), clock=clock
            ).run_pass(CrmConnector("sendgrid", sink))
    assert report.ok, report.error
    emails = [f"person{n}@example.test" for n in range(1_000)]
    assert_fields_match_results(sendgrid_api, emails, clock())
    written = Counter(row["email"] for upsert in sendgrid_api.upserts for row in upsert.contacts)
    assert len(written) == 1_000 and set(written.values()) == {1}
