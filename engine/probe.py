"""One SMTP conversation with one MX address: banner, EHLO, STARTTLS, MAIL, RCPT..., QUIT.

Owns the only aiosmtplib import and turns its failures into engine.errors at this one boundary.
It reports what the server said as SmtpReply values and never decides what a reply means
(replies.py does), which MX to try or how many sessions to open (verifier.py, throttle.py).
It never sends DATA: no mail is ever sent.

We drive aiosmtplib's SMTPProtocol (its framing) rather than its SMTP client class, which is built
to deliver mail: it closes the connection on a refused banner before we can QUIT politely and folds
EHLO and STARTTLS into connect(). The protocol hands us every reply as (code, message), so no
SMTPRecipientRefused needs turning back into a reply, and it bounds every read: `timeout` covers a
whole reply however many continuation lines it has, and a reply longer than
aiosmtplib.protocol.MAX_RESPONSE_LENGTH (32 KiB, aiosmtplib >= 5.1) is an error, so an endless
multi-line reply or a 10 MB line ends quickly with bounded memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, replace

from aiosmtplib.email import quote_address
from aiosmtplib.errors import SMTPException, SMTPResponseException
from aiosmtplib.esmtp import parse_esmtp_extensions
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse
from python_socks import ProxyError
from python_socks.async_.asyncio import Proxy

from .errors import ProbeConnectError, ProbeError, ProbeProtocolError, ProbeTimeout
from .limits import is_session_limit
from .replies import parse_reply
from .result import ReplyCode, SmtpReply, Stage
from .settings import EngineSettings, SmtpSettings
from .untrusted import clean_text

#: Longest wait for the 221 to our QUIT: we are leaving, a slow goodbye costs only us.
_QUIT_WAIT_S = 1.0
#: The refusal we report when an internationalised address meets a server without SMTPUTF8.
SMTPUTF8_UNSUPPORTED = SmtpReply(555, "5.6.7", "SMTPUTF8 not supported by server")
#: Failures of a socket, a proxy or aiosmtplib; TimeoutError is an OSError.
_FAILURES = (SMTPException, OSError, ProxyError)


@dataclass(frozen=True, slots=True)
class Session:
    """What one SMTP conversation with one MX address showed."""

    mx_host: str  # host name, for the result and provider detection
    ip: str
    banner: SmtpReply | None
    ehlo: SmtpReply | None  # last EHLO/HELO reply (its text names the software)
    tls: bool
    refusal: tuple[Stage, SmtpReply] | None  # a non-2xx before RCPT: the session's answer
    rcpt_replies: tuple[tuple[str, SmtpReply], ...]  # (recipient, reply) in the order sent
    # Why the conversation ended before every recipient was asked (dropped, timeout, protocol);
    # the replies so far are kept. Recipients absent from rcpt_replies were not asked.
    error: ProbeError | None


async def run_session(
    mx_host: str,
    ip: str,
    recipients: Sequence[str],
    *,
    settings: EngineSettings,
    smtputf8: bool = False,
    source_address: str | None = None,
    gate: asyncio.Semaphore | None = None,
) -> Session:
    """Return what one conversation with `ip` said about `recipients`, asked in order.

    `gate` (the verifier's global session cap) is held from the dial to the end, except while
    a host that has not greeted within PROMPT_GREETING_S keeps us waiting: a slow greeter holds
    its own slots, not one every other host needs. The whole conversation ends at
    smtp.session_timeout_s (a server answering each command just in time).

    Raises ProbeConnectError, ProbeTimeout or ProbeProtocolError only when nothing usable came back
    before RCPT; a break during RCPT is kept in `Session.error` with the replies so far. RCPT stops
    after a 421 or a "too many recipients" 452: the caller re-queues the recipients not asked.
    """
    converse = functools.partial(
        _converse,
        mx_host,
        ip,
        recipients,
        settings=settings,
        smtputf8=smtputf8,
        source_address=source_address,
        gate=_Gate(gate or asyncio.Semaphore()),
        deadline=asyncio.get_running_loop().time() + settings.smtp.session_timeout_s,
    )
    if settings.smtp.starttls == "never":
        return await converse(starttls=False)
    try:
        return await converse(starttls=True)
    except _TlsFailed:
        # Opportunistic TLS (RFC 7435) that fails falls back to plaintext on the same host, as
        # Postfix does at smtp_tls_security_level=may; this session then reports tls=False.
        return await converse(starttls=False)


class _TlsFailed(Exception):
    """The TLS handshake after STARTTLS failed; the connection is gone."""


async def _converse(
    mx_host: str,
    ip: str,
    recipients: Sequence[str],
    *,
    settings: EngineSettings,
    smtputf8: bool,
    source_address: str | None,
    starttls: bool,
    gate: _Gate,
    deadline: float,
) -> Session:
    """Return the session held on one fresh connection, closed however the conversation ends."""
    async with gate:
        return await _converse_held(
            mx_host, ip, recipients,
            settings=settings, smtputf8=smtputf8, source_address=source_address,
            starttls=starttls, gate=gate, deadline=deadline,
        )  # fmt: skip


async def _converse_held(
    mx_host: str,
    ip: str,
    recipients: Sequence[str],
    *,
    settings: EngineSettings,
    smtputf8: bool,
    source_address: str | None,
    starttls: bool,
    gate: _Gate,
    deadline: float,
) -> Session:
    """Return the session of _converse, its gate held (but for a slow greeting)."""
    connection, banner = await _Connection.open(
        mx_host, ip, smtp=settings.smtp, source_address=source_address, deadline=deadline,
        gate=gate,
    )  # fmt: skip
    try:
        session = await _talk(
            connection, banner, recipients, settings=settings, smtputf8=smtputf8, starttls=starttls
        )
    except BaseException:
        connection.abort()
        raise
    if session.error is None:
        await connection.quit()
    else:
        connection.abort()  # after a timeout the next reply could be a stale one: no QUIT
    return session


async def _talk(
    connection: _Connection,
    banner: SmtpReply,
    recipients: Sequence[str],
    *,
    settings: EngineSettings,
    smtputf8: bool,
    starttls: bool,
) -> Session:
    """Return the session from the banner on: greet, secure, MAIL FROM, then RCPT each."""
    session = Session(connection.mx_host, connection.ip, banner, None, False, None, (), None)
    if not _positive(banner):
        return replace(session, refusal=(Stage.CONNECT, banner))
    session, extensions = await _hello(connection, session, settings.helo_hostname)
    if session.refusal is None and starttls and "starttls" in extensions:
        session, extensions = await _secure(connection, session, extensions, settings)
    if session.refusal is not None:
        return session
    refusal = await _mail(connection, settings.envelope_sender, extensions, smtputf8=smtputf8)
    if refusal is not None:
        return replace(session, refusal=(Stage.MAIL, refusal))
    replies, error = await _ask(connection, recipients, smtputf8=smtputf8)
    return replace(session, rcpt_replies=replies, error=error)


async def _hello(
    connection: _Connection, session: Session, hostname: str
) -> tuple[Session, dict[str, str]]:
    """Return the session with its EHLO (or HELO) reply, and the ESMTP extensions offered."""
    name = hostname.encode("ascii")
    response = await connection.command(Stage.EHLO, b"EHLO", name)
    extensions: dict[str, str] = {}
    if 500 <= response.code < 600:
        # A server without ESMTP rejects EHLO; RFC 5321 §4.1.4 has the client fall back to HELO.
        response = await connection.command(Stage.EHLO, b"HELO", name)
    elif 200 <= response.code < 300:
        extensions = parse_esmtp_extensions(response.message)[0]
    reply = _reply(response)
    session = replace(session, ehlo=reply)
    if not _positive(reply):
        session = replace(session, refusal=(Stage.EHLO, reply))
    return session, extensions


async def _secure(
    connection: _Connection, session: Session, extensions: dict[str, str], settings: EngineSettings
) -> tuple[Session, dict[str, str]]:
    """Return the session after STARTTLS: over TLS and greeted again, or plaintext as before."""
    response = await connection.starttls()
    if response.code == ReplyCode.SERVICE_NOT_AVAILABLE:
        return replace(session, refusal=(Stage.STARTTLS, _reply(response))), extensions
    if response.code != ReplyCode.READY:
        return session, extensions  # e.g. 454 TLS not available: MTAs go on in plaintext
    # RFC 3207 §4.2: forget what the server said before TLS and greet it again.
    return await _hello(connection, replace(session, tls=True), settings.helo_hostname)


async def _mail(
    connection: _Connection, sender: str, extensions: dict[str, str], *, smtputf8: bool
) -> SmtpReply | None:
    """Return the refusal of MAIL FROM, or None when the server accepted it."""
    if smtputf8 and "smtputf8" not in extensions:
        # An internationalised address cannot be asked about without SMTPUTF8 (RFC 6531 §3.4).
        return SMTPUTF8_UNSUPPORTED
    words = [b"MAIL", b"FROM:" + _address(sender, smtputf8=smtputf8)]
    if smtputf8:
        words.append(b"SMTPUTF8")
    reply = _reply(await connection.command(Stage.MAIL, *words))
    return None if _positive(reply) else reply


async def _ask(
    connection: _Connection, recipients: Sequence[str], *, smtputf8: bool
) -> tuple[tuple[tuple[str, SmtpReply], ...], ProbeError | None]:
    """Return each recipient's RCPT reply in order, and the error that cut the list short."""
    replies: list[tuple[str, SmtpReply]] = []
    for recipient in recipients:
        rcpt_to = b"TO:" + _address(recipient, smtputf8=smtputf8)
        try:
            reply = _reply(await connection.command(Stage.RCPT, b"RCPT", rcpt_to))
        except ProbeError as exc:
            return tuple(replies), exc
        replies.append((recipient, reply))
        if is_session_limit(reply):
            break
    return tuple(replies), None


def _address(address: str, *, smtputf8: bool) -> bytes:
    """Return `<address>` for a MAIL or RCPT line; aiosmtplib refuses command injection."""
    return quote_address(address).encode("utf-8" if smtputf8 else "ascii")


def _positive(reply: SmtpReply) -> bool:
    return 200 <= reply.code < 300


def _reply(response: SMTPResponse) -> SmtpReply:
    return parse_reply(response.code, response.message)


# The connection ------------------------------------------------------------------------------


class _Connection:
    """One TCP connection to an MX address, speaking SMTP through aiosmtplib's framing."""

    def __init__(
        self, mx_host: str, ip: str, protocol: SMTPProtocol, *, timeout: float, deadline: float
    ) -> None:
        self.mx_host = mx_host
        self.ip = ip
        self._protocol = protocol
        self._timeout = timeout
        self._deadline = deadline  # loop time the whole session must end by

    @classmethod
    async def open(
        cls,
        mx_host: str,
        ip: str,
        *,
        smtp: SmtpSettings,
        source_address: str | None,
        deadline: float,
        gate: _Gate,
    ) -> tuple[_Connection, SmtpReply]:
        """Return a connection (within connect_timeout_s) and its banner (greeting_timeout_s).

        Separate waits: a host that is down fails fast, while one that pauses before its
        greeting (postscreen, tarpits, load) is waited for, as RFC 5321 §4.5.3.2 asks.
        """
        protocol = SMTPProtocol(loop=asyncio.get_running_loop())
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(min(deadline, loop.time() + smtp.connect_timeout_s)):
                await _dial(protocol, ip, smtp=smtp, source_address=source_address)
            async with asyncio.timeout_at(min(deadline, loop.time() + smtp.greeting_timeout_s)):
                banner = await _greeting(protocol, gate)
        except _FAILURES as exc:
            _abort(protocol)
            raise _probe_error(exc, mx_host, Stage.CONNECT) from exc
        except BaseException:
            _abort(protocol)
            raise
        connection = cls(mx_host, ip, protocol, timeout=smtp.command_timeout_s, deadline=deadline)
        return connection, _reply(banner)

    def _wait_s(self) -> float:
        """Return the wait for the next reply: command_timeout_s, within the session deadline."""
        return max(0.0, min(self._timeout, self._deadline - asyncio.get_running_loop().time()))

    async def command(self, stage: Stage, *words: bytes) -> SMTPResponse:
        """Return the server's response to one command, read within command_timeout_s."""
        try:
            if (wait := self._wait_s()) <= 0:
                raise TimeoutError("session deadline passed")
            return await self._protocol.execute_command(*words, timeout=wait)
        except _FAILURES as exc:
            raise _probe_error(exc, self.mx_host, stage) from exc

    async def starttls(self) -> SMTPResponse:
        """Return the reply to STARTTLS; on 220 the connection now speaks TLS.

        Raises _TlsFailed when the handshake (or the reply before it) fails.
        """
        try:
            return await self._protocol.start_tls(
                _client_tls_context(),
                server_hostname=self.mx_host.rstrip(".") or None,
                timeout=self._wait_s() or 0.001,
            )
        except SMTPResponseException as exc:
            if exc.code > 0:
                return SMTPResponse(exc.code, exc.message)  # a plain refusal, e.g. 454
            raise _TlsFailed(clean_text(str(exc))) from exc
        except (*_FAILURES, ValueError) as exc:  # ValueError: a name ssl will not send as SNI
            raise _TlsFailed(str(exc)) from exc

    def local_ip(self) -> str | None:
        """Return our side's address of the connection (None once it is gone)."""
        transport = self._protocol.transport
        local = transport.get_extra_info("sockname") if transport is not None else None
        return str(local[0]) if local else None

    async def quit(self) -> None:
        """Say QUIT, wait briefly for the 221, and close; a server that already left is fine."""
        with contextlib.suppress(*_FAILURES):
            await self._protocol.execute_command(b"QUIT", timeout=min(self._timeout, _QUIT_WAIT_S))
        transport = self._protocol.transport
        if transport is not None:
            transport.close()

    def abort(self) -> None:
        """Drop the connection now, discarding whatever is still buffered either way."""
        _abort(self._protocol)


#: A greeting later than this is waited for without the verifier's global session slot.
PROMPT_GREETING_S = 2.0


class _Gate:
    """The global session slot one conversation holds, given back while a greeting is slow."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots = slots
        self._held = False

    async def __aenter__(self) -> _Gate:
        await self._slots.acquire()
        self._held = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots.release()


async def _greeting(protocol: SMTPProtocol, gate: _Gate) -> SMTPResponse:
    """Return the banner; after PROMPT_GREETING_S, wait for it without the global slot."""
    read = asyncio.ensure_future(protocol.read_response())
    try:
        done, _ = await asyncio.wait({read}, timeout=PROMPT_GREETING_S)
        if not done:
            gate.release()
            await asyncio.wait({read})
            await gate.__aenter__()
        return read.result()
    finally:
        read.cancel()


async def _dial(
    protocol: SMTPProtocol, ip: str, *, smtp: SmtpSettings, source_address: str | None
) -> None:
    """Connect `protocol` to ip:port, directly or through the configured SOCKS proxy."""
    loop = asyncio.get_running_loop()
    local_addr = (source_address, 0) if source_address else None
    if not smtp.proxy:
        await loop.create_connection(
            lambda: protocol, host=ip, port=smtp.port, local_addr=local_addr
        )
        return
    proxy = Proxy.from_url(smtp.proxy)
    sock: socket.socket = await proxy.connect(
        ip, smtp.port, timeout=smtp.connect_timeout_s, local_addr=local_addr
    )
    try:
        await loop.create_connection(lambda: protocol, sock=sock)
    except BaseException:
        sock.close()
        raise


def _abort(protocol: SMTPProtocol) -> None:
    if protocol.transport is not None:
        protocol.transport.abort()


@functools.cache
def _client_tls_context() -> ssl.SSLContext:
    """Return a TLS client context that checks no certificate, as opportunistic MTAs do."""
    # RFC 7435: unauthenticated encryption beats none; MX certificates often do not match.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _probe_error(exc: BaseException, mx_host: str, stage: Stage) -> ProbeError:
    """Return the engine's error for a socket, proxy or aiosmtplib failure at `stage`."""
    if isinstance(exc, TimeoutError):
        return ProbeTimeout(mx_host, stage, detail="no answer in time")
    # The detail may quote the server (an unparsable reply): untrusted text.
    detail = clean_text(getattr(exc, "message", "") or str(exc) or type(exc).__name__)
    if isinstance(exc, SMTPResponseException):
        return ProbeProtocolError(mx_host, stage, detail=detail)
    return ProbeConnectError(mx_host, stage, detail=detail)


async def greet(
    mx_host: str, ip: str, *, smtp: SmtpSettings, source_address: str | None = None
) -> tuple[SmtpReply, str | None]:
    """Return a server's banner and the local address that reached it, then say QUIT.

    The pre-flight's port-25 test: the same dial (source address, proxy) as a real session.
    """
    gate = _Gate(asyncio.Semaphore())
    async with gate:
        connection, banner = await _Connection.open(
            mx_host,
            ip,
            smtp=smtp,
            source_address=source_address,
            deadline=asyncio.get_running_loop().time() + smtp.session_timeout_s,
            gate=gate,
        )
    local = connection.local_ip()
    await connection.quit()
    return banner, local
