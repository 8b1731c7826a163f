"""The store's answers under the user's control: results export, forget, recheck.

Real subprocesses against a real store file, the DNS and SMTP fakes, and the HubSpot fake.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailprobe.locks import pass_lock
from mailprobe.store import Store
from tests.fakes.dns import DnsServer
from tests.fakes.hubspot import TOKEN, FakeHubSpot
from tests.fakes.smtp import ScriptedSmtp, running_smtp_server
from tests.test_cli_daemon import clean_env, cli, engine_env, write_config


@pytest.fixture
def acme(dns_server: DnsServer) -> Iterator[tuple[DnsServer, ScriptedSmtp]]:
    """acme.test and other.test on 127.0.0.2: ann@, bob@ and joe@other.test are mailboxes."""
    for domain in ("acme.test", "other.test"):
        dns_server.add_mx(domain, 10, f"mx.{domain}")
        dns_server.add(f"mx.{domain}", "A", "127.0.0.2")
    smtp = ScriptedSmtp(
        "127.0.0.2",
        mailboxes={"ann@acme.test", "bob@acme.test", "joe@other.test", "=1+1@acme.test"},
    )
    with running_smtp_server(smtp) as server:
        yield dns_server, server


class Setup:
    """A config with a store (and a HubSpot connector when given) in tmp_path."""

    def __init__(self, tmp_path: Path, acme: tuple[DnsServer, ScriptedSmtp], hubspot=None):
        dns, smtp = acme
        self.dir = tmp_path
        self.smtp = smtp
        self.store = tmp_path / "state.db"
        connectors = {"drop": {"type": "csv", "folder": "drop", "settle_s": 0}}
        if hubspot is not None:
            connectors = {"crm": {"type": "hubspot", "base_url": hubspot.base_url}}
        self.config = write_config(
            tmp_path / "m.yaml", {"store": {"path": "state.db"}, "connectors": connectors}
        )
        token = {"MAILPROBE_CONNECTORS__CRM__ACCESS_TOKEN": TOKEN} if hubspot else {}
        self.env = clean_env(**token, **engine_env(dns, smtp.port))

    def run(self, *args: str):
        return cli("--config", str(self.config), *args, cwd=self.dir, env=self.env)

    def verified(self, *addresses: str) -> None:
        Store(self.store).close()
        done = self.run("verify", *addresses)
        assert done.returncode == 0, done.stderr

    def rows(self, sql: str) -> list[tuple]:
        with sqlite3.connect(self.store) as conn:
            return conn.execute(sql).fetchall()


# -- results export -------------------------------------------------------------------------


def test_export_prints_every_answer_as_csv(tmp_path: Path, acme) -> None:
    setup = Setup(tmp_path, acme)
    setup.verified("ann@acme.test", "zed@acme.test")

    done = setup.run("results", "export")

    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert {r["email"]: r["mailprobe_status"] for r in rows} == {
        "ann@acme.test": "valid",
        "zed@acme.test": "invalid",
    }
    assert all(r["mailprobe_next_check"] for r in rows)


def test_export_filters_by_status_and_writes_json_lines(tmp_path: Path, acme) -> None:
    setup = Setup(tmp_path, acme)
    setup.verified("ann@acme.test", "zed@acme.test", "not-an-address")

    done = setup.run("results", "export", "--status", "invalid", "--format", "jsonl")

    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(line["normalized"] for line in lines) == ["not-an-address", "zed@acme.test"]
    assert all(line["status"] == "invalid" and line["expires_at"].endswith("Z") for line in lines)


def test_export_since_keeps_only_newer_answers(tmp_path: Path, acme) -> None:
    setup = Setup(tmp_path, acme)
    setup.verified("ann@acme.test")

    recent = setup.run("results", "export", "--since", "1h", "--format", "jsonl")
    future = setup.run("results", "export", "--since", "2999-01-01", "--format", "jsonl")

    assert recent.returncode == 0 and future.returncode == 0, recent.stderr + future.stderr
    assert len(recent.stdout.splitlines()) == 1 and future.stdout == ""


def test_export_neutralises_cells_a_spreadsheet_would_run(tmp_path: Path, acme) -> None:
    setup = Setup(tmp_path, acme)
    setup.verified("=1+1@acme.test")

    done = setup.run("results", "export")

    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert rows[0]["email"] == "'=1+1@acme.test" and rows[0]["mailprobe_status"] == "valid"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "great"], "--status 'great' is not a status; use valid, invalid,"),
        (["--since", "last week"], "--since 'last week' is neither a date"),
    ],
)
def test_export_with_a_bad_filter_is_exit_2_saying_what_fits(
    tmp_path: Path, acme, args: list[str], message: str
) -> None:
    setup = Setup(tmp_path, acme)
    Store(setup.store).close()

    done = setup.run("results", "export", *args)

    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1


def test_export_without_a_store_is_exit_2_saying_so(tmp_path: Path, acme) -> None:
    setup = Setup(tmp_path, acme)

    done = setup.run("results", "export")

    assert done.returncode == 2 and "state.db: does not exist yet" in done.stderr
    assert not setup.store.exists()


# -- forget ---------------------------------------------------------------------------------


def store_bytes(setup: Setup) -> bytes:
    wal = setup.store.with_name(setup.store.name + "-wal")
    return setup.store.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def test_forget_removes_every_trace_of_an_address_from_the_store_file(
    tmp_path: Path, acme, hubspot_api: FakeHubSpot
) -> None:
    hubspot_api.add_contact("ann@acme.test")
    hubspot_api.add_contact("bob@acme.test")
    setup = Setup(tmp_path, acme, hubspot=hubspot_api)
    assert setup.run("sync").returncode == 0
    assert b"ann@acme.test" in store_bytes(setup)

    # The daemon keeps the store open: the write-ahead log then outlives the command.
    with sqlite3.connect(setup.store) as daemon:
        daemon.execute("SELECT count(*) FROM results").fetchone()
        done = setup.run("forget", "Ann@ACME.test")

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("forgot Ann@acme.test: 1 answers, 1 address forms, 0 queued,")
    assert "1 contacts" in done.stdout
    assert b"ann@acme.test" not in store_bytes(setup).lower()  # no copy in free pages or WAL
    assert setup.rows("SELECT email FROM contacts") == [("bob@acme.test",)]
    assert setup.rows("SELECT normalized FROM results") == [("bob@acme.test",)]


def test_forget_domain_removes_its_addresses_and_facts_only(tmp_path: Path, acme) -> None:
    setup = Setup(tmp_path, acme)
    setup.verified("ann@acme.test", "bob@acme.test", "joe@other.test")

    done = setup.run("forget", "--domain", "ACME.test")

    assert done.returncode == 0, done.stderr
    assert "forgot @acme.test: 2 answers, 2 address forms" in done.stdout
    assert "1 domain facts" in done.stdout
    assert setup.rows("SELECT normalized FROM results") == [("joe@other.test",)]
    assert setup.rows("SELECT domain FROM domains") == [("other.test",)]
    assert b"bob@acme.test" not in store_bytes(setup)


def test_forget_then_verify_asks_the_server_again(tmp_path: Path, acme) -> None:
    setup = Setup(tmp_path, acme)
    setup.verified("ann@acme.test")
    sessions = setup.smtp.session_count

    assert setup.run("forget", "ann@acme.test").returncode == 0
    setup.verified("ann@acme.test")

    assert setup.smtp.session_count > sessions


@pytest.mark.parametrize("args", [[], ["a@acme.test", "--domain", "acme.test"]])
def test_forget_needs_one_address_or_one_domain(tmp_path: Path, acme, args: list[str]) -> None:
    setup = Setup(tmp_path, acme)
    Store(setup.store).close()

    done = setup.run("forget", *args)

    assert done.returncode == 2 and "give one ADDRESS or --domain DOMAIN" in done.stderr


# -- recheck --------------------------------------------------------------------------------


def test_recheck_verifies_now_and_writes_the_new_answer_to_the_crm(
    tmp_path: Path, acme, hubspot_api: FakeHubSpot
) -> None:
    ann = hubspot_api.add_contact("ann@acme.test")
    bob = hubspot_api.add_contact("bob@acme.test")
    setup = Setup(tmp_path, acme, hubspot=hubspot_api)
    assert setup.run("sync").returncode == 0
    assert hubspot_api.contact(ann)["mailprobe_status"] == "valid"
    writes_to_bob = hubspot_api.writes[bob]
    setup.smtp.mailboxes.discard("ann@acme.test")  # ann left the company

    done = setup.run("recheck", "ann@acme.test")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "invalid"
    assert "crm: 1 contacts, written 1" in done.stderr
    assert hubspot_api.contact(ann)["mailprobe_status"] == "invalid"
    assert hubspot_api.contact(ann)["mailprobe_reason"] == "mailbox_not_found"
    assert hubspot_api.writes[bob] == writes_to_bob  # only the rechecked address is written
    assert setup.rows("SELECT status FROM results WHERE normalized = 'ann@acme.test'") == [
        ("invalid",)
    ]


def test_recheck_while_a_pass_runs_leaves_the_write_to_that_pass(
    tmp_path: Path, acme, hubspot_api: FakeHubSpot
) -> None:
    ann = hubspot_api.add_contact("ann@acme.test")
    setup = Setup(tmp_path, acme, hubspot=hubspot_api)
    assert setup.run("sync").returncode == 0
    setup.smtp.mailboxes.discard("ann@acme.test")

    with pass_lock(setup.store, "crm"):
        done = setup.run("recheck", "ann@acme.test")

    assert done.returncode == 0, done.stderr
    assert "a pass of it is running; that pass writes the answer" in done.stderr
    assert hubspot_api.contact(ann)["mailprobe_status"] == "valid"  # not yet
    assert setup.run("sync").returncode == 0
    assert hubspot_api.contact(ann)["mailprobe_status"] == "invalid"


def test_recheck_of_an_address_no_contact_holds_only_verifies(tmp_path: Path, acme) -> None:
    setup = Setup(tmp_path, acme)
    Store(setup.store).close()

    done = setup.run("recheck", "joe@other.test")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "valid"
    assert "no CRM contact holds this address" in done.stderr
    assert setup.rows("SELECT status FROM results") == [("valid",)]


def test_recheck_of_a_contact_uses_the_address_it_holds(
    tmp_path: Path, acme, hubspot_api: FakeHubSpot
) -> None:
    ann = hubspot_api.add_contact("ann@acme.test")
    setup = Setup(tmp_path, acme, hubspot=hubspot_api)
    assert setup.run("sync").returncode == 0
    setup.smtp.mailboxes.discard("ann@acme.test")

    done = setup.run("recheck", "--contact", f"crm:{ann}")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["email"] == "ann@acme.test"
    assert hubspot_api.contact(ann)["mailprobe_status"] == "invalid"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--contact", "crm:404"], "--contact crm:404: no such contact in the store"),
        (["--contact", "crm"], "--contact 'crm': give CONNECTOR:ID"),
        ([], "give one ADDRESS or --contact CONNECTOR:ID"),
    ],
)
def test_recheck_without_a_usable_address_is_exit_2_saying_why(
    tmp_path: Path, acme, args: list[str], message: str
) -> None:
    setup = Setup(tmp_path, acme)
    Store(setup.store).close()

    done = setup.run("recheck", *args)

    assert done.returncode == 2 and message in done.stderr, done.stderr
