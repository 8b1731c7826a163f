"""The service commands (run, sync, status, init, config) and structured, secret-free logs.

In-process through click's CliRunner where that is enough; as real subprocesses where signals,
exit codes and the `python -m mailprobe.cli` entry point are the subject.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mailprobe.cli import main
from mailprobe.logs import MASK, SecretMask, configure, secret_values
from mailprobe.settings import load_settings
from tests.fakes.dns import DnsServer
from tests.fakes.hubspot import TOKEN, FakeHubSpot
from tests.fakes.pipeline import drop_in, read_output
from tests.fakes.smtp import ScriptedSmtp, running_smtp_server

REPO = Path(__file__).resolve().parents[1]
WRONG_TOKEN = "pat-na1-0badc0de-1111-2222-3333-444455556666"


def clean_env(**extra: str) -> dict[str, str]:
    """Return this environment without MAILPROBE_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPROBE_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


def engine_env(dns: DnsServer, smtp_port: int) -> dict[str, str]:
    """Return environment settings that point the engine at the fake DNS and SMTP servers."""
    return {
        "MAILPROBE_ENGINE__HELO_HOSTNAME": "probe.test",
        "MAILPROBE_ENGINE__DNS__NAMESERVERS": json.dumps([dns.host]),
        "MAILPROBE_ENGINE__DNS__PORT": str(dns.port),
        "MAILPROBE_ENGINE__DNS__TIMEOUT_S": "2",
        "MAILPROBE_ENGINE__SMTP__PORT": str(smtp_port),
        "MAILPROBE_ENGINE__SMTP__ALLOWED_PRIVATE_NETWORKS": '["127.0.0.0/8"]',
        "MAILPROBE_ENGINE__SYNTAX__ALLOW_TEST_DOMAINS": "true",
    }


def cli(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailprobe.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_config(path: Path, data: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for key in [k for k in os.environ if k.startswith("MAILPROBE_")]:
        monkeypatch.delenv(key)
    return CliRunner()


@pytest.fixture
def acme(dns_server: DnsServer) -> Iterator[tuple[DnsServer, ScriptedSmtp]]:
    """acme.test's MX on 127.0.0.2 knows ann@ and bob@; the SMTP server runs in a thread."""
    dns_server.add_mx("acme.test", 10, "mx.acme.test")
    dns_server.add("mx.acme.test", "A", "127.0.0.2")
    smtp = ScriptedSmtp("127.0.0.2", mailboxes={"ann@acme.test", "bob@acme.test"})
    with running_smtp_server(smtp) as server:
        yield dns_server, server


# -- init and config -------------------------------------------------------------------------


def test_init_writes_a_commented_config_that_loads(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "mailprobe.yaml"
    result = runner.invoke(main, ["init", str(target)])
    assert result.exit_code == 0, result.output
    text = target.read_text()
    assert text.startswith("# mailprobe configuration")
    settings = load_settings(target)
    assert settings.connectors["drop"].type == "csv"
    assert str(settings.store.path) == "mailprobe.db"


def test_init_refuses_to_overwrite_without_force(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "mailprobe.yaml"
    target.write_text("mine: true\n")
    result = runner.invoke(main, ["init", str(target)])
    assert result.exit_code == 2
    assert "--force" in result.output and result.output.count("\n") == 1
    assert target.read_text() == "mine: true\n"
    assert runner.invoke(main, ["init", "--force", str(target)]).exit_code == 0


def test_config_prints_effective_settings_with_secrets_masked(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path / "m.yaml", {"connectors": {"crm": {"type": "hubspot"}}})
    monkeypatch.setenv("MAILPROBE_CONNECTORS__CRM__ACCESS_TOKEN", WRONG_TOKEN)
    monkeypatch.setenv("MAILPROBE_ENGINE__SMTP__PORT", "2525")
    result = runner.invoke(main, ["--config", str(config), "config"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["connectors"]["crm"]["access_token"] == MASK
    assert shown["engine"]["smtp"]["port"] == 2525
    assert WRONG_TOKEN not in result.output


def test_config_with_an_unknown_key_is_exit_2_naming_it(runner: CliRunner, tmp_path: Path) -> None:
    config = write_config(tmp_path / "m.yaml", {"store": {"pth": "x.db"}})
    result = runner.invoke(main, ["--config", str(config), "config"])
    assert result.exit_code == 2
    assert "store.pth" in result.output and "Traceback" not in result.output


# -- status ----------------------------------------------------------------------------------


def test_status_without_a_store_says_how_to_create_one(runner: CliRunner, tmp_path: Path) -> None:
    config = write_config(tmp_path / "m.yaml", {"store": {"path": str(tmp_path / "none.db")}})
    result = runner.invoke(main, ["--config", str(config), "status"])
    assert result.exit_code == 0 and "mailprobe run" in result.output


def test_status_of_a_corrupt_store_is_exit_2_with_one_line(
    runner: CliRunner, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 1000)
    config = write_config(tmp_path / "m.yaml", {"store": {"path": str(bad)}})
    result = runner.invoke(main, ["--config", str(config), "status"])
    assert result.exit_code == 2
    assert result.output.startswith("mailprobe: store ") and result.output.count("\n") == 1
    assert "not a mailprobe store" in result.output


# -- sync ------------------------------------------------------------------------------------


def test_sync_verifies_a_dropped_file_then_status_shows_it(
    tmp_path: Path, acme: tuple[DnsServer, ScriptedSmtp]
) -> None:
    dns, smtp = acme
    drop_in(tmp_path, "people.csv", [("email",), ("ann@acme.test",), ("zed@acme.test",)])
    config = write_config(
        tmp_path / "m.yaml",
        {
            "store": {"path": "state.db"},
            "connectors": {"drop": {"type": "csv", "folder": "drop", "settle_s": 0}},
        },
    )
    env = clean_env(**engine_env(dns, smtp.port))
    done = cli("--config", str(config), "sync", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "drop: ok" in done.stdout
    out = read_output(tmp_path, "people.verified.csv")
    assert [r["mailprobe_status"] for r in out] == ["valid", "invalid"]
    status = cli("--config", str(config), "status", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    assert "drop" in status.stdout and "results: 2 (valid 1, invalid 1)" in status.stdout
    assert "files done 1" in status.stdout


def test_sync_of_a_connector_with_a_bad_token_exits_1_and_never_logs_the_token(
    tmp_path: Path, hubspot_api: FakeHubSpot
) -> None:
    hubspot_api.add_contacts(2)
    config = write_config(
        tmp_path / "m.yaml",
        {
            "store": {"path": "state.db"},
            "connectors": {"crm": {"type": "hubspot", "base_url": hubspot_api.base_url}},
        },
    )
    env = clean_env(MAILPROBE_CONNECTORS__CRM__ACCESS_TOKEN=WRONG_TOKEN)
    done = cli("--config", str(config), "--log-format", "json", "sync", cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert "mailprobe: connector crm failed" in done.stderr
    assert WRONG_TOKEN not in done.stdout + done.stderr
    for line in done.stderr.splitlines():
        if line.startswith("{"):
            assert json.loads(line)["level"]


def test_sync_writes_verification_fields_into_hubspot(
    tmp_path: Path, hubspot_api: FakeHubSpot, acme: tuple[DnsServer, ScriptedSmtp]
) -> None:
    dns, smtp = acme
    ann = hubspot_api.add_contact("ann@acme.test")
    zed = hubspot_api.add_contact("zed@acme.test")
    config = write_config(
        tmp_path / "m.yaml",
        {
            "store": {"path": "state.db"},
            "connectors": {"crm": {"type": "hubspot", "base_url": hubspot_api.base_url}},
        },
    )
    env = clean_env(MAILPROBE_CONNECTORS__CRM__ACCESS_TOKEN=TOKEN, **engine_env(dns, smtp.port))
    done = cli("--config", str(config), "sync", "--connector", "crm", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert hubspot_api.contact(ann)["mailprobe_status"] == "valid"
    assert hubspot_api.contact(zed)["mailprobe_status"] == "invalid"
    assert TOKEN not in done.stderr


def test_sync_of_an_unknown_connector_is_exit_2_naming_it(
    runner: CliRunner, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "m.yaml", {"store": {"path": str(tmp_path / "s.db")}})
    result = runner.invoke(main, ["--config", str(config), "sync", "--connector", "nope"])
    assert result.exit_code == 2
    assert "no connector named 'nope'" in result.output and "drop" in result.output


# -- run -------------------------------------------------------------------------------------


class Output:
    """Reads a process's stderr in a thread; a test waits for a line (event, with a deadline)."""

    def __init__(self, stream: io.TextIOBase) -> None:
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: io.TextIOBase) -> None:
        for line in stream:
            with self._seen:
                self.lines.append(line.rstrip("\n"))
                self._seen.notify_all()

    def wait_for(self, text: str, timeout: float = 30) -> bool:
        with self._seen:
            return self._seen.wait_for(lambda: any(text in line for line in self.lines), timeout)

    def join(self) -> list[str]:
        self._thread.join(timeout=10)
        return self.lines


def test_run_without_config_uses_defaults_and_sigterm_exits_0(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "mailprobe.cli", "--log-format", "json", "run"],
        cwd=tmp_path,
        env=clean_env(),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    output = Output(process.stderr)
    try:
        assert output.wait_for("mailprobe running"), output.lines
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    lines = output.join()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert any("drop CSV files into" in r["message"] for r in records)
    assert any(r["message"] == "mailprobe stopped" for r in records)
    assert (tmp_path / "mailprobe-drop" / "inbox").is_dir()
    assert (tmp_path / "mailprobe.db").exists()


# -- logs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("calling with token hunter2-secret-value", "hunter2-secret-value"),
        ("headers={'Authorization': 'Bearer abc.def-ghi'}", "abc.def-ghi"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("retrying https://api.test/v3?api_key=k3y-v4lue&x=1", "k3y-v4lue"),
        ("proxy socks5://user:p4ssw0rd@proxy.test:1080", "p4ssw0rd"),
        (
            "key SG.abcdefghijk.lmnopqrstuvwxyz012345 refused",
            "SG.abcdefghijk.lmnopqrstuvwxyz012345",
        ),
        (f"token {WRONG_TOKEN} refused", WRONG_TOKEN),
    ],
)
def test_secret_mask_hides_configured_values_and_credential_shapes(line: str, secret: str) -> None:
    masked = SecretMask(["hunter2-secret-value"])(line)
    assert secret not in masked and MASK in masked


def _log_through(fmt: str, secrets: list[str]) -> str:
    stream = io.StringIO()
    handler = configure(level="INFO", fmt=fmt, secrets=secrets, stream=stream)
    try:
        log = logging.getLogger("mailprobe.test")
        log.info("pass finished", extra={"connector": "drop", "verified": 3, "note": "two words"})
        try:
            raise RuntimeError(f"server said no to {secrets[0]}")
        except RuntimeError:
            log.exception("failed", extra={"connector": "crm"})
    finally:
        logging.getLogger().removeHandler(handler)
    return stream.getvalue()


def test_text_log_lines_carry_key_values_and_no_secret() -> None:
    text = _log_through("text", ["s3cr3t-token-value"])
    first = text.splitlines()[0]
    assert " INFO mailprobe.test pass finished connector=drop verified=3 " in first
    assert 'note="two words"' in first
    assert "s3cr3t-token-value" not in text and "RuntimeError" in text


def test_json_log_lines_parse_and_carry_fields_and_no_secret() -> None:
    text = _log_through("json", ["s3cr3t-token-value"])
    records = [json.loads(line) for line in text.splitlines()]
    assert records[0]["message"] == "pass finished" and records[0]["verified"] == 3
    assert records[1]["level"] == "ERROR" and "RuntimeError" in records[1]["exception"]
    assert "s3cr3t-token-value" not in text


def test_secret_values_are_found_in_nested_settings(tmp_path: Path) -> None:
    settings = load_settings(
        write_config(tmp_path / "m.yaml", {"connectors": {"crm": {"type": "hubspot"}}}),
        api={"keys": ["api-key-1"]},
    )
    settings.connectors["crm"].access_token = type(settings.api.keys[0])("tok-123")  # type: ignore[union-attr]
    assert sorted(secret_values(settings)) == ["api-key-1", "tok-123"]


def test_every_service_command_has_help(runner: CliRunner) -> None:
    for command in ("run", "sync", "status", "init", "config"):
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0 and len(result.output) > 80
