"""The mailprobe_* columns of a verified CSV: which ones (`full` or `basic`) and what they say.

A verified file is opened by people as well as scripts. Next to the field codes every CRM gets
(connectors/fields.py) it carries the labels HubSpot shows for them and a one-line summary in
plain language, built from those same labels: each reason's phrase is written once, in
fields.py. No file handling here (csvdrop.py), no SMTP, no database.
"""

from __future__ import annotations

from enum import StrEnum

from mailprobe.engine.result import Action, Status, VerificationResult

from .base import FieldValue
from .fields import (
    ACTION_LABELS,
    FIELD_NAMES,
    REASON_LABELS,
    STATUS_LABELS,
    smtp_reply_text,
)

SUMMARY = "mailprobe_summary"
STATUS_LABEL = "mailprobe_status_label"
ACTION_LABEL = "mailprobe_action_label"
REASON_LABEL = "mailprobe_reason_label"

#: What a row without an address says instead of a verification.
NO_ADDRESS = "No address"
#: Longest server reply quoted in a summary; the full reply is in mailprobe_smtp_reply.
_QUOTED_REPLY = 200


class Columns(StrEnum):
    """How many mailprobe_* columns a verified file gets."""

    FULL = "full"  # the summary, the labels, then every field code (for scripts and imports)
    BASIC = "basic"  # what a person reads: summary, status, recommendation, suggested fix


PLAIN_NAMES: tuple[str, ...] = (SUMMARY, STATUS_LABEL, ACTION_LABEL, REASON_LABEL)

COLUMN_NAMES: dict[Columns, tuple[str, ...]] = {
    Columns.FULL: (*PLAIN_NAMES, *FIELD_NAMES),
    Columns.BASIC: (SUMMARY, STATUS_LABEL, ACTION_LABEL, "mailprobe_suggestion"),
}

#: Every column a verified file may carry (the in-place update of a file dropped again).
ALL_NAMES: tuple[str, ...] = COLUMN_NAMES[Columns.FULL]


def summary(result: VerificationResult) -> str:
    """Return one plain sentence for a salesperson: can I send, and why (with the server's words).

    "Safe to send"; "Mailbox does not exist (the server said 550 5.1.1 User unknown)";
    "Domain accepts every address: cannot confirm"; "Mail server too slow: checking again later".
    """
    if result.status is Status.VALID:
        return "Safe to send"
    label = REASON_LABELS[result.reason]
    if result.status is Status.CATCH_ALL:
        return f"{label}: cannot confirm"  # its 250 was said to every address: nothing to quote
    if result.status is Status.INVALID:
        text = label
    elif result.status is Status.RISKY:
        text = f"{label}: {ACTION_LABELS[result.action].lower()}"
    elif result.action is Action.RETRY:
        text = f"{label}: checking again later"
    else:
        text = f"{label}: could not confirm, send with caution"
    reply = smtp_reply_text(result)
    smtp = result.checks.smtp
    # Quote a refusal or deferral; a 250 explains nothing (a full or role mailbox said it too).
    if reply and smtp is not None and (smtp.response_code or 0) >= 400:
        quoted = reply if len(reply) <= _QUOTED_REPLY else reply[: _QUOTED_REPLY - 3] + "..."
        text += f" (the server said {quoted})"
    return text


def plain_values(result: VerificationResult) -> dict[str, FieldValue]:
    """Return the summary and the labels HubSpot shows for the status, action and reason."""
    return {
        SUMMARY: summary(result),
        STATUS_LABEL: STATUS_LABELS[result.status],
        ACTION_LABEL: ACTION_LABELS[result.action],
        REASON_LABEL: REASON_LABELS[result.reason],
    }


def no_address_values() -> dict[str, FieldValue]:
    """Return a row's columns when its email cell is empty: "No address", nothing verified."""
    return {name: None for name in ALL_NAMES} | {SUMMARY: NO_ADDRESS}
