"""SendGridConnector: SendGrid Marketing lists as a Source and a Sink, over httpx.

It ties the package's parts together and holds one process's only state: the resolved list
and field ids, and each pulled contact's address (upserts go by email). No database, no SMTP,
never an import of mailprobe.

    prepare()  list names → ids; mailprobe's field names → this account's custom field ids
    pull()     export → poll → download every gzip file → CSV or NDJSON rows → Pages
    push()     chunks of ≤ 30,000 contacts and ≤ 6 MB → PUT → poll import jobs → PushReport
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from ..base import Contact, FieldUpdate, Page, PushOutcome, PushReport
from ..http_policy import Clock, RetryPolicy, Sleep
from . import upsert
from .export import contacts_in, export_urls
from .http import Limits, SendGridHttp
from .provisioning import CUSTOM_FIELD_LIMIT, CustomField, Lists, resolve_fields, resolve_lists
from .upsert import MAX_UPSERT_BYTES, MAX_UPSERT_CONTACTS, Row

DEFAULT_BASE_URL = "https://api.sendgrid.com"
#: The most of one export file read (1 GiB); the export is asked for files no larger.
MAX_EXPORT_FILE_BYTES = 1 << 30
_MAX_BACKOFF_S = 60.0


class SendGridConnector:
    """SendGrid Marketing lists as a Source and a Sink, over httpx."""

    is_sorted = False
    #: Records one push() can take at once: it splits them into upserts of ≤ 30,000 / ≤ 6 MB
    #: itself, and each upsert costs a job poll, so bigger batches mean far fewer calls.
    push_batch = MAX_UPSERT_CONTACTS

    def __init__(
        self,
        name: str,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        lists: Sequence[str] = (),
        invalid_list: str | None = None,
        poll_interval_s: float = 2.0,
        max_poll_s: float = 600,
        file_type: str = "csv",
        page_size: int = 1000,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_rate_wait_s: float = 300,
        timeout_s: float = 60,
        field_limit: int = CUSTOM_FIELD_LIMIT,
        max_upsert_contacts: int = MAX_UPSERT_CONTACTS,
        max_upsert_bytes: int = MAX_UPSERT_BYTES,
        max_export_file_bytes: int = MAX_EXPORT_FILE_BYTES,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
    ) -> None:
        if file_type not in ("csv", "json"):
            raise ValueError("file_type must be 'csv' or 'json'")
        self.name = name
        self._lists_wanted = tuple(lists)
        self._invalid_wanted = invalid_list
        self._file_type = file_type
        self._page_size = page_size
        self._field_limit = field_limit
        # Smaller chunks are allowed (lighter requests, tests); larger ones never.
        self._max_upsert_contacts = min(max_upsert_contacts, MAX_UPSERT_CONTACTS)
        self._max_upsert_bytes = min(max_upsert_bytes, MAX_UPSERT_BYTES)
        policy = RetryPolicy(
            max_attempts=max_retries + 1,
            backoff_s=backoff_s,
            backoff_cap_s=_MAX_BACKOFF_S,
            max_wait_s=max_rate_wait_s,
        )
        self._http = SendGridHttp(
            name,
            api_key=api_key,
            base_url=base_url,
            timeout_s=timeout_s,
            limits=Limits(policy, poll_interval_s, max_poll_s, max_export_file_bytes),
            sleep=sleep,
            clock=clock,
        )
        self._lists: Lists | None = None
        self._fields: dict[str, CustomField] | None = None
        self._emails: dict[str, str] = {}  # contact id → email, from the last pull

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> SendGridConnector:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    async def prepare(self) -> None:
        """Resolve the configured lists and create the custom fields this sink writes."""
        self._lists = await resolve_lists(self._http, self._lists_wanted, self._invalid_wanted)
        self._fields = await resolve_fields(self._http, field_limit=self._field_limit)

    @property
    def fields(self) -> Mapping[str, CustomField]:
        """Return field name → this account's custom field, once prepare() has run."""
        return dict(self._fields or {})

    @property
    def list_ids(self) -> tuple[str, ...]:
        """Return the ids of the lists pulled (empty: all contacts), once resolved."""
        return self._lists.pulled if self._lists else ()

    @property
    def invalid_list_id(self) -> str | None:
        """Return the id of the list invalid contacts are added to, once resolved."""
        return self._lists.invalid if self._lists else None

    async def _ensure_lists(self) -> Lists:
        if self._lists is None:
            self._lists = await resolve_lists(self._http, self._lists_wanted, self._invalid_wanted)
        return self._lists

    async def _ensure_fields(self) -> dict[str, CustomField]:
        if self._fields is None:
            self._fields = await resolve_fields(self._http, field_limit=self._field_limit)
        return self._fields

    # -- pull --------------------------------------------------------------------------------

    async def pull(self, since: str | None, *, signpost: datetime) -> AsyncIterator[Page]:
        """Yield every contact of the lists, in pages with no cursor.

        An export has no "changed since" filter, so `since` is not used: each pass reads the
        whole lists and the pipeline compares addresses and values with its store; as for any
        unsorted source, the pipeline moves the cursor itself once the pull is complete.
        """
        lists = await self._ensure_lists()
        urls = await export_urls(self._http, lists.pulled, file_type=self._file_type)
        seen: set[str] = set()
        with tempfile.TemporaryDirectory(prefix="mailprobe-sendgrid-") as folder:
            for number, url in enumerate(urls):
                path = await self._http.download(url, Path(folder) / f"part-{number}")
                found = contacts_in(path, self._fields or {}, seen, connector=self.name)
                for batch in self._batches(found):
                    yield Page(tuple(batch))
                path.unlink()

    def _batches(self, contacts: Iterable[Contact]) -> Iterator[list[Contact]]:
        batch: list[Contact] = []
        for contact in contacts:
            if contact.email:
                self._emails[contact.external_id] = contact.email
            batch.append(contact)
            if len(batch) >= self._page_size:
                yield batch
                batch = []
        if batch:
            yield batch

    # -- push --------------------------------------------------------------------------------

    async def push(self, updates: Sequence[FieldUpdate]) -> PushReport:
        """Upsert the updates by email, poll their import jobs, and report every record."""
        fields = await self._ensure_fields()
        lists = await self._ensure_lists()
        outcome = PushOutcome()
        plain, invalid = self._rows(updates, fields, lists.invalid, outcome)
        jobs: list[tuple[str, list[Row]]] = []
        for rows, list_id in ((plain, None), (invalid, lists.invalid)):
            ids = [list_id] if list_id else []
            envelope = len(upsert.upsert_body([], ids))
            for chunk in upsert.chunks(
                rows,
                envelope=envelope,
                max_count=self._max_upsert_contacts,
                max_bytes=self._max_upsert_bytes,
            ):
                jobs.extend(await self._submit(chunk, ids, outcome))
        for job_id, rows in jobs:
            await upsert.settle(self._http, job_id, rows, outcome)
        return outcome.report()

    async def _submit(
        self, rows: list[Row], list_ids: Sequence[str], outcome: PushOutcome
    ) -> list[tuple[str, list[Row]]]:
        """Send one upsert; return its (job id, rows)."""
        return await upsert.submit(self._http, rows, list_ids, outcome)

    def _rows(
        self,
        updates: Sequence[FieldUpdate],
        fields: Mapping[str, CustomField],
        invalid_list: str | None,
        outcome: PushOutcome,
    ) -> tuple[list[Row], list[Row]]:
        """Return the updates encoded as upsert rows: (others, those for the invalid list)."""
        latest = {update.external_id: update for update in updates}
        plain: list[Row] = []
        invalid: list[Row] = []
        for update in latest.values():
            email = self._email_of(update)
            if not email:
                why = "no email address known for this contact; SendGrid upserts by email"
                outcome.fail([update.external_id], why)
                continue
            to_invalid = invalid_list is not None and (
                update.fields.get("mailprobe_status") == "invalid"
            )
            try:
                row = upsert.encode(update, email, fields, to_invalid=to_invalid)
            except ValueError as exc:
                outcome.fail([update.external_id], str(exc))
                continue
            if row is None:
                outcome.written.append(update.external_id)
            else:
                (invalid if to_invalid else plain).append(row)
        return plain, invalid

    def _email_of(self, update: FieldUpdate) -> str | None:
        """Return the address to upsert: the update's, the last pull's, or the verified one."""
        email = update.email or self._emails.get(update.external_id)
        if not email:
            verified = update.fields.get("mailprobe_verified_email")
            email = verified if isinstance(verified, str) else None
        return email.strip().lower() if email else None
