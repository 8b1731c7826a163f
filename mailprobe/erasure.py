"""`mailprobe forget`: remove what the store holds about an address or a whole domain.

For a data-protection request (erasure): the answer, every form of the address as sources
wrote it, its place in the queue, and the CRM contacts holding it (their external id, the
fields we wrote, the fields the source showed). With `--domain`, the same for every address at
the domain, and the facts learnt about its mail server. SQLite's secure_delete zeroes the
rows' old content, and the write-ahead log is emptied, so nothing is left in the file's free
pages. Kept: the run log (counts, no addresses) and the drop folder's file records (names and
counts). Not ours to change: the CRM's own record, files in the drop folder, backups.

If a source sends the address again (the CRM still holds the contact and it changes), it is
stored and verified again: erase it at the source first. No SQL here: the store's verbs.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailprobe.engine import Address, parse_address

from .store import ForgetCounts, Store


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What one `forget` removed, and whether the write-ahead log was emptied too."""

    subject: str  # the address or "@domain" as matched
    counts: ForgetCounts
    log_emptied: bool


def normalized(address: str, *, allow_test_domains: bool) -> str | None:
    """Return the address's normalised form (A-label domain), or None when it has none."""
    parsed = parse_address(address, allow_test_domains=allow_test_domains)
    return parsed.normalized if isinstance(parsed, Address) else None


def domain_name(domain: str, *, allow_test_domains: bool) -> str:
    """Return a domain as the store keeps it: lower-case A-label, without `@` or a final dot."""
    name = domain.strip().lstrip("@").rstrip(".")
    parsed = parse_address(f"x@{name}", allow_test_domains=allow_test_domains)
    return parsed.domain if isinstance(parsed, Address) else name.lower()


def forget_address(store: Store, address: str, *, allow_test_domains: bool) -> Forgotten:
    """Delete what the store holds about one address."""
    norm = normalized(address, allow_test_domains=allow_test_domains)
    counts = store.forget_address(address.strip(), normalized=norm)
    return Forgotten(norm or address.strip(), counts, store.scrub())


def forget_domain(store: Store, domain: str, *, allow_test_domains: bool) -> Forgotten:
    """Delete what the store holds about every address at a domain, and the domain's facts."""
    name = domain_name(domain, allow_test_domains=allow_test_domains)
    counts = store.forget_domain(name)
    return Forgotten(f"@{name}", counts, store.scrub())
