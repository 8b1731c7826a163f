"""A webhook receiver on loopback: records every POST, answers with scripted statuses.

http.server in a thread (a real HTTP server: the notifier's own client talks to it over TCP).
It checks nothing itself; tests verify signatures with the secret they configured.

    receiver.answers.extend([503, 200])     # the next two requests; 200 after the script ends
    receiver.wait_for(2)                    # until two requests arrived (deadline, no sleep)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived."""

    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """Records POSTs to any path; answers each with the next scripted status (then 200)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: list[int] = []
        self.retry_after: str | None = None
        self._seen = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hooks/mailprobe"

    def events(self) -> list[str]:
        with self._seen:
            return [r.json()["event"] for r in self.received]

    def wait_for(self, count: int, timeout: float = 30) -> bool:
        with self._seen:
            return self._seen.wait_for(lambda: len(self.received) >= count, timeout)

    def _record(self, request: Received) -> tuple[int, str | None]:
        with self._seen:
            self.received.append(request)
            status = self.answers.pop(0) if self.answers else 200
            self._seen.notify_all()
            return status, self.retry_after if status != 200 else None

    def __enter__(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, retry_after = receiver._record(Received(self.path, headers, body))
                self.send_response(status)
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """Yield a running receiver for one test; `.url` is where to point notify.webhook_url."""
    with WebhookReceiver() as receiver:
        yield receiver
