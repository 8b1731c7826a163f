"""`mailprobe verify` in a subprocess, against DNS and SMTP fakes running in threads on loopback.

The module starts one small internet: a DNS server whose zones cover every scenario of the engine
and a set of scripted SMTP servers on 127.0.4.x (and ::1), all on one port. The CLI reaches them
through MAILPROBE_* environment variables (or a --config YAML file), as a user would.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mailprobe.connectors.fields import FIELD_NAMES

from tests.fakes.dns import DnsServer, running_dns_server
from tests.fakes.net import assert_no_message_sent
from tests.fakes.smtp import (
    CatchAllSmtp,
    GreylistingSmtp,
    HeloOnlySmtp,
    Misbehave,
    ScriptedSmtp,
    Trick,
    running_smtp_server,
)

ROOT = Path(__file__).resolve().parents[1]
HELO = "probe.mailprobe.test"

# One server per behaviour; 127.0.4.99 has none, so connecting there is refused.
ACME, CATCH_ALL, GREY_ONCE, GREY_ALWAYS, TARPIT = (f"127.0.4.{n}" for n in range(1, 6))
BLOCKER, NO_UTF8, HELO_ONLY, TLS, BUSY, GOOD = (f"127.0.4.{n}" for n in range(6, 12))
ENDLESS, HUGE, DROPPER, NOBODY_HOME = "127.0.4.12", "127.0.4.13", "127.0.4.14", "127.0.4.99"

ACME_RCPT = {
    "off@acme.test": "550 5.2.1 <off@acme.test>: mailbox disabled",
    "full@acme.test": "552 5.2.2 <full@acme.test>: Mailbox full",
    "later@acme.test": "451 4.3.0 Temporary local problem, please try again",
}
GOOD_MAILBOXES = {
    "anna@xn--bcher-kva.test",
    "john@fallback.test",
    "john@refused.test",
    "john@implicit.test",
    "john@ms365.test",
    "jane@gmail.com",
    "john@six.test",
}


def _block_the_made_up_address(recipient: str) -> str:
    if recipient.startswith("john@"):
        return "250 2.1.5 Ok"
    return "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org"


def _every_rcpt(trick: Trick) -> list[Misbehave]:
    """Return the trick for the first RCPTs of every session (the made-up address's included)."""
    return [Misbehave("RCPT", trick, nth=n) for n in (1, 2, 3, 4)]


def _servers() -> list[ScriptedSmtp]:
    return [
        ScriptedSmtp(ACME, mailboxes={"john@acme.test", "sales@acme.test"}, rcpt=ACME_RCPT.get),
        CatchAllSmtp(CATCH_ALL),
        GreylistingSmtp(GREY_ONCE, times=1, mailboxes={"john@grey-once.test"}),
        GreylistingSmtp(GREY_ALWAYS, times=100, mailboxes={"john@grey-always.test"}),
        ScriptedSmtp(TARPIT, misbehave=[Misbehave("BANNER", Trick.STALL)]),
        ScriptedSmtp(BLOCKER, rcpt=_block_the_made_up_address),
        ScriptedSmtp(NO_UTF8, smtputf8=False, mailboxes={"jörg@old.test"}),
        HeloOnlySmtp(HELO_ONLY, mailboxes={"john@helo.test"}),
        ScriptedSmtp(TLS, tls=True, mailboxes={"john@tls.test"}),
        ScriptedSmtp(BUSY, replies={"BANNER": "421 4.3.2 Service shutting down"}),
        ScriptedSmtp(GOOD, mailboxes=GOOD_MAILBOXES),
        ScriptedSmtp(ENDLESS, misbehave=_every_rcpt(Trick.ENDLESS)),
        ScriptedSmtp(HUGE, misbehave=_every_rcpt(Trick.HUGE_LINE)),
        ScriptedSmtp(DROPPER, misbehave=_every_rcpt(Trick.DROP)),
        ScriptedSmtp("::1", mailboxes=GOOD_MAILBOXES),
    ]  # fmt: skip


def _zone(dns: DnsServer) -> None:
    """Declare every scenario's domain."""

    def mx(domain: str, *hosts: tuple[str, str]) -> None:
        for rank, (name, ip) in enumerate(hosts):
            dns.add_mx(domain, 10 * (rank + 1), name)
            dns.add(name, "AAAA" if ":" in ip else "A", ip)

    mx("acme.test", ("mx.acme.test", ACME))
    mx("catchall.test", ("mx.catchall.test", CATCH_ALL))
    mx("grey-once.test", ("mx.grey-once.test", GREY_ONCE))
    mx("grey-always.test", ("mx.grey-always.test", GREY_ALWAYS))
    mx("tarpit.test", ("mx.tarpit.test", TARPIT))
    mx("blocked.test", ("mx.blocked.test", BLOCKER))
    mx("old.test", ("mx.old.test", NO_UTF8))
    mx("helo.test", ("mx.helo.test", HELO_ONLY))
    mx("tls.test", ("mx.tls.test", TLS))
    mx("fallback.test", ("mx1.fallback.test", BUSY), ("mx2.fallback.test", GOOD))
    mx("refused.test", ("mx1.refused.test", NOBODY_HOME), ("mx2.refused.test", GOOD))
    mx("down.test", ("mx1.down.test", NOBODY_HOME), ("mx2.down.test", "127.0.4.98"))
    mx("endless.test", ("mx.endless.test", ENDLESS))
    mx("huge.test", ("mx.huge.test", HUGE))
    mx("drop.test", ("mx.drop.test", DROPPER))
    mx("six.test", ("mx.six.test", "::1"))
    mx("xn--bcher-kva.test", ("mx.xn--bcher-kva.test", GOOD))
    mx("ms365.test", ("ms365-test.mail.protection.outlook.com", GOOD))
    mx("gmail.com", ("gmail-smtp-in.l.google.com", GOOD))
    mx("ymail-like.test", ("mta5.am0.yahoodns.net", CATCH_ALL))
    mx("mailinator.com", ("mail.mailinator.com", CATCH_ALL))
    mx("intranet.test", ("mx.intranet.test", "10.1.2.3"))  # private, not allowed
    dns.add("implicit.test", "A", GOOD)  # no MX: the domain's own address
    dns.add_mx("nullmx.test", 0, ".")
    dns.add("bare.test", "TXT", '"v=spf1 -all"')  # exists, but neither MX nor address
    dns.servfail("servfail.test")


#: address -> (status, reason): every outcome the engine gives, in one mixed list.
MIXED: dict[str, tuple[str, str]] = {
    # syntax and route
    "not-an-address": ("invalid", "invalid_syntax"),
    "john@nowhere.test": ("invalid", "domain_not_found"),
    "jane@gmial.com": ("invalid", "domain_not_found"),
    "john@nullmx.test": ("invalid", "null_mx"),
    "john@bare.test": ("invalid", "no_mail_server"),
    "john@intranet.test": ("invalid", "unroutable_mx"),
    "john@servfail.test": ("unknown", "dns_error"),
    "john@implicit.test": ("valid", "accepted"),
    "anna@bücher.test": ("valid", "accepted"),
    "john@six.test": ("valid", "accepted"),
    # SMTP paths
    "john@acme.test": ("valid", "accepted"),
    "nobody@acme.test": ("invalid", "mailbox_not_found"),
    "off@acme.test": ("invalid", "mailbox_disabled"),
    "full@acme.test": ("risky", "mailbox_full"),
    "later@acme.test": ("unknown", "temporary_failure"),
    "sales@acme.test": ("risky", "role_account"),
    "john@fallback.test": ("valid", "accepted"),
    "john@refused.test": ("valid", "accepted"),
    "john@down.test": ("unknown", "connection_failed"),
    "john@helo.test": ("valid", "accepted"),
    "john@tls.test": ("valid", "accepted"),
    "jörg@old.test": ("unknown", "protocol_error"),
    "anyone@catchall.test": ("catch_all", "accept_all"),
    "john@blocked.test": ("unknown", "blocked"),
    "john@grey-once.test": ("valid", "accepted"),
    "john@grey-always.test": ("unknown", "greylisted"),
    # hostile servers
    "john@tarpit.test": ("unknown", "timeout"),
    "john@endless.test": ("unknown", "protocol_error"),
    "john@huge.test": ("unknown", "protocol_error"),
    "john@drop.test": ("unknown", "connection_failed"),
    # enrichment
    "john@ymail-like.test": ("unknown", "unverifiable_provider"),
    "john@mailinator.com": ("risky", "disposable"),
    "john@ms365.test": ("valid", "accepted"),
    "jane@gmail.com": ("valid", "accepted"),
}


@dataclass(frozen=True, slots=True)
class World:
    """The running fakes: DNS and the SMTP servers' shared port."""

    dns: DnsServer
    smtp_port: int
    servers: tuple[ScriptedSmtp, ...]

    def env(self, **extra: str) -> dict[str, str]:
        """Return an environment pointing `mailprobe` at the fakes (and nothing of ours)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPROBE_")}
        env.update(
            PYTHONPATH=str(ROOT),
            MAILPROBE_ENGINE__HELO_HOSTNAME=HELO,
            MAILPROBE_ENGINE__DNS__NAMESERVERS=json.dumps([self.dns.host]),
            MAILPROBE_ENGINE__DNS__PORT=str(self.dns.port),
            MAILPROBE_ENGINE__DNS__TIMEOUT_S="3",
            MAILPROBE_ENGINE__SMTP__PORT=str(self.smtp_port),
            MAILPROBE_ENGINE__SMTP__CONNECT_TIMEOUT_S="1",
            MAILPROBE_ENGINE__SMTP__COMMAND_TIMEOUT_S="1",
            MAILPROBE_ENGINE__SMTP__ALLOWED_PRIVATE_NETWORKS='["127.0.0.0/8", "::1/128"]',
            MAILPROBE_ENGINE__GREYLIST__RETRY_DELAYS_S="[0.1]",
            MAILPROBE_ENGINE__GREYLIST__MAX_WAIT_S="2",
            MAILPROBE_ENGINE__SYNTAX__ALLOW_TEST_DOMAINS="true",
            MAILPROBE_LOG__LEVEL="WARNING",
        )
        env.update(extra)
        return env


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """Start the DNS server and every SMTP server in threads for the whole module."""
    servers = _servers()
    with running_dns_server() as dns, running_smtp_server(*servers) as first:
        _zone(dns)
        yield World(dns, first.port, tuple(servers))
    assert_no_message_sent(servers)


def _command() -> list[str]:
    """Return how to run `mailprobe`: the installed console script, else the same entry point."""
    script = Path(sys.executable).with_name("mailprobe")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from mailprobe.cli import main; main(prog_name='mailprobe')"]


def mailprobe(
    *args: str, env: dict[str, str], cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `mailprobe ARGS` and return what it did (never raises for its exit code)."""
    return subprocess.run(
        [*_command(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        cwd=cwd,
        timeout=120,
    )


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def outcome(data: dict[str, Any]) -> tuple[str, str]:
    return (data["status"], data["reason"])


def one_line_error(run: subprocess.CompletedProcess[str]) -> str:
    """Return the single stderr line of a usage error, checking its shape on the way."""
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    return lines[0]


# Output shapes --------------------------------------------------------------------------------


def test_verify_one_address_prints_one_json_object(world: World, tmp_path: Path) -> None:
    run = mailprobe("verify", "john@acme.test", env=world.env(), cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert isinstance(data, dict)
    assert list(data) == [
        "email", "normalized", "status", "reason", "action", "score", "checks",
        "suggestion", "verified_at", "response_time_ms",
    ]  # fmt: skip
    assert outcome(data) == ("valid", "accepted") and data["action"] == "send"
    assert list(data["checks"]) == [
        "syntax", "domain", "mx_record", "smtp", "disposable", "catch_all", "role", "free",
    ]  # fmt: skip
    assert data["checks"]["smtp"]["mx_host"] == "mx.acme.test"
    assert data["verified_at"].endswith("Z")


def test_verify_several_addresses_as_jsonl_prints_one_object_per_line(
    world: World, tmp_path: Path
) -> None:
    run = mailprobe(
        "verify", "john@acme.test", "nobody@acme.test", "--format", "jsonl",
        env=world.env(), cwd=tmp_path,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr
    results = {d["email"]: outcome(d) for d in jsonl(run.stdout)}
    assert results == {
        "john@acme.test": ("valid", "accepted"),
        "nobody@acme.test": ("invalid", "mailbox_not_found"),
    }


def test_verify_several_addresses_as_json_prints_an_array(world: World, tmp_path: Path) -> None:
    run = mailprobe("verify", "john@acme.test", "x@nowhere.test", env=world.env(), cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert isinstance(data, list) and len(data) == 2


def test_verify_file_reads_one_address_per_line(world: World, tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("john@acme.test\n\nnobody@acme.test\njohn@nullmx.test\n", encoding="utf-8")

    run = mailprobe(
        "verify", "--file", str(listing), "--format", "jsonl", env=world.env(), cwd=tmp_path
    )

    assert run.returncode == 0, run.stderr
    assert sorted(outcome(d) for d in jsonl(run.stdout)) == [
        ("invalid", "mailbox_not_found"),
        ("invalid", "null_mx"),
        ("valid", "accepted"),
    ]


def test_verify_csv_keeps_input_order_and_columns_and_appends_mailprobe_columns(
    world: World, tmp_path: Path
) -> None:
    table = tmp_path / "leads.csv"
    rows = [
        ["Name", "Email", "Company"],
        ["Tarpit Tom", "john@tarpit.test", "Slow Inc"],  # finishes last, must stay first
        ["John", "john@acme.test", "Acme, Ltd"],
        ["Nobody", "nobody@acme.test", "Acme"],
        ["Broken", "not-an-address", ""],
    ]
    with table.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)

    run = mailprobe(
        "verify", "--file", str(table), "--format", "csv", env=world.env(), cwd=tmp_path
    )

    assert run.returncode == 0, run.stderr
    out = list(csv.reader(io.StringIO(run.stdout)))
    assert out[0] == [*rows[0], *FIELD_NAMES]
    assert [row[:3] for row in out[1:]] == rows[1:]
    status = out[0].index("mailprobe_status")
    assert [row[status] for row in out[1:]] == ["unknown", "valid", "invalid", "invalid"]


def test_verify_file_dash_reads_stdin(world: World, tmp_path: Path) -> None:
    run = mailprobe(
        "verify", "--file", "-", "--format", "jsonl",
        env=world.env(), cwd=tmp_path, stdin="john@acme.test\nnobody@acme.test\n",
    )  # fmt: skip

    assert run.returncode == 0, run.stderr
    assert sorted(d["email"] for d in jsonl(run.stdout)) == ["john@acme.test", "nobody@acme.test"]


def test_verify_reads_settings_from_a_config_file(world: World, tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(
        "engine:\n"
        f"  helo_hostname: {HELO}\n"
        f"  dns: {{nameservers: ['{world.dns.host}'], port: {world.dns.port}}}\n"
        "  smtp:\n"
        f"    port: {world.smtp_port}\n"
        "    allowed_private_networks: ['127.0.0.0/8']\n"
        "  syntax: {allow_test_domains: true}\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in world.env().items() if not k.startswith("MAILPROBE_ENGINE")}

    run = mailprobe("--config", str(config), "verify", "john@acme.test", env=env, cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    assert outcome(json.loads(run.stdout)) == ("valid", "accepted")


def test_environment_overrides_the_config_file(world: World, tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("engine:\n  smtp:\n    port: 9\n", encoding="utf-8")

    run = mailprobe(
        "--config", str(config), "verify", "john@acme.test", env=world.env(), cwd=tmp_path
    )

    assert run.returncode == 0, run.stderr
    assert outcome(json.loads(run.stdout)) == ("valid", "accepted")


# The mixed list: every scenario in one run ---------------------------------------------------


def test_mixed_list_verifies_every_scenario_in_one_file_run(world: World, tmp_path: Path) -> None:
    listing = tmp_path / "mixed.txt"
    listing.write_text("\n".join(MIXED) + "\n", encoding="utf-8")
    env = world.env(MAILPROBE_POLICY__ROLE_IS_RISKY="true")

    run = mailprobe("verify", "--file", str(listing), "--format", "jsonl", env=env, cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    results = {d["email"]: d for d in jsonl(run.stdout)}
    assert sorted(results) == sorted(MIXED)
    got = {email: outcome(data) for email, data in results.items()}
    wrong = {e: (got[e], want) for e, want in MIXED.items() if got[e] != want}
    assert not wrong, wrong
    smtp = {email: data["checks"]["smtp"] for email, data in results.items()}
    assert smtp["john@tls.test"]["tls"] is True and smtp["john@acme.test"]["tls"] is False
    assert smtp["john@ms365.test"]["smtp_provider"] == "Microsoft 365"
    assert smtp["john@fallback.test"]["mx_host"] == "mx2.fallback.test"
    assert smtp["john@refused.test"]["mx_host"] == "mx2.refused.test"
    assert smtp["anyone@catchall.test"]["is_catch_all"] is True
    assert smtp["not-an-address"] is None and smtp["john@intranet.test"] is None
    assert results["jane@gmial.com"]["suggestion"] == "jane@gmail.com"
    assert results["anna@bücher.test"]["normalized"] == "anna@xn--bcher-kva.test"
    assert results["jane@gmail.com"]["checks"]["free"] is True
    assert results["sales@acme.test"]["checks"]["role"] is True
    assert results["john@mailinator.com"]["checks"]["disposable"] is True
    assert all(0 <= data["score"] <= 100 for data in results.values())


def test_mixed_list_never_reaches_unroutable_or_accept_all_provider_servers(
    world: World, tmp_path: Path
) -> None:
    catch_all = next(s for s in world.servers if s.host == CATCH_ALL)
    before = catch_all.session_count
    listing = tmp_path / "providers.txt"
    listing.write_text("john@ymail-like.test\njohn@mailinator.com\n", encoding="utf-8")

    run = mailprobe("verify", "--file", str(listing), "-q", env=world.env(), cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    assert catch_all.session_count == before


# Exit codes -----------------------------------------------------------------------------------


def test_exit_code_is_0_whatever_the_statuses(world: World, tmp_path: Path) -> None:
    run = mailprobe(
        "verify", "not-an-address", "john@nullmx.test", "john@servfail.test",
        env=world.env(), cwd=tmp_path,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr
    assert {d["status"] for d in json.loads(run.stdout)} == {"invalid", "unknown"}


def test_bad_config_key_exits_2_naming_the_key(world: World, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("engine:\n  smtp:\n    prot: 2525\n", encoding="utf-8")

    run = mailprobe(
        "--config", str(config), "verify", "john@acme.test", env=world.env(), cwd=tmp_path
    )

    assert "engine.smtp.prot" in one_line_error(run)


def test_bad_environment_value_exits_2_naming_the_setting(world: World, tmp_path: Path) -> None:
    env = world.env(MAILPROBE_ENGINE__SMTP__PORT="not-a-port")

    run = mailprobe("verify", "john@acme.test", env=env, cwd=tmp_path)

    assert "engine.smtp.port" in one_line_error(run)


def test_missing_input_file_exits_2_naming_the_file(world: World, tmp_path: Path) -> None:
    run = mailprobe("verify", "--file", "nothere.txt", env=world.env(), cwd=tmp_path)

    assert "nothere.txt" in one_line_error(run)


def test_missing_config_file_exits_2_naming_the_file(world: World, tmp_path: Path) -> None:
    run = mailprobe(
        "--config", "absent.yaml", "verify", "john@acme.test", env=world.env(), cwd=tmp_path
    )

    assert "absent.yaml" in one_line_error(run)


def test_no_addresses_exits_2_saying_what_to_give(world: World, tmp_path: Path) -> None:
    run = mailprobe("verify", env=world.env(), cwd=tmp_path)

    assert "--file" in one_line_error(run)
