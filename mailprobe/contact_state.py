"""Where a CRM contact stands, and the rules that move it: pure, so the store only records.

A contact is pulled (stored with its address), waits for a result (QUEUED), gets one (TO_WRITE:
its fields may need writing), is written (WRITTEN), or leaves the pipeline (NO_EMAIL, RETIRED).
Every backend applies these functions; none picks a state itself (docs/architecture.md, "The
store's contract").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ContactState(StrEnum):
    """Where a contact stands in the pipeline."""

    QUEUED = "queued"  # its address waits for a result
    TO_WRITE = "to_write"  # a result arrived: its fields may need writing
    WRITTEN = "written"  # the sink holds the fields of the current result
    NO_EMAIL = "no_email"  # the record has no address: nothing to do
    RETIRED = "retired"  # deleted or merged at the source or sink


#: States of a contact still followed by passes.
LIVE = (ContactState.QUEUED, ContactState.TO_WRITE, ContactState.WRITTEN)


@dataclass(frozen=True, slots=True)
class Stored:
    """What the store held for a contact before a pull: its address, state and source fields."""

    email: str
    state: ContactState
    source: str  # the source's fields as canonical JSON


def after_pull(before: Stored | None, *, email: str, source: str, fresh: bool) -> ContactState:
    """Return a pulled contact's state.

    `fresh` says a reusable answer for `email` is stored already (then it needs only writing).
    A new, re-addressed or revived contact waits again; a written one whose fields changed at
    the source is checked again (do ours still hold there?); anything else keeps its state.
    """
    if not email:
        return ContactState.NO_EMAIL
    waiting = ContactState.TO_WRITE if fresh else ContactState.QUEUED
    if before is None or before.email != email or before.state not in LIVE:
        return waiting
    if before.state is ContactState.WRITTEN and before.source != source:
        return waiting
    return before.state


def needs_verification(*, email: str, fresh: bool) -> bool:
    """Return True when a pulled address goes into the verification queue."""
    return bool(email) and not fresh


def after_result(state: ContactState) -> ContactState:
    """Return the state of a contact whose address just got an answer (stored or shared)."""
    if state in (ContactState.QUEUED, ContactState.WRITTEN):
        return ContactState.TO_WRITE
    return state


#: The states a new answer moves (after_result), for backends that update in one statement.
REOPENED_BY_RESULT = tuple(s for s in ContactState if after_result(s) is not s)


def after_write() -> ContactState:
    """Return the state of a contact whose fields the sink now holds (written or in sync)."""
    return ContactState.WRITTEN


def after_gone() -> ContactState:
    """Return the state of a contact deleted or merged at the source or sink."""
    return ContactState.RETIRED
