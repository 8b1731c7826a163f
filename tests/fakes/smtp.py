"""Scripted SMTP servers on 127.0.0.x for tests and benches: polite, strict, slow and hostile.

Raw asyncio streams rather than aiosmtpd: aiosmtpd is a well-behaved server and cannot easily be
made to misbehave the way real MX hosts do — tarpit the banner, stream an endless multi-line reply,
send a 10 MB line, hang up mid-command, answer STARTTLS and then not speak TLS. On raw streams each
of those is a few lines, and the server records exactly what the client sent. Loopback only.

    server = await smtp_server(mailboxes={"john@example.test"})        # async tests
    port = await smtp_servers(ScriptedSmtp("127.0.0.2"), CatchAllSmtp("127.0.0.3"))
    with running_smtp_server(mailboxes=...) as server: ...            # threads, CLI, benches
    assert "DATA" not in server.commands
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import socket
import ssl
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import Any

import pytest
import trustme

HUGE_LINE_BYTES = 10 * 1024 * 1024
#: Longest command line the fake reads; a longer one ends the session (the client is ours).
_READ_LIMIT = 64 * 1024
_CHUNK = 64 * 1024
_ADDRESS = re.compile(r"<([^>]*)>")

#: A recipient's reply, given as a mapping or a function; None falls back to `mailboxes`.
RcptScript = Mapping[str, str] | Callable[[str], str | None]


class Trick(StrEnum):
    """A way to misbehave instead of, or around, a normal reply."""

    STALL = "stall"  # never answer (a tarpit); the client must time out and hang up
    DELAY = "delay"  # answer after `delay_s`
    DROP = "drop"  # hang up instead of answering
    ENDLESS = "endless"  # stream "250-..." continuation lines until the client hangs up
    HUGE_LINE = "huge_line"  # send 10 MB without a line ending
    GARBAGE = "garbage"  # answer, then send junk and hang up (after STARTTLS 220: no TLS)


@dataclass(frozen=True, slots=True)
class Misbehave:
    """Play `trick` when a session sees `verb` for the `nth` time ("BANNER" is the greeting)."""

    verb: str
    trick: Trick
    nth: int = 1
    delay_s: float = 0.0


@dataclass(slots=True)
class SessionRecord:
    """What one client connection did: where it came from, its command lines, TLS use, the
    replies it got, and when it opened and closed (the server's monotonic clock)."""

    client_ip: str
    commands: list[str] = field(default_factory=list)  # lines as sent: "RCPT TO:<a@x.test>"
    tls: bool = False
    started: float = field(default_factory=time.monotonic)  # when the connection was accepted
    ended: float | None = None  # when it closed (time.monotonic), None while open
    replies: list[str] = field(default_factory=list)  # replies as scripted, banner first

    @property
    def verbs(self) -> list[str]:
        """Return the command verbs in order, upper-case ("EHLO", "MAIL", ...)."""
        return [_verb(line) for line in self.commands]


@dataclass(slots=True)
class _Session:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    record: SessionRecord
    refused: bool = False  # the banner was not 2xx: nothing but QUIT is served
    greeted: bool = False
    in_mail: bool = False
    rcpt_count: int = 0
    errors: int = 0
    seen: dict[str, int] = field(default_factory=dict)


def _verb(line: str) -> str:
    return line.partition(" ")[0].upper()


@cache
def _authority() -> trustme.CA:
    return trustme.CA()


class ScriptedSmtp:
    """A Postfix-like SMTP server on one loopback address, scripted by a few knobs.

    Unknown recipients get 550 5.1.1 unless listed in `mailboxes`; `rcpt` overrides per
    recipient; `replies` overrides any verb's reply ("BANNER", "EHLO", "MAIL", ...; a reply not
    starting with three digits is sent raw, to play garbage). DATA is recorded and refused: the
    engine must never send it. Errors counted for `hard_error_limit` are every 4xx/5xx reply, as
    Postfix's smtpd_hard_error_limit counts them; the next command then gets 421 and a hang-up.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        hostname: str = "mx.example.test",
        mailboxes: Iterable[str] = (),
        rcpt: RcptScript | None = None,
        replies: Mapping[str, str] | None = None,
        tls: bool = False,
        smtputf8: bool = True,
        latency_ms: float = 0,
        misbehave: Iterable[Misbehave] = (),
        max_sessions: int | None = None,
        max_rcpt: int | None = None,
        hard_error_limit: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.hostname = hostname
        self.mailboxes = {address.lower() for address in mailboxes}
        self.rcpt = rcpt
        self.replies = {verb.upper(): reply for verb, reply in (replies or {}).items()}
        self.tls = tls
        self.smtputf8 = smtputf8
        self.latency_ms = latency_ms
        self.misbehave = tuple(misbehave)
        self.max_sessions = max_sessions
        self.max_rcpt = max_rcpt
        self.hard_error_limit = hard_error_limit
        self.sessions: list[SessionRecord] = []
        self.max_concurrent = 0
        self._active = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle: asyncio.Event | None = None
        self._tls_context: ssl.SSLContext | None = None

    # What was seen ---------------------------------------------------------------------------

    @property
    def commands(self) -> list[str]:
        """Return every session's verbs in order, so a test can say `"DATA" not in commands`."""
        return [verb for record in self.sessions for verb in record.verbs]

    @property
    def lines(self) -> list[str]:
        """Return every session's command lines as sent (verb and arguments)."""
        return [line for record in self.sessions for line in record.commands]

    @property
    def session_count(self) -> int:
        """Return how many connections were accepted."""
        return len(self.sessions)

    @property
    def tls_used(self) -> bool:
        """Return whether any session switched to TLS."""
        return any(record.tls for record in self.sessions)

    async def wait_idle(self) -> None:
        """Return once no session is open (every client has hung up or been hung up on)."""
        if self._idle is not None:
            await self._idle.wait()

    # Life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on host:port (port 0 picks one, read it back from `.port`)."""
        self._idle = asyncio.Event()
        self._idle.set()
        if self.tls:
            self._tls_context = self._make_tls_context()
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=_READ_LIMIT
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and hang up on every open session; a no-op when not started."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    def _make_tls_context(self) -> ssl.SSLContext:
        # A certificate from a throwaway CA nobody trusts: to the client it is self-signed.
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        _authority().issue_cert(self.hostname, self.host).configure_cert(context)
        return context

    # One session -----------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None and self._idle is not None
        self._tasks.add(task)
        record = SessionRecord(client_ip=writer.get_extra_info("peername")[0])
        self.sessions.append(record)
        self._active += 1
        self.max_concurrent = max(self.max_concurrent, self._active)
        self._idle.clear()
        try:
            await self._converse(_Session(reader, writer, record))
        except (ConnectionError, ssl.SSLError, ValueError, asyncio.IncompleteReadError):
            pass  # the client hung up or sent nonsense; the record keeps what it did
        finally:
            writer.transport.abort()
            record.ended = time.monotonic()
            self._active -= 1
            if not self._active:
                self._idle.set()
            self._tasks.discard(task)

    async def _converse(self, session: _Session) -> None:
        if self.max_sessions is not None and self._active > self.max_sessions:
            await self._send(session, "421 4.7.0 Error: too many connections")
            return
        banner = self.replies.get("BANNER", f"220 {self.hostname} ESMTP Postfix")
        session.refused = not banner.startswith("2")
        if not await self._answer(session, "BANNER", banner) or banner.startswith("421"):
            return
        while line := await session.reader.readline():
            text = line.decode("utf-8", "surrogateescape").rstrip("\r\n")
            session.record.commands.append(text)
            verb, _, args = text.partition(" ")
            verb = verb.upper()
            if self.hard_error_limit is not None and session.errors >= self.hard_error_limit:
                await self._send(session, "421 4.7.0 Error: too many errors")
                return
            reply = self._reply(session, verb, args)
            if not await self._answer(session, verb, reply):
                return
            if verb == "QUIT" or reply.startswith("421"):
                return
            if verb == "STARTTLS" and reply.startswith("220"):
                await self._start_tls(session)

    async def _start_tls(self, session: _Session) -> None:
        assert self._tls_context is not None
        await session.writer.start_tls(self._tls_context)
        session.record.tls = True
        # RFC 3207 §4.2: after TLS the client must greet again and start a new transaction.
        session.greeted = session.in_mail = False

    # Replies ---------------------------------------------------------------------------------

    def _reply(self, session: _Session, verb: str, args: str) -> str:
        reply = self.replies.get(verb) or self._default_reply(session, verb, args)
        if reply[:1] in ("4", "5"):
            session.errors += 1
        elif reply.startswith("2"):
            if verb in ("EHLO", "HELO"):
                session.greeted, session.in_mail = True, False
            elif verb == "MAIL":
                session.in_mail = True
            elif verb == "RSET":
                session.in_mail, session.rcpt_count = False, 0
        return reply

    def _default_reply(self, session: _Session, verb: str, args: str) -> str:
        if session.refused and verb != "QUIT":
            return "554 5.5.1 Error: no SMTP service here"
        match verb:
            case "EHLO":
                return self._ehlo_reply(session)
            case "HELO":
                return f"250 {self.hostname}"
            case "MAIL":
                return self._mail_reply(session, args)
            case "RCPT":
                return self._rcpt_command_reply(session, args)
            case "RSET" | "NOOP":
                return "250 2.0.0 Ok"
            case "QUIT":
                return "221 2.0.0 Bye"
            case "DATA":
                return "554 5.5.1 Error: no valid recipients"
            case "STARTTLS" if self.tls and not session.record.tls:
                return "220 2.0.0 Ready to start TLS"
            case "VRFY":
                return "252 2.0.0 Send some mail, I'll try my best"
        return "502 5.5.2 Error: command not recognized"

    def _ehlo_reply(self, session: _Session) -> str:
        lines = [self.hostname, "PIPELINING", "SIZE 10240000"]
        if self.tls and not session.record.tls:
            lines.append("STARTTLS")
        lines += ["ENHANCEDSTATUSCODES", "8BITMIME"]
        if self.smtputf8:
            lines.append("SMTPUTF8")
        return "250 " + "\n".join(lines)

    def _mail_reply(self, session: _Session, args: str) -> str:
        if not session.greeted:
            return "503 5.5.1 Error: send HELO/EHLO first"
        if session.in_mail:
            return "503 5.5.1 Error: nested MAIL command"
        if "SMTPUTF8" in args.upper().split() and not self.smtputf8:
            return "555 5.5.4 Unsupported option: SMTPUTF8"
        return "250 2.1.0 Ok"

    def _rcpt_command_reply(self, session: _Session, args: str) -> str:
        if not session.in_mail:
            return "503 5.5.1 Error: need MAIL command"
        session.rcpt_count += 1
        if self.max_rcpt is not None and session.rcpt_count > self.max_rcpt:
            return "452 4.5.3 Error: too many recipients"
        found = _ADDRESS.search(args)
        return self.rcpt_reply(session.record, found.group(1) if found else args)

    def rcpt_reply(self, record: SessionRecord, recipient: str) -> str:
        """Return the reply to RCPT TO:<recipient>; subclasses override this for behaviours."""
        scripted = None
        if callable(self.rcpt):
            scripted = self.rcpt(recipient)
        elif self.rcpt is not None:
            scripted = self.rcpt.get(recipient)
        if scripted:
            return scripted
        if recipient.lower() in self.mailboxes:
            return "250 2.1.5 Ok"
        return (
            f"550 5.1.1 <{recipient}>: Recipient address rejected: "
            "User unknown in virtual mailbox table"
        )

    # Sending, and misbehaving ----------------------------------------------------------------

    async def _answer(self, session: _Session, verb: str, reply: str) -> bool:
        """Send the reply, or play this verb's trick; return whether the session goes on."""
        count = session.seen[verb] = session.seen.get(verb, 0) + 1
        trick = next((m for m in self.misbehave if m.verb == verb and m.nth == count), None)
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        if trick is None:
            await self._send(session, reply)
            return True
        match trick.trick:
            case Trick.DELAY:
                await asyncio.sleep(trick.delay_s)
                await self._send(session, reply)
                return True
            case Trick.STALL:
                await _until_hang_up(session)
            case Trick.ENDLESS:
                await self._endless(session)
            case Trick.HUGE_LINE:
                await _huge_line(session)
            case Trick.GARBAGE:
                await self._send(session, reply)
                session.writer.write(b"\x00\xff this is not what you were expecting\r\n")
                await session.writer.drain()
        return False

    async def _send(self, session: _Session, reply: str) -> None:
        session.record.replies.append(reply)
        session.writer.write(_format(reply))
        await session.writer.drain()

    async def _endless(self, session: _Session) -> None:
        line = b"250-" + b"x" * 72 + b"\r\n"
        while True:
            if self.latency_ms:
                await asyncio.sleep(self.latency_ms / 1000)
            session.writer.write(line if self.latency_ms else line * 64)
            await session.writer.drain()
            await asyncio.sleep(0)  # drain() does not yield below the high-water mark


def _format(reply: str) -> bytes:
    """Return a reply's wire form: "250 a\\nb" becomes "250-a", "250 b"; non-replies go raw."""
    if not reply[:3].isdigit():
        return reply.encode() + b"\r\n"
    code, lines = reply[:3], reply[4:].split("\n")
    wire = [f"{code}-{line}" for line in lines[:-1]] + [f"{code} {lines[-1]}"]
    return ("\r\n".join(wire) + "\r\n").encode("utf-8", "surrogateescape")


async def _until_hang_up(session: _Session) -> None:
    while await session.reader.read(_CHUNK):
        pass


async def _huge_line(session: _Session) -> None:
    chunk = b"x" * _CHUNK
    for _ in range(HUGE_LINE_BYTES // _CHUNK):
        session.writer.write(chunk)
        await session.writer.drain()
        await asyncio.sleep(0)
    await _until_hang_up(session)


class CatchAllSmtp(ScriptedSmtp):
    """Accepts every recipient at RCPT, as catch-all domains (and Yahoo-style providers) do."""

    def rcpt_reply(self, record: SessionRecord, recipient: str) -> str:
        return "250 2.1.5 Ok"


class GreylistingSmtp(ScriptedSmtp):
    """Answers 451 4.7.1 the first `times` times per (client IP, recipient), then for real."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, times: int = 1, **knobs: Any):
        super().__init__(host, port, **knobs)
        self.times = times
        self.tries: dict[tuple[str, str], int] = {}

    def rcpt_reply(self, record: SessionRecord, recipient: str) -> str:
        key = (record.client_ip, recipient.lower())
        self.tries[key] = self.tries.get(key, 0) + 1
        if self.tries[key] <= self.times:
            return f"451 4.7.1 <{recipient}>: Recipient address rejected: Greylisted, try later"
        return super().rcpt_reply(record, recipient)


class PostgreySmtp(ScriptedSmtp):
    """Greylists like postgrey: 450 naming no delay until `delay_s` passed since the first try.

    Keyed on (client IP, recipient); asking early does not restart the clock. With `stated`,
    the reply names the delay instead ("try again in N seconds"), as some greylisters do.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        delay_s: float,
        stated: bool = False,
        **knobs: Any,
    ) -> None:
        super().__init__(host, port, **knobs)
        self.delay_s = delay_s
        self.stated = stated
        self.first_seen: dict[tuple[str, str], float] = {}
        self.deferred = 0

    def rcpt_reply(self, record: SessionRecord, recipient: str) -> str:
        key = (record.client_ip, recipient.lower())
        first = self.first_seen.setdefault(key, time.monotonic())
        if time.monotonic() - first >= self.delay_s:
            return super().rcpt_reply(record, recipient)
        self.deferred += 1
        if self.stated:
            return f"450 4.7.1 <{recipient}>: Greylisted, try again in {self.delay_s:g} seconds"
        domain = recipient.rpartition("@")[2]
        return (
            f"450 4.2.0 <{recipient}>: Recipient address rejected: Greylisted, "
            f"see http://postgrey.schweikert.ch/help/{domain}.html"
        )


class AnvilSmtp(ScriptedSmtp):
    """Postfix's anvil rate limits per client IP and fixed window (anvil_rate_time_unit).

    `rcpt_rate` recipients per window ("450 4.7.1 Error: too many recipients from <ip>", the
    session goes on), `session_rate` sessions per window ("421 4.7.0 ... Error: too many
    connections from <ip>" at the banner). A window starts with its first event. `violations`
    counts the refusals the client provoked, `crowded` the "too many connections" among them.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        window_s: float,
        rcpt_rate: int | None = None,
        session_rate: int | None = None,
        **knobs: Any,
    ) -> None:
        super().__init__(host, port, **knobs)
        self.window_s = window_s
        self.rcpt_rate = rcpt_rate
        self.session_rate = session_rate
        self.violations = 0
        self.crowded = 0
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}

    def _count(self, client: str, kind: str) -> int:
        """Count one event in the client's current window and return the window's count."""
        start, count = self._windows.get((client, kind), (0.0, 0))
        now = time.monotonic()
        if now - start >= self.window_s:
            start, count = now, 0
        self._windows[(client, kind)] = (start, count + 1)
        return count + 1

    async def _converse(self, session: _Session) -> None:
        client = session.record.client_ip
        if self.session_rate is not None and self._count(client, "session") > self.session_rate:
            self.violations += 1
            self.crowded += 1
            await self._send(
                session, f"421 4.7.0 {self.hostname} Error: too many connections from {client}"
            )
            return
        await super()._converse(session)

    def rcpt_reply(self, record: SessionRecord, recipient: str) -> str:
        if self.rcpt_rate is not None and self._count(record.client_ip, "rcpt") > self.rcpt_rate:
            self.violations += 1
            return f"450 4.7.1 Error: too many recipients from {record.client_ip}"
        return super().rcpt_reply(record, recipient)


class HeloOnlySmtp(ScriptedSmtp):
    """An SMTP server from before ESMTP: EHLO is not recognised, HELO works."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **knobs: Any) -> None:
        replies = {"EHLO": "502 5.5.2 Error: command not recognized", **knobs.pop("replies", {})}
        super().__init__(host, port, replies=replies, **knobs)


# Ports, threads and fixtures -----------------------------------------------------------------


def shared_port(hosts: Sequence[str], *, attempts: int = 20) -> int:
    """Return a port free on every host now (bind 0 on the first, reuse it on the others).

    Prefer start_together(), which keeps the port bound; this is for a port a config must name
    before the servers exist.
    """
    for _ in range(attempts):
        with contextlib.ExitStack() as sockets:
            first = sockets.enter_context(socket.socket())
            first.bind((hosts[0], 0))
            port = first.getsockname()[1]
            try:
                for host in hosts[1:]:
                    sockets.enter_context(socket.socket()).bind((host, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            return port
    raise RuntimeError(f"no port free on all of {list(hosts)} after {attempts} tries")


async def start_together(servers: Sequence[ScriptedSmtp], *, attempts: int = 20) -> int:
    """Start servers on one port (the engine dials one port for every MX) and return it.

    The first server picks the port when its `port` is 0; a clash on another host retries.
    """
    wanted = servers[0].port
    for _ in range(attempts):
        servers[0].port = wanted
        started: list[ScriptedSmtp] = []
        try:
            for server in servers:
                if started:
                    server.port = started[0].port
                await server.start()
                started.append(server)
            return servers[0].port
        except OSError as exc:
            await _stop_all(started)
            if exc.errno != errno.EADDRINUSE or wanted:
                raise
    raise RuntimeError(f"no shared port for {len(servers)} servers after {attempts} tries")


async def _stop_all(servers: Iterable[ScriptedSmtp]) -> None:
    for server in servers:
        await server.stop()


@contextlib.contextmanager
def running_smtp_server(*servers: ScriptedSmtp, **knobs: Any) -> Iterator[ScriptedSmtp]:
    """Yield the first server, all running on one port in a thread with its own event loop.

    With no server given, a ScriptedSmtp(**knobs) is made. For subprocess/CLI tests and benches;
    records are appended by the server thread and are safe to read once the client is done.
    """
    chosen = servers or (ScriptedSmtp(**knobs),)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-smtp", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(start_together(chosen), loop).result(timeout=30)
        yield chosen[0]
    finally:
        asyncio.run_coroutine_threadsafe(_stop_all(chosen), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


@pytest.fixture
async def smtp_server() -> AsyncIterator[Callable[..., Awaitable[ScriptedSmtp]]]:
    """Yield `start(server=None, **knobs)`: starts a server (ScriptedSmtp(**knobs) by default)."""
    started: list[ScriptedSmtp] = []

    async def start(server: ScriptedSmtp | None = None, **knobs: Any) -> ScriptedSmtp:
        server = server or ScriptedSmtp(**knobs)
        started.append(server)
        await server.start()
        return server

    yield start
    await _stop_all(started)


@pytest.fixture
async def smtp_servers() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    """Yield `start(*servers)`: starts servers on several 127.0.0.x on one port, returns it."""
    started: list[ScriptedSmtp] = []

    async def start(*servers: ScriptedSmtp) -> int:
        started.extend(servers)
        return await start_together(servers)

    yield start
    await _stop_all(started)
