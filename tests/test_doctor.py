"""`mailprobe doctor`: each check passes on a right sender set-up, names the fix on a broken one.

A real DNS server on 127.0.0.1 holds the sender's records (A, PTR, MX, SPF, a blocklist zone);
a real SMTP listener on 127.0.0.2 stands for a large provider's MX; HubSpot and SendGrid fakes
answer the credential checks. Nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mailprobe import notify as notify_module
from mailprobe.cli import main
from mailprobe.doctor import Outcome, Report, diagnose, preflight_line, run_doctor
from mailprobe.notify import Notifier
from mailprobe.settings import AppSettings, NotifySettings
from mailprobe.store import Store
from mailprobe.store_async import SQLiteAsyncStore
from tests.fakes.dns import DnsServer, HijackingDns, NxdomainDns, running_dns_server
from tests.fakes.hubspot import TOKEN, FakeHubSpot
from tests.fakes.sendgrid import API_KEY, SendGridFake
from tests.fakes.smtp import ScriptedSmtp, running_smtp_server, shared_port
from tests.fakes.webhook import WebhookReceiver
from tests.test_probe import socks5_proxy  # noqa: F401 - the SOCKS5 proxy fixture

SOURCE = "127.0.0.1"
PROVIDER_MX = "127.0.0.2"
HELO = "probe.sender.test"
Settings = Callable[..., AppSettings]


def sender_zone(dns: DnsServer) -> None:
    """A correctly set-up sender: A, PTR, MX and SPF for its source address."""
    dns.add(HELO, "A", SOURCE)
    dns.add("1.0.0.127.in-addr.arpa", "PTR", f"{HELO}.")
    dns.add_mx("sender.test", 10, "mx.sender.test")
    dns.add("mx.sender.test", "A", SOURCE)
    dns.add("sender.test", "TXT", f'"v=spf1 ip4:{SOURCE} -all"')
    dns.add("mx.bigmail.test", "A", PROVIDER_MX)


def settings_for(dns: DnsServer, port: int, tmp_path: Path, **override: Any) -> AppSettings:
    engine = {
        "helo_hostname": HELO,
        "mail_from": "bounce@sender.test",
        "dns": dns.dns_settings(timeout_s=1.0),
        "smtp": {"port": port, "source_addresses": [SOURCE], "connect_timeout_s": 2.0},
        **override.pop("engine", {}),
    }
    return AppSettings(
        engine=engine,
        store=override.pop("store", {"path": tmp_path / "state.db"}),
        connectors=override.pop("connectors", {}),
        doctor={"smtp_hosts": ["mx.bigmail.test"], "blocklists": ["bl.test"]},
        **override,
    )


@pytest.fixture
def provider() -> Iterator[ScriptedSmtp]:
    with running_smtp_server(ScriptedSmtp(PROVIDER_MX)) as server:
        yield server


@pytest.fixture
def world(dns_server: DnsServer, provider: ScriptedSmtp, tmp_path: Path) -> Settings:
    """Return settings(**override) for a sender that is set up right."""
    sender_zone(dns_server)
    return lambda **override: settings_for(dns_server, provider.port, tmp_path, **override)


def finding(report: Report, check: str) -> Any:
    (found,) = [f for f in report.findings if f.check == check]
    return found


# The whole report -------------------------------------------------------------------------------


async def test_doctor_on_a_correct_world_is_ready(world: Settings) -> None:
    report = await run_doctor(world())
    assert report.ready, [f.line() for f in report.findings]
    checks = {f.check: f.outcome for f in report.findings}
    for check in ("resolver", "port 25", "helo name", "mail from", "spf", "blocklists", "store"):
        assert checks[check] is Outcome.OK, check
    assert checks["dnssec"] is Outcome.WARN  # the fake does not validate


def test_doctor_command_exits_0_when_ready_and_prints_json(world: Settings, tmp_path: Path) -> None:
    config = tmp_path / "mailprobe.yaml"
    config.write_text(json.dumps(world().model_dump(mode="json")), encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(config), "doctor", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ready"] is True and data["findings"][0]["check"] == "resolver"
    status = CliRunner().invoke(main, ["--config", str(config), "status"])
    assert "doctor (" in status.output and "ready" in status.output


def test_doctor_command_exits_1_and_names_the_fix(world: Settings, tmp_path: Path) -> None:
    config = tmp_path / "mailprobe.yaml"
    broken = world(engine={"helo_hostname": "localhost.localdomain"})
    config.write_text(json.dumps(broken.model_dump(mode="json")), encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(config), "doctor"])
    assert result.exit_code == 1
    assert "[FAIL] helo name" in result.output and "fix: set engine.helo_hostname" in result.output
    status = CliRunner().invoke(main, ["--config", str(config), "status", "--json"])
    assert json.loads(status.output)["doctor"]["ready"] is False


# Resolver ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("lying", [NxdomainDns, HijackingDns])
async def test_doctor_resolver_fails_when_it_lies(
    lying: type[DnsServer], provider: ScriptedSmtp, tmp_path: Path
) -> None:
    with running_dns_server(lying) as dns:
        report = await diagnose(settings_for(dns, provider.port, tmp_path), cheap=True)
    found = finding(report, "resolver")
    assert found.outcome is Outcome.FAIL
    assert "engine.dns.nameservers" in found.fix
    assert not report.ready


async def test_doctor_resolver_that_times_out_fails(
    dns_server: DnsServer, provider: ScriptedSmtp, tmp_path: Path
) -> None:
    sender_zone(dns_server)
    dns_server.drop("canary.resolver.test")
    report = await diagnose(settings_for(dns_server, provider.port, tmp_path), cheap=True)
    assert finding(report, "resolver").outcome is Outcome.FAIL
    assert "no answer" in finding(report, "resolver").found


async def test_doctor_dnssec_ok_when_the_resolver_sets_the_ad_flag(
    provider: ScriptedSmtp, tmp_path: Path
) -> None:
    class ValidatingDns(DnsServer):
        def answer(self, request: Any) -> Any:
            reply = super().answer(request)
            reply.header.ad = 1
            return reply

    with running_dns_server(ValidatingDns) as dns:
        sender_zone(dns)
        report = await diagnose(settings_for(dns, provider.port, tmp_path), cheap=True)
    assert finding(report, "dnssec").outcome is Outcome.OK


# Port 25 ----------------------------------------------------------------------------------------


async def test_doctor_port_25_fails_when_no_provider_answers(
    dns_server: DnsServer, tmp_path: Path
) -> None:
    sender_zone(dns_server)
    port = shared_port([PROVIDER_MX])  # nothing listens there
    report = await diagnose(settings_for(dns_server, port, tmp_path))
    found = finding(report, "port 25")
    assert found.outcome is Outcome.FAIL
    assert "mx.bigmail.test" in found.found and "hosting provider" in found.fix


async def test_doctor_port_25_finds_the_source_address_when_none_is_configured(
    world: Settings, provider: ScriptedSmtp
) -> None:
    settings = world(engine={"smtp": {"port": provider.port, "source_addresses": []}})
    report = await diagnose(settings)
    found = finding(report, "port 25")
    assert found.outcome is Outcome.OK and "from any address" in found.found
    # The connection came from 127.0.0.1: the HELO and SPF checks judge that address.
    assert finding(report, "helo name").outcome is Outcome.OK
    assert "for 127.0.0.1: pass" in finding(report, "spf").found


async def test_doctor_port_25_goes_through_the_proxy_and_hides_its_password(
    world: Settings,
    provider: ScriptedSmtp,
    socks5_proxy: tuple[int, list[tuple[str, int]]],  # noqa: F811 - the fixture imported above
) -> None:
    proxy_port, targets = socks5_proxy
    proxy = f"socks5://user:s3cret@127.0.0.1:{proxy_port}"
    smtp = {"port": provider.port, "source_addresses": [SOURCE], "proxy": proxy}
    found = finding(await diagnose(world(engine={"smtp": smtp})), "port 25")
    assert found.outcome is Outcome.OK
    assert f"through proxy 127.0.0.1:{proxy_port}" in found.found and "s3cret" not in found.found
    assert targets == [(PROVIDER_MX, provider.port)]


# HELO name and forward-confirmed reverse DNS ----------------------------------------------------


async def test_doctor_helo_localhost_fails(world: Settings) -> None:
    report = await diagnose(world(engine={"helo_hostname": "localhost.localdomain"}), cheap=True)
    found = finding(report, "helo name")
    assert found.outcome is Outcome.FAIL and "engine.helo_hostname" in found.fix


async def test_doctor_helo_without_ptr_fails(world: Settings, dns_server: DnsServer) -> None:
    dns_server.add("nameless.sender.test", "A", SOURCE)
    report = await diagnose(world(engine={"helo_hostname": "nameless.sender.test"}), cheap=True)
    found = finding(report, "helo name")
    assert found.outcome is Outcome.FAIL
    assert "PTR of 127.0.0.1 is probe.sender.test" in found.found
    assert "set its PTR to nameless.sender.test" in found.fix


async def test_doctor_helo_not_resolving_to_the_source_fails(
    world: Settings, dns_server: DnsServer
) -> None:
    dns_server.add("elsewhere.sender.test", "A", "127.0.0.7")
    report = await diagnose(world(engine={"helo_hostname": "elsewhere.sender.test"}), cheap=True)
    found = finding(report, "helo name")
    assert found.outcome is Outcome.FAIL
    assert "not to the source address 127.0.0.1" in found.found
    assert "elsewhere.sender.test. IN A 127.0.0.1" in found.fix


async def test_doctor_source_without_ptr_fails(world: Settings, dns_server: DnsServer) -> None:
    dns_server.add(HELO, "A", "127.0.0.8")
    settings = world(engine={"smtp": {"source_addresses": ["127.0.0.8"]}})
    found = finding(await diagnose(settings, cheap=True), "helo name")
    assert found.outcome is Outcome.FAIL and "127.0.0.8 has no PTR record" in found.found


# MAIL FROM and SPF ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "outcome"),
    [("-all", Outcome.FAIL), ("~all", Outcome.WARN), ("?all", Outcome.WARN)],
)
async def test_doctor_spf_not_permitting_the_source(
    dns_server: DnsServer, provider: ScriptedSmtp, tmp_path: Path, policy: str, outcome: Outcome
) -> None:
    dns_server.add(HELO, "A", SOURCE)
    dns_server.add("1.0.0.127.in-addr.arpa", "PTR", f"{HELO}.")
    dns_server.add_mx("sender.test", 10, "mx.sender.test")
    dns_server.add("sender.test", "TXT", f'"v=spf1 ip4:192.0.2.1 {policy}"')
    report = await diagnose(settings_for(dns_server, provider.port, tmp_path), cheap=True)
    found = finding(report, "spf")
    assert found.outcome is outcome
    assert 'sender.test. IN TXT "v=spf1 ip4:127.0.0.1 -all"' in found.fix


async def test_doctor_mail_from_domain_that_does_not_exist_fails(world: Settings) -> None:
    report = await diagnose(world(engine={"mail_from": "bounce@nowhere.test"}), cheap=True)
    found = finding(report, "mail from")
    assert found.outcome is Outcome.FAIL
    assert "does not exist" in found.found and "engine.mail_from" in found.fix


# Blocklists -------------------------------------------------------------------------------------


async def test_doctor_listed_source_is_a_warning_with_the_listing_text(
    world: Settings, dns_server: DnsServer
) -> None:
    dns_server.add("1.0.0.127.bl.test", "A", "127.0.0.2")
    dns_server.add("1.0.0.127.bl.test", "TXT", '"Listed: see https://bl.test/q?ip=127.0.0.1"')
    report = await diagnose(world())
    found = finding(report, "blocklists")
    assert found.outcome is Outcome.WARN
    assert "listed on bl.test: Listed: see https://bl.test/q?ip=127.0.0.1" in found.found
    assert report.ready  # a listing warns; it does not stop verification


# Store, connectors, API keys --------------------------------------------------------------------


async def test_doctor_store_that_cannot_be_created_fails(world: Settings, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    report = await run_doctor(world(store={"path": tmp_path / "a-file" / "state.db"}))
    found = finding(report, "store")
    assert found.outcome is Outcome.FAIL and "store.path" in found.fix


async def test_doctor_keeps_its_report_for_status(world: Settings, tmp_path: Path) -> None:
    await run_doctor(world())
    with Store(tmp_path / "state.db") as store:
        kept = store.last_doctor_report()
    assert kept is not None and kept["ready"] is True


async def test_doctor_hubspot_token_missing_a_scope_is_named(
    world: Settings, hubspot_api: FakeHubSpot
) -> None:
    hubspot_api.scopes = {"crm.objects.contacts.read", "crm.objects.contacts.write"}
    crm = {"type": "hubspot", "access_token": TOKEN, "base_url": hubspot_api.base_url}
    found = finding(await diagnose(world(connectors={"crm": crm})), "connector crm")
    assert found.outcome is Outcome.FAIL
    assert "crm.schemas.contacts" in found.found and "scopes" in found.fix


async def test_doctor_hubspot_token_with_every_scope_is_ok(
    world: Settings, hubspot_api: FakeHubSpot
) -> None:
    crm = {"type": "hubspot", "access_token": TOKEN, "base_url": hubspot_api.base_url}
    found = finding(await diagnose(world(connectors={"crm": crm})), "connector crm")
    assert found.outcome is Outcome.OK


async def test_doctor_sendgrid_key_without_permission_fails(
    world: Settings, sendgrid_api: SendGridFake
) -> None:
    sendgrid_api.forbidden = True
    esp = {"type": "sendgrid", "api_key": API_KEY, "base_url": sendgrid_api.base_url}
    found = finding(await diagnose(world(connectors={"esp": esp})), "connector esp")
    assert found.outcome is Outcome.FAIL and "permission" in found.fix


async def test_doctor_sendgrid_key_that_works_is_ok(
    world: Settings, sendgrid_api: SendGridFake
) -> None:
    esp = {"type": "sendgrid", "api_key": API_KEY, "base_url": sendgrid_api.base_url}
    found = finding(await diagnose(world(connectors={"esp": esp})), "connector esp")
    assert found.outcome is Outcome.OK


async def test_doctor_api_open_beyond_loopback_without_keys_fails(world: Settings) -> None:
    report = await diagnose(world(api={"listen": "0.0.0.0:8080"}), cheap=True)
    found = finding(report, "api")
    assert found.outcome is Outcome.FAIL and "MAILPROBE_API__KEYS" in found.fix


async def test_doctor_api_with_keys_beyond_loopback_is_ok(world: Settings) -> None:
    report = await diagnose(world(api={"listen": "0.0.0.0:8080", "keys": ["k1"]}), cheap=True)
    assert finding(report, "api").outcome is Outcome.OK


# mailprobe run's pre-flight ---------------------------------------------------------------------


async def test_run_preflight_logs_one_line_and_keeps_the_report(
    world: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = world(engine={"helo_hostname": "localhost.localdomain"})
    with Store(tmp_path / "state.db") as store, caplog.at_level(logging.INFO):
        async with SQLiteAsyncStore.over(store) as verbs:
            report = await preflight_line(settings, verbs)
        kept = store.last_doctor_report()
    lines = [r.getMessage() for r in caplog.records if r.name == "mailprobe.doctor"]
    assert len(lines) == 1 and "not ready" in lines[0] and "engine.helo_hostname" in lines[0]
    assert kept is not None and kept["summary"] == report.summary()
    assert "port 25" not in {f.check for f in report.findings}  # cheap: no connection


async def test_run_preflight_that_fails_notifies_the_operator(
    world: Settings, tmp_path: Path, webhook_receiver: WebhookReceiver
) -> None:
    settings = world(engine={"helo_hostname": "localhost.localdomain"})
    notify_module.install(Notifier(NotifySettings(webhook_url=webhook_receiver.url)))
    try:
        with Store(tmp_path / "state.db") as store:
            async with SQLiteAsyncStore.over(store) as verbs:
                await preflight_line(settings, verbs)
                assert await asyncio.to_thread(webhook_receiver.wait_for, 1)
    finally:
        notify_module.install(None)
    assert webhook_receiver.events() == ["check_failed"]
    checks = webhook_receiver.received[0].json()["details"]["checks"]
    assert any("engine.helo_hostname" in (c["fix"] or "") for c in checks)
