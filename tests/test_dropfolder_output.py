"""The drop folder as its users see it: what the log says, the plain-language columns, failed
files named by `status`, and unknown rows verified again and rewritten into the output."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import logging
import re
from pathlib import Path

import pytest
from mailprobe.connectors.csvcolumns import COLUMN_NAMES, Columns, summary
from mailprobe.connectors.csvdrop import DropFolder
from mailprobe.connectors.fields import FIELD_NAMES, smtp_reply_text
from mailprobe.engine.result import Reason, Status

from mailprobe.daemon import Daemon, sync_once
from mailprobe.pipeline import CsvDrop, Pipeline
from mailprobe.settings import AppSettings, PolicySettings
from mailprobe.store import RunOutcome, Store
from tests.fakes.net import IP1, IP2, Net
from tests.fakes.pipeline import Clock, FakeVerifier, Passes, drop_in, read_output
from tests.fakes.results import make_result
from tests.fakes.smtp import ScriptedSmtp

GREYLISTED = "451 4.7.1 <{}>: Recipient address rejected: Greylisted, try again in 300 seconds"


def drop_of(tmp_path: Path, columns: Columns = Columns.FULL) -> CsvDrop:
    return CsvDrop("drop", DropFolder(tmp_path / "drop", settle_s=5, columns=columns))


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


# -- the summary and the labels ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (Status.VALID, Reason.ACCEPTED, "Safe to send"),
        (
            Status.INVALID,
            Reason.MAILBOX_NOT_FOUND,
            "Mailbox does not exist (the server said 550 5.1.1 user unknown)",
        ),
        (Status.CATCH_ALL, Reason.ACCEPT_ALL, "Domain accepts every address: cannot confirm"),
        (
            Status.RISKY,
            Reason.DISPOSABLE,
            "Disposable address: do not send (the server said 550 5.1.1 user unknown)",
        ),
        (
            Status.UNKNOWN,
            Reason.TIMEOUT,
            "Mail server too slow: checking again later (the server said 550 5.1.1 user unknown)",
        ),
        (
            Status.UNKNOWN,
            Reason.UNVERIFIABLE_PROVIDER,
            "Provider does not allow verification: could not confirm, send with caution"
            " (the server said 550 5.1.1 user unknown)",
        ),
    ],
)
def test_summary_is_one_plain_sentence_per_answer(
    status: Status, reason: Reason, expected: str
) -> None:
    result = make_result("ann@x.test", status, reason)
    smtp = dataclasses.replace(result.checks.smtp, response_message="5.1.1 user unknown")
    result = dataclasses.replace(result, checks=dataclasses.replace(result.checks, smtp=smtp))
    assert summary(result) == expected


def test_server_reply_in_summary_loses_control_and_invisible_characters() -> None:
    result = make_result("ann@x.test", Status.INVALID, Reason.MAILBOX_NOT_FOUND)
    hostile = "5.1.1 \x1b[31mno\x00 such\r\nuser\u202e\x7f\x85 here\x07"
    smtp = dataclasses.replace(result.checks.smtp, response_message=hostile)
    result = dataclasses.replace(result, checks=dataclasses.replace(result.checks, smtp=smtp))
    assert (
        summary(result)
        == "Mailbox does not exist (the server said 550 5.1.1 [31mno such user here)"
    )
    assert smtp_reply_text(result) == "550 5.1.1 [31mno such user here"


async def test_full_output_has_summary_and_labels_before_the_codes(
    tmp_path: Path, store: Store, clock: Clock
) -> None:
    drop_in(
        tmp_path, "people.csv", [("name", "email"), ("Ann", "ann@x.test"), ("Bo", "bad@x.test")]
    )
    await Pipeline(store, FakeVerifier(clock), clock=clock).run_pass(drop_of(tmp_path))
    with (tmp_path / "drop" / "outbox" / "people.verified.csv").open(encoding="utf-8") as stream:
        header = next(csv.reader(stream))
    assert header == ["name", "email", *COLUMN_NAMES[Columns.FULL]]
    assert header[2:6] == [
        "mailprobe_summary",
        "mailprobe_status_label",
        "mailprobe_action_label",
        "mailprobe_reason_label",
    ]
    out = read_output(tmp_path, "people.verified.csv")
    assert [(r["mailprobe_status_label"], r["mailprobe_action_label"]) for r in out] == [
        ("Valid", "Send"),
        ("Invalid", "Do not send"),
    ]
    assert out[1]["mailprobe_reason_label"] == "Mailbox does not exist"
    assert out[1]["mailprobe_summary"] == "Mailbox does not exist (the server said 550 ok)"
    assert out[1]["mailprobe_reason"] == "mailbox_not_found"  # the codes stay for scripts


async def test_basic_columns_are_the_four_a_person_reads(
    tmp_path: Path, store: Store, clock: Clock
) -> None:
    drop_in(tmp_path, "people.csv", [("email", "city"), ("ann@x.test", "Oslo"), ("", "Rome")])
    drop = drop_of(tmp_path, Columns.BASIC)
    await Pipeline(store, FakeVerifier(clock), clock=clock).run_pass(drop)
    out = read_output(tmp_path, "people.verified.csv")
    assert list(out[0]) == [
        "email",
        "city",
        "mailprobe_summary",
        "mailprobe_status_label",
        "mailprobe_action_label",
        "mailprobe_suggestion",
    ]
    assert [r["mailprobe_summary"] for r in out] == ["Safe to send", "No address"]
    assert out[1]["mailprobe_status_label"] == "" and out[1]["city"] == "Rome"


def test_columns_setting_is_full_or_basic_and_reaches_the_drop_folder(tmp_path: Path) -> None:
    from mailprobe.errors import ConfigError
    from mailprobe.settings import load_settings
    from mailprobe.wiring import build_connectors

    settings = AppSettings(
        connectors={"drop": {"type": "csv", "folder": tmp_path, "columns": "basic"}}
    )
    drop = build_connectors(settings)["drop"]
    assert isinstance(drop, CsvDrop) and drop.folder.column_names == COLUMN_NAMES[Columns.BASIC]
    assert AppSettings().connectors["drop"].columns == "full"
    config = tmp_path / "m.yaml"
    config.write_text("connectors:\n  drop:\n    type: csv\n    columns: short\n")
    with pytest.raises(ConfigError, match="columns"):
        load_settings(config)


# -- what the log says -------------------------------------------------------------------------


async def test_log_says_seen_then_verifying_then_where_the_output_is(
    tmp_path: Path, store: Store, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailprobe")
    drop_in(tmp_path, "later.csv", [("email",), ("a@x.test",)], age_s=0)
    rows = [("email",), *((f"u{n}@x.test",) for n in range(1200)), ("bad@x.test",)]
    drop_in(tmp_path, "leads.csv", rows)
    pipeline = Pipeline(store, FakeVerifier(clock), clock=clock)

    report = await pipeline.run_pass(drop_of(tmp_path))

    said = messages(caplog)
    out = (tmp_path / "drop" / "outbox" / "leads.verified.csv").resolve()
    assert any(re.fullmatch(r"seen later\.csv, taking it in [45] s", m) for m in said)
    assert "verifying leads.csv: 1,201 addresses (1,201 to check, the rest known)" in said
    assert f"verified leads.csv: 1,201 rows: 1,200 valid, 1 invalid; output: {out}" in said
    assert report.wake_in_s is not None and 0 < report.wake_in_s <= 5
    caplog.clear()
    await pipeline.run_pass(drop_of(tmp_path))
    assert not any(m.startswith("seen later.csv") for m in messages(caplog))  # said once


async def test_failed_files_are_counted_by_the_pass_and_named_by_status(
    tmp_path: Path, store: Store, clock: Clock
) -> None:
    from click.testing import CliRunner

    from mailprobe.cli import main

    drop_in(tmp_path, "nope.csv", [("name", "phone"), ("Ann", "123")])
    drop_in(tmp_path, "fine.csv", [("email",), ("a@x.test",)])
    drop_in(tmp_path, "fixed.csv", [("name",), ("Ann",)])
    pipeline = Pipeline(store, FakeVerifier(clock), clock=clock)
    first = await pipeline.run_pass(drop_of(tmp_path))
    assert first.counts.failed == 2
    drop_in(tmp_path, "fixed.csv", [("email",), ("a@x.test",)])  # fixed and dropped again
    await pipeline.run_pass(drop_of(tmp_path))

    [failed] = store.failed_csv_files("drop")
    assert failed.name == "nope.csv" and failed.error.startswith("no email column found")
    config = tmp_path / "m.yaml"
    config.write_text(
        f"store:\n  path: {store.path}\nconnectors:\n  drop:\n    type: csv\n"
        f"    folder: {tmp_path / 'drop'}\n"
    )
    shown = CliRunner().invoke(main, ["--config", str(config), "status"])
    assert shown.exit_code == 0, shown.output
    assert "drop: failed file nope.csv (" in shown.output
    assert "no email column found" in shown.output and "fixed.csv" not in shown.output


# -- unknown rows verified again, the output rewritten -----------------------------------------


class ChangingAnswers:
    """Answers by_local_part, except that addresses listed in `unknown` are unknown until
    `resolve()` is called."""

    def __init__(self, unknown: dict[str, Reason]) -> None:
        self.unknown = dict(unknown)

    def resolve(self) -> None:
        self.unknown.clear()

    def __call__(self, email: str) -> tuple[Status, Reason | None]:
        from tests.fakes.pipeline import by_local_part

        if email in self.unknown:
            return Status.UNKNOWN, self.unknown[email]
        return by_local_part(email)


async def test_unknown_rows_are_retried_when_due_and_the_output_rewritten(
    tmp_path: Path, store: Store, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailprobe")
    answers = ChangingAnswers({"slow@x.test": Reason.TIMEOUT, "dns@y.test": Reason.DNS_ERROR})
    verifier = FakeVerifier(clock, answers)
    rows = [("id", "email"), ("1", "ann@x.test"), ("2", "slow@x.test"), ("3", "dns@y.test")]
    drop_in(tmp_path, "leads.csv", rows)
    pipeline = Pipeline(store, verifier, clock=clock)
    await pipeline.run_pass(drop_of(tmp_path))
    before = read_output(tmp_path, "leads.verified.csv")
    assert [r["mailprobe_action"] for r in before] == ["send", "retry", "retry"]
    answers.resolve()

    early = await pipeline.run_pass(drop_of(tmp_path), retry_only=True)  # not due yet
    assert early.counts.verified == 0 and read_output(tmp_path, "leads.verified.csv") == before
    clock.advance(minutes=16)
    verifier.seen.clear()
    report = await pipeline.run_pass(drop_of(tmp_path), retry_only=True)

    assert report.outcome is RunOutcome.OK
    assert sorted(verifier.seen) == ["dns@y.test", "slow@x.test"]  # ann@ was not asked again
    after = read_output(tmp_path, "leads.verified.csv")
    assert [
        (r["id"], r["email"], r["mailprobe_status"], r["mailprobe_summary"]) for r in after
    ] == [
        ("1", "ann@x.test", "valid", "Safe to send"),
        ("2", "slow@x.test", "valid", "Safe to send"),
        ("3", "dns@y.test", "valid", "Safe to send"),
    ]
    assert after[0] == before[0]
    out = (tmp_path / "drop" / "outbox" / "leads.verified.csv").resolve()
    assert (
        "leads.csv: retried 2 unknown addresses, 2 rows resolved; rewrote"
        f" {out} (revision 1): 3 rows: 3 valid; no rows left to retry"
    ) in messages(caplog)
    assert store.csv_files_due("drop", now=clock.now.replace(year=2100)) == []
    assert not list((tmp_path / "drop" / "outbox").glob(".*"))  # no temp file left


async def test_rewrite_keeps_hand_edits_and_a_gone_output_ends_the_retries(
    tmp_path: Path, store: Store, clock: Clock
) -> None:
    answers = ChangingAnswers({"slow@x.test": Reason.TIMEOUT})
    drop_in(tmp_path, "a.csv", [("email", "note"), ("slow@x.test", "x"), ("=cmd@x.test", "y")])
    drop_in(tmp_path, "b.csv", [("email",), ("slow@x.test",)])
    pipeline = Pipeline(store, FakeVerifier(clock, answers), clock=clock)
    await pipeline.run_pass(drop_of(tmp_path))
    out_a = tmp_path / "drop" / "outbox" / "a.verified.csv"
    edited = out_a.read_text(encoding="utf-8").replace(",x,", ",called them,")
    out_a.write_text(edited, encoding="utf-8")
    (tmp_path / "drop" / "outbox" / "b.verified.csv").unlink()  # the user took it away
    answers.resolve()
    clock.advance(minutes=16)

    await pipeline.run_pass(drop_of(tmp_path), retry_only=True)

    after = read_output(tmp_path, "a.verified.csv")
    assert [(r["email"], r["note"], r["mailprobe_status"]) for r in after] == [
        ("slow@x.test", "called them", "valid"),
        ("'=cmd@x.test", "y", "valid"),  # still neutralised, and its answer found again
    ]
    assert not (tmp_path / "drop" / "outbox" / "b.verified.csv").exists()
    assert store.csv_files_due("drop", now=clock.now.replace(year=2100)) == []


async def test_greylisting_server_deferred_rows_are_rewritten_with_final_answers(
    tmp_path: Path, store: Store, net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    """End to end: real DNS and SMTP on loopback; one server defers (451) then answers."""
    caplog.set_level(logging.INFO, logger="mailprobe")
    deferring = True

    def grey(recipient: str) -> str | None:
        return GREYLISTED.format(recipient) if deferring else None

    grey_server, plain = await net.serve(
        ScriptedSmtp(IP1, mailboxes={"ann@grey.test", "bob@grey.test"}, rcpt=grey),
        ScriptedSmtp(IP2, mailboxes={"cy@plain.test"}),
    )
    net.mx("grey.test", ("mx.grey.test", IP1))
    net.mx("plain.test", ("mx.plain.test", IP2))
    rows = [
        ("id", "name", "email"),
        ("1", "Ann", "ann@grey.test"),
        ("2", "Cy", "cy@plain.test"),
        ("3", "Nobody", "nobody@grey.test"),
        ("4", "Empty", ""),
        ("5", "Bob", "Bob@grey.test"),
        ("6", "Gone", "gone@plain.test"),
    ]
    drop_in(tmp_path, "leads.csv", rows)
    clock = Clock()
    async with net.verifier(greylist={"max_wait_s": 0}) as verifier:
        pipeline = Pipeline(store, verifier, clock=clock)
        first = await pipeline.run_pass(drop_of(tmp_path))
        assert first.outcome is RunOutcome.OK, first.error
        before = read_output(tmp_path, "leads.verified.csv")
        deferred = "Server asked to retry later (greylisting): checking again later (the server"
        assert [(r["mailprobe_status"], r["mailprobe_action"]) for r in before] == [
            ("unknown", "retry"),
            ("valid", "send"),
            ("unknown", "retry"),
            ("", ""),
            ("unknown", "retry"),
            ("invalid", "do_not_send"),
        ]
        assert before[0]["mailprobe_summary"].startswith(deferred)
        assert "451 4.7.1" in before[0]["mailprobe_summary"]
        plain_rcpts = len(plain.lines)

        deferring = False  # the server's greylisting window has passed
        clock.advance(seconds=299)
        assert (await pipeline.run_pass(drop_of(tmp_path), retry_only=True)).counts.verified == 0
        clock.advance(seconds=2)  # 300 s after: the delay the server named
        retry = await pipeline.run_pass(drop_of(tmp_path), retry_only=True)

    assert retry.outcome is RunOutcome.OK, retry.error
    assert retry.counts.verified == 3
    after = read_output(tmp_path, "leads.verified.csv")
    expected = [
        ("1", "Ann", "ann@grey.test", "valid", "send", "Safe to send"),
        ("2", "Cy", "cy@plain.test", "valid", "send", "Safe to send"),
        ("3", "Nobody", "nobody@grey.test", "invalid", "do_not_send", "Mailbox does not exist"),
        ("4", "Empty", "", "", "", "No address"),
        ("5", "Bob", "Bob@grey.test", "valid", "send", "Safe to send"),
        ("6", "Gone", "gone@plain.test", "invalid", "do_not_send", "Mailbox does not exist"),
    ]
    for row, want in zip(after, expected, strict=True):
        got = (
            row["id"],
            row["name"],
            row["email"],
            row["mailprobe_status"],
            row["mailprobe_action"],
            row["mailprobe_summary"].partition(" (")[0],
        )
        assert got == want
    assert after[1] == before[1] and after[5] == before[5]  # definite rows untouched
    assert "550 5.1.1" in after[2]["mailprobe_summary"]
    assert len(plain.lines) == plain_rcpts  # plain.test was not asked again
    assert "DATA" not in grey_server.commands
    assert any("rewrote" in m and "(revision 1)" in m for m in messages(caplog))


# -- the daemon's retry job ----------------------------------------------------------------------


async def test_daemon_retry_job_rewrites_drop_files_only_when_due(tmp_path: Path) -> None:
    policy = PolicySettings(unknown_retry_min_s=0.001)
    settings = AppSettings(
        store={"path": tmp_path / "state.db"},
        connectors={"drop": {"type": "csv", "folder": tmp_path / "drop", "schedule": "1h"}},
    )
    answers = ChangingAnswers({"slow@x.test": Reason.TIMEOUT})
    with Store(tmp_path / "state.db", policy=policy) as store:
        from mailprobe.wiring import build_connectors

        passes = Passes()
        daemon = Daemon(
            settings,
            store=store,
            connectors=build_connectors(settings),
            verifier=FakeVerifier(Clock(), answers),
            on_pass=passes,
        )
        await daemon._retry_job()  # nothing dropped yet: no retry pass at all
        assert passes.reports == []
        drop_in(tmp_path, "leads.csv", [("email",), ("slow@x.test",)])
        await daemon._pass_job("drop")
        answers.resolve()
        await daemon._retry_job()

        assert [(r.connector, r.outcome) for r in passes.reports] == [
            ("drop", RunOutcome.OK),
            ("drop", RunOutcome.OK),
        ]
        kinds = [row[0] for row in store.db.execute("SELECT kind FROM runs ORDER BY id")]
        assert kinds == ["pass", "retry"]
    assert read_output(tmp_path, "leads.verified.csv")[0]["mailprobe_status"] == "valid"


async def test_file_still_copying_brings_the_folders_next_pass_forward(tmp_path: Path) -> None:
    settings = AppSettings(
        store={"path": tmp_path / "state.db"},
        connectors={
            "drop": {"type": "csv", "folder": tmp_path / "drop", "schedule": "1h", "settle_s": 1}
        },
    )
    drop_in(tmp_path, "late.csv", [("email",), ("a@x.test",)], age_s=0)
    passes = Passes()
    with Store(tmp_path / "state.db") as store:
        from mailprobe.wiring import build_connectors

        daemon = Daemon(
            settings,
            store=store,
            connectors=build_connectors(settings),
            verifier=FakeVerifier(Clock()),
            on_pass=passes,
        )
        running = asyncio.create_task(daemon.run())
        await passes.wait_for(lambda reports: len(reports) >= 2)  # not in an hour: in a second
        daemon.request_stop()
        await asyncio.wait_for(running, 10)
    assert passes.reports[0].wake_in_s is not None and passes.reports[1].counts.written == 1
    assert read_output(tmp_path, "late.verified.csv")[0]["mailprobe_summary"] == "Safe to send"


async def test_sync_waits_for_a_file_still_being_copied_then_takes_it(tmp_path: Path) -> None:
    settings = AppSettings(
        store={"path": tmp_path / "state.db"},
        connectors={"drop": {"type": "csv", "folder": tmp_path / "drop", "settle_s": 0.5}},
    )
    drop_in(tmp_path, "late.csv", [("email",), ("a@x.test",)], age_s=0)
    with Store(tmp_path / "state.db") as store:
        from mailprobe.wiring import build_connectors

        [report] = await sync_once(
            settings,
            store=store,
            connectors=build_connectors(settings),
            verifier=FakeVerifier(Clock()),
        )
    assert report.outcome is RunOutcome.OK and report.wake_in_s is None
    assert report.counts.written == 1 and report.counts.pulled == 1
    assert read_output(tmp_path, "late.verified.csv")[0]["mailprobe_summary"] == "Safe to send"


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "state.db") as opened:
        yield opened


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_every_drop_column_is_documented() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in (*COLUMN_NAMES[Columns.FULL], "columns: basic"):
        assert name in readme, name
    assert set(FIELD_NAMES) <= set(COLUMN_NAMES[Columns.FULL])
