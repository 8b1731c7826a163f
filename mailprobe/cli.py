"""The `mailprobe` command line: thin wrappers that load settings and call the application.

Errors a user can cause (bad config, unreadable input) end with one line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from mailprobe.engine import MailprobeError

from .cli_group import MailprobeGroup, setting
from .config_advice import file_secret_warnings
from .settings import AppSettings, load_settings

EXIT_USAGE = 2


def _user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our own errors into one line on stderr and exit code 2."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except MailprobeError as exc:
            click.echo(f"mailprobe: {exc}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper


def _settings(ctx: click.Context) -> AppSettings:
    """Return the settings for this invocation, loaded once."""
    obj = ctx.find_root().ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings(obj.get("config"))
        for warning in file_secret_warnings(obj.get("config"), obj["settings"]):
            click.echo(f"mailprobe: {warning}", err=True)
    return obj["settings"]


@click.group(
    cls=MailprobeGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Global options (--config, --log-format) go before or after the command. "
    "`mailprobe COMMAND --help` shows each command's options.",
)
@click.version_option(
    package_name="mailprobe", prog_name="mailprobe", message="%(prog)s %(version)s"
)
@click.pass_context
def main(ctx: click.Context) -> None:
    """mailprobe: verify that email addresses can receive mail, without sending any."""
    ctx.ensure_object(dict)


@main.command()
@click.argument("addresses", nargs=-1)
@click.option(
    "--file",
    "file",
    default=None,
    help="Read addresses from a file: one per line, or a CSV with an email column ('-' = stdin).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "jsonl", "csv"]),
    default="json",
    show_default=True,
    help="json: one object (an array for several); jsonl: one object per line; csv: columns.",
)
@click.option(
    "--email-column",
    metavar="NAME",
    default=None,
    help="Header of the email column of a CSV (default: found by name, as in the drop folder).",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Verify every address now, ignoring answers the store still holds (new ones are saved).",
)
@click.option(
    "--no-store", is_flag=True, help="Neither reuse nor save answers in the store (store.path)."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
@_user_errors
def verify(
    ctx: click.Context,
    addresses: tuple[str, ...],
    file: str | None,
    fmt: str,
    email_column: str | None,
    fresh: bool,
    no_store: bool,
    quiet: bool,
) -> None:
    """Verify addresses and print one result per address, in input order.

    When the store (store.path, shared with `mailprobe run`) exists, its fresh answers are
    reused without any SMTP and new answers are saved there; --fresh verifies every address
    again, --no-store leaves the store alone. No store file is created by verify.

    \b
    Examples:
      mailprobe verify john@example.com
      mailprobe verify a@example.com b@example.org --format jsonl
      mailprobe verify --file leads.csv --format csv > verified.csv
      mailprobe verify --file leads.csv --email-column "Work Email" --format csv
      cat list.txt | mailprobe verify --file - --format jsonl
      mailprobe verify --fresh --config /etc/mailprobe/mailprobe.yaml jane@example.com

    \b
    Exit codes:
      0    the run completed, whatever the statuses (invalid addresses are results)
      2    a usage or configuration error; one line on stderr says what to fix
      130  interrupted (Ctrl-C); the results printed before it are complete
    """
    from .errors import InputError

    if not addresses and file is None:
        raise InputError("give addresses to verify, or --file PATH ('-' for stdin)")
    if addresses and file is not None:
        raise InputError("give addresses or --file, not both")
    if email_column is not None and file is None:
        raise InputError("--email-column names a column of --file; give --file PATH")
    settings = _settings(ctx)
    _service_logging(ctx, settings)
    # A bar for a list, on a terminal only: piped or redirected stderr stays clean.
    progress = not quiet and sys.stderr.isatty() and (file is not None or len(addresses) > 1)
    try:
        tally = _verify_input(
            settings,
            file,
            addresses,
            fmt=fmt,
            email_column=email_column,
            store_mode="off" if no_store else ("fresh" if fresh else "reuse"),
            progress=progress,
        )
    except KeyboardInterrupt:
        click.echo("mailprobe: interrupted; the results above are complete", err=True)
        sys.exit(130)
    if progress:
        click.echo(tally.summary(), err=True)


def _verify_input(
    settings: AppSettings,
    file: str | None,
    addresses: tuple[str, ...],
    *,
    fmt: str,
    email_column: str | None,
    store_mode: str,
    progress: bool,
) -> Any:
    """Open the input (and the store, when it exists and is wanted), verify, close; the tally."""
    from contextlib import ExitStack

    from mailprobe.engine import Verifier

    from .bulk import open_input, run_verify
    from .errors import StoreError
    from .reuse import StoreBacked
    from .store_async import SQLiteAsyncStore
    from .wiring import open_store

    with ExitStack() as stack:
        table, stream = open_input(file, addresses, email_column=email_column)
        if stream is not None:
            stack.callback(stream.close)
        engine: Any = Verifier(settings.engine, role_is_risky=settings.policy.role_is_risky)
        if store_mode != "off" and settings.store.path.exists():
            try:
                store = stack.enter_context(open_store(settings))
            except StoreError as exc:
                raise StoreError(exc.path, f"{exc.hint} (or verify with --no-store)") from None
            # The store's verbs run on its own threads: saving never stalls a session.
            answers = SQLiteAsyncStore.over(store)
            stack.callback(answers.close)
            engine = StoreBacked(engine, answers, fresh=store_mode == "fresh")
        return run_verify(
            engine,
            table,
            sys.stdout,
            fmt=fmt,  # type: ignore[arg-type]
            single=len(addresses) == 1,
            progress=progress,
        )


# -- the daemon's commands: run, sync, status, init, config ------------------------------------

EXIT_FAILED = 1
_STATUS_ORDER = ("valid", "invalid", "catch_all", "risky", "unknown")


def _service_logging(ctx: click.Context, settings: AppSettings) -> None:
    """Set up logging for the service commands, masking every configured secret."""
    from .logs import configure, secret_values

    fmt = setting(ctx, "log_format") or settings.log.format
    configure(level=settings.log.level, fmt=fmt, secrets=secret_values(settings))


@main.command()
@click.pass_context
@_user_errors
def run(ctx: click.Context) -> None:
    """Run the service: each enabled connector on its schedule, until SIGTERM or Ctrl-C.

    With no config file: the store is ./mailprobe.db and CSV files dropped into
    ./mailprobe-drop/inbox/ come back verified in ./mailprobe-drop/outbox/.
    """
    import asyncio

    settings = _settings(ctx)
    _service_logging(ctx, settings)
    asyncio.run(_run_service(settings))


async def _run_service(settings: AppSettings) -> None:
    """Wire the service, run the daemon with the API beside it until SIGTERM/SIGINT."""
    import asyncio

    from .daemon import Daemon
    from .doctor import preflight_line
    from .wiring import build_notifier, service, start_listeners, stop_signals

    async with service(settings) as wired:
        notifier = build_notifier(settings, wired.store)
        daemon = Daemon(
            settings,
            store=wired.store,
            connectors=wired.connectors,
            verifier=wired.verifier,
            on_pass=notifier.pass_finished,
        )
        stop_listeners = await start_listeners(settings, wired.store, verifier=wired.verifier)
        # Beside the daemon, not before it: a dead resolver must not delay the first pass.
        preflight = asyncio.create_task(preflight_line(settings, wired.store))
        try:
            with stop_signals(daemon.request_stop):
                await daemon.run()
        finally:
            preflight.cancel()
            await asyncio.gather(preflight, return_exceptions=True)
            await stop_listeners()
            await notifier.aclose()


@main.command()
@click.option(
    "--connector", "only", metavar="NAME", default=None, help="Only this connector (by name)."
)
@click.pass_context
@_user_errors
def sync(ctx: click.Context, only: str | None) -> None:
    """Run one pass of each enabled connector (or --connector NAME), then exit.

    Exit status 1 when a connector failed; the reason is printed.
    """
    import asyncio

    from .logs import mask_secrets

    settings = _settings(ctx)
    _service_logging(ctx, settings)
    reports = asyncio.run(_sync_service(settings, only))
    for report in reports:
        counts = report.counts
        click.echo(
            f"{report.connector}: {report.outcome} (pulled {counts.pulled}, queued "
            f"{counts.queued}, verified {counts.verified}, written {counts.written}, "
            f"failed {counts.failed})"
        )
    failed = [report for report in reports if not report.ok]
    for report in failed:
        error = mask_secrets(report.error or "")
        click.echo(f"mailprobe: connector {report.connector} failed: {error}", err=True)
    if failed:
        sys.exit(EXIT_FAILED)


def _when(moment: Any) -> str:
    from mailprobe.engine import format_time

    return format_time(moment) if moment is not None else "never"


def _status_lines(summary: Any) -> list[str]:
    """Return `mailprobe status` as text lines: one row per connector, then totals."""
    header = ("connector", "last pass", "outcome", "queued", "verified", "written", "errors")
    rows = [header]
    notes = []
    for item in summary.connectors:
        outcome = str(item.last_outcome) if item.last_outcome else "-"
        rows.append(
            (
                item.connector,
                _when(item.last_started),
                outcome,
                str(item.queued),
                str(item.verified),
                str(item.written),
                str(item.errors),
            )
        )
        if item.last_error:
            paused = " (paused until fixed and restarted)" if outcome == "fatal" else ""
            notes.append(f"  {item.connector}: last pass {outcome}{paused}: {item.last_error}")
        waiting = {k: v for k, v in item.files.items() if k not in ("done", "failed")}
        if item.files:
            notes.append(
                f"  {item.connector}: files done {item.files.get('done', 0)}, failed "
                f"{item.files.get('failed', 0)}, in progress {sum(waiting.values())}"
            )
        for failed in item.failed_files:  # not dropped again since; failed/ holds each
            notes.append(
                f"  {item.connector}: failed file {failed.name} ({_when(failed.failed_at)}):"
                f" {failed.error}"
            )
        if item.contacts:
            parts = ", ".join(f"{k} {v}" for k, v in sorted(item.contacts.items()))
            notes.append(f"  {item.connector}: contacts {parts}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines += notes
    totals = summary.results_by_status
    known = [s for s in _STATUS_ORDER if s in totals] + sorted(set(totals) - set(_STATUS_ORDER))
    by_status = ", ".join(f"{s} {totals[s]}" for s in known)
    lines.append(f"results: {sum(totals.values())}" + (f" ({by_status})" if by_status else ""))
    return lines


async def _sync_service(settings: AppSettings, only: str | None) -> Any:
    """Wire the service, run one pass of each connector (SIGTERM/SIGINT: after this step)."""
    import threading

    from .daemon import sync_once
    from .wiring import build_notifier, service, stop_signals

    async with service(settings, only=only) as wired:
        notifier = build_notifier(settings, wired.store)
        stop = threading.Event()
        try:
            with stop_signals(stop.set):
                reports = await sync_once(
                    settings,
                    store=wired.store,
                    connectors=wired.connectors,
                    verifier=wired.verifier,
                    stop=stop,
                )
            for report in reports:
                notifier.pass_finished(report)
            return reports
        finally:
            await notifier.aclose(wait_s=notifier.longest_delivery_s)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
@click.pass_context
@_user_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """Show each connector's last pass, queue, verified, written and errors; totals by status."""
    import dataclasses
    import json

    from .errors import StoreError
    from .store import path_problem
    from .wiring import open_store

    settings = _settings(ctx)
    path = settings.store.path
    problem = path_problem(path)
    if problem is not None:
        raise StoreError(str(path), problem)
    if not path.exists():
        click.echo(f"no store at {path} yet: `mailprobe run` or `mailprobe sync` creates it")
        return
    with open_store(settings) as store:
        summary = store.status_summary(settings.connectors)
        doctor = store.last_doctor_report()
    if as_json:
        data = {**dataclasses.asdict(summary), "doctor": doctor}
        click.echo(json.dumps(data, default=str, indent=2))
        return
    click.echo(f"store: {path}")
    for line in _status_lines(summary):
        click.echo(line)
    click.echo(_doctor_line(doctor))


def _doctor_line(report: dict[str, Any] | None) -> str:
    """Return `mailprobe status`'s line about the last pre-flight."""
    if report is None:
        return "doctor: never run (`mailprobe doctor` checks this host is ready)"
    return f"doctor ({report['checked_at']}): {report['summary']}"


# -- the store's answers: results export, forget, recheck --------------------------------------


def _existing_store(settings: AppSettings) -> Any:
    """Open the store the settings name; StoreError when there is none yet (nothing to read)."""
    from .errors import StoreError
    from .store import path_problem
    from .wiring import open_store

    path = settings.store.path
    problem = path_problem(path)
    if problem is None and not path.exists():
        problem = "does not exist yet (`mailprobe run`, `sync` or `verify` with a store fill it)"
    if problem is not None:
        raise StoreError(str(path), problem)
    return open_store(settings)


@main.group(cls=MailprobeGroup)
def results() -> None:
    """Read the answers the store keeps (results export)."""


@results.command("export")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    metavar="STATUS[,STATUS]",
    help="Only these statuses (valid, invalid, catch_all, risky, unknown); repeat or use commas.",
)
@click.option(
    "--since",
    metavar="WHEN",
    default=None,
    help="Only answers verified since a date (2026-11-01), a UTC time or an age (7d, 24h).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    default="csv",
    show_default=True,
    help="csv: email plus the mailprobe_* columns; jsonl: the result JSON per line.",
)
@click.pass_context
@_user_errors
def export(ctx: click.Context, statuses: tuple[str, ...], since: str | None, fmt: str) -> None:
    """Print the store's answers as CSV or JSON lines, one per address, filtered.

    \b
    Examples:
      mailprobe results export > all.csv
      mailprobe results export --status invalid,risky --since 7d
      mailprobe results export --format jsonl --since 2026-11-01 | jq .
    """
    from datetime import UTC, datetime

    from .results import parse_since, parse_statuses, write_export

    wanted = parse_statuses(statuses)
    moment = parse_since(since, now=datetime.now(UTC)) if since else None
    settings = _settings(ctx)
    with _existing_store(settings) as store:
        answers = store.export_results(statuses=wanted, since=moment)
        written = write_export(answers, sys.stdout, fmt=fmt)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        click.echo(f"{written} answers exported", err=True)


@main.command()
@click.argument("address", required=False)
@click.option("--domain", metavar="DOMAIN", default=None, help="Every address at this domain.")
@click.pass_context
@_user_errors
def forget(ctx: click.Context, address: str | None, domain: str | None) -> None:
    """Delete all the store holds about an address (or --domain): a data-protection erasure.

    Removes the answer, every form of the address, its queue entry and the CRM contacts
    holding it from the store (secure delete; the write-ahead log is emptied). The CRM's own
    record, drop-folder files and backups are not touched: erase the address there too, or
    a source that sends it again gets it verified again.
    """
    from .erasure import forget_address, forget_domain
    from .errors import InputError

    if (address is None) == (domain is None):
        raise InputError("give one ADDRESS or --domain DOMAIN")
    settings = _settings(ctx)
    allow = settings.engine.syntax.allow_test_domains
    with _existing_store(settings) as store:
        if domain is not None:
            done = forget_domain(store, domain, allow_test_domains=allow)
        else:
            done = forget_address(store, address or "", allow_test_domains=allow)
    counts = done.counts
    click.echo(
        f"forgot {done.subject}: {counts.results} answers, {counts.emails} address forms, "
        f"{counts.queue} queued, {counts.contacts} contacts, {counts.domains} domain facts"
    )
    if not done.log_emptied:
        click.echo(
            "mailprobe: another process is reading the store; its write-ahead log is emptied "
            "at the next checkpoint",
            err=True,
        )


@main.command()
@click.argument("address", required=False)
@click.option(
    "--contact",
    metavar="CONNECTOR:ID",
    default=None,
    help="The address a CRM contact holds, by connector name and the CRM's record id.",
)
@click.pass_context
@_user_errors
def recheck(ctx: click.Context, address: str | None, contact: str | None) -> None:
    """Verify one address now (whatever its freshness) and write the answer to its CRMs.

    Give the ADDRESS, or --contact hubspot:12345 for the address that contact holds. Prints the
    new result as JSON. Every CRM contact holding the address gets the answer through the same
    write-back as a pass (only changed fields). Exit 1 when a write failed.
    """
    import asyncio
    import json

    from .errors import InputError
    from .pipeline import Pipeline
    from .recheck import recheck as run_recheck
    from .wiring import build_connectors, close_connectors

    if (address is None) == (contact is None):
        raise InputError("give one ADDRESS or --contact CONNECTOR:ID")
    settings = _settings(ctx)
    _service_logging(ctx, settings)
    if contact is not None:
        with _existing_store(settings) as store:
            address = _contact_address(store, contact)
    built: dict[str, Any] = {}

    def connector(name: str) -> Any:
        if name not in settings.connectors:
            return None
        built.update(build_connectors(settings, only=name))
        return built[name]

    async def work() -> Any:
        from .wiring import build_verifier, open_async_store

        _existing_store(settings).close()  # StoreError when there is none yet
        store = await open_async_store(settings)
        try:
            async with build_verifier(settings) as verifier:
                pipeline = Pipeline(store, verifier)
                return await run_recheck(address or "", pipeline=pipeline, connector=connector)
        finally:
            await close_connectors(built)
            await store.aclose()

    done = asyncio.run(work())
    click.echo(json.dumps(done.found.to_json(), ensure_ascii=False, indent=2))
    _recheck_notes(done)
    if not all(write.ok for write in done.writes):
        sys.exit(EXIT_FAILED)


def _contact_address(store: Any, contact: str) -> str:
    """Return the address the store holds for `CONNECTOR:ID`; InputError when there is none."""
    from .errors import InputError

    name, sep, external_id = contact.partition(":")
    if not sep or not name or not external_id:
        raise InputError(f"--contact {contact!r}: give CONNECTOR:ID, e.g. hubspot:12345")
    email = store.contact_email(name, external_id)
    if email is None:
        raise InputError(
            f"--contact {contact}: no such contact in the store (a connector's pass stores "
            "its contacts; check the name with `mailprobe status`)"
        )
    if not email:
        raise InputError(f"--contact {contact}: the contact has no email address")
    return email


def _recheck_notes(done: Any) -> None:
    """Say on stderr what the store keeps and what each CRM received."""
    found, kept = done.found, done.kept
    if done.kept_previous:
        click.echo(
            f"the new answer is {found.status}/{found.reason}; the earlier {kept.status} answer "
            "is kept and the address is retried later",
            err=True,
        )
    if not done.writes:
        click.echo("no CRM contact holds this address", err=True)
    for write in done.writes:
        line = f"{write.connector}: {write.contacts} contacts, written {write.written}"
        line += f", failed {write.failed}" if write.failed else ""
        click.echo(line + (f" ({write.note})" if write.note else ""), err=True)


@main.command()
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False), required=False)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.pass_context
@_user_errors
def init(ctx: click.Context, path: Path | None, force: bool) -> None:
    """Write a commented starter config (every setting with its default) to PATH.

    PATH defaults to --config, else ./mailprobe.yaml.
    """
    from importlib.resources import files

    from .errors import InputError

    path = path or setting(ctx, "config") or Path("mailprobe.yaml")
    if path.exists() and not force:
        raise InputError(f"{path} exists; use --force to overwrite it")
    template = files("mailprobe").joinpath("config_template.yaml").read_text(encoding="utf-8")
    try:
        path.write_text(template, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None
    click.echo(f"wrote {path}; edit it, then run: mailprobe --config {path} run")


@main.command()
@click.pass_context
@_user_errors
def config(ctx: click.Context) -> None:
    """Print the effective settings (file, environment, defaults) as YAML, secrets masked."""
    import yaml

    from .logs import SecretMask, secret_values

    settings = _settings(ctx)
    # SecretStr values dump as ********** already; the mask also hides passwords inside URLs
    # (engine.smtp.proxy: socks5://user:password@host) and anything shaped like a token. It is
    # applied to each value before dumping, so the YAML quotes what it left and stays valid.
    mask = SecretMask(secret_values(settings))
    data = _masked(settings.model_dump(mode="json"), mask)
    click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


def _masked(value: Any, mask: Callable[[str], str]) -> Any:
    """Return `value` (the settings as JSON data) with every string passed through `mask`."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: _masked(item, mask) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item, mask) for item in value]
    return value


@main.command()
@click.option(
    "--listen", metavar="HOST:PORT", default=None, help="Where to listen (overrides api.listen)."
)
@click.option(
    "--no-store", is_flag=True, help="Keep cached results in memory, not in the store file."
)
@click.pass_context
@_user_errors
def serve(ctx: click.Context, listen: str | None, no_store: bool) -> None:
    """Run the real-time verification HTTP API alone, until SIGTERM or Ctrl-C.

    Answers are cached in the store (store.path, shared with `mailprobe run`) unless --no-store.
    Without api.keys it only listens on loopback. Dashboard at http://HOST:PORT/, reference at
    /docs.
    """
    import asyncio

    from . import api

    settings = _settings(ctx)
    if listen is not None:
        settings = settings.model_copy(
            update={"api": settings.api.model_copy(update={"listen": listen})}
        )
    _service_logging(ctx, settings)
    api.listen_address(settings.api)  # a bad or open address fails before the store is touched
    asyncio.run(_serve_api(settings, no_store=no_store))


async def _serve_api(settings: AppSettings, *, no_store: bool) -> None:
    from .wiring import open_async_store, serve_api

    store = None if no_store else await open_async_store(settings)
    try:
        await serve_api(settings, store=store)
    finally:
        if store is not None:
            await store.aclose()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.pass_context
@_user_errors
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check this host is ready to verify: resolver, port 25, HELO/PTR, SPF, blocklists, store,
    connectors, API keys. Exit 0 when ready, 1 when something must be fixed."""
    import asyncio
    import json

    from .doctor import run_doctor

    settings = _settings(ctx)
    report = asyncio.run(run_doctor(settings))
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for finding in report.findings:
            click.echo(finding.line())
        click.echo(f"mailprobe doctor: {report.summary()}")
    if not report.ready:
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
