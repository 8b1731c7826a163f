"""The SQLite store: the only module with SQL. Every verb is one transaction.

It keeps contacts per connector, the result cache (one answer per normalised address, with its
expiry), each raw address's normalised form, the verification queue, cursors, domain facts,
drop-folder file progress and a log of passes. It decides nothing: freshness.py says what a
result replaces and how long it lives, contact_state.py where a contact stands; the pipeline
says what to pull, verify and write. Event-loop callers reach it through store_async.py.

Durability: WAL journal, `synchronous=NORMAL` (a killed process loses no committed transaction;
only a power cut can lose the last ones), a busy timeout for concurrent connections. Write
verbs open with `BEGIN IMMEDIATE` so two connections (the daemon and a `sync`) wait for each
other instead of failing on a stale read snapshot. Any sqlite3 error leaves as a StoreError
whose message says what to do (StoreBusy when the write lock stayed busy: worth retrying).

Times are stored as TEXT in one format (`_ts`), so text order is time order.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from mailprobe.connectors.base import Contact
from mailprobe.engine import Reason, VerificationResult

from .contact_state import (
    LIVE,
    REOPENED_BY_RESULT,
    ContactState,
    Stored,
    after_gone,
    after_pull,
    after_write,
    needs_verification,
)
from .errors import StoreBusy, StoreError
from .freshness import Cached, Decision, Freshness
from .logs import mask_secrets
from .migrations import KNOWN, migrations
from .settings import PolicySettings


def _ts(moment: datetime) -> str:
    """Return the store's text form of a UTC time: `2026-11-27T12:00:00.000000Z`.

    Fixed width, so text order is time order. isoformat(), not strftime(): this runs several
    times per saved result, and strftime is ten times slower.
    """
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _dt(text: str) -> datetime:
    """Return the aware UTC datetime of a stored time."""
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


#: Failed drop files named by `mailprobe status`, newest first.
_FAILED_SHOWN = 10
#: Domains whose last written facts are remembered, so unchanged facts are not rewritten.
_DOMAIN_MEMORY = 10_000


def email_domain(email: str) -> str:
    """Return the lower-cased part after the last @ (what the queue is ordered by)."""
    return email.rpartition("@")[2].strip().lower()


class CsvFileState(StrEnum):
    """How far a dropped file has come; a restart resumes from here."""

    TAKEN = "taken"  # registered; its addresses are being queued
    QUEUED = "queued"  # every distinct address is queued or has a fresh result
    WRITTEN = "written"  # the output file is complete; the input is not yet archived
    DONE = "done"  # archived
    FAILED = "failed"  # moved to failed/ with the reason


class RunOutcome(StrEnum):
    """How a pass ended."""

    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"  # a passing failure (network, rate limit): the next pass retries
    FATAL = "fatal"  # bad token or configuration: paused until fixed and restarted
    STOPPED = "stopped"  # SIGTERM/SIGINT: the current step finished, the rest waits
    INTERRUPTED = "interrupted"  # the process died during the pass


@dataclass(frozen=True, slots=True)
class QueuedAddress:
    """One address a connector waits for, as the source wrote it."""

    email: str
    domain: str


@dataclass(frozen=True, slots=True)
class ContactToWrite:
    """A contact whose result arrived, with what was last written and what the source shows."""

    id: int
    external_id: str
    email: str
    result: VerificationResult
    expires_at: datetime
    written: Mapping[str, str]
    source: Mapping[str, str]
    attempts: int  # failed writes in a row


@dataclass(frozen=True, slots=True)
class PageCounts:
    """What storing one page did."""

    stored: int = 0
    queued: int = 0
    retired: int = 0


@dataclass(frozen=True, slots=True)
class CsvFileRecord:
    """One dropped file's progress."""

    id: int
    connector: str
    name: str
    size: int
    state: CsvFileState
    rows: int
    queued: int
    output: str | None = None
    pending: int = 0  # rows whose answer waits for a retry
    revision: int = 0  # times the output was rewritten with newer answers


@dataclass(frozen=True, slots=True)
class FailedCsvFile:
    """A dropped file that could not be verified (and was not dropped again since)."""

    name: str
    error: str | None
    failed_at: datetime | None


@dataclass(frozen=True, slots=True)
class RunCounts:
    """What one pass did."""

    pulled: int = 0
    queued: int = 0
    verified: int = 0
    written: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class ForgetCounts:
    """Rows `forget` deleted, per table."""

    results: int = 0  # answers (one per normalised address)
    emails: int = 0  # forms of addresses as sources wrote them
    queue: int = 0  # addresses waiting for verification
    contacts: int = 0  # CRM contacts holding the address
    domains: int = 0  # facts about a domain's mail server

    @property
    def total(self) -> int:
        """Return how many rows went in all."""
        return self.results + self.emails + self.queue + self.contacts + self.domains


@dataclass(frozen=True, slots=True)
class ConnectorStatus:
    """One connector as `mailprobe status` shows it."""

    connector: str
    last_started: datetime | None
    last_ended: datetime | None
    last_outcome: RunOutcome | None
    last_error: str | None
    queued: int  # addresses waiting for verification
    contacts: Mapping[str, int]  # contacts per ContactState
    files: Mapping[str, int]  # drop-folder files per CsvFileState
    verified: int  # addresses verified by its passes, all time
    written: int  # records or rows written by its passes, all time
    errors: int  # failed passes and failed writes, all time
    failed_files: tuple[FailedCsvFile, ...] = ()  # newest first, at most _FAILED_SHOWN


@dataclass(frozen=True, slots=True)
class StatusSummary:
    """The whole store at a glance."""

    connectors: tuple[ConnectorStatus, ...]
    results_by_status: Mapping[str, int] = field(default_factory=dict)


# -- figures for the dashboard (read-only) ------------------------------------------------------

#: Unknown answers that mean a server is deferring or refusing *us*, not the address.
DEFERRING_REASONS: tuple[Reason, ...] = (
    Reason.GREYLISTED,
    Reason.RATE_LIMITED,
    Reason.TEMPORARY_FAILURE,
    Reason.BLOCKED,
)


@dataclass(frozen=True, slots=True)
class DayCount:
    """How many stored answers of one status were verified on one UTC day."""

    day: str  # 2026-11-27
    status: str
    count: int


@dataclass(frozen=True, slots=True)
class PassRecord:
    """One logged pass of a connector and what it did."""

    id: int
    connector: str
    kind: str  # pass, retry
    started_at: datetime
    ended_at: datetime | None
    outcome: RunOutcome
    counts: RunCounts
    error: str | None


@dataclass(frozen=True, slots=True)
class DeferringDomain:
    """A domain whose servers lately deferred or refused our checks."""

    domain: str
    reasons: Mapping[str, int]  # addresses per DEFERRING_REASONS member
    last_checked: datetime
    last_reply: str | None  # the latest such answer's server reply, as the server sent it
    mx_host: str | None
    provider: str | None

    @property
    def addresses(self) -> int:
        """Return how many addresses of the domain are affected."""
        return sum(self.reasons.values())


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """What one connector waits for."""

    connector: str
    waiting: int  # addresses queued for verification
    to_write: int  # contacts whose answer waits to be written back


@dataclass(frozen=True, slots=True)
class RetryDepth:
    """Unknown answers by when they are asked again."""

    scheduled: int  # their retry time is still ahead
    due: int  # their retry time has passed: the next retry pass queues them


_HINTS: tuple[tuple[str, str], ...] = (
    (
        "file is not a database",
        "is not a mailprobe store (corrupt, or another kind of file); "
        "move it away or set store.path",
    ),
    ("malformed", "is corrupt; restore a backup or move it away to start a new store"),
    ("locked", "is locked by another process (is another mailprobe running?); stop it or retry"),
    ("readonly", "is read-only; check the permissions of the file and its folder"),
    ("unable to open", "cannot be opened; check that its folder exists and is writable"),
    ("disk i/o", "could not be read or written (disk I/O error); check the disk"),
    ("full", "cannot grow: the disk is full"),
)


def path_problem(path: Path) -> str | None:
    """Return why no store can be at `path` (a folder, or no writable folder to create it in)."""
    if path.is_dir():
        return "is a folder; set store.path to a file inside it (e.g. mailprobe.db)"
    if path.exists():
        return None
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"cannot be created: {folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot be created: {folder} is not writable by this user"
    return None


def _store_error(path: Path, error: BaseException) -> StoreError:
    """Return the StoreError of an sqlite3 error; StoreBusy when the write lock was busy."""
    text = str(error).lower()
    if "locked" in text or "busy" in text:
        return StoreBusy(str(path), _hint(error))
    return StoreError(str(path), _hint(error))


def _hint(error: BaseException) -> str:
    text = str(error).lower()
    for needle, hint in _HINTS:
        if needle in text:
            return hint
    return f"SQLite error: {error}"


class Store:
    """mailprobe's state in one SQLite file; opening it creates or migrates the schema."""

    def __init__(
        self,
        path: Path | str,
        *,
        policy: PolicySettings | None = None,
        freshness: Freshness | None = None,
        busy_timeout_s: float = 10.0,
        migrate: bool = True,
    ) -> None:
        """Open the store; `migrate=False` attaches another connection to a store already open
        (no schema check, no write probe: a reader must not wait for the write lock)."""
        self.path = Path(path)
        self._migrating = migrate
        self.freshness = freshness or Freshness(policy or PolicySettings())
        self._busy_timeout_s = busy_timeout_s
        self._domains_written: dict[str, tuple[Any, ...]] = {}
        self.db = self._connect()

    # -- opening ------------------------------------------------------------------------------

    def _connect(self) -> Database:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(str(self.path), f"cannot create its folder ({exc.strerror})") from None
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s)
            conn.create_function("mp_domain", 1, email_domain, deterministic=True)
            db = Database(conn)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # Triggers keep the per-day counts (migration m004); an INSERT OR REPLACE fires the
            # delete trigger for the row it replaces only with this on. sqlite-utils' Database
            # sets it too, by default; the counts depend on it, so it is said here.
            db.execute("PRAGMA recursive_triggers=ON")
            # Deleted rows are overwritten, not left in free pages: `mailprobe forget` must
            # really remove an address. Costs little: mailprobe deletes rarely.
            db.execute("PRAGMA secure_delete=ON")
            if self._migrating:
                self._migrate(db)
                # Fail now, with a clear message, rather than at the first write of a pass.
                db.execute("BEGIN IMMEDIATE")
                db.execute("ROLLBACK")
            return db
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise _store_error(self.path, exc) from None
        except StoreError:
            if conn is not None:
                conn.close()
            raise

    def _migrate(self, db: Database) -> None:
        tables = set(db.table_names())
        if tables and migrations.migrations_table not in tables:
            raise StoreError(
                str(self.path), "is an SQLite database but not a mailprobe store; set store.path"
            )
        applied = {m.name for m in migrations.applied(db)}
        newer = sorted(applied - set(KNOWN))
        if newer:
            raise StoreError(
                str(self.path),
                f"was written by a newer mailprobe (schema {', '.join(newer)}); upgrade mailprobe",
            )
        migrations.apply(db)

    def close(self) -> None:
        """Close the connection (committed work is already on disk)."""
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def check_writable(self) -> None:
        """Raise StoreError unless a write could start now (health checks; changes nothing)."""
        with self._write():
            pass

    def check_usable(self) -> None:
        """Raise StoreError unless the store can be read and its files written; lock-free.

        For readiness probes: reads the schema (a shared lock at most) and checks permissions,
        without BEGIN IMMEDIATE, so a probe never waits for, nor delays, a writer.
        """
        self.schema()
        for path in (self.path, self.path.parent):
            if not os.access(path, os.W_OK):
                raise StoreError(str(self.path), f"{path} is not writable by this process")

    def schema(self) -> tuple[str, ...]:
        """Return the names of the migrations applied to this store, in order."""
        with self._guard():
            return tuple(m.name for m in migrations.applied(self.db))

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """Run the block as one IMMEDIATE transaction; roll back on any exception."""
        conn = self.db.conn
        with self._guard():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _one(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        return self.db.conn.execute(sql, params).fetchone()

    # -- pre-flight reports -------------------------------------------------------------------

    def save_doctor_report(self, report: Mapping[str, Any], *, now: datetime) -> None:
        """Keep a doctor report (its to_json()); only the last few are kept."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO doctor_reports (checked_at, ready, summary, report_json)"
                " VALUES (?, ?, ?, ?)",
                (_ts(now), int(bool(report["ready"])), report["summary"], json.dumps(report)),
            )
            conn.execute(
                "DELETE FROM doctor_reports WHERE id <= (SELECT MAX(id) FROM doctor_reports) - 20"
            )

    def last_doctor_report(self) -> dict[str, Any] | None:
        """Return the last doctor report saved, or None when doctor never ran on this store."""
        with self._guard():
            row = self._one("SELECT report_json FROM doctor_reports ORDER BY id DESC LIMIT 1")
        return json.loads(row[0]) if row else None

    # -- the result cache ---------------------------------------------------------------------

    def save_result(self, result: VerificationResult, *, now: datetime) -> Decision:
        """Record one verification: the answer to keep, the raw address, the queue and contacts.

        freshness.decide() chooses what is kept (an unknown never replaces a definite answer).
        The address leaves every connector's queue; contacts using it get their fields checked.
        """
        return self.save_results([result], now=now)[0]

    def save_results(
        self, results: Sequence[VerificationResult], *, now: datetime
    ) -> list[Decision]:
        """Record several verifications as save_result() does, in one transaction: a bulk run
        pays one commit per batch instead of one per address."""
        with self._write() as conn:
            return [self._save(conn, result, now=now) for result in results]

    def _save(
        self, conn: sqlite3.Connection, result: VerificationResult, *, now: datetime
    ) -> Decision:
        previous = self._cached(result.normalized)
        decision = self.freshness.decide(previous, result, now=now)
        kept = decision.result
        conn.execute(
            "INSERT OR REPLACE INTO results (normalized, result_json, status, reason,"
            " verified_at, expires_at, attempts, checked_at) VALUES (?,?,?,?,?,?,?,?)",
            (
                result.normalized,
                json.dumps(kept.to_json(), separators=(",", ":")),
                str(kept.status),
                str(kept.reason),
                _ts(kept.verified_at),
                _ts(decision.expires_at),
                decision.attempts,
                _ts(now),
            ),
        )
        conn.execute(
            "INSERT OR REPLACE INTO emails (email, normalized) VALUES (?, ?)",
            (result.email, result.normalized),
        )
        conn.execute("DELETE FROM queue WHERE email = ?", (result.email,))
        # Other raw forms of this address were queued too (enqueue_expired queues every
        # live contact's raw address), so each gets its own save and marks its contacts.
        self._reopen(conn, [result.email])
        self._save_domain(conn, result, now=now)
        return decision

    def _save_domain(self, conn: sqlite3.Connection, result: VerificationResult, *, now: datetime):
        smtp = result.checks.smtp
        if smtp is None or not smtp.connected:
            return
        domain = email_domain(result.normalized)
        catch_all = None if smtp.is_catch_all is None else int(smtp.is_catch_all)
        facts = (smtp.mx_host, smtp.smtp_provider, catch_all)
        if self._domains_written.get(domain) == facts:
            return  # a big file's thousands of addresses at one domain: write its facts once
        conn.execute(
            "INSERT OR REPLACE INTO domains (domain, mx_host, provider, catch_all, checked_at)"
            " VALUES (?,?,?,?,?)",
            (domain, *facts, _ts(now)),
        )
        if len(self._domains_written) > _DOMAIN_MEMORY:
            self._domains_written.clear()
        self._domains_written[domain] = facts

    def _cached(self, normalized: str) -> Cached | None:
        row = self._one(
            "SELECT result_json, expires_at, attempts FROM results WHERE normalized = ?",
            (normalized,),
        )
        return _cached_from(row) if row else None

    def cached(self, email: str) -> Cached | None:
        """Return the stored answer for an address as a source wrote it (or normalised), any age."""
        with self._guard():
            row = self._one(
                "SELECT r.result_json, r.expires_at, r.attempts FROM emails e"
                " JOIN results r ON r.normalized = e.normalized WHERE e.email = ?",
                (email,),
            )
            return _cached_from(row) if row else self._cached(email)

    def fresh_result(self, email: str, *, now: datetime) -> VerificationResult | None:
        """Return the stored answer for an address when it may still be reused, else None."""
        cached = self.cached(email)
        return cached.result if cached is not None and cached.expires_at > now else None

    def domain_facts(self, domain: str) -> dict[str, Any] | None:
        """Return what was learnt about a domain's mail server (mx_host, provider, catch_all)."""
        with self._guard():
            row = self._one(
                "SELECT domain, mx_host, provider, catch_all, checked_at FROM domains"
                " WHERE domain = ?",
                (domain.lower(),),
            )
        if row is None:
            return None
        catch_all = None if row[3] is None else bool(row[3])
        return {
            "domain": row[0],
            "mx_host": row[1],
            "provider": row[2],
            "catch_all": catch_all,
            "checked_at": _dt(row[4]),
        }

    # -- reading out and forgetting results ---------------------------------------------------

    def export_results(
        self,
        *,
        statuses: Sequence[str] = (),
        since: datetime | None = None,
        batch: int = 1000,
    ) -> Iterator[Cached]:
        """Yield stored answers (of `statuses`, verified at or after `since`) by address.

        Read in batches by key, so a big export holds no read transaction open for long.
        """
        after = ""
        wanted = list(statuses)
        status_filter = f" AND status IN ({','.join('?' * len(wanted))})" if wanted else ""
        since_filter = " AND verified_at >= ?" if since is not None else ""
        while True:
            params: list[Any] = [after, *wanted]
            if since is not None:
                params.append(_ts(since))
            with self._guard():
                rows = self.db.conn.execute(
                    "SELECT result_json, expires_at, attempts, normalized FROM results"
                    f" WHERE normalized > ?{status_filter}{since_filter}"
                    " ORDER BY normalized LIMIT ?",
                    (*params, batch),
                ).fetchall()
            yield from (_cached_from(row) for row in rows)
            if len(rows) < batch:
                return
            after = rows[-1][3]

    def address_forms(self, normalized: str) -> list[str]:
        """Return every form of an address the store knows: as sources wrote it, and normalised."""
        with self._guard():
            rows = self.db.conn.execute(
                "SELECT email FROM emails WHERE normalized = ? UNION SELECT ?",
                (normalized, normalized),
            ).fetchall()
        return sorted(row[0] for row in rows)

    def connectors_holding(self, emails: Sequence[str]) -> dict[str, int]:
        """Return, per connector, how many live contacts hold one of these addresses."""
        marks = ",".join("?" * len(emails))
        with self._guard():
            rows = self.db.conn.execute(
                f"SELECT connector, count(*) FROM contacts WHERE email IN ({marks})"
                " AND state IN (?, ?, ?) GROUP BY connector ORDER BY connector",
                (*emails, *LIVE),
            ).fetchall()
        return dict(rows)

    def contact_email(self, connector: str, external_id: str) -> str | None:
        """Return the address a contact holds ('' for none), or None without such a contact."""
        with self._guard():
            row = self._one(
                "SELECT email FROM contacts WHERE connector = ? AND external_id = ?",
                (connector, external_id),
            )
        return row[0] if row else None

    def share_result(self, normalized: str, emails: Sequence[str], *, now: datetime) -> None:
        """Make the stored answer of `normalized` the answer of these forms of it too.

        Their contacts get their fields checked (and written when changed), as save_result()
        does for the form it was given.
        """
        with self._write() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO emails (email, normalized) VALUES (?, ?)",
                [(email, normalized) for email in emails],
            )
            conn.executemany("DELETE FROM queue WHERE email = ?", [(e,) for e in emails])
            self._reopen(conn, emails)

    @staticmethod
    def _reopen(conn: sqlite3.Connection, emails: Sequence[str]) -> None:
        """Move the contacts holding these addresses as contact_state.after_result() says."""
        marks = ",".join("?" * len(REOPENED_BY_RESULT))
        conn.executemany(
            f"UPDATE contacts SET state = ? WHERE email = ? AND state IN ({marks})",
            [(ContactState.TO_WRITE, email, *REOPENED_BY_RESULT) for email in emails],
        )

    def forget_address(self, email: str, *, normalized: str | None = None) -> ForgetCounts:
        """Delete all the store holds about one address (every form of it); one transaction.

        Forms are matched without regard to case: for an erasure, deleting a cached answer too
        many costs one verification, keeping one too many is the failure.
        """
        forms = {email, normalized or email}
        with self._write() as conn:
            forms |= {row[0] for row in conn.execute(
                "SELECT email FROM emails WHERE lower(normalized) IN (lower(?), lower(?))",
                (email, normalized or email),
            )}  # fmt: skip
            lowered = sorted({form.strip().lower() for form in forms})
            marks = ",".join("?" * len(lowered))
            match = f"lower(trim(email)) IN ({marks})"
            return self._delete_rows(
                conn,
                results=(f"lower(normalized) IN ({marks})", lowered),
                emails=(f"{match} OR lower(normalized) IN ({marks})", lowered * 2),
                queue=(match, lowered),
                contacts=(match, lowered),
            )

    def forget_domain(self, domain: str) -> ForgetCounts:
        """Delete all the store holds about every address at a domain, and its facts."""
        name = domain.strip().lower()
        with self._write() as conn:
            return self._delete_rows(
                conn,
                results=("mp_domain(normalized) = ?", [name]),
                emails=("mp_domain(email) = ? OR mp_domain(normalized) = ?", [name, name]),
                queue=("lower(domain) = ?", [name]),
                contacts=("mp_domain(email) = ?", [name]),
                domains=("domain = ?", [name]),
            )

    def _delete_rows(
        self, conn: sqlite3.Connection, **where: tuple[str, Sequence[Any]]
    ) -> ForgetCounts:
        """Delete the rows each table's condition selects; return how many went per table."""
        counts = {
            table: conn.execute(f"DELETE FROM {table} WHERE {condition}", params).rowcount
            for table, (condition, params) in where.items()
        }
        self._domains_written.clear()
        return ForgetCounts(**counts)

    def scrub(self) -> bool:
        """Copy the write-ahead log into the database and empty it; True when it is empty now.

        With secure_delete on, forgotten rows are zeroed in the database file; this moves the
        log's copies of those pages out too. A reader in another process can keep it from
        completing (False): the log is emptied at its next checkpoint.
        """
        with self._guard():
            busy, _, _ = self.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return busy == 0

    # -- the queue ----------------------------------------------------------------------------

    def queue_emails(self, connector: str, emails: Iterable[str], *, now: datetime) -> int:
        """Queue addresses for `connector` unless a fresh answer exists; return how many."""
        stamp = _ts(now)
        rows = [(connector, email, email_domain(email), stamp, email, stamp) for email in emails]
        with self._write() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO queue (connector, email, domain, queued_at)"
                " SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM emails e"
                " JOIN results r ON r.normalized = e.normalized"
                " WHERE e.email = ? AND r.expires_at > ?)",
                rows,
            )
            return conn.total_changes - before

    def enqueue_expired(self, connector: str, *, now: datetime) -> int:
        """Queue the addresses of live contacts that have no answer or an expired one."""
        stamp = _ts(now)
        with self._write() as conn:
            before = conn.total_changes
            conn.execute(
                "INSERT OR IGNORE INTO queue (connector, email, domain, queued_at)"
                " SELECT c.connector, c.email, mp_domain(c.email), ? FROM contacts c"
                " LEFT JOIN emails e ON e.email = c.email"
                " LEFT JOIN results r ON r.normalized = e.normalized"
                " WHERE c.connector = ? AND c.state IN (?, ?, ?)"
                " AND (r.normalized IS NULL OR r.expires_at <= ?)",
                (stamp, connector, *LIVE, stamp),
            )
            return conn.total_changes - before

    def take_due(
        self, connector: str, *, after: tuple[str, str] | None, limit: int, now: datetime
    ) -> tuple[list[QueuedAddress], tuple[str, str] | None]:
        """Return the next queued addresses in (domain, email) order after `after`, and the key
        to continue from (None when the queue has nothing after `after`).

        Addresses that gained a fresh answer meanwhile (another connector verified them) leave
        the queue here instead of being verified twice.
        """
        domain, email = after or ("", "")
        stamp = _ts(now)
        with self._write() as conn:
            rows = conn.execute(
                "SELECT q.email, q.domain, r.expires_at > ? FROM queue q"
                " LEFT JOIN emails e ON e.email = q.email"
                " LEFT JOIN results r ON r.normalized = e.normalized"
                " WHERE q.connector = ? AND (? OR (q.domain, q.email) > (?, ?))"
                " ORDER BY q.domain, q.email LIMIT ?",
                (stamp, connector, after is None, domain, email, limit),
            ).fetchall()
            fresh = [(connector, row[0]) for row in rows if row[2]]
            conn.executemany("DELETE FROM queue WHERE connector = ? AND email = ?", fresh)
        due = [QueuedAddress(row[0], row[1]) for row in rows if not row[2]]
        return due, ((rows[-1][1], rows[-1][0]) if rows else None)

    def queued_count(self, connector: str) -> int:
        """Return how many addresses `connector` waits for."""
        with self._guard():
            return self._one("SELECT count(*) FROM queue WHERE connector = ?", (connector,))[0]

    # -- contacts -----------------------------------------------------------------------------

    def record_page(
        self,
        connector: str,
        contacts: Sequence[Contact],
        *,
        retired: Sequence[str] = (),
        cursor: str | None = None,
        now: datetime,
    ) -> PageCounts:
        """Store a page of contacts, queue new, changed and expired addresses, move the cursor.

        One transaction, so the cursor never runs ahead of the contacts it covers.
        """
        stamp = _ts(now)
        queued = 0
        with self._write() as conn:
            for contact in contacts:
                queued += self._upsert_contact(conn, connector, contact, stamp)
            gone = self._retire(conn, connector, retired)
            if cursor is not None:
                self._set_cursor(conn, connector, "updated_at", cursor, stamp)
        return PageCounts(stored=len(contacts), queued=queued, retired=gone)

    def _upsert_contact(
        self, conn: sqlite3.Connection, connector: str, contact: Contact, stamp: str
    ) -> int:
        """Store one contact; return 1 when its address was queued."""
        email = (contact.email or "").strip()
        row = conn.execute(
            "SELECT email, state, source_json FROM contacts WHERE connector = ? AND"
            " external_id = ?",
            (connector, contact.external_id),
        ).fetchone()
        source = json.dumps(dict(contact.fields), sort_keys=True)
        fresh = bool(email) and self._is_fresh(conn, email, stamp)
        before = Stored(row[0], ContactState(row[1]), row[2]) if row is not None else None
        state = after_pull(before, email=email, source=source, fresh=fresh)
        updated_at = _ts(contact.updated_at) if contact.updated_at else None
        conn.execute(
            "INSERT INTO contacts (connector, external_id, email, state, source_json,"
            " updated_at, seen_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT (connector, external_id)"
            " DO UPDATE SET email = excluded.email, state = excluded.state,"
            " source_json = excluded.source_json, updated_at = excluded.updated_at,"
            " seen_at = excluded.seen_at",
            (connector, contact.external_id, email, state, source, updated_at, stamp),
        )
        if not needs_verification(email=email, fresh=fresh):
            return 0
        return conn.execute(
            "INSERT OR IGNORE INTO queue (connector, email, domain, queued_at) VALUES (?,?,?,?)",
            (connector, email, email_domain(email), stamp),
        ).rowcount

    def _is_fresh(self, conn: sqlite3.Connection, email: str, stamp: str) -> bool:
        return (
            conn.execute(
                "SELECT 1 FROM emails e JOIN results r ON r.normalized = e.normalized"
                " WHERE e.email = ? AND r.expires_at > ?",
                (email, stamp),
            ).fetchone()
            is not None
        )

    def _retire(self, conn: sqlite3.Connection, connector: str, external_ids: Sequence[str]) -> int:
        return conn.executemany(
            "UPDATE contacts SET state = ? WHERE connector = ? AND external_id = ?",
            [(after_gone(), connector, external_id) for external_id in external_ids],
        ).rowcount

    def retire(self, connector: str, external_ids: Sequence[str]) -> int:
        """Mark records gone at the source or sink; they are never written again."""
        with self._write() as conn:
            return self._retire(conn, connector, external_ids)

    def contacts_to_write(
        self,
        connector: str,
        *,
        after_id: int = 0,
        limit: int = 100,
        now: datetime,
        emails: Sequence[str] | None = None,
    ) -> list[ContactToWrite]:
        """Return contacts whose result arrived (fields may differ), by id after `after_id`;
        only those holding one of `emails` when given (`mailprobe recheck`)."""
        only = f" AND c.email IN ({','.join('?' * len(emails))})" if emails is not None else ""
        with self._guard():
            rows = self.db.conn.execute(
                "SELECT c.id, c.external_id, c.email, c.written_json, c.source_json,"
                " c.attempts, r.result_json, r.expires_at FROM contacts c"
                " JOIN emails e ON e.email = c.email JOIN results r ON r.normalized = e.normalized"
                " WHERE c.connector = ? AND c.state = ? AND c.id > ?"
                f" AND (c.next_attempt_at IS NULL OR c.next_attempt_at <= ?){only}"
                " ORDER BY c.id LIMIT ?",
                (connector, ContactState.TO_WRITE, after_id, _ts(now), *(emails or ()), limit),
            ).fetchall()
        return [
            ContactToWrite(
                id=row[0],
                external_id=row[1],
                email=row[2],
                written=json.loads(row[3]),
                source=json.loads(row[4]),
                attempts=row[5],
                result=VerificationResult.from_json(json.loads(row[6])),
                expires_at=_dt(row[7]),
            )
            for row in rows
        ]

    def mark_written(self, connector: str, written: Mapping[str, Mapping[str, str]]) -> None:
        """Record the field values a sink now holds, per external id."""
        with self._write() as conn:
            for external_id, values in written.items():
                row = conn.execute(
                    "SELECT written_json FROM contacts WHERE connector = ? AND external_id = ?",
                    (connector, external_id),
                ).fetchone()
                merged = {**(json.loads(row[0]) if row else {}), **values}
                conn.execute(
                    "UPDATE contacts SET written_json = ?, state = ?, attempts = 0,"
                    " next_attempt_at = NULL WHERE connector = ? AND external_id = ?",
                    (
                        json.dumps(merged, sort_keys=True),
                        after_write(),
                        connector,
                        external_id,
                    ),
                )

    def mark_write_failed(
        self, connector: str, external_ids: Sequence[str], *, retry_at: datetime
    ) -> None:
        """Count a failed write; the record is tried again from `retry_at`."""
        with self._write() as conn:
            conn.executemany(
                "UPDATE contacts SET attempts = attempts + 1, next_attempt_at = ?"
                " WHERE connector = ? AND external_id = ?",
                [(_ts(retry_at), connector, external_id) for external_id in external_ids],
            )

    # -- cursors ------------------------------------------------------------------------------

    def cursor(self, connector: str, name: str = "updated_at") -> str | None:
        """Return a connector's saved cursor, or None before its first complete pass."""
        with self._guard():
            row = self._one(
                "SELECT value FROM cursors WHERE connector = ? AND name = ?", (connector, name)
            )
        return row[0] if row else None

    def advance_cursor(
        self, connector: str, value: str, *, name: str = "updated_at", now: datetime
    ) -> None:
        """Save a connector's cursor."""
        with self._write() as conn:
            self._set_cursor(conn, connector, name, value, _ts(now))

    def _set_cursor(
        self, conn: sqlite3.Connection, connector: str, name: str, value: str, stamp: str
    ) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO cursors (connector, name, value, updated_at) VALUES (?,?,?,?)",
            (connector, name, value, stamp),
        )

    # -- drop-folder files --------------------------------------------------------------------

    def take_csv_file(
        self, connector: str, name: str, *, size: int, now: datetime, fingerprint: str = ""
    ) -> CsvFileRecord:
        """Return the unfinished record of a dropped file, or register it as new.

        The record is the file's when name, size and `fingerprint` (inode and mtime) match; a
        record from before fingerprints were kept matches on name and size.
        """
        with self._write() as conn:
            row = conn.execute(
                "SELECT id, connector, name, size, state, rows, queued, fingerprint"
                " FROM csv_files WHERE connector = ? AND name = ? AND state NOT IN (?, ?)"
                " ORDER BY id DESC LIMIT 1",
                (connector, name, CsvFileState.DONE, CsvFileState.FAILED),
            ).fetchone()
            if row is not None and row[3] == size and row[7] in ("", fingerprint):
                return _file_from(row[:7])
            if row is not None:  # replaced by a different file of the same name: start over
                conn.execute(
                    "UPDATE csv_files SET state = ?, error = ?, finished_at = ? WHERE id = ?",
                    (CsvFileState.FAILED, "replaced before it was finished", _ts(now), row[0]),
                )
            file_id = conn.execute(
                "INSERT INTO csv_files (connector, name, size, state, started_at, fingerprint)"
                " VALUES (?,?,?,?,?,?)",
                (connector, name, size, CsvFileState.TAKEN, _ts(now), fingerprint),
            ).lastrowid
        return CsvFileRecord(file_id, connector, name, size, CsvFileState.TAKEN, 0, 0)

    def set_csv_file(
        self,
        file_id: int,
        state: CsvFileState,
        *,
        now: datetime,
        rows: int | None = None,
        queued: int | None = None,
        output: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record a dropped file's progress (counts and output are kept when not given)."""
        finished = _ts(now) if state in (CsvFileState.DONE, CsvFileState.FAILED) else None
        with self._write() as conn:
            conn.execute(
                "UPDATE csv_files SET state = ?, rows = coalesce(?, rows),"
                " queued = coalesce(?, queued), output = coalesce(?, output),"
                " error = coalesce(?, error), finished_at = coalesce(?, finished_at)"
                " WHERE id = ?",
                (state, rows, queued, output, error and mask_secrets(error), finished, file_id),
            )

    def csv_file_written(
        self,
        file_id: int,
        *,
        rows: int,
        output: str,
        pending: int,
        retry_at: datetime | None,
        now: datetime,
    ) -> None:
        """Record a file's complete output and when its unknown rows are due for a retry.

        One transaction with the WRITTEN state, so a kill never leaves an output whose
        retries are forgotten. An older file's retries for the same output are dropped: the
        output is now this file's.
        """
        with self._write() as conn:
            conn.execute(
                "UPDATE csv_files SET pending = 0, retry_at = NULL"
                " WHERE output = ? AND id != ? AND retry_at IS NOT NULL",
                (output, file_id),
            )
            conn.execute(
                "UPDATE csv_files SET state = ?, rows = ?, output = ?, pending = ?, retry_at = ?"
                " WHERE id = ?",
                (CsvFileState.WRITTEN, rows, output, pending, _ts_or_none(retry_at), file_id),
            )

    def csv_files_due(
        self, connector: str, *, now: datetime, limit: int = 100
    ) -> list[CsvFileRecord]:
        """Return written files whose unknown rows are due for a retry, the longest due first."""
        with self._guard():
            rows = self.db.conn.execute(
                "SELECT id, connector, name, size, state, rows, queued, output, pending, revision"
                " FROM csv_files WHERE connector = ? AND state IN (?, ?) AND retry_at <= ?"
                " ORDER BY retry_at, id LIMIT ?",
                (connector, CsvFileState.WRITTEN, CsvFileState.DONE, _ts(now), limit),
            ).fetchall()
        return [_file_from(row) for row in rows]

    def reschedule_csv_file(
        self, file_id: int, *, pending: int, retry_at: datetime | None, rewritten: bool
    ) -> int:
        """Record a file's rows still to retry (none: retry_at None); return its revision."""
        with self._write() as conn:
            conn.execute(
                "UPDATE csv_files SET pending = ?, retry_at = ?, revision = revision + ?"
                " WHERE id = ?",
                (pending, _ts_or_none(retry_at), int(rewritten), file_id),
            )
            return conn.execute(
                "SELECT revision FROM csv_files WHERE id = ?", (file_id,)
            ).fetchone()[0]

    def failed_csv_files(
        self, connector: str, *, limit: int = _FAILED_SHOWN
    ) -> list[FailedCsvFile]:
        """Return files that failed and were not dropped again since, newest first."""
        with self._guard():
            return self._failed_files(self.db.conn, connector, limit)

    def _failed_files(
        self, conn: sqlite3.Connection, connector: str, limit: int
    ) -> list[FailedCsvFile]:
        rows = conn.execute(
            "SELECT f.name, f.error, f.finished_at FROM csv_files f"
            " WHERE f.connector = ? AND f.state = ? AND NOT EXISTS (SELECT 1 FROM csv_files g"
            " WHERE g.connector = f.connector AND g.name = f.name AND g.id > f.id)"
            " ORDER BY f.id DESC LIMIT ?",
            (connector, CsvFileState.FAILED, limit),
        ).fetchall()
        return [FailedCsvFile(row[0], row[1], _dt(row[2]) if row[2] else None) for row in rows]

    # -- the run log --------------------------------------------------------------------------

    def start_run(self, connector: str, *, kind: str = "pass", now: datetime) -> int:
        """Log the start of a pass; return its id for finish_run()."""
        with self._write() as conn:
            return conn.execute(
                "INSERT INTO runs (connector, kind, started_at, outcome) VALUES (?,?,?,?)",
                (connector, kind, _ts(now), RunOutcome.RUNNING),
            ).lastrowid

    def finish_run(
        self,
        run_id: int,
        *,
        outcome: RunOutcome,
        counts: RunCounts,
        error: str | None = None,
        now: datetime,
    ) -> None:
        """Log how a pass ended and what it did."""
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET ended_at = ?, outcome = ?, pulled = ?, queued = ?,"
                " verified = ?, written = ?, failed = ?, error = ? WHERE id = ?",
                (
                    _ts(now),
                    outcome,
                    counts.pulled,
                    counts.queued,
                    counts.verified,
                    counts.written,
                    counts.failed,
                    None if error is None else mask_secrets(error),
                    run_id,
                ),
            )

    def recent_outcomes(self, connector: str, *, limit: int) -> list[RunOutcome]:
        """Return how the connector's last `limit` passes that ran to an end ended (ok, failed,
        fatal), newest first: stopped and interrupted passes are left out."""
        with self._guard():
            rows = self.db.conn.execute(
                "SELECT outcome FROM runs WHERE connector = ? AND outcome IN (?, ?, ?)"
                " ORDER BY id DESC LIMIT ?",
                (connector, RunOutcome.OK, RunOutcome.FAILED, RunOutcome.FATAL, limit),
            ).fetchall()
        return [RunOutcome(row[0]) for row in rows]

    def interrupt_runs(self, connectors: Iterable[str], *, now: datetime) -> int:
        """Mark passes left `running` by a process that died; return how many."""
        with self._write() as conn:
            return conn.executemany(
                "UPDATE runs SET outcome = ?, ended_at = ? WHERE connector = ? AND outcome = ?",
                [
                    (RunOutcome.INTERRUPTED, _ts(now), name, RunOutcome.RUNNING)
                    for name in connectors
                ],
            ).rowcount

    def status_summary(self, connectors: Iterable[str] = ()) -> StatusSummary:
        """Return per-connector progress (configured ones and any in the log) and totals."""
        with self._guard():
            conn = self.db.conn
            seen = [
                *connectors,
                *(n for t in ("runs", "contacts", "csv_files") for n in _column(conn, t)),
            ]
            names = list(dict.fromkeys(seen))
            by_status = dict(
                conn.execute("SELECT status, count(*) FROM results GROUP BY status").fetchall()
            )
            return StatusSummary(tuple(self._connector_status(conn, n) for n in names), by_status)

    def _connector_status(self, conn: sqlite3.Connection, name: str) -> ConnectorStatus:
        last = conn.execute(
            "SELECT started_at, ended_at, outcome, error FROM runs WHERE connector = ?"
            " ORDER BY id DESC LIMIT 1",
            (name,),
        ).fetchone()
        totals = conn.execute(
            "SELECT coalesce(sum(verified), 0), coalesce(sum(written), 0),"
            " coalesce(sum(failed), 0) + coalesce(sum(outcome IN (?, ?)), 0)"
            " FROM runs WHERE connector = ?",
            (RunOutcome.FAILED, RunOutcome.FATAL, name),
        ).fetchone()
        queued = conn.execute("SELECT count(*) FROM queue WHERE connector = ?", (name,)).fetchone()
        contacts = conn.execute(
            "SELECT state, count(*) FROM contacts WHERE connector = ? GROUP BY state", (name,)
        ).fetchall()
        files = conn.execute(
            "SELECT state, count(*) FROM csv_files WHERE connector = ? GROUP BY state", (name,)
        ).fetchall()
        return ConnectorStatus(
            connector=name,
            last_started=_dt(last[0]) if last else None,
            last_ended=_dt(last[1]) if last and last[1] else None,
            last_outcome=RunOutcome(last[2]) if last else None,
            # Masked again on the way out: rows written by an older mailprobe were not.
            last_error=mask_secrets(last[3]) if last and last[3] else None,
            queued=queued[0],
            contacts=dict(contacts),
            files=dict(files),
            verified=totals[0],
            written=totals[1],
            errors=totals[2],
            failed_files=tuple(self._failed_files(conn, name, _FAILED_SHOWN)),
        )

    # -- figures for the dashboard (read-only; each stays quick on a million results) --------

    def results_by_status(self) -> dict[str, int]:
        """Return how many stored answers have each status (from the per-day counts)."""
        with self._guard():
            rows = self.db.conn.execute(
                "SELECT status, sum(count) FROM result_days GROUP BY status HAVING sum(count) > 0"
            )
            return dict(rows.fetchall())

    def results_by_day(self, *, since: datetime) -> list[DayCount]:
        """Return stored answers per status and UTC day of verification, from `since`'s day on.

        The store keeps the latest answer per address, so an address verified again counts
        on its latest day only.
        """
        with self._guard():
            rows = self.db.conn.execute(
                "SELECT day, status, count FROM result_days WHERE day >= ? AND count > 0"
                " ORDER BY day, status",
                (_ts(since)[:10],),
            ).fetchall()
        return [DayCount(day, status, count) for day, status, count in rows]

    def pass_connectors(self) -> list[str]:
        """Return the names of connectors with logged passes, sorted."""
        with self._guard():
            return _column(self.db.conn, "runs")

    def recent_passes(self, connector: str, *, limit: int = 20) -> list[PassRecord]:
        """Return a connector's latest logged passes, newest first."""
        with self._guard():
            rows = self.db.conn.execute(
                "SELECT id, connector, kind, started_at, ended_at, outcome, pulled, queued,"
                " verified, written, failed, error FROM runs WHERE connector = ?"
                " ORDER BY id DESC LIMIT ?",
                (connector, limit),
            ).fetchall()
        return [_pass_from(row) for row in rows]

    def queue_depths(self, connectors: Iterable[str]) -> list[QueueDepth]:
        """Return, per connector, the addresses waiting for verification and the write-backs."""
        depths = []
        with self._guard():
            for name in connectors:
                waiting = self._one("SELECT count(*) FROM queue WHERE connector = ?", (name,))
                to_write = self._one(
                    "SELECT count(*) FROM contacts WHERE connector = ? AND state = ?",
                    (name, ContactState.TO_WRITE),
                )
                depths.append(QueueDepth(name, waiting[0], to_write[0]))
        return depths

    def retry_depth(self, *, now: datetime) -> RetryDepth:
        """Return how many unknown answers wait for their retry time, and how many are due."""
        with self._guard():
            # The partial index holds just the unknown answers; without statistics SQLite would
            # pick results_by_status and read every row. status = 'unknown' must be literal.
            row = self._one(
                "SELECT coalesce(sum(expires_at > ?), 0), coalesce(sum(expires_at <= ?), 0)"
                " FROM results INDEXED BY results_unknown WHERE status = 'unknown'",
                (_ts(now), _ts(now)),
            )
        return RetryDepth(scheduled=row[0], due=row[1])

    def deferring_domains(self, *, since: datetime, limit: int = 20) -> list[DeferringDomain]:
        """Return the domains with the most addresses deferred or refused since `since`.

        Counted from the stored answers checked since then whose reason is in
        DEFERRING_REASONS; the latest one's server reply says what the server said.
        """
        reasons = [str(reason) for reason in DEFERRING_REASONS]
        with self._guard():
            rows = self.db.conn.execute(
                "SELECT mp_domain(normalized) AS domain, reason, count(*), max(checked_at),"
                " normalized FROM results INDEXED BY results_unknown"
                " WHERE status = 'unknown' AND checked_at >= ?"
                f" AND reason IN ({','.join('?' * len(reasons))}) GROUP BY domain, reason",
                (_ts(since), *reasons),
            ).fetchall()
            return [self._deferring(*found) for found in _top_domains(rows, limit)]

    def _deferring(
        self, domain: str, reasons: dict[str, int], last: tuple[str, str]
    ) -> DeferringDomain:
        checked_at, normalized = last
        row = self._one("SELECT result_json FROM results WHERE normalized = ?", (normalized,))
        facts = self._one("SELECT mx_host, provider FROM domains WHERE domain = ?", (domain,))
        smtp = json.loads(row[0])["checks"].get("smtp") if row else None
        reply = None
        if smtp and smtp.get("response_code"):
            reply = f"{smtp['response_code']} {smtp.get('response_message') or ''}".strip()
        return DeferringDomain(
            domain=domain,
            reasons=reasons,
            last_checked=_dt(checked_at),
            last_reply=reply,
            mx_host=(facts[0] if facts else None) or (smtp or {}).get("mx_host"),
            provider=(facts[1] if facts else None) or (smtp or {}).get("smtp_provider"),
        )


def _column(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[0] for row in conn.execute(f"SELECT DISTINCT connector FROM {table} ORDER BY 1")]


def _cached_from(row: Sequence[Any]) -> Cached:
    return Cached(
        result=VerificationResult.from_json(json.loads(row[0])),
        expires_at=_dt(row[1]),
        attempts=row[2],
    )


def _file_from(row: Sequence[Any]) -> CsvFileRecord:
    return CsvFileRecord(row[0], row[1], row[2], row[3], CsvFileState(row[4]), *row[5:])


def _pass_from(row: Sequence[Any]) -> PassRecord:
    return PassRecord(
        id=row[0],
        connector=row[1],
        kind=row[2],
        started_at=_dt(row[3]),
        ended_at=_dt(row[4]) if row[4] else None,
        outcome=RunOutcome(row[5]),
        counts=RunCounts(*row[6:11]),
        error=row[11],
    )


def _top_domains(
    rows: Iterable[Sequence[Any]], limit: int
) -> list[tuple[str, dict[str, int], tuple[str, str]]]:
    """Return (domain, addresses per reason, latest (checked_at, normalized)), most first."""
    found: dict[str, tuple[dict[str, int], tuple[str, str]]] = {}
    for domain, reason, count, checked_at, normalized in rows:
        reasons, last = found.setdefault(domain, ({}, (checked_at, normalized)))
        reasons[reason] = count
        if (checked_at, normalized) > last:
            found[domain] = (reasons, (checked_at, normalized))
    ranked = sorted(found.items(), key=lambda item: (-sum(item[1][0].values()), item[0]))
    return [(domain, reasons, last) for domain, (reasons, last) in ranked[:limit]]


def _ts_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else _ts(moment)
