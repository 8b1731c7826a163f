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

from engine.errors import MailprobeError

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
    _configure_logging(ctx, settings)
    table, stream = open_input(file, addresses)
    verifier = Verifier(settings.engine, role_is_risky=settings.policy.role_is_risky)
    progress = not quiet and sys.stderr.isatty() and file is not None
    try:
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


def _configure_logging(ctx: click.Context, settings: AppSettings) -> None:
    """Set up logging from settings, with --log-format taking precedence."""
    import logging

    fmt = ctx.obj.get("log_format") or settings.log.format
    try:
        from .logs import configure
    except ImportError:  # pragma: no cover - logs.py arrives with the daemon
        logging.basicConfig(level=settings.log.level, stream=sys.stderr)
        return
    configure(level=settings.log.level, fmt=fmt, secrets=())
