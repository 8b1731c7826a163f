"""The shared reply corpus through the whole engine: a scripted server sends each row's reply.

For every row of shared/corpus/smtp-replies.csv a real SMTP session on loopback meets that reply
at that stage (banner, EHLO and the HELO fallback, MAIL FROM, or RCPT for the real recipient while
the made-up address gets 550 5.1.1), and the Verifier's status and reason must be the row's label.
tests/test_replies_corpus.py checks the classifier alone; this checks that the verifier around it
(fallbacks, retries, session limits, the made-up address) does not change the answer. Skips
without shared/.

One DNS server and one SMTP port serve the module: RCPT rows share one server scripted by
recipient; each row before RCPT has its own server on its own 127.0.3.x address, since a banner
or EHLO reply comes before the server knows which row is asked.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from mailprobe.engine import EngineSettings, Verifier

from tests.fakes.dns import DnsServer, running_dns_server
from tests.fakes.net import assert_no_message_sent
from tests.fakes.smtp import ScriptedSmtp, running_smtp_server
from tests.shared import CORPUS, corpus_file

HELO = "probe.mailprobe.test"
MAIL_FROM = f"verify@{HELO}"
RCPT_HOST = "127.0.3.1"
CSV_NAME = "smtp-replies.csv"


@dataclass(frozen=True, slots=True)
class Row:
    """One corpus row, with the address and domain this module verifies it with."""

    line: int  # line number in the CSV, for messages
    stage: str
    code: str
    message: str
    expected: tuple[str, str]

    @property
    def domain(self) -> str:
        return f"row{self.line}.corpus.test"

    @property
    def recipient(self) -> str:
        return f"person{self.line}@{self.domain}"

    def reply(self) -> str:
        """Return the reply as the fake sends it: placeholders live, "\\n" a real line break."""
        text = self.message.replace("\\n", "\n")
        for placeholder, live in (
            ("recipient@example.com", self.recipient),
            ("sender@example.net", MAIL_FROM),
            ("192.0.2.1", "127.0.0.1"),
            ("probe.example.net", HELO),
        ):
            text = text.replace(placeholder, live)
        return f"{self.code} {text}" if text else self.code


def _read_rows() -> list[Row]:
    path = CORPUS / CSV_NAME
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            Row(line, r["stage"], r["code"], r["message"],
                (r["expected_status"], r["expected_reason"]))
            for line, r in enumerate(csv.DictReader(handle), start=2)
        ]  # fmt: skip


ROWS = _read_rows()
_ABSENT = pytest.param(None, marks=pytest.mark.skip(reason=f"{CORPUS / CSV_NAME} not present"))


def _row_id(row: Row | None) -> str:
    return "absent" if row is None else f"line{row.line}-{row.stage}-{row.code}"


def _server_for(row: Row, host: str) -> ScriptedSmtp:
    """Return a server that sends the row's reply at its stage before RCPT."""
    reply = row.reply()
    verbs = {"connect": ["BANNER"], "ehlo": ["EHLO", "HELO"], "mail": ["MAIL"]}[row.stage]
    return ScriptedSmtp(host, hostname=f"mx.{row.domain}", replies=dict.fromkeys(verbs, reply))


@dataclass(frozen=True, slots=True)
class Corpus:
    """The module's servers: where DNS listens and which port every MX host answers on."""

    dns: DnsServer
    port: int
    servers: tuple[ScriptedSmtp, ...]


@pytest.fixture(scope="module")
def corpus() -> Iterator[Corpus]:
    """Start one DNS server and the SMTP servers for every row, in threads, for the module."""
    corpus_file(CSV_NAME)  # skips the module's tests when shared/ is absent
    rcpt_replies = {row.recipient: row.reply() for row in ROWS if row.stage == "rcpt"}
    # None: the made-up address falls through to the fake's "550 5.1.1 ... User unknown".
    servers = [ScriptedSmtp(RCPT_HOST, rcpt=rcpt_replies.get)]
    hosts: dict[int, str] = {}
    for row in ROWS:
        if row.stage == "rcpt":
            hosts[row.line] = RCPT_HOST
        else:
            hosts[row.line] = f"127.0.3.{len(servers) + 1}"
            servers.append(_server_for(row, hosts[row.line]))
    with running_dns_server() as dns, running_smtp_server(*servers) as first:
        for row in ROWS:
            dns.add_mx(row.domain, 10, f"mx.{row.domain}")
            dns.add(f"mx.{row.domain}", "A", hosts[row.line])
        yield Corpus(dns, first.port, tuple(servers))
    assert_no_message_sent(servers)


pytestmark = pytest.mark.usefixtures("quick_backoff")


def _verifier(corpus: Corpus) -> Verifier:
    """Return a fresh verifier (no learnt limits or caches) aimed at the module's servers."""
    settings = EngineSettings(
        helo_hostname=HELO,
        mail_from=MAIL_FROM,
        dns=corpus.dns.dns_settings(timeout_s=3.0),
        smtp={
            "port": corpus.port,
            "connect_timeout_s": 3.0,
            "command_timeout_s": 3.0,
            "allowed_private_networks": ["127.0.0.0/8"],
        },
        # No greylisting retry: a greylisted row must stay greylisted.
        greylist={"retry_delays_s": [], "max_wait_s": 0},
        syntax={"allow_test_domains": True},
    )
    return Verifier(settings)


def test_corpus_has_the_documented_rows() -> None:
    corpus_file(CSV_NAME)
    stages = [row.stage for row in ROWS]
    assert len(ROWS) == 190
    assert {s: stages.count(s) for s in set(stages)} == {
        "rcpt": 166,
        "mail": 12,
        "connect": 9,
        "ehlo": 3,
    }


@pytest.mark.parametrize("row", ROWS or [_ABSENT], ids=_row_id)
async def test_corpus_reply_through_a_session_gives_the_labelled_result(
    corpus: Corpus, row: Row
) -> None:
    result = await _verifier(corpus).verify(row.recipient)

    smtp = result.checks.smtp
    assert (str(result.status), str(result.reason)) == row.expected, (
        f"line {row.line}: {row.stage} {row.reply()!r}; "
        f"got reply {smtp and (smtp.response_code, smtp.response_message)}"
    )
    assert smtp is not None and smtp.connected
