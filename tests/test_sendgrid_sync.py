"""`mailprobe sync --connector sendgrid` end to end: the CLI, the real engine, DNS and SMTP on
loopback, and the SendGrid fake — every listed contact gets its fields, written once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

from tests.fakes.mailworld import World, address, expected_status, world
from tests.fakes.sendgrid import API_KEY, SendGridFake

ROOT = Path(__file__).resolve().parents[1]


def write_config(tmp_path: Path, api: SendGridFake, w: World) -> tuple[list[str], dict[str, str]]:
    """Return the sync command and its environment (the key only in the environment)."""
    config = {
        "store": {"path": str(tmp_path / "state.db")},
        "engine": w.engine(),
        "connectors": {
            "newsletter": {
                "type": "sendgrid",
                "base_url": api.base_url,
                "lists": ["Newsletter"],
                "invalid_list": "mailprobe: undeliverable",
            }
        },
        "log": {"level": "WARNING"},
    }
    path = tmp_path / "mailprobe.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "MAILPROBE_CONNECTORS__NEWSLETTER__API_KEY": API_KEY,
    }
    command = [sys.executable, "-m", "mailprobe.cli", "--config", str(path), "sync"]
    return [*command, "--connector", "newsletter"], env


def seed(api: SendGridFake, count: int) -> list[str]:
    # Ready at the first poll: the connector's 2 s production poll interval is not under test.
    api.export_polls = api.import_polls = 0
    newsletter = api.add_list("Newsletter")
    emails = [address(n) for n in range(count)]
    for email in emails:
        api.add_contact(email, lists=(newsletter,))
    return emails


def assert_fields_correct(api: SendGridFake, emails: list[str]) -> None:
    for n, email in enumerate(emails):
        values = api.values(email)
        assert values["mailprobe_status"] == expected_status(n), (email, values)
        assert values["mailprobe_verified_email"] == email
        assert float(values["mailprobe_catch_all"]) == 0


def writes_per_contact(api: SendGridFake) -> Counter[str]:
    return Counter(row["email"] for upsert in api.upserts for row in upsert.contacts)


def test_sync_connector_sendgrid_writes_every_listed_contact_once(
    sendgrid_api: SendGridFake, tmp_path: Path
) -> None:
    emails = seed(sendgrid_api, 300)
    with world(300) as w:
        command, env = write_config(tmp_path, sendgrid_api, w)
        runs = [
            subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
            for _ in range(2)
        ]
        probes = {email: w.rcpts(email) for email in emails[:20]}

    assert [r.returncode for r in runs] == [0, 0], [r.stderr[-2000:] for r in runs]
    assert API_KEY not in "".join(r.stdout + r.stderr for r in runs)
    assert_fields_correct(sendgrid_api, emails)
    written = writes_per_contact(sendgrid_api)
    assert set(written) == set(emails) and set(written.values()) == {1}
    assert set(probes.values()) == {1}  # the second pass reused every fresh result
    undeliverable = [
        lid for lid, name in sendgrid_api.lists.items() if name == "mailprobe: undeliverable"
    ]
    members = sendgrid_api.members(undeliverable[0])
    assert members == {e for n, e in enumerate(emails) if expected_status(n) == "invalid"}


def test_sync_killed_after_an_upsert_then_rerun_writes_each_contact_once(
    sendgrid_api: SendGridFake, tmp_path: Path
) -> None:
    emails = seed(sendgrid_api, 200)
    with world(200) as w:
        command, env = write_config(tmp_path, sendgrid_api, w)
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        reached = sendgrid_api.wait_for_applied_jobs(1, timeout=120)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        assert reached, "the sync never got to writing"
        final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)

    assert final.returncode == 0, final.stderr[-2000:]
    assert_fields_correct(sendgrid_api, emails)
    assert set(writes_per_contact(sendgrid_api).values()) == {1}
