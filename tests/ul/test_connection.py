"""The sans-I/O Connection, driven through its public API only.

``test_every_transition`` is parametrized over every (state, event) pair of
:data:`aiodicom.ul.fsm.TRANSITIONS`: a Connection is brought into the source
state by legitimate inputs, the event is delivered, and the next state and
the action's side effects (bytes sent, events emitted, transport closed,
ARTIM started or stopped) are checked against PS3.8.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aiodicom.ul.connection import (
    Aborted,
    AssociationAccepted,
    AssociationRejected,
    AssociationRequested,
    Connection,
    ConnectionClosed,
    DataReceived,
    ReleaseConfirmed,
    ReleaseRequested,
)
from aiodicom.ul.fsm import (
    NEXT_STATE,
    TRANSITIONS,
    Action,
    Event,
    InvalidTransition,
    State,
)
from aiodicom.ul.pdu import (
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    PresentationContextAC,
    PresentationContextRQ,
    UserInformation,
)

T0 = 1000.0  # time at which the connection is set up
T1 = 1005.0  # time at which the event under test is delivered
ARTIM = 30.0

VERIFICATION = "1.2.840.10008.1.1"
IVLE = "1.2.840.10008.1.2"


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# Hand-written wire PDUs used as peer input.
RELEASE_RQ = h("05 00 00000004 00000000")
RELEASE_RP = h("06 00 00000004 00000000")
ABORT_FROM_PEER_USER = h("07 00 00000004 0000 0000")
ABORT_FROM_PEER_PROVIDER = h("07 00 00000004 0000 0201")
RJ_BYTES = h("03 00 00000004 00 01 01 07")
P_DATA = h("04 00 0000000c  00000008 01 03") + b"\x00\x01\x02\x03\x04\x05"
UNKNOWN_PDU = h("08 00 00000004 00000000")  # Evt19: unrecognised PDU type


def make_rq(version: int = 1) -> AAssociateRQ:
    return AAssociateRQ(
        "ACCEPTOR",
        "REQUESTOR",
        [PresentationContextRQ(1, VERIFICATION, [IVLE])],
        UserInformation(max_length=16384, implementation_class_uid="1.2.3.4"),
        protocol_version=version,
    )


def make_ac() -> AAssociateAC:
    return AAssociateAC(
        "ACCEPTOR",
        "REQUESTOR",
        [PresentationContextAC(1, 0, IVLE)],
        UserInformation(max_length=16384, implementation_class_uid="1.2.3.4"),
    )


RJ = AAssociateRJ(1, 1, 7)
RQ_BYTES = make_rq().encode()
AC_BYTES = make_ac().encode()


def split_pdus(out: list) -> list[tuple[int, bytes]]:  # type: ignore[type-arg]
    """Parse the concatenated output into (type, body) pairs."""
    data = b"".join(bytes(b) for b in out)
    pdus = []
    off = 0
    while off < len(data):
        assert len(data) - off >= 6, "truncated PDU in output"
        length = int.from_bytes(data[off + 2 : off + 6], "big")
        pdus.append((data[off], data[off + 6 : off + 6 + length]))
        off += 6 + length
    assert off == len(data)
    return pdus


def out_types(conn: Connection) -> list[int]:
    return [t for t, _b in split_pdus(conn.take_output())]


# --- drive a connection into each state ----------------------------------


def requestor_sta4() -> Connection:
    c = Connection(requestor=True, artim_timeout=ARTIM)
    c.request_association(make_rq())
    return c


def requestor_sta5() -> Connection:
    c = requestor_sta4()
    c.connection_made(T0)
    return c


def requestor_sta6() -> Connection:
    c = requestor_sta5()
    c.receive_data(AC_BYTES, T0)
    return c


def requestor_sta7() -> Connection:
    c = requestor_sta6()
    c.request_release()
    return c


def requestor_sta9() -> Connection:
    c = requestor_sta7()
    c.receive_data(RELEASE_RQ, T0)  # release collision, requestor side
    return c


def requestor_sta11() -> Connection:
    c = requestor_sta9()
    c.release_response()
    return c


def acceptor_sta2() -> Connection:
    c = Connection(requestor=False, artim_timeout=ARTIM)
    c.connection_made(T0)
    return c


def acceptor_sta3() -> Connection:
    c = acceptor_sta2()
    c.receive_data(RQ_BYTES, T0)
    return c


def acceptor_sta6() -> Connection:
    c = acceptor_sta3()
    c.accept(make_ac())
    return c


def acceptor_sta7() -> Connection:
    c = acceptor_sta6()
    c.request_release()
    return c


def acceptor_sta8() -> Connection:
    c = acceptor_sta6()
    c.receive_data(RELEASE_RQ, T0)
    return c


def acceptor_sta10() -> Connection:
    c = acceptor_sta7()
    c.receive_data(RELEASE_RQ, T0)  # release collision, acceptor side
    return c


def acceptor_sta12() -> Connection:
    c = acceptor_sta10()
    c.receive_data(RELEASE_RP, T0)
    return c


def acceptor_sta13() -> Connection:
    c = acceptor_sta3()
    c.reject(RJ)  # AE-8: ARTIM running, transport still open
    return c


SETUP: dict[State, Callable[[], Connection]] = {
    State.STA1: lambda: Connection(requestor=True, artim_timeout=ARTIM),
    State.STA2: acceptor_sta2,
    State.STA3: acceptor_sta3,
    State.STA4: requestor_sta4,
    State.STA5: requestor_sta5,
    State.STA6: acceptor_sta6,
    State.STA7: requestor_sta7,
    State.STA8: acceptor_sta8,
    State.STA9: requestor_sta9,
    State.STA10: acceptor_sta10,
    State.STA11: requestor_sta11,
    State.STA12: acceptor_sta12,
    State.STA13: acceptor_sta13,
}


def setup(state: State, event: Event | None = None) -> Connection:
    if state is State.STA1 and event is Event.EVT5:
        c = Connection(requestor=False, artim_timeout=ARTIM)
    else:
        c = SETUP[state]()
    assert c.state is state
    c.take_output()
    c.take_events()
    return c


def test_setups_reach_their_states() -> None:
    for state in State:
        assert setup(state).state is state
    # Sta13 via reject keeps the transport and starts ARTIM
    c = setup(State.STA13)
    assert c.next_deadline() == T0 + ARTIM
    assert not c.close_transport


# --- deliver each event --------------------------------------------------

DATA_OUT = [b"\x04\x00\x00\x00\x00\x08", b"\x00\x00\x00\x04\x01\x03\xaa\xbb"]


def deliver(c: Connection, event: Event) -> None:
    e = int(event)
    if e == 1:
        c.request_association(make_rq())
    elif e in (2, 5):
        c.connection_made(T1)
    elif e == 3:
        c.receive_data(AC_BYTES, T1)
    elif e == 4:
        c.receive_data(RJ_BYTES, T1)
    elif e == 6:
        c.receive_data(RQ_BYTES, T1)
    elif e == 7:
        c.accept(make_ac())
    elif e == 8:
        c.reject(RJ, now=T1)
    elif e == 9:
        c.send_data(list(DATA_OUT))
    elif e == 10:
        c.receive_data(P_DATA, T1)
    elif e == 11:
        c.request_release()
    elif e == 12:
        c.receive_data(RELEASE_RQ, T1)
    elif e == 13:
        c.receive_data(RELEASE_RP, T1)
    elif e == 14:
        c.release_response(now=T1)
    elif e == 15:
        c.abort(now=T1)
    elif e == 16:
        c.receive_data(ABORT_FROM_PEER_PROVIDER, T1)
    elif e == 17:
        c.connection_lost(T1)
    elif e == 18:
        deadline = c.next_deadline()
        assert deadline is not None, "ARTIM must be running for Evt18"
        c.handle_timer(deadline + 0.001)
    elif e == 19:
        c.receive_data(UNKNOWN_PDU, T1)
    else:  # pragma: no cover
        raise AssertionError(event)


PEER_PDU_EVENTS = {3: 0x02, 4: 0x03, 6: 0x01, 10: 0x04, 12: 0x05, 13: 0x06, 16: 0x07}


def _abort_body(source: int, reason: int) -> bytes:
    return bytes([0, 0, source, reason])


def check_side_effects(
    action: Action,
    event: Event,
    c: Connection,
    raw: list,  # type: ignore[type-arg]
    events: list,  # type: ignore[type-arg]
    deadline_before: float | None,
) -> None:
    out = split_pdus(raw)
    a = action.value
    e = int(event)
    deadline = c.next_deadline()
    types = [t for t, _b in out]
    non_close = [ev for ev in events if not isinstance(ev, ConnectionClosed)]

    if a == "AE-1":
        assert out == [] and non_close == [] and not c.close_transport
    elif a == "AE-2":
        assert out == [(0x01, RQ_BYTES[6:])]
    elif a == "AE-3":
        assert out == []
        assert len(non_close) == 1 and isinstance(non_close[0], AssociationAccepted)
        assert non_close[0].accept == make_ac()
    elif a == "AE-4":
        assert out == []
        assert len(non_close) == 1 and isinstance(non_close[0], AssociationRejected)
        assert non_close[0].reject == RJ
        assert c.close_transport
    elif a == "AE-5":
        assert out == [] and non_close == []
        assert deadline == T1 + ARTIM
    elif a == "AE-6":
        assert out == []
        assert deadline is None  # stopped
        assert len(non_close) == 1 and isinstance(non_close[0], AssociationRequested)
        assert non_close[0].request == make_rq()
    elif a == "AE-7":
        assert out == [(0x02, AC_BYTES[6:])]
        assert non_close == []
    elif a == "AE-8":
        assert out == [(0x03, RJ_BYTES[6:])]
        assert deadline == T1 + ARTIM
    elif a in ("DT-1", "AR-7"):
        assert [bytes(x) for x in raw] == DATA_OUT  # the caller's buffers, as given
        assert non_close == []
    elif a in ("DT-2", "AR-6"):
        assert out == []
        assert len(non_close) == 1 and isinstance(non_close[0], DataReceived)
        assert [(ctx, ctrl, bytes(f)) for ctx, ctrl, f in non_close[0].pdvs] == [(1, 3, b"\x00\x01\x02\x03\x04\x05")]
    elif a == "AR-1":
        assert out == [(0x05, bytes(4))]
        assert non_close == []
    elif a == "AR-2":
        assert out == []
        assert non_close == [ReleaseRequested(collision=False)]
    elif a == "AR-3":
        assert out == []
        assert non_close == [ReleaseConfirmed()]
        assert c.close_transport
    elif a == "AR-4":
        assert out == [(0x06, bytes(4))]
        assert deadline == T1 + ARTIM
        assert not c.close_transport
    elif a == "AR-5":
        assert out == []
        assert deadline is None and deadline_before is not None
        assert non_close == []
    elif a == "AR-8":
        assert out == []
        assert non_close == [ReleaseRequested(collision=True)]
    elif a == "AR-9":
        assert out == [(0x06, bytes(4))]
        assert non_close == []
    elif a == "AR-10":
        assert out == []
        assert non_close == [ReleaseConfirmed()]
        assert not c.close_transport
    elif a == "AA-1":
        assert types == [0x07]
        if e == 15:  # local A-ABORT request: service-user source
            assert out[0][1] == _abort_body(0, 0)
            assert len(non_close) == 1 and isinstance(non_close[0], Aborted)
            assert not non_close[0].by_peer
        elif e == 19:  # unrecognised PDU
            assert out[0][1] == _abort_body(2, 1)
        else:  # a PDU other than A-ASSOCIATE-RQ arrived in Sta2: unexpected PDU
            assert out[0][1] == _abort_body(2, 2)
        assert deadline == T1 + ARTIM  # (re)started
    elif a == "AA-2":
        assert out == []
        assert deadline is None
        assert c.close_transport
        if e == 16:
            assert [type(x) for x in non_close] == [Aborted]
            assert non_close[0].by_peer and (non_close[0].source, non_close[0].reason) == (2, 1)
    elif a == "AA-3":
        assert out == []
        assert c.close_transport
        assert len(non_close) == 1 and isinstance(non_close[0], Aborted)
        assert non_close[0].by_peer
        assert (non_close[0].source, non_close[0].reason) == (2, 1)
    elif a == "AA-4":
        assert out == []
        assert len(non_close) == 1 and isinstance(non_close[0], Aborted)
        assert not non_close[0].by_peer
        assert isinstance(events[-1], ConnectionClosed)
        assert c.closed
    elif a == "AA-5":
        assert out == [] and non_close == []
        assert deadline is None and deadline_before is not None
        assert c.closed
    elif a == "AA-6":
        assert out == [] and non_close == []
        assert deadline == deadline_before  # ARTIM untouched
        assert not c.close_transport
    elif a == "AA-7":
        assert types == [0x07]
        # Evt6 in Sta13: unexpected PDU; Evt19: unrecognised PDU
        assert out[0][1] == (_abort_body(2, 2) if e == 6 else _abort_body(2, 1))
        assert non_close == []
    elif a == "AA-8":
        assert types == [0x07]
        assert out[0][1] == (_abort_body(2, 1) if e == 19 else _abort_body(2, 2))
        assert len(non_close) == 1 and isinstance(non_close[0], Aborted)
        assert not non_close[0].by_peer
        assert (non_close[0].source, non_close[0].reason) == (2, 1 if e == 19 else 2)
        assert deadline == T1 + ARTIM
    else:  # pragma: no cover
        raise AssertionError(a)

    if e == 19:
        # the stream cannot be framed any more
        assert c.close_transport
    if e == 17:
        assert c.closed and isinstance(events[-1], ConnectionClosed)


PAIRS = sorted(TRANSITIONS.items(), key=lambda kv: (kv[0][0], kv[0][1]))


@pytest.mark.parametrize(
    ("state", "event", "action"),
    [(s, e, a) for (s, e), a in PAIRS],
    ids=[f"{s.name}-{e.name}-{a.value}" for (s, e), a in PAIRS],
)
def test_every_transition(state: State, event: Event, action: Action) -> None:
    c = setup(state, event)
    deadline_before = c.next_deadline()
    deliver(c, event)
    raw = c.take_output()
    events = c.take_events()
    expected = NEXT_STATE[action]
    if action is Action.AE_6:
        expected = State.STA3  # acceptable RQ (the reject path is tested below)
    elif action is Action.AR_8:
        expected = State.STA9 if c.requestor else State.STA10
    assert c.state is expected
    check_side_effects(action, event, c, raw, events, deadline_before)


def test_all_pairs_parametrized() -> None:
    assert len(PAIRS) == 123


# --- empty cells -----------------------------------------------------------

LOCAL_CALLS: dict[str, tuple[Callable[[Connection], None], Callable[[Connection], Event]]] = {
    "request_association": (lambda c: c.request_association(make_rq()), lambda c: Event.EVT1),
    "connection_made": (lambda c: c.connection_made(T1), lambda c: Event.EVT2 if c.requestor else Event.EVT5),
    "accept": (lambda c: c.accept(make_ac()), lambda c: Event.EVT7),
    "reject": (lambda c: c.reject(RJ), lambda c: Event.EVT8),
    "send_data": (lambda c: c.send_data(list(DATA_OUT)), lambda c: Event.EVT9),
    "request_release": (lambda c: c.request_release(), lambda c: Event.EVT11),
    "release_response": (lambda c: c.release_response(), lambda c: Event.EVT14),
}

EMPTY_LOCAL = [
    (state, name)
    for state in State
    for name, (_call, evt) in LOCAL_CALLS.items()
    if (state, evt(setup(state))) not in TRANSITIONS
]


@pytest.mark.parametrize(
    ("state", "name"), EMPTY_LOCAL, ids=[f"{s.name}-{n}" for s, n in EMPTY_LOCAL]
)
def test_local_request_in_empty_cell_raises(state: State, name: str) -> None:
    c = setup(state)
    deadline = c.next_deadline()
    call, evt = LOCAL_CALLS[name]
    with pytest.raises(InvalidTransition) as info:
        call(c)
    assert info.value.state is state
    assert info.value.event is evt(c)
    assert c.state is state
    assert c.take_output() == []
    assert c.take_events() == []
    assert c.next_deadline() == deadline


def test_empty_local_cells_count() -> None:
    # 7 local primitives x 13 states, minus the defined cells: Evt1:1,
    # connection_made: 1 (Evt2 in Sta4; the Sta1 set-up is a requestor, for
    # which connection_made is Evt2, undefined there), Evt7:1, Evt8:1,
    # Evt9:2, Evt11:1, Evt14:3
    assert len(EMPTY_LOCAL) == 7 * 13 - 10


@pytest.mark.parametrize("state", [State.STA1, State.STA2, State.STA13])
def test_abort_is_a_no_op_where_the_table_has_no_entry(state: State) -> None:
    c = setup(state)
    deadline = c.next_deadline()
    c.abort()
    assert c.state is state
    assert c.take_output() == []
    assert c.take_events() == []
    assert c.next_deadline() == deadline


@pytest.mark.parametrize("state", [s for s in State if (s, Event.EVT18) not in TRANSITIONS])
def test_timer_is_ignored_where_evt18_is_undefined(state: State) -> None:
    c = setup(state)
    c.handle_timer(T0 + 10 * ARTIM)
    assert c.state is state
    assert c.take_output() == []
    assert c.take_events() == []


def test_timer_before_deadline_does_nothing() -> None:
    c = setup(State.STA2)
    c.handle_timer(T0 + ARTIM - 0.001)
    assert c.state is State.STA2
    assert c.next_deadline() == T0 + ARTIM
    assert not c.close_transport
    c.handle_timer(T0 + ARTIM)  # exactly at the deadline: expires
    assert c.state is State.STA1
    assert c.close_transport


def test_connection_lost_in_sta1_only_reports_closed() -> None:
    c = setup(State.STA1)
    c.connection_lost(T1)
    assert c.state is State.STA1
    assert c.take_events() == [ConnectionClosed()]
    c.connection_lost(T1)  # idempotent
    assert c.take_events() == []


# --- full flows ------------------------------------------------------------


def pump(a: Connection, b: Connection, now: float = T0) -> None:
    """Move bytes both ways until neither side has output."""
    while a.has_output or b.has_output:
        for src, dst in ((a, b), (b, a)):
            out = src.take_output()
            if out and not dst.closed:
                dst.receive_data(b"".join(bytes(x) for x in out), now)


def associate() -> tuple[Connection, Connection]:
    req = Connection(requestor=True, artim_timeout=ARTIM)
    acc = Connection(requestor=False, artim_timeout=ARTIM)
    req.request_association(make_rq())
    acc.connection_made(T0)
    req.connection_made(T0)
    pump(req, acc)
    (ev,) = acc.take_events()
    assert isinstance(ev, AssociationRequested)
    assert ev.request == make_rq()
    assert acc.state is State.STA3
    assert acc.next_deadline() is None
    acc.accept(make_ac())
    pump(req, acc)
    (ev2,) = req.take_events()
    assert isinstance(ev2, AssociationAccepted)
    assert ev2.accept == make_ac()
    assert req.state is State.STA6 and acc.state is State.STA6
    assert req.is_established and acc.is_established
    return req, acc


def test_flow_association_accept_and_data() -> None:
    req, acc = associate()
    req.send_data([P_DATA])
    pump(req, acc)
    (ev,) = acc.take_events()
    assert isinstance(ev, DataReceived)
    assert [(c, m, bytes(f)) for c, m, f in ev.pdvs] == [(1, 3, b"\x00\x01\x02\x03\x04\x05")]
    acc.send_data([P_DATA, P_DATA])
    pump(req, acc)
    evs = req.take_events()
    assert [type(e) for e in evs] == [DataReceived, DataReceived]


def test_flow_association_reject() -> None:
    req = Connection(requestor=True, artim_timeout=ARTIM)
    acc = Connection(requestor=False, artim_timeout=ARTIM)
    req.request_association(make_rq())
    acc.connection_made(T0)
    req.connection_made(T0)
    pump(req, acc)
    acc.take_events()
    acc.reject(AAssociateRJ(1, 1, 3))
    assert acc.state is State.STA13
    assert acc.next_deadline() == T0 + ARTIM
    pump(req, acc)
    (ev,) = req.take_events()
    assert isinstance(ev, AssociationRejected)
    assert ev.reject == AAssociateRJ(1, 1, 3)
    assert req.state is State.STA1 and req.close_transport
    # the requestor closes; the acceptor sees the transport go (AR-5)
    req.connection_lost(T0)
    acc.connection_lost(T0 + 1)
    assert acc.state is State.STA1
    assert acc.next_deadline() is None
    assert acc.take_events() == [ConnectionClosed()]
    assert acc.closed


def test_flow_protocol_version_reject() -> None:
    acc = setup(State.STA2)
    acc.receive_data(make_rq(version=0).encode(), T1)
    assert acc.state is State.STA13
    assert split_pdus(acc.take_output()) == [(0x03, bytes([0, 1, 2, 2]))]  # RJ 1/2/2
    assert acc.take_events() == []  # the user never sees the RQ
    assert acc.next_deadline() == T1 + ARTIM  # AE-6 reject path starts ARTIM
    assert not acc.close_transport


def test_flow_protocol_version_only_bit_0_checked() -> None:
    acc = setup(State.STA2)
    acc.receive_data(make_rq(version=0x8001).encode(), T1)
    assert acc.state is State.STA3
    assert acc.take_output() == []


def test_flow_release_requested_by_requestor() -> None:
    req, acc = associate()
    req.request_release()
    assert req.state is State.STA7
    pump(req, acc)
    assert acc.state is State.STA8
    assert acc.take_events() == [ReleaseRequested(collision=False)]
    # Sta8: the acceptor may still send data (AR-7), received in Sta7 (AR-6)
    acc.send_data([P_DATA])
    pump(req, acc)
    assert [type(e) for e in req.take_events()] == [DataReceived]
    assert req.state is State.STA7
    acc.release_response()
    assert acc.state is State.STA13
    assert acc.next_deadline() == T0 + ARTIM
    pump(req, acc)
    assert req.take_events() == [ReleaseConfirmed()]
    assert req.state is State.STA1 and req.close_transport
    req.connection_lost(T0)
    acc.connection_lost(T0)
    assert acc.state is State.STA1
    assert acc.next_deadline() is None


def test_flow_release_requested_by_acceptor() -> None:
    req, acc = associate()
    acc.request_release()
    pump(req, acc)
    assert req.state is State.STA8
    assert req.take_events() == [ReleaseRequested(collision=False)]
    req.release_response()
    pump(req, acc)
    assert acc.take_events() == [ReleaseConfirmed()]
    assert acc.state is State.STA1 and acc.close_transport
    assert req.state is State.STA13
    assert not req.close_transport


def test_flow_release_sta13_artim_expiry() -> None:
    req, acc = associate()
    req.request_release()
    pump(req, acc)
    acc.take_events()
    acc.release_response()
    # the peer never closes: ARTIM expires in Sta13 (AA-2)
    deadline = acc.next_deadline()
    assert deadline == T0 + ARTIM
    acc.handle_timer(deadline - 1)
    assert acc.state is State.STA13 and not acc.close_transport
    acc.handle_timer(deadline + 1)
    assert acc.state is State.STA1
    assert acc.close_transport
    assert acc.next_deadline() is None


def test_flow_artim_expiry_in_sta2() -> None:
    acc = Connection(requestor=False, artim_timeout=5.0)
    acc.connection_made(100.0)
    assert acc.next_deadline() == 105.0
    acc.handle_timer(104.999)
    assert acc.state is State.STA2
    acc.handle_timer(105.5)
    assert acc.state is State.STA1
    assert acc.close_transport
    assert acc.take_output() == []  # no A-ABORT: there is no association
    assert acc.next_deadline() is None
    acc.connection_lost(106.0)
    assert acc.take_events() == [ConnectionClosed()]


def test_flow_release_collision() -> None:
    req, acc = associate()
    req.request_release()
    acc.request_release()
    assert req.state is State.STA7 and acc.state is State.STA7
    pump(req, acc)
    # both A-RELEASE-RQs crossed: requestor Sta9, acceptor Sta10
    assert req.state is State.STA9
    assert acc.state is State.STA10
    assert req.take_events() == [ReleaseRequested(collision=True)]
    assert acc.take_events() == [ReleaseRequested(collision=True)]
    # requestor answers first (AR-9) -> Sta11
    req.release_response()
    assert req.state is State.STA11
    pump(req, acc)
    # acceptor got the RP: AR-10 -> Sta12
    assert acc.state is State.STA12
    assert acc.take_events() == [ReleaseConfirmed()]
    assert not acc.close_transport
    acc.release_response()  # AR-4 -> Sta13
    assert acc.state is State.STA13
    assert acc.next_deadline() == T0 + ARTIM
    pump(req, acc)
    # requestor got the RP: AR-3, close
    assert req.state is State.STA1
    assert req.take_events() == [ReleaseConfirmed()]
    assert req.close_transport
    req.connection_lost(T0)
    acc.connection_lost(T0)
    assert acc.state is State.STA1 and acc.closed


def test_flow_release_collision_acceptor_side_only() -> None:
    acc = setup(State.STA6)
    acc.request_release()
    assert out_types(acc) == [0x05]
    acc.receive_data(RELEASE_RQ, T1)
    assert acc.state is State.STA10
    acc.receive_data(RELEASE_RP, T1)
    assert acc.state is State.STA12
    acc.release_response()
    assert out_types(acc) == [0x06]
    assert acc.state is State.STA13


def test_flow_release_collision_requestor_side_only() -> None:
    req = requestor_sta6()
    req.take_output()
    req.request_release()
    assert out_types(req) == [0x05]
    req.receive_data(RELEASE_RQ, T1)
    assert req.state is State.STA9
    req.release_response()
    assert out_types(req) == [0x06]
    assert req.state is State.STA11
    req.receive_data(RELEASE_RP, T1)
    assert req.state is State.STA1 and req.close_transport


@pytest.mark.parametrize("who", ["requestor", "acceptor"])
def test_flow_abort(who: str) -> None:
    req, acc = associate()
    local, peer = (req, acc) if who == "requestor" else (acc, req)
    local.abort()
    assert local.state is State.STA13
    assert local.next_deadline() == T0 + ARTIM
    (ev,) = local.take_events()
    assert isinstance(ev, Aborted) and not ev.by_peer and ev.source == 0
    pump(req, acc)
    assert peer.state is State.STA1
    assert peer.close_transport
    (pev,) = peer.take_events()
    assert isinstance(pev, Aborted) and pev.by_peer
    assert (pev.source, pev.reason) == (0, 0)
    peer.connection_lost(T0)
    local.connection_lost(T0 + 1)  # AR-5
    assert local.state is State.STA1
    assert local.next_deadline() is None


def test_flow_abort_with_provider_source() -> None:
    _req, acc = associate()
    acc.abort(source=2, reason=0)
    assert split_pdus(acc.take_output()) == [(0x07, bytes([0, 0, 2, 0]))]


def test_abort_while_connecting_sta4() -> None:
    c = requestor_sta4()
    c.abort()
    assert c.state is State.STA1
    assert c.close_transport
    assert c.take_output() == []
    (ev,) = c.take_events()
    assert isinstance(ev, Aborted) and not ev.by_peer


def test_local_primitives_without_now_use_the_last_input_time() -> None:
    c = setup(State.STA6)
    c.abort()  # Sta13, ARTIM from the last input (T0)
    assert c.next_deadline() == T0 + ARTIM
    c = setup(State.STA8)
    c.release_response()
    assert c.next_deadline() == T0 + ARTIM
    c = setup(State.STA3)
    c.reject(RJ)
    assert c.next_deadline() == T0 + ARTIM


def test_local_primitives_with_now_start_artim_from_now() -> None:
    c = setup(State.STA3)
    c.reject(RJ, now=T0 + 50)  # the user took 50 s to decide
    assert c.next_deadline() == T0 + 50 + ARTIM
    c.handle_timer(T0 + 51)
    assert c.state is State.STA13 and not c.close_transport


def test_peer_abort_with_user_source_in_sta6() -> None:
    c = setup(State.STA6)
    c.receive_data(ABORT_FROM_PEER_USER, T1)
    (ev,) = [e for e in c.take_events() if isinstance(e, Aborted)]
    assert ev.by_peer and (ev.source, ev.reason) == (0, 0)
    assert c.state is State.STA1 and c.close_transport


def test_connection_lost_while_established() -> None:
    c = setup(State.STA6)
    c.connection_lost(T1)
    evs = c.take_events()
    assert [type(e) for e in evs] == [Aborted, ConnectionClosed]
    assert c.state is State.STA1
    assert c.closed
    # nothing more is processed after close
    c.receive_data(P_DATA, T1)
    assert c.take_events() == []


def test_several_pdus_in_one_chunk() -> None:
    c = setup(State.STA6)
    c.receive_data(P_DATA + P_DATA + RELEASE_RQ, T1)
    evs = c.take_events()
    assert [type(e) for e in evs] == [DataReceived, DataReceived, ReleaseRequested]
    assert c.state is State.STA8


def test_bytes_after_close_are_ignored() -> None:
    c = setup(State.STA6)
    c.receive_data(ABORT_FROM_PEER_USER + P_DATA, T1)
    assert [type(e) for e in c.take_events()] == [Aborted]
    assert c.state is State.STA1


def test_pdus_after_abort_in_sta13_are_ignored() -> None:
    c = setup(State.STA6)
    c.receive_data(RQ_BYTES + P_DATA + RELEASE_RQ, T1)  # AA-8, then AA-6, AA-6
    assert c.state is State.STA13
    assert out_types(c) == [0x07]
    assert [type(e) for e in c.take_events()] == [Aborted]


def test_pdata_split_across_receives() -> None:
    c = setup(State.STA6)
    for i in range(len(P_DATA)):
        c.receive_data(P_DATA[i : i + 1], T1)
    (ev,) = c.take_events()
    assert isinstance(ev, DataReceived)


def test_max_pdu_length_enforced_on_receive() -> None:
    acc = Connection(requestor=False, artim_timeout=ARTIM, max_pdu_length=8)
    assert acc.max_pdu_length == 8
    acc.connection_made(T0)
    acc.receive_data(RQ_BYTES, T0)
    acc.accept(make_ac())
    acc.take_output()
    acc.take_events()
    acc.receive_data(h("04 00 00000009"), T1)  # header only: 9 > 8
    assert split_pdus(acc.take_output()) == [(0x07, bytes([0, 0, 2, 6]))]
    assert acc.close_transport
    assert acc.state is State.STA13


def test_pdus_behind_the_rq_wait_for_the_accept() -> None:
    acc = setup(State.STA2)
    acc.receive_data(RQ_BYTES + P_DATA + RELEASE_RQ, T1)
    assert acc.state is State.STA3
    assert [type(e) for e in acc.take_events()] == [AssociationRequested]
    assert acc.take_output() == []
    acc.accept(make_ac())
    assert out_types(acc) == [0x02]
    acc.receive_data(b"", T1)  # go on with the held bytes
    assert [type(e) for e in acc.take_events()] == [DataReceived, ReleaseRequested]
    assert acc.state is State.STA8


def test_pdus_behind_the_rq_are_dropped_after_a_reject() -> None:
    acc = setup(State.STA2)
    acc.receive_data(RQ_BYTES + P_DATA, T1)
    acc.take_events()
    acc.reject(RJ, now=T1)
    assert out_types(acc) == [0x03]
    acc.receive_data(b"", T1)  # Sta13: AA-6
    assert acc.state is State.STA13
    assert acc.take_output() == [] and acc.take_events() == []
