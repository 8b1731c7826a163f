"""The mail route of a domain: MX, null MX, implicit MX, unroutable, with its TTL cache.

Owns DNS for the engine: looks up a domain's MX records and each MX host's A and AAAA, decides the
route kind, keeps only destinations we may contact, and caches answers for their TTL. Every
dnspython exception is translated into `DnsError` here. It opens no SMTP connection and chooses
no status: the verifier maps a `RouteKind` to a reason. dnspython is imported here and in
lookup.py (plain uncached questions) only, each translating its errors at that boundary; the
doctor's SPF check (mailprobe/doctor/spf.py) hands pyspf a dnspython resolver of its own.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver

from .errors import DnsError
from .routable import is_contactable
from .settings import DnsSettings, EngineSettings

#: Cache bounds for positive answers; a 0-second TTL must not turn into a query per address.
MIN_TTL_S = 30.0
MAX_TTL_S = 3600.0
#: NXDOMAIN and NODATA are kept this long, whatever the SOA says.
NEGATIVE_TTL_S = 300.0
_MAX_CACHED = 50_000
_NULL_HOST = "."


class RouteKind(StrEnum):
    """How mail for a domain would travel, or why it cannot."""

    MX = "mx"
    IMPLICIT = "implicit_mx"  # no MX: the domain's own A/AAAA (RFC 5321 §5.1)
    NULL_MX = "null_mx"  # MX 0 . (RFC 7505): the domain takes no mail
    DOMAIN_NOT_FOUND = "domain_not_found"  # NXDOMAIN
    NO_MAIL_SERVER = "no_mail_server"  # no MX host, nor the domain, has an address
    UNROUTABLE = "unroutable_mx"  # only non-global addresses that are not allowed


@dataclass(frozen=True, slots=True)
class MxHost:
    """One mail server of a domain and the addresses we may contact it on."""

    name: str  # "mx1.acme.test": lower-case, no trailing dot
    preference: int
    addresses: tuple[str, ...]  # IPv4 first, then IPv6; only global or allowed ones


@dataclass(frozen=True, slots=True)
class MailRoute:
    """Where mail for `domain` goes: the kind of route and its hosts, best first."""

    domain: str
    kind: RouteKind
    hosts: tuple[MxHost, ...] = ()

    @property
    def deliverable(self) -> bool:
        """Return True when some MX (or implicit MX) host has an address we may contact."""
        return self.kind in (RouteKind.MX, RouteKind.IMPLICIT) and any(
            host.addresses for host in self.hosts
        )


@dataclass(frozen=True, slots=True)
class _Records:
    """One lookup's answer: record values (empty for NXDOMAIN/NODATA) and how long to keep it."""

    values: tuple[tuple[int, str], ...] | tuple[str, ...]
    ttl: float
    nxdomain: bool = False


@dataclass(frozen=True, slots=True)
class _Found:
    """A host's resolved addresses, and the DNS failure that may have hidden some."""

    addresses: tuple[str, ...]
    error: DnsError | None


class MailRouter:
    """Resolves and caches mail routes; one per Verifier."""

    def __init__(
        self,
        settings: EngineSettings,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rng = rng or random.Random()
        self._allowed = tuple(settings.smtp.allowed_private_networks)
        self._timeout_s = settings.dns.timeout_s
        self._resolver = _make_resolver(settings.dns)
        self._cache = _TtlCache(clock)

    async def route(self, domain: str) -> MailRoute:
        """Return the mail route of `domain` (an A-label); raise DnsError when DNS cannot tell.

        NXDOMAIN, a null MX and MX hosts without addresses are answers, not errors.
        """
        domain = domain.rstrip(".").lower()
        mx = await self._lookup(domain, "MX")
        if mx.nxdomain:
            return MailRoute(domain, RouteKind.DOMAIN_NOT_FOUND)
        if not mx.values:
            found = [await self._addresses(domain)]
            return _route(domain, RouteKind.IMPLICIT, [(0, domain)], found, self._allowed)
        if all(host == _NULL_HOST for _, host in mx.values):
            return MailRoute(domain, RouteKind.NULL_MX)
        ranked = rank_mx(mx.values, rng=self._rng)
        found = await asyncio.gather(*(self._addresses(name) for _, name in ranked))
        return _route(domain, RouteKind.MX, ranked, found, self._allowed)

    async def _addresses(self, host: str) -> _Found:
        """Return the host's A then AAAA addresses; a failed half is kept as the error."""
        answers = await asyncio.gather(
            self._lookup(host, "A"), self._lookup(host, "AAAA"), return_exceptions=True
        )
        addresses: list[str] = []
        error: DnsError | None = None
        for answer in answers:
            if isinstance(answer, DnsError):
                error = error or answer
            elif isinstance(answer, BaseException):
                raise answer
            else:
                addresses.extend(str(value) for value in answer.values)
        return _Found(tuple(dict.fromkeys(addresses)), error)

    async def _lookup(self, name: str, rdtype: str) -> _Records:
        """Return the cached or freshly resolved records of one name and type."""
        return await self._cache.get((name, rdtype), lambda: self._query(name, rdtype))

    async def _query(self, name: str, rdtype: str) -> _Records:
        """Ask the resolver once; translate dnspython's outcomes into records or DnsError."""
        if self._resolver is None:
            raise DnsError(name, rdtype, "no nameservers configured")
        try:
            qname = dns.name.from_text(name)
            answer = await self._resolver.resolve(qname, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return _Records((), NEGATIVE_TTL_S, nxdomain=True)
        except dns.resolver.NoAnswer:
            return _Records((), NEGATIVE_TTL_S)
        except dns.resolver.LifetimeTimeout as exc:
            raise DnsError(name, rdtype, f"no answer within {self._timeout_s:g} s") from exc
        except dns.exception.DNSException as exc:
            # NoNameservers (SERVFAIL, REFUSED, unreachable), YXDOMAIN, bad names: we do not know.
            raise DnsError(name, rdtype, str(exc) or type(exc).__name__) from exc
        ttl = min(max(float(answer.chaining_result.minimum_ttl), MIN_TTL_S), MAX_TTL_S)
        if rdtype == "MX":
            values: tuple = tuple((rr.preference, _host_name(rr.exchange)) for rr in answer)
        else:
            values = tuple(rr.address for rr in answer)
        return _Records(values, ttl)


def rank_mx(records: Sequence[tuple[int, str]], *, rng: random.Random) -> list[tuple[int, str]]:
    """Return (preference, host) pairs to try, best first, without null hosts or duplicates.

    Equal preferences are shuffled to spread our load, as RFC 5321 §5.1 asks; they are sorted
    first so that a seeded rng gives the same order whatever order DNS answered in.
    """
    best: dict[str, int] = {}
    for preference, host in records:
        if host != _NULL_HOST and preference < best.get(host, preference + 1):
            best[host] = preference
    ranked: list[tuple[int, str]] = []
    for preference in sorted(set(best.values())):
        group = sorted(host for host, pref in best.items() if pref == preference)
        rng.shuffle(group)
        ranked.extend((preference, host) for host in group)
    return ranked


def _route(
    domain: str,
    kind: RouteKind,
    ranked: Sequence[tuple[int, str]],
    found: Sequence[_Found],
    allowed: Sequence[IPv4Network | IPv6Network],
) -> MailRoute:
    """Return the route made of the hosts we may contact, or why there is none.

    A DNS failure only matters when nothing contactable was found: the failed host might have
    been the one reachable server, so the answer is "we do not know", never unroutable.
    """
    hosts = []
    for (preference, name), result in zip(ranked, found, strict=True):
        usable = tuple(a for a in result.addresses if is_contactable(a, allowed))
        if usable:
            hosts.append(MxHost(name, preference, usable))
    if hosts:
        return MailRoute(domain, kind, tuple(hosts))
    errors = [result.error for result in found if result.error is not None]
    if errors:
        raise errors[0]
    if any(result.addresses for result in found):
        return MailRoute(domain, RouteKind.UNROUTABLE)
    return MailRoute(domain, RouteKind.NO_MAIL_SERVER)


def _host_name(name: dns.name.Name) -> str:
    """Return an MX exchange as lower-case text without the trailing dot ("." for the root)."""
    if name == dns.name.root:
        return _NULL_HOST
    return name.to_text(omit_final_dot=True).lower()


def _make_resolver(settings: DnsSettings) -> dns.asyncresolver.Resolver | None:
    """Return a resolver for the configured nameservers, or None when the system has none."""
    try:
        resolver = dns.asyncresolver.Resolver(configure=not settings.nameservers)
    except dns.resolver.NoResolverConfiguration:
        return None  # reported per lookup as DnsError, so a verification ends "unknown"
    resolver.port = settings.port  # applies to nameservers given as plain IPs
    if settings.nameservers:
        resolver.nameservers = list(settings.nameservers)
    resolver.lifetime = settings.timeout_s
    # dnspython keeps its own cache off by default; _TtlCache is ours, with our TTL rules.
    return resolver


class _TtlCache:
    """Records by (name, type) until they expire, and one shared lookup per key in flight."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._done: dict[tuple[str, str], tuple[float, _Records]] = {}
        self._in_flight: dict[tuple[str, str], asyncio.Task[_Records]] = {}

    async def get(self, key: tuple[str, str], load: Callable[[], Awaitable[_Records]]) -> _Records:
        """Return the cached records for `key`, joining or starting the lookup when needed."""
        hit = self._done.get(key)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        task = self._in_flight.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.ensure_future(self._load(key, load))
            self._in_flight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        # Shielded: one caller giving up must not cancel the lookup the others wait for.
        return await asyncio.shield(task)

    async def _load(
        self, key: tuple[str, str], load: Callable[[], Awaitable[_Records]]
    ) -> _Records:
        records = await load()  # a DnsError propagates and is not cached
        self._store(key, records)
        return records

    def _finished(self, key: tuple[str, str], task: asyncio.Task[_Records]) -> None:
        if self._in_flight.get(key) is task:
            del self._in_flight[key]
        if not task.cancelled():
            task.exception()  # mark it retrieved even when every waiter was cancelled

    def _store(self, key: tuple[str, str], records: _Records) -> None:
        now = self._clock()
        if len(self._done) >= _MAX_CACHED:
            # A daemon sees millions of domains: drop what expired, then keep the newest half.
            self._done = {k: v for k, v in self._done.items() if v[0] > now}
            if len(self._done) > _MAX_CACHED // 2:
                self._done = dict(list(self._done.items())[-(_MAX_CACHED // 2) :])
        self._done.pop(key, None)  # re-inserted at the end: insertion order is age order
        self._done[key] = (now + records.ttl, records)
