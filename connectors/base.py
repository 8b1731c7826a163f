"""The sync vocabulary every connector speaks: contacts, cursors, pages, field updates.

A connector only translates one API to these types. It keeps no state, opens no database and
knows nothing of SMTP: the store saves its cursors, the pipeline decides what to verify and write.

    Contact      one record from a source: external_id, email, updated_at
    Cursor       the replication key value reached; the next pass reads from `>=` it
    Signpost     when the pass started; a cursor never moves past it
    State        a connector's cursors (a dict of strings), saved by the store
    Page         contacts, the cursor that is safe after them, ids that left the source
    sorted       contacts arrive in cursor order, so the cursor advances per page
    FieldUpdate  an external_id and only the fields whose value changed
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol, runtime_checkable

#: A CRM field value in Python terms; each connector turns it into its API's wire format.
#: None means "clear the field" (e.g. no suggestion).
FieldValue = str | int | bool | date | datetime | None

#: A connector's saved progress: cursor names to values (ISO timestamps or opaque tokens).
State = dict[str, str]


@dataclass(frozen=True, slots=True)
class Contact:
    """One record from a source, as the pipeline needs it."""

    external_id: str
    email: str | None  # None or "": the record has no address and is skipped
    updated_at: datetime | None = None  # the replication key value, when the source has one
    #: mailprobe_* values the record holds now, when the source reads them back; lets the
    #: pipeline skip a write the CRM already has (e.g. after a crash between write and record)
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Page:
    """A batch of contacts and the cursor that is safe once they are stored."""

    contacts: tuple[Contact, ...]
    cursor: str | None = None  # for sorted sources: resume from here after this page
    retired: tuple[str, ...] = ()  # external ids archived, merged or deleted at the source


@dataclass(frozen=True, slots=True)
class FieldUpdate:
    """The fields to write on one record: only those whose value changed."""

    external_id: str
    fields: Mapping[str, FieldValue]
    #: the record's address at the source; sinks that upsert by email (SendGrid) need it
    email: str | None = None


@dataclass(frozen=True, slots=True)
class PushReport:
    """What a sink did with a batch of updates; nothing is silently dropped."""

    written: tuple[str, ...] = ()  # external ids whose fields are now stored at the sink
    gone: tuple[str, ...] = ()  # ids the sink no longer has (deleted, merged): retire them
    failed: tuple[tuple[str, str], ...] = ()  # (external id, why): retried on a later pass


@dataclass(slots=True)
class PushOutcome:
    """A PushReport being built while a sink's push() works through its batches."""

    written: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def add(self, other: PushOutcome) -> None:
        """Take in what another batch's outcome holds."""
        self.written += other.written
        self.gone += other.gone
        self.failed += other.failed

    def fail(self, external_ids: Iterable[str], why: str) -> None:
        """Record these records as failed, for one reason."""
        self.failed.extend((external_id, why) for external_id in external_ids)

    def report(self) -> PushReport:
        """Return the finished report."""
        return PushReport(tuple(self.written), tuple(self.gone), tuple(self.failed))


@runtime_checkable
class Source(Protocol):
    """Where contacts come from."""

    name: str
    #: True when pull() yields contacts in cursor order, so the cursor advances per page
    is_sorted: bool

    def pull(self, since: str | None, *, signpost: datetime) -> AsyncIterator[Page]:
        """Yield pages of contacts changed at or after `since`, up to `signpost`."""
        ...


@runtime_checkable
class Sink(Protocol):
    """Where verification fields are written."""

    name: str

    async def prepare(self) -> None:
        """Create the fields this sink writes when missing; safe to call on every start."""
        ...

    async def push(self, updates: Sequence[FieldUpdate]) -> PushReport:
        """Write the updates; report per record, never raise for one bad record."""
        ...
