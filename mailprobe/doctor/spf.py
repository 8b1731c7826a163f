"""SPF evaluation with pyspf, asked through our configured resolver instead of the system's.

pyspf looks records up through its module-level `DNSLookup` function; it is the library's own
seam for a DNS back-end, so we put one there that asks engine.dns.nameservers (tests point it
at their local server), and restore the original afterwards. Evaluation runs in a thread:
pyspf blocks.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import dns.exception
import dns.resolver
import spf

from mailprobe.engine import DnsSettings

#: pyspf's DNSLookup is one global: two evaluations at once must not swap it under each other.
_LOOKUP_LOCK = threading.Lock()


async def check_spf(address: str, sender: str, helo: str, *, dns_settings: DnsSettings) -> str:
    """Return pyspf's result for `address` sending as `sender`: pass, fail, softfail, …"""
    return await asyncio.to_thread(_check, address, sender, helo, dns_settings)


def _check(address: str, sender: str, helo: str, settings: DnsSettings) -> str:
    lookup = _lookup_via(_resolver(settings))
    with _LOOKUP_LOCK:
        original, spf.DNSLookup = spf.DNSLookup, lookup
        try:
            result, _explanation = spf.check2(
                i=address, s=sender, h=helo, timeout=settings.timeout_s * 4
            )
        finally:
            spf.DNSLookup = original
    return str(result)


def _resolver(settings: DnsSettings) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=not settings.nameservers)
    resolver.port = settings.port
    if settings.nameservers:
        resolver.nameservers = list(settings.nameservers)
    resolver.lifetime = settings.timeout_s
    return resolver


def _lookup_via(resolver: dns.resolver.Resolver) -> Any:
    """Return a pyspf DNSLookup that asks `resolver`; it mirrors pyspf's dnspython back-end."""

    def lookup(name: str, qtype: str, tcpfallback: bool = True, timeout: float = 30) -> list:
        found: list = []
        try:
            for rdata in resolver.resolve(name, qtype, search=False):
                found.append(((name, qtype), _value(rdata, qtype)))
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            pass
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise spf.TempError(f"DNS {exc}") from exc
        return found

    return lookup


def _value(rdata: Any, qtype: str) -> Any:
    if qtype in ("A", "AAAA"):
        return rdata.address
    if qtype == "MX":
        return (rdata.preference, rdata.exchange)
    if qtype == "PTR":
        return rdata.target.to_text(True)
    return rdata.strings  # TXT, SPF
