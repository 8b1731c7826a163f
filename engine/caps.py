"""Caps on the sessions one recipient domain, and one registrable domain, hold at once.

A handful of slow hosts, cheap to set up under many subdomains of one domain, must not take
every session the verifier may open. The registrable domain ("example.co.uk" for
"mx.a.example.co.uk") comes from the Public Suffix List as the `publicsuffixlist` package ships
it: no list is downloaded at run time. No I/O beyond asyncio waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import AsyncIterator

from publicsuffixlist import PublicSuffixList


@functools.cache
def suffixes() -> PublicSuffixList:
    """Return the Public Suffix List, parsed once per process (~0.3 s: not mid-session)."""
    return PublicSuffixList()


@functools.lru_cache(maxsize=10_000)
def registrable_domain(domain: str) -> str:
    """Return the domain's registrable part (one label under its public suffix), else itself."""
    return suffixes().privatesuffix(domain.lower().rstrip(".")) or domain


class KeyedLimit:
    """At most `limit` holders per key at once; a key's state lives only while it is used."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._users: Counter[str] = Counter()  # holders and waiters per key

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold one of the key's slots, waiting for one first come first served."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = asyncio.Semaphore(self._limit)
        self._users[key] += 1
        try:
            async with slot:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._slots[key]  # bounded: only keys in use are kept

    def held(self, key: str) -> int:
        """Return how many hold or wait for the key's slots now."""
        return self._users.get(key, 0)
