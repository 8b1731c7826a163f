"""Whether our resolver can be believed when it says a domain does not exist.

Owns two guards against "the problem is us": `ResolverSanity` asks the resolver about canary
names that must exist and one random name that must not, and `ListGuard` watches one run's
distinct domains for mass DNS failure of one kind. While either distrusts the answers, a
verdict derived from DNS alone (domain_not_found, no_mail_server, null_mx, unroutable_mx) becomes
unknown/dns_error: a lying resolver must never turn good leads into "invalid". No SMTP here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .errors import DnsError
from .lookup import Lookup, Records
from .result import Reason
from .settings import DnsSettings

log = logging.getLogger("mailprobe.engine")

#: Reasons that rest on DNS answers alone: only issued while the resolver is trusted.
DNS_VERDICTS = frozenset(
    {Reason.DOMAIN_NOT_FOUND, Reason.NO_MAIL_SERVER, Reason.NULL_MX, Reason.UNROUTABLE_MX}
)

#: The longest a DNS verdict waits for the list guard's judgement.
MAX_HOLD_S = 3.0

ADVICE = (
    "point engine.dns.nameservers at a resolver that answers for the internet (e.g. a local "
    "unbound, or your provider's recursive resolver), then run `mailprobe doctor`"
)


@dataclass(frozen=True, slots=True)
class ResolverHealth:
    """The last resolver check: trusted or not, what is wrong and what to do about it."""

    trusted: bool
    problem: str | None = None
    advice: str | None = None
    dnssec: bool = False  # some canary answer carried the AD flag
    checked_at: float = 0.0


TRUSTED = ResolverHealth(trusted=True)


class ResolverSanity:
    """Checks the resolver against canaries and a made-up name; the answer holds for a while."""

    def __init__(
        self,
        settings: DnsSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        announce: bool = True,
    ) -> None:
        self._settings = settings
        self._announce_changes = announce  # False: the caller reports the health itself
        self._lookup = Lookup(settings)
        self._clock = clock
        self._last: ResolverHealth | None = None
        self._pending: asyncio.Task[ResolverHealth] | None = None

    @property
    def enabled(self) -> bool:
        """Return True when there is anything to check (canaries or a zone for made-up names)."""
        return bool(self._settings.canaries or self._settings.nxdomain_zone)

    @property
    def last(self) -> ResolverHealth | None:
        """Return the last check's health, however old, or None before the first."""
        return self._last

    async def health(self, *, fresh: bool = False) -> ResolverHealth:
        """Return the resolver's health, checked again when older than check_interval_s."""
        if not self.enabled:
            return TRUSTED
        last = self._last
        age_limit = self._settings.check_interval_s
        if not fresh and last is not None and self._clock() - last.checked_at < age_limit:
            return last
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(self._check())
        # Shielded: one caller giving up must not cancel the check the others wait for.
        return await asyncio.shield(self._pending)

    async def trusted(self) -> bool:
        """Return True when DNS answers may decide a verdict now."""
        return (await self.health()).trusted

    async def _check(self) -> ResolverHealth:
        """Ask the canaries and a made-up name; log when trust is lost or regained, once."""
        canaries, made_up = await asyncio.gather(self._ask_canaries(), self._ask_made_up())
        problem = _canary_problem(self._settings.canaries, canaries) or _hijack_problem(made_up)
        dnssec = any(isinstance(r, Records) and r.authenticated for r in canaries)
        health = ResolverHealth(
            trusted=problem is None,
            problem=problem,
            advice=ADVICE if problem else None,
            dnssec=dnssec,
            checked_at=self._clock(),
        )
        if self._announce_changes:
            self._announce(health)
        self._last = health
        return health

    async def _ask_canaries(self) -> list[Records | DnsError]:
        asks = [self._lookup.ask(name, "A") for name in self._settings.canaries]
        answers = await asyncio.gather(*asks, return_exceptions=True)
        return [_answer(answer) for answer in answers]

    async def _ask_made_up(self) -> Records | DnsError | None:
        zone = self._settings.nxdomain_zone.strip(".")
        if not zone:
            return None
        # Random, so no cache on the way can hold the answer; long, so no one registered it.
        name = f"mailprobe-nx-{secrets.token_hex(8)}.{zone}"
        try:
            return await self._lookup.ask(name, "A")
        except DnsError as exc:
            return exc

    def _announce(self, health: ResolverHealth) -> None:
        was = self._last.trusted if self._last is not None else True
        if was and not health.trusted:
            log.warning(
                "DNS resolver not trusted: %s. Until it is fixed, no address is called invalid "
                "from DNS answers (they are unknown/dns_error). To fix: %s.",
                health.problem,
                health.advice,
                extra={"problem": health.problem},
            )
        elif not was and health.trusted:
            log.warning("DNS resolver trusted again: DNS answers decide verdicts once more")


def _answer(answer: object) -> Records | DnsError:
    if isinstance(answer, Records | DnsError):
        return answer
    raise answer if isinstance(answer, BaseException) else TypeError(answer)


def _canary_problem(names: list[str], answers: list[Records | DnsError]) -> str | None:
    """Return what is wrong when fewer than half the canaries resolve, else None.

    Half, not all: a provider renaming one MX host must not distrust every resolver.
    """
    if not names:
        return None
    resolved = [r for r in answers if isinstance(r, Records) and r.values]
    if len(resolved) >= math.ceil(len(names) / 2):
        return None
    failed = [
        f"{name}: {_what(answer)}" for name, answer in zip(names, answers, strict=True)
        if not (isinstance(answer, Records) and answer.values)
    ]  # fmt: skip
    return (
        f"it denies names that exist ({len(failed)} of {len(names)} canaries: "
        + "; ".join(failed)
        + ")"
    )


def _hijack_problem(answer: Records | DnsError | None) -> str | None:
    """Return what is wrong when a made-up name got addresses (NXDOMAIN hijacking), else None."""
    if isinstance(answer, Records) and answer.values:
        return (
            f"it invents answers for names that do not exist ({answer.name} resolved to "
            f"{', '.join(answer.values)}: NXDOMAIN hijacking)"
        )
    return None


def _what(answer: Records | DnsError) -> str:
    if isinstance(answer, DnsError):
        return answer.detail or "no answer"
    return "NXDOMAIN" if answer.nxdomain else "no address"


class ListGuard:
    """One run's distinct domains and how DNS answered them; trips when too many fail alike.

    A DNS verdict waits until the guard has seen list_guard_min_domains domains, or every domain
    of a run whose input ended, so the first answers of a mass failure are judged with the rest.
    """

    def __init__(self, settings: DnsSettings) -> None:
        self._min = settings.list_guard_min_domains
        self._share = settings.list_guard_share
        self._expected: set[str] = set()
        self._seen: dict[str, Reason | None] = {}
        self._input_ended = False
        self._decided = asyncio.Event()
        self.tripped = False

    def expect(self, domain: str) -> None:
        """Note a domain of the run: once the input ends, the guard waits for its answer."""
        self._expected.add(domain)

    def skip(self, domain: str) -> None:
        """Forget a domain whose lookup failed unexpectedly: its answer will never come."""
        self._expected.discard(domain)
        self._judge(final=False)

    def input_ended(self) -> None:
        """Note that no more domains will come: judge once every expected one answered."""
        self._input_ended = True
        self._judge(final=False)

    def release(self) -> None:
        """Judge now with what was seen: the run cannot hold its verdicts any longer."""
        if not self._decided.is_set():
            self._judge(final=True)

    async def vet(self, domain: str, reason: Reason | None) -> Reason | None:
        """Return the reason to use for `domain`'s DNS outcome (None: DNS found a route)."""
        if domain not in self._seen:
            self._seen[domain] = reason
            self._judge(final=False)
        if reason not in DNS_VERDICTS:
            return reason
        if not self._decided.is_set():
            # Bounded: a caller that takes results in input order may stop reading input until
            # this very verdict arrives, and then the guard would wait for domains that never come.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MAX_HOLD_S):
                    await self._decided.wait()
            self.release()
        return Reason.DNS_ERROR if self.tripped else reason

    def _judge(self, *, final: bool) -> None:
        total = len(self._seen)
        everything = self._input_ended and self._expected.issubset(self._seen)
        if total < self._min and not (final or everything):
            return
        self._decided.set()  # later domains are still judged; a tripped guard stays tripped
        counts = Counter(r for r in self._seen.values() if r in DNS_VERDICTS)
        if self.tripped or total < self._min or not counts:
            return
        reason, count = counts.most_common(1)[0]
        if count / total > self._share:
            self.tripped = True
            log.warning(
                "%d of %d domains in this run answered %s: more likely our resolver than the "
                "world. They are reported unknown/dns_error, not invalid. To fix: %s.",
                count,
                total,
                reason,
                ADVICE,
                extra={"reason": str(reason), "domains": total, "failing": count},
            )
