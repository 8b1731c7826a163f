"""The real-time HTTP API (issue 7): real HTTP against uvicorn on 127.0.0.1, port 0.

Behind the API: the fake DNS server and scripted SMTP servers on 127.0.0.2. Each test serves
the app as a task on its own event loop, so it can wait on the app's own conditions (no
verification in flight) instead of sleeping. One test runs `mailprobe serve` as a process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from mailprobe.engine import EngineSettings, Reason, Status
from mailprobe.engine.mx import MailRoute, MxHost, RouteKind
from mailprobe.engine.settings import DnsSettings, SmtpSettings, SyntaxSettings
from mailprobe.engine.syntax import Address, parse_address
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from starlette.applications import Starlette

from mailprobe import api
from mailprobe.errors import ConfigError
from mailprobe.settings import ApiSettings, AppSettings, StoreSettings
from mailprobe.store import Store
from tests.fakes.dns import DnsServer, DroppingDns, running_dns_server
from tests.fakes.net import assert_no_message_sent
from tests.fakes.smtp import Misbehave, ScriptedSmtp, Trick

ROOT = Path(__file__).resolve().parents[1]
MX_IP = "127.0.0.2"
DOMAIN = "acme.test"
JOHN = f"john@{DOMAIN}"
KEY1, KEY2 = "k1-secret-for-tests-7f3a", "k2-secret-for-tests-9c1d"
#: The documented result JSON, plus the two fields the API adds.
CONTRACT_KEYS = {
    "email", "normalized", "status", "reason", "action", "score", "checks", "suggestion",
    "verified_at", "response_time_ms", "cached", "partial",
}  # fmt: skip


def app_settings(
    dns: DnsServer,
    smtp_port: int,
    *,
    keys: tuple[str, ...] = (),
    rate: int = 100_000,
    store: Path | None = None,
    dns_timeout_s: float = 2.0,
    connectors: dict[str, Any] | None = None,
) -> AppSettings:
    """Return settings that point the engine at the fakes and the API at 127.0.0.1:0."""
    engine = EngineSettings(
        helo_hostname="probe.example.test",
        dns=DnsSettings(**dns.dns_settings(timeout_s=dns_timeout_s)),
        smtp=SmtpSettings(
            port=smtp_port,
            allowed_private_networks=["127.0.0.0/8"],
            connect_timeout_s=10,
            command_timeout_s=10,
        ),
        syntax=SyntaxSettings(allow_test_domains=True),
    )
    return AppSettings(
        engine=engine,
        api=ApiSettings(
            listen="127.0.0.1:0",
            keys=[SecretStr(key) for key in keys],
            rate_limit_per_minute=rate,
            allow_private_networks=True,  # the fakes live on 127.0.0.0/8
        ),
        store=StoreSettings(path=store or Path("unused.db")),
        connectors=connectors or {},
    )


@dataclass
class Served:
    """One running API and what stands behind it."""

    client: httpx.AsyncClient
    app: Starlette
    smtp: ScriptedSmtp
    dns: DnsServer

    async def idle(self) -> None:
        """Return once no verification is in flight (background ones included)."""
        await asyncio.wait_for(self.app.state.verifications.wait_idle(), 30)

    async def metrics(self, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Return every sample of /metrics by (name, sorted labels)."""
        response = await self.client.get("/metrics", headers=headers)
        assert response.status_code == 200
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }


@contextlib.asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """Serve `app` with uvicorn on 127.0.0.1, port 0; yield an HTTP client pointed at it."""
    sock = api.bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    stop = asyncio.Event()
    # The socket already listens: requests made before uvicorn accepts wait in the backlog.
    task = asyncio.create_task(api.serve_app(app, sock, shutdown=stop))
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    try:
        # Plain HTTP on loopback: verify=False only skips loading CA certificates (0.1 s each).
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits, verify=False
        ) as client:
            yield client
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        sock.close()


Start = Callable[..., Awaitable[Served]]


@pytest.fixture
async def start_api(
    dns_server: DnsServer, smtp_server: Callable[..., Awaitable[ScriptedSmtp]]
) -> AsyncIterator[Start]:
    """Yield `start(smtp=None, store=None, verifier=None, **settings)`: DNS, SMTP and the API."""
    stack = contextlib.AsyncExitStack()
    dns_server.add_mx(DOMAIN, 10, f"mx.{DOMAIN}")
    dns_server.add(f"mx.{DOMAIN}", "A", MX_IP)

    async def start(
        *,
        smtp: ScriptedSmtp | None = None,
        store: Store | None = None,
        verifier: Any = None,
        **knobs: Any,
    ) -> Served:
        server = await smtp_server(smtp or ScriptedSmtp(MX_IP, mailboxes={JOHN}))
        settings = app_settings(dns_server, server.port, **knobs)
        app = api.create_app(settings, store=store, verifier=verifier)
        client = await stack.enter_async_context(serving(app))
        return Served(client, app, server, dns_server)

    yield start
    await stack.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared() -> AsyncIterator[Served]:
    """One API with keys KEY1 and KEY2 for table-driven tests: a server per row is slow."""
    with running_dns_server() as dns:
        dns.add_mx(DOMAIN, 10, f"mx.{DOMAIN}")
        dns.add(f"mx.{DOMAIN}", "A", MX_IP)
        smtp = ScriptedSmtp(MX_IP, mailboxes={JOHN})
        await smtp.start()
        app = api.create_app(app_settings(dns, smtp.port, keys=(KEY1, KEY2)))
        try:
            async with serving(app) as client:
                yield Served(client, app, smtp, dns)
        finally:
            await smtp.stop()
        assert "DATA" not in smtp.commands


@pytest.fixture(autouse=True)
def never_data(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Afterwards no SMTP server any test started may have received DATA."""
    started: list[ScriptedSmtp] = []
    original = ScriptedSmtp.start

    async def start(self: ScriptedSmtp) -> None:
        started.append(self)
        await original(self)

    monkeypatch.setattr(ScriptedSmtp, "start", start)
    yield
    assert_no_message_sent(started)


# Verifying ------------------------------------------------------------------------------------


async def test_get_verify_answers_valid_for_an_existing_mailbox(start_api: Start) -> None:
    served = await start_api()
    response = await served.client.get("/v1/verify", params={"email": JOHN})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == CONTRACT_KEYS
    assert (body["status"], body["reason"], body["action"]) == ("valid", "accepted", "send")
    assert body["cached"] is False and body["partial"] is False
    assert body["checks"]["smtp"]["mailbox_exists"] is True


async def test_post_verify_answers_invalid_for_an_unknown_mailbox(start_api: Start) -> None:
    served = await start_api()
    response = await served.client.post("/v1/verify", json={"email": f"nobody@{DOMAIN}"})
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["reason"]) == (
        "invalid",
        "mailbox_not_found",
    )


async def test_invalid_syntax_is_an_answer_not_an_input_error(start_api: Start) -> None:
    served = await start_api()
    response = await served.client.get("/v1/verify", params={"email": "not an address"})
    assert response.status_code == 200
    assert response.json()["reason"] == "invalid_syntax"
    assert served.smtp.session_count == 0


async def test_second_request_is_answered_from_cache_without_a_session(start_api: Start) -> None:
    served = await start_api()
    first = await served.client.get("/v1/verify", params={"email": JOHN})
    second = await served.client.get("/v1/verify", params={"email": "john@ACME.test"})
    assert first.json()["cached"] is False
    assert second.json()["cached"] is True
    assert second.json()["status"] == "valid"
    assert second.json()["email"] == "john@ACME.test"  # the caller's spelling comes back
    assert served.smtp.session_count == 1


async def test_batch_answers_in_input_order_sharing_one_session(start_api: Start) -> None:
    served = await start_api()
    emails = [JOHN, f"nobody@{DOMAIN}", "broken@", JOHN, f"ghost@{DOMAIN}"]
    response = await served.client.post("/v1/verify/batch", json={"emails": emails})
    assert response.status_code == 200
    results = response.json()
    assert [r["email"] for r in results] == emails
    assert [r["status"] for r in results] == ["valid", "invalid", "invalid", "valid", "invalid"]
    assert served.smtp.session_count == 1  # one domain: one session carries every recipient


async def test_batch_of_100_is_accepted_and_101_is_422(start_api: Start) -> None:
    served = await start_api()
    bad = [f"x{i}@" for i in range(101)]  # invalid syntax: answered without any lookup
    accepted = await served.client.post("/v1/verify/batch", json={"emails": bad[:100]})
    refused = await served.client.post("/v1/verify/batch", json={"emails": bad})
    assert accepted.status_code == 200 and len(accepted.json()) == 100
    assert refused.status_code == 422
    assert refused.json()["message"] == "emails: may hold at most 100 addresses"


# Input errors ---------------------------------------------------------------------------------

LONG = "a" * 250 + "@x.test"


@pytest.mark.parametrize(
    ("method", "path", "payload", "expected"),
    [
        ("GET", "/v1/verify", {}, "email: is required"),
        ("GET", "/v1/verify", {"email": ""}, "email: must not be empty"),
        ("GET", "/v1/verify", {"email": LONG}, "email: is longer than 254 characters"),
        ("GET", "/v1/verify", {"email": JOHN, "timeout_ms": "soon"}, "timeout_ms: must be an"),
        ("GET", "/v1/verify", {"email": JOHN, "timeout_ms": "60001"}, "timeout_ms: must be an"),
        ("POST", "/v1/verify", b"{not json", "body: is not valid JSON"),
        ("POST", "/v1/verify", b"", "body: is empty"),
        ("POST", "/v1/verify", {}, "email: is required"),
        ("POST", "/v1/verify", {"email": 42}, "email: must be a string"),
        ("POST", "/v1/verify", {"email": None}, "email: must be a string"),
        ("POST", "/v1/verify", {"email": "   "}, "email: must not be empty"),
        ("POST", "/v1/verify", {"email": LONG}, "email: is longer than 254 characters"),
        ("POST", "/v1/verify", {"email": JOHN, "timeout_ms": True}, "timeout_ms: must be an"),
        ("POST", "/v1/verify", {"email": JOHN, "timeout_ms": 99}, "timeout_ms: must be an"),
        ("POST", "/v1/verify", [JOHN], "body: the body must be a JSON object"),
        ("POST", "/v1/verify", b'{"email": "\\ud800@acme.test"}', "email: must be valid Unicode"),
        ("POST", "/v1/verify/batch", {"emails": JOHN}, "emails: must be a list"),
        ("POST", "/v1/verify/batch", {"emails": []}, "emails: must hold at least one"),
        ("POST", "/v1/verify/batch", {"emails": [JOHN, 7]}, "emails[1]: must be a string"),
    ],
)
@pytest.mark.asyncio(loop_scope="module")
async def test_bad_input_is_422_with_a_clear_message(
    shared: Served, method: str, path: str, payload: Any, expected: str
) -> None:
    sessions = shared.smtp.session_count
    key = {"X-API-Key": KEY1}
    if method == "GET":
        response = await shared.client.get(path, params=payload, headers=key)
    elif isinstance(payload, bytes):
        response = await shared.client.post(path, content=payload, headers=key)
    else:
        response = await shared.client.post(path, json=payload, headers=key)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert expected in response.json()["message"]
    assert shared.smtp.session_count == sessions


def _garbage() -> list[tuple[str, str, dict[str, Any]]]:
    """Return (method, path, httpx arguments) for requests no client should send."""
    rng = random.Random(7)
    bodies: list[bytes] = [
        b"null", b"12", b'"text"', b"[]", b"{}", b"\xff\xfe\x00", b"[" * 60_000, b"{" * 60_000,
        b'{"email": {"a": 1}}', b'{"email": ["x"]}', b'{"email": 1e400}', b'{"email": true}',
        b'{"email": "a@acme.test", "timeout_ms": 1e400}',
        b'{"email": "a@acme.test", "timeout_ms": NaN}',
        b'{"email": "a@acme.test", "timeout_ms": 123456789012345678901234567890}',
        b'{"email": "a\\u0000b@acme.test"}', b'{"email": "\\udfff"}',
        b'{"email": "' + b"a" * 300_000 + b'"}',
        b'{"emails": null}', b'{"emails": {}}', b'{"emails": [[]]}', b'{"emails": "x"}',
        b'{"emails": [' + b'"a@b.test",' * 150 + b'"a@b.test"]}',
        b"email=john%40acme.test",
    ]  # fmt: skip
    bodies += [rng.randbytes(rng.randint(1, 400)) for _ in range(40)]
    requests = [
        (method, path, {"content": body})
        for body in bodies
        for method, path in (("POST", "/v1/verify"), ("POST", "/v1/verify/batch"))
    ]
    queries = [
        "email=%FF%FE", "email=%00", "email=a&email=b", "timeout_ms=-1&email=x",
        "timeout_ms=1e3&email=x", "timeout_ms=99999999999999999999999&email=x", "email=",
        "timeout_ms=%F0%9F%98%80&email=x", "email=" + "%E2%80%8B" * 300, "%%%=%%%",
    ]  # fmt: skip
    requests += [("GET", f"/v1/verify?{query}", {}) for query in queries]
    requests += [
        ("PUT", "/v1/verify", {}),
        ("DELETE", "/v1/verify/batch", {}),
        ("GET", "/v1/verify/batch", {}),
        ("GET", "/v2/verify", {}),
        ("POST", "/metrics", {"content": b"x"}),
        ("GET", "/v1/verify", {"headers": {"Authorization": "Bearer"}, "params": {"email": "x"}}),
    ]
    return requests


async def test_garbage_input_never_answers_500(start_api: Start) -> None:
    served = await start_api()
    for method, path, arguments in _garbage():
        response = await served.client.request(method, path, **arguments)
        assert response.status_code < 500, (method, path, response.text[:200])
        assert response.headers["content-type"].startswith("application/json")
    samples = await served.metrics()
    assert not [key for key in samples if ("code", "500") in key[1]]


class BrokenVerifier:
    """A verifier with a bug: the engine raising is ours to fix, and a JSON 500 to the caller."""

    settings = EngineSettings(syntax=SyntaxSettings(allow_test_domains=True))

    def verify_many(self, emails: Any) -> Any:
        raise RuntimeError("engine bug with secret details")

    async def aclose(self) -> None:
        """Nothing to release."""


async def test_engine_bug_answers_a_json_500_without_details(start_api: Start) -> None:
    served = await start_api(verifier=BrokenVerifier())
    response = await served.client.get("/v1/verify", params={"email": JOHN})
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert "secret details" not in response.text


# Keys and rate limits -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong-key"}, 401),
        ({"X-API-Key": KEY1[:-1]}, 401),
        ({"Authorization": f"Basic {KEY1}"}, 401),  # not base64 of user:password
        ({"Authorization": "Basic " + base64.b64encode(f"ops:{KEY1}".encode()).decode()}, 200),
        ({"Authorization": f"Bearer {KEY1}"}, 200),
        ({"authorization": f"bearer {KEY2}"}, 200),
        ({"X-API-Key": KEY2}, 200),
    ],
)
@pytest.mark.asyncio(loop_scope="module")
async def test_api_key_decides_between_401_and_an_answer(
    shared: Served, headers: dict[str, str], status: int
) -> None:
    sessions = shared.smtp.session_count
    response = await shared.client.get("/v1/verify", params={"email": JOHN}, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert shared.smtp.session_count == sessions
    else:
        assert response.json()["status"] == "valid"


@pytest.mark.asyncio(loop_scope="module")
async def test_batch_without_a_key_is_401_before_the_body_is_judged(shared: Served) -> None:
    response = await shared.client.post("/v1/verify/batch", content=b"garbage")
    assert response.status_code == 401


@pytest.mark.asyncio(loop_scope="module")
async def test_health_is_open_and_metrics_need_a_key_when_keys_are_set(shared: Served) -> None:
    assert (await shared.client.get("/healthz")).status_code == 200
    assert (await shared.client.get("/metrics")).status_code == 401
    assert (await shared.client.get("/metrics", headers={"X-API-Key": KEY1})).status_code == 200


async def test_logs_never_contain_api_keys(
    start_api: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    served = await start_api(keys=(KEY1,))
    for headers in ({"Authorization": f"Bearer {KEY1}"}, {"X-API-Key": KEY1 + "x"}, {}):
        await served.client.get("/v1/verify", params={"email": JOHN}, headers=headers)
        await served.client.post("/v1/verify", content=b"{", headers=headers)
    assert any("/v1/verify" in record.getMessage() for record in caplog.records)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert KEY1 not in logged and KEY1[:8] not in logged
    assert JOHN not in logged  # query strings (addresses) stay out of the logs too


async def test_rate_limit_answers_429_with_retry_after_per_key(start_api: Start) -> None:
    served = await start_api(keys=(KEY1, KEY2), rate=2)
    one, two = {"X-API-Key": KEY1}, {"X-API-Key": KEY2}
    codes = [
        (await served.client.get("/v1/verify", params={"email": JOHN}, headers=one)).status_code
        for _ in range(2)
    ]
    limited = await served.client.get("/v1/verify", params={"email": JOHN}, headers=one)
    other = await served.client.get("/v1/verify", params={"email": JOHN}, headers=two)
    assert codes == [200, 200]
    assert limited.status_code == 429
    assert limited.json()["error"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert other.status_code == 200


async def test_batch_counts_each_address_against_the_rate_limit(start_api: Start) -> None:
    served = await start_api(rate=3)
    three = await served.client.post("/v1/verify/batch", json={"emails": ["a@", "b@", "c@"]})
    fourth = await served.client.get("/v1/verify", params={"email": "d@"})
    assert three.status_code == 200
    assert fourth.status_code == 429


def test_rate_limiter_refills_with_time() -> None:
    now = [0.0]
    limiter = api.RateLimiter(60, clock=lambda: now[0])  # one token a second, bursts of 60
    assert [limiter.take("k") for _ in range(60)] == [0.0] * 60
    assert limiter.take("k") == pytest.approx(1.0)
    now[0] = 2.5
    assert limiter.take("k", 2) == 0.0
    assert limiter.take("k") == pytest.approx(0.5)
    assert limiter.take("other") == 0.0
    assert limiter.take("big", 500) == 0.0  # charged the capacity: never refused forever


def test_key_ring_names_keys_by_position_and_refuses_others() -> None:
    ring = api.KeyRing([SecretStr("alpha-key"), SecretStr("beta-key")])
    assert ring.identify(b"beta-key") == "key2"
    assert ring.identify(b"alpha-key") == "key1"
    assert ring.identify(b"alpha-ke") is None
    assert ring.identify(None) is None
    assert not api.KeyRing([]).required


# Deadlines, background verification, deduplication ------------------------------------------


async def test_deadline_answers_partial_timeout_then_cache_when_done(start_api: Start) -> None:
    slow = ScriptedSmtp(
        MX_IP, mailboxes={JOHN}, misbehave=[Misbehave("BANNER", Trick.DELAY, delay_s=1.0)]
    )
    served = await start_api(smtp=slow)
    early = await served.client.get("/v1/verify", params={"email": JOHN, "timeout_ms": 100})
    body = early.json()
    assert (body["status"], body["reason"], body["action"]) == ("unknown", "timeout", "retry")
    assert body["partial"] is True and body["cached"] is False
    checks = body["checks"]
    assert (checks["syntax"], checks["domain"], checks["mx_record"]) == (True, True, True)
    assert checks["smtp"] is None
    await served.idle()  # the verification went on after the answer, and is now cached
    later = await served.client.get("/v1/verify", params={"email": JOHN, "timeout_ms": 100})
    assert (later.json()["status"], later.json()["cached"]) == ("valid", True)
    assert served.smtp.session_count == 1


async def test_100_concurrent_requests_for_one_address_make_one_session(
    start_api: Start,
) -> None:
    slow = ScriptedSmtp(
        MX_IP, mailboxes={JOHN}, misbehave=[Misbehave("BANNER", Trick.DELAY, delay_s=0.5)]
    )
    served = await start_api(smtp=slow)
    responses = await asyncio.gather(
        *(served.client.get("/v1/verify", params={"email": JOHN}) for _ in range(100))
    )
    assert {r.status_code for r in responses} == {200}
    assert {r.json()["status"] for r in responses} == {"valid"}
    assert served.smtp.session_count == 1
    samples = await served.metrics()
    assert samples[("mailprobe_api_answers_total", (("source", "verified"),))] == 1
    assert (
        samples[("mailprobe_verifications_total", (("reason", "accepted"), ("status", "valid")))]
        == 1
    )


async def test_100_concurrent_requests_for_different_addresses(start_api: Start) -> None:
    mailboxes = {f"user{i}@{DOMAIN}" for i in range(0, 100, 2)}
    served = await start_api(smtp=ScriptedSmtp(MX_IP, mailboxes=mailboxes))
    emails = [f"user{i}@{DOMAIN}" for i in range(100)]
    responses = await asyncio.gather(
        *(
            served.client.post("/v1/verify", json={"email": email, "timeout_ms": 60_000})
            for email in emails
        )
    )
    answers = {r.json()["email"]: r.json()["status"] for r in responses}
    assert answers == {e: "valid" if e in mailboxes else "invalid" for e in emails}
    assert served.smtp.max_concurrent <= 2  # engine.smtp.max_sessions_per_host still holds


def test_partial_result_reports_what_is_known_without_smtp() -> None:
    address = parse_address("info@gmail.com")
    assert isinstance(address, Address)
    route = MailRoute(
        "gmail.com", RouteKind.MX, (MxHost("gmail-smtp-in.l.google.com", 5, ("192.0.2.1",)),)
    )
    now = datetime(2026, 1, 2, tzinfo=UTC)
    known = api.partial_result("info@gmail.com", address, route, elapsed_ms=7, now=now)
    unknown = api.partial_result("info@gmail.com", address, None, elapsed_ms=7, now=now)
    assert (known.status, known.reason) == (Status.UNKNOWN, Reason.TIMEOUT)
    assert (known.checks.domain, known.checks.mx_record, known.checks.smtp) == (True, True, None)
    assert (known.checks.role, known.checks.free) == (True, True)
    assert (unknown.checks.domain, unknown.checks.mx_record) == (None, None)
    assert 20 <= known.score <= 39


# The store ------------------------------------------------------------------------------------


async def test_store_shares_answers_with_the_daemon(start_api: Start, tmp_path: Path) -> None:
    store = Store(tmp_path / "mailprobe.db")
    served = await start_api(store=store)
    verified = await served.client.get("/v1/verify", params={"email": JOHN})
    assert verified.json()["cached"] is False
    await served.idle()
    saved = store.fresh_result(JOHN, now=datetime.now(UTC))
    assert saved is not None and saved.status is Status.VALID
    # A result the daemon stored is answered without asking the mail server.
    other = f"jane@{DOMAIN}"
    store.save_result(replace(saved, email=other, normalized=other), now=datetime.now(UTC))
    cached = await served.client.get("/v1/verify", params={"email": other})
    assert (cached.json()["status"], cached.json()["cached"]) == ("valid", True)
    assert served.smtp.session_count == 1
    store.close()


# Operations -----------------------------------------------------------------------------------


async def test_readyz_is_ready_with_resolver_and_writable_store(
    start_api: Start, tmp_path: Path
) -> None:
    store = Store(tmp_path / "mailprobe.db")
    served = await start_api(store=store)
    response = await served.client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"resolver": "ok", "store": "ok"}}
    assert any(query.name.endswith(".invalid") for query in served.dns.queries)
    store.close()


async def test_readyz_is_503_when_the_resolver_is_silent(
    smtp_server: Callable[..., Awaitable[ScriptedSmtp]],
) -> None:
    with running_dns_server(DroppingDns) as silent:
        server = await smtp_server(ScriptedSmtp(MX_IP))
        app = api.create_app(app_settings(silent, server.port, dns_timeout_s=0.3))
        async with serving(app) as client:
            response = await client.get("/readyz")
            health = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["resolver"].startswith("the resolver does not answer")
    assert health.status_code == 200


async def test_metrics_count_verifications_smtp_outcomes_and_latency(start_api: Start) -> None:
    served = await start_api()
    await served.client.get("/v1/verify", params={"email": JOHN})
    await served.client.get("/v1/verify", params={"email": f"nobody@{DOMAIN}"})
    await served.client.get("/v1/verify", params={"email": JOHN})
    samples = await served.metrics()
    by_reason = {
        labels: value for (name, labels), value in samples.items()
        if name == "mailprobe_verifications_total"
    }  # fmt: skip
    assert by_reason == {
        (("reason", "accepted"), ("status", "valid")): 1,
        (("reason", "mailbox_not_found"), ("status", "invalid")): 1,
    }
    smtp = (("outcome", "accepted"), ("provider", "Postfix"))  # named by the banner
    assert samples[("mailprobe_smtp_checks_total", smtp)] == 1
    assert samples[("mailprobe_api_answers_total", (("source", "cache"),))] == 1
    assert samples[("mailprobe_verification_seconds_count", ())] == 2
    assert samples[("mailprobe_api_request_seconds_count", (("route", "/v1/verify"),))] == 3


async def test_metrics_show_queue_depth_from_the_store(start_api: Start, tmp_path: Path) -> None:
    store = Store(tmp_path / "mailprobe.db")
    store.queue_emails("drop", ["a@x.test", "b@x.test"], now=datetime.now(UTC))
    served = await start_api(store=store, connectors={"drop": {"type": "csv"}})
    samples = await served.metrics()
    assert samples[("mailprobe_queue_depth", (("connector", "drop"),))] == 2
    store.close()


async def test_openapi_lists_the_endpoints_and_docs_need_no_internet(start_api: Start) -> None:
    served = await start_api()
    spec = (await served.client.get("/openapi.json")).json()
    assert set(spec["paths"]["/v1/verify"]) == {"get", "post"}
    assert "post" in spec["paths"]["/v1/verify/batch"]
    assert {"cached", "partial", "checks"} <= set(
        spec["components"]["schemas"]["Result"]["properties"]
    )
    page = await served.client.get("/docs")
    assert page.status_code == 200 and 'url: "openapi.json"' in page.text
    # Swagger UI from this server (tests/test_dashboard.py renders it in Chromium).
    assert "//" not in page.text


# Listening ------------------------------------------------------------------------------------


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "[::]:8080", "192.0.2.10:8080"])
async def test_no_keys_refuses_to_listen_beyond_loopback(listen: str) -> None:
    settings = AppSettings(api=ApiSettings(listen=listen), connectors={})
    with pytest.raises(ConfigError) as refused:
        await api.serve(settings)
    assert refused.value.setting == "api.keys"
    assert "refusing to listen" in str(refused.value)


@pytest.mark.parametrize(
    ("listen", "keys", "expected"),
    [
        ("127.0.0.1:8080", [], ("127.0.0.1", 8080)),
        ("[::1]:9000", [], ("::1", 9000)),
        ("localhost:8080", [], ("localhost", 8080)),
        ("0.0.0.0:8080", [SecretStr("k")], ("0.0.0.0", 8080)),
    ],
)
def test_listen_address_allows_loopback_or_keys(
    listen: str, keys: list[SecretStr], expected: tuple[str, int]
) -> None:
    assert api.listen_address(ApiSettings(listen=listen, keys=keys)) == expected


@pytest.mark.parametrize("listen", ["8080", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000"])
def test_bad_listen_is_a_config_error(listen: str) -> None:
    with pytest.raises(ConfigError, match="api.listen"):
        api.listen_address(ApiSettings(listen=listen))


def test_cli_serve_answers_then_exits_0_on_sigterm(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MAILPROBE_API__LISTEN": "127.0.0.1:0",
        "MAILPROBE_STORE__PATH": str(tmp_path / "mailprobe.db"),
        "MAILPROBE_LOG__LEVEL": "INFO",
    }
    command = [sys.executable, "-c", "from mailprobe.cli import main; main()", "serve"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True, encoding="utf-8"
    )
    assert process.stderr is not None
    try:
        url = ""
        for line in process.stderr:  # blocks until the line comes, or the process ends
            if "listening on http://" in line:
                url = line.split("listening on ", 1)[1].split()[0]
                break
        assert url, "mailprobe serve did not say where it listens"
        assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        rest = process.stderr.read()
        assert "Traceback" not in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (tmp_path / "mailprobe.db").exists()


async def test_start_api_is_the_daemons_hook_and_stops_gracefully(
    dns_server: DnsServer,
    smtp_server: Callable[..., Awaitable[ScriptedSmtp]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailprobe.api")
    server = await smtp_server(ScriptedSmtp(MX_IP))
    stop = await api.start_api(app_settings(dns_server, server.port))
    said = [r.getMessage() for r in caplog.records if "listening on http://" in r.getMessage()]
    url = said[0].split("listening on ", 1)[1].split()[0]
    async with httpx.AsyncClient(verify=False) as client:
        assert (await client.get(f"{url}/healthz")).status_code == 200
        await asyncio.wait_for(stop(), 30)
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/healthz")
