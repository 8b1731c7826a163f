"""The contact state rules, as tables: the store records what these functions decide."""

from __future__ import annotations

import pytest

from mailprobe.contact_state import (
    REOPENED_BY_RESULT,
    ContactState,
    Stored,
    after_pull,
    after_result,
    after_write,
    needs_verification,
)

Q, T, W, N, R = (
    ContactState.QUEUED,
    ContactState.TO_WRITE,
    ContactState.WRITTEN,
    ContactState.NO_EMAIL,
    ContactState.RETIRED,
)
A = "a@x.test"
SRC = '{"mailprobe_status": "valid"}'


@pytest.mark.parametrize(
    ("before", "email", "source", "fresh", "expected"),
    [
        (None, "", SRC, False, N),  # no address: nothing to do
        (Stored(A, W, SRC), "", SRC, True, N),  # address removed at the source
        (None, A, SRC, False, Q),  # new contact, no answer yet: waits
        (None, A, SRC, True, T),  # new contact, fresh answer stored: only writing
        (Stored("b@x.test", W, SRC), A, SRC, False, Q),  # re-addressed
        (Stored(A, R, SRC), A, SRC, True, T),  # revived after being retired
        (Stored(A, N, SRC), A, SRC, False, Q),  # gained an address
        (Stored(A, W, SRC), A, "{}", True, T),  # fields changed at the source: check ours
        (Stored(A, W, SRC), A, "{}", False, Q),
        (Stored(A, W, SRC), A, SRC, True, W),  # unchanged: stays written
        (Stored(A, Q, SRC), A, "{}", True, Q),  # still waiting: keeps its state
        (Stored(A, T, SRC), A, "{}", False, T),
    ],
)
def test_pulled_contact_state(
    before: Stored | None, email: str, source: str, fresh: bool, expected: ContactState
) -> None:
    assert after_pull(before, email=email, source=source, fresh=fresh) is expected


@pytest.mark.parametrize(
    ("email", "fresh", "queued"),
    [("", False, False), ("", True, False), (A, True, False), (A, False, True)],
)
def test_only_an_address_without_a_fresh_answer_is_queued(
    email: str, fresh: bool, queued: bool
) -> None:
    assert needs_verification(email=email, fresh=fresh) is queued


@pytest.mark.parametrize(("state", "expected"), [(Q, T), (W, T), (T, T), (N, N), (R, R)])
def test_a_new_answer_reopens_waiting_and_written_contacts_only(
    state: ContactState, expected: ContactState
) -> None:
    assert after_result(state) is expected


def test_reopened_states_are_the_ones_after_result_moves() -> None:
    assert set(REOPENED_BY_RESULT) == {Q, W}
    assert after_write() is W
