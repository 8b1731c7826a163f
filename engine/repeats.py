"""Saying a recurring problem once: one log line per key (a domain) per window, not per address.

A file with 5,000 addresses at a domain whose DNS fails would otherwise log the same failure
each time a new group of its addresses is routed. No I/O here: the caller logs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable


class Repeats:
    """Decides when a problem seen again for the same key is worth saying again."""

    def __init__(
        self,
        *,
        window_s: float = 600.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window_s = window_s
        self._max_keys = max_keys
        self._clock = clock
        self._said: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()  # when, hushed since

    def due(self, key: Hashable) -> int | None:
        """Return None to stay quiet, else how many repeats were hushed since it was last said."""
        now = self._clock()
        said = self._said.get(key)
        if said is not None and now - said[0] < self._window_s:
            self._said[key] = (said[0], said[1] + 1)
            return None
        self._said.pop(key, None)
        self._said[key] = (now, 0)  # last: the dict's order is the order of saying
        if len(self._said) > self._max_keys:
            self._said.popitem(last=False)
        return said[1] if said is not None else 0
