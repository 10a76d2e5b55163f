"""Sans-I/O upper-layer connection: bytes in, events out; calls in, bytes out.

:class:`Connection` owns the receive buffer, the PS3.8 state machine and the
ARTIM timer for one transport connection.  It never touches a socket or a
clock: the caller feeds it received bytes (:meth:`Connection.receive_data`),
tells it about the transport (:meth:`connection_made`,
:meth:`connection_lost`) and the time (``now`` arguments,
:meth:`handle_timer`), then collects

* :meth:`take_events` — what happened, for the service user;
* :meth:`take_output` — buffers to write, in order (one ``writelines``);
* :attr:`close_transport` — whether the transport must now be closed;
* :meth:`next_deadline` — when to call :meth:`handle_timer` next.

Every input is turned into a PS3.8 event and looked up in
:data:`aiodicom.ul.fsm.TRANSITIONS`; the named action is then performed by
the ``_ae_1`` .. ``_aa_8`` methods below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

from . import pdu as P
from .errors import (
    ABORT_SOURCE_PROVIDER,
    ABORT_SOURCE_USER,
    REASON_NOT_SPECIFIED,
    REASON_UNEXPECTED_PDU,
    ProtocolError,
)
from .fsm import NEXT_STATE, TRANSITIONS, Action, Event, InvalidTransition, State

__all__ = [
    "Connection",
    "AssociationRequested",
    "AssociationAccepted",
    "AssociationRejected",
    "DataReceived",
    "ReleaseRequested",
    "ReleaseConfirmed",
    "Aborted",
    "ConnectionClosed",
    "ULEvent",
]


# ---------------------------------------------------------------------------
# events handed to the service user


@dataclass(slots=True)
class AssociationRequested:
    """A-ASSOCIATE indication: the peer asks for an association (acceptor)."""

    request: P.AAssociateRQ


@dataclass(slots=True)
class AssociationAccepted:
    """A-ASSOCIATE confirmation (accept) (requestor)."""

    accept: P.AAssociateAC


@dataclass(slots=True)
class AssociationRejected:
    """A-ASSOCIATE confirmation (reject) (requestor)."""

    reject: P.AAssociateRJ


@dataclass(slots=True)
class DataReceived:
    """P-DATA indication: the PDVs of one P-DATA-TF PDU."""

    pdvs: list[P.PDV]


@dataclass(slots=True)
class ReleaseRequested:
    """A-RELEASE indication; ``collision`` when both sides asked at once."""

    collision: bool = False


@dataclass(slots=True)
class ReleaseConfirmed:
    """A-RELEASE confirmation: the peer answered our A-RELEASE-RQ."""


@dataclass(slots=True)
class Aborted:
    """A-ABORT or A-P-ABORT indication.

    ``by_peer`` is True when the peer sent the A-ABORT PDU, False when this
    side aborted (a protocol error, or the transport went away).
    """

    source: int
    reason: int
    by_peer: bool
    message: str = ""


@dataclass(slots=True)
class ConnectionClosed:
    """The transport is closed; nothing more will happen on this connection."""


ULEvent = Union[
    AssociationRequested,
    AssociationAccepted,
    AssociationRejected,
    DataReceived,
    ReleaseRequested,
    ReleaseConfirmed,
    Aborted,
    ConnectionClosed,
]

_PDU_EVENT = {
    P.A_ASSOCIATE_AC: Event.EVT3,
    P.A_ASSOCIATE_RJ: Event.EVT4,
    P.A_ASSOCIATE_RQ: Event.EVT6,
    P.P_DATA_TF: Event.EVT10,
    P.A_RELEASE_RQ: Event.EVT12,
    P.A_RELEASE_RP: Event.EVT13,
    P.A_ABORT: Event.EVT16,
}

OutBuffer = Union[bytes, bytearray, memoryview]


class Connection:
    """One upper-layer connection, as requestor or acceptor.

    :param requestor: True on the side that opens the connection.
    :param artim_timeout: seconds for the ARTIM timer (PS3.8 9.1.5).
    :param max_pdu_length: the maximum P-DATA-TF length this side announces
        and enforces on receive (0 = unlimited).
    """

    def __init__(self, *, requestor: bool, artim_timeout: float = 30.0, max_pdu_length: int = 0) -> None:
        self.requestor = requestor
        self.state = State.STA1
        self.artim_timeout = artim_timeout
        self._reader = P.PDUReader(max_pdu_length)
        self._out: list[OutBuffer] = []
        self._events: list[ULEvent] = []
        self._artim_deadline: float | None = None
        self._now = 0.0
        self._pending_rq: P.AAssociateRQ | None = None
        self._pdu: P.PDU | None = None  # PDU that caused the current event
        self._error: ProtocolError | None = None  # error behind Evt19
        self._abort_request: tuple[int, int] = (ABORT_SOURCE_USER, 0)
        self._data: list[OutBuffer] = []
        self._event = Event.EVT1
        self.close_transport = False
        self.closed = False

    # -- outputs ------------------------------------------------------------

    def take_events(self) -> list[ULEvent]:
        """Return and clear the events produced so far."""
        ev, self._events = self._events, []
        return ev

    def take_output(self) -> list[OutBuffer]:
        """Return and clear the buffers to write, in order."""
        out, self._out = self._out, []
        return out

    @property
    def has_output(self) -> bool:
        """Whether :meth:`take_output` would return anything."""
        return bool(self._out)

    def next_deadline(self) -> float | None:
        """When the ARTIM timer expires (same clock as ``now``), or None."""
        return self._artim_deadline

    @property
    def max_pdu_length(self) -> int:
        """Maximum P-DATA-TF length accepted on receive (0 = unlimited)."""
        return self._reader.max_pdata_length

    @property
    def is_established(self) -> bool:
        """True while P-DATA may be sent (Sta6 and Sta8)."""
        return self.state in (State.STA6, State.STA8)

    # -- inputs from the transport -----------------------------------------------

    def connection_made(self, now: float) -> None:
        """The transport is connected (Evt2 for a requestor, Evt5 for an acceptor)."""
        self._now = now
        self._handle(Event.EVT2 if self.requestor else Event.EVT5)

    def connection_lost(self, now: float) -> None:
        """The transport closed (Evt17)."""
        self._now = now
        if self.closed:
            return
        if self.state != State.STA1:
            self._handle(Event.EVT17)
        self._set_closed()

    def handle_timer(self, now: float) -> None:
        """Process timer expiry; call at or after :meth:`next_deadline`."""
        self._now = now
        deadline = self._artim_deadline
        if deadline is not None and now >= deadline:
            self._artim_deadline = None
            if (self.state, Event.EVT18) in TRANSITIONS:
                self._handle(Event.EVT18)

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes received from the transport."""
        self._now = now
        if self.close_transport or self.closed:
            return
        self._reader.feed(data)
        self._process()

    def get_buffer(self) -> memoryview:
        """A writable buffer the transport should read the next bytes into.

        The buffered alternative to :meth:`receive_data` (for
        :class:`asyncio.BufferedProtocol`): large P-DATA-TF bodies are read
        straight into place.  Follow it with :meth:`buffer_updated`.
        """
        return self._reader.get_buffer()

    def buffer_updated(self, nbytes: int, now: float) -> None:
        """``nbytes`` were read into the buffer from :meth:`get_buffer`."""
        self._now = now
        self._reader.buffer_updated(nbytes)
        if self.close_transport or self.closed:
            return
        self._process()

    def _process(self) -> None:
        reader = self._reader
        while not self.close_transport:
            try:
                item = reader.next_pdu()
                if item is None:
                    return
                pdu_type, body = item
                if pdu_type == P.P_DATA_TF and self.state == State.STA6:
                    # hot path: DT-2, no PDU object
                    self._events.append(DataReceived(P.decode_pdvs(body)))
                    continue
                pdu = P.decode_pdu(pdu_type, body)
            except ProtocolError as exc:
                self._error = exc
                self._handle(Event.EVT19)
                self._error = None
                # the rest of the stream cannot be framed any more
                self.close_transport = True
                return
            self._pdu = pdu
            self._handle(_PDU_EVENT[pdu_type])
            self._pdu = None
            if self.state in (State.STA1, State.STA13) and self.close_transport:
                return
            if self.state is State.STA3:
                # The local user must answer the A-ASSOCIATE indication before
                # anything after it is processed; call receive_data(b"", now)
                # after accept()/reject() to go on with buffered bytes.
                return

    # -- local requests (primitives) -------------------------------------------------

    def request_association(self, rq: P.AAssociateRQ) -> None:
        """A-ASSOCIATE request (Evt1); the caller then opens the transport."""
        self._pending_rq = rq
        self._handle(Event.EVT1)

    def accept(self, ac: P.AAssociateAC) -> None:
        """A-ASSOCIATE response, accept (Evt7)."""
        self._pdu = ac
        self._handle(Event.EVT7)
        self._pdu = None

    def reject(self, rj: P.AAssociateRJ, *, now: float | None = None) -> None:
        """A-ASSOCIATE response, reject (Evt8).

        ``now`` is the current time, from which the ARTIM timer started by
        AE-8 runs; without it the time of the last input is used.
        """
        if now is not None:
            self._now = now
        self._pdu = rj
        self._handle(Event.EVT8)
        self._pdu = None

    def send_data(self, buffers: list[OutBuffer]) -> None:
        """P-DATA request (Evt9): ``buffers`` are whole encoded P-DATA-TF PDUs."""
        self._data = buffers
        try:
            self._handle(Event.EVT9)  # DT-1 in Sta6, AR-7 in Sta8
        finally:
            self._data = []

    def request_release(self) -> None:
        """A-RELEASE request (Evt11)."""
        self._handle(Event.EVT11)

    def release_response(self, *, now: float | None = None) -> None:
        """A-RELEASE response (Evt14).

        ``now`` is the current time, from which the ARTIM timer started by
        AR-4 runs; without it the time of the last input is used.
        """
        if now is not None:
            self._now = now
        self._handle(Event.EVT14)

    def abort(
        self, source: int = ABORT_SOURCE_USER, reason: int = REASON_NOT_SPECIFIED, *, now: float | None = None
    ) -> None:
        """A-ABORT request (Evt15); a no-op where no association exists.

        ``now`` is the current time, from which the ARTIM timer started by
        AA-1 runs; without it the time of the last input is used.
        """
        if (self.state, Event.EVT15) not in TRANSITIONS:
            return
        if now is not None:
            self._now = now
        self._abort_request = (source, reason)
        self._handle(Event.EVT15)

    # -- machinery ---------------------------------------------------------------

    def _handle(self, event: Event) -> None:
        try:
            func, fixed_next = _DISPATCH[(self.state, event)]
        except KeyError:
            raise InvalidTransition(self.state, event) from None
        self._event = event
        next_state = func(self)
        if next_state is None:
            next_state = fixed_next
            assert next_state is not None
        self.state = next_state

    def _set_closed(self) -> None:
        if not self.closed:
            self.closed = True
            self._artim_deadline = None
            self._events.append(ConnectionClosed())

    def _start_artim(self) -> None:
        self._artim_deadline = self._now + self.artim_timeout

    def _stop_artim(self) -> None:
        self._artim_deadline = None

    def _send_abort(self, source: int, reason: int) -> None:
        self._out.append(P.AAbort(source, reason).encode())

    def _abort_reason_for_received(self) -> tuple[int, int, str]:
        """Source, reason and text for an abort caused by what was received."""
        if self._error is not None:
            return ABORT_SOURCE_PROVIDER, self._error.reason, str(self._error)
        name = type(self._pdu).__name__ if self._pdu is not None else "PDU"
        return ABORT_SOURCE_PROVIDER, REASON_UNEXPECTED_PDU, f"unexpected {name} in {self.state.name}"

    # -- actions (PS3.8 9.2.2); each returns the next state or None for NEXT_STATE

    def _ae_1(self) -> State | None:
        # Issue TRANSPORT CONNECT: done by the caller after request_association().
        return None

    def _ae_2(self) -> State | None:
        assert self._pending_rq is not None
        self._out.append(self._pending_rq.encode())
        return None

    def _ae_3(self) -> State | None:
        assert isinstance(self._pdu, P.AAssociateAC)
        self._events.append(AssociationAccepted(self._pdu))
        return None

    def _ae_4(self) -> State | None:
        assert isinstance(self._pdu, P.AAssociateRJ)
        self._events.append(AssociationRejected(self._pdu))
        self.close_transport = True
        return None

    def _ae_5(self) -> State | None:
        self._start_artim()
        return None

    def _ae_6(self) -> State | None:
        self._stop_artim()
        rq = self._pdu
        assert isinstance(rq, P.AAssociateRQ)
        # Provider-level check (PS3.8 9.3.2): only bit 0 of the protocol
        # version is defined; a peer without it is answered RJ (1, 2, 2).
        if not rq.protocol_version & 1:
            self._out.append(
                P.AAssociateRJ(
                    P.RJ_RESULT_PERMANENT, P.RJ_SOURCE_ACSE, P.RJ_REASON_PROTOCOL_VERSION_NOT_SUPPORTED
                ).encode()
            )
            self._start_artim()
            return State.STA13
        self._events.append(AssociationRequested(rq))
        return State.STA3

    def _ae_7(self) -> State | None:
        assert isinstance(self._pdu, P.AAssociateAC)
        self._out.append(self._pdu.encode())
        return None

    def _ae_8(self) -> State | None:
        assert isinstance(self._pdu, P.AAssociateRJ)
        self._out.append(self._pdu.encode())
        self._start_artim()
        return None

    def _dt_1(self) -> State | None:
        self._out.extend(self._data)
        return None

    def _dt_2(self) -> State | None:
        assert isinstance(self._pdu, P.PDataTF)
        self._events.append(DataReceived(self._pdu.pdvs))
        return None

    def _ar_1(self) -> State | None:
        self._out.append(P.AReleaseRQ().encode())
        return None

    def _ar_2(self) -> State | None:
        self._events.append(ReleaseRequested())
        return None

    def _ar_3(self) -> State | None:
        self._events.append(ReleaseConfirmed())
        self.close_transport = True
        return None

    def _ar_4(self) -> State | None:
        self._out.append(P.AReleaseRP().encode())
        self._start_artim()
        return None

    def _ar_5(self) -> State | None:
        self._stop_artim()
        return None

    def _ar_6(self) -> State | None:
        assert isinstance(self._pdu, P.PDataTF)
        self._events.append(DataReceived(self._pdu.pdvs))
        return None

    def _ar_7(self) -> State | None:
        self._out.extend(self._data)
        return None

    def _ar_8(self) -> State | None:
        self._events.append(ReleaseRequested(collision=True))
        return State.STA9 if self.requestor else State.STA10

    def _ar_9(self) -> State | None:
        self._out.append(P.AReleaseRP().encode())
        return None

    def _ar_10(self) -> State | None:
        self._events.append(ReleaseConfirmed())
        return None

    def _aa_1(self) -> State | None:
        if self._event is Event.EVT15:
            source, reason = self._abort_request
            self._send_abort(source, reason)
            self._events.append(Aborted(source, reason, by_peer=False, message="aborted by local request"))
        else:
            # Sta2: a PDU other than A-ASSOCIATE-RQ arrived first.
            source, reason, text = self._abort_reason_for_received()
            self._send_abort(source, reason)
            self._events.append(Aborted(source, reason, by_peer=False, message=text))
        self._start_artim()
        return None

    def _aa_2(self) -> State | None:
        self._stop_artim()
        self.close_transport = True
        if self._event is Event.EVT16:
            pdu = self._pdu
            assert isinstance(pdu, P.AAbort)
            self._events.append(Aborted(pdu.source, pdu.reason, by_peer=True, message=pdu.describe()))
        elif self._event is Event.EVT15:
            self._events.append(Aborted(*self._abort_request, by_peer=False, message="aborted by local request"))
        return None

    def _aa_3(self) -> State | None:
        pdu = self._pdu
        assert isinstance(pdu, P.AAbort)
        self._events.append(Aborted(pdu.source, pdu.reason, by_peer=True, message=pdu.describe()))
        self.close_transport = True
        return None

    def _aa_4(self) -> State | None:
        self._events.append(
            Aborted(ABORT_SOURCE_PROVIDER, REASON_NOT_SPECIFIED, by_peer=False, message="connection closed by peer")
        )
        return None

    def _aa_5(self) -> State | None:
        self._stop_artim()
        return None

    def _aa_6(self) -> State | None:
        return None

    def _aa_7(self) -> State | None:
        source, reason, _text = self._abort_reason_for_received()
        self._send_abort(source, reason)
        return None

    def _aa_8(self) -> State | None:
        source, reason, text = self._abort_reason_for_received()
        self._send_abort(source, reason)
        self._events.append(Aborted(source, reason, by_peer=False, message=text))
        self._start_artim()
        return None


#: Action -> the Connection method that performs it (built once).
_ACTION_FUNCS: dict[Action, Callable[[Connection], State | None]] = {
    a: getattr(Connection, "_" + a.name.lower()) for a in Action
}

#: (state, event) -> (action method, next state), derived from TRANSITIONS
#: once so that a transition costs one dict lookup.
_DISPATCH: dict[tuple[State, Event], tuple[Callable[[Connection], State | None], State | None]] = {
    key: (_ACTION_FUNCS[action], NEXT_STATE[action]) for key, action in TRANSITIONS.items()
}
