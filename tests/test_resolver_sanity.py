"""Resolver sanity and the list guard: a lying resolver never turns addresses "invalid".

Real DNS servers on loopback: one that answers NXDOMAIN for every name, one that hijacks
NXDOMAIN, one that never answers the canary; and runs where most domains fail alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from mailprobe.engine import Reason, Status, Verifier, sanity
from mailprobe.engine import verifier as verifier_module
from mailprobe.engine.sanity import ResolverSanity
from mailprobe.engine.settings import DnsSettings

from tests.fakes.dns import CANARY, DnsServer, HijackingDns, NxdomainDns, running_dns_server
from tests.fakes.net import IP1, Net, verify_all

pytestmark = pytest.mark.usefixtures("quick_backoff")


@pytest.fixture
def nxdomain_net(net: Net) -> Iterator[Net]:
    """A net whose resolver says NXDOMAIN to everything, canaries included."""
    with running_dns_server(NxdomainDns) as lying:
        yield Net(lying, net._start)


@pytest.fixture
def hijacking_net(net: Net) -> Iterator[Net]:
    """A net whose resolver invents an address for every name it does not know."""
    with running_dns_server(HijackingDns) as lying:
        yield Net(lying, net._start)


def warnings_about_resolver(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "resolver not trusted" in r.getMessage()]


async def test_resolver_denying_every_name_gives_dns_error_not_domain_not_found(
    nxdomain_net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    emails = [f"u{n}@gone{n}.test" for n in range(6)]
    with caplog.at_level(logging.WARNING, logger="mailprobe.engine"):
        results = await verify_all(nxdomain_net.verifier(), emails)
    assert {(r.status, r.reason) for r in results} == {(Status.UNKNOWN, Reason.DNS_ERROR)}
    (warning,) = warnings_about_resolver(caplog)  # once, not per address
    assert CANARY in warning and "engine.dns.nameservers" in warning


async def test_working_resolver_still_says_domain_not_found(net: Net) -> None:
    result = await net.verifier().verify("john@gone.test")
    assert (result.status, result.reason) == (Status.INVALID, Reason.DOMAIN_NOT_FOUND)
    assert net.dns.count(CANARY) == 1


async def test_hijacking_resolver_is_not_trusted(hijacking_net: Net) -> None:
    # The MX question gets an honest NXDOMAIN; the made-up name's A question an invented address.
    result = await hijacking_net.verifier().verify("john@gone.test")
    assert (result.status, result.reason) == (Status.UNKNOWN, Reason.DNS_ERROR)
    health = await hijacking_net.verifier().resolver_health()
    assert not health.trusted
    assert "NXDOMAIN hijacking" in (health.problem or "")


async def test_resolver_silent_on_the_canary_is_not_trusted(net: Net) -> None:
    net.dns.drop(CANARY)
    verifier = net.verifier(dns_timeout_s=0.3)
    result = await verifier.verify("john@gone.test")
    assert (result.status, result.reason) == (Status.UNKNOWN, Reason.DNS_ERROR)
    assert "no answer" in ((await verifier.resolver_health()).problem or "")


async def test_resolver_null_mx_from_untrusted_resolver_is_dns_error(net: Net) -> None:
    net.dns.add_mx("nomail.test", 0, ".")
    net.dns.drop(CANARY)
    result = await net.verifier(dns_timeout_s=0.3).verify("john@nomail.test")
    assert (result.status, result.reason) == (Status.UNKNOWN, Reason.DNS_ERROR)


async def test_resolver_check_is_asked_once_per_interval(net: Net) -> None:
    emails = [f"u@gone{n}.test" for n in range(5)]
    results = await verify_all(net.verifier(), emails)
    assert {r.reason for r in results} == {Reason.DOMAIN_NOT_FOUND}
    assert net.dns.count(CANARY) == 1


async def test_resolver_check_is_skipped_when_no_domain_is_negative(net: Net) -> None:
    await verify_all(net.verifier(), ["not an address"])
    assert net.dns.queries == []


async def test_resolver_trusted_again_once_fixed(dns_server: DnsServer) -> None:
    settings = DnsSettings(**{**dns_server.dns_settings(timeout_s=0.3), "check_interval_s": 1e-6})
    sanity = ResolverSanity(settings)
    dns_server.drop(CANARY)
    assert not (await sanity.health()).trusted
    dns_server.add("canary2.resolver.test", "A", "127.0.0.1")
    fixed = settings.model_copy(update={"canaries": ["canary2.resolver.test"]})
    assert (await ResolverSanity(fixed).health()).trusted


async def test_no_canaries_and_no_zone_means_always_trusted(dns_server: DnsServer) -> None:
    settings = DnsSettings(**{**dns_server.dns_settings(), "canaries": [], "nxdomain_zone": ""})
    assert (await ResolverSanity(settings).health()).trusted
    assert dns_server.queries == []


# The list guard --------------------------------------------------------------------------------


def half_gone(net: Net, *, gone: int, present: int) -> list[str]:
    """Return addresses at `gone` domains that do not exist and `present` whose MX is down."""
    for n in range(present):
        net.mx(f"up{n}.test", (f"mx.up{n}.test", IP1))
    net.idle_port(IP1)
    return [f"a@gone{n}.test" for n in range(gone)] + [f"a@up{n}.test" for n in range(present)]


async def test_list_guard_turns_mass_domain_not_found_into_dns_error(
    net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    emails = half_gone(net, gone=40, present=20)
    with caplog.at_level(logging.WARNING, logger="mailprobe.engine"):
        results = await verify_all(net.verifier(), emails)
    gone = [r for r in results if "gone" in r.email]
    assert len(gone) == 40
    assert {(r.status, r.reason) for r in gone} == {(Status.UNKNOWN, Reason.DNS_ERROR)}
    guard = [r.getMessage() for r in caplog.records if "domains in this run" in r.getMessage()]
    assert len(guard) == 1 and "40 of 50" in guard[0]  # judged once 50 domains answered


async def test_list_guard_keeps_domain_not_found_when_a_minority_fails(net: Net) -> None:
    emails = half_gone(net, gone=20, present=40)
    results = await verify_all(net.verifier(), emails)
    gone = [r for r in results if "gone" in r.email]
    assert {(r.status, r.reason) for r in gone} == {(Status.INVALID, Reason.DOMAIN_NOT_FOUND)}


async def test_list_guard_leaves_small_runs_alone(net: Net) -> None:
    results = await verify_all(net.verifier(), [f"a@gone{n}.test" for n in range(10)])
    assert {r.reason for r in results} == {Reason.DOMAIN_NOT_FOUND}


async def test_list_guard_judges_when_the_read_ahead_window_fills(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three addresses per domain with a read-ahead of 2: held verdicts must not stall the run.
    monkeypatch.setattr(verifier_module, "READ_AHEAD", 2)
    verifier = net.verifier()

    emails = [f"u{k}@gone{n}.test" for n in range(3) for k in range(3)]
    results = [r async for r in verifier.verify_many(emails)]
    assert len(results) == 9 and {r.reason for r in results} == {Reason.DOMAIN_NOT_FOUND}


def test_verifier_exposes_resolver_health() -> None:
    assert callable(Verifier().resolver_health)


async def test_answers_cached_while_the_resolver_lied_do_not_decide_once_it_is_trusted(
    net: Net,
) -> None:
    net.dns.drop(CANARY)
    settings = net.settings(dns_timeout_s=0.3)
    always = settings.dns.model_copy(update={"check_interval_s": 1e-9})  # check every time
    verifier = Verifier(settings.model_copy(update={"dns": always}))
    assert (await verifier.verify("a@gone.test")).reason is Reason.DNS_ERROR
    net.dns.restore(CANARY)  # the resolver is fixed...
    net.dns.add_mx("gone.test", 10, "mx.gone.test")  # ...and the domain was there all along
    net.dns.add("mx.gone.test", "A", IP1)
    first = await verifier.verify("a@gone.test")
    assert first.reason is Reason.DNS_ERROR  # the NXDOMAIN cached from the lie is dropped
    second = await verifier.verify("a@gone.test")
    assert second.reason is not Reason.DOMAIN_NOT_FOUND
    assert net.dns.count("gone.test", "MX") == 2


async def test_list_guard_holds_a_verdict_only_briefly_for_a_caller_waiting_on_it(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sanity, "MAX_HOLD_S", 0.05)
    first_taken = asyncio.Event()

    async def in_order_input() -> AsyncIterator[str]:
        yield "a@gone.test"
        await first_taken.wait()  # like a writer keeping input order: no more until it is out
        yield "b@gone2.test"

    results = []
    async with asyncio.timeout(10):
        async for result in net.verifier().verify_many(in_order_input()):
            results.append(result)
            first_taken.set()
    assert [r.reason for r in results] == [Reason.DOMAIN_NOT_FOUND] * 2
