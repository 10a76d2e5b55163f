"""The DICOM upper layer state machine (PS3.8 section 9.2).

Theory of operation
-------------------
The standard describes the upper layer as 13 states, 19 events and a table
(PS3.8 Table 9-10) that says, for each (state, event) pair, which action to
perform.  Each action has a fixed next state, except AE-6 (depends on
whether the A-ASSOCIATE-RQ is acceptable) and AR-8 (depends on whether this
side requested the association).

:data:`TRANSITIONS` below is that table, transcribed cell by cell, and it is
the single source of truth: :class:`~aiodicom.ul.connection.Connection`
looks every event up here and performs the named action.  A pair that is not
in the table is an event that cannot happen in that state (a local-user
mistake, e.g. sending data before the association is up): the connection
raises :class:`InvalidTransition` for local events.  Events caused by the
peer are always in the table for every state in which a transport exists.

This module is pure data: no I/O, no clock.
"""

from __future__ import annotations

import enum

__all__ = ["State", "Event", "Action", "TRANSITIONS", "NEXT_STATE", "InvalidTransition", "lookup"]


class State(enum.IntEnum):
    """PS3.8 Table 9-10 states."""

    STA1 = 1  # Idle
    STA2 = 2  # Transport open, awaiting A-ASSOCIATE-RQ PDU
    STA3 = 3  # Awaiting local A-ASSOCIATE response primitive
    STA4 = 4  # Awaiting transport connection opening to complete
    STA5 = 5  # Awaiting A-ASSOCIATE-AC or -RJ PDU
    STA6 = 6  # Association established, ready for data transfer
    STA7 = 7  # Awaiting A-RELEASE-RP PDU
    STA8 = 8  # Awaiting local A-RELEASE response primitive
    STA9 = 9  # Release collision requestor side; awaiting A-RELEASE response
    STA10 = 10  # Release collision acceptor side; awaiting A-RELEASE-RP PDU
    STA11 = 11  # Release collision requestor side; awaiting A-RELEASE-RP PDU
    STA12 = 12  # Release collision acceptor side; awaiting A-RELEASE response
    STA13 = 13  # Awaiting transport connection close indication


class Event(enum.IntEnum):
    """PS3.8 Table 9-10 events."""

    EVT1 = 1  # A-ASSOCIATE request (local user)
    EVT2 = 2  # Transport connect confirmation (local transport service)
    EVT3 = 3  # A-ASSOCIATE-AC PDU received
    EVT4 = 4  # A-ASSOCIATE-RJ PDU received
    EVT5 = 5  # Transport connection indication
    EVT6 = 6  # A-ASSOCIATE-RQ PDU received
    EVT7 = 7  # A-ASSOCIATE response primitive (accept)
    EVT8 = 8  # A-ASSOCIATE response primitive (reject)
    EVT9 = 9  # P-DATA request primitive
    EVT10 = 10  # P-DATA-TF PDU received
    EVT11 = 11  # A-RELEASE request primitive
    EVT12 = 12  # A-RELEASE-RQ PDU received
    EVT13 = 13  # A-RELEASE-RP PDU received
    EVT14 = 14  # A-RELEASE response primitive
    EVT15 = 15  # A-ABORT request primitive
    EVT16 = 16  # A-ABORT PDU received
    EVT17 = 17  # Transport connection closed indication
    EVT18 = 18  # ARTIM timer expired
    EVT19 = 19  # Unrecognized or invalid PDU received


class Action(enum.Enum):
    """PS3.8 9.2.2 actions."""

    AE_1 = "AE-1"  # issue TRANSPORT CONNECT request
    AE_2 = "AE-2"  # send A-ASSOCIATE-RQ PDU
    AE_3 = "AE-3"  # issue A-ASSOCIATE confirmation (accept)
    AE_4 = "AE-4"  # issue A-ASSOCIATE confirmation (reject), close transport
    AE_5 = "AE-5"  # issue transport connection response, start ARTIM
    AE_6 = "AE-6"  # stop ARTIM; indicate A-ASSOCIATE or send RJ and start ARTIM
    AE_7 = "AE-7"  # send A-ASSOCIATE-AC PDU
    AE_8 = "AE-8"  # send A-ASSOCIATE-RJ PDU, start ARTIM
    DT_1 = "DT-1"  # send P-DATA-TF PDU
    DT_2 = "DT-2"  # issue P-DATA indication
    AR_1 = "AR-1"  # send A-RELEASE-RQ PDU
    AR_2 = "AR-2"  # issue A-RELEASE indication
    AR_3 = "AR-3"  # issue A-RELEASE confirmation, close transport
    AR_4 = "AR-4"  # send A-RELEASE-RP PDU, start ARTIM
    AR_5 = "AR-5"  # stop ARTIM
    AR_6 = "AR-6"  # issue P-DATA indication (awaiting release RP)
    AR_7 = "AR-7"  # send P-DATA-TF PDU (awaiting local release response)
    AR_8 = "AR-8"  # issue A-RELEASE indication (release collision)
    AR_9 = "AR-9"  # send A-RELEASE-RP PDU (collision, requestor)
    AR_10 = "AR-10"  # issue A-RELEASE confirmation (collision, acceptor)
    AA_1 = "AA-1"  # send A-ABORT PDU (service-user source), (re)start ARTIM
    AA_2 = "AA-2"  # stop ARTIM if running, close transport
    AA_3 = "AA-3"  # issue A-ABORT / A-P-ABORT indication, close transport
    AA_4 = "AA-4"  # issue A-P-ABORT indication
    AA_5 = "AA-5"  # stop ARTIM
    AA_6 = "AA-6"  # ignore PDU
    AA_7 = "AA-7"  # send A-ABORT PDU
    AA_8 = "AA-8"  # send A-ABORT PDU (provider source), indicate A-P-ABORT, start ARTIM


S, E, A = State, Event, Action

#: Next state of each action.  ``None`` marks the two actions whose next
#: state depends on a condition (AE-6: acceptable RQ -> Sta3 else Sta13;
#: AR-8: association requestor -> Sta9 else Sta10).
NEXT_STATE: dict[Action, State | None] = {
    A.AE_1: S.STA4,
    A.AE_2: S.STA5,
    A.AE_3: S.STA6,
    A.AE_4: S.STA1,
    A.AE_5: S.STA2,
    A.AE_6: None,
    A.AE_7: S.STA6,
    A.AE_8: S.STA13,
    A.DT_1: S.STA6,
    A.DT_2: S.STA6,
    A.AR_1: S.STA7,
    A.AR_2: S.STA8,
    A.AR_3: S.STA1,
    A.AR_4: S.STA13,
    A.AR_5: S.STA1,
    A.AR_6: S.STA7,
    A.AR_7: S.STA8,
    A.AR_8: None,
    A.AR_9: S.STA11,
    A.AR_10: S.STA12,
    A.AA_1: S.STA13,
    A.AA_2: S.STA1,
    A.AA_3: S.STA1,
    A.AA_4: S.STA1,
    A.AA_5: S.STA1,
    A.AA_6: S.STA13,
    A.AA_7: S.STA13,
    A.AA_8: S.STA13,
}


def _row(event: Event, cells: str) -> dict[tuple[State, Event], Action]:
    """Parse one row of the table: 13 cells, '.' for an empty cell."""
    names = cells.split()
    assert len(names) == 13, (event, names)
    out: dict[tuple[State, Event], Action] = {}
    for state, name in zip(State, names):
        if name != ".":
            out[(state, event)] = Action(name)
    return out


#: PS3.8 Table 9-10, row by row (columns Sta1 .. Sta13).
TRANSITIONS: dict[tuple[State, Event], Action] = {
    **_row(E.EVT1, "AE-1 .    .    .    .    .    .    .    .    .    .    .    .   "),
    **_row(E.EVT2, ".    .    .    AE-2 .    .    .    .    .    .    .    .    .   "),
    **_row(E.EVT3, ".    AA-1 AA-8 .    AE-3 AA-8 AA-8 AA-8 AA-8 AA-8 AA-8 AA-8 AA-6"),
    **_row(E.EVT4, ".    AA-1 AA-8 .    AE-4 AA-8 AA-8 AA-8 AA-8 AA-8 AA-8 AA-8 AA-6"),
    **_row(E.EVT5, "AE-5 .    .    .    .    .    .    .    .    .    .    .    .   "),
    **_row(E.EVT6, ".    AE-6 AA-8 .    AA-8 AA-8 AA-8 AA-8 AA-8 AA-8 AA-8 AA-8 AA-7"),
    **_row(E.EVT7, ".    .    AE-7 .    .    .    .    .    .    .    .    .    .   "),
    **_row(E.EVT8, ".    .    AE-8 .    .    .    .    .    .    .    .    .    .   "),
    **_row(E.EVT9, ".    .    .    .    .    DT-1 .    AR-7 .    .    .    .    .   "),
    **_row(E.EVT10, ".    AA-1 AA-8 .    AA-8 DT-2 AR-6 AA-8 AA-8 AA-8 AA-8 AA-8 AA-6"),
    **_row(E.EVT11, ".    .    .    .    .    AR-1 .    .    .    .    .    .    .   "),
    **_row(E.EVT12, ".    AA-1 AA-8 .    AA-8 AR-2 AR-8 AA-8 AA-8 AA-8 AA-8 AA-8 AA-6"),
    **_row(E.EVT13, ".    AA-1 AA-8 .    AA-8 AA-8 AR-3 AA-8 AA-8 AR-10 AR-3 AA-8 AA-6"),
    **_row(E.EVT14, ".    .    .    .    .    .    .    AR-4 AR-9 .    .    AR-4 .   "),
    **_row(E.EVT15, ".    .    AA-1 AA-2 AA-1 AA-1 AA-1 AA-1 AA-1 AA-1 AA-1 AA-1 .   "),
    **_row(E.EVT16, ".    AA-2 AA-3 .    AA-3 AA-3 AA-3 AA-3 AA-3 AA-3 AA-3 AA-3 AA-2"),
    **_row(E.EVT17, ".    AA-5 AA-4 AA-4 AA-4 AA-4 AA-4 AA-4 AA-4 AA-4 AA-4 AA-4 AR-5"),
    **_row(E.EVT18, ".    AA-2 .    .    .    .    .    .    .    .    .    .    AA-2"),
    **_row(E.EVT19, ".    AA-1 AA-8 .    AA-8 AA-8 AA-8 AA-8 AA-8 AA-8 AA-8 AA-8 AA-7"),
}

del S, E, A


class InvalidTransition(Exception):
    """A local request was made in a state where the table has no entry."""

    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"event {event.name} is not valid in state {state.name}")
        self.state = state
        self.event = event


def lookup(state: State, event: Event) -> Action:
    """Return the action for ``(state, event)`` or raise InvalidTransition."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None
