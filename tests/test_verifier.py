"""engine.Verifier end to end: a real DNS server and scripted SMTP servers on 127.0.0.x.

One test per behaviour of issue 2 ("Behaviour that must hold" 1-9), over real sockets. Every SMTP
server started in any test is checked afterwards: none may have received DATA.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from dnslib import QTYPE, DNSRecord
from mailprobe.engine import Action, DnsError, Reason, Status, VerificationResult, Verifier
from mailprobe.engine import enrich as enrich_module
from mailprobe.engine import throttle as throttle_module
from mailprobe.engine.mx import RouteKind
from mailprobe.engine.run import Steps
from mailprobe.engine.score import BANDS

from tests.fakes.dns import DnsServer, running_dns_server
from tests.fakes.net import IP1, IP2, IP3, TIMEOUT_S, Net, assert_no_message_sent, verify_all
from tests.fakes.smtp import (
    CatchAllSmtp,
    GreylistingSmtp,
    HeloOnlySmtp,
    Misbehave,
    ScriptedSmtp,
    Trick,
)

pytestmark = pytest.mark.usefixtures("quick_backoff")


# Fixtures -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def never_data(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ScriptedSmtp]]:
    """Record every SMTP server any test starts; afterwards none may have received DATA."""
    started: list[ScriptedSmtp] = []
    original = ScriptedSmtp.start

    async def start(self: ScriptedSmtp) -> None:
        started.append(self)
        await original(self)

    monkeypatch.setattr(ScriptedSmtp, "start", start)
    yield started
    assert_no_message_sent(started)


def by_email(results: list[VerificationResult]) -> dict[str, VerificationResult]:
    return {result.email: result for result in results}


def outcome(result: VerificationResult) -> tuple[str, str]:
    return (str(result.status), str(result.reason))


def rcpts(server: ScriptedSmtp) -> list[str]:
    """Return the RCPT TO arguments the server received, in order."""
    return [line.split(":", 1)[1] for line in server.lines if line.upper().startswith("RCPT")]


_MADE_UP = re.compile(r"<[a-z][a-z0-9]{13}@")


def real_rcpts(server: ScriptedSmtp) -> list[str]:
    """Return the RCPT arguments for the test's own addresses, without the made-up probe."""
    return [r for r in rcpts(server) if not _MADE_UP.match(r)]


# 1. Syntax ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "email",
    [
        "john..smith@@acme.test",
        "a" * 65 + "@acme.test",  # local part over 64 characters
        "john@" + "a" * 64 + ".test",  # label over 63 octets
        "john@" + ".".join(["abcdefgh"] * 30) + ".test",  # address over 254 octets
    ],
    ids=["double-at", "long-local-part", "long-label", "long-address"],
)
async def test_invalid_syntax_is_invalid_with_no_smtp_check(net: Net, email: str) -> None:
    result = await net.verifier().verify(email)

    assert outcome(result) == ("invalid", "invalid_syntax")
    assert result.checks.syntax is False and result.checks.smtp is None
    assert result.action is Action.DO_NOT_SEND and result.score == 0
    assert net.dns.queries == []  # syntax needs no DNS


async def test_quoted_local_part_is_asked_over_smtp_with_its_quotes(net: Net) -> None:
    (server,) = await net.serve(ScriptedSmtp(IP1, mailboxes={'"john smith"@acme.test'}))
    net.mx("acme.test", ("mx.acme.test", IP1))

    results = await verify_all(net.verifier(), ['"john smith"@acme.test', '"nobody"@acme.test'])

    assert [outcome(r) for r in results] == [
        ("valid", "accepted"),
        ("invalid", "mailbox_not_found"),
    ]
    assert sorted(real_rcpts(server)) == ['<"john smith"@acme.test>', "<nobody@acme.test>"]


async def test_idn_domain_is_asked_in_its_a_label_form(net: Net) -> None:
    (server,) = await net.serve(ScriptedSmtp(IP1, mailboxes={"anna@xn--bcher-kva.test"}))
    net.mx("xn--bcher-kva.test", ("mx.xn--bcher-kva.test", IP1))

    result = await net.verifier().verify("anna@Bücher.test")

    assert outcome(result) == ("valid", "accepted")
    assert result.normalized == "anna@xn--bcher-kva.test"
    assert real_rcpts(server) == ["<anna@xn--bcher-kva.test>"]


async def test_smtputf8_local_part_is_sent_with_the_smtputf8_parameter(net: Net) -> None:
    (server,) = await net.serve(ScriptedSmtp(IP1, mailboxes={"jörg@acme.test"}))
    net.mx("acme.test", ("mx.acme.test", IP1))

    result = await net.verifier().verify("jörg@acme.test")

    assert outcome(result) == ("valid", "accepted")
    mail = [line for line in server.lines if line.upper().startswith("MAIL")]
    assert mail and all(line.upper().endswith(" SMTPUTF8") for line in mail)
    assert "<jörg@acme.test>" in rcpts(server)


async def test_smtputf8_local_part_without_server_support_is_protocol_error(net: Net) -> None:
    (server,) = await net.serve(ScriptedSmtp(IP1, smtputf8=False, mailboxes={"jörg@acme.test"}))
    net.mx("acme.test", ("mx.acme.test", IP1))

    result = await net.verifier().verify("jörg@acme.test")

    assert outcome(result) == ("unknown", "protocol_error")
    assert rcpts(server) == []  # the address cannot be asked about without SMTPUTF8


async def test_typo_of_popular_domain_is_suggested(net: Net) -> None:
    result = await net.verifier().verify("jane@gmial.com")

    assert result.suggestion == "jane@gmail.com"
    assert outcome(result) == ("invalid", "domain_not_found")  # gmial.com is not in our DNS


# 2. Mail route --------------------------------------------------------------------------------


async def test_mx_hosts_are_tried_in_preference_order(net: Net) -> None:
    mx1, mx2 = await net.serve(
        ScriptedSmtp(IP1, mailboxes={"john@acme.test"}),
        ScriptedSmtp(IP2, mailboxes={"john@acme.test"}),
    )
    net.dns.add_mx("acme.test", 20, "mx2.acme.test")  # declared first, preferred last
    net.dns.add_mx("acme.test", 10, "mx1.acme.test")
    net.dns.add("mx1.acme.test", "A", IP1)
    net.dns.add("mx2.acme.test", "A", IP2)

    result = await net.verifier().verify("john@acme.test")

    assert outcome(result) == ("valid", "accepted")
    assert result.checks.smtp is not None and result.checks.smtp.mx_host == "mx1.acme.test"
    assert (mx1.session_count, mx2.session_count) == (1, 0)


async def test_refused_connection_to_first_mx_falls_back_to_the_second(net: Net) -> None:
    (mx2,) = await net.serve(ScriptedSmtp(IP2, mailboxes={"john@acme.test"}))
    net.mx("acme.test", ("mx1.acme.test", IP1), ("mx2.acme.test", IP2))  # nothing on IP1

    result = await net.verifier().verify("john@acme.test")

    assert outcome(result) == ("valid", "accepted")
    assert result.checks.smtp is not None and result.checks.smtp.mx_host == "mx2.acme.test"
    assert mx2.session_count == 1


async def test_null_mx_is_invalid_null_mx(net: Net) -> None:
    net.dns.add_mx("nomail.test", 0, ".")

    result = await net.verifier().verify("john@nomail.test")

    assert outcome(result) == ("invalid", "null_mx")
    assert result.checks.smtp is None and result.checks.domain is True


async def test_nxdomain_is_invalid_domain_not_found(net: Net) -> None:
    result = await net.verifier().verify("john@nowhere.test")

    assert outcome(result) == ("invalid", "domain_not_found")
    assert result.checks.domain is False and result.checks.smtp is None


async def test_domain_without_mx_is_asked_at_its_own_address(net: Net) -> None:
    (server,) = await net.serve(ScriptedSmtp(IP3, mailboxes={"john@implicit.test"}))
    net.dns.add("implicit.test", "A", IP3)

    result = await net.verifier().verify("john@implicit.test")

    assert outcome(result) == ("valid", "accepted")
    assert result.checks.mx_record is False and result.checks.domain is True
    assert server.session_count == 1


async def test_domain_without_mx_or_address_is_no_mail_server(net: Net) -> None:
    net.dns.add("bare.test", "TXT", '"v=spf1 -all"')

    result = await net.verifier().verify("john@bare.test")

    assert outcome(result) == ("invalid", "no_mail_server")


async def test_servfail_is_unknown_dns_error(net: Net) -> None:
    net.dns.servfail("broken.test")

    result = await net.verifier().verify("john@broken.test")

    assert outcome(result) == ("unknown", "dns_error")
    assert result.action is Action.RETRY


async def test_dns_timeout_is_unknown_dns_error(net: Net) -> None:
    net.dns.drop("silent.test")
    started = time.monotonic()

    result = await net.verifier(dns_timeout_s=0.3).verify("john@silent.test")

    assert outcome(result) == ("unknown", "dns_error")
    assert time.monotonic() - started < 3


async def test_unroutable_mx_is_invalid_and_never_contacted(net: Net) -> None:
    (server,) = await net.serve(CatchAllSmtp(IP1))
    net.mx("intranet.test", ("mx.intranet.test", IP1))

    verifier = net.verifier(smtp={"allowed_private_networks": []})  # loopback not allowed
    result = await verifier.verify("john@intranet.test")

    assert outcome(result) == ("invalid", "unroutable_mx")
    assert server.session_count == 0


async def test_ipv6_mx_host_is_contacted(net: Net) -> None:
    (server,) = await net.serve(ScriptedSmtp("::1", mailboxes={"john@six.test"}))
    net.mx("six.test", ("mx.six.test", "::1"))

    result = await net.verifier().verify("john@six.test")

    assert outcome(result) == ("valid", "accepted")
    assert server.session_count == 1 and server.sessions[0].client_ip == "::1"


async def test_dns_answers_are_cached_between_verifications(net: Net) -> None:
    await net.serve(ScriptedSmtp(IP1, mailboxes={"john@acme.test", "jane@acme.test"}))
    net.mx("acme.test", ("mx.acme.test", IP1))
    verifier = net.verifier()

    first = await verifier.verify("john@acme.test")
    second = await verifier.verify("jane@acme.test")

    assert outcome(first) == outcome(second) == ("valid", "accepted")
    assert net.dns.count("acme.test", "MX") == 1
    assert net.dns.count("mx.acme.test", "A") == 1


async def test_route_is_the_mail_route_the_verifiers_sessions_use(net: Net) -> None:
    await net.serve(ScriptedSmtp(IP1, mailboxes={"john@acme.test"}))
    net.mx("acme.test", ("mx.acme.test", IP1))
    verifier = net.verifier()

    route = await verifier.route("acme.test")
    result = await verifier.verify("john@acme.test")

    assert route.kind is RouteKind.MX
    assert [(host.name, host.addresses) for host in route.hosts] == [("mx.acme.test", (IP1,))]
    assert outcome(result) == ("valid", "accepted")
    assert net.dns.count("acme.test", "MX") == 1  # one cache for both


async def test_route_raises_dns_error_when_dns_cannot_tell(net: Net) -> None:
    net.dns.servfail("broken.test")

    with pytest.raises(DnsError):
        await net.verifier().route("broken.test")


class HoldingDns(DnsServer):
    """Holds every MX answer until the test releases it, so a lookup stays in flight."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.asked = threading.Event()
        self.release = threading.Event()

    def answer(self, request: DNSRecord) -> DNSRecord | None:
        """Return the usual reply, once released (MX questions only)."""
        if QTYPE.get(request.q.qtype) == "MX":
            self.asked.set()
            self.release.wait(5)
        return super().answer(request)


async def test_cancelled_route_lookup_leaves_the_verifications_shared_lookup_running(
    smtp_servers: Callable[..., Awaitable[int]],
) -> None:
    with running_dns_server(HoldingDns) as dns:
        assert isinstance(dns, HoldingDns)
        net = Net(dns, smtp_servers)
        await net.serve(ScriptedSmtp(IP1, mailboxes={"john@acme.test"}))
        net.mx("acme.test", ("mx.acme.test", IP1))
        verifier = net.verifier()
        try:
            # As the API does: a route lookup for a partial answer beside the verification.
            lookup = asyncio.create_task(verifier.route("acme.test"))
            verification = asyncio.create_task(verifier.verify("john@acme.test"))
            assert await asyncio.to_thread(dns.asked.wait, 5)
            lookup.cancel()  # the answer came first: the partial answer is not needed
            with pytest.raises(asyncio.CancelledError):
                await lookup
        finally:
            dns.release.set()
        result = await verification

    assert outcome(result) == ("valid", "accepted")
    assert dns.count("acme.test", "MX") == 1  # the shared lookup went on, none was restarted


# 3. SMTP conversation -------------------------------------------------------------------------


async def test_421_banner_moves_on_to_the_next_mx(net: Net) -> None:
    busy, mx2 = await net.serve(
        ScriptedSmtp(IP1, replies={"BANNER": "421 4.3.2 Service shutting down"}),
        ScriptedSmtp(IP2, mailboxes={"john@acme.test"}),
    )
    net.mx("acme.test", ("mx1.acme.test", IP1), ("mx2.acme.test", IP2))

    result = await net.verifier().verify("john@acme.test")

    assert outcome(result) == ("valid", "accepted")
    assert (busy.session_count, mx2.session_count) == (1, 1)


async def test_tarpit_banner_moves_on_to_the_next_mx(net: Net) -> None:
    tarpit, mx2 = await net.serve(
        ScriptedSmtp(IP1, misbehave=[Misbehave("BANNER", Trick.STALL)]),
        ScriptedSmtp(IP2, mailboxes={"john@acme.test"}),
    )
    net.mx("acme.test", ("mx1.acme.test", IP1), ("mx2.acme.test", IP2))

    result = await net.verifier().verify("john@acme.test")

    assert outcome(result) == ("valid", "accepted")
    assert (tarpit.session_count, mx2.session_count) == (1, 1)


async def test_every_mx_down_is_unknown_connection_failed(net: Net) -> None:
    net.idle_port(IP1, IP2)
    net.mx("acme.test", ("mx1.acme.test", IP1), ("mx2.acme.test", IP2))

    result = await net.verifier().verify("john@acme.test")

    assert outcome(result) == ("unknown", "connection_failed")
    assert result.checks.smtp is not None and result.checks.smtp.connected is False


async def test_rejected_ehlo_falls_back_to_helo(net: Net) -> None:
    (server,) = await net.serve(HeloOnlySmtp(IP1, mailboxes={"john@acme.test"}))
    net.mx("acme.test", ("mx.acme.test", IP1))

    result = await net.verifier().verify("john@acme.test")

    assert outcome(result) == ("valid", "accepted")
    assert server.commands[:3] == ["EHLO", "HELO", "MAIL"]


async def test_starttls_is_used_when_offered_and_ehlo_repeated(net: Net) -> None:
    (server,) = await net.serve(ScriptedSmtp(IP1, tls=True, mailboxes={"john@acme.test"}))
    net.mx("acme.test", ("mx.acme.test", IP1))

    result = await net.verifier().verify("john@acme.test")

    assert outcome(result) == ("valid", "accepted")
    assert result.checks.smtp is not None and result.checks.smtp.tls is True
    assert server.commands[:4] == ["EHLO", "STARTTLS", "EHLO", "MAIL"]


async def test_probe_and_every_address_of_a_domain_share_one_session(net: Net) -> None:
    people = ["ann@acme.test", "bob@acme.test", "cy@acme.test"]
    (server,) = await net.serve(ScriptedSmtp(IP1, mailboxes=people[:2]))
    net.mx("acme.test", ("mx.acme.test", IP1))

    results = by_email(await verify_all(net.verifier(), people))

    assert server.session_count == 1
    assert len(rcpts(server)) == len(people) + 1  # the made-up probe first
    assert server.commands == ["EHLO", "MAIL", "RCPT", "RCPT", "RCPT", "RCPT", "QUIT"]
    assert outcome(results["ann@acme.test"]) == ("valid", "accepted")
    assert outcome(results["cy@acme.test"]) == ("invalid", "mailbox_not_found")


# 4. Reply classification through a real session ----------------------------------------------

RCPT_REPLIES = {
    "gone@acme.test": ("550 5.1.1 <gone@acme.test>: Recipient address rejected: User unknown"),
    "full@acme.test": "552 5.2.2 Mailbox full",
    "off@acme.test": "550 5.2.1 The email account that you tried to reach is disabled",
    "later@acme.test": "450 4.2.1 Mailbox busy, try again in a while",
    "us@acme.test": "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen",
}


async def test_rcpt_replies_are_classified_per_recipient(net: Net) -> None:
    await net.serve(ScriptedSmtp(IP1, rcpt=RCPT_REPLIES))
    net.mx("acme.test", ("mx.acme.test", IP1))

    results = by_email(await verify_all(net.verifier(), list(RCPT_REPLIES)))

    assert {email: outcome(r) for email, r in results.items()} == {
        "gone@acme.test": ("invalid", "mailbox_not_found"),
        "full@acme.test": ("risky", "mailbox_full"),
        "off@acme.test": ("invalid", "mailbox_disabled"),
        "later@acme.test": ("unknown", "temporary_failure"),
        "us@acme.test": ("unknown", "blocked"),
    }
    gone = results["gone@acme.test"].checks.smtp
    assert gone is not None and (gone.response_code, gone.enhanced_code) == (550, "5.1.1")
    assert gone.mailbox_exists is False


async def test_sender_user_unknown_at_mail_is_blocked_never_invalid(net: Net) -> None:
    reply = "550 5.1.1 <bounce@probe.example.test>: Sender address rejected: User unknown"
    (server,) = await net.serve(ScriptedSmtp(IP1, replies={"MAIL": reply}))
    net.mx("acme.test", ("mx.acme.test", IP1))

    result = await net.verifier().verify("john@acme.test")

    assert outcome(result) == ("unknown", "blocked")
    assert rcpts(server) == []


# 5. Catch-all ---------------------------------------------------------------------------------


def _accept_all_but_gone(recipient: str) -> str:
    if recipient.startswith("gone@"):
        return "550 5.1.1 <gone@acme.test>: Recipient address rejected: User unknown"
    return "250 2.1.5 Ok"


async def test_catch_all_is_accept_all_but_an_explicit_rejection_stays_invalid(net: Net) -> None:
    await net.serve(ScriptedSmtp(IP1, rcpt=_accept_all_but_gone))
    net.mx("acme.test", ("mx.acme.test", IP1))

    results = by_email(await verify_all(net.verifier(), ["john@acme.test", "gone@acme.test"]))

    john, gone = results["john@acme.test"], results["gone@acme.test"]
    assert outcome(john) == ("catch_all", "accept_all")
    assert john.checks.catch_all is True and john.action is Action.CAUTION
    assert john.checks.smtp is not None and john.checks.smtp.is_catch_all is True
    assert outcome(gone) == ("invalid", "mailbox_not_found")


async def test_catch_all_verdict_is_cached_per_domain(net: Net) -> None:
    (server,) = await net.serve(CatchAllSmtp(IP1))
    net.mx("acme.test", ("mx.acme.test", IP1))
    verifier = net.verifier()

    await verifier.verify("john@acme.test")
    second = await verifier.verify("jane@acme.test")

    assert outcome(second) == ("catch_all", "accept_all")
    assert len(rcpts(server)) == 3  # probe, john; then jane alone


def _block_the_probe(recipient: str) -> str:
    if recipient.startswith(("john@", "gone@")):
        return "250 2.1.5 Ok" if recipient.startswith("john@") else "550 5.1.1 User unknown"
    return "550 5.7.1 Service unavailable; client [127.0.0.1] blocked using zen.spamhaus.org"


async def test_blocked_probe_makes_every_answer_of_the_session_unknown_blocked(net: Net) -> None:
    await net.serve(ScriptedSmtp(IP1, rcpt=_block_the_probe))
    net.mx("acme.test", ("mx.acme.test", IP1))

    results = await verify_all(net.verifier(), ["john@acme.test", "gone@acme.test"])

    assert [outcome(r) for r in results] == [("unknown", "blocked")] * 2


# 6. Greylisting -------------------------------------------------------------------------------


async def test_greylisted_address_is_retried_and_becomes_valid(net: Net) -> None:
    (server,) = await net.serve(GreylistingSmtp(IP1, mailboxes={"john@grey.test"}))
    net.mx("grey.test", ("mx.grey.test", IP1))

    result = await net.verifier().verify("john@grey.test")

    assert outcome(result) == ("valid", "accepted")
    assert server.session_count == 2
    assert rcpts(server).count("<john@grey.test>") == 2


async def test_greylisting_does_not_hold_up_other_domains(net: Net) -> None:
    await net.serve(
        GreylistingSmtp(IP1, mailboxes={"john@grey.test"}),
        ScriptedSmtp(IP2, mailboxes={"jane@fast.test"}),
    )
    net.mx("grey.test", ("mx.grey.test", IP1))
    net.mx("fast.test", ("mx.fast.test", IP2))

    verifier = net.verifier(greylist={"retry_delays_s": [0.3]})
    results = await verify_all(verifier, ["john@grey.test", "jane@fast.test"])

    assert [r.email for r in results] == ["jane@fast.test", "john@grey.test"]
    assert [outcome(r) for r in results] == [("valid", "accepted")] * 2


async def test_greylisting_beyond_max_wait_is_unknown_greylisted(net: Net) -> None:
    (server,) = await net.serve(GreylistingSmtp(IP1, times=100, mailboxes={"john@grey.test"}))
    net.mx("grey.test", ("mx.grey.test", IP1))

    verifier = net.verifier(greylist={"retry_delays_s": [0.05, 0.05, 5.0], "max_wait_s": 0.5})
    started = time.monotonic()
    result = await verifier.verify("john@grey.test")

    assert outcome(result) == ("unknown", "greylisted")
    assert result.action is Action.RETRY
    assert server.session_count == 3  # the first try and two retries; 5 s is past max_wait_s
    assert time.monotonic() - started < 2


async def test_greylisted_result_carries_the_delay_the_server_named(net: Net) -> None:
    greylisting = "451 4.7.1 Greylisted, please try again in 300 seconds"
    await net.serve(ScriptedSmtp(IP1, rcpt=lambda recipient: greylisting))
    net.mx("grey.test", ("mx.grey.test", IP1))

    result = await net.verifier(greylist={"max_wait_s": 0}).verify("john@grey.test")

    assert outcome(result) == ("unknown", "greylisted")
    assert result.retry_after_s == 300  # the store schedules the next attempt from it
    assert "retry_after_s" not in result.to_json()  # the JSON contract is unchanged


# 7. Providers ---------------------------------------------------------------------------------


async def test_yahoo_style_provider_is_unverifiable_and_never_contacted(net: Net) -> None:
    (server,) = await net.serve(CatchAllSmtp(IP1))
    net.mx("ymail-like.test", ("mta5.am0.yahoodns.net", IP1), ("mta6.am0.yahoodns.net", IP1))

    result = await net.verifier().verify("john@ymail-like.test")

    assert outcome(result) == ("unknown", "unverifiable_provider")
    assert server.session_count == 0


async def test_provider_is_named_from_mx_host_names(net: Net) -> None:
    await net.serve(ScriptedSmtp(IP1, mailboxes={"john@acme.test"}))
    net.mx("acme.test", ("acme-test.mail.protection.outlook.com", IP1))

    result = await net.verifier().verify("john@acme.test")

    assert result.checks.smtp is not None
    assert result.checks.smtp.smtp_provider == "Microsoft 365"
    assert result.checks.smtp.mx_host == "acme-test.mail.protection.outlook.com"


async def test_provider_is_named_from_the_banner_when_mx_names_say_nothing(net: Net) -> None:
    banner = "220 mail.acme.test Microsoft ESMTP MAIL Service ready at Mon, 1 Jan 2026"
    await net.serve(ScriptedSmtp(IP1, replies={"BANNER": banner}, mailboxes={"john@acme.test"}))
    net.mx("acme.test", ("mail.acme.test", IP1))

    result = await net.verifier().verify("john@acme.test")

    assert result.checks.smtp is not None
    assert result.checks.smtp.smtp_provider == "Microsoft Exchange"


# 8. Enrichment and verdict --------------------------------------------------------------------


async def test_disposable_domain_is_risky_disposable_without_a_session(net: Net) -> None:
    (server,) = await net.serve(CatchAllSmtp(IP1))
    net.mx("mailinator.com", ("mail.mailinator.com", IP1))

    result = await net.verifier().verify("john@mailinator.com")

    assert outcome(result) == ("risky", "disposable")
    assert result.checks.disposable is True and result.action is Action.DO_NOT_SEND
    assert server.session_count == 0


async def test_role_address_is_flagged_but_stays_valid_by_default(net: Net) -> None:
    await net.serve(ScriptedSmtp(IP1, mailboxes={"info@acme.test", "john@acme.test"}))
    net.mx("acme.test", ("mx.acme.test", IP1))

    results = by_email(await verify_all(net.verifier(), ["info@acme.test", "john@acme.test"]))

    info, john = results["info@acme.test"], results["john@acme.test"]
    assert outcome(info) == ("valid", "accepted") and info.checks.role is True
    assert john.checks.role is False
    assert info.score < john.score  # role mailboxes engage less


async def test_role_address_is_risky_when_policy_says_so(net: Net) -> None:
    await net.serve(ScriptedSmtp(IP1, mailboxes={"sales@acme.test"}))
    net.mx("acme.test", ("mx.acme.test", IP1))

    result = await net.verifier(role_is_risky=True).verify("sales@acme.test")

    assert outcome(result) == ("risky", "role_account")
    assert result.action is Action.CAUTION and result.checks.role is True


async def test_free_provider_address_is_flagged_free(net: Net) -> None:
    await net.serve(ScriptedSmtp(IP1, mailboxes={"jane.doe@gmail.com"}))
    net.mx("gmail.com", ("gmail-smtp-in.l.google.com", IP1))

    result = await net.verifier().verify("jane.doe@gmail.com")

    assert outcome(result) == ("valid", "accepted")
    assert result.checks.free is True and result.suggestion is None
    assert result.checks.smtp is not None and result.checks.smtp.smtp_provider == "Gmail"


async def test_valid_result_has_score_action_timing_and_the_contract_shape(net: Net) -> None:
    await net.serve(ScriptedSmtp(IP1, mailboxes={"john@acme.test"}))
    net.mx("acme.test", ("mx.acme.test", IP1))
    before = time.time()

    result = await net.verifier().verify("John@ACME.test")

    low, high = BANDS[Status.VALID]
    assert low <= result.score <= high and result.action is Action.SEND
    assert result.verified_at.tzinfo is not None and result.verified_at.timestamp() >= before - 1
    assert 0 <= result.response_time_ms < 5000
    data = result.to_json()
    assert list(data) == [
        "email", "normalized", "status", "reason", "action", "score", "checks",
        "suggestion", "verified_at", "response_time_ms",
    ]  # fmt: skip
    assert data["email"] == "John@ACME.test" and data["normalized"] == "John@acme.test"
    assert data["verified_at"].endswith("Z")
    smtp = data["checks"]["smtp"]
    assert smtp["connected"] is True and smtp["mailbox_exists"] is True
    assert smtp["response_code"] == 250 and smtp["enhanced_code"] == "2.1.5"
    assert smtp["response_message"] == "2.1.5 Ok" and smtp["mx_host"] == "mx.acme.test"
    assert smtp["is_catch_all"] is False and smtp["smtp_provider"] == "Postfix"


@pytest.mark.parametrize(
    ("emails", "status"),
    [
        (["gone@acme.test"], Status.INVALID),
        (["john@acme.test"], Status.VALID),
        (["info@mailinator.com"], Status.RISKY),
    ],
)
async def test_score_lies_in_its_status_band(net: Net, emails: list[str], status: Status) -> None:
    await net.serve(ScriptedSmtp(IP1, mailboxes={"john@acme.test"}))
    net.mx("acme.test", ("mx.acme.test", IP1))
    net.mx("mailinator.com", ("mx.mailinator.com", IP1))

    (result,) = await verify_all(net.verifier(), emails)

    low, high = BANDS[status]
    assert result.status is status and low <= result.score <= high


# 9. Hostile servers ---------------------------------------------------------------------------


async def test_tarpit_banner_on_the_only_mx_is_unknown_timeout(net: Net) -> None:
    await net.serve(ScriptedSmtp(IP1, misbehave=[Misbehave("BANNER", Trick.STALL)]))
    net.mx("acme.test", ("mx.acme.test", IP1))
    started = time.monotonic()

    result = await net.verifier().verify("john@acme.test")

    assert outcome(result) == ("unknown", "timeout")
    assert time.monotonic() - started < 4 * TIMEOUT_S


async def test_endless_multiline_rcpt_reply_is_protocol_error_quickly(net: Net) -> None:
    endless = [Misbehave("RCPT", Trick.ENDLESS, nth=n) for n in (1, 2)]
    await net.serve(ScriptedSmtp(IP1, misbehave=endless))
    net.mx("acme.test", ("mx.acme.test", IP1))
    started = time.monotonic()

    result = await net.verifier().verify("john@acme.test")

    assert outcome(result) == ("unknown", "protocol_error")
    assert time.monotonic() - started < 5


async def test_ten_megabyte_line_at_rcpt_is_protocol_error_quickly_in_bounded_memory(
    net: Net,
) -> None:
    huge = [Misbehave("RCPT", Trick.HUGE_LINE, nth=n) for n in (1, 2)]
    await net.serve(ScriptedSmtp(IP1, misbehave=huge))
    net.mx("acme.test", ("mx.acme.test", IP1))
    verifier = net.verifier()
    started = time.monotonic()
    tracemalloc.start()
    try:
        result = await verifier.verify("john@acme.test")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert outcome(result) == ("unknown", "protocol_error")
    assert time.monotonic() - started < 5
    assert peak < 4 * 1024 * 1024  # the 10 MB line is never held (server chunks included)


async def test_connection_dropped_at_rcpt_is_unknown_connection_failed(net: Net) -> None:
    drops = [Misbehave("RCPT", Trick.DROP, nth=n) for n in (1, 2)]
    (server,) = await net.serve(ScriptedSmtp(IP1, misbehave=drops))
    net.mx("acme.test", ("mx.acme.test", IP1))

    result = await net.verifier().verify("john@acme.test")

    assert outcome(result) == ("unknown", "connection_failed")
    assert 1 <= server.session_count <= 3  # gives up on a host that never answers


async def test_stalled_rcpt_is_unknown_timeout(net: Net) -> None:
    stalls = [Misbehave("RCPT", Trick.STALL, nth=n) for n in (1, 2)]
    await net.serve(ScriptedSmtp(IP1, misbehave=stalls))
    net.mx("acme.test", ("mx.acme.test", IP1))

    result = await net.verifier().verify("john@acme.test")

    assert outcome(result) == ("unknown", "timeout")


async def test_drop_after_some_recipients_reconnects_and_answers_the_rest(net: Net) -> None:
    people = [f"user{n}@acme.test" for n in range(4)]
    drop_third = [Misbehave("RCPT", Trick.DROP, nth=3)]
    (server,) = await net.serve(ScriptedSmtp(IP1, mailboxes=people[::2], misbehave=drop_third))
    net.mx("acme.test", ("mx.acme.test", IP1))

    results = by_email(await verify_all(net.verifier(), people))

    assert {e: outcome(r) for e, r in results.items()} == {
        "user0@acme.test": ("valid", "accepted"),
        "user1@acme.test": ("invalid", "mailbox_not_found"),
        "user2@acme.test": ("valid", "accepted"),
        "user3@acme.test": ("invalid", "mailbox_not_found"),
    }
    assert server.session_count >= 2


async def test_452_too_many_recipients_verifies_the_rest_in_a_new_session(net: Net) -> None:
    people = [f"user{n}@acme.test" for n in range(7)]
    (server,) = await net.serve(ScriptedSmtp(IP1, max_rcpt=3, mailboxes=people[::2]))
    net.mx("acme.test", ("mx.acme.test", IP1))

    results = by_email(await verify_all(net.verifier(), people))

    expected = {e: ("valid", "accepted") for e in people[::2]}
    expected |= {e: ("invalid", "mailbox_not_found") for e in people[1::2]}
    assert {e: outcome(r) for e, r in results.items()} == expected
    assert server.session_count >= 3
    assert max(record.verbs.count("RCPT") for record in server.sessions) <= 4


async def test_hard_error_limit_hang_up_reconnects_and_answers_every_address(net: Net) -> None:
    people = [f"nobody{n}@acme.test" for n in range(8)]
    (server,) = await net.serve(ScriptedSmtp(IP1, hard_error_limit=3))
    net.mx("acme.test", ("mx.acme.test", IP1))

    results = await verify_all(net.verifier(), people)

    assert sorted(r.email for r in results) == sorted(people)
    assert {outcome(r) for r in results} == {("invalid", "mailbox_not_found")}
    for email in people:  # each asked until answered, never again after
        assert rcpts(server).count(f"<{email}>") <= 2
    # The first session learnt the limit: later ones stay under it instead of hitting 421 again.
    first = server.sessions[0].verbs.count("RCPT") - 1
    assert all(record.verbs.count("RCPT") <= first for record in server.sessions[1:])


async def test_421_at_rcpt_blaming_our_reputation_is_blocked_without_retrying(net: Net) -> None:
    reply = "421 4.7.0 [127.0.0.1] Very low reputation of the sending IP; the message is blocked"
    (server,) = await net.serve(ScriptedSmtp(IP1, rcpt={"john@acme.test": reply}))
    net.mx("acme.test", ("mx.acme.test", IP1))

    result = await net.verifier().verify("john@acme.test")

    assert outcome(result) == ("unknown", "blocked")
    assert server.session_count == 1  # asking again only digs the hole deeper


async def test_host_saying_too_many_even_for_one_recipient_is_given_up(net: Net) -> None:
    too_many = "452 4.5.3 Too many recipients"
    (server,) = await net.serve(ScriptedSmtp(IP1, rcpt={"john@acme.test": too_many}))
    net.mx("acme.test", ("mx.acme.test", IP1))

    result = await net.verifier().verify("john@acme.test")

    assert outcome(result) == ("unknown", "temporary_failure")
    assert result.checks.smtp is not None and result.checks.smtp.response_code == 452
    assert 2 <= server.session_count <= 5


TOO_MANY_CONNECTIONS = "421 4.7.0 Error: too many connections"


class CrowdedSmtp(ScriptedSmtp):
    """Refuses every session as one too many; the first waits until a second one is open.

    So two of the verifier's sessions are open at once when the first refusals come, whatever
    the machine's load; later sessions, alone, are refused all the same.
    """

    def __init__(self, host: str) -> None:
        super().__init__(host, max_sessions=1, replies={"BANNER": TOO_MANY_CONNECTIONS})
        self._second = asyncio.Event()

    async def _converse(self, session: Any) -> None:
        if self.session_count == 1:
            with contextlib.suppress(TimeoutError):  # within the engine's connect timeout
                async with asyncio.timeout(TIMEOUT_S / 2):
                    await self._second.wait()
        else:
            self._second.set()
        await super()._converse(session)


async def test_host_refusing_our_parallel_sessions_through_every_back_off_is_rate_limited(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(throttle_module, "BACKOFF_FIRST_S", 0.001)  # eight back-offs, doubling
    (server,) = await net.serve(CrowdedSmtp(IP1))
    net.mx("one.test", ("mx.shared.test", IP1))  # two domains, one host: two sessions at once
    net.mx("two.test", ("mx.shared.test", IP1))

    results = await verify_all(
        net.verifier(smtp={"max_sessions_per_host": 2}), ["ann@one.test", "bob@two.test"]
    )

    assert {outcome(r) for r in results} == {("unknown", "rate_limited")}
    assert all(r.checks.smtp is not None and r.checks.smtp.response_code == 421 for r in results)
    assert server.max_concurrent == 2  # our own pace met the host's limit
    assert server.session_count >= 4  # given up only after the back-off rounds


async def test_host_refusing_a_lone_session_as_too_many_keeps_the_replys_verdict(
    net: Net,
) -> None:
    (server,) = await net.serve(ScriptedSmtp(IP1, replies={"BANNER": TOO_MANY_CONNECTIONS}))
    net.mx("acme.test", ("mx.acme.test", IP1))

    result = await net.verifier().verify("john@acme.test")

    # Nothing of ours was running beside it: the host speaks of itself (corpus: a 421 is
    # temporary_failure), not of a limit we reached.
    assert outcome(result) == ("unknown", "temporary_failure")
    assert server.max_concurrent == 1 and server.session_count >= 2


async def test_max_rcpt_per_session_splits_a_domain_into_sessions(net: Net) -> None:
    people = [f"user{n}@acme.test" for n in range(5)]
    (server,) = await net.serve(ScriptedSmtp(IP1, mailboxes=people))
    net.mx("acme.test", ("mx.acme.test", IP1))

    verifier = net.verifier(smtp={"max_rcpt_per_session": 3})
    results = await verify_all(verifier, people)

    assert {outcome(r) for r in results} == {("valid", "accepted")}
    assert all(record.verbs.count("RCPT") <= 3 for record in server.sessions)


# verify_many ----------------------------------------------------------------------------------


async def test_duplicate_addresses_are_asked_once_and_answered_twice(net: Net) -> None:
    (server,) = await net.serve(ScriptedSmtp(IP1, mailboxes={"john@acme.test"}))
    net.mx("acme.test", ("mx.acme.test", IP1))

    results = await verify_all(net.verifier(), ["john@acme.test", "john@acme.test"])

    assert [r.email for r in results] == ["john@acme.test"] * 2
    assert [outcome(r) for r in results] == [("valid", "accepted")] * 2
    assert rcpts(server).count("<john@acme.test>") == 1


async def test_verify_many_never_raises_for_an_address(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    await net.serve(ScriptedSmtp(IP1, mailboxes={"john@acme.test"}))
    net.mx("acme.test", ("mx.acme.test", IP1))
    net.mx("buggy.test", ("mx.buggy.test", IP1))
    real_provider_name = enrich_module.provider_name

    def provider_name(mx_hosts: list[str], banner: str | None = None) -> str | None:
        if any(host.endswith("buggy.test") for host in mx_hosts):
            raise RuntimeError("a bug")
        return real_provider_name(mx_hosts, banner)

    monkeypatch.setattr(enrich_module, "provider_name", provider_name)
    emails = ["", "   ", "no-at-sign", "john@acme.test", "x@buggy.test", "a@b@c", "\x00@acme.test"]

    results = by_email(await verify_all(net.verifier(), emails))

    assert sorted(results) == sorted(emails)
    assert outcome(results["john@acme.test"]) == ("valid", "accepted")
    assert outcome(results["x@buggy.test"]) == ("unknown", "internal_error")
    for email in ("", "   ", "no-at-sign", "a@b@c", "\x00@acme.test"):
        assert outcome(results[email]) == ("invalid", "invalid_syntax"), email


async def test_results_of_many_domains_are_all_delivered(net: Net) -> None:
    await net.serve(CatchAllSmtp(IP1), ScriptedSmtp(IP2, mailboxes={"a@two.test"}))
    net.mx("one.test", ("mx.one.test", IP1))
    net.mx("two.test", ("mx.two.test", IP2))
    emails = [f"u{n}@one.test" for n in range(30)] + ["a@two.test", "b@two.test"]

    results = by_email(await asyncio.wait_for(verify_all(net.verifier(), emails), 10))

    assert len(results) == len(emails)
    assert outcome(results["u7@one.test"]) == ("catch_all", "accept_all")
    assert outcome(results["b@two.test"]) == ("invalid", "mailbox_not_found")


async def test_verify_leaves_no_task_behind(net: Net) -> None:
    await net.serve(ScriptedSmtp(IP1, mailboxes={"john@acme.test"}))
    net.mx("acme.test", ("mx.acme.test", IP1))
    before = asyncio.all_tasks()

    await net.verifier().verify("john@acme.test")

    assert asyncio.all_tasks() - before == set()


def test_a_run_drives_the_verifiers_public_steps() -> None:
    verifier: Steps = Verifier()
    made_up = {verifier.made_up_address("acme.test") for _ in range(50)}
    assert len(made_up) == 50 and all(a.endswith("@acme.test") for a in made_up)
    parsed = verifier.parse("not an address")
    assert isinstance(parsed, VerificationResult) and parsed.reason is Reason.INVALID_SYNTAX
