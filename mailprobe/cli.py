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

from engine import MailprobeError

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
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings(obj.get("config"))
    return obj["settings"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="YAML settings file (default: ./mailprobe.yaml when present, else built-in defaults).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log lines as text or JSON (overrides log.format).",
)
@click.pass_context
def main(ctx: click.Context, config: Path | None, log_format: str | None) -> None:
    """mailprobe: verify that email addresses can receive mail, without sending any."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config
    ctx.obj["log_format"] = log_format


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
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
@_user_errors
def verify(
    ctx: click.Context, addresses: tuple[str, ...], file: str | None, fmt: str, quiet: bool
) -> None:
    """Verify addresses and print the results (exit 0 whatever their statuses)."""
    from engine import Verifier

    from .bulk import open_input, run_verify
    from .errors import InputError

    if not addresses and file is None:
        raise InputError("give addresses to verify, or --file PATH ('-' for stdin)")
    if addresses and file is not None:
        raise InputError("give addresses or --file, not both")
    settings = _settings(ctx)
    _service_logging(ctx, settings)
    stream = None
    # A bar for a list, on a terminal only: piped or redirected stderr stays clean.
    progress = not quiet and sys.stderr.isatty() and (file is not None or len(addresses) > 1)
    try:
        table, stream = open_input(file, addresses)
        verifier = Verifier(settings.engine, role_is_risky=settings.policy.role_is_risky)
        tally = run_verify(
            verifier,
            table,
            sys.stdout,
            fmt=fmt,  # type: ignore[arg-type]
            single=len(addresses) == 1,
            progress=progress,
        )
    except KeyboardInterrupt:
        click.echo("mailprobe: interrupted; the results above are complete", err=True)
        sys.exit(130)
    finally:
        if stream is not None:
            stream.close()
    if progress:
        click.echo(tally.summary(), err=True)


# -- the daemon's commands: run, sync, status, init, config ------------------------------------

EXIT_FAILED = 1
_STATUS_ORDER = ("valid", "invalid", "catch_all", "risky", "unknown")


def _service_logging(ctx: click.Context, settings: AppSettings) -> None:
    """Set up logging for the service commands, masking every configured secret."""
    from .logs import configure, secret_values

    fmt = ctx.obj.get("log_format") or settings.log.format
    configure(level=settings.log.level, fmt=fmt, secrets=secret_values(settings))


async def _with_service(settings: AppSettings, only: str | None, work: Callable[..., Any]) -> Any:
    """Open the store, connectors and verifier, run `work(store, connectors, verifier)`, close."""
    from engine import Verifier

    from .daemon import open_store
    from .wiring import build_connectors, close_connectors

    connectors = build_connectors(settings, only=only)
    store = open_store(settings)
    try:
        verifier = Verifier(settings.engine, role_is_risky=settings.policy.role_is_risky)
        async with verifier:
            return await work(store, connectors, verifier)
    finally:
        await close_connectors(connectors)
        store.close()


@main.command()
@click.pass_context
@_user_errors
def run(ctx: click.Context) -> None:
    """Run the service: each enabled connector on its schedule, until SIGTERM or Ctrl-C.

    With no config file: the store is ./mailprobe.db and CSV files dropped into
    ./mailprobe-drop/inbox/ come back verified in ./mailprobe-drop/outbox/.
    """
    import asyncio

    from .daemon import Daemon

    settings = _settings(ctx)
    _service_logging(ctx, settings)

    async def serve(store: Any, connectors: Any, verifier: Any) -> None:
        from .doctor import preflight_line

        # Beside the daemon, not before it: a dead resolver must not delay the first pass.
        preflight = asyncio.create_task(preflight_line(settings, store))
        daemon = Daemon(settings, store=store, connectors=connectors, verifier=verifier)
        try:
            await daemon.run()
        finally:
            preflight.cancel()
            await asyncio.gather(preflight, return_exceptions=True)

    asyncio.run(_with_service(settings, None, serve))


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

    from .daemon import sync_once
    from .logs import mask_secrets

    settings = _settings(ctx)
    _service_logging(ctx, settings)

    async def once(store: Any, connectors: Any, verifier: Any) -> Any:
        return await sync_once(settings, store=store, connectors=connectors, verifier=verifier)

    reports = asyncio.run(_with_service(settings, only, once))
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
    from engine import format_time

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


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
@click.pass_context
@_user_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """Show each connector's last pass, queue, verified, written and errors; totals by status."""
    import dataclasses
    import json

    from .daemon import open_store

    settings = _settings(ctx)
    path = settings.store.path
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


@main.command()
@click.argument(
    "path", type=click.Path(path_type=Path, dir_okay=False), default=Path("mailprobe.yaml")
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@_user_errors
def init(path: Path, force: bool) -> None:
    """Write a commented starter config (every setting with its default) to PATH."""
    from importlib.resources import files

    from .errors import InputError

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
    data = settings.model_dump(mode="json")
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    # SecretStr values dump as ********** already; the mask also hides passwords inside URLs
    # (engine.smtp.proxy: socks5://user:password@host) and anything shaped like a token.
    click.echo(SecretMask(secret_values(settings))(text), nl=False)


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
    from .daemon import open_store

    settings = _settings(ctx)
    if listen is not None:
        settings = settings.model_copy(
            update={"api": settings.api.model_copy(update={"listen": listen})}
        )
    _service_logging(ctx, settings)
    api.listen_address(settings.api)  # a bad or open address fails before the store is touched
    store = None if no_store else open_store(settings)
    try:
        asyncio.run(api.serve(settings, store=store))
    finally:
        if store is not None:
            store.close()


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
