"""Per-host politeness: concurrent sessions, pauses between sessions, back-off, batch sizes.

A verifier that hammers a server gets blocked and then knows nothing. Limits are kept per MX IP
address, so domains that share a mail host share its limits. No I/O beyond asyncio waits.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from .settings import SmtpSettings

#: Back-off after a host says "too many" or 421: doubles each time, capped, with jitter.
BACKOFF_FIRST_S = 2.0
BACKOFF_MAX_S = 120.0


@dataclass(slots=True)
class _HostState:
    sessions: asyncio.Semaphore
    rcpt_limit: int
    next_start: float = 0.0  # monotonic time before which no new session starts
    strikes: int = 0  # consecutive "too many" answers, for the back-off
    opened: int = 0
    active: int = 0
    peak_active: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class HostThrottle:
    """Hands out sessions to MX addresses within their limits and learns from their answers."""

    def __init__(self, settings: SmtpSettings, *, rng: random.Random | None = None) -> None:
        self._settings = settings
        self._hosts: dict[str, _HostState] = {}
        self._rng = rng or random.Random()

    def _host(self, ip: str) -> _HostState:
        state = self._hosts.get(ip)
        if state is None:
            state = _HostState(
                sessions=asyncio.Semaphore(self._settings.max_sessions_per_host),
                rcpt_limit=self._settings.max_rcpt_per_session,
            )
            self._hosts[ip] = state
        return state

    @asynccontextmanager
    async def session(self, ip: str) -> AsyncIterator[None]:
        """Hold one of the host's session slots, after its pause and back-off have passed."""
        state = self._host(ip)
        async with state.sessions:
            async with state.lock:
                # Serialise start times so the minimum interval holds between any two sessions.
                delay = state.next_start - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                interval = self._settings.min_session_interval_ms / 1000
                state.next_start = max(state.next_start, time.monotonic() + interval)
            state.opened += 1
            state.active += 1
            state.peak_active = max(state.peak_active, state.active)
            try:
                yield
            finally:
                state.active -= 1

    def rcpt_limit(self, ip: str) -> int:
        """Return how many recipients one session with this host may carry."""
        return self._host(ip).rcpt_limit

    def learn_rcpt_limit(self, ip: str, accepted: int) -> None:
        """Remember that the host stopped taking recipients after `accepted` of them."""
        state = self._host(ip)
        state.rcpt_limit = max(1, min(state.rcpt_limit, accepted))

    def back_off(self, ip: str) -> float:
        """Delay the host's next session after a 421 or "too many"; return the wait in s."""
        state = self._host(ip)
        state.strikes += 1
        wait = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (state.strikes - 1))
        wait *= 0.5 + self._rng.random()  # jitter, so parallel runs do not return in step
        state.next_start = max(state.next_start, time.monotonic() + wait)
        return wait

    def succeeded(self, ip: str) -> None:
        """Forget the host's strikes after a session it served normally."""
        self._host(ip).strikes = 0

    def is_backing_off(self, ip: str) -> bool:
        """Return True while the host asked us to wait."""
        return self._host(ip).next_start > time.monotonic() + 0.001

    def stats(self) -> dict[str, dict[str, int]]:
        """Return sessions opened and peak concurrency per host, for benchmarks and logs."""
        return {
            ip: {"opened": s.opened, "peak_active": s.peak_active, "rcpt_limit": s.rcpt_limit}
            for ip, s in self._hosts.items()
        }
