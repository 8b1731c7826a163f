"""Doubles of what a pass works with: a settable clock, a scripted verifier, an in-memory CRM,
and drop-folder helpers. For tests of the pipeline, the daemon and the commands around them."""

from __future__ import annotations

import asyncio
import csv
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from mailprobe.connectors.base import Contact, FieldUpdate, Page, PushReport
from mailprobe.connectors.csvdrop import DropFolder
from mailprobe.connectors.errors import RetriableConnectorError
from mailprobe.engine.result import Reason, Status, VerificationResult

from mailprobe.pipeline import CsvDrop, PassReport
from tests.fakes.results import NOW, make_result

Answer = Callable[[str], tuple[Status, Reason | None]]


class Clock:
    """A settable clock for the pipeline and the fake verifier."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def by_local_part(email: str) -> tuple[Status, Reason | None]:
    """valid unless the local part names another status (bad@, unknown@, grey@)."""
    local = email.partition("@")[0].strip().lower()
    if "@" not in email:
        return Status.INVALID, Reason.INVALID_SYNTAX
    return {
        "bad": (Status.INVALID, Reason.MAILBOX_NOT_FOUND),
        "unknown": (Status.UNKNOWN, Reason.TIMEOUT),
        "grey": (Status.UNKNOWN, Reason.GREYLISTED),
    }.get(local, (Status.VALID, None))


class FakeVerifier:
    """Answers from a function of the address; records every address it was asked about."""

    def __init__(self, clock: Clock, answer: Answer = by_local_part) -> None:
        self.clock = clock
        self.answer = answer
        self.seen: list[str] = []
        self.after_each: Callable[[int], None] = lambda count: None

    async def verify_many(
        self, emails: Iterable[str] | AsyncIterable[str]
    ) -> AsyncIterator[VerificationResult]:
        async for email in _aiter(emails):
            self.seen.append(email)
            status, reason = self.answer(email)
            self.after_each(len(self.seen))
            yield make_result(email, status, reason, at=self.clock())


async def _aiter(items: Iterable[str] | AsyncIterable[str]) -> AsyncIterator[str]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


@dataclass
class Record:
    email: str | None
    updated_at: datetime
    fields: dict[str, str] = field(default_factory=dict)


class FakeCrm:
    """An in-memory CRM: pulls records by updated_at, applies pushed fields, records pushes."""

    def __init__(self, name: str = "crm", *, is_sorted: bool = True, page_size: int = 2) -> None:
        self.name = name
        self.is_sorted = is_sorted
        self.page_size = page_size
        self.records: dict[str, Record] = {}
        self.pushes: list[list[FieldUpdate]] = []
        self.gone: set[str] = set()
        self.refuse: set[str] = set()
        self.fail_after_pages: int | None = None
        self.prepare_error: Exception | None = None
        self.reads_back = True  # pulled contacts carry their mailprobe_* values
        self.pull_calls: list[str | None] = []

    async def prepare(self) -> None:
        if self.prepare_error is not None:
            raise self.prepare_error

    async def pull(self, since: str | None, *, signpost: datetime) -> AsyncIterator[Page]:
        self.pull_calls.append(since)
        start = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
        chosen = sorted(
            (r.updated_at, i)
            for i, r in self.records.items()
            if (start is None or r.updated_at >= start) and r.updated_at <= signpost
        )
        if not self.is_sorted:
            chosen.reverse()
        for number, at in enumerate(range(0, len(chosen), self.page_size)):
            if self.fail_after_pages is not None and number >= self.fail_after_pages:
                raise RetriableConnectorError(self.name, "503 from the API")
            page = chosen[at : at + self.page_size]
            contacts = tuple(self._contact(i) for _, i in page)
            cursor = page[-1][0].strftime("%Y-%m-%dT%H:%M:%SZ") if self.is_sorted else None
            yield Page(contacts, cursor=cursor)

    def _contact(self, external_id: str) -> Contact:
        record = self.records[external_id]
        fields = dict(record.fields) if self.reads_back else {}
        return Contact(external_id, record.email, record.updated_at, fields)

    async def push(self, updates: Sequence[FieldUpdate]) -> PushReport:
        self.pushes.append(list(updates))
        written, gone, failed = [], [], []
        for update in updates:
            if update.external_id in self.gone:
                gone.append(update.external_id)
            elif update.external_id in self.refuse:
                failed.append((update.external_id, "bad value"))
            else:
                record = self.records[update.external_id]
                for name, value in update.fields.items():
                    record.fields[name] = _wire(value)
                written.append(update.external_id)
        return PushReport(tuple(written), tuple(gone), tuple(failed))

    async def aclose(self) -> None:
        pass

    def pushed_fields(self) -> list[dict[str, object]]:
        return [dict(u.fields) for batch in self.pushes for u in batch]


def _wire(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def drop_in(tmp_path: Path, name: str, rows: Iterable[Sequence[str]], *, age_s: float = 60) -> Path:
    """Write a CSV into the drop folder's inbox, its mtime `age_s` in the past (settled)."""
    folder = DropFolder(tmp_path / "drop", settle_s=5)
    folder.ensure_layout()
    path = folder.inbox / name
    with path.open("w", newline="", encoding="utf-8") as stream:
        csv.writer(stream).writerows(rows)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def read_output(tmp_path: Path, name: str) -> list[dict[str, str]]:
    with (tmp_path / "drop" / "outbox" / name).open(encoding="utf-8-sig", newline="") as stream:
        return list(csv.DictReader(stream))


def csv_drop(tmp_path: Path) -> CsvDrop:
    return CsvDrop("drop", DropFolder(tmp_path / "drop", settle_s=5))


def crm_with(*records: tuple[str, str | None], **options: object) -> FakeCrm:
    crm = FakeCrm(**options)  # type: ignore[arg-type]
    for minute, (external_id, email) in enumerate(records):
        crm.records[external_id] = Record(email, NOW - timedelta(hours=2, minutes=-minute))
    return crm


class Passes:
    """Collects finished passes; a test waits for the ones it needs (an event, not a sleep)."""

    def __init__(self) -> None:
        self.reports: list[PassReport] = []
        self._changed = asyncio.Event()

    def __call__(self, report: PassReport) -> None:
        self.reports.append(report)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[list[PassReport]], bool]) -> None:
        async with asyncio.timeout(20):
            while not predicate(self.reports):
                self._changed.clear()
                await self._changed.wait()
