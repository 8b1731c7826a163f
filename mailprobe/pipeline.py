"""One pass of one connector (docs/architecture.md): the CRM passes (crm_pass.py) or the drop
folder's (drop_pass.py), run under the connector's lock and logged in the store (passes.py).

`Pipeline` is what the daemon, `sync` and `recheck` hold: one store, one verifier, one stop flag,
and the two kinds of passes, each keeping what it remembers between passes (prepared CRMs,
files announced as still being copied).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

from .crm_pass import CrmClient, CrmConnector, CrmPasses, capped, changed_fields, next_cursor
from .drop_pass import CsvDrop, DropPasses
from .passes import BulkVerifier, PassContext, PassReport, Tally, utc_now
from .store import RunCounts

__all__ = [
    "BulkVerifier",
    "Connector",
    "CrmClient",
    "CrmConnector",
    "CsvDrop",
    "PassReport",
    "Pipeline",
    "capped",
    "changed_fields",
    "next_cursor",
    "utc_now",
]

Connector = CsvDrop | CrmConnector


class Pipeline(PassContext):
    """Runs connector passes against one store and one verifier."""

    @cached_property
    def crm(self) -> CrmPasses:
        """The CRM passes (they remember which connectors were prepared)."""
        return CrmPasses(self)

    @cached_property
    def drops(self) -> DropPasses:
        """The drop-folder passes (they remember the files announced as still copying)."""
        return DropPasses(self)

    async def run_pass(self, connector: Connector, *, retry_only: bool = False) -> PassReport:
        """Run one pass (or, with `retry_only`, only the due retries) and log it in the store."""

        async def work(tally: Tally) -> None:
            if isinstance(connector, CsvDrop):
                await self.drops.run(connector, tally, retry_only=retry_only)
            else:
                await self.crm.run(connector, tally, retry_only=retry_only)

        return await self.recorded(connector.name, "retry" if retry_only else "pass", work)

    async def write_back(self, connector: CrmConnector, emails: Sequence[str]) -> RunCounts:
        """Write the current answer to the contacts holding one of `emails`, as a pass would
        (only fields whose value changed); return what was written and what failed.

        Holds the connector's pass lock (ConnectorBusy when a pass has it). Not logged as a
        pass: `mailprobe recheck` reports it.
        """
        return await self.crm.write_back(connector, emails)
