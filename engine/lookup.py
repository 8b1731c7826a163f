"""Plain DNS questions outside the mail route: canaries, PTR, TXT, blocklists, the AD flag.

mx.py owns the mail route and its cache; this module asks one uncached question at a time for
the checks that judge our own side (engine/sanity.py, `mailprobe doctor`), so their answers
come from the resolver now and never fill the route cache. dnspython's outcomes are translated
into `Records` or `DnsError` here, as mx.py does for the route.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.resolver
import dns.reversename

from .errors import DnsError
from .settings import DnsSettings


@dataclass(frozen=True, slots=True)
class Records:
    """One answer: its values as text (empty for NXDOMAIN/NODATA) and what the resolver said."""

    name: str
    rdtype: str
    values: tuple[str, ...] = ()
    nxdomain: bool = False
    authenticated: bool = False  # the AD flag: the resolver validated it with DNSSEC


class Lookup:
    """Asks the configured resolver single questions, without a cache."""

    def __init__(self, settings: DnsSettings) -> None:
        self._timeout_s = settings.timeout_s
        self._resolver = _make_resolver(settings)

    async def ask(self, name: str, rdtype: str) -> Records:
        """Return the records of `name`; raise DnsError when the resolver gives no answer."""
        if self._resolver is None:
            raise DnsError(name, rdtype, "no nameservers configured")
        try:
            answer = await self._resolver.resolve(dns.name.from_text(name), rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return Records(name, rdtype, nxdomain=True)
        except dns.resolver.NoAnswer:
            return Records(name, rdtype)
        except dns.resolver.LifetimeTimeout as exc:
            raise DnsError(name, rdtype, f"no answer within {self._timeout_s:g} s") from exc
        except dns.exception.DNSException as exc:
            raise DnsError(name, rdtype, str(exc) or type(exc).__name__) from exc
        authenticated = bool(answer.response.flags & dns.flags.AD)
        values = tuple(_text(rdata) for rdata in answer)
        return Records(name, rdtype, values, authenticated=authenticated)

    async def reverse(self, address: str) -> Records:
        """Return the PTR names of an IP address (lower-case, no trailing dot)."""
        name = dns.reversename.from_address(address).to_text(omit_final_dot=True)
        return await self.ask(name, "PTR")


def _text(rdata: object) -> str:
    """Return one record's value as text: TXT strings joined, names without the final dot."""
    strings = getattr(rdata, "strings", None)
    if strings is not None:
        return b"".join(strings).decode("utf-8", "replace")
    address = getattr(rdata, "address", None)
    if address is not None:
        return str(address)
    return str(rdata).rstrip(".").lower()


def _make_resolver(settings: DnsSettings) -> dns.asyncresolver.Resolver | None:
    """Return a resolver for the configured nameservers that asks for the AD flag."""
    try:
        resolver = dns.asyncresolver.Resolver(configure=not settings.nameservers)
    except dns.resolver.NoResolverConfiguration:
        return None
    resolver.port = settings.port
    if settings.nameservers:
        resolver.nameservers = list(settings.nameservers)
    resolver.lifetime = settings.timeout_s
    # RFC 6840 §5.7: a query with AD set asks a validating resolver to say what it validated.
    resolver.flags = dns.flags.RD | dns.flags.AD
    return resolver
