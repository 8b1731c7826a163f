"""Scripted SMTP servers for what a real MTA cannot be configured to show.

Provider reply texts (Gmail, Microsoft), replies in Latin-1, a slow drip that still answers, a
tarpit that never answers RCPT, and a server that drops the session after RCPT. Raw asyncio on
purpose: aiosmtpd would smooth over exactly the wire-level misbehaviour these mimic. Run by
world.py inside the world's network namespace:

    python mimics.py SPEC.json      # SPEC: [{"kind", "host", "users": [...]}, ...]
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass

GMAIL_NO_USER = (
    "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n"
    "550-5.1.1 double-checking the recipient's email address for typos or\r\n"
    "550 5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser "
    "a1si123456wrb.12 - gsmtp"
)
# Exchange Online's directory-based edge blocking: the tenant has no such recipient.
MICROSOFT_NO_USER = (
    "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) "
    "[BN8NAM11FT001.eop-nam11.prod.protection.outlook.com 2026-12-04T18:00:00.000Z]"
)


@dataclass(frozen=True, slots=True)
class Style:
    """How one mimic answers: its banner, RCPT replies, and its misbehaviour."""

    banner: bytes
    accept: bytes
    reject: bytes
    delay_s: float = 0.0  # before every reply (slow drip)
    rcpt_hang: bool = False  # never answer RCPT (tarpit)
    drop_after_rcpt: bool = False  # close the connection instead of answering RCPT


STYLES = {
    "gmail": Style(
        b"220 mx.google.test ESMTP a1si123456wrb.12 - gsmtp",
        b"250 2.1.5 OK a1si123456wrb.12 - gsmtp",
        GMAIL_NO_USER.encode(),
    ),
    "microsoft": Style(
        b"220 BN8NAM11FT001.mail.protection.outlook.test Microsoft ESMTP MAIL Service ready",
        b"250 2.1.5 Recipient OK",
        MICROSOFT_NO_USER.encode(),
    ),
    "latin1": Style(
        "220 mail.latin.test ESMTP Grüße".encode("latin-1"),
        "250 2.1.5 Empfänger ok".encode("latin-1"),
        "550 5.1.1 Empfänger unbekannt: Postfach existiert nicht".encode("latin-1"),
    ),
    "slowdrip": Style(
        b"220 slow.test ESMTP", b"250 2.1.5 Ok", b"550 5.1.1 No such user", delay_s=2.0
    ),
    "tarpit": Style(b"220 tarpit.test ESMTP", b"", b"", rcpt_hang=True),
    "drop": Style(b"220 drop.test ESMTP", b"", b"", drop_after_rcpt=True),
}


async def _reply(writer: asyncio.StreamWriter, style: Style, line: bytes) -> None:
    if style.delay_s:
        await asyncio.sleep(style.delay_s)
    writer.write(line + b"\r\n")
    await writer.drain()


def _rcpt_reply(style: Style, users: set[str], line: bytes) -> bytes:
    address = line.split(b":", 1)[-1].strip().strip(b"<>").decode("ascii", "replace").lower()
    return style.accept if address in users else style.reject


async def _session(
    style: Style, users: set[str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        await _reply(writer, style, style.banner)
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                await _reply(writer, style, b"250-hello\r\n250-PIPELINING\r\n250 8BITMIME")
            elif verb == b"MAIL":
                await _reply(writer, style, b"250 2.1.0 Ok")
            elif verb == b"RCPT":
                if style.drop_after_rcpt:
                    break
                if style.rcpt_hang:
                    await asyncio.sleep(3600)
                await _reply(writer, style, _rcpt_reply(style, users, line))
            elif verb == b"QUIT":
                await _reply(writer, style, b"221 2.0.0 Bye")
                break
            else:
                await _reply(writer, style, b"250 2.0.0 Ok")
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def serve(spec: list[dict]) -> None:
    """Start every mimic of the spec on port 25 of its host, then serve forever."""
    servers = []
    for item in spec:
        style, users = STYLES[item["kind"]], {u.lower() for u in item["users"]}

        async def handler(r, w, style=style, users=users):  # bind this mimic's style
            await _session(style, users, r, w)

        servers.append(await asyncio.start_server(handler, item["host"], 25))
    print("mimics ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        asyncio.run(serve(json.load(handle)))
