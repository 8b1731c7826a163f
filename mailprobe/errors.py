"""Errors a user can cause and fix: each message names the thing to fix, never a traceback."""

from __future__ import annotations

from mailprobe.engine import MailprobeError


class ConfigError(MailprobeError):
    """A setting is missing or wrong; `setting` is its dotted name, `hint` how to fix it."""

    def __init__(self, setting: str, hint: str) -> None:
        self.setting = setting
        self.hint = hint
        super().__init__(setting, hint)

    def __str__(self) -> str:
        return f"{self.setting}: {self.hint}" if self.setting else self.hint


class StoreError(MailprobeError):
    """The SQLite store cannot be used (corrupt, locked, unwritable); the message says what."""

    def __init__(self, path: str, hint: str) -> None:
        self.path = path
        self.hint = hint
        super().__init__(path, hint)

    def __str__(self) -> str:
        return f"store {self.path}: {self.hint}"


class StoreBusy(StoreError):
    """Another connection holds the store's write lock: waiting and trying again helps."""


class InputError(MailprobeError):
    """An input file or argument cannot be read; the message names it and why."""
