"""`mailprobe recheck ADDRESS`: verify one address now, whatever its freshness, and write the
answer back to every CRM contact holding it, through the pipeline's own write-back.

The answer is saved as any other (freshness.py: a new `unknown` never replaces an earlier
`valid` or `invalid`, it only schedules a retry), so the CRM receives what a pass would write.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime

from mailprobe.connectors.errors import ConnectorError
from mailprobe.engine import VerificationResult

from .crm_pass import CrmConnector
from .locks import ConnectorBusy
from .pipeline import Connector, Pipeline


@dataclass(frozen=True, slots=True)
class WriteBack:
    """What happened in one connector holding the address."""

    connector: str
    contacts: int  # live contacts holding the address
    written: int = 0
    failed: int = 0
    note: str | None = None  # why nothing was written now
    skipped: bool = False  # nothing can write it (the connector is not configured now)

    @property
    def ok(self) -> bool:
        """Return True unless a write failed or nothing can write the answer."""
        return self.failed == 0 and not self.skipped


@dataclass(frozen=True, slots=True)
class Recheck:
    """The engine's new answer, what the store keeps, and the write-backs."""

    found: VerificationResult  # what the servers said now
    kept: VerificationResult  # the store's answer after it (an earlier definite one may stay)
    kept_previous: bool
    writes: tuple[WriteBack, ...]


def _now() -> datetime:
    return datetime.now(UTC)


async def recheck(
    address: str,
    *,
    pipeline: Pipeline,
    connector: Callable[[str], Connector | None],
    clock: Callable[[], datetime] = _now,
) -> Recheck:
    """Verify `address` now, save the answer for every form of it, write it back to its CRMs.

    `connector(name)` returns the configured connector of that name, or None.
    """
    store = pipeline.store
    found = await _verify_one(pipeline, address)
    decision = await store.save_result(found, now=clock())
    forms = sorted({address, *(await store.address_forms(found.normalized))})
    await store.share_result(found.normalized, forms, now=clock())
    writes = []
    for name, count in (await store.connectors_holding(forms)).items():
        writes.append(await _write_back(pipeline, connector(name), name, count, forms))
    return Recheck(found, decision.result, decision.kept_previous, tuple(writes))


async def _verify_one(pipeline: Pipeline, address: str) -> VerificationResult:
    async with aclosing(pipeline.verifier.verify_many([address])) as results:
        async for result in results:
            return result
    raise AssertionError("verify_many yields one result per address")  # pragma: no cover


async def _write_back(
    pipeline: Pipeline, connector: Connector | None, name: str, count: int, forms: list[str]
) -> WriteBack:
    if not isinstance(connector, CrmConnector):
        return WriteBack(
            name, count, note="not configured as a CRM connector now; skipped", skipped=True
        )
    try:
        counts = await pipeline.write_back(connector, forms)
    except ConnectorBusy:
        return WriteBack(name, count, note="a pass of it is running; that pass writes the answer")
    except ConnectorError as exc:
        return WriteBack(name, count, failed=count, note=f"{exc}; the next pass tries again")
    return WriteBack(name, count, written=counts.written, failed=counts.failed)
