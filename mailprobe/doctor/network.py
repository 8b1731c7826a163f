"""The doctor's checks of our side of the internet: resolver, port 25, HELO and PTR, SPF, DNSBLs.

Each check asks through the configured resolver (engine.dns) and dials what the settings name
(doctor.smtp_hosts on engine.smtp.port), so a test world answers them all on loopback. A check
returns findings and never raises for what it finds; a failure to ask is itself a finding.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

from mailprobe.engine import (
    DnsError,
    EngineSettings,
    Lookup,
    ProbeError,
    Records,
    ResolverSanity,
    greet,
)

from .report import Finding, Outcome
from .spf import check_spf

_PORT_25_FIX = (
    "ask your hosting provider to open outbound TCP port 25 (many cloud providers block it by "
    "default), run mailprobe on a host that may send mail, or set engine.smtp.proxy to a "
    "SOCKS5 proxy on such a host"
)


async def check_resolver(engine: EngineSettings) -> list[Finding]:
    """Return whether the resolver finds the canaries, denies a made-up name, and validates."""
    health = await ResolverSanity(engine.dns, announce=False).health(fresh=True)
    where = ", ".join(engine.dns.nameservers) or "the system resolver"
    if not health.trusted:
        return [Finding("resolver", Outcome.FAIL, f"{where}: {health.problem}", health.advice)]
    found = f"{where} finds the canaries and denies made-up names"
    findings = [Finding("resolver", Outcome.OK, found)]
    if health.dnssec:
        findings.append(Finding("dnssec", Outcome.OK, f"{where} validates DNSSEC (AD flag set)"))
    else:
        findings.append(
            Finding(
                "dnssec",
                Outcome.WARN,
                f"{where} does not validate DNSSEC (no AD flag on the canaries' answers)",
                "use a validating resolver (unbound, or systemd-resolved with DNSSEC=yes) so "
                "forged answers cannot pass as real ones",
            )
        )
    return findings


async def check_port_25(engine: EngineSettings, hosts: Sequence[str]) -> tuple[Finding, set[str]]:
    """Return whether some provider MX answers on port 25 per source address, and the local
    addresses the connections came from (the source addresses when none is configured)."""
    if not hosts:
        return Finding("port 25", Outcome.SKIP, "no doctor.smtp_hosts configured"), set()
    lookup = Lookup(engine.dns)
    targets = [t for t in await asyncio.gather(*(_first_ip(lookup, h) for h in hosts)) if t]
    sources = list(engine.smtp.source_addresses) or [None]
    via = _proxy_text(engine.smtp.proxy)
    reached: dict[str | None, list[str]] = {}
    errors: list[str] = []
    local: set[str] = set()
    for source in sources:
        for host, ip in targets:
            try:
                banner, came_from = await greet(host, ip, smtp=engine.smtp, source_address=source)
            except ProbeError as exc:
                errors.append(f"{host} ({ip}) from {source or 'any address'}: {exc}")
                continue
            reached.setdefault(source, []).append(f"{host} ({banner.code})")
            if came_from and not engine.smtp.proxy:
                local.add(came_from)
    return _port_finding(sources, reached, errors, via, hosts), local


async def _first_ip(lookup: Lookup, host: str) -> tuple[str, str] | None:
    try:
        records = await lookup.ask(host, "A")
    except DnsError:
        return None
    return (host, records.values[0]) if records.values else None


def _port_finding(
    sources: list[str | None],
    reached: dict[str | None, list[str]],
    errors: list[str],
    via: str,
    hosts: Sequence[str],
) -> Finding:
    blocked = [s or "any address" for s in sources if s not in reached]
    if not blocked:
        done = "; ".join(f"from {s or 'any address'}: {', '.join(r)}" for s, r in reached.items())
        return Finding("port 25", Outcome.OK, f"outbound port 25 open{via} ({done})")
    detail = "; ".join(errors) or f"none of {', '.join(hosts)} resolved"
    return Finding(
        "port 25",
        Outcome.FAIL,
        f"no provider MX reachable on port 25{via} from {', '.join(blocked)}: {detail}",
        _PORT_25_FIX,
    )


def _proxy_text(proxy: str | None) -> str:
    if not proxy:
        return ""
    parts = urlsplit(proxy)  # never echo the proxy's user and password
    return f" through proxy {parts.hostname}:{parts.port}"


async def check_helo(engine: EngineSettings, sources: Sequence[str]) -> tuple[Finding, list[str]]:
    """Return whether the HELO name resolves to each source address and its PTR points back.

    Also returns the HELO name's addresses: the best guess of the source addresses when none is
    configured and no connection told us.
    """
    name = engine.helo_hostname.rstrip(".").lower()
    fix_name = f"set engine.helo_hostname to your sending host's public name (not {name!r})"
    if "." not in name or name.endswith((".localdomain", ".local", "localhost")):
        return Finding("helo name", Outcome.FAIL, f"{name!r} is not a public name", fix_name), []
    lookup = Lookup(engine.dns)
    try:
        addresses = await _addresses(lookup, name)
    except DnsError as exc:
        return Finding("helo name", Outcome.FAIL, f"{name}: {exc}", "fix the resolver first"), []
    if not addresses:
        fix = f"publish an A record: {name}. IN A <your sending address>"
        return Finding("helo name", Outcome.FAIL, f"{name} has no A/AAAA record", fix), []
    checked = sources or addresses
    problems = [p for s in checked if (p := await _fcrdns(lookup, name, s, addresses))]
    if problems:
        return Finding("helo name", Outcome.FAIL, "; ".join(p[0] for p in problems),
                       "; ".join(p[1] for p in problems)), addresses  # fmt: skip
    found = f"{name} → {', '.join(addresses)}; PTR of {', '.join(sources or addresses)} → {name}"
    return Finding("helo name", Outcome.OK, found), addresses


async def _addresses(lookup: Lookup, name: str) -> list[str]:
    answers = await asyncio.gather(lookup.ask(name, "A"), lookup.ask(name, "AAAA"))
    return [value for records in answers for value in records.values]


async def _fcrdns(
    lookup: Lookup, name: str, source: str, addresses: list[str]
) -> tuple[str, str] | None:
    """Return (what is wrong, how to fix it) for one source address, or None when it is right."""
    if source not in addresses:
        return (
            f"{name} resolves to {', '.join(addresses)}, not to the source address {source}",
            f"add {name}. IN A {source}, or set engine.helo_hostname to {source}'s name",
        )
    try:
        ptr = await lookup.reverse(source)
    except DnsError as exc:
        return f"PTR of {source}: {exc}", "fix the resolver first"
    ptr_fix = f"ask whoever owns {source} (your hosting provider) to set its PTR to {name}"
    if not ptr.values:
        return f"{source} has no PTR record", ptr_fix
    if name not in ptr.values:
        return f"PTR of {source} is {', '.join(ptr.values)}, not {name}", ptr_fix
    return None


async def check_mail_from(engine: EngineSettings, sources: Sequence[str]) -> list[Finding]:
    """Return whether the MAIL FROM domain exists, has MX, and its SPF permits the sources."""
    sender = engine.envelope_sender
    domain = sender.rpartition("@")[2].lower()
    lookup = Lookup(engine.dns)
    try:
        mx = await lookup.ask(domain, "MX")
        a = await lookup.ask(domain, "A") if not mx.values else Records(domain, "A")
    except DnsError as exc:
        return [Finding("mail from", Outcome.FAIL, f"{domain}: {exc}", "fix the resolver first")]
    findings = [_domain_finding(domain, mx, a, sender)]
    for source in sources:
        findings.append(await _spf_finding(source, sender, engine))
    if not sources:
        findings.append(Finding("spf", Outcome.SKIP, "no source address known to check SPF for"))
    return findings


def _domain_finding(domain: str, mx: Records, a: Records, sender: str) -> Finding:
    fix = f"use a domain you control in engine.mail_from (now {sender}) and publish MX for it"
    if mx.nxdomain:
        return Finding("mail from", Outcome.FAIL, f"{domain} does not exist (NXDOMAIN)", fix)
    if mx.values:
        return Finding("mail from", Outcome.OK, f"{domain} exists and has MX {mx.values[0]}")
    if a.values:
        return Finding(
            "mail from", Outcome.WARN, f"{domain} has no MX, only an A record",
            f"publish {domain}. IN MX 10 <your mail host>: some servers refuse senders without",
        )  # fmt: skip
    return Finding("mail from", Outcome.FAIL, f"{domain} has no MX and no address", fix)


async def _spf_finding(source: str, sender: str, engine: EngineSettings) -> Finding:
    domain = sender.rpartition("@")[2]
    mechanism = "ip6" if ":" in source else "ip4"
    fix = f'publish (or extend) {domain}. IN TXT "v=spf1 {mechanism}:{source} -all"'
    result = await check_spf(source, sender, engine.helo_hostname, dns_settings=engine.dns)
    found = f"SPF of {domain} for {source}: {result}"
    if result == "pass":
        return Finding("spf", Outcome.OK, found)
    if result in ("fail", "permerror"):
        return Finding("spf", Outcome.FAIL, found, fix)
    return Finding("spf", Outcome.WARN, found, fix)


async def check_blocklists(
    engine: EngineSettings, zones: Sequence[str], sources: Sequence[str]
) -> list[Finding]:
    """Return a warning, with the listing's text, for each source address a blocklist lists."""
    addresses = [s for s in sources if ipaddress.ip_address(s).version == 4]
    if not zones or not addresses:
        return [Finding("blocklists", Outcome.SKIP, "no blocklist zones or IPv4 source address")]
    lookup = Lookup(engine.dns)
    findings = []
    for address in addresses:
        for zone in zones:
            findings.append(await _listing(lookup, address, zone.strip(".")))
    listed = [f for f in findings if f.outcome is not Outcome.OK]
    if listed:
        return listed
    return [Finding("blocklists", Outcome.OK,
                    f"{', '.join(addresses)} on none of {', '.join(zones)}")]  # fmt: skip


async def _listing(lookup: Lookup, address: str, zone: str) -> Finding:
    name = ".".join(reversed(address.split("."))) + f".{zone}"
    try:
        listed = await lookup.ask(name, "A")
    except DnsError as exc:
        return Finding("blocklists", Outcome.SKIP, f"{zone}: {exc}")
    if not listed.values:
        return Finding("blocklists", Outcome.OK, f"{address} not on {zone}")
    if all(v.startswith("127.255.255.") for v in listed.values):
        return Finding(
            "blocklists", Outcome.SKIP, f"{zone} refused the query ({listed.values[0]})",
            "blocklists refuse public resolvers: ask through your own resolver",
        )  # fmt: skip
    text = await _listing_text(lookup, name)
    return Finding(
        "blocklists", Outcome.WARN, f"{address} is listed on {zone}: {text}",
        f"follow the delisting steps of {zone} (see the text), and fix what got you listed",
    )  # fmt: skip


async def _listing_text(lookup: Lookup, name: str) -> str:
    try:
        txt = await lookup.ask(name, "TXT")
    except DnsError:
        return "(no text)"
    return " ".join(txt.values)[:300] or "(no text)"
