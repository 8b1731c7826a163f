"""`mailprobe verify --config` waits out what servers defer, as a user runs it.

One list mixes a greylister that names no delay (postgrey), a per-minute recipient limit
(Postfix anvil), a slow greeting, a quoted local part and a gateway's 5.7.1 "user unknown":
every address a patient client can learn gets its final answer in one run of the real command,
with greylist waits from the config file. Real DNS and SMTP on loopback, the CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.dns import CANARY, DnsServer, running_dns_server
from tests.fakes.net import assert_no_message_sent
from tests.fakes.smtp import (
    AnvilSmtp,
    Misbehave,
    PostgreySmtp,
    ScriptedSmtp,
    Trick,
    running_smtp_server,
)
from tests.test_cli_verify import ROOT, jsonl, mailprobe, outcome

GREY, PACED, SLOW, GOOD = "127.0.7.1", "127.0.7.2", "127.0.7.3", "127.0.7.4"
PACED_PEOPLE = [f"user{n}@paced.test" for n in range(8)]

#: address -> (status, reason) a patient client learns.
EXPECTED: dict[str, tuple[str, str]] = {
    "ann@grey.test": ("valid", "accepted"),
    "bob@grey.test": ("invalid", "mailbox_not_found"),
    **{
        email: ("valid", "accepted") if n % 2 == 0 else ("invalid", "mailbox_not_found")
        for n, email in enumerate(PACED_PEOPLE)
    },
    "ann@slow.test": ("valid", "accepted"),
    '"alice"@good.test': ("valid", "accepted"),
    "gone@good.test": ("invalid", "mailbox_not_found"),
}

CONFIG = """\
engine:
  greylist:
    retry_delays_s: [0.5, 1.0]
    max_wait_s: 15
  deferral:
    rate_window_s: 1.5
    max_wait_s: 20
  smtp:
    connect_timeout_s: 0.5
    greeting_timeout_s: 5
    max_rcpt_per_session: 4
    max_sessions_per_host: 1
"""


def _gateway(recipient: str) -> str:
    """A filtering gateway: 5.7.1 for an unknown recipient, as appliances answer."""
    if recipient.lower() in ("alice@good.test", '"alice"@good.test'):
        return "250 2.1.5 Ok"
    return f"550 5.7.1 <{recipient}>: Recipient address rejected: User unknown"


def _servers() -> list[ScriptedSmtp]:
    slow = Misbehave("BANNER", Trick.DELAY, delay_s=1.2)
    return [
        PostgreySmtp(GREY, delay_s=1.0, mailboxes={"ann@grey.test"}),
        AnvilSmtp(PACED, window_s=1.5, rcpt_rate=3, mailboxes=PACED_PEOPLE[::2]),
        ScriptedSmtp(SLOW, mailboxes={"ann@slow.test"}, misbehave=[slow]),
        ScriptedSmtp(GOOD, rcpt=_gateway),
    ]


def _zone(dns: DnsServer) -> None:
    for domain, ip in (("grey", GREY), ("paced", PACED), ("slow", SLOW), ("good", GOOD)):
        dns.add_mx(f"{domain}.test", 10, f"mx.{domain}.test")
        dns.add(f"mx.{domain}.test", "A", ip)


@pytest.fixture(scope="module")
def deferring_world() -> Iterator[tuple[DnsServer, int, list[ScriptedSmtp]]]:
    servers = _servers()
    with running_dns_server() as dns, running_smtp_server(*servers) as first:
        _zone(dns)
        yield dns, first.port, servers
    assert_no_message_sent(servers)


def test_verify_with_greylist_waits_in_the_config_returns_every_final_answer(
    deferring_world: tuple[DnsServer, int, list[ScriptedSmtp]], tmp_path: Path
) -> None:
    dns, port, servers = deferring_world
    config = tmp_path / "mailprobe.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    listing = tmp_path / "mixed.txt"
    listing.write_text("\n".join(EXPECTED) + "\n", encoding="utf-8")
    env = {
        "MAILPROBE_ENGINE__HELO_HOSTNAME": "verifier.mailprobe.test",
        "MAILPROBE_ENGINE__DNS__NAMESERVERS": json.dumps([dns.host]),
        "MAILPROBE_ENGINE__DNS__PORT": str(dns.port),
        "MAILPROBE_ENGINE__DNS__CANARIES": json.dumps([CANARY]),
        "MAILPROBE_ENGINE__DNS__NXDOMAIN_ZONE": "test",
        "MAILPROBE_ENGINE__SMTP__PORT": str(port),
        "MAILPROBE_ENGINE__SMTP__ALLOWED_PRIVATE_NETWORKS": '["127.0.0.0/8"]',
        "MAILPROBE_ENGINE__SYNTAX__ALLOW_TEST_DOMAINS": "true",
        "MAILPROBE_LOG__LEVEL": "WARNING",
    }
    started = time.monotonic()
    run = mailprobe(
        "verify", "--config", str(config), "--file", str(listing), "--format", "jsonl",
        env={**_without_mailprobe_settings(), "PYTHONPATH": str(ROOT), **env}, cwd=tmp_path,
    )  # fmt: skip
    elapsed = time.monotonic() - started

    assert run.returncode == 0, run.stderr
    got = {data["email"]: outcome(data) for data in jsonl(run.stdout)}
    wrong = {email: (got.get(email), want) for email, want in EXPECTED.items()}
    wrong = {email: pair for email, pair in wrong.items() if pair[0] != pair[1]}
    assert not wrong, wrong
    grey, anvil, *_ = servers
    assert isinstance(grey, PostgreySmtp) and grey.deferred >= 2  # it did greylist us
    assert isinstance(anvil, AnvilSmtp) and anvil.crowded == 0 and anvil.violations <= 2
    assert elapsed < 60  # bounded by the config's waits, not by the servers' patience


def _without_mailprobe_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILPROBE_")}
