"""A real authoritative DNS server on loopback, with zones declared in Python per test.

dnslib does the wire format; asyncio serves UDP and TCP on one port of 127.0.0.x. The server runs
in a background thread with its own event loop, so async tests, plain tests, benches and
subprocesses (the CLI) can all query it. Every query received is recorded, so a test can assert
what was asked and how often. It only binds loopback addresses and knows nothing of mailprobe.

    server.add("acme.test", "MX", "10 mx1.acme.test")   # or server.add_mx("acme.test", 10, ...)
    server.add("mx1.acme.test", "A", "127.0.0.2")
    server.servfail("broken.test")                      # SERVFAIL for this name
    server.drop("silent.test")                          # never answer: the client times out
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import pytest
from dnslib import QTYPE, RCODE, RR, DNSError, DNSRecord

DEFAULT_TTL = 300
#: A name every DnsServer serves, so the engine's resolver check trusts a working fake.
CANARY = "canary.resolver.test"
_MAX_CNAME_HOPS = 8
_PLAIN_UDP_LIMIT = 512  # RFC 1035 §4.2.1, when the query carries no EDNS buffer size
_OPT = 41


class Transport(StrEnum):
    """How a query reached the server."""

    UDP = "udp"
    TCP = "tcp"


@dataclass(frozen=True, slots=True)
class Query:
    """One question the server received: lower-case name without trailing dot, type mnemonic."""

    name: str
    rtype: str
    transport: Transport


class _Behaviour(StrEnum):
    SERVFAIL = "servfail"
    DROP = "drop"


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


class DnsServer:
    """Answers authoritatively from the records added to it; undeclared names are NXDOMAIN.

    Subclasses change behaviour for every name by overriding `answer()` (see `DroppingDns`).
    """

    def __init__(self, host: str = "127.0.0.1", *, default_ttl: int = DEFAULT_TTL) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the fake DNS server only binds loopback, not {host}")
        self.host = host
        self.port = 0
        self.default_ttl = default_ttl
        # The zone is written by the test thread and read by the server thread.
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, list[RR]]] = {}
        self._behaviours: dict[str, _Behaviour] = {}
        self._queries: list[Query] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._startup_error: BaseException | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self.add(CANARY, "A", "127.0.0.1")

    # -- declaring the zone -------------------------------------------------------------------

    def add(self, name: str, rtype: str, value: str, *, ttl: int | None = None) -> None:
        """Add one record in zone-file syntax (`"10 mx1.acme.test"`); names are absolute."""
        ttl = self.default_ttl if ttl is None else ttl
        rtype = rtype.upper()
        records = RR.fromZone(f"{_norm(name)}. {ttl} IN {rtype} {value}")
        with self._lock:
            self._records.setdefault(_norm(name), {}).setdefault(rtype, []).extend(records)

    def add_mx(self, domain: str, preference: int, host: str, *, ttl: int | None = None) -> None:
        """Add an MX record; `host` "." makes a null MX (RFC 7505)."""
        target = "." if host == "." else f"{_norm(host)}."
        self.add(domain, "MX", f"{preference} {target}", ttl=ttl)

    def servfail(self, name: str) -> None:
        """Answer SERVFAIL to every question about `name`."""
        with self._lock:
            self._behaviours[_norm(name)] = _Behaviour.SERVFAIL

    def drop(self, name: str) -> None:
        """Never answer questions about `name`, so the client has to time out."""
        with self._lock:
            self._behaviours[_norm(name)] = _Behaviour.DROP

    def restore(self, name: str) -> None:
        """Answer questions about `name` from the zone again (undoes servfail() and drop())."""
        with self._lock:
            self._behaviours.pop(_norm(name), None)

    # -- what was asked -----------------------------------------------------------------------

    @property
    def queries(self) -> list[Query]:
        """Return a copy of every query received so far, in arrival order."""
        with self._lock:
            return list(self._queries)

    def count(self, name: str, rtype: str | None = None) -> int:
        """Return how many queries asked about `name` (of type `rtype`, when given)."""
        name, rtype = _norm(name), rtype and rtype.upper()
        return sum(1 for q in self.queries if q.name == name and rtype in (None, q.rtype))

    def clear_queries(self) -> None:
        """Forget the queries received so far."""
        with self._lock:
            self._queries.clear()

    def dns_settings(self, *, timeout_s: float = 1.0) -> dict[str, Any]:
        """Return `engine.dns` settings that point a resolver at this server.

        The resolver check asks this server's own canary, and made-up names under `.test`:
        the offline world's equivalent of the internet's large providers and `.com`.
        """
        return {
            "nameservers": [self.host],
            "port": self.port,
            "timeout_s": timeout_s,
            "canaries": [CANARY],
            "nxdomain_zone": "test",
        }

    # -- answering ----------------------------------------------------------------------------

    def answer(self, request: DNSRecord) -> DNSRecord | None:
        """Return the reply to `request`, or None to stay silent."""
        name = _norm(str(request.q.qname))
        with self._lock:
            behaviour = self._behaviours.get(name)
        if behaviour is _Behaviour.DROP:
            return None
        reply = request.reply()
        reply.header.ad = 0  # dnslib copies the query's flags; we validate nothing (RFC 6840)
        if behaviour is _Behaviour.SERVFAIL:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        self._fill(reply, name, QTYPE.get(request.q.qtype))
        return reply

    def _fill(self, reply: DNSRecord, name: str, rtype: str) -> None:
        # Follow CNAMEs inside our own data and put the chain in the answer, as authoritative
        # servers do; the final name decides NXDOMAIN or NODATA.
        for _ in range(_MAX_CNAME_HOPS):
            with self._lock:
                rrsets = {t: list(rrs) for t, rrs in self._records.get(name, {}).items()}
                exists = bool(rrsets) or self._has_descendant(name)
            if rtype in rrsets:
                reply.add_answer(*rrsets[rtype])
                return
            if "CNAME" in rrsets:
                reply.add_answer(*rrsets["CNAME"])
                name = _norm(str(rrsets["CNAME"][0].rdata.label))
                continue
            if not exists:
                reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(self._soa(name))
            return

    def _has_descendant(self, name: str) -> bool:
        # An empty non-terminal (acme.test when only mx1.acme.test is declared) exists: NODATA.
        return any(other.endswith(f".{name}") for other in self._records)

    def _soa(self, name: str) -> RR:
        # Negative answers carry an SOA whose minimum is the negative TTL (RFC 2308).
        apex = name.rsplit(".", 1)[-1] + "." if name else "."
        soa = f"ns.{apex} hostmaster.{apex} 1 3600 600 86400 {self.default_ttl}"
        return RR.fromZone(f"{apex} {self.default_ttl} IN SOA {soa}")[0]

    def _respond(self, data: bytes, transport: Transport) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except DNSError:
            return None  # garbage is not a question; a real server would also ignore it
        with self._lock:
            self._queries.append(
                Query(_norm(str(request.q.qname)), str(QTYPE.get(request.q.qtype)), transport)
            )
        reply = self.answer(request)
        if reply is None:
            return None
        packed = reply.pack()
        if transport is Transport.UDP and len(packed) > _udp_limit(request):
            # Too big for the client's buffer: set TC so it retries over TCP (RFC 7766).
            truncated = request.reply()
            truncated.header.tc = 1
            packed = truncated.pack()
        return packed

    # -- running ------------------------------------------------------------------------------

    def start(self) -> DnsServer:
        """Start serving in a background thread; return self once the port is bound."""
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name=f"fake-dns-{self.host}", daemon=True
        )
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake DNS server did not start within 10 s")
        if self._startup_error is not None:
            raise RuntimeError("fake DNS server failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is None or self._thread is None:
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop, self._thread = None, None

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._bind())
        except BaseException as exc:  # noqa: BLE001 - handed to start() in the other thread
            self._startup_error = exc
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close())
            loop.close()

    async def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        # UDP and TCP must share a port: take a free TCP port, then try UDP on it.
        for _ in range(50):
            tcp = await asyncio.start_server(self._serve_tcp, self.host, 0)
            port = tcp.sockets[0].getsockname()[1]
            try:
                udp, _protocol = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self), local_addr=(self.host, port)
                )
            except OSError:
                tcp.close()
                continue
            self._tcp, self._udp, self.port = tcp, udp, port
            return
        raise OSError(f"no port free for both UDP and TCP on {self.host}")

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tcp_writers.add(writer)
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = self._respond(await reader.readexactly(length), Transport.TCP)
                if reply is not None:
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tcp_writers.discard(writer)
            writer.close()

    async def _close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        for writer in list(self._tcp_writers):
            writer.close()
        if self._tcp is not None:
            self._tcp.close()
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        with suppress(asyncio.CancelledError):
            await asyncio.gather(*pending, return_exceptions=True)


class DroppingDns(DnsServer):
    """Never answers anything: every lookup against it times out."""

    def answer(self, request: DNSRecord) -> DNSRecord | None:
        """Return None: stay silent."""
        return None


class ServfailDns(DnsServer):
    """Answers SERVFAIL to every question, like a broken recursive resolver."""

    def answer(self, request: DNSRecord) -> DNSRecord | None:
        """Return a SERVFAIL reply."""
        reply = request.reply()
        reply.header.rcode = RCODE.SERVFAIL
        return reply


class NxdomainDns(DnsServer):
    """Answers NXDOMAIN to every question, like a filtered or split-horizon company resolver."""

    def answer(self, request: DNSRecord) -> DNSRecord | None:
        """Return an NXDOMAIN reply."""
        reply = request.reply()
        reply.header.rcode = RCODE.NXDOMAIN
        return reply


class HijackingDns(DnsServer):
    """Answers what it knows; invents an address for every A question about an unknown name.

    NXDOMAIN hijacking, as ISP and captive-portal resolvers do to show a search page.
    """

    invented = "127.0.0.99"

    def answer(self, request: DNSRecord) -> DNSRecord | None:
        """Return the true reply, or an invented A record instead of NXDOMAIN."""
        reply = super().answer(request)
        is_a = QTYPE.get(request.q.qtype) == "A"
        if reply is None or reply.header.rcode != RCODE.NXDOMAIN or not is_a:
            return reply
        invented = request.reply()
        invented.add_answer(*RR.fromZone(f"{request.q.qname} 60 IN A {self.invented}"))
        return invented


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's UDP transport does not subclass DatagramTransport, only acts as one.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self._server._respond(data, Transport.UDP)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)


def _udp_limit(request: DNSRecord) -> int:
    # An EDNS OPT record's class field is the client's UDP buffer size (RFC 6891 §6.2.3).
    for rr in request.ar:
        if rr.rtype == _OPT:
            return max(rr.rclass, _PLAIN_UDP_LIMIT)
    return _PLAIN_UDP_LIMIT


@contextmanager
def running_dns_server(
    cls: type[DnsServer] = DnsServer, host: str = "127.0.0.1", **kwargs: Any
) -> Iterator[DnsServer]:
    """Yield a started server of class `cls` on `host`; stop it on exit."""
    server = cls(host, **kwargs)
    with server:
        yield server


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """Yield a fresh fake DNS server on 127.0.0.1 for one test (sync, async or subprocess)."""
    with running_dns_server() as server:
        yield server
