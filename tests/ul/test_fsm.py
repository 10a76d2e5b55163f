"""The PS3.8 state table (Table 9-10) as transcribed in aiodicom.ul.fsm.

``COLUMNS`` below is an independent transcription of the facts-sheet grid
(section 2.4), written column by column (per state) rather than row by row
as in fsm.py, so a slip in one transcription does not hide in the other.
"""

from __future__ import annotations

from collections import Counter

import pytest

from aiodicom.ul.fsm import (
    NEXT_STATE,
    TRANSITIONS,
    Action,
    Event,
    InvalidTransition,
    State,
    lookup,
)

# state -> {event: action}
COLUMNS: dict[int, dict[int, str]] = {
    1: {1: "AE-1", 5: "AE-5"},
    2: {3: "AA-1", 4: "AA-1", 6: "AE-6", 10: "AA-1", 12: "AA-1", 13: "AA-1", 16: "AA-2", 17: "AA-5", 18: "AA-2", 19: "AA-1"},
    3: {
        3: "AA-8", 4: "AA-8", 6: "AA-8", 7: "AE-7", 8: "AE-8", 10: "AA-8", 12: "AA-8", 13: "AA-8",
        15: "AA-1", 16: "AA-3", 17: "AA-4", 19: "AA-8",
    },
    4: {2: "AE-2", 15: "AA-2", 17: "AA-4"},
    5: {3: "AE-3", 4: "AE-4", 6: "AA-8", 10: "AA-8", 12: "AA-8", 13: "AA-8", 15: "AA-1", 16: "AA-3", 17: "AA-4", 19: "AA-8"},
    6: {
        3: "AA-8", 4: "AA-8", 6: "AA-8", 9: "DT-1", 10: "DT-2", 11: "AR-1", 12: "AR-2", 13: "AA-8",
        15: "AA-1", 16: "AA-3", 17: "AA-4", 19: "AA-8",
    },
    7: {3: "AA-8", 4: "AA-8", 6: "AA-8", 10: "AR-6", 12: "AR-8", 13: "AR-3", 15: "AA-1", 16: "AA-3", 17: "AA-4", 19: "AA-8"},
    8: {
        3: "AA-8", 4: "AA-8", 6: "AA-8", 9: "AR-7", 10: "AA-8", 12: "AA-8", 13: "AA-8", 14: "AR-4",
        15: "AA-1", 16: "AA-3", 17: "AA-4", 19: "AA-8",
    },
    9: {
        3: "AA-8", 4: "AA-8", 6: "AA-8", 10: "AA-8", 12: "AA-8", 13: "AA-8", 14: "AR-9",
        15: "AA-1", 16: "AA-3", 17: "AA-4", 19: "AA-8",
    },
    10: {3: "AA-8", 4: "AA-8", 6: "AA-8", 10: "AA-8", 12: "AA-8", 13: "AR-10", 15: "AA-1", 16: "AA-3", 17: "AA-4", 19: "AA-8"},
    11: {3: "AA-8", 4: "AA-8", 6: "AA-8", 10: "AA-8", 12: "AA-8", 13: "AR-3", 15: "AA-1", 16: "AA-3", 17: "AA-4", 19: "AA-8"},
    12: {
        3: "AA-8", 4: "AA-8", 6: "AA-8", 10: "AA-8", 12: "AA-8", 13: "AA-8", 14: "AR-4",
        15: "AA-1", 16: "AA-3", 17: "AA-4", 19: "AA-8",
    },
    13: {3: "AA-6", 4: "AA-6", 6: "AA-7", 10: "AA-6", 12: "AA-6", 13: "AA-6", 16: "AA-2", 17: "AR-5", 18: "AA-2", 19: "AA-7"},
}  # fmt: skip

# Number of non-empty cells in each row of the facts-sheet grid (Evt1..Evt19).
ROW_COUNTS = {1: 1, 2: 1, 3: 11, 4: 11, 5: 1, 6: 11, 7: 1, 8: 1, 9: 2, 10: 11,
              11: 1, 12: 11, 13: 11, 14: 3, 15: 10, 16: 11, 17: 12, 18: 2, 19: 11}  # fmt: skip
COLUMN_COUNTS = {1: 2, 2: 10, 3: 12, 4: 3, 5: 10, 6: 12, 7: 10, 8: 12, 9: 11, 10: 10, 11: 10, 12: 11, 13: 10}


def _expected() -> dict[tuple[State, Event], Action]:
    return {(State(s), Event(e)): Action(a) for s, col in COLUMNS.items() for e, a in col.items()}


def test_exactly_123_transitions() -> None:
    assert len(TRANSITIONS) == 123
    assert sum(ROW_COUNTS.values()) == 123
    assert sum(COLUMN_COUNTS.values()) == 123


def test_table_matches_independent_transcription() -> None:
    expected = _expected()
    missing = {k: v for k, v in expected.items() if k not in TRANSITIONS}
    extra = {k: v for k, v in TRANSITIONS.items() if k not in expected}
    wrong = {k: (TRANSITIONS[k], v) for k, v in expected.items() if k in TRANSITIONS and TRANSITIONS[k] != v}
    assert not missing, missing
    assert not extra, extra
    assert not wrong, wrong


def test_count_per_row() -> None:
    counts = Counter(event for (_state, event) in TRANSITIONS)
    assert {int(e): counts[e] for e in Event} == ROW_COUNTS


def test_count_per_column() -> None:
    counts = Counter(state for (state, _event) in TRANSITIONS)
    assert {int(s): counts[s] for s in State} == COLUMN_COUNTS


@pytest.mark.parametrize(
    ("state", "event", "action"),
    [
        # a handful of cells read off the facts-sheet grid by hand
        (1, 1, "AE-1"),
        (4, 2, "AE-2"),
        (5, 3, "AE-3"),
        (5, 4, "AE-4"),
        (1, 5, "AE-5"),
        (2, 6, "AE-6"),
        (3, 7, "AE-7"),
        (3, 8, "AE-8"),
        (13, 6, "AA-7"),
        (13, 19, "AA-7"),
        (13, 10, "AA-6"),
        (2, 10, "AA-1"),
        (8, 9, "AR-7"),
        (7, 12, "AR-8"),
        (10, 13, "AR-10"),
        (11, 13, "AR-3"),
        (12, 13, "AA-8"),
        (9, 14, "AR-9"),
        (12, 14, "AR-4"),
        (4, 15, "AA-2"),
        (2, 17, "AA-5"),
        (13, 17, "AR-5"),
        (13, 18, "AA-2"),
        (2, 16, "AA-2"),
        (13, 16, "AA-2"),
        (7, 10, "AR-6"),
    ],
)
def test_hand_checked_cells(state: int, event: int, action: str) -> None:
    assert TRANSITIONS[(State(state), Event(event))] is Action(action)
    assert lookup(State(state), Event(event)) is Action(action)


@pytest.mark.parametrize(
    ("state", "event"),
    [(2, 1), (1, 3), (4, 3), (6, 7), (3, 9), (7, 9), (7, 11), (6, 14), (2, 15), (13, 15), (1, 17), (6, 18), (4, 19)],
)
def test_empty_cells(state: int, event: int) -> None:
    assert (State(state), Event(event)) not in TRANSITIONS
    with pytest.raises(InvalidTransition) as info:
        lookup(State(state), Event(event))
    assert info.value.state is State(state)
    assert info.value.event is Event(event)


def test_every_action_is_used() -> None:
    assert set(TRANSITIONS.values()) == set(Action)
    assert len(Action) == 28


def test_next_state_covers_every_action() -> None:
    assert set(NEXT_STATE) == set(Action)


def test_only_conditional_actions_have_no_fixed_next_state() -> None:
    assert {a for a, s in NEXT_STATE.items() if s is None} == {Action.AE_6, Action.AR_8}


@pytest.mark.parametrize(
    ("action", "state"),
    [
        ("AE-1", 4), ("AE-2", 5), ("AE-3", 6), ("AE-4", 1), ("AE-5", 2), ("AE-7", 6), ("AE-8", 13),
        ("DT-1", 6), ("DT-2", 6), ("AR-1", 7), ("AR-2", 8), ("AR-3", 1), ("AR-4", 13), ("AR-5", 1),
        ("AR-6", 7), ("AR-7", 8), ("AR-9", 11), ("AR-10", 12), ("AA-1", 13), ("AA-2", 1), ("AA-3", 1),
        ("AA-4", 1), ("AA-5", 1), ("AA-6", 13), ("AA-7", 13), ("AA-8", 13),
    ],
)  # fmt: skip
def test_next_state_values(action: str, state: int) -> None:
    # facts sheet section 2.3
    assert NEXT_STATE[Action(action)] is State(state)


def test_every_transport_state_handles_every_peer_event() -> None:
    # Whenever a transport exists (all states but Sta1 and Sta4), every event
    # caused by the peer has an entry, so received bytes never hit an empty cell.
    peer_events = [3, 4, 6, 10, 12, 13, 16, 17, 19]
    for state in State:
        if state in (State.STA1, State.STA4):
            continue
        for e in peer_events:
            assert (state, Event(e)) in TRANSITIONS, (state, e)


def test_enums() -> None:
    assert [int(s) for s in State] == list(range(1, 14))
    assert [int(e) for e in Event] == list(range(1, 20))
