"""End to end on a host whose resolver lies: no "invalid" from DNS, a reason, and /readyz fails.

`mailprobe verify`, a drop-folder pass and the HTTP API, each against a real DNS server on
loopback that answers NXDOMAIN for every name (a filtered or split-horizon company resolver).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mailprobe import api
from mailprobe.cli import main
from tests.fakes.dns import DnsServer, NxdomainDns, running_dns_server
from tests.test_api import app_settings, serving

ADDRESSES = ["ann@gone.test", "bob@acme.test", "cy@example-corp.test"]


@pytest.fixture
def lying() -> Iterator[DnsServer]:
    with running_dns_server(NxdomainDns) as server:
        yield server


def config_file(tmp_path: Path, dns: DnsServer, **extra: Any) -> Path:
    settings = {
        "engine": {
            "helo_hostname": "probe.example.test",
            "dns": dns.dns_settings(timeout_s=1.0),
            "syntax": {"allow_test_domains": True},
        },
        "store": {"path": str(tmp_path / "state.db")},
        "connectors": {},
        **extra,
    }
    path = tmp_path / "mailprobe.yaml"
    path.write_text(json.dumps(settings), encoding="utf-8")
    return path


def test_verify_with_a_lying_resolver_gives_no_invalid(lying: DnsServer, tmp_path: Path) -> None:
    config = config_file(tmp_path, lying)
    result = CliRunner().invoke(main, ["--config", str(config), "verify", "-q", *ADDRESSES])
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)
    assert {(r["status"], r["reason"]) for r in results} == {("unknown", "dns_error")}
    assert "resolver not trusted" in result.stderr


def test_drop_folder_pass_with_a_lying_resolver_gives_no_invalid(
    lying: DnsServer, tmp_path: Path
) -> None:
    folder = tmp_path / "drop"
    drop = {"type": "csv", "folder": str(folder), "settle_s": 0}
    config = config_file(tmp_path, lying, connectors={"drop": drop})
    (folder / "inbox").mkdir(parents=True)
    rows = "email\n" + "\n".join(ADDRESSES) + "\n"
    (folder / "inbox" / "leads.csv").write_text(rows, encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(config), "sync"])
    assert result.exit_code == 0, result.output
    (written,) = (folder / "outbox").glob("*.csv")
    with written.open(encoding="utf-8") as handle:
        out = list(csv.DictReader(handle))
    assert len(out) == 3
    assert {(row["mailprobe_status"], row["mailprobe_reason"]) for row in out} == {
        ("unknown", "dns_error")
    }


async def test_api_with_a_lying_resolver_gives_no_invalid_and_is_not_ready(
    lying: DnsServer,
) -> None:
    app = api.create_app(app_settings(lying, 25, dns_timeout_s=1.0))
    async with serving(app) as client:
        verified = await client.get("/v1/verify", params={"email": "ann@gone.test"})
        ready = await client.get("/readyz")
    assert (verified.json()["status"], verified.json()["reason"]) == ("unknown", "dns_error")
    assert ready.status_code == 503
    reason = ready.json()["checks"]["resolver"]
    assert "not trusted" in reason and "engine.dns.nameservers" in reason


async def test_api_with_an_honest_resolver_is_ready(dns_server: DnsServer) -> None:
    app = api.create_app(app_settings(dns_server, 25))
    async with serving(app) as client:
        verified = await client.get("/v1/verify", params={"email": "ann@gone.test"})
        ready = await client.get("/readyz")
    assert verified.json()["reason"] == "domain_not_found"
    assert ready.status_code == 200
