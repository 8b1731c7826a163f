"""The store's schema, as an ordered list of migrations; store.py applies them on open.

sqlite-utils' `Migrations` records each applied migration in `_sqlite_migrations` and runs it
together with that record in one transaction, so a crash mid-migration leaves the old schema.
A schema change is a NEW function appended here; an applied migration is never edited, since
stores in the field already ran it. No queries here: store.py owns reading and writing.

Times are TEXT in one fixed UTC format (`2026-11-27T12:00:00.000000Z`, see store.py), so text
order is time order and comparisons run in SQL.
"""

from __future__ import annotations

import re

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("mailprobe")


@migrations()
def m001_core(db: Database) -> None:
    """Contacts, the result cache, raw-address aliases, the queue, cursors and the run log."""
    _run(
        db,
        """
        -- One record per connector and external id; `state` is where it stands in the pipeline.
        CREATE TABLE contacts (
            id INTEGER PRIMARY KEY,
            connector TEXT NOT NULL,
            external_id TEXT NOT NULL,
            email TEXT NOT NULL DEFAULT '',      -- as the source gave it ('' = none)
            state TEXT NOT NULL,                 -- ContactState
            attempts INTEGER NOT NULL DEFAULT 0, -- failed writes in a row
            next_attempt_at TEXT,                -- no write before this (after a failure)
            written_json TEXT NOT NULL DEFAULT '{}',  -- field values we last wrote
            source_json TEXT NOT NULL DEFAULT '{}',   -- field values the source last showed
            updated_at TEXT,                     -- the source's replication key value
            seen_at TEXT NOT NULL,
            UNIQUE (connector, external_id)
        );
        CREATE INDEX contacts_by_state ON contacts (connector, state, id);
        CREATE INDEX contacts_by_email ON contacts (email);

        -- The cache: one answer per normalised address.
        CREATE TABLE results (
            normalized TEXT PRIMARY KEY,
            result_json TEXT NOT NULL,
            status TEXT NOT NULL,
            reason TEXT NOT NULL,
            verified_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,            -- reused until then, verified again after
            attempts INTEGER NOT NULL DEFAULT 0, -- unknown answers in a row
            checked_at TEXT NOT NULL             -- last verification, even one not kept
        );

        -- Each address as a source wrote it, and the normalised address it verified as.
        CREATE TABLE emails (
            email TEXT PRIMARY KEY,
            normalized TEXT NOT NULL
        );

        -- Addresses a connector waits for; a row leaves when its result is saved.
        CREATE TABLE queue (
            connector TEXT NOT NULL,
            email TEXT NOT NULL,
            domain TEXT NOT NULL,
            queued_at TEXT NOT NULL,
            PRIMARY KEY (email, connector)       -- a saved result deletes by email
        );
        CREATE INDEX queue_by_domain ON queue (connector, domain, email);

        CREATE TABLE cursors (
            connector TEXT NOT NULL,
            name TEXT NOT NULL,
            value TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (connector, name)
        );

        -- One row per pass (or retry pass) of a connector.
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            connector TEXT NOT NULL,
            kind TEXT NOT NULL,
            started_at TEXT NOT NULL,
            ended_at TEXT,
            outcome TEXT NOT NULL,
            pulled INTEGER NOT NULL DEFAULT 0,
            queued INTEGER NOT NULL DEFAULT 0,
            verified INTEGER NOT NULL DEFAULT 0,
            written INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            error TEXT
        );
        CREATE INDEX runs_by_connector ON runs (connector, id);
        """,
    )


@migrations()
def m002_domains(db: Database) -> None:
    """Domain facts learnt while verifying: mail host, provider, catch-all."""
    _run(
        db,
        """
        CREATE TABLE domains (
            domain TEXT PRIMARY KEY,
            mx_host TEXT,
            provider TEXT,
            catch_all INTEGER,                   -- 1, 0 or NULL (not determined)
            checked_at TEXT NOT NULL
        );
        """,
    )


@migrations()
def m003_csv_files(db: Database) -> None:
    """Progress of each file taken from a drop folder, so a restart resumes it."""
    _run(
        db,
        """
        CREATE TABLE csv_files (
            id INTEGER PRIMARY KEY,
            connector TEXT NOT NULL,
            name TEXT NOT NULL,
            size INTEGER NOT NULL,
            state TEXT NOT NULL,                 -- CsvFileState
            rows INTEGER NOT NULL DEFAULT 0,
            queued INTEGER NOT NULL DEFAULT 0,
            output TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            error TEXT
        );
        CREATE INDEX csv_files_by_name ON csv_files (connector, name, id);
        """,
    )


@migrations()
def m004_dashboard_figures(db: Database) -> None:
    """Stored answers counted per day and status, and an index of unknown answers: the
    dashboard's figures stay quick on stores of millions of results.

    Triggers keep `result_days` right whichever verb writes `results`. save_result() writes
    with INSERT OR REPLACE, whose implicit delete fires the delete trigger only with
    `PRAGMA recursive_triggers=ON`, which store.py sets on every connection.
    """
    # Statement by statement, not _run(): a trigger's body holds semicolons of its own.
    for statement in _DASHBOARD_FIGURES:
        db.execute(statement)


_DAY_PLUS = (
    "INSERT INTO result_days (day, status, count)"
    " VALUES (substr(NEW.verified_at, 1, 10), NEW.status, 1)"
    " ON CONFLICT (day, status) DO UPDATE SET count = count + 1;"
)
_DAY_MINUS = (
    "UPDATE result_days SET count = count - 1"
    " WHERE day = substr(OLD.verified_at, 1, 10) AND status = OLD.status;"
)
_DASHBOARD_FIGURES = (
    # Answers per UTC day of verification (the text before the T) and status.
    "CREATE TABLE result_days (day TEXT NOT NULL, status TEXT NOT NULL,"
    " count INTEGER NOT NULL, PRIMARY KEY (day, status)) WITHOUT ROWID",
    "INSERT INTO result_days (day, status, count)"
    " SELECT substr(verified_at, 1, 10), status, count(*) FROM results GROUP BY 1, 2",
    f"CREATE TRIGGER result_days_insert AFTER INSERT ON results BEGIN {_DAY_PLUS} END",
    f"CREATE TRIGGER result_days_delete AFTER DELETE ON results BEGIN {_DAY_MINUS} END",
    "CREATE TRIGGER result_days_update AFTER UPDATE OF status, verified_at ON results"
    f" BEGIN {_DAY_MINUS} {_DAY_PLUS} END",
    # Unknown answers only (a few per cent of a store): deferring domains, retries due. Queries
    # name it and say status = 'unknown' literally; the status column makes it covering.
    "CREATE INDEX results_unknown ON results (checked_at, reason, expires_at, normalized, status)"
    " WHERE status = 'unknown'",
)


@migrations()
def m005_csv_file_fingerprint(db: Database) -> None:
    """A dropped file's identity beyond name and size (inode and modification time), so a file
    replaced by another of the same name and size is read, not taken for the one it replaced.
    Rows from before have '' and are matched on name and size, as they were."""
    _run(db, "ALTER TABLE csv_files ADD COLUMN fingerprint TEXT NOT NULL DEFAULT ''")


@migrations()
def m006_doctor_reports(db: Database) -> None:
    """The pre-flight reports of `mailprobe doctor` and `mailprobe run`, for `mailprobe status`."""
    _run(
        db,
        """
        CREATE TABLE doctor_reports (
            id INTEGER PRIMARY KEY,
            checked_at TEXT NOT NULL,
            ready INTEGER NOT NULL,              -- 1: nothing to fix
            summary TEXT NOT NULL,               -- one line
            report_json TEXT NOT NULL            -- every finding
        );
        """,
    )


@migrations()
def m007_csv_file_retries(db: Database) -> None:
    """A verified file's rows still waiting for a retry, so its output is rewritten when due."""
    _run(
        db,
        """
        ALTER TABLE csv_files ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;  -- rows to retry
        ALTER TABLE csv_files ADD COLUMN retry_at TEXT;  -- when the first is due; NULL = none
        ALTER TABLE csv_files ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;  -- rewrites
        CREATE INDEX csv_files_by_retry ON csv_files (connector, retry_at);
        """,
    )


#: Names of every migration this version knows, in order (a test holds it to the set above).
KNOWN: tuple[str, ...] = (
    "m001_core",
    "m002_domains",
    "m003_csv_files",
    "m004_dashboard_figures",
    "m005_csv_file_fingerprint",
    "m006_doctor_reports",
    "m007_csv_file_retries",
)


def _run(db: Database, script: str) -> None:
    """Execute each statement of `script` inside the migration's transaction.

    Not executescript(): sqlite3 commits before it runs a script, which would split the
    migration from its record.
    """
    code = re.sub(r"--[^\n]*", "", script)  # comments may hold semicolons
    for statement in code.split(";"):
        if statement.strip():
            db.execute(statement)
