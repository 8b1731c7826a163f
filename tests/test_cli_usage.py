"""The command line as a new user meets it: options anywhere, help, order, columns, the store, logs.

`mailprobe` runs in a subprocess against the DNS and SMTP fakes of test_cli_verify (started
again for this module), as a user would run it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import sqlite3
import subprocess
from pathlib import Path

from click.testing import CliRunner

from mailprobe.cli import main
from tests.test_cli_verify import (
    ACME,
    HELO,
    World,
    _command,
    jsonl,
    mailprobe,
    one_line_error,
    outcome,
    world,  # noqa: F401  (the module's fixture)
)


def acme_server(world: World):  # noqa: F811
    return next(s for s in world.servers if s.host == ACME)


def engine_yaml(world: World, path: Path, extra: str = "") -> Path:  # noqa: F811
    path.write_text(
        "engine:\n"
        f"  helo_hostname: {HELO}\n"
        f"  dns: {{nameservers: ['{world.dns.host}'], port: {world.dns.port}}}\n"
        "  smtp:\n"
        f"    port: {world.smtp_port}\n"
        "    allowed_private_networks: ['127.0.0.0/8']\n"
        "  syntax: {allow_test_domains: true}\n" + extra,
        encoding="utf-8",
    )
    return path


def without_engine_env(world: World) -> dict[str, str]:  # noqa: F811
    return {k: v for k, v in world.env().items() if not k.startswith("MAILPROBE_ENGINE")}


# Global options, version, help ---------------------------------------------------------------


def test_config_after_the_subcommand_is_read(world: World, tmp_path: Path) -> None:  # noqa: F811
    config = engine_yaml(world, tmp_path / "settings.yaml")

    run = mailprobe(
        "verify", "--config", str(config), "john@acme.test",
        env=without_engine_env(world), cwd=tmp_path,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr
    assert outcome(json.loads(run.stdout)) == ("valid", "accepted")


def test_log_format_after_the_subcommand_gives_json_lines(
    world: World,  # noqa: F811
    tmp_path: Path,
) -> None:
    env = world.env(MAILPROBE_LOG__LEVEL="INFO")

    run = mailprobe("verify", "john@servfail.test", "--log-format", "json", env=env, cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stderr.splitlines() if line.strip()]
    assert any(r["message"] == "dns error" and r["domain"] == "servfail.test" for r in records)


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(main, ["--version"])

    assert result.exit_code == 0
    assert result.output.strip() == f"mailprobe {version('mailprobe')}"


def test_top_level_help_shows_each_summary_whole() -> None:
    result = CliRunner(env={"COLUMNS": "100"}).invoke(main, ["--help"])

    assert result.exit_code == 0
    commands = result.output.split("Commands:")[1]
    assert "..." not in commands
    # Compared without white space: help wraps lines, at hyphens too.
    joined = "".join(commands.split())
    for name, command in main.commands.items():
        summary = "".join(command.get_short_help_str(limit=1000).split())
        assert f"{name}{summary}" in joined
    assert "beforeorafterthecommand" in joined


def test_verify_help_shows_examples_and_exit_codes() -> None:
    result = CliRunner().invoke(main, ["verify", "--help"])

    assert result.exit_code == 0
    assert "mailprobe verify --file leads.csv --format csv > verified.csv" in result.output
    assert re.search(r"^\s+130\s+interrupted", result.output, re.M)
    assert re.search(r"^\s+2\s+a usage or configuration error", result.output, re.M)
    assert "--config" in result.output  # the global options are listed here too


# Output order and the email column ----------------------------------------------------------


def test_json_array_is_in_input_order(world: World, tmp_path: Path) -> None:  # noqa: F811
    # The tarpit's address finishes last; it must still come first.
    given = ["john@tarpit.test", "john@acme.test", "not-an-address", "nobody@acme.test"]

    run = mailprobe("verify", *given, env=world.env(), cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    assert [item["email"] for item in json.loads(run.stdout)] == given


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_email_column_picks_the_named_column(world: World, tmp_path: Path) -> None:  # noqa: F811
    table = write_csv(
        tmp_path / "leads.csv",
        [["Name", "Email", "Work Email"], ["John", "john@nowhere.test", "john@acme.test"]],
    )

    run = mailprobe(
        "verify", "--file", str(table), "--email-column", "work email", "--format", "csv",
        env=world.env(), cwd=tmp_path,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    assert rows[0]["Name"] == "John" and rows[0]["mailprobe_status"] == "valid"
    assert rows[0]["mailprobe_verified_email"] == "john@acme.test"


def test_csv_without_an_email_column_gets_the_drop_folder_message(
    world: World,  # noqa: F811
    tmp_path: Path,
) -> None:
    table = write_csv(tmp_path / "people.csv", [["Name", "Contact"], ["John", "john@acme.test"]])

    run = mailprobe("verify", "--file", str(table), env=world.env(), cwd=tmp_path)

    line = one_line_error(run)
    assert "no email column found" in line and "the header is: Name, Contact" in line
    assert "--email-column NAME" in line and "email_column" not in line.replace("--email-", "")


def test_email_column_that_is_not_there_names_the_header(
    world: World,  # noqa: F811
    tmp_path: Path,
) -> None:
    table = write_csv(tmp_path / "people.csv", [["Name", "Email"], ["John", "john@acme.test"]])

    run = mailprobe(
        "verify", "--file", str(table), "--email-column", "Mail", env=world.env(), cwd=tmp_path
    )

    line = one_line_error(run)
    assert "email column 'Mail' not found" in line and "Name, Email" in line


# The store: reuse, --fresh, --no-store ------------------------------------------------------


def test_verify_without_a_store_creates_none(world: World, tmp_path: Path) -> None:  # noqa: F811
    run = mailprobe("verify", "john@acme.test", env=world.env(), cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    assert not (tmp_path / "mailprobe.db").exists()


def create_store(tmp_path: Path) -> Path:
    from mailprobe.store import Store

    path = tmp_path / "mailprobe.db"
    Store(path).close()
    return path


def stored_statuses(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT normalized, status FROM results"))


def test_verify_saves_into_an_existing_store_and_reuses_fresh_answers(
    world: World,  # noqa: F811
    tmp_path: Path,
) -> None:
    store = create_store(tmp_path)
    server = acme_server(world)

    first = mailprobe("verify", "john@acme.test", "nobody@acme.test", env=world.env(), cwd=tmp_path)
    sessions = server.session_count
    again = mailprobe("verify", "john@acme.test", "nobody@acme.test", env=world.env(), cwd=tmp_path)

    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert stored_statuses(store) == {"john@acme.test": "valid", "nobody@acme.test": "invalid"}
    assert server.session_count == sessions  # both answers came from the store
    assert [outcome(d) for d in json.loads(again.stdout)] == [
        ("valid", "accepted"),
        ("invalid", "mailbox_not_found"),
    ]
    assert json.loads(again.stdout)[0]["verified_at"] == json.loads(first.stdout)[0]["verified_at"]


def test_verify_fresh_asks_the_server_again_and_saves_the_new_answer(
    world: World,  # noqa: F811
    tmp_path: Path,
) -> None:
    store = create_store(tmp_path)
    server = acme_server(world)
    first = mailprobe("verify", "john@acme.test", env=world.env(), cwd=tmp_path)
    sessions = server.session_count
    saved_first = stored_times(store)

    again = mailprobe("verify", "--fresh", "john@acme.test", env=world.env(), cwd=tmp_path)

    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert server.session_count > sessions
    assert stored_times(store) > saved_first  # the new answer replaced the stored one


def stored_times(path: Path) -> list[str]:
    """Return the stored answers' verification times (to the microsecond)."""
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT verified_at FROM results")]


def test_verify_no_store_leaves_the_store_untouched(
    world: World,  # noqa: F811
    tmp_path: Path,
) -> None:
    store = create_store(tmp_path)

    run = mailprobe("verify", "--no-store", "john@acme.test", env=world.env(), cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    assert stored_statuses(store) == {}


# Logs and the progress bar ------------------------------------------------------------------


def test_a_failing_domain_logs_one_line_not_one_per_address(
    world: World,  # noqa: F811
    tmp_path: Path,
) -> None:
    # servfail.test's addresses arrive spread over the input, in many groups.
    lines = [f"u{n}@servfail.test" if n % 20 == 0 else f"u{n}@acme.test" for n in range(400)]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = world.env(MAILPROBE_LOG__LEVEL="INFO")

    run = mailprobe(
        "verify", "--file", str(listing), "-q", "--format", "jsonl", env=env, cwd=tmp_path
    )

    assert run.returncode == 0, run.stderr
    assert len(jsonl(run.stdout)) == 400
    assert run.stderr.count("dns error") == 1, run.stderr


def run_on_a_terminal(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run mailprobe with stderr on a pseudo-terminal; return what the terminal received."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*_command(), *args], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=follower
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert process.wait(timeout=60) == 0
    return b"".join(chunks).decode("utf-8", "replace")


def test_log_lines_start_on_their_own_line_above_the_progress_bar(
    world: World,  # noqa: F811
    tmp_path: Path,
) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(
        "\n".join([f"u{n}@acme.test" for n in range(30)] + ["x@servfail.test"]), encoding="utf-8"
    )
    env = world.env(MAILPROBE_LOG__LEVEL="INFO", TERM="xterm", COLUMNS="120")

    shown = run_on_a_terminal(
        ["verify", "--file", str(listing), "--format", "jsonl"], env=env, cwd=tmp_path
    )

    assert "━" in shown  # the bar was drawn
    line = re.search(r"(.{0,12})\d{4}-\d\d-\d\dT\S+ INFO mailprobe.engine dns error", shown)
    assert line is not None, shown
    # Printed through the bar's console, the line starts after the bar is cleared
    # (carriage return, erase line), never glued to the bar's text.
    assert line.group(1).endswith(("\n", "\r", "\x1b[2K")), repr(line.group(1))
