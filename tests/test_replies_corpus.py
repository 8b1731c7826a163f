"""The reply classifier against shared/corpus/smtp-replies.csv: every labelled row must pass."""

from __future__ import annotations

import csv

import pytest
from mailprobe.engine.replies import classify, parse_reply
from mailprobe.engine.result import Stage

from tests.shared import corpus_file


def _rows() -> list[dict[str, str]]:
    with corpus_file("smtp-replies.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_corpus_replies_classify_as_labelled() -> None:
    """Report every mismatching row at once, so one run shows the whole picture."""
    rows = _rows()
    failures = []
    for number, row in enumerate(rows, start=2):
        reply = parse_reply(int(row["code"]), row["message"].replace("\\n", "\n"))
        verdict = classify(Stage(row["stage"]), reply)
        got = (str(verdict.status), str(verdict.reason))
        expected = (row["expected_status"], row["expected_reason"])
        if got != expected:
            failures.append(f"line {number}: {row['stage']} {reply} -> {got}, want {expected}")
    assert rows, "the corpus is empty"
    assert not failures, f"{len(failures)}/{len(rows)} rows wrong:\n" + "\n".join(failures)


def test_corpus_greylisted_rows_carry_the_servers_delay_when_named() -> None:
    for row in _rows():
        if row["expected_reason"] != "greylisted":
            continue
        reply = parse_reply(int(row["code"]), row["message"].replace("\\n", "\n"))
        verdict = classify(Stage(row["stage"]), reply)
        if "minutes" in row["message"] or "seconds" in row["message"]:
            assert verdict.retry_after_s is not None, row["message"]


@pytest.mark.parametrize("stage", ["connect", "ehlo", "mail"])
def test_corpus_replies_before_rcpt_are_never_invalid(stage: str) -> None:
    for row in _rows():
        if row["stage"] == stage:
            reply = parse_reply(int(row["code"]), row["message"].replace("\\n", "\n"))
            assert str(classify(Stage(stage), reply).status) in {"unknown", "valid"}, row
