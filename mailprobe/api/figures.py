"""What the dashboard shows, read from the store in one go: values only, no HTML.

Owns which store verbs feed the dashboard and over which windows; the SQL is the store's, the
drawing is panels.py's. gather() runs on the API's store-reading thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailprobe.engine import parse_time

from ..store import DayCount, DeferringDomain, PassRecord, QueueDepth, RetryDepth, Store

#: Days of list health the dashboard charts.
HEALTH_DAYS = 30
#: How far back a deferral still counts as "currently deferring".
DEFERRING_WINDOW = timedelta(hours=24)
#: Passes listed and charted per connector.
PASSES_SHOWN = 20
#: Deferring domains listed, most addresses first.
DEFERRING_SHOWN = 20


@dataclass(frozen=True, slots=True)
class DoctorCheck:
    """One pre-flight check of `mailprobe doctor`."""

    name: str  # "resolver", "port 25", "PTR"…
    outcome: str  # "ok", "warning" or "failed"
    detail: str


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """The last `mailprobe doctor` run."""

    ran_at: datetime
    checks: tuple[DoctorCheck, ...]


@dataclass(frozen=True, slots=True)
class Figures:
    """Everything the dashboard shows, as of `now`."""

    now: datetime
    by_status: Mapping[str, int]
    by_day: Sequence[DayCount]
    passes: Mapping[str, Sequence[PassRecord]]  # per connector, newest first
    queue: Sequence[QueueDepth]
    retries: RetryDepth
    deferring: Sequence[DeferringDomain]
    doctor: DoctorReport | None


def gather(store: Store, connectors: Iterable[str], *, now: datetime) -> Figures:
    """Return the dashboard's figures: configured connectors and any with logged passes."""
    names = list(dict.fromkeys([*connectors, *store.pass_connectors()]))
    start = (now - timedelta(days=HEALTH_DAYS - 1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return Figures(
        now=now,
        by_status=store.results_by_status(),
        by_day=store.results_by_day(since=start),
        passes={name: store.recent_passes(name, limit=PASSES_SHOWN) for name in names},
        queue=store.queue_depths(names),
        retries=store.retry_depth(now=now),
        deferring=store.deferring_domains(since=now - DEFERRING_WINDOW, limit=DEFERRING_SHOWN),
        doctor=last_doctor(store),
    )


#: The doctor's outcomes in the dashboard's words.
_DOCTOR_OUTCOMES = {"ok": "ok", "warn": "warning", "fail": "failed", "skip": "skipped"}


def last_doctor(store: Store) -> DoctorReport | None:
    """Return the last stored doctor run (`mailprobe doctor` or `run`'s pre-flight), or None."""
    stored = store.last_doctor_report()
    if stored is None:
        return None
    checks = tuple(
        DoctorCheck(
            f["check"], _DOCTOR_OUTCOMES.get(f["outcome"], f["outcome"]), f.get("found") or ""
        )
        for f in stored.get("findings", ())
    )
    return DoctorReport(ran_at=parse_time(stored["checked_at"]), checks=checks)


def days_of(now: datetime) -> list[str]:
    """Return the UTC days the health chart covers, oldest first (`2026-11-27`)."""
    today = now.date()
    return [(today - timedelta(days=n)).isoformat() for n in range(HEALTH_DAYS - 1, -1, -1)]


def by_day_table(counts: Sequence[DayCount], days: Sequence[str]) -> dict[str, list[int]]:
    """Return, per status, its count on each of `days` (0 where none)."""
    index = {day: i for i, day in enumerate(days)}
    table: dict[str, list[int]] = {}
    for count in counts:
        if count.day in index:
            table.setdefault(count.status, [0] * len(days))[index[count.day]] += count.count
    return table
