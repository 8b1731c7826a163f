"""SendGrid's HTTP: one client for the API (with the key), one for pre-signed export files.

Every API call goes through `SendGridHttp.call()`: announced per-endpoint quotas waited out,
429/5xx/network failures retried under the shared policy (connectors.http_policy), and any other
answer mapped to our ConnectorError tree by `error_for()`, the one place that does it. The key is
sent only to base_url's origin: export files are pre-signed URLs, fetched without it, and never
more than `max_file_bytes` of one is kept.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ..errors import (
    ConnectorAuthError,
    ConnectorError,
    FatalConnectorError,
    RetriableConnectorError,
)
from ..http_policy import (
    AnnouncedQuota,
    Clock,
    RetryPolicy,
    Sleep,
    error_class,
    retry_after_seconds,
    retrying,
)

log = logging.getLogger(__name__)

#: What an API key needs, in the words of SendGrid's API key permissions page.
NEEDED_PERMISSION = (
    "Marketing Campaigns with full access (scopes marketing.read, marketing_campaigns.read, "
    "marketing_campaigns.create, marketing_campaigns.update)"
)

_MAX_POLL_INTERVAL_S = 30.0


class _FileGone(Exception):
    """An export file answered 4xx: expired or refused; retrying now will not bring it back."""

    def __init__(self, status: int) -> None:
        self.status = status


def error_messages(response: httpx.Response) -> list[tuple[str | None, str]]:
    """Return (field, message) pairs of a SendGrid error body {"errors": [...]}."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()[:200]
        return [(None, text)] if text else []
    errors = body.get("errors") if isinstance(body, dict) else body
    if isinstance(errors, dict):
        errors = [errors]
    if not isinstance(errors, list):
        return []
    pairs = []
    for error in errors:
        if isinstance(error, dict):
            pairs.append((error.get("field") or None, str(error.get("message") or "").strip()))
    return pairs


def describe_errors(response: httpx.Response) -> str:
    """Return the API's messages as one line, or the status reason when it sent none."""
    parts = [f"{f}: {m}" if f else m for f, m in error_messages(response) if m]
    return "; ".join(parts) or response.reason_phrase or "no message"


def _where(request: httpx.Request) -> str:
    """Return `METHOD /path` of a request, without a query string (it may hold a signature)."""
    return f"{request.method} {request.url.path}"


def error_for(
    connector: str, response: httpx.Response, *, retry_after: float | None = None
) -> ConnectorError:
    """Return the ConnectorError an unsuccessful SendGrid response stands for."""
    status = response.status_code
    where = _where(response.request)
    kind = error_class(status)
    if kind is ConnectorAuthError and status == 401:
        return ConnectorAuthError(
            connector,
            f"SendGrid rejected the API key ({where}: {describe_errors(response)}); "
            "check the connector's api_key",
        )
    if kind is ConnectorAuthError:
        return ConnectorAuthError(
            connector,
            f"the API key may not call {where} ({describe_errors(response)}); "
            f"give it {NEEDED_PERMISSION}",
        )
    if status == 429:
        return RetriableConnectorError(
            connector, f"SendGrid rate limit reached at {where}", retry_after=retry_after
        )
    if kind is RetriableConnectorError:
        return RetriableConnectorError(
            connector,
            f"SendGrid server error {status} at {where}: {describe_errors(response)}",
            retry_after=retry_after,
        )
    return FatalConnectorError(
        connector, f"{where} failed with {status}: {describe_errors(response)}"
    )


def _header_float(response: httpx.Response, name: str) -> float | None:
    value = response.headers.get(name)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Limits:
    """How long and how much the connector's HTTP side waits, repeats and reads."""

    policy: RetryPolicy
    poll_interval_s: float  # the first wait between two polls of a job; it grows to 30 s
    max_poll_s: float  # the longest a job is polled before the pass moves on
    max_file_bytes: int  # the most of one export file read


class SendGridHttp:
    """The connector's HTTP side: API calls under the shared policy, polls, file downloads."""

    def __init__(
        self,
        connector: str,
        *,
        api_key: str,
        base_url: str,
        timeout_s: float,
        limits: Limits,
        sleep: Sleep,
        clock: Clock,
    ) -> None:
        self.connector = connector
        self.base = base_url.rstrip("/")
        self.limits = limits
        self.sleep = sleep
        self._clock = clock
        timeout = httpx.Timeout(timeout_s)
        self._api = httpx.AsyncClient(
            base_url=self.base,
            timeout=timeout,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
        )
        # Pre-signed export URLs live on another host and carry their own signature: the key
        # must never travel there.
        self._files = httpx.AsyncClient(timeout=timeout, follow_redirects=True)
        self._quota = AnnouncedQuota()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._api.aclose()
        await self._files.aclose()

    async def call(
        self,
        method: str,
        url: str,
        *,
        bucket: str,
        json_body: Any = None,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        accept: Sequence[int] = (),
    ) -> httpx.Response:
        """Return SendGrid's response, after waiting out rate limits and retrying 429 and 5xx."""
        headers = {"Content-Type": "application/json"} if content is not None else None

        async def attempt() -> httpx.Response:
            await self._respect_quota(bucket)
            try:
                response = await self._api.request(
                    method, url, json=json_body, content=content, params=params, headers=headers
                )
            except httpx.TransportError as exc:
                raise RetriableConnectorError(
                    self.connector, f"cannot reach SendGrid at {self.base} ({type(exc).__name__})"
                ) from exc
            self._quota.note(
                bucket,
                remaining=_header_float(response, "X-RateLimit-Remaining"),
                reset=_header_float(response, "X-RateLimit-Reset"),
            )
            if response.is_success or response.status_code in accept:
                return response
            raise error_for(self.connector, response, retry_after=self._asked_wait(response))

        return await retrying(attempt, self.limits.policy, sleep=self.sleep)

    def _asked_wait(self, response: httpx.Response) -> float | None:
        """Return the wait a 429 names (Retry-After, else the quota's reset), or None."""
        if response.status_code != 429:
            return None
        now = datetime.fromtimestamp(self._clock(), UTC)
        asked = retry_after_seconds(response.headers.get("Retry-After"), now=now)
        if asked is not None:
            return asked
        reset = _header_float(response, "X-RateLimit-Reset")
        return max(reset - self._clock(), 1.0) if reset is not None else None

    async def _respect_quota(self, bucket: str) -> None:
        """Wait for the endpoint's refresh period when its last answer said none are left."""
        wait = self._quota.wait(bucket, now=self._clock())
        if wait <= 0:
            return
        if wait > self.limits.policy.max_wait_s:
            raise RetriableConnectorError(
                self.connector,
                f"SendGrid rate limit for {bucket} resets in {wait:.0f}s",
                retry_after=wait,
            )
        log.info("%s: SendGrid rate limit for %s, waiting %.1fs", self.connector, bucket, wait)
        await self.sleep(wait)

    async def poll_delays(self) -> AsyncIterator[float]:
        """Yield after each wait of a bounded, growing poll schedule, until max_poll_s is spent."""
        waited = 0.0
        interval = self.limits.poll_interval_s
        while waited < self.limits.max_poll_s:
            delay = min(interval, self.limits.max_poll_s - waited)
            await self.sleep(delay)
            waited += delay
            yield waited
            interval = min(interval * 1.5, _MAX_POLL_INTERVAL_S)

    async def download(self, url: str, path: Path) -> Path:
        """Stream one pre-signed file to disk, as it came (gzip), and return its path.

        A file over max_file_bytes is refused (FatalConnectorError, nothing of it kept): the
        export asked SendGrid for files no larger, so a bigger one is not read into the disk.
        """
        where = f"{httpx.URL(url).host}{httpx.URL(url).path}"  # no query: it is the signature

        async def attempt() -> Path:
            try:
                return await self._fetch(url, path, where)
            except httpx.TransportError as exc:
                message = f"export file {where} failed (network error)"
                raise RetriableConnectorError(self.connector, message) from exc

        try:
            return await retrying(attempt, self.limits.policy, sleep=self.sleep)
        except _FileGone as gone:
            raise RetriableConnectorError(
                self.connector,
                f"export file {where} could not be read ({gone.status}); it may have expired, "
                "the next pass exports again",
            ) from None

    async def _fetch(self, url: str, path: Path, where: str) -> Path:
        async with self._files.stream("GET", url) as response:
            if not response.is_success:
                if response.status_code < 500:
                    raise _FileGone(response.status_code)
                message = f"export file {where} failed ({response.status_code})"
                raise RetriableConnectorError(self.connector, message)
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self.limits.max_file_bytes:
                raise self._too_big(where)
            size = 0
            with path.open("wb") as out:
                async for block in response.aiter_bytes():
                    size += len(block)
                    if size > self.limits.max_file_bytes:
                        out.close()
                        path.unlink()
                        raise self._too_big(where)
                    out.write(block)
        return path

    def _too_big(self, where: str) -> FatalConnectorError:
        return FatalConnectorError(
            self.connector,
            f"export file {where} is larger than {self.limits.max_file_bytes:,} bytes, the most "
            "mailprobe reads of one file; no contact of it was taken, and the cursor is kept",
        )

    async def get_file(self, url: str) -> httpx.Response | None:
        """Return an import job's errors file (from the API or a pre-signed URL), or None."""
        if httpx.URL(url).host == httpx.URL(self.base).host:
            return await self.call("GET", url, bucket="import_errors")
        response = await self._files.get(url)
        return response if response.is_success else None
