"""Notifications to the operator: a signed JSON webhook when something needs a person.

Events (notify.events):

- `pass_failed`: a connector's pass ended `failed` or `fatal` (the error says why);
- `connector_failing`: a connector's passes failed `notify.failures_in_a_row` times in a row
  (sent once, when the run of failures reaches that length);
- `connector_recovered`: a pass succeeded after such a run;
- `check_failed`: a check of our own side went bad (the resolver, the sender's reputation):
  anything may call `notify("check_failed", {...})`.

Each delivery is one POST of JSON: `{"id", "event", "time", "host", "summary", "details"}`,
with `X-Mailprobe-Event`, `X-Mailprobe-Delivery` (the id, the same on every attempt),
`X-Mailprobe-Timestamp` (Unix seconds) and, when `notify.secret` is set,
`X-Mailprobe-Signature: sha256=HEX`, the HMAC-SHA256 of `TIMESTAMP.BODY` under the secret.
A receiver recomputes it and refuses old timestamps (replays). Network errors, timeouts, 408,
429 and 5xx are retried `notify.attempts` times, the wait doubling from `notify.backoff_s` (or
the receiver's Retry-After); other answers end the delivery. Sending never blocks a pass: a
delivery runs as its own task, and details pass through the log mask (no secrets).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import httpx

from mailprobe.engine import format_time

from .logs import SecretMask
from .settings import NotifySettings
from .store import RunOutcome
from .store_async import AsyncStore

log = logging.getLogger(__name__)

#: A Retry-After longer than this is not waited for: the delivery gives up instead.
_MAX_WAIT_S = 300.0
#: Deliveries still retrying at shutdown get this long to finish.
_CLOSE_WAIT_S = 10.0
_RETRIED = frozenset({408, 429})
_FAILED = frozenset({RunOutcome.FAILED, RunOutcome.FATAL})


def _agent() -> str:
    try:
        return f"mailprobe/{version('mailprobe')}"
    except PackageNotFoundError:  # pragma: no cover - a checkout run without installing
        return "mailprobe"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Return the `X-Mailprobe-Signature` value: `sha256=` and the HMAC of `TIMESTAMP.BODY`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def pass_events(recent: Sequence[RunOutcome], *, threshold: int) -> list[str]:
    """Return the events a finished pass raises, from its connector's outcomes, newest first
    (passes that were stopped or interrupted left out: they say nothing of the connector)."""
    if not recent:
        return []
    if recent[0] in _FAILED:
        failing = ["connector_failing"] if _streak(recent) == threshold else []
        return ["pass_failed", *failing]
    return ["connector_recovered"] if _streak(recent[1:]) >= threshold else []


def _streak(outcomes: Sequence[RunOutcome]) -> int:
    """Return how many failures lead `outcomes`."""
    count = 0
    for outcome in outcomes:
        if outcome not in _FAILED:
            break
        count += 1
    return count


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event to send; the same id and body on every attempt."""

    id: str
    event: str
    body: bytes


class Notifier:
    """Sends events to notify.webhook_url; does nothing without one."""

    def __init__(
        self,
        settings: NotifySettings,
        *,
        store: AsyncStore | None = None,
        secrets: Iterable[str] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.store = store
        self.mask = SecretMask(secrets)
        self.clock = clock
        self.host = socket.gethostname()
        self.delivered: list[Delivery] = []  # what receivers accepted (tests, status)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        """Return True when a webhook is configured."""
        return self.settings.webhook_url is not None

    @property
    def longest_delivery_s(self) -> float:
        """Return how long one delivery can take with every attempt and wait (for `sync`)."""
        s = self.settings
        return s.attempts * s.timeout_s + s.backoff_s * (2 ** (s.attempts - 1) - 1) + 1

    # -- events --------------------------------------------------------------------------------

    def notify(self, event: str, details: Mapping[str, Any], *, summary: str = "") -> None:
        """Send `event` in the background (on the running loop), or now when none runs."""
        self._dispatch([self._delivery(event, details, summary)])

    def _dispatch(self, deliveries: Sequence[Delivery | None]) -> None:
        """Send the deliveries one after another: a receiver sees them in the order raised."""
        chosen = [d for d in deliveries if d is not None]
        if not chosen:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self._send_in_order(chosen))
            return
        task = loop.create_task(self._send_in_order(chosen))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_in_order(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            await self.send(delivery)

    def pass_finished(self, report: Any) -> None:
        """Raise the events of a finished pass (a PassReport): failure, failing, recovered.

        In the background: the pass's recent outcomes are read from the store first.
        """
        if not self.enabled or self.store is None or report.run_id is None:
            return  # a pass skipped (another process runs one) says nothing of the connector
        task = asyncio.get_running_loop().create_task(self._pass_events(report))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pass_events(self, report: Any) -> None:
        assert self.store is not None  # pass_finished() checked
        threshold = self.settings.failures_in_a_row
        recent = await self.store.recent_outcomes(report.connector, limit=threshold + 1)
        counts = report.counts
        details = {
            "connector": report.connector,
            "outcome": str(report.outcome),
            "error": report.error,
            "failures_in_a_row": _streak(recent),
            "counts": {
                "pulled": counts.pulled,
                "queued": counts.queued,
                "verified": counts.verified,
                "written": counts.written,
                "failed": counts.failed,
            },
        }
        deliveries = [
            self._delivery(event, details, _pass_summary(event, report, threshold))
            for event in pass_events(recent, threshold=threshold)
        ]
        await self._send_in_order([d for d in deliveries if d is not None])

    def _delivery(self, event: str, details: Mapping[str, Any], summary: str) -> Delivery | None:
        if not self.enabled or event not in self.settings.events:
            return None
        ident = str(uuid.uuid4())
        payload = {
            "id": ident,
            "event": event,
            "time": format_time(self.clock()),
            "host": self.host,
            "summary": self.mask(summary or event.replace("_", " ")),
            "details": json.loads(self.mask(json.dumps(details, default=str))),
        }
        body = json.dumps(payload, ensure_ascii=False).encode()
        return Delivery(ident, event, body)

    # -- delivery ------------------------------------------------------------------------------

    async def send(self, delivery: Delivery) -> bool:
        """POST one delivery, retrying as the module says; return True once it was accepted."""
        settings = self.settings
        wait = settings.backoff_s
        async with httpx.AsyncClient(timeout=settings.timeout_s) as client:
            for attempt in range(1, settings.attempts + 1):
                retry_after, why = await self._attempt(client, delivery)
                if why is None:
                    self.delivered.append(delivery)
                    return True
                if retry_after is None or attempt == settings.attempts:
                    break
                await asyncio.sleep(max(wait, retry_after))
                wait *= 2
        log.warning(
            "notification not delivered",
            extra={"event": delivery.event, "delivery": delivery.id, "error": why},
        )
        return False

    async def _attempt(
        self, client: httpx.AsyncClient, delivery: Delivery
    ) -> tuple[float | None, str | None]:
        """Try once; return (None, None) when accepted, else (wait before retrying or None to
        give up, why it failed)."""
        try:
            url = str(self.settings.webhook_url)
            headers = self._headers(delivery)
            response = await client.post(url, content=delivery.body, headers=headers)
        except httpx.HTTPError as exc:
            return 0.0, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if response.is_success:
            return None, None
        why = f"the receiver answered {response.status_code}"
        if response.status_code in _RETRIED or response.status_code >= 500:
            later = _retry_after(response.headers.get("retry-after"))
            return (None, why) if later > _MAX_WAIT_S else (later, why)
        return None, why

    def _headers(self, delivery: Delivery) -> dict[str, str]:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": _agent(),
            "X-Mailprobe-Event": delivery.event,
            "X-Mailprobe-Delivery": delivery.id,
            "X-Mailprobe-Timestamp": timestamp,
        }
        if self.settings.secret is not None:
            secret = self.settings.secret.get_secret_value()
            headers["X-Mailprobe-Signature"] = signature(secret, timestamp, delivery.body)
        return headers

    async def aclose(self, *, wait_s: float = _CLOSE_WAIT_S) -> None:
        """Let deliveries in flight finish (up to `wait_s`), then cancel the rest."""
        if not self._tasks:
            return
        done, pending = await asyncio.wait(set(self._tasks), timeout=wait_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def _pass_summary(event: str, report: Any, threshold: int) -> str:
    if event == "connector_failing":
        return f"{report.connector}: {threshold} passes failed in a row; last: {report.error}"
    if event == "connector_recovered":
        return f"{report.connector}: a pass succeeded again"
    return f"{report.connector}: pass {report.outcome}: {report.error}"


def _retry_after(value: str | None) -> float:
    """Return the seconds a Retry-After header asks for (0 when absent or a date)."""
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0


# -- the process's notifier: a hook for any part of mailprobe ----------------------------------

_installed: Notifier | None = None


def install(notifier: Notifier | None) -> None:
    """Make `notifier` the one notify() uses (the daemon and `sync` install theirs)."""
    global _installed
    _installed = notifier


def notify(event: str, details: Mapping[str, Any], *, summary: str = "") -> None:
    """Send `event` through the installed notifier; nothing happens without one.

    The hook for checks of our own side (`mailprobe doctor`, resolver sanity):
    `notify("check_failed", {"check": "resolver", "problem": "..."}, summary="...")`.
    """
    if _installed is not None:
        _installed.notify(event, details, summary=summary)
