"""The shape of the `mailprobe` command line: global options anywhere, help that is not cut off.

`mailprobe verify --config x.yaml a@b.test` and `mailprobe --config x.yaml verify a@b.test` mean
the same: every command (and every command of a nested group) gets the global options too, and
their values land in the root context's `obj`, where the commands read them. Click cannot
accept a group's option after its subcommand by itself, hence this class. No application logic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

#: Longer than any command's first sentence: `mailprobe --help` shows each one whole.
_SUMMARY_LIMIT = 1000


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Keep a global option's value in the root context (a later, inner one wins)."""
    if value is not None and param.name is not None:
        ctx.find_root().ensure_object(dict)[param.name] = value
    return value


def global_options() -> list[click.Option]:
    """Return fresh instances of the global options (`--config`, `--log-format`)."""
    return [
        click.Option(
            ["--config"],
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            expose_value=False,
            callback=_remember,
            help="YAML settings file (default: ./mailprobe.yaml when present, else built-in "
            "defaults).",
        ),
        click.Option(
            ["--log-format"],
            type=click.Choice(["text", "json"]),
            default=None,
            expose_value=False,
            callback=_remember,
            help="Log lines as text or JSON (overrides log.format).",
        ),
    ]


def _with_global_options(command: click.Command) -> click.Command:
    names = {param.name for param in command.params}
    command.params.extend(o for o in global_options() if o.name not in names)
    return command


class MailprobeGroup(click.Group):
    """A group whose commands accept the global options too, listed with whole summaries."""

    group_class = type  # nested groups (`mailprobe results export`) behave the same

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _with_global_options(self)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        """Register a command, giving it the global options."""
        super().add_command(_with_global_options(cmd), name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands with each one's first sentence whole (click cuts it at ~45 chars)."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=_SUMMARY_LIMIT)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def setting(ctx: click.Context, name: str) -> Any:
    """Return a global option's value for this invocation (None when not given)."""
    return ctx.find_root().ensure_object(dict).get(name)
