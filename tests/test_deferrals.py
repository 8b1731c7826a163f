"""Deferred answers waited out at each server's pace (issue 10), over real sockets.

Greylisting with and without a stated delay, per-time rate limits (Postfix anvil), slow
greetings, slow drips, per-domain session caps and MX hosts of equal preference: scripted SMTP
servers on 127.0.0.x, a real DNS server, the engine as users run it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from mailprobe.engine import VerificationResult
from mailprobe.engine import conversation as conversation_module
from mailprobe.engine import probe as probe_module
from mailprobe.engine import throttle as throttle_module

from tests.fakes.net import IP1, IP2, IP3, IP4, Net, assert_no_message_sent, verify_all
from tests.fakes.smtp import (
    AnvilSmtp,
    CatchAllSmtp,
    Misbehave,
    PostgreySmtp,
    ScriptedSmtp,
    SessionRecord,
    Trick,
)

pytestmark = pytest.mark.usefixtures("quick_backoff")


def outcome(result: VerificationResult) -> tuple[str, str]:
    return (str(result.status), str(result.reason))


def by_email(results: list[VerificationResult]) -> dict[str, VerificationResult]:
    return {result.email: result for result in results}


def most_at_once(records: list[SessionRecord]) -> int:
    """Return the most sessions that were open at the same moment."""
    edges = sorted(
        [(r.started, 1) for r in records] + [(r.ended or time.monotonic(), -1) for r in records]
    )
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


# 1. Greylisting --------------------------------------------------------------------------------


async def test_postgrey_without_a_stated_delay_is_retried_on_the_configured_delays(
    net: Net,
) -> None:
    (server,) = await net.serve(PostgreySmtp(IP1, delay_s=0.4, mailboxes={"ann@grey.test"}))
    net.mx("grey.test", ("mx.grey.test", IP1))
    verifier = net.verifier(greylist={"retry_delays_s": [0.2, 0.4], "max_wait_s": 2.0})

    results = by_email(await verify_all(verifier, ["ann@grey.test", "bob@grey.test"]))

    # A guessed 300 s (postgrey's default --delay) must not cancel retries that would work.
    assert outcome(results["ann@grey.test"]) == ("valid", "accepted")
    assert outcome(results["bob@grey.test"]) == ("invalid", "mailbox_not_found")
    assert server.deferred >= 2 and server.session_count >= 2


async def test_a_stated_greylisting_delay_is_a_floor_for_the_retry(net: Net) -> None:
    server = PostgreySmtp(IP1, delay_s=0.8, stated=True, mailboxes={"ann@grey.test"})
    await net.serve(server)
    net.mx("grey.test", ("mx.grey.test", IP1))
    verifier = net.verifier(greylist={"retry_delays_s": [0.05, 0.05, 0.05], "max_wait_s": 3.0})

    started = time.monotonic()
    result = await verifier.verify("ann@grey.test")

    assert outcome(result) == ("valid", "accepted")
    assert server.session_count == 2  # no retry before the delay the server named
    assert server.sessions[1].started - started >= 0.8


# 2. Per-time rate limits -------------------------------------------------------------------------


def rate_settings(**deferral: Any) -> dict[str, Any]:
    return {
        "smtp": {"max_rcpt_per_session": 4, "max_sessions_per_host": 1},
        "deferral": {"rate_window_s": 1.0, "max_wait_s": 10.0, **deferral},
    }


async def test_recipient_rate_limit_is_learned_and_waited_out(net: Net) -> None:
    people = [f"user{n}@paced.test" for n in range(12)]
    anvil = AnvilSmtp(IP1, window_s=1.0, rcpt_rate=5, mailboxes=people[::2])
    other = ScriptedSmtp(IP2, mailboxes={"jane@other.test"})
    await net.serve(anvil, other)
    net.mx("paced.test", ("mx.paced.test", IP1))
    net.mx("other.test", ("mx.other.test", IP2))

    results = await verify_all(net.verifier(**rate_settings()), [*people, "jane@other.test"])

    found = by_email(results)
    for n, email in enumerate(people):
        expected = ("valid", "accepted") if n % 2 == 0 else ("invalid", "mailbox_not_found")
        assert outcome(found[email]) == expected, email
    assert anvil.violations <= 2  # learned from the first "too many", then kept under it
    # The paced host's waits hold no other domain back: jane comes before any address that
    # had to wait for the window (the first window answers the made-up address and 4).
    assert [r.email for r in results].index("jane@other.test") <= 4
    assert_no_message_sent([anvil, other])


async def test_connection_rate_limit_is_learned_and_waited_out(net: Net) -> None:
    people = [f"user{n}@paced.test" for n in range(8)]
    anvil = AnvilSmtp(IP1, window_s=1.0, session_rate=2, mailboxes=people)
    await net.serve(anvil)
    net.mx("paced.test", ("mx.paced.test", IP1))
    settings = rate_settings()
    settings["smtp"]["max_rcpt_per_session"] = 2

    results = await verify_all(net.verifier(**settings), people)

    assert {outcome(r) for r in results} == {("valid", "accepted")}
    assert anvil.crowded <= 2


async def test_rate_limited_past_max_wait_is_rate_limited_with_the_windows_retry_time(
    net: Net,
) -> None:
    people = [f"user{n}@paced.test" for n in range(10)]
    anvil = AnvilSmtp(IP1, window_s=5.0, rcpt_rate=3, mailboxes=people)
    await net.serve(anvil)
    net.mx("paced.test", ("mx.paced.test", IP1))

    verifier = net.verifier(**rate_settings(rate_window_s=5.0, max_wait_s=0.5))
    started = time.monotonic()
    results = await verify_all(verifier, people)

    assert time.monotonic() - started < 4  # the run does not wait out the 5 s window
    limited = [r for r in results if outcome(r) == ("unknown", "rate_limited")]
    answered = [r for r in results if outcome(r) == ("valid", "accepted")]
    assert len(answered) >= 2 and len(limited) + len(answered) == len(people)
    # The daemon asks again when the window reopens, not after a blind back-off.
    assert all(r.retry_after_s is not None and 0 < r.retry_after_s <= 6 for r in limited)


# 3. Slow greetings -----------------------------------------------------------------------------


async def test_greeting_slower_than_the_connect_timeout_is_waited_for(net: Net) -> None:
    slow = Misbehave("BANNER", Trick.DELAY, delay_s=0.8)
    await net.serve(ScriptedSmtp(IP1, mailboxes={"ann@slow.test"}, misbehave=[slow]))
    net.mx("slow.test", ("mx.slow.test", IP1))

    verifier = net.verifier(smtp={"connect_timeout_s": 0.4, "greeting_timeout_s": 3.0})
    result = await verifier.verify("ann@slow.test")

    assert outcome(result) == ("valid", "accepted")


async def test_a_slow_greeting_holds_no_global_slot_another_host_needs(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe_module, "PROMPT_GREETING_S", 0.05)
    slow = Misbehave("BANNER", Trick.DELAY, delay_s=1.5)
    await net.serve(
        ScriptedSmtp(IP1, mailboxes={"ann@slow.test"}, misbehave=[slow]),
        ScriptedSmtp(IP2, mailboxes={"bob@fast.test"}),
    )
    net.mx("slow.test", ("mx.slow.test", IP1))
    net.mx("fast.test", ("mx.fast.test", IP2))

    verifier = net.verifier(concurrency=1, smtp={"greeting_timeout_s": 5.0})
    results = await verify_all(verifier, ["ann@slow.test", "bob@fast.test"])

    assert [r.email for r in results] == ["bob@fast.test", "ann@slow.test"]
    assert {outcome(r) for r in results} == {("valid", "accepted")}


# 4. Session deadline and caps per domain ---------------------------------------------------------


async def test_slow_drip_session_ends_at_the_session_deadline_and_the_rest_is_asked_again(
    net: Net,
) -> None:
    people = [f"user{n}@drip.test" for n in range(6)]
    (server,) = await net.serve(ScriptedSmtp(IP1, latency_ms=150, mailboxes=people))
    net.mx("drip.test", ("mx.drip.test", IP1))

    smtp = {"command_timeout_s": 1.0, "session_timeout_s": 1.2, "max_sessions_per_host": 1}
    results = await verify_all(net.verifier(smtp=smtp), people)

    assert {outcome(r) for r in results} == {("valid", "accepted")}
    assert server.session_count >= 2  # one session could not hold the host for all of them
    assert all(r.ended is not None and r.ended - r.started < 1.2 + 0.5 for r in server.sessions)


async def test_subdomains_of_one_registrable_domain_share_its_session_cap(net: Net) -> None:
    ips = [IP1, IP2, IP3, IP4]
    servers = [ScriptedSmtp(ip, latency_ms=60, mailboxes=set()) for ip in ips]
    await net.serve(*servers)
    domains = [f"s{n}.evil.test" for n in range(len(ips))]
    for domain, ip in zip(domains, ips, strict=True):
        net.mx(domain, (f"mx.{domain}", ip))
    emails = [f"user{k}@{domain}" for domain in domains for k in range(3)]

    smtp = {"max_sessions_per_registrable_domain": 2, "max_rcpt_per_session": 2}
    results = await verify_all(net.verifier(smtp=smtp), emails)

    assert {outcome(r) for r in results} == {("invalid", "mailbox_not_found")}
    assert most_at_once([r for s in servers for r in s.sessions]) <= 2


async def test_one_domain_holds_at_most_its_session_cap(net: Net) -> None:
    servers = [ScriptedSmtp(ip, latency_ms=60) for ip in (IP1, IP2)]
    await net.serve(*servers)
    for name, ip in (("mx1.big.test", IP1), ("mx2.big.test", IP2)):
        net.dns.add_mx("big.test", 10, name)
        net.dns.add(name, "A", ip)
    emails = [f"user{k}@big.test" for k in range(16)]

    smtp = {"max_sessions_per_domain": 1, "max_rcpt_per_session": 2}
    results = await verify_all(net.verifier(smtp=smtp), emails)

    assert len(results) == 16
    assert most_at_once([r for s in servers for r in s.sessions]) == 1


# 7. MX hosts of equal and lower preference -------------------------------------------------------


async def test_a_big_domain_is_spread_over_its_equal_preference_mx_hosts(net: Net) -> None:
    emails = [f"user{k}@big.test" for k in range(40)]
    servers = [ScriptedSmtp(ip, latency_ms=20, mailboxes=emails) for ip in (IP1, IP2)]
    await net.serve(*servers)
    for name, ip in (("mx1.big.test", IP1), ("mx2.big.test", IP2)):
        net.dns.add_mx("big.test", 10, name)
        net.dns.add(name, "A", ip)

    smtp = {"max_rcpt_per_session": 5, "max_sessions_per_host": 1}
    results = await verify_all(net.verifier(smtp=smtp), emails)

    assert {outcome(r) for r in results} == {("valid", "accepted")}
    assert all(server.session_count >= 2 for server in servers)  # both took part
    assert most_at_once([r for s in servers for r in s.sessions]) == 2


class ClosingAfterFirstSmtp(ScriptedSmtp):
    """Serves its first session, then answers every later one with a 421 banner."""

    async def _converse(self, session: Any) -> None:
        if self.session_count > 1:
            await self._send(session, "421 4.3.2 Service shutting down")
            return
        await super()._converse(session)


async def test_backup_mx_is_asked_with_its_own_made_up_address(net: Net) -> None:
    primary = ClosingAfterFirstSmtp(IP1, mailboxes={"ann@acme.test"})
    backup = CatchAllSmtp(IP2)
    await net.serve(primary, backup)
    net.mx("acme.test", ("mx1.acme.test", IP1), ("backup.acme.test", IP2))

    smtp = {"max_rcpt_per_session": 2, "max_sessions_per_host": 1}
    emails = ["ann@acme.test", "nobody@acme.test", "noone@acme.test"]
    results = by_email(await verify_all(net.verifier(smtp=smtp), emails))

    assert outcome(results["ann@acme.test"]) == ("valid", "accepted")
    # The backup takes anyone: its 250s say nothing, whatever the primary's made-up address got.
    assert outcome(results["nobody@acme.test"]) == ("catch_all", "accept_all")
    assert outcome(results["noone@acme.test"]) == ("catch_all", "accept_all")


# Caches ------------------------------------------------------------------------------------------


async def test_catch_all_answer_expires(net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    (server,) = await net.serve(ScriptedSmtp(IP1, mailboxes={"ann@acme.test"}))
    net.mx("acme.test", ("mx.acme.test", IP1))
    monkeypatch.setattr(conversation_module, "CATCH_ALL_TTL_S", -1.0)  # expired when kept
    verifier = net.verifier()

    await verifier.verify("ann@acme.test")
    await verifier.verify("bob@acme.test")

    rcpts_per_session = [sum(v == "RCPT" for v in r.verbs) for r in server.sessions]
    assert rcpts_per_session == [2, 2]  # probed afresh: the first answer was not trusted


async def test_host_state_is_bounded_to_the_most_recent_hosts(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(throttle_module, "MAX_HOSTS", 2)
    ips = [IP1, IP2, IP3]
    await net.serve(*(ScriptedSmtp(ip, mailboxes={f"ann@d{n}.test"}) for n, ip in enumerate(ips)))
    for n, ip in enumerate(ips):
        net.mx(f"d{n}.test", (f"mx.d{n}.test", ip))
    verifier = net.verifier()
    default = verifier.settings.smtp.max_rcpt_per_session

    for n, ip in enumerate(ips):
        verifier.throttle.learn_rcpt_limit(ip, 1)  # a lesson each host taught us
        assert outcome(await verifier.verify(f"ann@d{n}.test")) == ("valid", "accepted")

    # A daemon meets hosts without end: the least recently used one's lessons are forgotten.
    assert [verifier.throttle.rcpt_limit(ip) for ip in (IP3, IP2, IP1)] == [1, 1, default]
