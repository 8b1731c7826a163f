"""The daemon in-process: its jobs, a failing connector beside a working one, a clean stop."""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from mailprobe.connectors.errors import ConnectorAuthError

from mailprobe.daemon import RETRY_JOB_ID, Daemon, sync_once, trigger_for
from mailprobe.errors import ConfigError, StoreError
from mailprobe.pipeline import CrmConnector
from mailprobe.settings import AppSettings
from mailprobe.store import RunOutcome, Store
from mailprobe.store_async import SQLiteAsyncStore
from mailprobe.wiring import backfill_since, build_connectors, start_listeners
from tests.fakes.pipeline import Clock, FakeCrm, FakeVerifier, Passes, crm_with, drop_in

#: Long enough that no second scheduled pass happens during a test.
HOURLY = "1h"


def settings_for(tmp_path: Path, **connectors: dict[str, object]) -> AppSettings:
    return AppSettings(store={"path": tmp_path / "state.db"}, connectors=connectors)


def drop_settings(tmp_path: Path, **extra: object) -> dict[str, object]:
    return {"type": "csv", "folder": tmp_path / "drop", "schedule": HOURLY, **extra}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "state.db") as opened:
        yield opened


def test_interval_schedule_is_an_interval_trigger_and_cron_a_cron_trigger() -> None:
    assert isinstance(trigger_for("15m"), IntervalTrigger)
    assert trigger_for("15m").interval.total_seconds() == 900
    assert isinstance(trigger_for("*/5 * * * *"), CronTrigger)


async def test_each_enabled_connector_gets_one_job_that_never_overlaps(
    tmp_path: Path, store: Store
) -> None:
    settings = settings_for(
        tmp_path,
        drop=drop_settings(tmp_path),
        nightly=drop_settings(tmp_path / "n", schedule="0 3 * * *"),
        off=drop_settings(tmp_path / "o", enabled=False),
    )
    connectors = build_connectors(settings)
    connectors["crm"] = CrmConnector("crm", crm_with())
    settings.connectors["crm"] = settings.connectors["drop"]
    daemon = Daemon(settings, store=store, connectors=connectors, verifier=FakeVerifier(Clock()))
    scheduler = daemon._schedule()
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {"drop", "nightly", "crm", RETRY_JOB_ID}
    for job in jobs.values():
        assert (job.max_instances, job.coalesce) == (1, True)
    assert isinstance(jobs["nightly"].trigger, CronTrigger)
    assert isinstance(jobs["drop"].trigger, IntervalTrigger)


async def test_daemon_runs_each_connector_then_stops_cleanly_on_request(
    tmp_path: Path, store: Store
) -> None:
    settings = settings_for(tmp_path, drop=drop_settings(tmp_path))
    drop_in(tmp_path, "list.csv", [("email",), ("a@x.test",), ("b@x.test",)])
    passes = Passes()
    daemon = Daemon(
        settings,
        store=store,
        connectors=build_connectors(settings),
        verifier=FakeVerifier(Clock()),
        on_pass=passes,
    )
    running = asyncio.create_task(daemon.run())
    await passes.wait_for(lambda reports: len(reports) >= 1)
    daemon.request_stop()
    await asyncio.wait_for(running, 10)
    assert passes.reports[0].outcome is RunOutcome.OK
    assert (tmp_path / "drop" / "outbox" / "list.verified.csv").exists()
    assert (tmp_path / "drop" / "archive" / "list.csv").exists()


async def test_failing_connector_is_recorded_paused_and_others_go_on(
    tmp_path: Path, store: Store
) -> None:
    settings = settings_for(tmp_path, drop=drop_settings(tmp_path))
    drop_in(tmp_path, "list.csv", [("email",), ("a@x.test",)])
    crm = crm_with(("1", "c@x.test"))
    crm.prepare_error = ConnectorAuthError("crm", "HubSpot refused the token (401)")
    connectors = {"crm": CrmConnector("crm", crm), **build_connectors(settings)}
    settings.connectors["crm"] = settings.connectors["drop"]  # only its schedule is read
    passes = Passes()
    daemon = Daemon(
        settings,
        store=store,
        connectors=connectors,
        verifier=FakeVerifier(Clock()),
        on_pass=passes,
    )
    running = asyncio.create_task(daemon.run())
    await passes.wait_for(lambda reports: {r.connector for r in reports} == {"crm", "drop"})
    assert daemon.scheduler is not None
    crm_job = daemon.scheduler.get_job("crm")
    daemon.request_stop()
    await asyncio.wait_for(running, 10)
    outcomes = {r.connector: r.outcome for r in passes.reports}
    assert outcomes == {"crm": RunOutcome.FATAL, "drop": RunOutcome.OK}
    assert crm_job is not None and crm_job.next_run_time is None  # paused
    assert "crm" in daemon.paused
    by_name = {c.connector: c for c in store.status_summary().connectors}
    assert by_name["crm"].last_outcome is RunOutcome.FATAL
    assert "401" in (by_name["crm"].last_error or "")
    assert (tmp_path / "drop" / "archive" / "list.csv").exists()


async def test_stop_requested_mid_pass_finishes_the_step_and_resumes_next_start(
    tmp_path: Path, store: Store
) -> None:
    settings = settings_for(tmp_path, drop=drop_settings(tmp_path))
    emails = [f"u{i}@d{i % 4}.test" for i in range(40)]
    drop_in(tmp_path, "list.csv", [("email",), *((e,) for e in emails)])
    verifier = FakeVerifier(Clock())
    passes = Passes()
    daemon = Daemon(
        settings,
        store=store,
        connectors=build_connectors(settings),
        verifier=verifier,
        on_pass=passes,
    )
    verifier.after_each = lambda count: daemon.request_stop() if count == 10 else None
    await asyncio.wait_for(daemon.run(), 10)
    assert [r.outcome for r in passes.reports] == [RunOutcome.STOPPED]
    assert len(verifier.seen) == 10
    again = FakeVerifier(Clock())
    reports = await sync_once(
        settings, store=store, connectors=build_connectors(settings), verifier=again
    )
    assert reports[0].outcome is RunOutcome.OK
    assert sorted(verifier.seen + again.seen) == sorted(emails)


async def test_retry_job_runs_retries_of_crm_connectors_only(tmp_path: Path, store: Store) -> None:
    settings = settings_for(tmp_path, drop=drop_settings(tmp_path))
    crm = crm_with(("1", "a@x.test"))
    connectors = {"crm": CrmConnector("crm", crm), **build_connectors(settings)}
    passes = Passes()
    daemon = Daemon(
        settings,
        store=store,
        connectors=connectors,
        verifier=FakeVerifier(Clock()),
        on_pass=passes,
    )
    await daemon._retry_job()
    assert [(r.connector, r.outcome) for r in passes.reports] == [("crm", RunOutcome.OK)]
    [run] = store.db.execute("SELECT kind FROM runs").fetchall()
    assert run[0] == "retry"
    assert crm.pull_calls == []  # a retry pulls nothing


async def test_store_failure_in_a_pass_stops_the_daemon_with_the_store_error(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tmp_path, drop=drop_settings(tmp_path))
    drop_in(tmp_path, "list.csv", [("email",), ("a@x.test",)])

    def broken(*args: object, **kwargs: object) -> None:
        raise StoreError(str(store.path), "cannot grow: the disk is full")

    # Every connection's verb fails (the daemon's store lanes open their own connections).
    monkeypatch.setattr(Store, "take_csv_file", broken)
    daemon = Daemon(
        settings,
        store=store,
        connectors=build_connectors(settings),
        verifier=FakeVerifier(Clock()),
    )
    with pytest.raises(StoreError, match="disk is full"):
        await asyncio.wait_for(daemon.run(), 10)


def test_fake_crm_is_a_complete_connector() -> None:
    from mailprobe.connectors.base import Sink, Source

    assert isinstance(FakeCrm(), Source) and isinstance(FakeCrm(), Sink)


def test_missing_token_is_a_config_error_naming_the_variable(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, crm={"type": "hubspot"})
    with pytest.raises(ConfigError) as caught:
        build_connectors(settings)
    assert "MAILPROBE_CONNECTORS__CRM__ACCESS_TOKEN" in str(caught.value)


def test_disabled_connectors_are_left_out_unless_named(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, off=drop_settings(tmp_path, enabled=False))
    assert build_connectors(settings) == {}
    assert set(build_connectors(settings, only="off")) == {"off"}


@pytest.mark.parametrize(
    ("backfill", "expected"),
    [
        (True, None),
        (False, datetime(2026, 11, 27, 12, 0, tzinfo=UTC)),
        (date(2026, 1, 1), datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_backfill_setting_is_where_a_first_hubspot_pass_starts(
    backfill: bool | date, expected: datetime | None
) -> None:
    assert backfill_since(backfill, now=datetime(2026, 11, 27, 12, 0, tzinfo=UTC)) == expected


async def test_no_listener_starts_by_default(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = settings_for(tmp_path)
    async with SQLiteAsyncStore.over(store) as verbs:
        stop = await start_listeners(settings, verbs)
        await stop()
    assert not [r for r in caplog.records if "http://" in r.getMessage()]


async def test_http_api_runs_beside_the_daemon_when_enabled_and_stops(
    tmp_path: Path, store: Store
) -> None:
    import httpx
    from mailprobe.engine import EngineSettings, Verifier

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = AppSettings(
        store={"path": tmp_path / "state.db"},
        connectors={"drop": drop_settings(tmp_path)},
        api={"enabled": True, "listen": f"127.0.0.1:{port}"},
    )
    passes = Passes()
    verifier = Verifier(EngineSettings())  # the API needs the real one; no file to verify
    async with SQLiteAsyncStore.over(store) as verbs:
        daemon = Daemon(
            settings,
            store=verbs,
            connectors=build_connectors(settings),
            verifier=verifier,
            on_pass=passes,
        )
        stop_listeners = await start_listeners(settings, verbs, verifier=verifier)
        running = asyncio.create_task(daemon.run())
        await passes.wait_for(lambda reports: len(reports) >= 1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            response = await client.get("/healthz")
        daemon.request_stop()
        await asyncio.wait_for(running, 20)
        await stop_listeners()
    assert response.status_code == 200
    with socket.socket() as again:  # the port is free again: the API stopped
        again.bind(("127.0.0.1", port))
