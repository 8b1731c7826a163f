"""Operator notifications: signed webhooks, retried, raised by failing and recovering passes.

Every delivery goes over real HTTP to a receiver on loopback (tests/fakes/webhook.py); the
pass events come from real `mailprobe sync` and `mailprobe run` processes against the HubSpot
fake.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mailprobe import notify as notify_module
from mailprobe.notify import Notifier, pass_events, signature
from mailprobe.settings import NotifySettings
from mailprobe.store import RunOutcome
from tests.fakes.hubspot import TOKEN, FakeHubSpot
from tests.fakes.webhook import WebhookReceiver
from tests.test_cli_daemon import WRONG_TOKEN, Output, clean_env, cli, write_config

SECRET = "whsec-test-0123456789"
OK, FAILED, FATAL, STOPPED = RunOutcome.OK, RunOutcome.FAILED, RunOutcome.FATAL, RunOutcome.STOPPED


def settings(url: str, **extra: object) -> NotifySettings:
    return NotifySettings(webhook_url=url, secret=SECRET, backoff_s=0.01, timeout_s=5, **extra)


def verified(request) -> bool:
    """Return True when the request's signature is the HMAC of `TIMESTAMP.BODY` under SECRET."""
    timestamp = request.headers["x-mailprobe-timestamp"]
    mac = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256)
    return hmac.compare_digest(
        request.headers["x-mailprobe-signature"], "sha256=" + mac.hexdigest()
    )


# -- deciding and signing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recent", "events"),
    [
        ([OK], []),
        ([FAILED], ["pass_failed"]),
        ([FAILED, FAILED, OK], ["pass_failed"]),
        ([FATAL, FAILED, FAILED, OK], ["pass_failed", "connector_failing"]),
        ([FAILED, FAILED, FAILED, FAILED], ["pass_failed"]),  # said once, at the third
        ([OK, FAILED, FAILED, FAILED], ["connector_recovered"]),
        ([OK, FAILED, FAILED], []),  # never reached the threshold
        ([], []),
    ],
)
def test_pass_events_follow_the_run_of_failures(
    recent: list[RunOutcome], events: list[str]
) -> None:
    assert pass_events(recent, threshold=3) == events


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"event":"pass_failed"}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()

    assert signature("k", "1700000000", body) == f"sha256={expected}"


# -- delivering ----------------------------------------------------------------------------------


async def test_delivery_is_signed_and_retried_after_a_server_error(
    webhook_receiver: WebhookReceiver,
) -> None:
    webhook_receiver.answers.extend([503, 500])
    notifier = Notifier(settings(webhook_receiver.url))

    notifier.notify("check_failed", {"check": "resolver"}, summary="the resolver lies")
    await notifier.aclose()

    assert len(webhook_receiver.received) == 3
    first, *_, last = webhook_receiver.received
    assert first.body == last.body  # the same delivery each time
    assert first.headers["x-mailprobe-delivery"] == last.headers["x-mailprobe-delivery"]
    assert all(verified(r) for r in webhook_receiver.received)
    payload = last.json()
    assert payload["event"] == "check_failed" and payload["summary"] == "the resolver lies"
    assert payload["details"] == {"check": "resolver"} and payload["time"].endswith("Z")
    assert last.headers["x-mailprobe-event"] == "check_failed"
    assert len(notifier.delivered) == 1


async def test_a_client_error_is_not_retried(
    webhook_receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    webhook_receiver.answers.append(400)
    notifier = Notifier(settings(webhook_receiver.url))

    with caplog.at_level(logging.WARNING, logger="mailprobe.notify"):
        notifier.notify("check_failed", {})
        await notifier.aclose()

    assert len(webhook_receiver.received) == 1 and notifier.delivered == []
    assert any(r.message == "notification not delivered" for r in caplog.records)


async def test_an_unreachable_receiver_is_tried_every_attempt_then_given_up() -> None:
    with WebhookReceiver() as gone:
        url = gone.url  # nothing listens there once it has stopped
    notifier = Notifier(settings(url, attempts=3))
    from mailprobe.notify import Delivery

    started = time.monotonic()
    accepted = await notifier.send(Delivery("d-1", "check_failed", b"{}"))

    assert accepted is False and time.monotonic() - started < 5


async def test_secrets_in_details_are_masked(webhook_receiver: WebhookReceiver) -> None:
    notifier = Notifier(settings(webhook_receiver.url), secrets=["s3cr3t-token-value"])

    notifier.notify("check_failed", {"error": "401 for token s3cr3t-token-value"})
    await notifier.aclose()

    assert b"s3cr3t-token-value" not in webhook_receiver.received[0].body


def test_notify_hook_without_a_running_loop_delivers_now(
    webhook_receiver: WebhookReceiver,
) -> None:
    notify_module.install(Notifier(settings(webhook_receiver.url)))
    try:
        notify_module.notify("check_failed", {"check": "sender", "problem": "listed"})
    finally:
        notify_module.install(None)

    assert webhook_receiver.events() == ["check_failed"]
    assert verified(webhook_receiver.received[0])


def test_events_not_chosen_are_not_sent(webhook_receiver: WebhookReceiver) -> None:
    notifier = Notifier(settings(webhook_receiver.url, events=["pass_failed"]))

    notifier.notify("check_failed", {})

    assert webhook_receiver.received == []


# -- from real passes ------------------------------------------------------------------------


def hubspot_config(tmp_path: Path, hubspot: FakeHubSpot, url: str, **extra: object) -> Path:
    return write_config(
        tmp_path / "m.yaml",
        {
            "store": {"path": "state.db"},
            "connectors": {"crm": {"type": "hubspot", "base_url": hubspot.base_url}},
            "notify": {"webhook_url": url, "failures_in_a_row": 2, "backoff_s": 0.01},
            **extra,
        },
    )


def test_sync_failures_raise_pass_failed_then_failing_then_recovered(
    tmp_path: Path, hubspot_api: FakeHubSpot, webhook_receiver: WebhookReceiver
) -> None:
    config = hubspot_config(tmp_path, hubspot_api, webhook_receiver.url)
    bad = clean_env(
        MAILPROBE_CONNECTORS__CRM__ACCESS_TOKEN=WRONG_TOKEN, MAILPROBE_NOTIFY__SECRET=SECRET
    )
    good = {**bad, "MAILPROBE_CONNECTORS__CRM__ACCESS_TOKEN": TOKEN}

    runs = [cli("--config", str(config), "sync", cwd=tmp_path, env=env) for env in (bad, bad, good)]

    assert [run.returncode for run in runs] == [1, 1, 0], runs[2].stderr
    assert webhook_receiver.events() == [
        "pass_failed",
        "pass_failed",
        "connector_failing",
        "connector_recovered",
    ]
    failing = webhook_receiver.received[2].json()
    assert failing["details"]["connector"] == "crm" and failing["details"]["failures_in_a_row"] == 2
    assert failing["summary"].startswith("crm: 2 passes failed in a row; last: ")
    assert all(verified(r) for r in webhook_receiver.received)
    assert WRONG_TOKEN.encode() not in b"".join(r.body for r in webhook_receiver.received)


def test_run_serves_metrics_without_the_api_and_notifies_a_failed_pass(
    tmp_path: Path, hubspot_api: FakeHubSpot, webhook_receiver: WebhookReceiver
) -> None:
    config = hubspot_config(
        tmp_path,
        hubspot_api,
        webhook_receiver.url,
        metrics={"listen": "127.0.0.1:0"},
        api={"enabled": False},
        # The pre-flight's check_failed depends on this machine's resolver: pass events only.
        notify={
            "webhook_url": webhook_receiver.url,
            "backoff_s": 0.01,
            "events": ["pass_failed", "connector_failing", "connector_recovered"],
        },
    )
    env = clean_env(
        MAILPROBE_CONNECTORS__CRM__ACCESS_TOKEN=WRONG_TOKEN, MAILPROBE_NOTIFY__SECRET=SECRET
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "mailprobe.cli", "--config", str(config), "run"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    output = Output(process.stderr)
    try:
        assert output.wait_for("metrics on http://"), output.lines
        assert webhook_receiver.wait_for(1), output.lines
        line = next(line for line in output.lines if "metrics on http://" in line)
        base = line.split("metrics on ")[1].split("/metrics")[0]
        health = json.loads(urllib.request.urlopen(f"{base}/healthz", timeout=10).read())
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
        with pytest.raises(urllib.error.HTTPError) as no_api:
            urllib.request.urlopen(f"{base}/v1/verify?email=a@b.test", timeout=10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert health == {"status": "ok"} and no_api.value.code == 404
    assert 'mailprobe_connector_errors_total{connector="crm"} 1.0' in metrics
    assert "process_resident_memory_bytes" in metrics
    assert webhook_receiver.events()[0] == "pass_failed"
    assert webhook_receiver.received[0].json()["details"]["outcome"] == "fatal"
