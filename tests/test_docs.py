"""Docs stay honest: every command has help and a place in the README; labels and bands exist."""

from pathlib import Path

import pytest
from click.testing import CliRunner
from mailprobe.connectors.fields import FIELD_NAMES, REASON_LABELS
from mailprobe.engine.result import Reason
from mailprobe.engine.score import BASE_SCORE

from mailprobe.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_cli_command_has_help_and_is_in_the_readme(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert main.commands[command].help
    assert (
        f"mailprobe {command}" in README or f"mailprobe --config mailprobe.yaml {command}" in README
    )


def test_readme_set_up_commands_are_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"```sh\n{ci}\n```" in README


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_has_a_crm_label_a_score_and_a_readme_mention(reason: Reason) -> None:
    assert REASON_LABELS[reason]
    assert reason in BASE_SCORE
    assert f"`{reason}`" in README


@pytest.mark.parametrize("field", FIELD_NAMES)
def test_every_crm_field_is_documented(field: str) -> None:
    assert field in README
