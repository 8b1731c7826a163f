"""Per-caller rate limits: a token bucket per API key (or client address without keys).

Owns only the arithmetic of the buckets; the 429 answer and its Retry-After are the endpoints'.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    """Token buckets per caller: `per_minute` tokens a minute, in bursts of up to as many.

    Hand-written: no installed library limits rates; a bucket is two numbers.
    """

    _MAX_CALLERS = 10_000

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # caller → (tokens, when)

    def take(self, caller: str, cost: int = 1) -> float:
        """Return 0 and take `cost` tokens when the caller may go ahead, else seconds to wait.

        A cost above the capacity is charged as the capacity, so a batch is never refused
        forever.
        """
        now = self._clock()
        tokens, then = self._buckets.get(caller, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        cost_f = min(float(cost), self.capacity)
        if len(self._buckets) >= self._MAX_CALLERS:
            self._forget_full(now)
        if tokens >= cost_f:
            self._buckets[caller] = (tokens - cost_f, now)
            return 0.0
        self._buckets[caller] = (tokens, now)
        return (cost_f - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: they hold nothing a fresh bucket would not."""
        self._buckets = {
            caller: (tokens, then)
            for caller, (tokens, then) in self._buckets.items()
            if tokens + (now - then) * self.rate < self.capacity
        }
