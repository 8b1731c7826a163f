"""The operator's dashboard at / and the API reference at /docs (issue 15): real HTTP against
uvicorn on 127.0.0.1, and rendered in headless Chromium where it is installed.

The store is seeded through its own verbs with a month of answers, passes of two connectors,
a queue and three domains that defer or block us.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import re
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from mailprobe.connectors.base import Contact
from mailprobe.engine import score
from mailprobe.engine.result import Checks, Reason, SmtpCheck, Status, VerificationResult
from pydantic import SecretStr
from sqlite_utils import Database
from starlette.applications import Starlette

from mailprobe import api
from mailprobe.api import charts
from mailprobe.api import figures as figures_module
from mailprobe.api.figures import DoctorCheck, DoctorReport, Figures, gather
from mailprobe.api.panels import page
from mailprobe.migrations import migrations
from mailprobe.settings import ApiSettings, AppSettings, StoreSettings
from mailprobe.store import RetryDepth, RunCounts, RunOutcome, Store
from tests.browser import Rendered, chromium_path, running_browser
from tests.test_api import serving

NOW = datetime.now(UTC).replace(microsecond=0)
KEY = "dashboard-key-for-tests-5b2e"
CONNECTORS = {"crm": {"type": "csv"}, "drop": {"type": "csv"}}
#: Untrusted text as a server could send it: it must come out as text, never as markup.
HOSTILE_REPLY = '554 5.7.1 <script>alert("x")</script> client host blocked using bl.example'
DEFERRING = {
    "slowgrey.test": (Reason.GREYLISTED, "451 4.7.1 Greylisted, please try again in 300 s", 6),
    "strict.test": (Reason.BLOCKED, HOSTILE_REPLY, 4),
    "busy.test": (Reason.RATE_LIMITED, "421 4.7.0 Too many connections from your host", 2),
}
_REASON = {
    Status.VALID: Reason.ACCEPTED,
    Status.INVALID: Reason.MAILBOX_NOT_FOUND,
    Status.CATCH_ALL: Reason.ACCEPT_ALL,
    Status.RISKY: Reason.MAILBOX_FULL,
    Status.UNKNOWN: Reason.TIMEOUT,
}


def answer(
    email: str, status: Status, reason: Reason, *, at: datetime, reply: str = ""
) -> VerificationResult:
    """Return a stored-looking result for `email`; `reply` is the server's code and text."""
    default = "250 2.1.5 ok" if status is Status.VALID else "550 5.1.1 no"
    code, _, text = (reply or default).partition(" ")
    smtp = SmtpCheck(
        connected=True,
        mailbox_exists=status is Status.VALID,
        is_catch_all=status is Status.CATCH_ALL,
        smtp_provider="Postfix",
        response_code=int(code),
        enhanced_code=None,
        response_message=text,
        mx_host=f"mx.{email.rpartition('@')[2]}",
        tls=True,
    )
    return VerificationResult(
        email=email,
        normalized=email,
        status=status,
        reason=reason,
        action=score.action(status, reason),
        score=score.score(status, reason),
        checks=Checks(True, True, True, smtp, False, status is Status.CATCH_ALL, False, False),
        suggestion=None,
        verified_at=at,
        response_time_ms=120,
    )


def seed(store: Store, now: datetime = NOW) -> None:
    """Fill `store` with a month of answers, passes, a queue and deferring domains."""
    pick = random.Random(15)
    statuses = [Status.VALID] * 12 + [Status.INVALID] * 4 + [Status.CATCH_ALL] * 3 + [
        Status.RISKY, Status.UNKNOWN]  # fmt: skip
    for day in range(30):
        at = now - timedelta(days=29 - day, hours=pick.randint(0, 3))
        for i in range(pick.randint(10, 40) if day % 7 else 4):
            status = pick.choice(statuses)
            email = f"user{day}-{i}@{pick.choice(['acme', 'globex', 'initech'])}.test"
            store.save_result(answer(email, status, _REASON[status], at=at), now=at)
    for domain, (reason, reply, count) in DEFERRING.items():
        for i in range(count):
            at = now - timedelta(minutes=5 * i + 1)
            result = answer(f"p{i}@{domain}", Status.UNKNOWN, reason, at=at, reply=reply)
            store.save_result(result, now=at)
    _seed_passes(store, now)
    store.queue_emails("drop", [f"new{i}@acme.test" for i in range(30)], now=now)
    store.queue_emails("crm", [f"lead{i}@globex.test" for i in range(12)], now=now)
    known = [Contact(f"c{i}", f"user29-{i}@acme.test") for i in range(5)]
    store.record_page("crm", known, now=now)


def _seed_passes(store: Store, now: datetime) -> None:
    for n in range(14):
        started = now - timedelta(hours=14 - n)
        outcome = RunOutcome.FAILED if n == 9 else RunOutcome.OK
        run = store.start_run("crm", now=started)
        counts = RunCounts(pulled=40 + n, queued=20 + n, verified=18 + 2 * n, written=15 + n)
        error = (
            "HubSpot answered 503 Service Unavailable; the next pass retries" if n == 9 else None
        )
        store.finish_run(run, outcome=outcome, counts=counts, error=error,
                         now=started + timedelta(seconds=42))  # fmt: skip
    for n in range(6):
        started = now - timedelta(hours=6 - n, minutes=30)
        run = store.start_run("drop", now=started)
        counts = RunCounts(pulled=200, queued=180, verified=170 + 10 * n, written=200)
        store.finish_run(run, outcome=RunOutcome.OK, counts=counts,
                         now=started + timedelta(seconds=95))  # fmt: skip


def settings(store: Path | None, *, keys: tuple[str, ...] = ()) -> AppSettings:
    """Return settings for an API on 127.0.0.1:0 with the two test connectors."""
    return AppSettings(
        api=ApiSettings(listen="127.0.0.1:0", keys=[SecretStr(k) for k in keys]),
        store=StoreSettings(path=store or Path("unused.db")),
        connectors=CONNECTORS,
    )


@dataclass
class Dashboard:
    client: httpx.AsyncClient
    app: Starlette


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "mailprobe.db") as store:
        seed(store)
        yield store


@pytest.fixture
async def dashboard(seeded: Store) -> AsyncIterator[Dashboard]:
    app = api.create_app(settings(seeded.path), store=seeded)
    async with serving(app) as client:
        yield Dashboard(client, app)


# Over HTTP ------------------------------------------------------------------------------------


async def test_dashboard_shows_health_passes_queue_and_deferring_domains(
    dashboard: Dashboard,
) -> None:
    response = await dashboard.client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    text = response.text
    assert text.count('<svg class="chart"') >= 5  # health, everything stored, 2 connectors, queue
    assert "Answers by status per day, last 30 days" in text
    for name in ("crm", "drop", "slowgrey.test", "strict.test", "busy.test"):
        assert name in text
    assert "HubSpot answered 503" in text and "✗ failed" in text
    assert "421 4.7.0 Too many connections" in text
    assert "Not run yet" in text  # no doctor result is stored


async def test_dashboard_escapes_what_servers_said(dashboard: Dashboard) -> None:
    text = (await dashboard.client.get("/")).text
    assert "<script" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text


async def test_dashboard_allows_no_script_or_outside_resource(dashboard: Dashboard) -> None:
    response = await dashboard.client.get("/")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert not re.search(r"(src|href)=\"(https?:)?//", response.text)


async def test_dashboard_without_a_store_says_so(tmp_path: Path) -> None:
    async with serving(api.create_app(settings(None))) as client:
        response = await client.get("/")
    assert response.status_code == 200 and "runs without a store" in response.text


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, 401),
        ({"Authorization": "Basic " + base64.b64encode(b"ops:wrong").decode()}, 401),
        ({"Authorization": "Basic !!not-base64"}, 401),
        ({"Authorization": "Basic " + base64.b64encode(f"ops:{KEY}".encode()).decode()}, 200),
        ({"Authorization": "Basic " + base64.b64encode(f":{KEY}".encode()).decode()}, 200),
        ({"Authorization": f"Bearer {KEY}"}, 200),
        ({"X-API-Key": KEY}, 200),
    ],
)
async def test_dashboard_needs_a_key_when_keys_are_set(
    seeded: Store, headers: dict[str, str], expected: int
) -> None:
    app = api.create_app(settings(seeded.path, keys=(KEY,)), store=seeded)
    async with serving(app) as client:
        response = await client.get("/", headers=headers)
    assert response.status_code == expected
    if expected == 401:
        assert response.headers["www-authenticate"].startswith('Basic realm="mailprobe"')
        assert "slowgrey.test" not in response.text


async def test_browser_key_also_opens_the_metrics_the_dashboard_links_to(seeded: Store) -> None:
    basic = {"Authorization": "Basic " + base64.b64encode(f"ops:{KEY}".encode()).decode()}
    app = api.create_app(settings(seeded.path, keys=(KEY,)), store=seeded)
    async with serving(app) as client:
        assert (await client.get("/metrics", headers=basic)).status_code == 200
        assert (await client.get("/metrics")).status_code == 401


async def test_docs_serve_swagger_ui_from_this_server(dashboard: Dashboard) -> None:
    client = dashboard.client
    page_ = await client.get("/docs")
    assert page_.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page_.text)
    assert assets and all(a.startswith("docs/assets/") for a in assets)  # nothing from outside
    for asset in assets:
        served = await client.get(f"/{asset}")
        assert served.status_code == 200 and served.content, asset
    assert "validatorUrl: null" in page_.text  # Swagger UI's badge would call out


async def test_reference_and_dashboard_name_no_internal_files(dashboard: Dashboard) -> None:
    pages = [(await dashboard.client.get(path)).text for path in ("/openapi.json", "/docs", "/")]
    for text in pages:
        assert not re.search(r"\b[\w/]+\.(py|md)\b", text)


def test_doctor_report_is_shown_with_each_check_when_stored() -> None:
    report = DoctorReport(
        ran_at=NOW - timedelta(hours=2),
        checks=(
            DoctorCheck("resolver", "ok", "answers in 12 ms"),
            DoctorCheck("port 25", "failed", "outbound port 25 is blocked"),
        ),
    )
    figures = Figures(NOW, {}, [], {}, [], RetryDepth(0, 0), [], report)
    html = page(figures)
    assert "Not run yet" not in html
    assert "outbound port 25 is blocked" in html and "1 failed" in html and "2 h ago" in html


def test_last_doctor_is_not_run_yet_before_any_doctor_run(seeded: Store) -> None:
    assert figures_module.last_doctor(seeded) is None


def test_last_doctor_reads_the_stored_report_in_the_dashboards_words(seeded: Store) -> None:
    findings = [
        {"check": "resolver", "outcome": "ok", "found": "answers in 12 ms", "fix": None},
        {"check": "port 25", "outcome": "fail", "found": "blocked", "fix": "ask your host"},
        {"check": "blocklists", "outcome": "warn", "found": "listed on one", "fix": "delist"},
    ]
    stored = {"ready": False, "summary": "not ready", "checked_at": "2026-12-04T10:00:00Z"}
    seeded.save_doctor_report({**stored, "findings": findings}, now=NOW)
    report = figures_module.last_doctor(seeded)
    assert report is not None
    assert [(c.name, c.outcome) for c in report.checks] == [
        ("resolver", "ok"),
        ("port 25", "failed"),
        ("blocklists", "warning"),
    ]
    assert "1 failed" in page(figures_module.gather(seeded, ["crm"], now=NOW))


# In a browser ---------------------------------------------------------------------------------

CHROMIUM = chromium_path()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)"
)


@needs_chromium
async def test_dashboard_renders_in_chromium_with_charts_and_no_errors(
    dashboard: Dashboard, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    url = str(dashboard.client.base_url) + "/"
    shot = tmp_path / "dashboard.png"
    with running_browser(CHROMIUM) as browser:
        rendered = await _in_thread(
            browser.open,
            url,
            values={
                "charts": "document.querySelectorAll('svg.chart').length",
                "drawn": "[...document.querySelectorAll('svg.chart')]"
                ".filter(s => s.getBoundingClientRect().width > 300).length",
                "bars": "document.querySelectorAll('svg.chart rect[fill^=\"url(#fill-\"]').length",
                "title": "document.title",
            },
            screenshot=shot,
        )
    assert rendered.errors == []
    assert rendered.values["charts"] >= 5 and rendered.values["drawn"] >= 3
    assert rendered.values["bars"] > 30
    assert rendered.values["title"] == "mailprobe dashboard"
    assert shot.stat().st_size > 10_000
    if os.environ.get("MAILPROBE_SCREENSHOT"):  # keep a copy to look at
        shutil.copy(shot, os.environ["MAILPROBE_SCREENSHOT"])


@needs_chromium
async def test_docs_render_in_chromium_from_local_assets_without_errors(
    dashboard: Dashboard,
) -> None:
    assert CHROMIUM is not None
    url = str(dashboard.client.base_url) + "/docs"
    with running_browser(CHROMIUM) as browser:
        rendered = await _in_thread(
            browser.open,
            url,
            ready="document.querySelectorAll('.opblock').length >= 3",
            values={
                "paths": "[...document.querySelectorAll('.opblock-summary-path')]"
                ".map(e => e.textContent.replace(/\\u200b/g, ''))",
                "title": "document.querySelector('.info .title')?.textContent",
            },
        )
    assert rendered.errors == []
    assert {"/v1/verify", "/v1/verify/batch"} <= set(rendered.values["paths"])
    assert rendered.values["title"].startswith("mailprobe")


async def _in_thread(function: Callable[..., Rendered], *args: Any, **kwargs: Any) -> Rendered:
    """Drive the browser from a thread: the API under test serves on this event loop."""
    return await asyncio.to_thread(function, *args, **kwargs)


# Pieces ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("largest", "expected"),
    [
        (0, (4, 4)),
        (3, (4, 4)),
        (44, (50, 5)),
        (98, (100, 4)),
        (101, (125, 5)),
        (37_000, (40_000, 4)),
    ],
)
def test_chart_axis_ends_at_a_round_figure_just_above_the_largest(
    largest: int, expected: tuple[int, int]
) -> None:
    assert charts.axis(largest) == expected


def test_empty_store_draws_empty_charts_and_says_so(tmp_path: Path) -> None:
    with Store(tmp_path / "empty.db") as store:
        figures = gather(store, ["drop"], now=NOW)
    html = page(figures)
    assert html.count('<svg class="chart"') == 3  # health, everything stored, queue
    assert "No pass yet." in html and "None in the last 24 hours." in html
    assert "No answers in these days." in html


# The store's figures --------------------------------------------------------------------------


def test_results_by_day_counts_each_address_on_its_latest_day(tmp_path: Path) -> None:
    yesterday, today = NOW - timedelta(days=1), NOW
    with Store(tmp_path / "s.db") as store:
        store.save_result(answer("a@x.test", Status.VALID, Reason.ACCEPTED, at=yesterday),
                          now=yesterday)  # fmt: skip
        store.save_result(answer("a@x.test", Status.INVALID, Reason.MAILBOX_NOT_FOUND, at=today),
                          now=today)  # fmt: skip
        store.save_result(answer("b@x.test", Status.VALID, Reason.ACCEPTED, at=yesterday),
                          now=yesterday)  # fmt: skip
        counts = store.results_by_day(since=NOW - timedelta(days=2))
        assert store.results_by_status() == {"valid": 1, "invalid": 1}
    assert {(c.day, c.status, c.count) for c in counts} == {
        (yesterday.date().isoformat(), "valid", 1),
        (today.date().isoformat(), "invalid", 1),
    }


def test_deferring_domains_are_recent_deferrals_and_blocks_most_first(tmp_path: Path) -> None:
    old = NOW - timedelta(days=2)
    with Store(tmp_path / "s.db") as store:
        for i, (domain, reason, at) in enumerate([
            ("grey.test", Reason.GREYLISTED, NOW), ("grey.test", Reason.GREYLISTED, NOW),
            ("grey.test", Reason.BLOCKED, NOW), ("block.test", Reason.BLOCKED, NOW),
            ("slow.test", Reason.TIMEOUT, NOW),  # not deferring us: the server is slow
            ("stale.test", Reason.BLOCKED, old),  # too long ago
        ]):  # fmt: skip
            reply = f"451 4.7.1 try later {i}"
            store.save_result(answer(f"u{i}@{domain}", Status.UNKNOWN, reason, at=at,
                                     reply=reply), now=at)  # fmt: skip
        found = store.deferring_domains(since=NOW - timedelta(hours=24))
    assert [(d.domain, dict(d.reasons)) for d in found] == [
        ("grey.test", {"greylisted": 2, "blocked": 1}),
        ("block.test", {"blocked": 1}),
    ]
    assert found[0].addresses == 3 and found[0].last_reply.startswith("451 4.7.1 try later")
    assert found[0].mx_host == "mx.grey.test"


def test_retry_depth_splits_unknown_answers_by_retry_time(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        store.save_result(answer("a@x.test", Status.UNKNOWN, Reason.TIMEOUT, at=NOW), now=NOW)
        store.save_result(answer("b@x.test", Status.VALID, Reason.ACCEPTED, at=NOW), now=NOW)
        assert store.retry_depth(now=NOW) == RetryDepth(scheduled=1, due=0)
        assert store.retry_depth(now=NOW + timedelta(days=2)) == RetryDepth(scheduled=0, due=1)


def test_per_day_counts_are_built_for_a_store_of_an_older_schema(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = Database(path)
    migrations.apply(old, stop_before="m004_dashboard_figures")
    for n, status in enumerate(["valid", "valid", "invalid"]):
        old.execute(
            "INSERT INTO results (normalized, result_json, status, reason, verified_at,"
            " expires_at, checked_at) VALUES (?, '{}', ?, 'accepted', ?, ?, ?)",
            (f"u{n}@x.test", status, *["2026-11-27T12:00:00.000000Z"] * 3),
        )
    old.close()
    with Store(path) as store:  # opening migrates, counting what is already stored
        assert store.results_by_status() == {"valid": 2, "invalid": 1}
        by_day = store.results_by_day(since=datetime(2026, 11, 1, tzinfo=UTC))
        assert [(c.day, c.status, c.count) for c in by_day] == [
            ("2026-11-27", "invalid", 1), ("2026-11-27", "valid", 2)
        ]  # fmt: skip


def test_per_day_counts_follow_answers_deleted_by_any_verb(seeded: Store) -> None:
    before = seeded.results_by_status()
    # What a data-protection request does to one address, whichever verb does it.
    seeded.db.execute("DELETE FROM results WHERE normalized = 'p0@strict.test'")
    assert seeded.results_by_status() == {**before, "unknown": before["unknown"] - 1}
