"""Hostile input (issue 11): servers, files, tokens and callers that try to break or misuse us.

Each test plays the attacker or the careless colleague over real sockets and real files: a
server answering with bytes that are not UTF-8, a symlink in the drop folder, a token with a
newline, an IPv6 form of an internal address, a page in a browser rebinding DNS to the API.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from ipaddress import ip_network
from pathlib import Path

import pytest
import yaml
from mailprobe.connectors.csvdrop import DropFolder
from mailprobe.engine import EngineSettings, Verifier
from mailprobe.engine.mx import is_contactable

from mailprobe import api
from mailprobe.api import server as api_server
from mailprobe.logs import configure as configure_logging
from mailprobe.pipeline import CrmConnector, Pipeline
from mailprobe.store import RunCounts, RunOutcome, Store
from tests.fakes.dns import DnsServer, DroppingDns, running_dns_server
from tests.fakes.hubspot import TOKEN as HUBSPOT_TOKEN
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.net import Net
from tests.fakes.pipeline import Clock, FakeVerifier, crm_with, csv_drop, drop_in, read_output
from tests.fakes.smtp import ScriptedSmtp, running_smtp_server
from tests.test_api import Start, app_settings, serving, start_api  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[1]
MX_IP = "127.0.0.2"
#: A refusal whose text holds bytes that are not UTF-8, a terminal escape and a NUL.
HOSTILE_REPLY = "550 5.1.1 <bad@acme.test> unknown \udcff\udcfe user \x1b[2J\x00 gone"


def _hostile_rcpt(recipient: str) -> str | None:
    return HOSTILE_REPLY if recipient.startswith("bad@") else None


def _hostile_server(host: str = MX_IP) -> ScriptedSmtp:
    return ScriptedSmtp(host, mailboxes={"john@acme.test"}, rcpt=_hostile_rcpt)


def _engine(dns: DnsServer, port: int) -> EngineSettings:
    return EngineSettings(
        helo_hostname="probe.example.test",
        dns=dns.dns_settings(timeout_s=2),
        smtp={"port": port, "allowed_private_networks": ["127.0.0.0/8"]},
        syntax={"allow_test_domains": True},
    )


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """Run `mailprobe ARGS`, output kept as bytes so a test can check they are UTF-8."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MAILPROBE_")}
    command = [sys.executable, "-c", "from mailprobe.cli import main; main(prog_name='mailprobe')"]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        env={**base, "PYTHONPATH": str(ROOT), **env},
        cwd=cwd,
        timeout=120,
    )


@pytest.fixture(scope="module")
def hostile_world() -> Iterator[dict[str, str]]:
    """Yield the environment of a world whose acme.test MX answers with non-UTF-8 bytes."""
    server = _hostile_server()
    with running_dns_server() as dns, running_smtp_server(server) as first:
        dns.add_mx("acme.test", 10, "mx.acme.test")
        dns.add("mx.acme.test", "A", MX_IP)
        yield {
            "MAILPROBE_ENGINE__HELO_HOSTNAME": "probe.example.test",
            "MAILPROBE_ENGINE__DNS__NAMESERVERS": json.dumps([dns.host]),
            "MAILPROBE_ENGINE__DNS__PORT": str(dns.port),
            "MAILPROBE_ENGINE__SMTP__PORT": str(first.port),
            "MAILPROBE_ENGINE__SMTP__ALLOWED_PRIVATE_NETWORKS": '["127.0.0.0/8"]',
            "MAILPROBE_ENGINE__SYNTAX__ALLOW_TEST_DOMAINS": "true",
            "MAILPROBE_LOG__LEVEL": "WARNING",
        }
    assert "DATA" not in server.commands


@pytest.fixture
def acme_world(hostile_world: dict[str, str]) -> dict[str, str]:
    """Return the hostile world's environment, for tests that only need john@acme.test."""
    return hostile_world


# 1. Reply bytes that are not UTF-8 ----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_non_utf8_reply_still_gives_valid_utf8_json_from_verify(
    hostile_world: dict[str, str], tmp_path: Path, fmt: str
) -> None:
    run = _cli(
        "verify", "--format", fmt, "bad@acme.test", "john@acme.test",
        env=hostile_world, cwd=tmp_path,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr.decode("utf-8", "replace")
    text = run.stdout.decode("utf-8")  # strict: raises on any byte that is not UTF-8
    results = (
        [json.loads(line) for line in text.splitlines()] if fmt == "jsonl" else json.loads(text)
    )
    by_email = {result["email"]: result for result in results}
    bad = by_email["bad@acme.test"]
    assert (bad["status"], bad["reason"]) == ("invalid", "mailbox_not_found")
    message = bad["checks"]["smtp"]["response_message"]
    assert "\ufffd\ufffd user" in message and "\x1b" not in message and "\x00" not in message
    assert by_email["john@acme.test"]["status"] == "valid"


async def test_non_utf8_reply_never_fails_an_api_batch(start_api: Start) -> None:  # noqa: F811
    served = await start_api(smtp=_hostile_server())

    response = await served.client.post(
        "/v1/verify/batch", json={"emails": ["bad@acme.test", "john@acme.test"]}
    )

    assert response.status_code == 200, response.text
    first, second = response.json()
    assert (first["status"], first["reason"]) == ("invalid", "mailbox_not_found")
    assert "\ufffd" in first["checks"]["smtp"]["response_message"]
    assert second["status"] == "valid"


async def test_non_utf8_reply_never_blocks_the_drop_folder(
    tmp_path: Path, dns_server: DnsServer, smtp_server: Callable[..., Awaitable[ScriptedSmtp]]
) -> None:
    smtp = await smtp_server(_hostile_server())
    dns_server.add_mx("acme.test", 10, "mx.acme.test")
    dns_server.add("mx.acme.test", "A", MX_IP)
    drop_in(tmp_path, "a.csv", [("email",), ("bad@acme.test",)])
    drop_in(tmp_path, "b.csv", [("email",), ("john@acme.test",)])

    with Store(tmp_path / "state.db") as store:
        async with Verifier(_engine(dns_server, smtp.port)) as verifier:
            report = await Pipeline(store, verifier).run_pass(csv_drop(tmp_path))
        cached = store.cached("bad@acme.test")

    assert report.outcome is RunOutcome.OK, report.error
    [bad] = read_output(tmp_path, "a.verified.csv")
    assert bad["mailprobe_status"] == "invalid" and "\ufffd" in bad["mailprobe_smtp_reply"]
    assert [row["mailprobe_status"] for row in read_output(tmp_path, "b.verified.csv")] == ["valid"]
    assert cached is not None
    assert "\x1b" not in json.dumps(cached.result.to_json(), ensure_ascii=False)
    cached.result.to_json()["checks"]["smtp"]["response_message"].encode("utf-8")


async def test_file_removed_between_listing_and_reading_does_not_block_the_others(
    tmp_path: Path,
) -> None:
    clock = Clock()
    for name in ("a.csv", "b.csv", "c.csv"):
        drop_in(tmp_path, name, [("email",), (f"ann@{name[0]}.test",)])
    verifier = FakeVerifier(clock)
    # While a.csv is verified someone deletes b.csv, which the pass has already listed.
    verifier.after_each = lambda count: (tmp_path / "drop" / "inbox" / "b.csv").unlink(
        missing_ok=True
    )

    with Store(tmp_path / "state.db") as store:
        report = await Pipeline(store, verifier, clock=clock).run_pass(csv_drop(tmp_path))

    assert report.outcome is RunOutcome.OK, report.error
    assert read_output(tmp_path, "c.verified.csv")[0]["mailprobe_status"] == "valid"
    assert (tmp_path / "drop" / "archive" / "c.csv").exists()


# 2. Symlinks and other non-files in the drop folder ----------------------------------------


async def test_symlink_in_inbox_is_refused_and_its_target_never_read(tmp_path: Path) -> None:
    private = tmp_path / "private.csv"
    private.write_text("email,ssn\nceo@secret.test,123-45-6789\n", encoding="utf-8")
    drop_in(tmp_path, "ok.csv", [("email",), ("ann@a.test",)])
    link = tmp_path / "drop" / "inbox" / "x.csv"
    link.symlink_to(private)
    os.utime(link, (1, 1), follow_symlinks=False)  # settled long ago
    clock = Clock()
    verifier = FakeVerifier(clock)

    with Store(tmp_path / "state.db") as store:
        report = await Pipeline(store, verifier, clock=clock).run_pass(csv_drop(tmp_path))

    assert report.outcome is RunOutcome.OK, report.error
    assert "ceo@secret.test" not in verifier.seen
    assert not (tmp_path / "drop" / "outbox" / "x.verified.csv").exists()
    note = (tmp_path / "drop" / "failed" / "x.csv.error.txt").read_text(encoding="utf-8")
    assert "symbolic link" in note and "ssn" not in note and "secret" not in note
    assert private.read_text(encoding="utf-8").startswith("email,ssn")  # untouched
    assert read_output(tmp_path, "ok.verified.csv")[0]["mailprobe_status"] == "valid"


async def test_symlinked_outbox_stops_the_pass_with_a_clear_message(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    drop_in(tmp_path, "a.csv", [("email",), ("ann@a.test",)])
    outbox = tmp_path / "drop" / "outbox"
    outbox.rmdir()
    outbox.symlink_to(elsewhere, target_is_directory=True)
    clock = Clock()

    with Store(tmp_path / "state.db") as store:
        report = await Pipeline(store, FakeVerifier(clock), clock=clock).run_pass(
            csv_drop(tmp_path)
        )

    assert report.outcome is RunOutcome.FAILED
    assert "outbox is a symbolic link" in (report.error or "")
    assert list(elsewhere.iterdir()) == []
    assert (tmp_path / "drop" / "inbox" / "a.csv").exists()  # kept for when it is fixed


async def test_failure_note_never_quotes_the_files_contents(tmp_path: Path) -> None:
    drop_in(tmp_path, "people.csv", [("name", "ssn"), ("Ann", "123-45-6789")])
    clock = Clock()

    with Store(tmp_path / "state.db") as store:
        await Pipeline(store, FakeVerifier(clock), clock=clock).run_pass(csv_drop(tmp_path))

    note = (tmp_path / "drop" / "failed" / "people.csv.error.txt").read_text(encoding="utf-8")
    assert "no email column" in note and "ssn" not in note and "Ann" not in note


# 4. Outputs never overwrite each other -------------------------------------------------------


async def test_outputs_never_overwrite_each_other(tmp_path: Path) -> None:
    drop_in(tmp_path, "list.csv", [("email",), ("ann@a.test",)])
    drop_in(tmp_path, "list.CSV", [("email",), ("bad@b.test",)])
    clock = Clock()
    with Store(tmp_path / "state.db") as store:
        pipeline = Pipeline(store, FakeVerifier(clock), clock=clock)
        await pipeline.run_pass(csv_drop(tmp_path))
        drop_in(tmp_path, "list.csv", [("email",), ("unknown@c.test",)])  # the next day
        await pipeline.run_pass(csv_drop(tmp_path))

    outbox = tmp_path / "drop" / "outbox"
    outputs = {
        row["email"]: path.name
        for path in outbox.iterdir()
        for row in read_output(tmp_path, path.name)
    }
    assert set(outputs) == {"ann@a.test", "bad@b.test", "unknown@c.test"}
    assert len(set(outputs.values())) == 3


# 9. One CSV reader and writer for `verify` and the drop folder ------------------------------


def test_verify_csv_reads_windows_1252_and_neutralises_formulas_like_the_drop_folder(
    hostile_world: dict[str, str], tmp_path: Path
) -> None:
    leads = tmp_path / "leads.csv"
    # Excel on Windows: semicolons, Windows-1252, and a colleague's formula in a cell.
    text = 'Name;Note;Email\r\nZoë;"=HYPERLINK(""http://evil.example"",""x"")";john@acme.test\r\n'
    leads.write_bytes(text.encode("cp1252"))

    run = _cli("verify", "--format", "csv", "--file", str(leads), env=hostile_world, cwd=tmp_path)

    assert run.returncode == 0, run.stderr.decode("utf-8", "replace")
    header, row = list(csv.reader(io.StringIO(run.stdout.decode("utf-8"))))
    assert header[:3] == ["Name", "Note", "Email"]
    assert row[0] == "Zoë"
    assert row[1].startswith("'=HYPERLINK(")
    assert row[header.index("mailprobe_status")] == "valid"


# 3. Secrets never leak through error texts --------------------------------------------------


def _hubspot_config(tmp_path: Path, base_url: str) -> Path:
    config = tmp_path / "m.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "store": {"path": "state.db"},
                "connectors": {"crm": {"type": "hubspot", "base_url": base_url}},
            }
        ),
        encoding="utf-8",
    )
    return config


def test_token_pasted_with_a_line_break_is_stripped_and_never_shown(
    tmp_path: Path, hubspot_api: FakeHubSpot, acme_world: dict[str, str]
) -> None:
    hubspot_api.add_contact("john@acme.test")
    config = _hubspot_config(tmp_path, hubspot_api.base_url)
    env = {**acme_world, "MAILPROBE_CONNECTORS__CRM__ACCESS_TOKEN": HUBSPOT_TOKEN + "\n"}

    synced = _cli("--config", str(config), "sync", env=env, cwd=tmp_path)
    status = _cli("--config", str(config), "status", env=env, cwd=tmp_path)

    shown = (synced.stdout + synced.stderr + status.stdout + status.stderr).decode()
    assert synced.returncode == 0, shown
    assert HUBSPOT_TOKEN not in shown


def test_token_with_whitespace_inside_is_one_clear_config_error(
    tmp_path: Path, hubspot_api: FakeHubSpot
) -> None:
    config = _hubspot_config(tmp_path, hubspot_api.base_url)
    token = "pat-na1-fake 0000-token"
    env = {"MAILPROBE_CONNECTORS__CRM__ACCESS_TOKEN": token}

    run = _cli("--config", str(config), "sync", env=env, cwd=tmp_path)

    error = run.stderr.decode()
    assert run.returncode == 2 and len(error.strip().splitlines()) == 1, error
    assert "connectors.crm.access_token" in error and "whitespace" in error
    assert "0000-token" not in error


def test_error_texts_are_masked_before_the_runs_table_keeps_them(tmp_path: Path) -> None:
    leaked = "Invalid header value b'Bearer pat-na1-0badc0de-1111-2222-3333-444455556666\\n'"
    now = Clock()()
    with Store(tmp_path / "state.db") as store:
        run_id = store.start_run("crm", now=now)
        store.finish_run(run_id, outcome=RunOutcome.FAILED, counts=RunCounts(), error=leaked,
                         now=now)  # fmt: skip
        shown = store.status_summary(["crm"]).connectors[0].last_error
        kept = store.db.execute("SELECT error FROM runs").fetchone()[0]

    assert "0badc0de" not in kept and "0badc0de" not in (shown or "")
    assert "Invalid header value" in kept


# 6. `mailprobe config` masks the SOCKS proxy password ---------------------------------------


def test_config_masks_the_socks_proxy_password(tmp_path: Path) -> None:
    env = {"MAILPROBE_ENGINE__SMTP__PROXY": "socks5://probe:s3cr3t-pw@127.0.0.1:1080"}

    run = _cli("config", env=env, cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    assert b"s3cr3t-pw" not in run.stdout and b"socks5://probe:" in run.stdout


# 11. Configuration errors are one clear line ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("MAILPROBE_API__KEYS", "k-1234abcd", "must be JSON"),
        ("MAILPROBE_ENGINE__SMTP__ALLOWED_PRIVATE_NETWORKS", '["10.0.0.0/33"]', "10.0.0.0/33"),
        ("MAILPROBE_ENGINE__HELO_HOSTNAME", "mx.bücher.example", "xn--bcher-kva"),
    ],
)
def test_configuration_error_is_one_clear_line(
    tmp_path: Path, name: str, value: str, says: str
) -> None:
    run = _cli("config", env={name: value}, cwd=tmp_path)

    error = run.stderr.decode()
    assert run.returncode == 2, (run.stdout, error)
    assert len(error.strip().splitlines()) == 1 and says in error, error


# 5. The private-network guard sees through IPv6 forms of internal addresses -----------------

#: Internal IPv4 targets and every IPv6 form that carries them to the wire.
INTERNAL_FORMS = [
    "64:ff9b::a9fe:a9fe",  # NAT64 (RFC 6052) of 169.254.169.254, the metadata service
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b:1::a00:1",  # local-use NAT64 (RFC 8215) of 10.0.0.1
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "::10.0.0.1",  # IPv4-compatible
    "::169.254.169.254",  # IPv4-compatible
    "::ffff:0:a00:1",  # IPv4-translated (SIIT)
    "::ffff:10.0.0.1",  # IPv4-mapped
    "fec0::1",  # site-local (deprecated, still routed internally)
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
]


@pytest.mark.parametrize("address", INTERNAL_FORMS)
def test_ipv6_forms_of_internal_addresses_are_never_contacted(address: str) -> None:
    assert not is_contactable(address)


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2a00:1450:4001:81c::200e", "8.8.8.8"])
def test_global_addresses_in_any_form_are_contacted(address: str) -> None:
    assert is_contactable(address)


def test_an_allowed_network_admits_the_ipv4_inside_an_ipv6_form() -> None:
    allowed = [ip_network("10.0.0.0/8")]
    assert is_contactable("64:ff9b::a00:1", allowed)
    assert not is_contactable("64:ff9b::a9fe:a9fe", allowed)


@pytest.mark.parametrize(
    "address", ["64:ff9b::a9fe:a9fe", "2002:a00:1::1", "::ffff:0:a00:1", "fec0::1"]
)
async def test_mx_at_an_ipv6_form_of_an_internal_address_is_unroutable_and_never_dialled(
    net: Net, address: str
) -> None:
    net.mx("sneaky.test", ("mx.sneaky.test", address))

    async with net.verifier() as verifier:
        result = await verifier.verify("john@sneaky.test")

    assert (result.status, result.reason) == ("invalid", "unroutable_mx")
    assert result.checks.smtp is None  # no session was attempted


# 7. A keyless API answers only loopback Host names (DNS rebinding) --------------------------


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("rebind.attacker.example", 421),
        ("rebind.attacker.example:8080", 421),
        ("10.0.0.5", 421),
        ("localhost", 200),
        ("127.0.0.1:8080", 200),
        ("[::1]:8080", 200),
    ],
)
async def test_keyless_api_answers_only_loopback_host_names(
    start_api: Start,  # noqa: F811
    host: str,
    status: int,
) -> None:
    served = await start_api()

    response = await served.client.get(
        "/v1/verify", params={"email": "john@acme.test"}, headers={"Host": host}
    )

    assert response.status_code == status, response.text


# 8. Wrong keys are rate limited; /readyz tells strangers nothing and takes no write lock ----


async def test_wrong_keys_are_rate_limited(start_api: Start) -> None:  # noqa: F811
    served = await start_api(keys=("k-right-key-for-tests-1234",))

    codes = [
        (
            await served.client.get(
                "/v1/verify",
                params={"email": "john@acme.test"},
                headers={"Authorization": f"Bearer k-guess-{n}"},
            )
        ).status_code
        for n in range(50)
    ]

    assert codes[:5] == [401] * 5
    assert codes.count(429) >= 30
    right = await served.client.get(
        "/v1/verify",
        params={"email": "john@acme.test"},
        headers={"Authorization": "Bearer k-right-key-for-tests-1234"},
    )
    assert right.status_code == 200  # the owner of the key is not locked out


async def test_readyz_tells_a_stranger_only_that_a_check_failed(
    smtp_server: Callable[..., Awaitable[ScriptedSmtp]],
) -> None:
    with running_dns_server(DroppingDns) as silent:
        server = await smtp_server(ScriptedSmtp(MX_IP))
        settings = app_settings(silent, server.port, keys=("k-right-key-for-tests-1234",),
                                dns_timeout_s=0.3)  # fmt: skip
        async with serving(api.create_app(settings)) as client:
            stranger = await client.get("/readyz")
            owner = await client.get(
                "/readyz", headers={"Authorization": "Bearer k-right-key-for-tests-1234"}
            )

    assert stranger.status_code == owner.status_code == 503
    assert stranger.json() == {"status": "not_ready", "checks": {"resolver": "failed"}}
    assert owner.json()["checks"]["resolver"].startswith("the resolver does not answer")


async def test_readyz_is_ready_while_a_writer_holds_the_store(
    start_api: Start,  # noqa: F811
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "mailprobe.db")
    served = await start_api(store=store)
    assert (await served.client.get("/readyz")).status_code == 200  # the API is up
    writer = sqlite3.connect(tmp_path / "mailprobe.db")
    writer.execute("BEGIN IMMEDIATE")  # a long pass holding the write lock
    try:
        response = await served.client.get("/readyz")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        store.close()

    assert response.status_code == 200, response.text
    assert response.json()["checks"]["store"] == "ok"


# Slowloris: a client that drips its headers or says nothing is hung up on ------------------


@pytest.mark.parametrize("sent", [b"", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"])
async def test_api_hangs_up_on_a_client_that_never_finishes_its_headers(
    start_api: Start,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    sent: bytes,
) -> None:
    monkeypatch.setattr(api_server, "HEADER_TIMEOUT_S", 0.3, raising=False)
    served = await start_api()
    port = int(str(served.client.base_url).rsplit(":", 1)[1].rstrip("/"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(sent)
    await writer.drain()

    # Before the fix the server waits forever: the bound only keeps a failure from hanging.
    rest = await asyncio.wait_for(reader.read(), timeout=20)

    writer.close()
    assert rest == b""  # hung up without an answer
    healthy = await served.client.get("/healthz")
    assert healthy.status_code == 200  # and still serves everyone else


# A file replaced by another of the same name and size is read, not archived unread ---------


async def test_file_replaced_by_one_of_the_same_name_and_size_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop_in(tmp_path, "list.csv", [("email",), ("aaa@x.test",)])
    clock = Clock()
    verifier = FakeVerifier(clock)

    def crash(self: DropFolder, path: Path) -> Path:
        raise KeyboardInterrupt  # killed between writing the output and archiving the input

    with Store(tmp_path / "state.db") as store:
        monkeypatch.setattr(DropFolder, "archive", crash)
        with pytest.raises(KeyboardInterrupt):
            await Pipeline(store, verifier, clock=clock).run_pass(csv_drop(tmp_path))
        monkeypatch.undo()
        # Meanwhile someone drops a different file under the same name, of the same size.
        (tmp_path / "drop" / "inbox" / "list.csv").unlink()
        drop_in(tmp_path, "list.csv", [("email",), ("bad@x.test",)], age_s=30)
        report = await Pipeline(store, verifier, clock=clock).run_pass(csv_drop(tmp_path))

    assert report.outcome is RunOutcome.OK, report.error
    assert "bad@x.test" in verifier.seen
    outbox = tmp_path / "drop" / "outbox"
    emails = sorted(row["email"] for p in outbox.iterdir() for row in read_output(tmp_path, p.name))
    assert emails == ["aaa@x.test", "bad@x.test"]


def test_text_log_lines_escape_control_characters_of_untrusted_names() -> None:
    stream = io.StringIO()
    handler = configure_logging(fmt="text", stream=stream)
    try:
        logging.getLogger("mailprobe.test").warning(
            "file failed", extra={"file": "list\x1b[2J\rFAKE_ERROR.csv"}
        )
    finally:
        logging.getLogger().removeHandler(handler)

    line = stream.getvalue()
    assert "\x1b" not in line and "\r" not in line and "\\u001b[2J" in line


# Addresses that are not valid Unicode (a lone surrogate, as JSON can carry one) -------------


async def test_api_batch_with_an_address_that_is_not_valid_unicode_never_500s(
    start_api: Start,  # noqa: F811
) -> None:
    served = await start_api()

    response = await served.client.post(
        "/v1/verify/batch",
        content=b'{"emails": ["\\udcff@acme.test", "john@acme.test"]}',
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code < 500, response.text
    response.content.decode("utf-8")


async def test_crm_contact_whose_address_is_not_valid_unicode_never_blocks_the_pass(
    tmp_path: Path,
) -> None:
    clock = Clock()
    crm = crm_with(("1", "ann@x.test"), ("2", "\udcff@x.test"), ("3", "bob@x.test"))

    with Store(tmp_path / "state.db") as store:
        report = await Pipeline(store, FakeVerifier(clock), clock=clock).run_pass(
            CrmConnector("crm", crm)
        )

    assert report.outcome is RunOutcome.OK, report.error
    assert crm.records["1"].fields["mailprobe_status"] == "valid"
    assert crm.records["3"].fields["mailprobe_status"] == "valid"


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
def test_address_bytes_that_are_not_utf8_on_the_command_line_give_utf8_output(
    hostile_world: dict[str, str], tmp_path: Path, fmt: str
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MAILPROBE_")}
    command = [sys.executable, "-c", "from mailprobe.cli import main; main(prog_name='mailprobe')"]
    run = subprocess.run(
        [*command, "verify", "--format", fmt, b"\xffbad@acme.test", "john@acme.test"],
        capture_output=True,
        env={**base, "PYTHONPATH": str(ROOT), "LC_ALL": "C.UTF-8", **hostile_world},
        cwd=tmp_path,
        timeout=120,
    )

    assert run.returncode == 0, run.stderr.decode("utf-8", "replace")
    text = run.stdout.decode("utf-8")  # strict
    assert "\ufffdbad@acme.test" in text


# API callers' domains never reach the networks allowed for the intranet's ------------------


async def test_api_callers_never_reach_the_private_networks_allowed_for_crm_domains(
    dns_server: DnsServer,
    smtp_server: Callable[..., Awaitable[ScriptedSmtp]],
) -> None:
    # The operator allows 127.0.0.0/8 for the intranet's domains; a caller's MX points there.
    server = await smtp_server(ScriptedSmtp(MX_IP, mailboxes={"john@acme.test"}))
    dns_server.add_mx("acme.test", 10, "mx.acme.test")
    dns_server.add("mx.acme.test", "A", MX_IP)
    settings = app_settings(dns_server, server.port)
    settings = settings.model_copy(
        update={"api": settings.api.model_copy(update={"allow_private_networks": False})}
    )

    async with serving(api.create_app(settings)) as client:
        response = await client.get("/v1/verify", params={"email": "john@acme.test"})

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["reason"]) == ("invalid", "unroutable_mx")
    assert server.session_count == 0
