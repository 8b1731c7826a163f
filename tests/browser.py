"""Headless Chromium driven over the DevTools protocol: open a page, read it, see its errors.

Tests render the dashboard and /docs in a real browser with this. Chromium is Debian's
`chromium` package (`/usr/bin/chromium`); CHROMIUM names another binary. Only loopback URLs are
opened, with every background fetch of the browser's own switched off.

A small protocol client over `websockets` rather than a browser-automation framework: those
download a browser build of their own, which a closed network cannot do.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def chromium_path() -> str | None:
    """Return the Chromium binary to use, or None when none is installed."""
    named = os.environ.get("CHROMIUM")
    if named:
        return named if Path(named).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Rendered:
    """What a page came to: its DOM counts and text, and every error the browser reported."""

    errors: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)


class _Session:
    """One page's protocol session; events arriving meanwhile are kept for the caller."""

    def __init__(self, ws: ClientConnection, session_id: str | None) -> None:
        self._ws = ws
        self._session_id = session_id
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, timeout_s: float = 30, **params: Any) -> dict[str, Any]:
        """Send one command and return its result; events received before it are kept."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if self._session_id:
            message["sessionId"] = self._session_id
        self._ws.send(json.dumps(message))
        while True:
            reply = json.loads(self._ws.recv(timeout=timeout_s))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout_s: float = 30) -> dict[str, Any]:
        """Return the first event named `method`, reading more until it comes."""
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = json.loads(self._ws.recv(timeout=timeout_s))
            self.events.append(event)
            if event.get("method") == method:
                return event


class Browser:
    """A running headless Chromium; open() renders one page in a new tab."""

    def __init__(self, binary: str) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="mailprobe-chromium-")
        self._process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._exit = contextlib.ExitStack()
        self._ws = self._exit.enter_context(
            connect(self._devtools_url(), max_size=64 * 2**20, open_timeout=30)
        )
        self._browser = _Session(self._ws, None)

    def _devtools_url(self) -> str:
        """Return the browser's protocol address, which Chromium prints once it listens."""
        assert self._process.stderr is not None
        seen = []
        for line in self._process.stderr:  # blocks until the line comes, or Chromium exits
            if line.startswith("DevTools listening on "):
                # Keep reading, or Chromium blocks once the pipe is full.
                threading.Thread(target=self._process.stderr.read, daemon=True).start()
                return line.split(" on ", 1)[1].strip()
            seen.append(line)
        raise RuntimeError("Chromium exited before listening:\n" + "".join(seen[-20:]))

    def open(
        self,
        url: str,
        *,
        ready: str = "true",
        values: dict[str, str] | None = None,
        screenshot: Path | None = None,
        width: int = 1280,
    ) -> Rendered:
        """Load `url`, wait until the JS expression `ready` is true, evaluate `values`.

        Errors are console errors, uncaught exceptions and the browser's own error log
        (failed loads, refused content): a page that works reports none.
        """
        target = self._browser.send("Target.createTarget", url="about:blank")["targetId"]
        attached = self._browser.send("Target.attachToTarget", targetId=target, flatten=True)
        page = _Session(self._ws, attached["sessionId"])
        try:
            for domain in ("Page", "Runtime", "Log"):
                page.send(f"{domain}.enable")
            page.send("Emulation.setDeviceMetricsOverride", width=width, height=900,
                      deviceScaleFactor=1, mobile=False)  # fmt: skip
            page.send("Page.navigate", url=url)
            page.wait_event("Page.loadEventFired")
            _evaluate(page, _until(ready))
            rendered = Rendered(values={k: _evaluate(page, v) for k, v in (values or {}).items()})
            if screenshot is not None:
                _screenshot(page, screenshot, width)
            rendered.errors = _errors(page.events)
            return rendered
        finally:
            self._browser.send("Target.closeTarget", targetId=target)

    def close(self) -> None:
        """Close the browser and remove its profile."""
        with contextlib.suppress(Exception):
            self._browser.send("Browser.close", timeout_s=10)
        self._exit.close()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._profile.cleanup()


@contextlib.contextmanager
def running_browser(binary: str) -> Iterator[Browser]:
    """Yield a running headless Chromium, closed afterwards."""
    browser = Browser(binary)
    try:
        yield browser
    finally:
        browser.close()


def _until(condition: str) -> str:
    """Return a JS promise resolving when `condition` is true: checked at each animation frame,
    which follows every change the page makes, so this waits on the page rather than a clock."""
    return (
        "new Promise(done => { const check = () => (" + condition + ") ? done(true) : "
        "requestAnimationFrame(check); check(); })"
    )


def _evaluate(page: _Session, expression: str) -> Any:
    result = page.send(
        "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
    )
    if "exceptionDetails" in result:
        raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
    return result["result"].get("value")


def _screenshot(page: _Session, path: Path, width: int) -> None:
    height = _evaluate(page, "document.documentElement.scrollHeight")
    page.send("Emulation.setDeviceMetricsOverride", width=width, height=int(height),
              deviceScaleFactor=1, mobile=False)  # fmt: skip
    shot = page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def _errors(events: list[dict[str, Any]]) -> list[str]:
    """Return the errors among a page's protocol events, as readable lines."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            text = " ".join(str(a.get("value", a.get("description"))) for a in args)
            found.append(f"console: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            found.append(f"exception: {details.get('exception', {}).get('description', details)}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            found.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")
    return found
