"""Mail routes over real UDP/TCP to the fake DNS server: the spec of engine/mx.py."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from typing import Any

import pytest
from mailprobe.engine.errors import DnsError
from mailprobe.engine.mx import MailRoute, MailRouter, MxHost, RouteKind, is_contactable, rank_mx
from mailprobe.engine.settings import EngineSettings

from tests.fakes.dns import DnsServer, DroppingDns, ServfailDns, Transport, running_dns_server

LOOPBACK = ["127.0.0.0/8"]


def make_router(
    server: DnsServer,
    *,
    allowed: list[str] | None = None,
    timeout_s: float = 1.0,
    **kwargs: Any,
) -> MailRouter:
    settings = EngineSettings(
        helo_hostname="probe.test",
        dns=server.dns_settings(timeout_s=timeout_s),
        smtp={"allowed_private_networks": LOOPBACK if allowed is None else allowed},
    )
    return MailRouter(settings, **kwargs)


class FakeClock:
    """A monotonic clock the test moves by hand, so TTLs expire without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def names(route: MailRoute) -> list[str]:
    return [host.name for host in route.hosts]


# -- MX ---------------------------------------------------------------------------------------


async def test_mx_hosts_are_sorted_by_preference(dns_server: DnsServer) -> None:
    for pref, host, ip in [(20, "mx2", "127.0.0.3"), (10, "mx1", "127.0.0.2"), (30, "mx3", "")]:
        dns_server.add_mx("acme.test", pref, f"{host}.acme.test")
        dns_server.add(f"{host}.acme.test", "A", ip or "127.0.0.4")

    route = await make_router(dns_server).route("acme.test")

    assert route.kind is RouteKind.MX
    assert route.deliverable
    assert route.hosts == (
        MxHost("mx1.acme.test", 10, ("127.0.0.2",)),
        MxHost("mx2.acme.test", 20, ("127.0.0.3",)),
        MxHost("mx3.acme.test", 30, ("127.0.0.4",)),
    )


async def test_mx_equal_preferences_are_shuffled_best_still_first(dns_server: DnsServer) -> None:
    dns_server.add_mx("acme.test", 5, "primary.acme.test")
    for host in ("a", "b"):
        dns_server.add_mx("acme.test", 10, f"{host}.acme.test")
    for host in ("primary", "a", "b"):
        dns_server.add(f"{host}.acme.test", "A", "127.0.0.2")

    orders = set()
    for seed in range(20):
        route = await make_router(dns_server, rng=random.Random(seed)).route("acme.test")
        assert names(route)[0] == "primary.acme.test"
        orders.add(tuple(names(route)[1:]))

    assert orders == {("a.acme.test", "b.acme.test"), ("b.acme.test", "a.acme.test")}


def test_rank_mx_same_seed_gives_same_order_whatever_the_answer_order() -> None:
    records = [(10, "c.test"), (10, "a.test"), (10, "b.test"), (0, "z.test")]

    first = rank_mx(records, rng=random.Random(7))
    second = rank_mx(list(reversed(records)), rng=random.Random(7))

    assert first == second
    assert first[0] == (0, "z.test")


def test_rank_mx_drops_null_hosts_and_keeps_best_preference_of_duplicates() -> None:
    ranked = rank_mx([(20, "mx.test"), (10, "mx.test"), (0, ".")], rng=random.Random(0))

    assert ranked == [(10, "mx.test")]


async def test_mx_host_names_are_lower_case_without_trailing_dot(dns_server: DnsServer) -> None:
    dns_server.add("acme.test", "MX", "10 MX1.Acme.TEST.")
    dns_server.add("mx1.acme.test", "A", "127.0.0.2")

    route = await make_router(dns_server).route("acme.test.")

    assert route.domain == "acme.test"
    assert names(route) == ["mx1.acme.test"]


async def test_null_mx_is_null_mx_route(dns_server: DnsServer) -> None:
    dns_server.add("nullmx.test", "MX", "0 .")
    dns_server.add("nullmx.test", "A", "127.0.0.2")  # a web site does not make it take mail

    route = await make_router(dns_server).route("nullmx.test")

    assert route == MailRoute("nullmx.test", RouteKind.NULL_MX, ())
    assert not route.deliverable


async def test_null_mx_beside_a_real_mx_uses_the_real_one(dns_server: DnsServer) -> None:
    dns_server.add_mx("mixed.test", 0, ".")
    dns_server.add_mx("mixed.test", 10, "mx.mixed.test")
    dns_server.add("mx.mixed.test", "A", "127.0.0.2")

    route = await make_router(dns_server).route("mixed.test")

    assert route.kind is RouteKind.MX
    assert names(route) == ["mx.mixed.test"]


async def test_undeclared_domain_is_domain_not_found(dns_server: DnsServer) -> None:
    route = await make_router(dns_server).route("nowhere.test")

    assert route == MailRoute("nowhere.test", RouteKind.DOMAIN_NOT_FOUND, ())
    assert not route.deliverable
    assert dns_server.count("nowhere.test", "A") == 0  # NXDOMAIN ends it: no A fallback


# -- implicit MX ------------------------------------------------------------------------------


async def test_domain_without_mx_falls_back_to_its_a_record(dns_server: DnsServer) -> None:
    dns_server.add("plain.test", "A", "127.0.0.2")

    route = await make_router(dns_server).route("plain.test")

    assert route.kind is RouteKind.IMPLICIT
    assert route.hosts == (MxHost("plain.test", 0, ("127.0.0.2",)),)
    assert route.deliverable


async def test_domain_without_mx_falls_back_to_its_aaaa_record(dns_server: DnsServer) -> None:
    dns_server.add("v6.test", "AAAA", "::1")

    route = await make_router(dns_server, allowed=["::1/128"]).route("v6.test")

    assert route.kind is RouteKind.IMPLICIT
    assert route.hosts == (MxHost("v6.test", 0, ("::1",)),)


async def test_domain_without_mx_or_address_is_no_mail_server(dns_server: DnsServer) -> None:
    dns_server.add("textonly.test", "TXT", "hello")

    route = await make_router(dns_server).route("textonly.test")

    assert route == MailRoute("textonly.test", RouteKind.NO_MAIL_SERVER, ())
    assert not route.deliverable


# -- failures are "we do not know" ------------------------------------------------------------


async def test_servfail_on_mx_raises_dns_error(dns_server: DnsServer) -> None:
    dns_server.servfail("broken.test")

    with pytest.raises(DnsError) as caught:
        await make_router(dns_server).route("broken.test")

    assert (caught.value.domain, caught.value.rdtype) == ("broken.test", "MX")
    assert "SERVFAIL" in str(caught.value)


async def test_dropped_mx_query_raises_dns_error_within_timeout(dns_server: DnsServer) -> None:
    dns_server.drop("silent.test")
    router = make_router(dns_server, timeout_s=0.5)

    started = time.monotonic()
    with pytest.raises(DnsError, match="no answer within 0.5 s"):
        await router.route("silent.test")

    assert time.monotonic() - started < 1.5
    assert dns_server.count("silent.test", "MX") >= 1


async def test_dropping_server_raises_dns_error() -> None:
    with running_dns_server(DroppingDns) as server:
        with pytest.raises(DnsError):
            await make_router(server, timeout_s=0.3).route("acme.test")


async def test_servfailing_server_raises_dns_error() -> None:
    with running_dns_server(ServfailDns) as server:
        with pytest.raises(DnsError):
            await make_router(server).route("acme.test")


async def test_dns_error_is_not_cached(dns_server: DnsServer) -> None:
    dns_server.servfail("broken.test")
    router = make_router(dns_server)

    for _ in range(2):
        with pytest.raises(DnsError):
            await router.route("broken.test")

    assert dns_server.count("broken.test", "MX") == 2


# -- MX hosts ---------------------------------------------------------------------------------


async def test_mx_hosts_that_do_not_resolve_are_no_mail_server(dns_server: DnsServer) -> None:
    dns_server.add_mx("ghost.test", 10, "mx1.nowhere.test")
    dns_server.add_mx("ghost.test", 20, "mx2.ghost.test")
    dns_server.add("mx2.ghost.test", "TXT", "no address here")

    route = await make_router(dns_server).route("ghost.test")

    assert route == MailRoute("ghost.test", RouteKind.NO_MAIL_SERVER, ())


async def test_mx_host_failing_is_skipped_when_another_resolves(dns_server: DnsServer) -> None:
    dns_server.add_mx("half.test", 10, "bad.half.test")
    dns_server.add_mx("half.test", 20, "good.half.test")
    dns_server.servfail("bad.half.test")
    dns_server.add("good.half.test", "A", "127.0.0.3")

    route = await make_router(dns_server).route("half.test")

    assert route.hosts == (MxHost("good.half.test", 20, ("127.0.0.3",)),)


async def test_mx_hosts_failing_or_missing_raise_dns_error(dns_server: DnsServer) -> None:
    dns_server.add_mx("half.test", 10, "bad.half.test")
    dns_server.add_mx("half.test", 20, "missing.half.test")
    dns_server.servfail("bad.half.test")

    with pytest.raises(DnsError) as caught:
        await make_router(dns_server).route("half.test")

    assert caught.value.domain == "bad.half.test"


async def test_mx_host_failing_beside_unroutable_one_is_dns_error_not_unroutable(
    dns_server: DnsServer,
) -> None:
    # The failed host might be the reachable one: we do not know, so no invalid verdict.
    dns_server.add_mx("half.test", 10, "bad.half.test")
    dns_server.add_mx("half.test", 20, "private.half.test")
    dns_server.servfail("bad.half.test")
    dns_server.add("private.half.test", "A", "10.0.0.1")

    with pytest.raises(DnsError):
        await make_router(dns_server, allowed=[]).route("half.test")


async def test_ipv6_mx_host_is_used_when_allowed(dns_server: DnsServer) -> None:
    dns_server.add_mx("v6.test", 10, "mx.v6.test")
    dns_server.add("mx.v6.test", "AAAA", "::1")

    route = await make_router(dns_server, allowed=["::1/128"]).route("v6.test")

    assert route.hosts == (MxHost("mx.v6.test", 10, ("::1",)),)


async def test_mx_host_addresses_list_ipv4_before_ipv6(dns_server: DnsServer) -> None:
    dns_server.add_mx("dual.test", 10, "mx.dual.test")
    dns_server.add("mx.dual.test", "AAAA", "::1")
    dns_server.add("mx.dual.test", "A", "127.0.0.2")

    route = await make_router(dns_server, allowed=["127.0.0.0/8", "::1/128"]).route("dual.test")

    assert route.hosts[0].addresses == ("127.0.0.2", "::1")


async def test_cname_mx_host_resolves_through_the_alias(dns_server: DnsServer) -> None:
    dns_server.add_mx("alias.test", 10, "mail.alias.test")
    dns_server.add("mail.alias.test", "CNAME", "real.provider.test")
    dns_server.add("real.provider.test", "A", "127.0.0.5")

    route = await make_router(dns_server).route("alias.test")

    assert route.hosts == (MxHost("mail.alias.test", 10, ("127.0.0.5",)),)


async def test_mx_host_with_many_addresses_is_fetched_over_tcp(dns_server: DnsServer) -> None:
    dns_server.add_mx("big.test", 10, "mx.big.test")
    for last in range(1, 61):  # 60 A records do not fit in a 512-byte UDP reply
        dns_server.add("mx.big.test", "A", f"127.0.1.{last}")

    route = await make_router(dns_server).route("big.test")

    assert len(route.hosts[0].addresses) == 60
    assert any(q.transport is Transport.TCP and q.name == "mx.big.test" for q in dns_server.queries)


# -- routability ------------------------------------------------------------------------------


async def test_mx_to_private_and_loopback_addresses_is_unroutable(dns_server: DnsServer) -> None:
    dns_server.add_mx("intranet.test", 10, "mx1.intranet.test")
    dns_server.add_mx("intranet.test", 20, "mx2.intranet.test")
    dns_server.add("mx1.intranet.test", "A", "10.0.0.1")
    dns_server.add("mx2.intranet.test", "A", "127.0.0.2")

    route = await make_router(dns_server, allowed=[]).route("intranet.test")

    assert route == MailRoute("intranet.test", RouteKind.UNROUTABLE, ())
    assert not route.deliverable


async def test_implicit_mx_to_loopback_is_unroutable(dns_server: DnsServer) -> None:
    dns_server.add("parked.test", "A", "127.0.0.1")

    route = await make_router(dns_server, allowed=[]).route("parked.test")

    assert route.kind is RouteKind.UNROUTABLE


async def test_allowed_private_network_makes_mx_routable(dns_server: DnsServer) -> None:
    dns_server.add_mx("intranet.test", 10, "mx1.intranet.test")
    dns_server.add("mx1.intranet.test", "A", "10.0.0.1")

    route = await make_router(dns_server, allowed=["10.0.0.0/8"]).route("intranet.test")

    assert route.kind is RouteKind.MX
    assert route.hosts == (MxHost("mx1.intranet.test", 10, ("10.0.0.1",)),)


async def test_mx_host_keeps_only_contactable_addresses(dns_server: DnsServer) -> None:
    dns_server.add_mx("mixed.test", 10, "mx1.mixed.test")
    dns_server.add_mx("mixed.test", 20, "mx2.mixed.test")
    dns_server.add("mx1.mixed.test", "A", "10.0.0.1")
    dns_server.add("mx1.mixed.test", "A", "127.0.0.2")
    dns_server.add("mx2.mixed.test", "A", "192.168.1.1")

    route = await make_router(dns_server).route("mixed.test")

    assert route.hosts == (MxHost("mx1.mixed.test", 10, ("127.0.0.2",)),)


@pytest.mark.parametrize(
    ("address", "contactable"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("10.0.0.1", False),
        ("192.168.1.1", False),
        ("172.16.0.1", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("169.254.1.1", False),
        ("192.0.2.1", False),  # documentation
        ("127.0.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("2001:db8::1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:8.8.8.8", True),
    ],
)
def test_is_contactable_accepts_only_global_addresses(address: str, contactable: bool) -> None:
    assert is_contactable(address) is contactable


def test_is_contactable_accepts_allowed_networks_but_never_unspecified() -> None:
    settings = EngineSettings(
        helo_hostname="probe.test", smtp={"allowed_private_networks": ["0.0.0.0/0", "::/0"]}
    )
    allowed = settings.smtp.allowed_private_networks

    assert is_contactable("10.0.0.1", allowed)
    assert is_contactable("::1", allowed)
    assert not is_contactable("0.0.0.0", allowed)
    assert not is_contactable("224.0.0.1", allowed)


# -- caching ----------------------------------------------------------------------------------


def declare_acme(server: DnsServer, *, ttl: int = 300) -> None:
    server.add_mx("acme.test", 10, "mx1.acme.test", ttl=ttl)
    server.add("mx1.acme.test", "A", "127.0.0.2", ttl=ttl)


async def test_route_is_cached_second_route_sends_no_query(dns_server: DnsServer) -> None:
    declare_acme(dns_server)
    router = make_router(dns_server)
    first = await router.route("acme.test")
    asked = len(dns_server.queries)

    second = await router.route("acme.test")

    assert second == first
    assert len(dns_server.queries) == asked
    assert dns_server.count("acme.test", "MX") == 1


async def test_concurrent_routes_share_one_lookup(dns_server: DnsServer) -> None:
    declare_acme(dns_server)
    router = make_router(dns_server)

    routes = await asyncio.gather(*(router.route("acme.test") for _ in range(5)))

    assert len(set(routes)) == 1
    assert dns_server.count("acme.test", "MX") == 1
    assert dns_server.count("mx1.acme.test", "A") == 1


async def test_mx_host_shared_by_two_domains_is_resolved_once(dns_server: DnsServer) -> None:
    for domain in ("one.test", "two.test"):
        dns_server.add_mx(domain, 10, "mx.provider.test")
    dns_server.add("mx.provider.test", "A", "127.0.0.2")
    router = make_router(dns_server)

    await asyncio.gather(router.route("one.test"), router.route("two.test"))

    assert dns_server.count("mx.provider.test", "A") == 1


async def test_cached_route_expires_after_its_ttl(dns_server: DnsServer) -> None:
    declare_acme(dns_server, ttl=120)
    clock = FakeClock()
    router = make_router(dns_server, clock=clock)
    await router.route("acme.test")

    clock.now += 119
    await router.route("acme.test")
    assert dns_server.count("acme.test", "MX") == 1

    clock.now += 2
    await router.route("acme.test")
    assert dns_server.count("acme.test", "MX") == 2


async def test_short_ttl_is_cached_at_least_30_seconds(dns_server: DnsServer) -> None:
    declare_acme(dns_server, ttl=0)
    clock = FakeClock()
    router = make_router(dns_server, clock=clock)
    await router.route("acme.test")

    clock.now += 29
    await router.route("acme.test")
    assert dns_server.count("acme.test", "MX") == 1

    clock.now += 2
    await router.route("acme.test")
    assert dns_server.count("acme.test", "MX") == 2


async def test_long_ttl_is_cached_at_most_one_hour(dns_server: DnsServer) -> None:
    declare_acme(dns_server, ttl=86400)
    clock = FakeClock()
    router = make_router(dns_server, clock=clock)
    await router.route("acme.test")

    clock.now += 3601
    await router.route("acme.test")

    assert dns_server.count("acme.test", "MX") == 2


async def test_nxdomain_is_cached_five_minutes(dns_server: DnsServer) -> None:
    clock = FakeClock()
    router = make_router(dns_server, clock=clock)
    await router.route("nowhere.test")

    clock.now += 299
    assert (await router.route("nowhere.test")).kind is RouteKind.DOMAIN_NOT_FOUND
    assert dns_server.count("nowhere.test", "MX") == 1

    clock.now += 2
    await router.route("nowhere.test")
    assert dns_server.count("nowhere.test", "MX") == 2


async def test_cached_route_still_shuffles_equal_preferences(dns_server: DnsServer) -> None:
    for host in ("a", "b"):
        dns_server.add_mx("acme.test", 10, f"{host}.acme.test")
        dns_server.add(f"{host}.acme.test", "A", "127.0.0.2")
    router = make_router(dns_server, rng=random.Random(3))

    orders = {tuple(names(await router.route("acme.test"))) for _ in range(20)}

    assert len(orders) == 2
    assert dns_server.count("acme.test", "MX") == 1


# -- the fixture outside asyncio --------------------------------------------------------------


def test_router_works_from_a_plain_test_through_asyncio_run(dns_server: DnsServer) -> None:
    declare_acme(dns_server)

    route = asyncio.run(make_router(dns_server).route("acme.test"))

    assert route.deliverable


def test_dns_server_answers_a_subprocess(dns_server: DnsServer) -> None:
    # The CLI tests run `mailprobe verify` in a child process against this fixture.
    declare_acme(dns_server)
    script = (
        "import asyncio, json, sys\n"
        "from engine.mx import MailRouter\n"
        "from engine.settings import EngineSettings\n"
        "s = EngineSettings(helo_hostname='probe.test', **json.loads(sys.argv[1]))\n"
        "print(asyncio.run(MailRouter(s).route('acme.test')).hosts[0].addresses[0])\n"
    )
    settings = {"dns": dns_server.dns_settings(), "smtp": {"allowed_private_networks": LOOPBACK}}

    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    assert done.stdout.strip() == "127.0.0.2"
