"""Which addresses the engine may connect to: globally routable ones, or networks allowed.

A domain's MX can point anywhere, so its DNS answer must not steer our SMTP client into our own
network (SSRF): the cloud metadata service, an intranet host, our own loopback. IPv6 can carry
an IPv4 address inside it (NAT64, 6to4, IPv4-compatible, -mapped and -translated forms), and a
NAT64 gateway or a dual stack delivers such an address to the IPv4 host it names, so the IPv4
inside is checked as well as the IPv6 around it. `ipaddress.is_global` alone is not enough (its
tables changed between Python releases), so an explicit deny-list backs it. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

__all__ = ["embedded_ipv4", "is_contactable"]

Network = IPv4Network | IPv6Network

#: Never internet mail servers, whatever is_global says (RFC 6890 and the IANA registries).
_DENIED: tuple[Network, ...] = tuple(
    ip_network(cidr)
    for cidr in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
        "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "::/128", "::1/128", "100::/64", "2001::/23", "2001:db8::/32", "64:ff9b:1::/48",
        "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)  # fmt: skip
_NAT64 = ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: the IPv4 is the last 32 bits
_COMPATIBLE = ip_network("::/96")  # RFC 4291 §2.5.5.1, deprecated: ::a.b.c.d
_TRANSLATED = ip_network("::ffff:0:0:0/96")  # RFC 2765 (SIIT): ::ffff:0:a.b.c.d


def embedded_ipv4(ip: IPv4Address | IPv6Address) -> IPv4Address | None:
    """Return the IPv4 address an IPv6 address carries (and delivers to), or None."""
    if isinstance(ip, IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or ip in _TRANSLATED or (ip in _COMPATIBLE and int(ip) > 1):
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_contactable(address: str, allowed: Sequence[Network] = ()) -> bool:
    """Return True when we may connect to `address`: globally routable, or in an allowed network.

    Loopback, private, link-local, site-local, documentation and shared ranges, and any IPv6
    form of them, are never internet mail servers; contacting them would probe our own network
    (SSRF) instead of the domain's. An allowed network admits the address or the IPv4 inside it.
    """
    ip = ip_address(address)
    inner = embedded_ipv4(ip)
    forms = (ip,) if inner is None else (ip, inner)
    if any(form.is_multicast or form.is_unspecified for form in forms):
        return False
    if any(_within(form, allowed) for form in forms):
        return True
    if inner is not None:
        # The wrapper prefixes are translation mechanisms: the IPv4 inside decides.
        return _public(inner) and not _within(ip, _DENIED)
    return _public(ip)


def _public(ip: IPv4Address | IPv6Address) -> bool:
    return ip.is_global and not _within(ip, _DENIED)


def _within(ip: IPv4Address | IPv6Address, networks: Sequence[Network]) -> bool:
    return any(ip.version == network.version and ip in network for network in networks)
