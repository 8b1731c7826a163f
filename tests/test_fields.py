"""The canonical text of a field value, and the one comparison with what a CRM shows."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from mailprobe.connectors.base import FieldValue
from mailprobe.connectors.fields import field_text, shows_value

NOON = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        (98, "98"),
        (98.0, "98"),
        (2.5, "2.5"),
        ("valid", "valid"),
        (date(2026, 12, 27), "2026-12-27"),
        (datetime(2026, 11, 27, 12, 0, 0, 678_000, tzinfo=UTC), "2026-11-27T12:00:00Z"),
        (datetime(2026, 11, 27, 12, 0), "2026-11-27T12:00:00Z"),  # naive is UTC
    ],
)
def test_field_text_is_the_one_canonical_form(value: FieldValue, text: str) -> None:
    assert field_text(value) == text


@pytest.mark.parametrize(
    ("shown", "value", "same"),
    [
        ("valid", "valid", True),
        ("invalid", "valid", False),
        ("98", 98, True),
        ("98.0", 98, True),  # a number recorded in an older spelling
        ("lots", 98, False),
        ("false", False, True),
        ("false", True, False),
        ("1", True, True),  # a flag stored as a number
        ("0", False, True),
        ("2026-11-27T12:00:00Z", NOON, True),
        ("2026-11-27T12:00:00.000Z", NOON, True),  # the same second, with milliseconds
        ("2026-11-27T12:00:01Z", NOON, False),
        ("2026-11-27", NOON, True),  # a sink that keeps only the day (SendGrid Date fields)
        ("2026-11-28", NOON, False),
        ("27/11/2026", NOON, False),
        ("2026-11-27", NOON.date(), True),
        ("2026-11-26", NOON.date(), False),
        (None, None, True),
        ("", None, True),
        ("", "", True),
        (None, "a@gmail.com", False),
        ("a@gmail.com", None, False),
        ("", False, False),
    ],
)
def test_shows_value_decides_whether_the_crm_already_holds_a_value(
    shown: str | None, value: FieldValue, same: bool
) -> None:
    assert shows_value(shown, value) is same
