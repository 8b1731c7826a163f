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
