"""The one HTTP policy every connector follows: status mapping, Retry-After, back-off, windows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from mailprobe.connectors import http_policy
from mailprobe.connectors.errors import (
    ConnectorAuthError,
    ConnectorError,
    FatalConnectorError,
    RetriableConnectorError,
)
from mailprobe.connectors.http_policy import AnnouncedQuota, RetryPolicy, RollingWindow

from tests.fakes.sendgrid import FakeClock

NOW = datetime(2026, 12, 4, 17, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "also", "kind"),
    [
        (401, frozenset(), ConnectorAuthError),
        (403, frozenset(), ConnectorAuthError),
        (429, frozenset(), RetriableConnectorError),
        (500, frozenset(), RetriableConnectorError),
        (502, frozenset(), RetriableConnectorError),
        (503, frozenset(), RetriableConnectorError),
        (400, frozenset(), FatalConnectorError),
        (404, frozenset(), FatalConnectorError),
        (409, frozenset(), FatalConnectorError),
        (423, frozenset(), FatalConnectorError),
        (423, frozenset({423}), RetriableConnectorError),  # HubSpot's Locked passes with time
    ],
)
def test_error_class_maps_each_status(
    status: int, also: frozenset[int], kind: type[ConnectorError]
) -> None:
    assert http_policy.error_class(status, also_retriable=also) is kind


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("Fri, 04 Dec 2026 17:00:30 GMT", 30.0),  # IMF-fixdate
        ("Friday, 04-Dec-26 17:01:00 GMT", 60.0),  # obsolete RFC 850 form
        ("Fri Dec  4 17:00:10 2026", 10.0),  # obsolete asctime form, taken as GMT
        ("Fri, 04 Dec 2026 16:59:00 GMT", 0.0),  # already past: now
        ("soon", None),
        ("Fri, 99 Dec 2026 17:00:30 GMT", None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(
    header: str | None, seconds: float | None
) -> None:
    assert http_policy.retry_after_seconds(header, now=NOW) == seconds


RETRIABLE = RetriableConnectorError("crm", "busy")
FATAL = FatalConnectorError("crm", "bad request")


@pytest.mark.parametrize(
    ("error", "attempt", "wait"),
    [
        (RETRIABLE, 1, 1.0),
        (RETRIABLE, 2, 2.0),
        (RETRIABLE, 4, 8.0),
        (RETRIABLE, 5, None),  # the last attempt: give up
        (RetriableConnectorError("crm", "429", retry_after=3), 1, 3.0),
        (RetriableConnectorError("crm", "429", retry_after=60), 1, 60.0),
        (RetriableConnectorError("crm", "daily", retry_after=5400), 1, None),  # too long
        (FATAL, 1, None),
        (ConnectorAuthError("crm", "401"), 1, None),
    ],
)
def test_retry_policy_waits_backs_off_or_gives_up(
    error: ConnectorError, attempt: int, wait: float | None
) -> None:
    policy = RetryPolicy(max_attempts=5, backoff_s=1.0, backoff_cap_s=30.0, max_wait_s=60.0)
    assert policy.wait(error, attempt) == wait


def test_retry_policy_back_off_stops_at_its_cap() -> None:
    policy = RetryPolicy(backoff_s=1.0, backoff_cap_s=30.0)
    assert [policy.backoff(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


async def test_retrying_repeats_retriable_failures_then_returns() -> None:
    answers: list[object] = [RETRIABLE, RetriableConnectorError("crm", "429", retry_after=7), "ok"]
    clock = FakeClock(start=0)

    async def call() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return str(answer)

    assert await http_policy.retrying(call, RetryPolicy(), sleep=clock.sleep) == "ok"
    assert clock.slept == [1.0, 7.0]


async def test_retrying_raises_a_fatal_error_at_once() -> None:
    clock = FakeClock(start=0)

    async def call() -> str:
        raise FATAL

    with pytest.raises(FatalConnectorError):
        await http_policy.retrying(call, RetryPolicy(), sleep=clock.sleep)
    assert clock.slept == []


async def test_retrying_gives_up_after_max_attempts_with_the_last_error() -> None:
    calls = 0
    clock = FakeClock(start=0)

    async def call() -> str:
        nonlocal calls
        calls += 1
        raise RetriableConnectorError("crm", f"down {calls}")

    with pytest.raises(RetriableConnectorError, match="down 3"):
        await http_policy.retrying(call, RetryPolicy(max_attempts=3), sleep=clock.sleep)
    assert calls == 3 and clock.slept == [1.0, 2.0]


async def test_rolling_window_lets_n_calls_through_per_period() -> None:
    clock = FakeClock(start=0)
    window = RollingWindow(limit=2, period=10.0)
    for _ in range(5):
        await http_policy.pace([window], clock=clock, sleep=clock.sleep)
    assert clock.slept == [10.0, 10.0]  # calls at 0, 0, 10, 10, 20


async def test_pace_waits_for_the_tightest_of_several_windows() -> None:
    clock = FakeClock(start=0)
    every_call = RollingWindow(limit=100, period=10.0)
    searches = RollingWindow(limit=1, period=1.0)
    for _ in range(3):
        await http_policy.pace([every_call, searches], clock=clock, sleep=clock.sleep)
    assert clock.slept == [1.0, 1.0]


@pytest.mark.parametrize(
    ("remaining", "reset", "now", "wait"),
    [
        (5, 1030.0, 1000.0, 0.0),  # calls left: go
        (0, 1030.0, 1000.0, 30.0),  # none left: wait for the reset
        (0, 990.0, 1000.0, 0.0),  # reset already passed
        (None, 1030.0, 1000.0, 0.0),  # nothing announced
    ],
)
def test_announced_quota_waits_for_the_reset_only_when_none_are_left(
    remaining: float | None, reset: float, now: float, wait: float
) -> None:
    quota = AnnouncedQuota()
    quota.note("lists", remaining=remaining, reset=reset)
    assert quota.wait("lists", now=now) == wait
    assert quota.wait("lists", now=now) == 0.0  # waited out once; the next answer tells anew
