"""What `mailprobe doctor` found: one finding per check, and the report they make.

Values only: each finding says what was checked, what was found and how to fix it, in words a
user acts on. The checks live beside this module; the CLI prints, the store keeps the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from mailprobe.engine import format_time


class Outcome(StrEnum):
    """How one check ended; only FAIL makes the host not ready."""

    OK = "ok"
    WARN = "warn"  # works, but something will cost deliverability or trust
    FAIL = "fail"  # must be fixed before verifying a real list
    SKIP = "skip"  # not applicable, or could not be asked


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's result: what was checked, what was found, how to fix it (None when fine)."""

    check: str
    outcome: Outcome
    found: str
    fix: str | None = None

    def line(self) -> str:
        """Return the finding as one plain-language line."""
        text = f"[{self.outcome.upper():4}] {self.check}: {self.found}"
        return f"{text}\n       fix: {self.fix}" if self.fix else text


@dataclass(frozen=True, slots=True)
class Report:
    """Every finding of one doctor run, and when it ran."""

    findings: tuple[Finding, ...]
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def ready(self) -> bool:
        """Return True when no check failed."""
        return not any(f.outcome is Outcome.FAIL for f in self.findings)

    def count(self, outcome: Outcome) -> int:
        """Return how many findings ended with `outcome`."""
        return sum(1 for f in self.findings if f.outcome is outcome)

    def summary(self) -> str:
        """Return one line: ready or not, with the failing checks named."""
        failed = [f.check for f in self.findings if f.outcome is Outcome.FAIL]
        counts = f"{self.count(Outcome.OK)} ok, {self.count(Outcome.WARN)} warnings"
        if not failed:
            return f"ready ({counts})"
        return f"not ready: {len(failed)} to fix ({', '.join(failed)}); {counts}"

    def to_json(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        return {
            "ready": self.ready,
            "summary": self.summary(),
            "checked_at": format_time(self.checked_at),
            "findings": [{**asdict(f), "outcome": str(f.outcome)} for f in self.findings],
        }
