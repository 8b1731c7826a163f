"""Per-host politeness: concurrent sessions, pauses between sessions, back-off, batch sizes.

A verifier that hammers a server gets blocked and then knows nothing. Limits are kept per MX IP
address, so domains that share a mail host share its limits. The configured limits are where we
start; what a host tells us (452 too many recipients, 421 too many connections, an error limit)
lowers them for the rest of the run. No I/O beyond asyncio waits.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from .settings import SmtpSettings

#: Back-off after a host says "too many" or 421: doubles each time, capped, with jitter.
BACKOFF_FIRST_S = 2.0
BACKOFF_MAX_S = 120.0


@dataclass(slots=True)
class _HostState:
    session_limit: int  # sessions at once: the setting, or fewer once the host said so
    rcpt_limit: int
    active: int = 0  # session slots held
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)
    next_start: float = 0.0  # monotonic time before which no new session starts
    strikes: int = 0  # consecutive "too many" answers, for the back-off
    opened: int = 0
    peak_active: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Slot:
    """One session slot held with a host, for telling the throttle what the host said of it."""

    __slots__ = ("_state",)

    def __init__(self, state: _HostState) -> None:
        self._state = state

    def one_too_many(self) -> int:
        """Return the host's session limit, lowered to the sessions we hold besides this one.

        For a session the host refused as one too many ("421 too many connections"); one at
        least, so a host that refuses even one still gets asked after its back-off.
        """
        state = self._state
        # Told while the slot is held: `active` still counts it, and no waiter has taken it.
        state.session_limit = max(1, min(state.session_limit, state.active - 1))
        return state.session_limit


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
                session_limit=self._settings.max_sessions_per_host,
                rcpt_limit=self._settings.max_rcpt_per_session,
            )
            self._hosts[ip] = state
        return state

    @asynccontextmanager
    async def session(self, ip: str) -> AsyncIterator[Slot]:
        """Hold one of the host's session slots, after its pause and back-off have passed."""
        state = self._host(ip)
        await self._take_slot(state)
        try:
            async with state.lock:
                # Serialise start times so the minimum interval holds between any two sessions.
                delay = state.next_start - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                interval = self._settings.min_session_interval_ms / 1000
                state.next_start = max(state.next_start, time.monotonic() + interval)
            state.opened += 1
            state.peak_active = max(state.peak_active, state.active)
            yield Slot(state)
        finally:
            state.active -= 1
            self._hand_over(state)

    async def _take_slot(self, state: _HostState) -> None:
        """Wait for a free slot, first come first served (a semaphore whose size can shrink)."""
        if state.active < state.session_limit and not state.waiting:
            state.active += 1
            return
        turn = asyncio.get_running_loop().create_future()
        state.waiting.append(turn)
        try:
            await turn  # _hand_over counted the slot as ours before waking us
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                state.active -= 1  # handed a slot just as we were cancelled: pass it on
                self._hand_over(state)
            else:
                state.waiting.remove(turn)
            raise

    def _hand_over(self, state: _HostState) -> None:
        while state.waiting and state.active < state.session_limit:
            turn = state.waiting.popleft()
            if not turn.done():
                state.active += 1
                turn.set_result(None)

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
        """Return sessions opened, peak concurrency and learned limits per host."""
        return {
            ip: {
                "opened": s.opened,
                "peak_active": s.peak_active,
                "session_limit": s.session_limit,
                "rcpt_limit": s.rcpt_limit,
            }
            for ip, s in self._hosts.items()
        }
