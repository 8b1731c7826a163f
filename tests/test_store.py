"""The SQLite store, its migrations and the freshness rules: a fresh database under tmp_path."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from mailprobe.connectors.base import Contact
from mailprobe.engine.result import Action, Reason, Status, VerificationResult
from sqlite_utils import Database

from mailprobe.errors import StoreError
from mailprobe.freshness import Cached, Freshness
from mailprobe.migrations import KNOWN, migrations
from mailprobe.settings import PolicySettings
from mailprobe.store import (
    ContactState,
    CsvFileState,
    RunCounts,
    RunOutcome,
    Store,
)
from tests.fakes.results import NOW, make_result


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "state.db") as opened:
        yield opened


# -- migrations ------------------------------------------------------------------------------


def test_new_store_applies_every_known_migration(store: Store) -> None:
    assert store.schema() == KNOWN
    assert {
        "contacts",
        "results",
        "emails",
        "queue",
        "cursors",
        "runs",
        "domains",
        "csv_files",
    } <= set(store.db.table_names())


def test_known_names_every_registered_migration_in_order(tmp_path: Path) -> None:
    db = Database(tmp_path / "empty.db")
    assert tuple(m.name for m in migrations.pending(db)) == KNOWN


def test_store_of_an_older_schema_is_migrated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = Database(path)
    migrations.apply(old, stop_before="m002_domains")
    old.execute(
        "INSERT INTO cursors (connector, name, value, updated_at) VALUES ('crm', 'updated_at',"
        " '2026-01-01T00:00:00Z', '2026-01-01T00:00:00.000000Z')"
    )
    old.close()
    with Store(path) as store:
        assert store.schema() == KNOWN
        assert "domains" in store.db.table_names()
        assert store.cursor("crm") == "2026-01-01T00:00:00Z"


def test_store_written_by_a_newer_mailprobe_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    Store(path).close()
    db = Database(path)
    db["_sqlite_migrations"].insert(
        {"migration_set": "mailprobe", "name": "m999_future", "applied_at": "2030"}
    )
    db.close()
    with pytest.raises(StoreError, match="newer mailprobe"):
        Store(path)


def test_garbage_file_is_a_clear_store_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not SQLite at all\x00" * 200)
    with pytest.raises(StoreError) as caught:
        Store(path)
    assert "is not a mailprobe store" in str(caught.value)
    assert str(path) in str(caught.value)


def test_other_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    Database(path)["songs"].insert({"title": "x"})
    with pytest.raises(StoreError, match="not a mailprobe store"):
        Store(path)


def test_store_locked_by_another_connection_is_a_clear_store_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    Store(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked by another process"):
            Store(path, busy_timeout_s=0.1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_write_on_a_store_locked_later_is_a_store_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "later.db", busy_timeout_s=0.1)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked"):
            store.save_result(make_result("a@x.test"), now=NOW)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        store.close()


def test_store_in_an_unwritable_place_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create its folder"):
        Store(blocker / "sub" / "state.db")


# -- the result cache ------------------------------------------------------------------------


def test_saved_result_is_fresh_until_it_expires(store: Store) -> None:
    store.save_result(make_result("John@Example.test"), now=NOW)
    found = store.fresh_result("John@Example.test", now=NOW + timedelta(days=29))
    assert found is not None and found.status is Status.VALID
    assert store.fresh_result("John@Example.test", now=NOW + timedelta(days=31)) is None


def test_invalid_result_lives_ninety_days(store: Store) -> None:
    store.save_result(make_result("gone@x.test", Status.INVALID), now=NOW)
    assert store.fresh_result("gone@x.test", now=NOW + timedelta(days=89)) is not None
    assert store.fresh_result("gone@x.test", now=NOW + timedelta(days=91)) is None


def test_result_round_trips_through_the_store(store: Store) -> None:
    result = make_result("a@x.test", Status.CATCH_ALL, catch_all=True)
    store.save_result(result, now=NOW)
    cached = store.cached("a@x.test")
    assert cached is not None and cached.result == result


def test_raw_address_finds_the_result_of_its_normalised_form(store: Store) -> None:
    store.save_result(make_result("  a@x.test "), now=NOW)
    assert store.fresh_result("  a@x.test ", now=NOW) is not None
    assert store.fresh_result("a@x.test", now=NOW) is not None


def test_unknown_never_overwrites_a_valid_answer(store: Store) -> None:
    store.save_result(make_result("a@x.test", Status.VALID), now=NOW)
    later = NOW + timedelta(days=40)
    unknown = make_result("a@x.test", Status.UNKNOWN, Reason.TIMEOUT, at=later)
    decision = store.save_result(unknown, now=later)
    cached = store.cached("a@x.test")
    assert decision.kept_previous
    assert cached is not None and cached.result.status is Status.VALID
    assert cached.attempts == 1
    assert cached.expires_at == later + timedelta(minutes=15)


def test_unknown_replaces_an_earlier_unknown_and_counts_attempts(store: Store) -> None:
    store.save_result(make_result("a@x.test", Status.UNKNOWN), now=NOW)
    store.save_result(make_result("a@x.test", Status.UNKNOWN), now=NOW)
    cached = store.cached("a@x.test")
    assert cached is not None and cached.attempts == 2
    assert cached.expires_at == NOW + timedelta(minutes=30)


def test_internal_error_is_stored_but_never_fresh(store: Store) -> None:
    store.save_result(make_result("a@x.test", Status.UNKNOWN, Reason.INTERNAL_ERROR), now=NOW)
    assert store.cached("a@x.test") is not None
    assert store.fresh_result("a@x.test", now=NOW) is None


def test_domain_facts_are_learnt_from_smtp_checks(store: Store) -> None:
    store.save_result(make_result("a@acme.test", catch_all=True, mx_host="mx1.acme.test"), now=NOW)
    facts = store.domain_facts("ACME.test")
    assert facts is not None
    assert facts["mx_host"] == "mx1.acme.test" and facts["catch_all"] is True


# -- the queue -------------------------------------------------------------------------------


def test_queue_skips_fresh_addresses_and_duplicates(store: Store) -> None:
    store.save_result(make_result("known@x.test"), now=NOW)
    queued = store.queue_emails("drop", ["known@x.test", "new@x.test", "new@x.test"], now=NOW)
    assert queued == 1
    assert store.queued_count("drop") == 1


def test_queue_takes_expired_addresses_again(store: Store) -> None:
    store.save_result(make_result("old@x.test"), now=NOW - timedelta(days=31))
    assert store.queue_emails("drop", ["old@x.test"], now=NOW) == 1


def test_take_due_pages_in_domain_order(store: Store) -> None:
    emails = ["b@zeta.test", "a@alpha.test", "c@alpha.test", "d@mid.test"]
    store.queue_emails("drop", emails, now=NOW)
    first, after = store.take_due("drop", after=None, limit=2, now=NOW)
    second, after2 = store.take_due("drop", after=after, limit=2, now=NOW)
    _, end = store.take_due("drop", after=after2, limit=2, now=NOW)
    assert [q.email for q in first + second] == [
        "a@alpha.test",
        "c@alpha.test",
        "d@mid.test",
        "b@zeta.test",
    ]
    assert end is None


def test_take_due_drops_addresses_answered_meanwhile(store: Store) -> None:
    store.queue_emails("drop", ["a@x.test", "b@x.test"], now=NOW)
    store.queue_emails("crm", ["a@x.test"], now=NOW)
    store.save_result(make_result("a@x.test"), now=NOW)  # leaves every connector's queue
    store.queue_emails("late", ["b@x.test"], now=NOW)
    store.db.execute(  # an answer that arrived through another raw form
        "INSERT INTO emails (email, normalized) VALUES ('b@x.test', 'b@x.test')"
    )
    store.save_result(make_result("b@x.test"), now=NOW)
    due, after = store.take_due("drop", after=None, limit=10, now=NOW)
    assert due == [] and after is None
    assert store.queued_count("crm") == 0


def test_saving_a_result_takes_it_out_of_the_queue(store: Store) -> None:
    store.queue_emails("drop", ["a@x.test", "b@x.test"], now=NOW)
    store.save_result(make_result("a@x.test"), now=NOW)
    due, _ = store.take_due("drop", after=None, limit=10, now=NOW)
    assert [q.email for q in due] == ["b@x.test"]


# -- contacts --------------------------------------------------------------------------------


def _contact(external_id: str, email: str | None, **fields: str) -> Contact:
    return Contact(external_id, email, NOW - timedelta(hours=1), fields)


def _states(store: Store, connector: str = "crm") -> dict[str, str]:
    rows = store.db.execute(
        "SELECT external_id, state FROM contacts WHERE connector = ?", [connector]
    ).fetchall()
    return dict(rows)


def test_page_queues_new_addresses_and_reuses_fresh_answers(store: Store) -> None:
    store.save_result(make_result("known@x.test"), now=NOW)
    counts = store.record_page(
        "crm",
        [_contact("1", "known@x.test"), _contact("2", "new@x.test"), _contact("3", None)],
        now=NOW,
    )
    assert counts.stored == 3 and counts.queued == 1
    assert _states(store) == {
        "1": ContactState.TO_WRITE,
        "2": ContactState.QUEUED,
        "3": ContactState.NO_EMAIL,
    }


def test_page_queues_a_changed_address_but_not_an_unchanged_one(store: Store) -> None:
    store.record_page("crm", [_contact("1", "a@x.test"), _contact("2", "b@x.test")], now=NOW)
    store.save_result(make_result("a@x.test"), now=NOW)
    store.save_result(make_result("b@x.test"), now=NOW)
    counts = store.record_page(
        "crm", [_contact("1", "a@x.test"), _contact("2", "b2@x.test")], now=NOW
    )
    assert counts.queued == 1
    due, _ = store.take_due("crm", after=None, limit=10, now=NOW)
    assert [q.email for q in due] == ["b2@x.test"]


def test_page_and_its_cursor_are_one_transaction(store: Store) -> None:
    broken = Contact(None, "x@x.test")  # type: ignore[arg-type]  # NOT NULL fails mid-page
    with pytest.raises(StoreError):
        store.record_page(
            "crm", [_contact("1", "a@x.test"), broken], cursor="2026-11-27T11:00:00Z", now=NOW
        )
    assert store.cursor("crm") is None
    assert _states(store) == {}


def test_page_moves_the_cursor_with_its_contacts(store: Store) -> None:
    store.record_page("crm", [_contact("1", "a@x.test")], cursor="2026-11-27T11:00:00Z", now=NOW)
    assert store.cursor("crm") == "2026-11-27T11:00:00Z"


def test_retired_ids_in_a_page_are_never_written(store: Store) -> None:
    store.record_page("crm", [_contact("1", "a@x.test")], now=NOW)
    store.record_page("crm", [], retired=["1"], now=NOW)
    store.save_result(make_result("a@x.test"), now=NOW)
    assert store.contacts_to_write("crm", now=NOW) == []


def test_enqueue_expired_takes_only_live_contacts_without_a_fresh_answer(store: Store) -> None:
    store.record_page(
        "crm",
        [_contact("1", "fresh@x.test"), _contact("2", "old@x.test"), _contact("3", "gone@x.test")],
        now=NOW - timedelta(days=40),
    )
    for email in ("fresh@x.test", "old@x.test", "gone@x.test"):
        store.save_result(make_result(email), now=NOW - timedelta(days=40))
    store.save_result(make_result("fresh@x.test"), now=NOW)
    store.retire("crm", ["3"])
    assert store.enqueue_expired("crm", now=NOW) == 1
    due, _ = store.take_due("crm", after=None, limit=10, now=NOW)
    assert [q.email for q in due] == ["old@x.test"]


def test_contact_to_write_carries_result_written_and_source_values(store: Store) -> None:
    store.record_page("crm", [_contact("1", "a@x.test", mailprobe_status="valid")], now=NOW)
    store.save_result(make_result("a@x.test"), now=NOW)
    [contact] = store.contacts_to_write("crm", now=NOW)
    assert contact.external_id == "1" and contact.result.status is Status.VALID
    assert contact.source == {"mailprobe_status": "valid"}
    assert contact.written == {}
    store.mark_written("crm", {"1": {"mailprobe_status": "valid"}})
    assert store.contacts_to_write("crm", now=NOW) == []
    store.save_result(make_result("a@x.test", Status.INVALID), now=NOW)
    [again] = store.contacts_to_write("crm", now=NOW)
    assert again.written == {"mailprobe_status": "valid"}


def test_failed_write_waits_before_the_next_attempt(store: Store) -> None:
    store.record_page("crm", [_contact("1", "a@x.test")], now=NOW)
    store.save_result(make_result("a@x.test"), now=NOW)
    store.mark_write_failed("crm", ["1"], retry_at=NOW + timedelta(minutes=15))
    assert store.contacts_to_write("crm", now=NOW) == []
    [contact] = store.contacts_to_write("crm", now=NOW + timedelta(minutes=16))
    assert contact.attempts == 1


def test_source_showing_new_fields_rechecks_a_written_contact(store: Store) -> None:
    store.record_page("crm", [_contact("1", "a@x.test")], now=NOW)
    store.save_result(make_result("a@x.test"), now=NOW)
    store.mark_written("crm", {"1": {"mailprobe_status": "valid"}})
    store.record_page("crm", [_contact("1", "a@x.test", mailprobe_status="")], now=NOW)
    assert _states(store) == {"1": ContactState.TO_WRITE}


# -- drop-folder files and runs --------------------------------------------------------------


def test_unfinished_file_is_resumed_and_a_finished_one_starts_anew(store: Store) -> None:
    first = store.take_csv_file("drop", "list.csv", size=100, now=NOW)
    store.set_csv_file(first.id, CsvFileState.QUEUED, rows=10, queued=4, now=NOW)
    resumed = store.take_csv_file("drop", "list.csv", size=100, now=NOW)
    assert resumed.id == first.id and resumed.state is CsvFileState.QUEUED and resumed.rows == 10
    store.set_csv_file(first.id, CsvFileState.DONE, now=NOW)
    again = store.take_csv_file("drop", "list.csv", size=100, now=NOW)
    assert again.id != first.id and again.state is CsvFileState.TAKEN


def test_unfinished_file_replaced_by_another_size_starts_over(store: Store) -> None:
    first = store.take_csv_file("drop", "list.csv", size=100, now=NOW)
    second = store.take_csv_file("drop", "list.csv", size=200, now=NOW)
    assert second.id != first.id
    row = store.db.execute("SELECT state FROM csv_files WHERE id = ?", [first.id]).fetchone()
    assert row[0] == CsvFileState.FAILED


def test_status_summary_reports_passes_queue_and_totals(store: Store) -> None:
    run = store.start_run("crm", now=NOW)
    store.finish_run(
        run,
        outcome=RunOutcome.FATAL,
        counts=RunCounts(verified=3, written=2),
        error="bad token",
        now=NOW,
    )
    store.queue_emails("drop", ["a@x.test"], now=NOW)
    store.save_result(make_result("v@x.test"), now=NOW)
    store.save_result(make_result("i@x.test", Status.INVALID), now=NOW)
    summary = store.status_summary(["drop", "crm", "idle"])
    by_name = {c.connector: c for c in summary.connectors}
    assert by_name["crm"].last_outcome is RunOutcome.FATAL
    assert by_name["crm"].last_error == "bad token"
    assert (by_name["crm"].verified, by_name["crm"].written, by_name["crm"].errors) == (3, 2, 1)
    assert by_name["drop"].queued == 1
    assert by_name["idle"].last_started is None
    assert summary.results_by_status == {"valid": 1, "invalid": 1}


def test_runs_left_running_by_a_dead_process_become_interrupted(store: Store) -> None:
    store.start_run("drop", now=NOW)
    assert store.interrupt_runs(["drop"], now=NOW) == 1
    [item] = store.status_summary().connectors
    assert item.last_outcome is RunOutcome.INTERRUPTED


# -- freshness rules (pure) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "minutes"),
    [(1, 15), (2, 30), (3, 60), (4, 120), (7, 960), (8, 1440), (20, 1440)],
)
def test_unknown_back_off_doubles_from_15_minutes_to_24_hours(attempts: int, minutes: int) -> None:
    assert Freshness(PolicySettings()).backoff(attempts) == timedelta(minutes=minutes)


def _decide(
    result: VerificationResult, previous: Cached | None = None, **policy: object
) -> tuple[VerificationResult, timedelta, int, bool]:
    freshness = Freshness(PolicySettings(**policy), greylist_retry_s=240)
    decision = freshness.decide(previous, result, now=NOW)
    return decision.result, decision.expires_at - NOW, decision.attempts, decision.kept_previous


@pytest.mark.parametrize(
    ("status", "reason", "days"),
    [
        (Status.VALID, Reason.ACCEPTED, 30),
        (Status.CATCH_ALL, Reason.ACCEPT_ALL, 30),
        (Status.RISKY, Reason.DISPOSABLE, 30),
        (Status.INVALID, Reason.MAILBOX_NOT_FOUND, 90),
    ],
)
def test_definite_answers_live_their_freshness_days(
    status: Status, reason: Reason, days: int
) -> None:
    _, life, attempts, _ = _decide(make_result("a@x.test", status, reason))
    assert life == timedelta(days=days) and attempts == 0


def test_greylisted_is_retried_after_the_greylist_delay() -> None:
    _, life, attempts, _ = _decide(make_result("a@x.test", Status.UNKNOWN, Reason.GREYLISTED))
    assert life == timedelta(seconds=240) and attempts == 1


def test_greylisted_is_retried_after_the_servers_own_delay_when_it_named_one() -> None:
    result = make_result("a@x.test", Status.UNKNOWN, Reason.GREYLISTED)
    _, life, _, _ = _decide(dataclasses.replace(result, retry_after_s=600))
    assert life == timedelta(seconds=600)


def test_rate_limited_is_retried_when_the_hosts_window_reopens() -> None:
    result = make_result("a@x.test", Status.UNKNOWN, Reason.RATE_LIMITED)
    _, life, _, _ = _decide(dataclasses.replace(result, retry_after_s=42))
    assert life == timedelta(seconds=42)  # not the 15-minute blind back-off


def test_unverifiable_provider_waits_the_longest_back_off() -> None:
    result = make_result("a@x.test", Status.UNKNOWN, Reason.UNVERIFIABLE_PROVIDER)
    assert _decide(result)[1] == timedelta(hours=24)


def test_internal_error_expires_at_once() -> None:
    result = make_result("a@x.test", Status.UNKNOWN, Reason.INTERNAL_ERROR)
    assert _decide(result)[1] == timedelta(0)


def test_unknowns_stop_retrying_after_max_attempts_with_action_caution() -> None:
    previous = Cached(make_result("a@x.test", Status.UNKNOWN), NOW, attempts=2)
    kept, life, attempts, _ = _decide(
        make_result("a@x.test", Status.UNKNOWN), previous, unknown_max_attempts=3
    )
    assert attempts == 3 and kept.action is Action.CAUTION and life == timedelta(days=30)


def test_unknown_after_invalid_keeps_invalid_and_schedules_a_retry() -> None:
    previous = Cached(make_result("a@x.test", Status.INVALID), NOW, attempts=0)
    kept, life, attempts, was_kept = _decide(make_result("a@x.test", Status.UNKNOWN), previous)
    assert kept.status is Status.INVALID and was_kept
    assert (life, attempts) == (timedelta(minutes=15), 1)


def test_unknown_after_catch_all_replaces_it() -> None:
    previous = Cached(make_result("a@x.test", Status.CATCH_ALL), NOW, attempts=0)
    kept, _, _, was_kept = _decide(make_result("a@x.test", Status.UNKNOWN), previous)
    assert kept.status is Status.UNKNOWN and not was_kept


def test_check_writable_fails_while_another_connection_writes(tmp_path: Path) -> None:
    store = Store(tmp_path / "w.db", busy_timeout_s=0.1)
    store.check_writable()
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="locked"):
            store.check_writable()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        store.close()
