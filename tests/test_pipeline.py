"""The pipeline: CSV drop passes and CRM passes against a real store, scripted verifiers and
connectors, and one end-to-end pass through the real engine, DNS and SMTP on loopback."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from mailprobe.connectors.csvdrop import DropFolder
from mailprobe.connectors.errors import ConnectorAuthError
from mailprobe.engine import EngineSettings, Verifier
from mailprobe.engine.result import Reason, Status

from mailprobe.locks import pass_lock
from mailprobe.pipeline import (
    CrmConnector,
    Pipeline,
    capped,
    next_cursor,
)
from mailprobe.store import RunOutcome, Store
from tests.fakes.dns import DnsServer
from tests.fakes.pipeline import (
    Clock,
    FakeVerifier,
    Record,
    crm_with,
    csv_drop,
    drop_in,
    read_output,
)
from tests.fakes.results import NOW
from tests.fakes.smtp import ScriptedSmtp


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "state.db") as opened:
        yield opened


# -- CSV drop passes -------------------------------------------------------------------------


async def test_csv_pass_writes_every_row_in_order_with_its_fields(
    tmp_path: Path, store: Store, clock: Clock
) -> None:
    rows = [
        ("name", "Email"),
        ("Ann", "ann@x.test"),
        ("Bob", "bad@x.test"),
        ("Ann again", "ann@x.test"),
        ("Nobody", ""),
        ("Broken", "not-an-address"),
    ]
    drop_in(tmp_path, "people.csv", rows)
    verifier = FakeVerifier(clock)
    report = await Pipeline(store, verifier, clock=clock).run_pass(csv_drop(tmp_path))
    assert report.outcome is RunOutcome.OK
    out = read_output(tmp_path, "people.verified.csv")
    assert [r["name"] for r in out] == ["Ann", "Bob", "Ann again", "Nobody", "Broken"]
    assert [r["mailprobe_status"] for r in out] == ["valid", "invalid", "valid", "", "invalid"]
    assert out[3]["mailprobe_summary"] == "No address"  # an empty cell is not invalid_syntax
    assert out[0]["mailprobe_next_check"] == "2026-12-27"
    assert sorted(verifier.seen) == sorted(["ann@x.test", "bad@x.test", "not-an-address"])
    assert (tmp_path / "drop" / "archive" / "people.csv").exists()
    assert not (tmp_path / "drop" / "inbox" / "people.csv").exists()
    assert (report.counts.pulled, report.counts.verified, report.counts.written) == (5, 3, 5)


async def test_csv_file_without_email_column_moves_to_failed_with_the_reason(
    tmp_path: Path, store: Store, clock: Clock
) -> None:
    drop_in(tmp_path, "nope.csv", [("name", "phone"), ("Ann", "123")])
    report = await Pipeline(store, FakeVerifier(clock), clock=clock).run_pass(csv_drop(tmp_path))
    assert report.outcome is RunOutcome.OK
    note = tmp_path / "drop" / "failed" / "nope.csv.error.txt"
    assert "no email column" in note.read_text()
    assert store.status_summary().connectors[0].files == {"failed": 1}


async def test_csv_unsettled_file_waits_for_a_later_pass(
    tmp_path: Path, store: Store, clock: Clock
) -> None:
    drop_in(tmp_path, "fresh.csv", [("email",), ("a@x.test",)], age_s=0)
    await Pipeline(store, FakeVerifier(clock), clock=clock).run_pass(csv_drop(tmp_path))
    assert (tmp_path / "drop" / "inbox" / "fresh.csv").exists()


async def test_csv_second_file_reuses_fresh_results_without_verifying(
    tmp_path: Path, store: Store, clock: Clock
) -> None:
    verifier = FakeVerifier(clock)
    pipeline = Pipeline(store, verifier, clock=clock)
    drop_in(tmp_path, "one.csv", [("email",), ("a@x.test",), ("b@x.test",)])
    await pipeline.run_pass(csv_drop(tmp_path))
    drop_in(tmp_path, "two.csv", [("email",), ("b@x.test",), ("a@x.test",)])
    clock.advance(days=10)
    await pipeline.run_pass(csv_drop(tmp_path))
    assert sorted(verifier.seen) == ["a@x.test", "b@x.test"]
    assert [r["email"] for r in read_output(tmp_path, "two.verified.csv")] == [
        "b@x.test",
        "a@x.test",
    ]


async def test_csv_pass_stopped_mid_file_resumes_without_verifying_twice(
    tmp_path: Path, store: Store, clock: Clock
) -> None:
    emails = [f"user{i}@d{i % 3}.test" for i in range(30)]
    drop_in(tmp_path, "list.csv", [("email",), *((e,) for e in emails)])
    stop = threading.Event()
    first = FakeVerifier(clock)
    first.after_each = lambda count: stop.set() if count == 7 else None
    report = await Pipeline(store, first, stop=stop, clock=clock).run_pass(csv_drop(tmp_path))
    assert report.outcome is RunOutcome.STOPPED
    assert not (tmp_path / "drop" / "outbox" / "list.verified.csv").exists()
    second = FakeVerifier(clock)
    await Pipeline(store, second, clock=clock).run_pass(csv_drop(tmp_path))
    assert len(first.seen) == 7
    assert sorted(first.seen + second.seen) == sorted(emails)
    assert [r["email"] for r in read_output(tmp_path, "list.verified.csv")] == emails


async def test_csv_output_written_but_not_archived_is_archived_on_resume(
    tmp_path: Path, store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop_in(tmp_path, "list.csv", [("email",), ("a@x.test",)])
    verifier = FakeVerifier(clock)

    def crash(self: DropFolder, path: Path) -> Path:
        raise KeyboardInterrupt  # as if killed between the output and the archive

    monkeypatch.setattr(DropFolder, "archive", crash)
    with pytest.raises(KeyboardInterrupt):
        await Pipeline(store, verifier, clock=clock).run_pass(csv_drop(tmp_path))
    monkeypatch.undo()
    await Pipeline(store, verifier, clock=clock).run_pass(csv_drop(tmp_path))
    assert verifier.seen == ["a@x.test"]
    assert (tmp_path / "drop" / "archive" / "list.csv").exists()
    assert len(read_output(tmp_path, "list.verified.csv")) == 1


async def _peak_memory_of_a_pass(tmp_path: Path, rows: int) -> int:
    """Return tracemalloc's peak over one pass of a `rows`-row file of 300 distinct addresses."""
    drop_in(
        tmp_path,
        "big.csv",
        [("email", "n"), *((f"u{i % 300}@d{i % 7}.test", str(i)) for i in range(rows))],
    )
    clock = Clock()
    with Store(tmp_path / "state.db") as store:
        pipeline = Pipeline(store, FakeVerifier(clock), clock=clock)
        tracemalloc.start()
        try:
            report = await pipeline.run_pass(csv_drop(tmp_path))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert report.counts.written == rows
    return peak


async def test_csv_pass_streams_rows_in_bounded_memory(tmp_path: Path) -> None:
    small = await _peak_memory_of_a_pass(tmp_path / "small", 1_000)
    large = await _peak_memory_of_a_pass(tmp_path / "large", 6_000)
    # Keeping the 5,000 extra rows costs ~0.8 MB; streaming them costs next to nothing.
    assert large - small < 400_000, f"peak grew {(large - small) / 1e6:.2f} MB"


# -- CRM passes ------------------------------------------------------------------------------


async def test_crm_pass_verifies_new_contacts_and_writes_their_fields(
    store: Store, clock: Clock
) -> None:
    crm = crm_with(("1", "ann@x.test"), ("2", "bad@x.test"), ("3", None))
    verifier = FakeVerifier(clock)
    report = await Pipeline(store, verifier, clock=clock).run_pass(CrmConnector("crm", crm))
    assert report.outcome is RunOutcome.OK
    assert crm.records["1"].fields["mailprobe_status"] == "valid"
    assert crm.records["2"].fields["mailprobe_status"] == "invalid"
    assert crm.records["3"].fields == {}
    assert sorted(verifier.seen) == ["ann@x.test", "bad@x.test"]
    assert (report.counts.pulled, report.counts.written) == (3, 2)


async def test_crm_second_pass_writes_nothing_when_nothing_changed(
    store: Store, clock: Clock
) -> None:
    crm = crm_with(("1", "ann@x.test"), ("2", "bob@x.test"))
    pipeline = Pipeline(store, FakeVerifier(clock), clock=clock)
    await pipeline.run_pass(CrmConnector("crm", crm))
    pushes = len(crm.pushes)
    for record in crm.records.values():  # our write bumped their modification time
        record.updated_at = clock.now - timedelta(seconds=1)
    clock.advance(minutes=15)
    report = await pipeline.run_pass(CrmConnector("crm", crm))
    assert len(crm.pushes) == pushes
    assert report.counts.pulled == 2 and report.counts.written == 0


async def test_crm_contact_whose_address_changed_is_verified_and_rewritten(
    store: Store, clock: Clock
) -> None:
    crm = crm_with(("1", "ann@x.test"))
    verifier = FakeVerifier(clock)
    pipeline = Pipeline(store, verifier, clock=clock)
    await pipeline.run_pass(CrmConnector("crm", crm))
    clock.advance(minutes=15)
    crm.records["1"].email = "bad@x.test"
    crm.records["1"].updated_at = clock.now - timedelta(minutes=1)
    await pipeline.run_pass(CrmConnector("crm", crm))
    assert verifier.seen == ["ann@x.test", "bad@x.test"]
    assert crm.records["1"].fields["mailprobe_status"] == "invalid"
    assert crm.records["1"].fields["mailprobe_verified_email"] == "bad@x.test"


async def test_crm_values_already_at_the_source_are_not_written_again(
    store: Store, clock: Clock
) -> None:
    crm = crm_with(("1", "ann@x.test"))
    await Pipeline(store, FakeVerifier(clock), clock=clock).run_pass(CrmConnector("crm", crm))
    written = dict(crm.records["1"].fields)
    # A new store (lost state) sees the CRM already holding every value: nothing to write.
    with Store(store.path.with_name("other.db")) as fresh:
        crm.pushes.clear()
        await Pipeline(fresh, FakeVerifier(clock), clock=clock).run_pass(CrmConnector("crm", crm))
    assert crm.records["1"].fields == written
    assert crm.pushed_fields() == []


async def test_unknown_never_overwrites_valid_in_the_crm(store: Store, clock: Clock) -> None:
    crm = crm_with(("1", "ann@x.test"))
    answers = {"ann@x.test": (Status.VALID, None)}
    verifier = FakeVerifier(clock, lambda email: answers[email])
    pipeline = Pipeline(store, verifier, clock=clock)
    await pipeline.run_pass(CrmConnector("crm", crm))
    answers["ann@x.test"] = (Status.UNKNOWN, Reason.TIMEOUT)
    crm.pushes.clear()
    clock.advance(days=31)
    await pipeline.run_pass(CrmConnector("crm", crm))
    assert verifier.seen == ["ann@x.test", "ann@x.test"]
    assert crm.records["1"].fields["mailprobe_status"] == "valid"
    assert all("mailprobe_status" not in pushed for pushed in crm.pushed_fields())
    assert crm.records["1"].fields["mailprobe_next_check"] == "2026-12-28"


async def test_greylisted_contact_is_written_then_retried_later_without_blocking(
    store: Store, clock: Clock
) -> None:
    crm = crm_with(("1", "grey@x.test"), ("2", "ann@x.test"))
    answers = {
        "grey@x.test": (Status.UNKNOWN, Reason.GREYLISTED),
        "ann@x.test": (Status.VALID, None),
    }
    verifier = FakeVerifier(clock, lambda email: answers[email])
    pipeline = Pipeline(store, verifier, clock=clock)
    await pipeline.run_pass(CrmConnector("crm", crm))
    assert crm.records["1"].fields["mailprobe_action"] == "retry"
    assert crm.records["2"].fields["mailprobe_status"] == "valid"
    await pipeline.run_pass(CrmConnector("crm", crm), retry_only=True)
    assert verifier.seen.count("grey@x.test") == 1  # not yet due
    answers["grey@x.test"] = (Status.VALID, None)
    clock.advance(minutes=16)
    await pipeline.run_pass(CrmConnector("crm", crm), retry_only=True)
    assert verifier.seen.count("grey@x.test") == 2
    assert crm.records["1"].fields["mailprobe_status"] == "valid"


async def test_sorted_source_cursor_advances_per_page_and_stops_at_the_signpost(
    store: Store, clock: Clock
) -> None:
    crm = crm_with(("1", "a@x.test"), ("2", "b@x.test"), ("3", "c@x.test"))
    crm.records["4"] = Record("late@x.test", NOW + timedelta(minutes=5))  # after the signpost
    crm.fail_after_pages = 1
    report = await Pipeline(store, FakeVerifier(clock), clock=clock).run_pass(
        CrmConnector("crm", crm)
    )
    assert report.outcome is RunOutcome.FAILED and "503" in (report.error or "")
    assert store.cursor("crm") == "2026-11-27T10:01:00Z"  # the first page's last record
    crm.fail_after_pages = None
    await Pipeline(store, FakeVerifier(clock), clock=clock).run_pass(CrmConnector("crm", crm))
    assert crm.pull_calls[-1] == "2026-11-27T10:01:00Z"
    assert store.cursor("crm") == "2026-11-27T10:02:00Z"
    assert "mailprobe_status" not in crm.records["4"].fields


async def test_unsorted_source_cursor_moves_only_after_the_whole_pull(
    store: Store, clock: Clock
) -> None:
    crm = crm_with(("1", "a@x.test"), ("2", "b@x.test"), ("3", "c@x.test"), is_sorted=False)
    crm.fail_after_pages = 1
    await Pipeline(store, FakeVerifier(clock), clock=clock).run_pass(CrmConnector("crm", crm))
    assert store.cursor("crm") is None
    crm.fail_after_pages = None
    await Pipeline(store, FakeVerifier(clock), clock=clock).run_pass(CrmConnector("crm", crm))
    assert store.cursor("crm") == "2026-11-27T10:02:00Z"  # newest seen, before the signpost


async def test_gone_records_are_retired_and_refused_writes_retried_later(
    store: Store, clock: Clock
) -> None:
    crm = crm_with(("1", "a@x.test"), ("2", "b@x.test"), ("3", "c@x.test"))
    crm.gone, crm.refuse = {"2"}, {"3"}
    pipeline = Pipeline(store, FakeVerifier(clock), clock=clock)
    report = await pipeline.run_pass(CrmConnector("crm", crm))
    assert (report.counts.written, report.counts.failed) == (1, 1)
    crm.refuse.clear()
    crm.pushes.clear()
    clock.advance(minutes=16)
    await pipeline.run_pass(CrmConnector("crm", crm), retry_only=True)
    assert [u.external_id for batch in crm.pushes for u in batch] == ["3"]


async def test_bad_token_is_a_fatal_pass_reported_not_raised(store: Store, clock: Clock) -> None:
    crm = crm_with(("1", "a@x.test"))
    crm.prepare_error = ConnectorAuthError("crm", "the token was refused (401)")
    report = await Pipeline(store, FakeVerifier(clock), clock=clock).run_pass(
        CrmConnector("crm", crm)
    )
    assert report.outcome is RunOutcome.FATAL and "401" in (report.error or "")
    [status] = store.status_summary().connectors
    assert status.last_outcome is RunOutcome.FATAL


# -- pure helpers ----------------------------------------------------------------------------


def test_cursor_stops_at_signpost() -> None:
    assert capped("2026-11-27T13:00:00Z", signpost=NOW) == "2026-11-27T12:00:00Z"
    assert capped("2026-11-27T11:00:00.123Z", signpost=NOW) == "2026-11-27T11:00:00.123Z"
    assert capped("opaque-token", signpost=NOW) == "opaque-token"


def test_unsorted_cursor_is_the_newest_seen_or_the_signpost_on_a_first_empty_pass() -> None:
    newest = NOW - timedelta(hours=1)
    assert next_cursor(None, newest, signpost=NOW) == "2026-11-27T11:00:00Z"
    assert next_cursor("x", NOW + timedelta(hours=1), signpost=NOW) == "2026-11-27T12:00:00Z"
    assert next_cursor(None, None, signpost=NOW) == "2026-11-27T12:00:00Z"
    assert next_cursor("2026-01-01T00:00:00Z", None, signpost=NOW) is None


# -- end to end: the real engine, DNS and SMTP on loopback -----------------------------------


async def test_csv_pass_through_the_real_engine(
    tmp_path: Path, store: Store, dns_server: DnsServer, smtp_server: Callable[..., object]
) -> None:
    smtp: ScriptedSmtp = await smtp_server(
        host="127.0.0.2", mailboxes={"ann@acme.test", "bob@acme.test"}
    )  # type: ignore[misc]
    dns_server.add_mx("acme.test", 10, "mx.acme.test")
    dns_server.add("mx.acme.test", "A", "127.0.0.2")
    settings = EngineSettings(
        helo_hostname="probe.test",
        dns=dns_server.dns_settings(),
        smtp={"port": smtp.port, "allowed_private_networks": ["127.0.0.0/8"]},
        syntax={"allow_test_domains": True},
    )
    rows = [
        ("email",),
        ("ann@acme.test",),
        ("nobody@acme.test",),
        ("x@nowhere.test",),
        ("Bob@ACME.test",),
        ("not an address",),
        ("ann@acme.test",),
    ]
    drop_in(tmp_path, "real.csv", rows)
    async with Verifier(settings) as verifier:
        report = await Pipeline(store, verifier).run_pass(csv_drop(tmp_path))
    assert report.outcome is RunOutcome.OK, report.error
    out = read_output(tmp_path, "real.verified.csv")
    assert [(r["email"], r["mailprobe_status"], r["mailprobe_reason"]) for r in out] == [
        ("ann@acme.test", "valid", "accepted"),
        ("nobody@acme.test", "invalid", "mailbox_not_found"),
        ("x@nowhere.test", "invalid", "domain_not_found"),
        ("Bob@ACME.test", "valid", "accepted"),
        ("not an address", "invalid", "invalid_syntax"),
        ("ann@acme.test", "valid", "accepted"),
    ]
    assert "DATA" not in smtp.commands
    rcpts = [line for line in smtp.lines if line.upper().startswith("RCPT")]
    assert sum("ann@acme.test" in line for line in rcpts) == 1


# -- one pass per connector across processes ------------------------------------------------


async def test_pass_is_skipped_while_another_process_holds_the_connectors_lock(
    tmp_path: Path, store: Store, clock: Clock
) -> None:
    drop_in(tmp_path, "people.csv", [("email",), ("ann@x.test",)])
    verifier = FakeVerifier(clock)
    with pass_lock(store.path, "drop"):  # as `mailprobe run` would hold it
        report = await Pipeline(store, verifier, clock=clock).run_pass(csv_drop(tmp_path))
    assert report.outcome is RunOutcome.FAILED
    assert "another mailprobe process" in (report.error or "")
    assert verifier.seen == []
    assert (tmp_path / "drop" / "inbox" / "people.csv").exists()
    again = await Pipeline(store, verifier, clock=clock).run_pass(csv_drop(tmp_path))
    assert again.outcome is RunOutcome.OK


async def test_pass_left_running_by_a_dead_process_is_marked_interrupted(
    tmp_path: Path, store: Store, clock: Clock
) -> None:
    store.start_run("drop", kind="pass", now=clock())  # the process died before finishing it
    await Pipeline(store, FakeVerifier(clock), clock=clock).run_pass(csv_drop(tmp_path))
    outcomes = [row[0] for row in store.db.conn.execute("SELECT outcome FROM runs ORDER BY id")]
    assert outcomes == ["interrupted", "ok"]
