"""The API's Prometheus metrics and the middleware that times, counts and logs each request.

Owns the metric names and labels, and the one log line per request: the route, never the URL
(query strings hold addresses), and the caller's key id, never the key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailprobe.engine import VerificationResult

from ..store import StatusSummary

log = logging.getLogger(__package__)  # "mailprobe.api", the one logger of the whole API


class _StoreFigures(Collector):
    """Queue depth and pass figures read from the store at scrape time."""

    def __init__(self) -> None:
        self.summary: StatusSummary | None = None

    def collect(self) -> Iterable[Metric]:
        """Yield the figures of the last summary; nothing without a store."""
        summary = self.summary
        if summary is None:
            return
        queue = GaugeMetricFamily(
            "mailprobe_queue_depth", "Addresses waiting for verification.", labels=["connector"]
        )
        families = {
            "verified": "Addresses verified by the connector's passes.",
            "written": "Records or rows written back by the connector's passes.",
            "errors": "Failed passes and failed writes of the connector.",
        }
        counters = {
            name: CounterMetricFamily(f"mailprobe_connector_{name}", text, labels=["connector"])
            for name, text in families.items()
        }
        last = GaugeMetricFamily(
            "mailprobe_connector_last_pass_end_timestamp_seconds",
            "When the connector's last pass ended (Unix time), by its outcome.",
            labels=["connector", "outcome"],
        )
        for status in summary.connectors:
            queue.add_metric([status.connector], status.queued)
            for name, family in counters.items():
                family.add_metric([status.connector], getattr(status, name))
            if status.last_ended is not None and status.last_outcome is not None:
                last.add_metric(
                    [status.connector, str(status.last_outcome)], status.last_ended.timestamp()
                )
        stored = GaugeMetricFamily(
            "mailprobe_results_stored", "Results in the store, by status.", labels=["status"]
        )
        for name, count in summary.results_by_status.items():
            stored.add_metric([name], count)
        yield queue
        yield from counters.values()
        yield last
        yield stored


_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_VERIFY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class ApiMetrics:
    """The API's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.verifications = Counter(
            "mailprobe_verifications",
            "Verifications the engine finished for the API, by status and reason.",
            ["status", "reason"],
            registry=r,
        )
        self.smtp_checks = Counter(
            "mailprobe_smtp_checks",
            "Addresses that reached the SMTP step, by provider and outcome (the result's "
            "reason); addresses of one domain may share a session.",
            ["provider", "outcome"],
            registry=r,
        )
        self.verification_seconds = Histogram(
            "mailprobe_verification_seconds",
            "Time the engine took to verify one address.",
            buckets=_VERIFY_BUCKETS,
            registry=r,
        )
        self.answers = Counter(
            "mailprobe_api_answers",
            "Addresses answered, by source: verified, joined, cache, partial, syntax.",
            ["source"],
            registry=r,
        )
        self.requests = Counter(
            "mailprobe_api_requests", "HTTP requests, by route and status.", ["route", "code"],
            registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "mailprobe_api_request_seconds",
            "Time to answer an HTTP request, by route.",
            ["route"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "mailprobe_api_verifications_in_flight",
            "Addresses being looked up or verified now, background ones included.",
            registry=r,
        )
        self.store_figures = _StoreFigures()
        r.register(self.store_figures)

    def record(self, result: VerificationResult) -> None:
        """Count one finished verification."""
        self.verifications.labels(str(result.status), str(result.reason)).inc()
        smtp = result.checks.smtp
        if smtp is not None:
            self.smtp_checks.labels(smtp.smtp_provider or "unknown", str(result.reason)).inc()
        self.verification_seconds.observe(result.response_time_ms / 1000)

    def exposition(self) -> bytes:
        """Return the metrics in Prometheus' text format."""
        return generate_latest(self.registry)


class Observe:
    """ASGI middleware: times and counts every request, and logs one line without secrets."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.request_seconds.labels(path).observe(seconds)
            level = logging.DEBUG if status < 400 else logging.INFO
            if status >= 500:
                level = logging.WARNING
            # The route, never the URL: query strings carry addresses.
            log.log(level, "%s %s %d %.1fms caller=%s", scope["method"], path, status,
                    seconds * 1000, scope.get("mailprobe.caller", "-"))  # fmt: skip
