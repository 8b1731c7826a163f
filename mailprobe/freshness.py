"""How long a result is reused, and which answer is kept when a new one arrives.

Pure decisions on values: the store calls `Freshness.decide()` inside the transaction that saves
a result. No I/O and no SQL here.

- `valid`, `catch_all`, `risky`: reused for `policy.fresh_days` (30 days), `invalid` 90 days.
- `unknown/greylisted`: retried after the server's delay when it named one (the engine already
  retried within its own `greylist.max_wait_s`), else after `greylist_retry_s`.
- `unknown/rate_limited` whose host's window is known (`retry_after_s`): retried when the
  window reopens, not on the blind back-off.
- Other retriable `unknown`s back off from `unknown_retry_min_s` (15 min), doubling per unknown
  in a row, to `unknown_retry_max_s` (24 h). Unknowns no retry can change soon
  (`unverifiable_provider`) wait the longest back-off at once.
- After `unknown_max_attempts` unknowns in a row retries stop: the unknown is kept like a
  catch-all answer (`fresh_days.catch_all`) and its action becomes `caution`.
- `internal_error` is never reused: it expires the moment it is saved.
- An `unknown` never replaces a definite answer (`valid`, `invalid`): the old answer is kept,
  and only the retry is scheduled.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from mailprobe.engine import RETRIABLE, Action, Reason, Status, VerificationResult

from .settings import AppSettings, PolicySettings

#: Answers an `unknown` must not overwrite in a CRM.
DEFINITE: frozenset[Status] = frozenset({Status.VALID, Status.INVALID})


@dataclass(frozen=True, slots=True)
class Cached:
    """What the store holds for one normalised address."""

    result: VerificationResult
    expires_at: datetime
    attempts: int  # unknown answers in a row


@dataclass(frozen=True, slots=True)
class Decision:
    """What to store after a verification: the answer to keep, until when, and why."""

    result: VerificationResult
    expires_at: datetime
    attempts: int
    kept_previous: bool  # the new answer was an unknown and an earlier definite one stays


class Freshness:
    """Expiry of results under one policy."""

    def __init__(self, policy: PolicySettings, *, greylist_retry_s: float | None = None) -> None:
        self.policy = policy
        self.greylist_retry_s = greylist_retry_s or policy.unknown_retry_min_s

    def lifetime(self, status: Status) -> timedelta:
        """Return how long a definite answer of `status` is reused."""
        days = self.policy.fresh_days
        by_status = {
            Status.VALID: days.valid,
            Status.CATCH_ALL: days.catch_all,
            Status.RISKY: days.risky,
            Status.INVALID: days.invalid,
            Status.UNKNOWN: days.catch_all,  # only for unknowns whose retries are spent
        }
        return timedelta(days=by_status[status])

    def backoff(self, attempts: int) -> timedelta:
        """Return the wait after `attempts` unknowns in a row: doubling from min to max."""
        low, high = self.policy.unknown_retry_min_s, self.policy.unknown_retry_max_s
        return timedelta(seconds=min(high, low * 2 ** max(0, attempts - 1)))

    def retry_wait(
        self, reason: Reason, attempts: int, *, server_delay_s: float | None = None
    ) -> timedelta:
        """Return when an unknown of `reason` is worth trying again."""
        if reason is Reason.GREYLISTED:
            # The server's own delay when it named one: asking sooner only restarts its clock.
            return timedelta(seconds=server_delay_s or self.greylist_retry_s)
        if reason is Reason.RATE_LIMITED and server_delay_s:
            # The engine learned the host's pace: ask when its window has room again.
            return timedelta(seconds=server_delay_s)
        if reason not in RETRIABLE:
            # The provider will answer the same way tomorrow: do not ask every 15 minutes.
            return timedelta(seconds=self.policy.unknown_retry_max_s)
        return self.backoff(attempts)

    def decide(
        self, previous: Cached | None, result: VerificationResult, *, now: datetime
    ) -> Decision:
        """Return what to store for `result`, given what the store held before."""
        if result.status is not Status.UNKNOWN:
            return Decision(result, now + self.lifetime(result.status), 0, kept_previous=False)
        keep = previous is not None and previous.result.status in DEFINITE
        kept = previous.result if keep and previous is not None else result
        if result.reason is Reason.INTERNAL_ERROR:
            # Our own failure says nothing about the address: never reuse it.
            attempts = previous.attempts if previous is not None else 0
            return Decision(kept, now, attempts, kept_previous=keep)
        attempts = (previous.attempts if previous is not None else 0) + 1
        if attempts >= self.policy.unknown_max_attempts:
            settled = kept if keep else replace(result, action=Action.CAUTION)
            return Decision(settled, now + self.lifetime(settled.status), attempts, keep)
        wait = self.retry_wait(result.reason, attempts, server_delay_s=result.retry_after_s)
        return Decision(kept, now + wait, attempts, keep)


def freshness_for(settings: AppSettings) -> Freshness:
    """Return the expiry rules: the policy, with greylisted retries after the engine's last wait."""
    delays = settings.engine.greylist.retry_delays_s
    return Freshness(settings.policy, greylist_retry_s=max(delays) if delays else None)
