"""asyncio glue: one :class:`Association` (an ``asyncio.Protocol``) per connection.

This is the only layer with futures, tasks and timers.  On every input it
feeds the sans-I/O :class:`~aiodicom.ul.connection.Connection`, drains its
events, writes what it wants sent with one ``transport.writelines`` and arms
one ``loop.call_at`` for its next deadline.  P-DATA is reassembled into
DIMSE messages by :class:`~aiodicom.dimse.fragments.Reassembler`; responses
are routed to the waiting operation, requests to the service handlers.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import socket
import struct
from typing import TYPE_CHECKING, Any, AsyncIterable, Literal, Awaitable, Callable, Iterable, Sequence

from .. import events as _ev
from ..dimse.commands import C_CANCEL_RQ, C_STORE_RQ, Command, cancel_rq, encode_command
from ..dimse.fragments import MAX_DATASET_IN_MEMORY, UNLIMITED_PDU_CAP, Message, Reassembler, fragment_message
from ..ul import pdu as P
from ..ul.connection import (
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
from ..ul.errors import ABORT_SOURCE_PROVIDER, ABORT_SOURCE_USER, ProtocolError
from ..ul.fsm import State
from ..ul.negotiation import AcceptedContext, accepted_contexts
from .errors import AssociationAborted, AssociationRejectedError, DIMSETimeout

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from ..dimse.status import Status
    from ..services.find import FindResults
    from ..services.get import GetOperation
    from ..services.move import MoveOperation
    from .server import Server

__all__ = ["Association"]

log = logging.getLogger("aiodicom.association")

# Outgoing batches are written once this many bytes are queued, so a large
# data set is never copied into one huge transport buffer.
_WRITE_BATCH = 1 << 20
# Requests handled at once on one association before we stop reading.
_MAX_RUNNING = 32


class _Operation:
    """A request we sent; collects its response messages."""

    __slots__ = ("messages", "waiter", "error", "context_id")

    def __init__(self, context_id: int) -> None:
        self.messages: collections.deque[Message] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None
        self.error: BaseException | None = None
        self.context_id = context_id

    def deliver(self, msg: Message) -> None:
        self.messages.append(msg)
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


def _expire(fut: asyncio.Future[None], what: str, timeout: float) -> None:
    if not fut.done():
        fut.set_exception(DIMSETimeout(f"no {what} within {timeout} s"))


def arm_timeout(
    loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None], timeout: float | None, what: str
) -> asyncio.TimerHandle | None:
    """Fail ``fut`` with DIMSETimeout("no ``what`` within ``timeout`` s") after ``timeout`` seconds (None: never).

    Cancel the returned handle once ``fut`` is done.  Cheaper than
    ``asyncio.timeout()`` for the wait on every response of an operation.
    """
    return None if timeout is None else loop.call_later(timeout, _expire, fut, what, timeout)


class Association(asyncio.BufferedProtocol):
    """An association with a peer, on either side.

    SCU operations (:meth:`echo`, :meth:`store`, :meth:`find`, :meth:`get`,
    :meth:`move`, ...) are available once established; an acceptor serves
    the peer's requests with the handlers of its :class:`~aiodicom.Server`.
    """

    def __init__(
        self,
        *,
        requestor: bool,
        server: Server | None = None,
        request: P.AAssociateRQ | None = None,
        max_pdu_length: int = 0,
        artim_timeout: float = 30.0,
        dimse_timeout: float | None = 60.0,
        network_timeout: float | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self.requestor = requestor
        self.server = server
        self.conn = Connection(requestor=requestor, artim_timeout=artim_timeout, max_pdu_length=max_pdu_length)
        self.request = request
        self.accept: P.AAssociateAC | None = None
        self.contexts: dict[int, AcceptedContext] = {}
        self.peer_max_pdu = 0
        self._sendfile_info: tuple[int, int] | Literal[False] | None = None
        self.dimse_timeout = dimse_timeout
        self.network_timeout = network_timeout
        self.transport: asyncio.Transport | None = None
        self.peer_address: tuple[str, int] | None = None
        self._reasm: Reassembler | None = None
        self._ops: dict[int, _Operation] = {}
        self._next_msg_id = 1
        self._write_paused = False
        self._reading_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        self.established: asyncio.Future[None] = self._loop.create_future()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self._released: asyncio.Future[None] | None = None
        self._release_after_confirm = False
        self.abort_info: Aborted | None = None
        # SCP side: running request tasks by message ID (for C-CANCEL)
        self._running: dict[int, asyncio.Task[None]] = {}
        self.cancelled_requests: set[int] = set()
        # C-GET SCU: incoming C-STORE requests go here while a retrieve runs
        self.store_sink: Callable[[Message], None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.bytes_received = 0
        self.bytes_sent = 0
        _ev.check_trace()

    # ------------------------------------------------------------------ props

    @property
    def is_established(self) -> bool:
        """True while DIMSE messages may be exchanged."""
        return self.conn.is_established and not self.closed.done()

    @property
    def calling_ae(self) -> str:
        """The requestor's AE title."""
        return self.request.calling_ae if self.request else ""

    @property
    def called_ae(self) -> str:
        """The AE title the requestor called."""
        return self.request.called_ae if self.request else ""

    @property
    def max_async_ops(self) -> int:
        """Operations we may have outstanding at once (negotiated window)."""
        if self.accept is None or self.accept.user_info.async_ops_window is None:
            return 1
        invoked, performed = self.accept.user_info.async_ops_window
        return performed if self.requestor else invoked

    # -------------------------------------------------------- Protocol events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """asyncio callback: the connection is up; start the upper layer (a requestor sends its A-ASSOCIATE-RQ)."""
        # uvloop's transports are not asyncio.Transport subclasses
        self.transport = transport  # type: ignore[assignment]
        # No setsockopt(TCP_NODELAY) here: asyncio's and uvloop's TCP
        # transports set it on every connection they make or accept
        # (tests/aio/test_nodelay.py checks both), so Nagle never delays a PDU.
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer_address = (str(peer[0]), int(peer[1]))
        now = self._loop.time()
        self._last_activity = now
        if self.requestor:
            assert self.request is not None
            self.conn.request_association(self.request)
            if _ev.enabled:
                _ev.association(self, _ev.ASSOCIATION_REQUESTED)
        self.conn.connection_made(now)
        if self.server is not None:
            self.server._association_opened(self)
        if self.network_timeout:
            self._idle_timer = self._loop.call_at(now + self.network_timeout, self._check_idle)
        self._pump()

    def data_received(self, data: bytes) -> None:
        """asyncio callback: feed received bytes to the upper-layer core."""
        self.bytes_received += len(data)
        now = self._loop.time()
        self._last_activity = now
        self.conn.receive_data(data, now)
        self._pump()

    def get_buffer(self, sizehint: int) -> memoryview:
        """asyncio callback (buffered reads): where the next received bytes go."""
        return self.conn.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        """asyncio callback (buffered reads): ``nbytes`` were read into the last buffer."""
        self.bytes_received += nbytes
        now = self._loop.time()
        self._last_activity = now
        self.conn.buffer_updated(nbytes, now)
        self._pump()

    def eof_received(self) -> bool | None:
        """asyncio callback: the peer closed its side; close the transport too."""
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio callback: the connection is gone; fail waiting operations and cancel running handlers."""
        self.conn.connection_lost(self._loop.time())
        self._pump()
        if self._timer is not None:
            self._timer.cancel()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        self._drain_waiters.clear()
        if self.server is not None:
            self.server._association_closed(self)

    def pause_writing(self) -> None:
        """asyncio flow control: the write buffer is full; :meth:`drain` now waits."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """asyncio flow control: the write buffer drained; wake :meth:`drain` waiters."""
        self._write_paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    # ------------------------------------------------------------- machinery

    def _pump(self) -> None:
        """Handle the core's events, flush its output, arm its timer."""
        conn = self.conn
        while True:
            events = conn.take_events()
            if not events:
                break
            for ev in events:
                self._on_event(ev)
        self._flush()
        if conn.close_transport and self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        # The ARTIM timer (PS3.8 9.1.5) is armed lazily: a timer already due
        # no later than the core's deadline is left alone (the core ignores
        # an early expiry and the next pump arms the real one), and one whose
        # deadline went away is not cancelled.  Per cycle that is one timer
        # instead of two armed and two cancelled (request, then release).
        deadline = conn.next_deadline()
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _flush(self) -> None:
        out = self.conn.take_output()
        if out and self.transport is not None and not self.transport.is_closing():
            self.bytes_sent += len(out[0]) if len(out) == 1 else sum(map(len, out))
            self.transport.writelines(out)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.conn.handle_timer(self._loop.time())
        self._pump()

    def _check_idle(self) -> None:
        # Re-armed lazily: no timer work per PDU, only per timeout period.
        assert self.network_timeout
        due = self._last_activity + self.network_timeout
        now = self._loop.time()
        if now >= due and not (self._running or self._ops):
            log.info("network timeout: aborting idle association with %s", self.calling_ae or "peer")
            self.abort()
            return
        self._idle_timer = self._loop.call_at(max(due, now + 1.0), self._check_idle)

    def _on_event(self, ev: object) -> None:
        if isinstance(ev, DataReceived):
            reasm = self._reasm
            if reasm is None:  # pragma: no cover - the state machine prevents this
                return
            try:
                messages = reasm.feed(ev.pdvs)
            except ProtocolError as exc:
                log.warning("DIMSE protocol error from %s: %s", self.peer_address, exc)
                self.conn.abort(ABORT_SOURCE_PROVIDER, exc.reason)
                if self.transport is not None:
                    self.conn.close_transport = True
                return
            for msg in messages:
                self._dispatch(msg)
        elif isinstance(ev, AssociationRequested):
            self._on_association_request(ev.request)
        elif isinstance(ev, AssociationAccepted):
            assert self.request is not None
            self.accept = ev.accept
            self.contexts = accepted_contexts(self.request, ev.accept)
            self.peer_max_pdu = ev.accept.user_info.max_length or 0
            self._reasm = Reassembler(self.contexts)
            if _ev.enabled:
                _ev.association(self, _ev.ASSOCIATION_ACCEPTED)
            if not self.established.done():
                self.established.set_result(None)
        elif isinstance(ev, AssociationRejected):
            if _ev.enabled:
                _ev.association(self, _ev.ASSOCIATION_REJECTED, result=ev.reject.result, source=ev.reject.source, reason=ev.reject.reason)
            self._fail_established(AssociationRejectedError(ev.reject))
        elif isinstance(ev, ReleaseRequested):
            if self.conn.state not in (State.STA8, State.STA9, State.STA10):
                # A later PDU of the same read already ended the association.
                pass
            elif not ev.collision or self.conn.state == State.STA9:
                if self._ops:
                    self._fail_ops(AssociationAborted("association released by the peer"))
                self.conn.release_response()
            else:
                self._release_after_confirm = True  # Sta10: answer after the RP arrives
        elif isinstance(ev, ReleaseConfirmed):
            if self.conn.state == State.STA12:
                self.conn.release_response()
            if self._released is not None and not self._released.done():
                self._released.set_result(None)
        elif isinstance(ev, Aborted):
            self.abort_info = ev
            if _ev.enabled:
                _ev.association(self, _ev.ASSOCIATION_ABORTED, source=ev.source, reason=ev.reason, by_peer=ev.by_peer)
            aborted = AssociationAborted(ev.message or "association aborted", ev.source, ev.reason, ev.by_peer)
            self._fail_established(aborted)
            self._fail_ops(aborted)
            if ev.by_peer or ev.source == ABORT_SOURCE_PROVIDER:
                log.info("association with %s aborted: %s", self.calling_ae or self.peer_address, ev.message)
            if self.transport is not None:
                # We sent or got an A-ABORT: the association is gone; close
                # once the A-ABORT is flushed instead of waiting for ARTIM.
                self.conn.close_transport = True
        elif isinstance(ev, ConnectionClosed):
            # A message cut off by the close (the peer vanished or aborted
            # mid C-STORE) never completes: drop it and abort its dataset
            # sink now, so a streaming sink's partial file (e.g. the
            # archive's ``.tmp``) is removed instead of being left behind.
            reasm = self._reasm
            if reasm is not None:
                if reasm.in_progress:
                    try:
                        reasm.reset()
                    except Exception:  # noqa: BLE001 - closing must go on
                        log.exception("discarding a partial message failed")
                # The sink factory is a partial holding this association: drop
                # the reference cycle, so that reference counting frees the
                # association now instead of the cyclic GC later.
                reasm.dataset_sink = None
            if self._ops or not self.established.done():
                exc2 = AssociationAborted("connection closed")
                self._fail_established(exc2)
                self._fail_ops(exc2)
            if self._released is not None and not self._released.done():
                self._released.set_result(None)
            for task in list(self._running.values()):
                task.cancel()
            if _ev.enabled and not self.closed.done():
                _ev.association(self, _ev.ASSOCIATION_CLOSED)
            if not self.closed.done():
                self.closed.set_result(None)

    def _fail_established(self, exc: BaseException) -> None:
        if not self.established.done():
            self.established.set_exception(exc)
            # an acceptor has nobody awaiting this future: mark it retrieved
            self.established.exception()

    def _fail_ops(self, exc: BaseException) -> None:
        for op in self._ops.values():
            op.fail(exc)

    def _on_association_request(self, rq: P.AAssociateRQ) -> None:
        self.request = rq
        if _ev.enabled:
            _ev.association(self, _ev.ASSOCIATION_REQUESTED)
        assert self.server is not None
        result = self.server._negotiate(self, rq)
        if isinstance(result, tuple):
            ac, contexts = result
            self.accept = ac
            self.contexts = contexts
            self.peer_max_pdu = rq.user_info.max_length or 0
            self._reasm = Reassembler(
                contexts, max_dataset_in_memory=getattr(self.server, "max_dataset_in_memory", MAX_DATASET_IN_MEMORY)
            )
            sink_factory = getattr(self.server, "dataset_sink_factory", None)
            if sink_factory is not None:
                # e.g. C-STORE straight to disk (aiodicom.services.store)
                self._reasm.dataset_sink = functools.partial(sink_factory, self)
            self.conn.accept(ac)
            if _ev.enabled:
                _ev.association(self, _ev.ASSOCIATION_ACCEPTED)
            self.conn.receive_data(b"", self._loop.time())  # PDUs that came right behind the RQ
            if not self.established.done():
                self.established.set_result(None)
        else:
            if _ev.enabled:
                _ev.association(self, _ev.ASSOCIATION_REJECTED, result=result.result, source=result.source, reason=result.reason)
            self.conn.reject(result)
            self.conn.receive_data(b"", self._loop.time())
            self._fail_established(AssociationRejectedError(result))

    def _dispatch(self, msg: Message) -> None:
        cmd = msg.command
        if _ev.enabled:
            _ev.message(self, "received", msg.context_id, cmd, msg.dataset_length)
        cf = cmd.command_field
        if cf & 0x8000:
            op = self._ops.get(cmd.message_id_being_responded_to or 0)
            if op is None:
                log.warning(
                    "response 0x%04X to unknown message %s ignored", cf, cmd.message_id_being_responded_to
                )
                return
            op.deliver(msg)
            return
        if cf == C_CANCEL_RQ:
            mid = cmd.message_id_being_responded_to or 0
            if mid in self._running:
                self.cancelled_requests.add(mid)
            return
        if cf == C_STORE_RQ and self.store_sink is not None:
            self.store_sink(msg)
            return
        if self.server is not None or self.request_handler is not None:
            self._start_request(msg)
        else:
            self._spawn(self._refuse(msg))

    request_handler: Callable[[Association, Message], Awaitable[None]] | None = None

    def _start_request(self, msg: Message) -> None:
        server = self.server
        if self.request_handler is None and server is not None:
            try:
                if server.answer_inline(self, msg):
                    return
            except (AssociationAborted, ConnectionError):
                return
            except Exception:
                log.exception("request handler failed")
                self.abort()
                return
        handler = self.request_handler or (server.handle_request if server is not None else None)
        assert handler is not None
        mid = msg.command.message_id or 0
        task = self._loop.create_task(self._run_request(handler, msg, mid))
        self._running[mid] = task
        if len(self._running) >= _MAX_RUNNING and not self._reading_paused and self.transport is not None:
            # Read flow control: a peer that keeps sending requests faster
            # than the handlers finish them is not read from until they catch up.
            self._reading_paused = True
            self.transport.pause_reading()

    async def _run_request(
        self, handler: Callable[[Association, Message], Awaitable[None]], msg: Message, mid: int
    ) -> None:
        try:
            await handler(self, msg)
        except asyncio.CancelledError:
            pass
        except (AssociationAborted, ConnectionError):
            pass
        except Exception:
            log.exception("request handler failed")
            self.abort()
        finally:
            self._running.pop(mid, None)
            self.cancelled_requests.discard(mid)
            if self._reading_paused and len(self._running) < _MAX_RUNNING // 2 and self.transport is not None:
                self._reading_paused = False
                if not self.transport.is_closing():
                    self.transport.resume_reading()

    async def _refuse(self, msg: Message) -> None:
        from ..dimse.commands import response_to

        await self.send(msg.context_id, response_to(msg.command, 0x0211))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -------------------------------------------------------- sending messages

    def next_message_id(self) -> int:
        """A MessageID not in use by one of our outstanding operations."""
        mid = self._next_msg_id
        while mid in self._ops:
            mid = mid % 0xFFFF + 1
        self._next_msg_id = mid % 0xFFFF + 1
        return mid

    async def drain(self) -> None:
        """Wait until the transport accepts more data (write flow control)."""
        if self._write_paused and self.transport is not None and not self.transport.is_closing():
            fut = self._loop.create_future()
            self._drain_waiters.append(fut)
            await fut

    def send_nowait(self, context_id: int, command: Command) -> None:
        """Send one DIMSE message without a data set now (e.g. a response).

        The bytes go to the transport at once, without waiting for write
        buffer room (a command set is a few hundred bytes).  Raises
        :class:`~aiodicom.aio.errors.AssociationAborted` when the association
        is not established.
        """
        self._send_with_next(context_id, command)
        self._flush()

    async def send(
        self,
        context_id: int,
        command: Command,
        dataset: Sequence[bytes | bytearray | memoryview] | None = None,
    ) -> None:
        """Send one DIMSE message on ``context_id``; waits for write buffer room."""
        if self.closed.done() or not self.conn.is_established:
            raise AssociationAborted("association is not established")
        if dataset is not None:
            command.has_dataset = True
        buffers = fragment_message(context_id, encode_command(command), dataset, self.peer_max_pdu)
        if _ev.enabled:
            _ev.message(self, "sent", context_id, command, sum(len(b) for b in dataset) if dataset else 0)
        if len(buffers) <= 64:
            self.conn.send_data(buffers)
            self._flush()
        else:
            # Large message: write in batches, honouring flow control.
            batch: list[bytes | bytearray | memoryview] = []
            size = 0
            for buf in buffers:
                batch.append(buf)
                size += len(buf)
                if size >= _WRITE_BATCH:
                    self.conn.send_data(batch)
                    self._flush()
                    batch, size = [], 0
                    await self.drain()
                    if self.closed.done():
                        raise AssociationAborted("association closed while sending")
            if batch:
                self.conn.send_data(batch)
                self._flush()
        if self._write_paused:
            await self.drain()

    def _send_with_next(self, context_id: int, command: Command) -> None:
        """Queue a message without a data set to leave with whatever is sent next, in order.

        Saves a write where more follows at once (a C-GET SCP's pending
        response before its next C-STORE sub-operation).  Every send, and
        every received PDU, writes what is queued.
        """
        if self.closed.done() or not self.conn.is_established:
            raise AssociationAborted("association is not established")
        if _ev.enabled:
            _ev.message(self, "sent", context_id, command, 0)
        self.conn.send_data(fragment_message(context_id, encode_command(command), None, self.peer_max_pdu))

    def open_operation(self, context_id: int, message_id: int) -> _Operation:
        """Register an operation whose responses we expect."""
        op = _Operation(context_id)
        self._ops[message_id] = op
        return op

    def close_operation(self, message_id: int) -> None:
        """Forget an operation (its final response arrived or it failed)."""
        self._ops.pop(message_id, None)

    async def next_response(self, op: _Operation, timeout: float | None = -1.0) -> Message:
        """The next response message of ``op`` (DIMSE timeout applies)."""
        if op.messages:
            return op.messages.popleft()
        if op.error is not None:
            raise op.error
        if timeout == -1.0:
            timeout = self.dimse_timeout
        fut = self._loop.create_future()
        op.waiter = fut
        # A plain timer instead of asyncio.timeout(): this runs once per
        # awaited response, and the timer is all the timeout needs.
        timer = arm_timeout(self._loop, fut, timeout, "response")
        try:
            await fut
        finally:
            op.waiter = None
            if timer is not None:
                timer.cancel()
        if op.messages:
            return op.messages.popleft()
        assert op.error is not None
        raise op.error

    async def send_request(
        self,
        context_id: int,
        command: Command,
        dataset: Sequence[bytes | bytearray | memoryview] | None = None,
    ) -> Message:
        """Send a request and return its single (final) response."""
        mid = command.message_id
        if mid is None:
            mid = command.message_id = self.next_message_id()
        op = self.open_operation(context_id, mid)
        try:
            await self.send(context_id, command, dataset)
            return await self.next_response(op)
        finally:
            self.close_operation(mid)

    async def send_cancel(self, context_id: int, message_id: int) -> None:
        """Send a C-CANCEL-RQ for our operation ``message_id``."""
        await self.send(context_id, cancel_rq(message_id))

    def send_cancel_nowait(self, context_id: int, message_id: int) -> None:
        """Send a C-CANCEL-RQ now, synchronously (it is tiny; no flow control).

        Lets clean-up code that cannot await (``__del__``) put the cancel on
        the wire before any later request.
        """
        if self.closed.done() or not self.conn.is_established:
            raise AssociationAborted("association is not established")
        cmd = encode_command(cancel_rq(message_id))
        self.conn.send_data(fragment_message(context_id, cmd, None, self.peer_max_pdu))
        self._flush()

    async def send_streaming(
        self,
        context_id: int,
        command: Command,
        chunks: Iterable[bytes | bytearray | memoryview] | AsyncIterable[bytes | bytearray | memoryview],
        total_length: int,
    ) -> None:
        """Send one message whose data set comes as ``chunks`` totalling ``total_length`` bytes.

        For data sets too large to hold in memory (e.g. a C-STORE of a big
        file read in chunks): every ~1 MiB written waits for the transport
        (:meth:`drain`).  If the chunks do not add up to ``total_length`` or
        the iterator fails, the message cannot be completed: the association
        is aborted and the error raised.
        """
        if self.closed.done() or not self.conn.is_established:
            raise AssociationAborted("association is not established")
        command.has_dataset = True
        if _ev.enabled:
            _ev.message(self, "sent", context_id, command, total_length)
        self.conn.send_data(fragment_message(context_id, encode_command(command), None, self.peer_max_pdu))
        self._flush()
        sent = 0
        carry = b""  # an odd byte held back: only the last fragment may be odd
        try:
            if isinstance(chunks, AsyncIterable):
                async for chunk in chunks:
                    sent, carry = await self._stream_chunk(context_id, chunk, carry, sent, total_length)
            else:
                for chunk in chunks:
                    sent, carry = await self._stream_chunk(context_id, chunk, carry, sent, total_length)
            if sent + len(carry) != total_length:
                raise ValueError(f"data set chunks gave {sent + len(carry)} bytes, expected {total_length}")
            if sent == 0 and not carry:  # empty data set: one empty last PDV
                self.conn.send_data(_data_pdus(context_id, memoryview(b""), True, self.peer_max_pdu))
                self._flush()
        except BaseException:
            self.abort()  # a partly sent message cannot be taken back
            raise
        if self._write_paused:
            await self.drain()

    async def send_file(self, context_id: int, command: Command, fd: int, offset: int, length: int) -> None:
        """Send one message whose data set is ``length`` bytes of the open file ``fd`` from ``offset``.

        On a plain TCP transport the data set goes from the page cache to
        the socket with :func:`os.sendfile`, not copied through user space:
        for each P-DATA-TF PDU the 12 header bytes are written and then its
        fragment is sent straight from the file.  When the socket is full,
        the rest of that PDU goes through the transport, and sending goes on
        once the transport has written everything (flow control).  Over TLS
        the file is read and written through the transport in pieces.  The
        file's pages should be in the page cache
        (:func:`~aiodicom.part10.open_part10_cached` checks that): a read
        that has to wait for the disk would wait on the event loop.  If the
        file is shorter than ``length`` the message cannot be completed: the
        association is aborted and the error raised.  ``fd`` is not closed.
        """
        if self.closed.done() or not self.conn.is_established:
            raise AssociationAborted("association is not established")
        command.has_dataset = True
        if _ev.enabled:
            _ev.message(self, "sent", context_id, command, length)
        # The command's PDU(s) stay queued: they go out with the first data
        # PDU's header in one send (MSG_MORE), so the peer gets the command
        # and the data in one segment and wakes once; else the transport
        # writes them first.
        self.conn.send_data(fragment_message(context_id, encode_command(command), None, self.peer_max_pdu))
        limit = self.peer_max_pdu or UNLIMITED_PDU_CAP
        max_frag = (min(limit, 0xFFFFFFFF) - 6) & ~1  # even fragments but the last (PS3.8 E.2)
        pos = 0
        sock: socket.socket | None = None  # made once, on the first data PDU
        try:
            while True:
                take = min(max_frag, length - pos)
                final = pos + take == length
                hdr = _PDATA_HDR.pack(0x04, 0, take + 6, take + 2, context_id, 0x02 if final else 0x00)
                transport = self.transport
                if transport is None or transport.is_closing() or self.closed.done():
                    raise AssociationAborted("association closed while sending")
                if take and sock is None:
                    sock = self._sendfile_socket()
                if take and sock is not None and not transport.get_write_buffer_size():
                    lead = self.conn.take_output()
                    if lead:
                        hdr = b"".join([*lead, hdr])
                    head, done = _sendfile_pdu(sock, hdr, fd, offset + pos, take)
                    self.bytes_sent += len(hdr) - len(head) + done
                    if head or done < take:
                        # the socket is full: the rest of this PDU through the
                        # transport, then on when it has all been written
                        rest = _pread_exact(fd, take - done, offset + pos + done)
                        self.bytes_sent += len(head) + len(rest)
                        transport.writelines([head, rest] if head else [rest])
                        await self._drain_empty()
                else:
                    self.conn.send_data([hdr, _pread_exact(fd, take, offset + pos)])
                    self._flush()
                    await self.drain()
                pos += take
                if final:
                    break
        except BaseException:
            self.conn.take_output()  # a command still queued goes nowhere without its data set
            self.abort()  # a partly sent message cannot be taken back
            raise
        finally:
            if sock is not None:
                sock.detach()  # the transport owns the descriptor
        if self._write_paused:
            await self.drain()

    def _sendfile_socket(self) -> socket.socket | None:
        """A socket object on the transport's descriptor, for direct writes; None over TLS.

        Not owned: callers must ``detach()`` it, never close it.
        """
        info = self._sendfile_info
        if info is None:
            info = False
            t = self.transport
            if t is not None and t.get_extra_info("ssl_object") is None and hasattr(os, "sendfile"):
                raw = t.get_extra_info("socket")
                if raw is not None and raw.family in (socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_UNIX", -1)):
                    info = (raw.fileno(), raw.family)
            self._sendfile_info = info
        if info is False:
            return None
        return socket.socket(info[1], socket.SOCK_STREAM, 0, fileno=info[0])

    async def _drain_empty(self) -> None:
        """Wait until the transport has written everything it holds."""
        t = self.transport
        if t is None or t.is_closing() or not t.get_write_buffer_size():
            return
        low, high = t.get_write_buffer_limits()
        t.set_write_buffer_limits(high=0, low=0)  # pause_writing now, resume_writing when empty
        try:
            await self.drain()
        finally:
            if not t.is_closing():
                t.set_write_buffer_limits(high=high, low=low)
        if self.closed.done():
            raise AssociationAborted("association closed while sending")

    async def _stream_chunk(
        self, context_id: int, chunk: bytes | bytearray | memoryview, carry: bytes, sent: int, total: int
    ) -> tuple[int, bytes]:
        if self.closed.done():
            raise AssociationAborted("association closed while sending")
        view = memoryview(chunk).cast("B")
        if not view.nbytes:
            return sent, carry
        if carry:
            view = memoryview(carry + view.tobytes())
            carry = b""
        n = view.nbytes
        if sent + n > total:
            raise ValueError(f"data set chunks exceed the announced {total} bytes")
        last = sent + n == total
        if not last and n & 1:
            carry = bytes(view[n - 1 :])
            view = view[: n - 1]
            n -= 1
        self.conn.send_data(_data_pdus(context_id, view, last, self.peer_max_pdu))
        self._flush()
        await self.drain()
        return sent + n, carry

    def find_context(
        self, abstract_syntax: str, transfer_syntax: str | None = None, *, as_scu: bool = True
    ) -> AcceptedContext | None:
        """An accepted context for ``abstract_syntax`` usable in our role."""
        best: AcceptedContext | None = None
        for ctx in self.contexts.values():
            if ctx.abstract_syntax != abstract_syntax:
                continue
            ok = ctx.can_send_requests(self.requestor) if as_scu else ctx.can_receive_requests(self.requestor)
            if not ok:
                continue
            if transfer_syntax is None or ctx.transfer_syntax == transfer_syntax:
                return ctx
            if best is None:
                best = ctx
        return best if transfer_syntax is None else None

    # -------------------------------------------------------- release / abort

    async def release(self) -> None:
        """Release the association gracefully (A-RELEASE) and wait for the close."""
        if self.closed.done():
            return
        if self.conn.state == State.STA6:
            self._released = self._loop.create_future()
            self.conn.request_release()
            self._pump()
            try:
                async with asyncio.timeout(self.dimse_timeout or 30.0):
                    await self._released
                    await asyncio.shield(self.closed)
            except TimeoutError:
                self.abort()
        else:
            self.abort()
        await asyncio.shield(self.closed) if not self.closed.done() else None

    def abort(self) -> None:
        """Abort the association now (A-ABORT, service-user source)."""
        if self.closed.done():
            return
        if self.conn.state in (State.STA1, State.STA13, State.STA4):
            if self.transport is not None:
                self.transport.close()
            return
        self.conn.abort(ABORT_SOURCE_USER, 0)
        self.conn.close_transport = True
        self._pump()

    async def wait_closed(self) -> None:
        """Wait until the transport is closed."""
        await asyncio.shield(self.closed)

    # -------------------------------------------------------- service helpers
    # (the services live in aiodicom.services; these are thin entry points)

    async def echo(self) -> int:
        """C-ECHO: verify the peer; returns the status code."""
        from ..services.echo import echo

        return await echo(self)

    def get(
        self,
        identifier: Any,
        model: str = "patient",
        *,
        write_to: str | os.PathLike[str] | None = None,
        on_instance: Callable[[Any], Any] | None = None,
        priority: int = 0,
        fsync: bool = True,
        timeout: float | None = -1.0,
    ) -> GetOperation:
        """C-GET: ``async with assoc.get(ds, "study", write_to=dir) as items: async for item in items``.

        Yields received instances (C-STORE sub-operations on this association),
        progress and the final result; see :func:`aiodicom.services.get.get`.
        """
        from ..services.get import get

        return get(
            self, identifier, model, write_to=write_to, on_instance=on_instance,
            priority=priority, fsync=fsync, timeout=timeout,
        )

    async def store(
        self,
        dataset_or_path: Dataset | str | os.PathLike[str],
        *,
        priority: int = 0,
        move_originator: tuple[str, int] | None = None,
    ) -> Status:
        """C-STORE a pydicom Dataset or a Part 10 file; returns the status.

        See :func:`aiodicom.services.store.store`.
        """
        from ..services.store import store

        return await store(self, dataset_or_path, priority=priority, move_originator=move_originator)

    def find(self, query: Dataset, model: str = "patient", *, priority: int = 0) -> FindResults:
        """C-FIND: ``async for status, identifier in assoc.find(query, "study")``.

        ``model`` is ``"patient"``, ``"study"`` or a FIND SOP Class UID.
        Use ``async with assoc.find(...) as results`` to have an early exit
        wait for the C-CANCEL to complete.  See
        :class:`aiodicom.services.find.FindResults`.
        """
        from ..services.find import find

        return find(self, query, model, priority=priority)

    def move(
        self,
        identifier: Any,
        destination_ae: str,
        model: str = "patient",
        *,
        priority: int = 0,
        timeout: float | None = -1.0,
    ) -> MoveOperation:
        """C-MOVE: ``async with assoc.move(ds, "DEST", "study") as op: async for item in op``.

        Yields :class:`~aiodicom.services.move.MoveProgress` per pending
        response, then the :class:`~aiodicom.services.move.MoveResult`;
        ``await assoc.move(...).wait()`` returns just the result.  Leaving
        early sends C-CANCEL and drains.  See :mod:`aiodicom.services.move`.
        """
        from ..services.move import move

        return move(self, identifier, destination_ae, model, priority=priority, timeout=timeout)

    async def relevant_patient_info(
        self,
        patient_id: str,
        template: str = "9007",
        *,
        issuer: str | None = None,
        return_keys: Iterable[str | int] = ("PatientName", "PatientBirthDate", "PatientSex"),
        sop_class: str | None = None,
        priority: int = 0,
    ) -> Dataset | None:
        """Relevant Patient Information Query (PS3.4 Annex Q) for one patient.

        Returns the matching identifier (demographics plus the content tree of
        ``template``: "9007" general, "9000" breast, "3802" cardiac) or None;
        raises :class:`~aiodicom.services.rpq.RelevantPatientInfoError` for
        C100 (more than one patient), C200 (template not supported) and other
        failures.  See :func:`aiodicom.services.rpq.relevant_patient_info`.
        """
        from ..services.rpq import relevant_patient_info

        return await relevant_patient_info(
            self,
            patient_id,
            template,
            issuer=issuer,
            return_keys=return_keys,
            sop_class=sop_class,
            priority=priority,
        )

    def __repr__(self) -> str:
        side = "requestor" if self.requestor else "acceptor"
        return f"<Association {side} {self.calling_ae!r}->{self.called_ae!r} {self.conn.state.name}>"


_PDATA_HDR = struct.Struct(">BBIIBB")  # P-DATA-TF header + one PDV item header


def _pread_exact(fd: int, n: int, offset: int) -> bytes:
    data = os.pread(fd, n, offset)
    if len(data) != n:
        raise ValueError(f"the file ended {n - len(data)} bytes early (at offset {offset + len(data)})")
    return data


def _sendfile_pdu(sock: socket.socket, hdr: bytes, fd: int, offset: int, n: int) -> tuple[bytes, int]:
    """Write ``hdr`` then ``n`` bytes of ``fd`` to the non-blocking ``sock``, as far as it takes them.

    Returns the part of the header not written and how many file bytes
    were sent.  ``sock`` is not detached here: the caller detaches it.
    """
    try:
        # MSG_MORE: the header waits for the data that follows (one segment)
        sent = sock.send(hdr, _MSG_MORE)
    except BlockingIOError:
        return hdr, 0
    if sent < len(hdr):
        return hdr[sent:], 0
    fileno = sock.fileno()
    done = 0
    while done < n:
        try:
            k = os.sendfile(fileno, fd, offset + done, n - done)
        except BlockingIOError:
            break
        if k == 0:
            raise ValueError(f"the file ended {n - done} bytes early (at offset {offset + done})")
        done += k
    return b"", done


_MSG_MORE = getattr(socket, "MSG_MORE", 0)


def _data_pdus(
    context_id: int, view: memoryview, last: bool, max_pdu_length: int
) -> list[bytes | bytearray | memoryview]:
    """P-DATA-TF PDUs (one data set PDV each) carrying ``view``.

    Fragments are even-length except possibly the very last one of the data
    set; the last PDV has the "last fragment" bit when ``last`` is set.
    """
    limit = max_pdu_length or UNLIMITED_PDU_CAP
    max_frag = (min(limit, 0xFFFFFFFF) - 6) & ~1
    out: list[bytes | bytearray | memoryview] = []
    n = view.nbytes
    off = 0
    while True:
        take = min(max_frag, n - off)
        final = last and off + take == n
        out.append(_PDATA_HDR.pack(0x04, 0, take + 6, take + 2, context_id, 0x02 if final else 0x00))
        out.append(view[off : off + take])
        off += take
        if off >= n:
            return out
