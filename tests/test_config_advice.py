"""Configuration mistakes read as a person would write them; secrets in the file are flagged;
`mailprobe status` refuses a store path nothing can use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailprobe.cli import main

TOKEN = "pat-na1-0badc0de-1111-2222-3333-444455556666"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    for key in [k for k in os.environ if k.startswith("MAILPROBE_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def config_error(runner: CliRunner, yaml_text: str | None, **env: str) -> str:
    args = ["config"]
    if yaml_text is not None:
        Path("m.yaml").write_text(yaml_text, encoding="utf-8")
        args = ["--config", "m.yaml", "config"]
    result = runner.invoke(main, args, env=env)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    return result.output.strip()


@pytest.mark.parametrize(
    ("yaml_text", "env", "message"),
    [
        (
            "connectors:\n  drop:\n    type: csv\n    schedule: 0m\n",
            {},
            "mailprobe: connectors.drop.schedule: an interval must be longer than 0 (in m.yaml)",
        ),
        (
            None,
            {"MAILPROBE_ENGINE__SMTP__PORT": "abc"},
            "mailprobe: engine.smtp.port: must be a whole number "
            "(got 'abc'; from MAILPROBE_ENGINE__SMTP__PORT)",
        ),
        (
            "policy:\n  role_is_risky: maybe\n",
            {},
            "mailprobe: policy.role_is_risky: must be true or false (got 'maybe'; in m.yaml)",
        ),
        (
            "api:\n  rate_limit_per_minute: 0\n",
            {},
            "mailprobe: api.rate_limit_per_minute: must be at least 1 (got 0; in m.yaml)",
        ),
        (
            "connectors:\n  h:\n    type: hubspot\n    backfill: someday\n",
            {},
            "mailprobe: connectors.h.backfill: must be true or false, or a date (YYYY-MM-DD) "
            "(got 'someday'; in m.yaml)",
        ),
        (
            "engine:\n  smtp:\n    allowed_private_networks: [banana]\n",
            {},
            "mailprobe: engine.smtp.allowed_private_networks: 'banana' is not a network: write "
            "it as 10.0.0.0/8 or fd00::/8 (no host bits set after the prefix) (in m.yaml)",
        ),
        (
            "log:\n  level: LOUD\n",
            {},
            "mailprobe: log.level: must be 'DEBUG', 'INFO', 'WARNING' or 'ERROR' "
            "(got 'LOUD'; in m.yaml)",
        ),
        (
            "connectors:\n  x:\n    type: mailchimp\n",
            {},
            "mailprobe: connectors.x: type 'mailchimp' is not a connector type; "
            "use csv, hubspot or sendgrid",
        ),
    ],
)
def test_config_errors_read_as_sentences(
    runner: CliRunner, yaml_text: str | None, env: dict[str, str], message: str
) -> None:
    line = config_error(runner, yaml_text, **env)

    assert line == message
    for internal in ("Value error", "Input should", "unable to parse", "lax-or-strict"):
        assert internal not in line


def test_a_bad_value_of_a_secret_setting_is_never_echoed(runner: CliRunner) -> None:
    line = config_error(runner, "connectors:\n  h:\n    type: hubspot\n    access_token: [x]\n")

    assert line.startswith("mailprobe: connectors.h.access_token: must be text")
    assert "got" not in line


def test_token_only_in_the_environment_says_which_entry_to_add(runner: CliRunner) -> None:
    line = config_error(runner, None, MAILPROBE_CONNECTORS__HUBSPOT__ACCESS_TOKEN=TOKEN)

    assert (
        "add a `hubspot:` entry with `type: hubspot` under `connectors:` in mailprobe.yaml" in line
    )
    assert "each connector needs" not in line and TOKEN not in line


def test_token_for_a_connector_missing_from_the_file_names_the_file(runner: CliRunner) -> None:
    line = config_error(
        runner,
        "connectors:\n  drop: {type: csv}\n",
        MAILPROBE_CONNECTORS__CRM__ACCESS_TOKEN=TOKEN,
    )

    assert "m.yaml has no such connector" in line
    assert "add a `crm:` entry with `type: hubspot`" in line


def test_connector_without_a_type_in_the_file_asks_for_one(runner: CliRunner) -> None:
    line = config_error(runner, "connectors:\n  crm:\n    schedule: 1m\n")

    assert line == (
        "mailprobe: connectors.crm: needs a type (`type: csv`, `hubspot` or `sendgrid`) in m.yaml"
    )


def test_a_secret_written_into_the_file_gets_a_warning(runner: CliRunner) -> None:
    Path("m.yaml").write_text(
        f"connectors:\n  crm:\n    type: hubspot\n    access_token: {TOKEN}\n"
        "api:\n  keys: [a-long-api-key]\n",
        encoding="utf-8",
    )

    result = runner.invoke(main, ["--config", "m.yaml", "config"])

    assert result.exit_code == 0, result.output
    assert (
        "mailprobe: warning: m.yaml holds the secret connectors.crm.access_token; anyone who can "
        "read the file can use it. Set MAILPROBE_CONNECTORS__CRM__ACCESS_TOKEN in the environment"
        in result.output
    )
    assert "holds the secret api.keys" in result.output and "MAILPROBE_API__KEYS" in result.output
    assert TOKEN not in result.output


def test_a_secret_from_the_environment_gets_no_warning(runner: CliRunner) -> None:
    Path("m.yaml").write_text("connectors:\n  crm:\n    type: hubspot\n", encoding="utf-8")

    result = runner.invoke(
        main,
        ["--config", "m.yaml", "config"],
        env={"MAILPROBE_CONNECTORS__CRM__ACCESS_TOKEN": TOKEN},
    )

    assert result.exit_code == 0 and "warning" not in result.output


# -- status and the store path -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("store_path", "problem"),
    [
        ("a-folder", "is a folder; set store.path to a file inside it (e.g. mailprobe.db)"),
        ("a-file/state/mailprobe.db", "cannot be created: a-file is a file, not a folder"),
    ],
)
def test_status_with_an_unusable_store_path_exits_2_saying_why(
    runner: CliRunner, store_path: str, problem: str
) -> None:
    Path("a-folder").mkdir()
    Path("a-file").write_text("not a folder\n")
    Path("m.yaml").write_text(f"store:\n  path: {store_path}\n", encoding="utf-8")

    result = runner.invoke(main, ["status", "--config", "m.yaml"])

    assert result.exit_code == 2
    assert result.output == f"mailprobe: store {store_path}: {problem}\n"
