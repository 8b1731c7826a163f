"""Passes of a CRM connector (a Source and Sink, e.g. HubSpot, SendGrid).

1. pull pages changed since the cursor, up to the signpost (the pass's start); each page's
   contacts are stored with the cursor in one transaction (sorted sources), or the cursor moves
   once the whole pull is stored (unsorted sources);
2. queue only new addresses, changed addresses and expired results: a fresh cached answer is
   reused without any SMTP;
3. verify the queue with the bulk engine (grouped by domain there), saving each result as it
   arrives, so a kill loses at most the verifications in flight;
4. write back, in batches, only the fields whose value changed: compared with what we last
   wrote and with what the source showed; gone records are retired, failed ones retried later.

Unknown answers never block a pass: they are saved with their retry time (freshness.py), and a
later pass or the retry job queues them again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from mailprobe.connectors.base import Contact, FieldUpdate, FieldValue, Page, PushReport
from mailprobe.connectors.fields import field_text, field_values, shows_value
from mailprobe.engine import clean_text, format_time, parse_time

from .locks import pass_lock
from .passes import PassContext, Tally
from .store import ContactToWrite, RunCounts

log = logging.getLogger("mailprobe.pipeline")  # one name for every pass's lines (log filters)

#: Records per Sink.push() call (HubSpot's batch limit is 100).
PUSH_BATCH = 100
#: Wait before writing again to a record the sink refused.
WRITE_RETRY = timedelta(minutes=15)


class CrmClient(Protocol):
    """A connector that is both Source and Sink (HubSpotConnector, SendGridConnector)."""

    name: str
    is_sorted: bool

    async def prepare(self) -> None: ...

    def pull(self, since: str | None, *, signpost: datetime) -> AsyncIterator[Page]: ...

    async def push(self, updates: Sequence[FieldUpdate]) -> PushReport: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CrmConnector:
    """A CRM or ESP connector, as wired from settings."""

    name: str
    client: CrmClient


def changed_fields(contact: ContactToWrite) -> tuple[dict[str, FieldValue], dict[str, str]]:
    """Return the fields to write (changed since written and not already at the source) and
    the canonical text of every field, to record once written."""
    values = field_values(contact.result, next_check=contact.expires_at.date())
    texts = {name: field_text(value) for name, value in values.items()}
    source = contact.source
    changed = {
        name: value
        for name, value in values.items()
        if texts[name] != contact.written.get(name)
        and not (source and shows_value(source.get(name), value))
    }
    return changed, texts


def next_cursor(since: str | None, newest: datetime | None, *, signpost: datetime) -> str | None:
    """Return the cursor after a complete unsorted pull, or None to keep `since`.

    The newest `updated_at` seen, never past the signpost: contacts a search index had not yet
    caught up with are read again next time rather than skipped. A first pass that saw nothing
    starts the next one from the signpost.
    """
    if newest is not None:
        return format_time(min(newest, signpost))
    return format_time(signpost) if since is None else None


def capped(cursor: str | None, *, signpost: datetime) -> str | None:
    """Return a sorted page's cursor, moved back to the signpost if it is past it."""
    if cursor is None:
        return None
    try:
        moment = parse_time(cursor)
    except ValueError:
        return cursor  # an opaque token: the connector's own business
    return format_time(signpost) if moment > signpost else cursor


class CrmPasses:
    """Runs the passes of CRM connectors: pull, verify, write back; or only the retries."""

    def __init__(self, ctx: PassContext) -> None:
        self.ctx = ctx
        self._prepared: set[str] = set()

    async def run(self, connector: CrmConnector, tally: Tally, *, retry_only: bool) -> None:
        """Run one pass of `connector` (with `retry_only`, its due retries only)."""
        if retry_only:
            await self._retry(connector, tally)
            return
        await self._prepare(connector)
        await self._pull(connector, tally)
        if not self.ctx.stopping:
            await self._retry(connector, tally)

    async def _retry(self, connector: CrmConnector, tally: Tally) -> None:
        """Queue expired answers of live contacts, verify the queue, write what changed."""
        tally.queued += await self.ctx.store.enqueue_expired(connector.name, now=self.ctx.clock())
        tally.verified += await self.ctx.verify_queue(connector.name)
        if not self.ctx.stopping:
            await self._push(connector, tally)

    async def _pull(self, connector: CrmConnector, tally: Tally) -> None:
        name, client = connector.name, connector.client
        signpost = self.ctx.clock()
        since = await self.ctx.store.cursor(name)
        newest: datetime | None = None
        async with aclosing(_closable(client.pull(since, signpost=signpost))) as pages:
            async for page in pages:
                cursor = capped(page.cursor, signpost=signpost) if client.is_sorted else None
                contacts = [_valid_text(contact) for contact in page.contacts]
                counts = await self.ctx.store.record_page(
                    name, contacts, retired=page.retired, cursor=cursor, now=self.ctx.clock()
                )
                tally.pulled += counts.stored
                tally.queued += counts.queued
                stamps = [c.updated_at for c in page.contacts if c.updated_at is not None]
                newest = max([*stamps, newest] if newest else stamps, default=None)
                if self.ctx.stopping:
                    return  # an unsorted pull's cursor stays: the next pass reads it all again
        if not client.is_sorted:
            cursor = next_cursor(since, newest, signpost=signpost)
        elif await self.ctx.store.cursor(name) is None:
            # A first pass that found nothing: the next one starts here, not at the backfill.
            cursor = format_time(signpost)
        else:
            cursor = None
        if cursor is not None:
            await self.ctx.store.advance_cursor(name, cursor, now=self.ctx.clock())

    async def _prepare(self, connector: CrmConnector) -> None:
        if connector.name not in self._prepared:
            await connector.client.prepare()
            self._prepared.add(connector.name)

    async def write_back(self, connector: CrmConnector, emails: Sequence[str]) -> RunCounts:
        """Write the current answer to the contacts holding one of `emails`, as a pass would
        (only fields whose value changed); return what was written and what failed.

        Holds the connector's pass lock (ConnectorBusy when a pass has it). Not logged as a
        pass: `mailprobe recheck` reports it.
        """
        tally = Tally()
        with pass_lock(self.ctx.store.path, connector.name):
            await self._prepare(connector)
            await self._push(connector, tally, emails=emails)
        return tally.counts()

    async def _push(
        self, connector: CrmConnector, tally: Tally, *, emails: Sequence[str] | None = None
    ) -> None:
        name = connector.name
        # Sinks with large bulk calls (SendGrid: 30,000 per upsert) say so; one job per batch.
        batch_size = getattr(connector.client, "push_batch", PUSH_BATCH)
        after = 0
        while not self.ctx.stopping:
            batch = await self.ctx.store.contacts_to_write(
                name, after_id=after, limit=batch_size, now=self.ctx.clock(), emails=emails
            )
            if not batch:
                return
            after = batch[-1].id
            updates, texts, in_sync = [], {}, {}
            for contact in batch:
                changed, all_texts = changed_fields(contact)
                if changed:
                    updates.append(FieldUpdate(contact.external_id, changed, email=contact.email))
                    texts[contact.external_id] = {k: all_texts[k] for k in changed}
                else:
                    in_sync[contact.external_id] = all_texts
            if in_sync:
                await self.ctx.store.mark_written(name, in_sync)
            if updates:
                report = await connector.client.push(updates)
                await self._record_push(name, report, texts, tally)

    async def _record_push(
        self,
        name: str,
        report: PushReport,
        texts: Mapping[str, Mapping[str, str]],
        tally: Tally,
    ) -> None:
        await self.ctx.store.mark_written(name, {i: texts[i] for i in report.written if i in texts})
        await self.ctx.store.retire(name, report.gone)
        reported = {*report.written, *report.gone, *(i for i, _ in report.failed)}
        failed = [
            *report.failed,
            *((i, "not reported by the sink") for i in texts if i not in reported),
        ]
        for external_id, why in failed:
            log.warning(
                "write failed", extra={"connector": name, "external_id": external_id, "error": why}
            )
        await self.ctx.store.mark_write_failed(
            name, [i for i, _ in failed], retry_at=self.ctx.clock() + WRITE_RETRY
        )
        tally.written += len(report.written)
        tally.failed += len(failed)


def _valid_text(contact: Contact) -> Contact:
    """Return the contact with an id and address that are valid Unicode.

    JSON can carry a lone surrogate ("\\udcff"), which no UTF-8 store or file can hold: one such
    record would fail its page on every pass. It becomes U+FFFD (the address is then
    invalid_syntax), where the CRM's text enters the application.
    """
    email, external_id = contact.email or "", contact.external_id
    if email.isascii() and external_id.isascii():
        return contact
    return replace(
        contact,
        email=clean_text(email, limit=len(email) or 1) if email else contact.email,
        external_id=clean_text(external_id, limit=len(external_id) or 1),
    )


def _closable(pages: AsyncIterator[Page]) -> Any:
    """Return `pages` with an aclose() (async generators have one; plain iterators get one)."""
    if hasattr(pages, "aclose"):
        return pages

    async def wrapped() -> AsyncIterator[Page]:
        async for page in pages:
            yield page

    return wrapped()
