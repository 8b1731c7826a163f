"""engine.probe: one SMTP conversation against scripted servers on 127.0.0.x, real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from mailprobe.engine.errors import ProbeConnectError, ProbeProtocolError, ProbeTimeout
from mailprobe.engine.probe import SMTPUTF8_UNSUPPORTED, Session, run_session
from mailprobe.engine.result import SmtpReply, Stage
from mailprobe.engine.settings import EngineSettings, SmtpSettings

from tests.fakes.smtp import (
    CatchAllSmtp,
    GreylistingSmtp,
    HeloOnlySmtp,
    Misbehave,
    ScriptedSmtp,
    Trick,
    running_smtp_server,
    shared_port,
)

MX = "mx.example.test"
JOHN = "john@example.test"
JANE = "jane@example.test"
NOBODY = "nobody@example.test"

Start = Callable[..., Awaitable[ScriptedSmtp]]


def settings_for(port: int, **smtp: Any) -> EngineSettings:
    """Return engine settings aimed at `port` with tiny timeouts."""
    knobs: dict[str, Any] = {
        "connect_timeout_s": 0.5,
        "greeting_timeout_s": 0.5,
        "command_timeout_s": 0.5,
        **smtp,
    }
    return EngineSettings(
        helo_hostname="probe.example.test",
        mail_from="bounce@probe.example.test",
        smtp=SmtpSettings(port=port, **knobs),
    )


async def probe(server: ScriptedSmtp, recipients: list[str], **knobs: Any) -> Session:
    """Return run_session() against `server`; knobs go to SmtpSettings or run_session."""
    session_knobs = {k: knobs.pop(k) for k in ("smtputf8", "source_address") if k in knobs}
    return await run_session(
        MX, server.host, recipients, settings=settings_for(server.port, **knobs), **session_knobs
    )


@pytest.fixture
async def serve(smtp_server: Start) -> AsyncIterator[Start]:
    """Start servers like smtp_server; afterwards every one must not have seen DATA."""
    started: list[ScriptedSmtp] = []

    async def start(server: ScriptedSmtp | None = None, **knobs: Any) -> ScriptedSmtp:
        started.append(await smtp_server(server, **knobs))
        return started[-1]

    yield start
    for server in started:
        assert "DATA" not in server.commands, "the engine must never send DATA"


def codes(session: Session) -> list[tuple[str, int, str | None]]:
    return [(rcpt, reply.code, reply.enhanced_code) for rcpt, reply in session.rcpt_replies]


# A normal conversation -----------------------------------------------------------------------


async def test_session_replies_per_recipient_in_order(serve: Start) -> None:
    server = await serve(mailboxes={JOHN, JANE})
    session = await probe(server, [JOHN, NOBODY, JANE])
    assert codes(session) == [(JOHN, 250, "2.1.5"), (NOBODY, 550, "5.1.1"), (JANE, 250, "2.1.5")]
    assert session.refusal is None and session.error is None
    assert (session.mx_host, session.ip, session.tls) == (MX, "127.0.0.1", False)
    assert session.banner == SmtpReply(220, None, "mx.example.test ESMTP Postfix")
    assert session.ehlo is not None and session.ehlo.code == 250
    assert server.lines == [
        "EHLO probe.example.test",
        "MAIL FROM:<bounce@probe.example.test>",
        f"RCPT TO:<{JOHN}>",
        f"RCPT TO:<{NOBODY}>",
        f"RCPT TO:<{JANE}>",
        "QUIT",
    ]


async def test_session_sends_quit_last(serve: Start) -> None:
    server = await serve()
    await probe(server, [NOBODY])
    await server.wait_idle()
    assert server.commands[-1] == "QUIT"


async def test_catch_all_server_accepts_every_recipient(serve: Start) -> None:
    server = await serve(CatchAllSmtp())
    session = await probe(server, [JOHN, NOBODY])
    assert [reply.code for _, reply in session.rcpt_replies] == [250, 250]


async def test_ehlo_502_falls_back_to_helo(serve: Start) -> None:
    server = await serve(HeloOnlySmtp(mailboxes={JOHN}))
    session = await probe(server, [JOHN])
    assert server.commands == ["EHLO", "HELO", "MAIL", "RCPT", "QUIT"]
    assert session.ehlo == SmtpReply(250, None, "mx.example.test")
    assert codes(session) == [(JOHN, 250, "2.1.5")]


async def test_source_address_is_the_client_ip(serve: Start) -> None:
    server = await serve()
    await probe(server, [NOBODY], source_address="127.0.0.5")
    assert server.sessions[0].client_ip == "127.0.0.5"


async def test_servers_on_several_ips_share_one_port(
    smtp_servers: Callable[..., Awaitable[int]],
) -> None:
    strict, catch_all = ScriptedSmtp("127.0.0.2"), CatchAllSmtp("127.0.0.3")
    port = await smtp_servers(strict, catch_all)
    settings = settings_for(port)
    first = await run_session("mx1.example.test", "127.0.0.2", [JOHN], settings=settings)
    second = await run_session("mx2.example.test", "127.0.0.3", [JOHN], settings=settings)
    assert (strict.port, catch_all.port) == (port, port)
    assert [codes(first)[0][1], codes(second)[0][1]] == [550, 250]
    assert "DATA" not in strict.commands + catch_all.commands


def test_shared_port_is_free_on_every_host() -> None:
    hosts = ["127.0.0.2", "127.0.0.3"]
    port = shared_port(hosts)
    with socket.socket() as first, socket.socket() as second:
        first.bind((hosts[0], port))
        second.bind((hosts[1], port))


def test_running_smtp_server_serves_from_a_thread() -> None:
    with running_smtp_server(mailboxes={JOHN}) as server:
        session = asyncio.run(probe(server, [JOHN]))
    assert codes(session) == [(JOHN, 250, "2.1.5")]
    assert server.commands == ["EHLO", "MAIL", "RCPT", "QUIT"]


async def test_reply_latency_is_added_to_every_reply(serve: Start) -> None:
    server = await serve(latency_ms=30)
    started = time.monotonic()
    await probe(server, [NOBODY])
    # banner, EHLO, MAIL, RCPT, QUIT: five replies, each at least 30 ms late
    assert time.monotonic() - started >= 5 * 0.03


# Refusals before RCPT: answers, not errors ---------------------------------------------------


async def test_banner_554_is_a_refusal_at_connect_then_quit(serve: Start) -> None:
    server = await serve(replies={"BANNER": "554 5.7.1 Service unavailable; client blocked"})
    session = await probe(server, [JOHN])
    assert session.refusal == (
        Stage.CONNECT,
        SmtpReply(554, "5.7.1", "Service unavailable; client blocked"),
    )
    assert session.rcpt_replies == () and session.ehlo is None
    await server.wait_idle()
    assert server.commands == ["QUIT"]


async def test_banner_421_is_a_refusal_at_connect(serve: Start) -> None:
    server = await serve(replies={"BANNER": "421 4.3.2 Service not available, try later"})
    session = await probe(server, [JOHN])
    assert session.refusal == (
        Stage.CONNECT,
        SmtpReply(421, "4.3.2", "Service not available, try later"),
    )
    assert session.rcpt_replies == ()


async def test_mail_from_refused_is_a_refusal_at_mail(serve: Start) -> None:
    refused = "553 5.7.1 <bounce@probe.example.test>: Sender address rejected: not owned"
    server = await serve(replies={"MAIL": refused})
    session = await probe(server, [JOHN])
    assert session.refusal is not None
    assert (session.refusal[0], session.refusal[1].code) == (Stage.MAIL, 553)
    assert "RCPT" not in server.commands
    assert server.commands[-1] == "QUIT"


async def test_smtputf8_needed_but_unsupported_is_a_refusal_at_mail(serve: Start) -> None:
    server = await serve(smtputf8=False)
    session = await probe(server, ["jöhn@example.test"], smtputf8=True)
    assert session.refusal == (Stage.MAIL, SMTPUTF8_UNSUPPORTED)
    assert SMTPUTF8_UNSUPPORTED == SmtpReply(555, "5.6.7", "SMTPUTF8 not supported by server")
    assert "MAIL" not in server.commands and "RCPT" not in server.commands


async def test_smtputf8_supported_mail_carries_smtputf8(serve: Start) -> None:
    server = await serve(mailboxes={"jöhn@example.test"})
    session = await probe(server, ["jöhn@example.test"], smtputf8=True)
    assert "MAIL FROM:<bounce@probe.example.test> SMTPUTF8" in server.lines
    assert "RCPT TO:<jöhn@example.test>" in server.lines
    assert codes(session) == [("jöhn@example.test", 250, "2.1.5")]


async def test_max_sessions_beyond_limit_is_a_421_refusal(serve: Start) -> None:
    server = await serve(max_sessions=1)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        assert (await reader.readline()).startswith(b"220")  # the first session is open
        session = await probe(server, [JOHN])
    finally:
        writer.close()
    assert session.refusal is not None and session.refusal[0] is Stage.CONNECT
    assert session.refusal[1].code == 421


# STARTTLS ------------------------------------------------------------------------------------


async def test_starttls_is_used_when_offered(serve: Start) -> None:
    server = await serve(tls=True, mailboxes={JOHN})
    session = await probe(server, [JOHN])
    assert session.tls is True and server.sessions[0].tls is True
    assert server.commands == ["EHLO", "STARTTLS", "EHLO", "MAIL", "RCPT", "QUIT"]
    assert codes(session) == [(JOHN, 250, "2.1.5")]


async def test_starttls_never_keeps_the_session_in_plaintext(serve: Start) -> None:
    server = await serve(tls=True, mailboxes={JOHN})
    session = await probe(server, [JOHN], starttls="never")
    assert session.tls is False and not server.tls_used
    assert "STARTTLS" not in server.commands
    assert codes(session) == [(JOHN, 250, "2.1.5")]


async def test_broken_tls_falls_back_to_plaintext_on_the_same_host(serve: Start) -> None:
    server = await serve(
        tls=True, mailboxes={JOHN}, misbehave=[Misbehave("STARTTLS", Trick.GARBAGE)]
    )
    session = await probe(server, [JOHN])
    assert session.tls is False and session.error is None
    assert codes(session) == [(JOHN, 250, "2.1.5")]
    assert server.session_count == 2
    assert server.sessions[1].verbs == ["EHLO", "MAIL", "RCPT", "QUIT"]


async def test_starttls_454_goes_on_in_plaintext_on_the_same_connection(serve: Start) -> None:
    server = await serve(
        tls=True, mailboxes={JOHN}, replies={"STARTTLS": "454 4.7.0 TLS not available"}
    )
    session = await probe(server, [JOHN])
    assert session.tls is False and server.session_count == 1
    assert codes(session) == [(JOHN, 250, "2.1.5")]


# Failures before RCPT raise ------------------------------------------------------------------


async def test_connection_refused_is_probe_connect_error() -> None:
    with socket.socket() as closed:  # bound, not listening: connecting to it is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with pytest.raises(ProbeConnectError) as raised:
            await run_session(MX, "127.0.0.1", [JOHN], settings=settings_for(port))
    assert raised.value.stage is Stage.CONNECT and raised.value.mx_host == MX
    assert isinstance(raised.value.__cause__, OSError)


async def test_tarpit_banner_is_probe_timeout_within_connect_timeout(serve: Start) -> None:
    server = await serve(misbehave=[Misbehave("BANNER", Trick.STALL)])
    started = time.monotonic()
    with pytest.raises(ProbeTimeout) as raised:
        await probe(server, [JOHN], connect_timeout_s=0.5, command_timeout_s=5)
    assert time.monotonic() - started < 1.0
    assert raised.value.stage is Stage.CONNECT


async def test_drop_at_mail_is_probe_connect_error(serve: Start) -> None:
    server = await serve(misbehave=[Misbehave("MAIL", Trick.DROP)])
    with pytest.raises(ProbeConnectError) as raised:
        await probe(server, [JOHN])
    assert raised.value.stage is Stage.MAIL


async def test_garbage_reply_is_probe_protocol_error(serve: Start) -> None:
    server = await serve(replies={"EHLO": "hello, I am not an SMTP server"})
    with pytest.raises(ProbeProtocolError) as raised:
        await probe(server, [JOHN])
    assert raised.value.stage is Stage.EHLO


async def test_endless_multiline_reply_ends_as_protocol_error_with_bounded_reads(
    serve: Start,
) -> None:
    server = await serve(misbehave=[Misbehave("EHLO", Trick.ENDLESS)])
    started = time.monotonic()
    with pytest.raises(ProbeProtocolError) as raised:
        await probe(server, [JOHN], command_timeout_s=5)
    # Ended by the size cap long before the 5 s timeout: memory stayed bounded.
    assert time.monotonic() - started < 2.0
    assert raised.value.stage is Stage.EHLO


async def test_slow_endless_multiline_reply_times_out_within_command_timeout(
    serve: Start,
) -> None:
    server = await serve(latency_ms=10, misbehave=[Misbehave("EHLO", Trick.ENDLESS)])
    started = time.monotonic()
    with pytest.raises(ProbeTimeout) as raised:
        await probe(server, [JOHN], command_timeout_s=0.3)
    # One timeout bounds the whole reply, not each continuation line.
    assert time.monotonic() - started < 1.0
    assert raised.value.stage is Stage.EHLO


async def test_huge_line_is_probe_protocol_error_quickly(serve: Start) -> None:
    server = await serve(misbehave=[Misbehave("EHLO", Trick.HUGE_LINE)])
    started = time.monotonic()
    with pytest.raises(ProbeProtocolError):
        await probe(server, [JOHN], command_timeout_s=5)
    assert time.monotonic() - started < 2.0


# Breaks during RCPT keep the replies so far --------------------------------------------------


async def test_drop_at_second_rcpt_keeps_first_reply_and_sets_error(serve: Start) -> None:
    server = await serve(mailboxes={JOHN}, misbehave=[Misbehave("RCPT", Trick.DROP, nth=2)])
    session = await probe(server, [JOHN, JANE, NOBODY])
    assert codes(session) == [(JOHN, 250, "2.1.5")]
    assert isinstance(session.error, ProbeConnectError)
    assert session.error.stage is Stage.RCPT


async def test_stalled_rcpt_keeps_replies_so_far_and_sets_timeout(serve: Start) -> None:
    server = await serve(misbehave=[Misbehave("RCPT", Trick.STALL, nth=2)])
    session = await probe(server, [NOBODY, JOHN], command_timeout_s=0.2)
    assert codes(session) == [(NOBODY, 550, "5.1.1")]
    assert isinstance(session.error, ProbeTimeout)


async def test_endless_reply_during_rcpt_is_kept_as_session_error(serve: Start) -> None:
    server = await serve(misbehave=[Misbehave("RCPT", Trick.ENDLESS, nth=2)])
    session = await probe(server, [NOBODY, JOHN], command_timeout_s=5)
    assert codes(session) == [(NOBODY, 550, "5.1.1")]
    assert isinstance(session.error, ProbeProtocolError)


async def test_452_too_many_recipients_stops_the_session(serve: Start) -> None:
    server = await serve(mailboxes={JOHN}, max_rcpt=2)
    session = await probe(server, [JOHN, NOBODY, JANE, "joe@example.test"])
    assert codes(session) == [(JOHN, 250, "2.1.5"), (NOBODY, 550, "5.1.1"), (JANE, 452, "4.5.3")]
    assert session.error is None
    assert server.commands.count("RCPT") == 3 and server.commands[-1] == "QUIT"


async def test_421_after_hard_error_limit_stops_the_session(serve: Start) -> None:
    server = await serve(hard_error_limit=2)
    session = await probe(server, [NOBODY, "no1@example.test", "no2@example.test", JOHN])
    assert [reply.code for _, reply in session.rcpt_replies] == [550, 550, 421]
    assert session.error is None  # stopped asking; did not run into the hang-up
    assert server.commands.count("RCPT") == 3


async def test_greylisting_answers_451_then_the_real_answer(serve: Start) -> None:
    server = await serve(GreylistingSmtp(times=1, mailboxes={JOHN}))
    first = await probe(server, [JOHN])
    second = await probe(server, [JOHN])
    assert codes(first) == [(JOHN, 451, "4.7.1")]
    assert codes(second) == [(JOHN, 250, "2.1.5")]


# Through a SOCKS5 proxy ----------------------------------------------------------------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def socks5_proxy() -> AsyncIterator[tuple[int, list[tuple[str, int]]]]:
    """Yield the port of a no-auth SOCKS5 CONNECT proxy and the list of targets it dialled."""
    targets: list[tuple[str, int]] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _version, methods = await reader.readexactly(2)
        await reader.readexactly(methods)
        writer.write(b"\x05\x00")  # no authentication
        _version, _connect, _reserved, address_type = await reader.readexactly(4)
        assert address_type == 1, "the engine hands the proxy an IPv4 address"
        host = socket.inet_ntoa(await reader.readexactly(4))
        port = int.from_bytes(await reader.readexactly(2), "big")
        targets.append((host, port))
        up_reader, up_writer = await asyncio.open_connection(host, port)
        writer.write(b"\x05\x00\x00\x01" + bytes(6))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], targets
    server.close()


async def test_proxy_session_goes_through_socks5(
    serve: Start, socks5_proxy: tuple[int, list[tuple[str, int]]]
) -> None:
    proxy_port, targets = socks5_proxy
    server = await serve(ScriptedSmtp("127.0.0.4", mailboxes={JOHN}))
    session = await probe(server, [JOHN], proxy=f"socks5://127.0.0.1:{proxy_port}")
    assert codes(session) == [(JOHN, 250, "2.1.5")]
    assert targets == [("127.0.0.4", server.port)]
    assert server.sessions[0].client_ip == "127.0.0.1"  # the proxy's address, not ours
