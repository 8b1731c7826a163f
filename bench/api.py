"""Bench the HTTP API: latency and throughput for cached answers and for fresh verifications.

    python bench/api.py [--requests 2000] [--fresh 200] [--concurrency 20] [--latency-ms 20]

Everything runs on loopback: the fake DNS server and scripted SMTP servers (one per 127.0.0.x,
each adding `--latency-ms` before every reply, so a fresh verification costs about six round
trips of it) in background threads, the API under uvicorn in a process of its own (as in
production), and a small keep-alive HTTP client here. Prints p50/p99 latency and requests per
second for each case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailprobe.engine.settings import DnsSettings, EngineSettings, SmtpSettings, SyntaxSettings  # noqa: E402

from mailprobe import api  # noqa: E402
from mailprobe.settings import ApiSettings, AppSettings  # noqa: E402
from tests.fakes.dns import DnsServer, running_dns_server  # noqa: E402
from tests.fakes.smtp import ScriptedSmtp, running_smtp_server  # noqa: E402

DOMAINS = 10  # one MX host per domain, so max_sessions_per_host does not cap the bench


def _settings(dns: DnsServer, smtp_port: int) -> AppSettings:
    engine = EngineSettings(
        helo_hostname="bench.example.test",
        dns=DnsSettings(**dns.dns_settings(timeout_s=5.0)),
        smtp=SmtpSettings(port=smtp_port, allowed_private_networks=["127.0.0.0/8"]),
        syntax=SyntaxSettings(allow_test_domains=True),
    )
    api_settings = ApiSettings(
        listen="127.0.0.1:0", rate_limit_per_minute=10**9, allow_private_networks=True
    )
    return AppSettings(engine=engine, api=api_settings, connectors={})


def _serve_process(settings_json: str, ports: multiprocessing.Queue) -> None:
    """Serve the API in this (child) process until SIGTERM."""
    settings = AppSettings.model_validate_json(settings_json)
    sock = api.bind("127.0.0.1", 0)
    ports.put(sock.getsockname()[1])
    asyncio.run(api.serve_app(api.create_app(settings), sock))


@contextmanager
def _api_process(settings: AppSettings) -> Iterator[str]:
    """Serve the API in its own process, as in production; yield its base URL."""
    context = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue = context.Queue()
    process = context.Process(target=_serve_process, args=(settings.model_dump_json(), ports))
    process.start()
    try:
        yield f"http://127.0.0.1:{ports.get(timeout=60)}"
    finally:
        process.terminate()  # SIGTERM: a graceful stop
        process.join(timeout=120)


async def _get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str
) -> dict[str, Any]:
    """Send one keep-alive GET and return its JSON body."""
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    length = next(
        int(line.split(":", 1)[1]) for line in head.split("\r\n")
        if line.lower().startswith("content-length:")
    )  # fmt: skip
    body = json.loads(await reader.readexactly(length))
    if status != 200:
        raise RuntimeError(f"{target}: HTTP {status} {body}")
    return body


async def _run(url: str, emails: list[str], concurrency: int) -> tuple[list[float], float]:
    """Return each request's latency (s) and the wall time of the whole run.

    A few lines of raw HTTP/1.1 over keep-alive connections instead of httpx: httpx's
    connection pool tops out near 100 requests/s at this concurrency and would measure itself.
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    latencies: list[float] = []
    queue = iter(emails)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for email in queue:
                started = time.perf_counter()
                body = await _get(reader, writer, f"/v1/verify?email={quote(email)}")
                latencies.append(time.perf_counter() - started)
                if body["partial"]:
                    raise RuntimeError(f"{email}: the deadline passed before the answer")
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def _report(name: str, latencies: list[float], wall_s: float, concurrency: int) -> None:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    print(
        f"{name:<7} {len(ordered):>5} requests, concurrency {concurrency}: "
        f"p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   {len(ordered) / wall_s:8.0f} req/s"
    )


def main() -> None:
    """Run both cases and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="cached requests")
    parser.add_argument("--fresh", type=int, default=200, help="fresh verifications")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="SMTP reply latency")
    args = parser.parse_args()

    fresh = [f"user{i}@d{i % DOMAINS}.test" for i in range(args.fresh)]
    servers = [
        ScriptedSmtp(f"127.0.0.{10 + d}", mailboxes=fresh, latency_ms=args.latency_ms)
        for d in range(DOMAINS)
    ]
    with running_dns_server() as dns, running_smtp_server(*servers) as first:
        for d in range(DOMAINS):
            dns.add_mx(f"d{d}.test", 10, f"mx.d{d}.test")
            dns.add(f"mx.d{d}.test", "A", f"127.0.0.{10 + d}")
        with _api_process(_settings(dns, first.port)) as url:
            print(
                f"mailprobe API bench: uvicorn on {url}, SMTP reply latency "
                f"{args.latency_ms:g} ms, {DOMAINS} domains with one MX host each"
            )
            latencies, wall = asyncio.run(_run(url, fresh, args.concurrency))
            _report("fresh", latencies, wall, args.concurrency)
            cached = [fresh[i % len(fresh)] for i in range(args.requests)]
            # One at a time shows the latency of an answer; then under load, its queueing.
            for concurrency in (1, args.concurrency):
                latencies, wall = asyncio.run(_run(url, cached, concurrency))
                _report("cached", latencies, wall, concurrency)
        sessions = sum(server.session_count for server in servers)
        print(f"SMTP sessions: {sessions} for {len(fresh)} fresh addresses")


if __name__ == "__main__":
    main()
