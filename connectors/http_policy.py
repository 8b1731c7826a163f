"""The one HTTP policy every connector follows: which statuses to retry, how long to wait, pacing.

A connector holds only what is its API's own (paths, bodies, error texts, which limit a 429
names); when to retry, how long to back off, how to read `Retry-After` and how to stay inside a
rate window are decided here, the same for every connector, as one REST stream base class gives
every stream the same back-off. Nothing here knows an API or an HTTP library: HubSpot's client
(in threads) and SendGrid's httpx both hand in plain statuses, header texts and callables.

    error_class(status)         401/403 auth, 429/5xx retriable, other 4xx fatal
    retry_after_seconds(text)   `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2026 07:28:00 GMT`
    RetryPolicy                 attempts, exponential back-off, the longest wait worth waiting
    retrying(call, policy)      run a call, waiting and repeating while it fails retriably
    RollingWindow, pace()       at most N calls in any T seconds, counted on our side
    AnnouncedQuota              the calls a server says are left until its reset time
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from .errors import (
    ConnectorAuthError,
    ConnectorError,
    FatalConnectorError,
    RetriableConnectorError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

#: Statuses worth repeating besides every 5xx: the server asked us to slow down.
RETRIABLE_STATUSES = frozenset({429})


def error_class(
    status: int, *, also_retriable: frozenset[int] = frozenset()
) -> type[ConnectorError]:
    """Return the ConnectorError class an unsuccessful HTTP status stands for.

    401 and 403 are credentials to fix; 429 and 5xx pass with time (so may statuses an API
    documents as passing, e.g. HubSpot's 423 Locked); any other status will not change on retry.
    """
    if status in (401, 403):
        return ConnectorAuthError
    if status in RETRIABLE_STATUSES or status in also_retriable or status >= 500:
        return RetriableConnectorError
    return FatalConnectorError


def retry_after_seconds(text: str | None, *, now: datetime) -> float | None:
    """Return the wait a `Retry-After` header asks for, or None when absent or unreadable.

    RFC 9110 §10.2.3 allows delay-seconds or an HTTP-date; a date already past means "now" (0).
    """
    if text is None or not text.strip():
        return None
    text = text.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" and obsolete forms: the RFC says GMT
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry a call that failed retriably."""

    max_attempts: int = 5  # calls in all, the first included
    backoff_s: float = 1.0  # the first wait when the server names none; doubled each time
    backoff_cap_s: float = 30.0
    #: The longest wait a call sits out; a longer one (a daily limit) ends the call, and the
    #: error's retry_after tells the caller when to come back.
    max_wait_s: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Return the wait after failed attempt `attempt` (1-based): exponential, capped."""
        return min(self.backoff_s * 2 ** (attempt - 1), self.backoff_cap_s)

    def wait(self, error: ConnectorError, attempt: int) -> float | None:
        """Return how long to wait before another attempt, or None to give up now."""
        if not isinstance(error, RetriableConnectorError) or attempt >= self.max_attempts:
            return None
        if error.retry_after is None:
            return self.backoff(attempt)
        return error.retry_after if error.retry_after <= self.max_wait_s else None


async def retrying(call: Callable[[], Awaitable[T]], policy: RetryPolicy, *, sleep: Sleep) -> T:
    """Return what `call` returns, repeating it while it raises a RetriableConnectorError.

    `call` raises ConnectorErrors only (it maps its library's errors itself); the last error,
    or the first that is not worth waiting for, propagates unchanged.
    """
    attempt = 1
    while True:
        try:
            return await call()
        except RetriableConnectorError as error:
            wait = policy.wait(error, attempt)
            if wait is None:
                raise
            log.warning("%s: %s; retrying in %.1f s", error.connector, error.message, wait)
        await sleep(wait)
        attempt += 1


class RollingWindow:
    """At most `limit` calls in any `period` seconds: a rolling window, as HubSpot counts.

    Written here because no installed library paces asyncio calls with an injectable clock; a
    token bucket would allow up to twice the limit inside one rolling window.
    """

    def __init__(self, limit: int, period: float) -> None:
        self._limit = max(1, limit)
        self._period = period
        self._times: deque[float] = deque()

    def delay(self, now: float) -> float:
        """Return how long until one more call fits in the window (0: it fits now)."""
        while self._times and self._times[0] <= now - self._period:
            self._times.popleft()
        if len(self._times) < self._limit:
            return 0.0
        return self._times[0] + self._period - now

    def record(self, now: float) -> None:
        """Count a call made at `now`."""
        self._times.append(now)


async def pace(windows: Sequence[RollingWindow], *, clock: Clock, sleep: Sleep) -> None:
    """Return when one more call fits in every window, counting it in each at one instant."""
    while True:
        now = clock()
        wait = max((window.delay(now) for window in windows), default=0.0)
        if wait <= 0:
            for window in windows:
                window.record(now)
            return
        await sleep(wait)


class AnnouncedQuota:
    """Calls a server says are left per bucket until its reset time (X-RateLimit-* headers)."""

    def __init__(self) -> None:
        self._left: dict[str, tuple[float, float]] = {}  # bucket → (remaining, reset epoch s)

    def note(self, bucket: str, *, remaining: float | None, reset: float | None) -> None:
        """Record what the last answer for `bucket` announced (both headers, or nothing)."""
        if remaining is not None and reset is not None:
            self._left[bucket] = (remaining, reset)

    def wait(self, bucket: str, *, now: float) -> float:
        """Return how long to wait before calling `bucket` again (0: call now)."""
        remaining, reset = self._left.get(bucket, (1.0, 0.0))
        if remaining > 0:
            return 0.0
        del self._left[bucket]  # waited out once; the next answer announces afresh
        return max(reset - now, 0.0)
