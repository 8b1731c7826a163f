"""Per-host politeness: concurrent sessions, pauses between sessions, back-off, batch sizes.

A verifier that hammers a server gets blocked and then knows nothing. Limits are kept per MX IP
address, so domains that share a mail host share its limits. The configured limits are where we
start; what a host tells us (452 too many recipients, 421 too many connections, an error limit)
lowers them for the rest of the run. Per-time limits (Postfix anvil: so many recipients or
sessions a minute) are learned as a pace: the recipients and sessions the host took within its
window, and no session starts before the window has room again. No I/O beyond asyncio waits.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from .settings import SmtpSettings

#: Back-off after a host says "too many" or 421: doubles each time, capped, with jitter.
BACKOFF_FIRST_S = 2.0
BACKOFF_MAX_S = 120.0
#: Hosts whose state is kept; the least recently used idle ones are forgotten past it.
MAX_HOSTS = 10_000
#: Recipient and session times kept per host for its pace (a host's rate is rarely higher).
_MAX_TIMES = 1_000


class TooSlow(Exception):
    """The host's pace would make a session wait longer than its caller may: `wait_s`."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"the host's pace asks for {wait_s:.1f} s")
        self.wait_s = wait_s


@dataclass(slots=True)
class _HostState:
    session_limit: int  # sessions at once: the setting, or fewer once the host said so
    rcpt_limit: int
    active: int = 0  # session slots held
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)
    next_start: float = 0.0  # monotonic time before which no new session starts
    strikes: int = 0  # consecutive "too many" answers, for the back-off
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    rcpt_rate: int | None = None  # recipients per window the host takes, once it said so
    session_rate: int | None = None  # sessions per window, once it said so
    sent: deque[float] = field(default_factory=lambda: deque(maxlen=_MAX_TIMES))  # RCPT times
    started: deque[float] = field(default_factory=lambda: deque(maxlen=_MAX_TIMES))  # sessions
    greeted_at: float = float("-inf")  # when the host last took a session of ours

    def idle(self) -> bool:
        """Return True when nothing holds or waits for the host (its state may be dropped)."""
        return not self.active and not self.waiting


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

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        rng: random.Random | None = None,
        window_s: float = 60.0,
    ) -> None:
        self._settings = settings
        self._hosts: OrderedDict[str, _HostState] = OrderedDict()
        self._rng = rng or random.Random()
        self._window_s = window_s

    def _host(self, ip: str) -> _HostState:
        state = self._hosts.get(ip)
        if state is None:
            state = _HostState(
                session_limit=self._settings.max_sessions_per_host,
                rcpt_limit=self._settings.max_rcpt_per_session,
            )
            self._hosts[ip] = state
            self._forget_idle()
        else:
            self._hosts.move_to_end(ip)
        return state

    def _forget_idle(self) -> None:
        """Drop the least recently used idle hosts past MAX_HOSTS: a daemon meets many hosts."""
        while len(self._hosts) > MAX_HOSTS:
            ip = next((ip for ip, state in self._hosts.items() if state.idle()), None)
            if ip is None:
                return
            del self._hosts[ip]

    @asynccontextmanager
    async def session(self, ip: str, *, patience_s: float | None = None) -> AsyncIterator[Slot]:
        """Hold one of the host's session slots, after its pause and back-off have passed.

        Raises TooSlow when the host's learned pace would hold the session past `patience_s`
        (a back-off is always waited: it is short and bounded).
        """
        state = self._host(ip)
        await self._take_slot(state)
        try:
            async with state.lock:
                # Serialise start times so the minimum interval holds between any two sessions.
                while (delay := self._ready_at(state) - time.monotonic()) > 0:
                    if patience_s is not None and delay > patience_s and self.paced(ip):
                        raise TooSlow(delay)
                    await asyncio.sleep(delay)
                interval = self._settings.min_session_interval_ms / 1000
                state.next_start = max(state.next_start, time.monotonic() + interval)
                state.started.append(time.monotonic())
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
        """Return how many recipients one session with this host may carry now (its pace too)."""
        state = self._host(ip)
        if state.rcpt_rate is None:
            return state.rcpt_limit
        room = state.rcpt_rate - len(self._recent(state.sent))
        return max(1, min(state.rcpt_limit, room))

    def _recent(self, times: deque[float]) -> deque[float]:
        """Return `times` without those older than the host's window (dropped for good)."""
        oldest = time.monotonic() - self._window_s
        while times and times[0] <= oldest:
            times.popleft()
        return times

    def _ready_at(self, state: _HostState) -> float:
        """Return when the host may get its next session: back-off, pause and pace passed."""
        ready = state.next_start
        for rate, times in ((state.rcpt_rate, state.sent), (state.session_rate, state.started)):
            if rate is not None and len(self._recent(times)) >= rate:
                # Full: room comes back as the oldest of the last `rate` leaves the window.
                ready = max(ready, times[-rate] + self._window_s)
        return ready

    def wait_s(self, ip: str) -> float:
        """Return how long the next session with the host must wait for its pace or back-off."""
        return max(0.0, self._ready_at(self._host(ip)) - time.monotonic())

    def sent(self, ip: str, recipients: int) -> None:
        """Count recipients a session asked the host about, for its per-time limit."""
        self._host(ip).sent.extend([time.monotonic()] * recipients)

    def learn_rcpt_rate(self, ip: str) -> int:
        """Remember that the host limits recipients per window to those it took; return it.

        For "450 4.7.1 Error: too many recipients from <ip>" (Postfix anvil): what it took in
        the window is its rate; the next session waits until the window has room.
        """
        state = self._host(ip)
        taken = max(1, len(self._recent(state.sent)))
        state.rcpt_rate = min(state.rcpt_rate or taken, taken)
        return state.rcpt_rate

    def learn_session_rate(self, ip: str) -> int | None:
        """Remember the sessions per window a host took before it refused this one; return it.

        None when this session was the window's first: a host that refuses even that one
        limits nothing we can pace (its back-off handles it).
        """
        state = self._host(ip)
        taken = len(self._recent(state.started)) - 1  # the refused session is the last one
        if taken < 1 or state.greeted_at < time.monotonic() - self._window_s:
            return None  # it took none of them: it is not our pace it refuses
        state.session_rate = min(state.session_rate or taken, taken)
        return state.session_rate

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

    def greeted(self, ip: str) -> None:
        """Remember that the host took a session (greeted us), for learning its pace."""
        self._host(ip).greeted_at = time.monotonic()

    def succeeded(self, ip: str) -> None:
        """Forget the host's strikes after a session it served normally."""
        self._host(ip).strikes = 0

    def paced(self, ip: str) -> bool:
        """Return True once the host told us a limit per time (its pace is known)."""
        state = self._host(ip)
        return state.rcpt_rate is not None or state.session_rate is not None

    def load(self, ip: str) -> int:
        """Return the sessions held or waited for with the host, to spread load over hosts."""
        state = self._hosts.get(ip)
        return 0 if state is None else state.active + len(state.waiting)
