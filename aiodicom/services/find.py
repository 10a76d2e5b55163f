"""Query/Retrieve C-FIND (PS3.4 Annex C): SCU as an async iterator, SCP driver.

SCU::

    async with assoc.find(query, model="study") as results:
        async for status, identifier in results:
            ...

yields ``(Status, Dataset)`` for every pending response and finally
``(Status, None)`` for the final one.  Leaving early -- ``break``, an
exception, :meth:`FindResults.aclose` -- sends a C-CANCEL-RQ on the
operation's context and consumes responses up to the final one, so the
association stays usable.  The ``async with`` form awaits that clean-up; a
plain ``async for`` that is left with ``break`` sends the C-CANCEL at once
(before any later request) and drains in the background, and the next
:meth:`~aiodicom.aio.association.Association.find` or ``store`` on the
association waits for that drain.

SCP: :func:`serve_find` registers an async generator handler
``async def handler(req: FindRequest)`` yielding Datasets (sent as pending
FF00) or ``(status, Dataset)`` pairs (e.g. FF01).  A C-CANCEL closes the
generator and is answered FE00; a handler that raises is answered 0xC001
with an error comment, and the association keeps working.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Union

from pydicom.dataset import Dataset

from ..aio.errors import AssociationAborted, DIMSETimeout, NoAcceptedContext
from ..dataset import (
    DatasetDecodeError,
    EncodedDataset,
    decode_identifier,
    encode_identifier,
)
from ..dimse.commands import C_FIND_RQ, PRIORITY_MEDIUM, Command, response_to
from ..dimse.fragments import Message
from ..dimse.status import Status
from ..uids import (
    BreastImagingRelevantPatientInformationQuery,
    CardiacRelevantPatientInformationQuery,
    GeneralRelevantPatientInformationQuery,
    ModalityWorklistInformationModelFind,
    PatientRootQueryRetrieveInformationModelFind,
    PatientStudyOnlyQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)
from ._request import RequestInfo
from .store import HANDLER_FAILED, ServiceError

if TYPE_CHECKING:
    from ..aio.association import Association, _Operation
    from ..aio.server import Server

__all__ = [
    "FIND_MODELS",
    "FindHandler",
    "FindRequest",
    "FindResults",
    "find",
    "resolve_model",
    "serve_find",
    "settle",
]

log = logging.getLogger("aiodicom.find")

#: Short names accepted for ``model``.
FIND_MODELS: dict[str, str] = {
    "patient": PatientRootQueryRetrieveInformationModelFind,
    "study": StudyRootQueryRetrieveInformationModelFind,
    "patient_study": PatientStudyOnlyQueryRetrieveInformationModelFind,
    "worklist": ModalityWorklistInformationModelFind,
    # Relevant Patient Information Query (PS3.4 Annex Q); see services/rpq.py
    "rpq-general": GeneralRelevantPatientInformationQuery,
    "rpq-breast": BreastImagingRelevantPatientInformationQuery,
    "rpq-cardiac": CardiacRelevantPatientInformationQuery,
}

_IDENTIFIER_DOES_NOT_MATCH = 0xA900
_SOP_CLASS_NOT_SUPPORTED = 0x0122
_CANCEL = 0xFE00


def resolve_model(model: str) -> str:
    """The FIND SOP Class UID for ``"patient"``, ``"study"``, ... or a UID."""
    uid = FIND_MODELS.get(model.lower())
    if uid is not None:
        return uid
    if model and all(c in "0123456789." for c in model):
        return model
    raise ValueError(f"unknown query model {model!r} (use {', '.join(FIND_MODELS)} or a SOP Class UID)")


# ----------------------------------------------------- abandoned operations

# Background drains of operations left without aclose(), per association.
_draining: weakref.WeakKeyDictionary[Association, set[asyncio.Future[Any]]] = weakref.WeakKeyDictionary()


async def settle(assoc: Association) -> None:
    """Wait until operations abandoned on *assoc* have had their final response."""
    tasks = _draining.get(assoc)
    while tasks:
        await asyncio.gather(*list(tasks), return_exceptions=True)
        tasks = _draining.get(assoc)


async def _drain(assoc: Association, op: _Operation, message_id: int) -> Status | None:
    """Consume responses of a cancelled operation up to its final one."""
    try:
        while True:
            msg = await assoc.next_response(op)
            status = Status(msg.command.status or 0)
            if not status.is_pending:
                return status
    except DIMSETimeout:
        log.warning("no final response to cancelled C-FIND %d within the DIMSE timeout; aborting", message_id)
        assoc.abort()
        return None
    except (AssociationAborted, ConnectionError):
        return None
    finally:
        assoc.close_operation(message_id)


# ------------------------------------------------------------------- SCU

_NEW, _RUNNING, _DONE = 0, 1, 2


class FindResults:
    """The responses of one C-FIND: an async iterator and async context manager.

    Iterating yields ``(status, identifier)``; the C-FIND-RQ is sent on the
    first iteration.  After the final response, :attr:`final_status` and
    :attr:`final_command` (with any ErrorComment) are set.
    """

    def __init__(self, assoc: Association, query: Dataset, sop_class_uid: str, priority: int) -> None:
        self.assoc = assoc
        self.query = query
        self.sop_class_uid = sop_class_uid
        self.priority = priority
        self.final_status: Status | None = None
        self.final_command: Command | None = None
        self.matches = 0
        self.message_id: int | None = None
        self.context_id: int | None = None
        self.transfer_syntax = ""
        self._state = _NEW
        self._op: _Operation | None = None
        self._drain_task: asyncio.Future[Status | None] | None = None

    # -- protocol ------------------------------------------------------------

    def __aiter__(self) -> FindResults:
        return self

    async def __aenter__(self) -> FindResults:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _start(self) -> None:
        assoc = self.assoc
        await settle(assoc)
        ctx = assoc.find_context(self.sop_class_uid)
        if ctx is None:
            self._state = _DONE
            raise NoAcceptedContext(f"no presentation context was accepted for C-FIND {self.sop_class_uid}")
        data = encode_identifier(self.query, ctx.transfer_syntax)
        mid = assoc.next_message_id()
        cmd = Command(
            C_FIND_RQ,
            message_id=mid,
            affected_sop_class_uid=self.sop_class_uid,
            priority=self.priority,
            has_dataset=True,
        )
        self.message_id, self.context_id, self.transfer_syntax = mid, ctx.context_id, ctx.transfer_syntax
        self._op = assoc.open_operation(ctx.context_id, mid)
        self._state = _RUNNING
        try:
            await assoc.send(ctx.context_id, cmd, [data])
        except BaseException:
            self._state = _DONE
            assoc.close_operation(mid)
            raise

    async def __anext__(self) -> tuple[Status, Dataset | None]:
        if self._state == _NEW:
            await self._start()
        if self._state == _DONE:
            raise StopAsyncIteration
        assert self._op is not None and self.message_id is not None
        try:
            msg = await self.assoc.next_response(self._op)
        except DIMSETimeout:
            self._cancel_now()
            self._finish()
            raise
        except asyncio.CancelledError:
            self._abandon()
            raise
        except BaseException:
            self._finish()
            raise
        status = Status(msg.command.status if msg.command.status is not None else 0xFFFF)
        if status.is_pending:
            identifier: Dataset | None = None
            if msg.dataset is not None:
                try:
                    identifier = decode_identifier(msg.dataset, self.transfer_syntax)
                except DatasetDecodeError:
                    await self.aclose()
                    raise
            self.matches += 1
            return status, identifier
        self.final_status = status
        self.final_command = msg.command
        self._finish()
        return status, None

    def _finish(self) -> None:
        self._state = _DONE
        if self.message_id is not None:
            self.assoc.close_operation(self.message_id)

    def _cancel_now(self) -> None:
        if self.context_id is None or self.message_id is None or not self.assoc.is_established:
            return
        try:
            self.assoc.send_cancel_nowait(self.context_id, self.message_id)
        except (AssociationAborted, ConnectionError):
            pass

    def _final_queued(self) -> bool:
        op = self._op
        return op is not None and any(not Status(m.command.status or 0).is_pending for m in op.messages)

    async def aclose(self) -> None:
        """Stop: send C-CANCEL if needed and consume responses to the final one."""
        if self._state != _RUNNING:
            self._state = _DONE
            drain = self._drain_task
            if drain is not None:
                # abandoned by a cancellation inside ``async with``: wait for the drain
                status = await asyncio.shield(drain)
                if status is not None:
                    self.final_status = status
            return
        assert self._op is not None and self.message_id is not None
        if not self._final_queued():
            self._cancel_now()
        self._state = _DONE
        status = await _drain(self.assoc, self._op, self.message_id)
        if status is not None:
            self.final_status = status

    def _abandon(self) -> None:
        """Synchronous clean-up for an iterator left without aclose()."""
        if self._state != _RUNNING:
            return
        assert self._op is not None and self.message_id is not None
        assoc = self.assoc
        self._state = _DONE
        if assoc.closed.done():
            assoc.close_operation(self.message_id)
            return
        if not self._final_queued():
            self._cancel_now()
        task = asyncio.ensure_future(_drain(assoc, self._op, self.message_id), loop=assoc._loop)
        self._drain_task = task
        tasks = _draining.setdefault(assoc, set())
        tasks.add(task)

        def done(t: asyncio.Future[Status | None]) -> None:
            tasks.discard(t)

        task.add_done_callback(done)

    def __del__(self) -> None:
        if getattr(self, "_state", _DONE) != _RUNNING:
            return
        loop = self.assoc._loop
        if loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._abandon()
        else:  # pragma: no cover - collected in another thread
            loop.call_soon_threadsafe(self._abandon)

    def __repr__(self) -> str:
        state = ("new", "running", "done")[self._state]
        return f"<FindResults {self.sop_class_uid} {state} matches={self.matches}>"


def find(
    assoc: Association, query: Dataset, model: str = "patient", *, priority: int = PRIORITY_MEDIUM
) -> FindResults:
    """C-FIND: an async iterator of ``(Status, Dataset | None)``; see :class:`FindResults`."""
    if not isinstance(query, Dataset):
        raise TypeError(f"query must be a pydicom Dataset, not {type(query).__name__}")
    return FindResults(assoc, query, resolve_model(model), priority)


# ------------------------------------------------------------------- SCP


class _CancelSet(set[int]):
    """``Association.cancelled_requests`` that can also wake waiters."""

    def __init__(self, items: Iterable[int] = ()) -> None:
        super().__init__(items)
        self.waiters: dict[int, asyncio.Future[None]] = {}

    def add(self, mid: int) -> None:
        super().add(mid)
        fut = self.waiters.get(mid)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def waiter(self, mid: int) -> asyncio.Future[None]:
        fut = self.waiters.get(mid)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            if mid in self:
                fut.set_result(None)
            self.waiters[mid] = fut
        return fut

    def forget(self, mid: int) -> None:
        fut = self.waiters.pop(mid, None)
        if fut is not None and not fut.done():
            fut.cancel()


def _cancel_set(assoc: Association) -> _CancelSet:
    cs = assoc.cancelled_requests
    if not isinstance(cs, _CancelSet):
        cs = _CancelSet(cs)
        assoc.cancelled_requests = cs
    return cs


class FindRequest(RequestInfo):
    """One received C-FIND-RQ, as handed to a find handler."""

    __slots__ = ("assoc", "message", "context_id", "transfer_syntax", "_identifier")

    def __init__(self, assoc: Association, message: Message, transfer_syntax: str) -> None:
        self.assoc = assoc
        self.message = message
        self.context_id = message.context_id
        self.transfer_syntax = transfer_syntax
        self._identifier: Dataset | None = None

    @property
    def model(self) -> str:
        """The information model: the request's Affected SOP Class UID."""
        return self.message.command.affected_sop_class_uid or ""

    @property
    def encoded(self) -> EncodedDataset:
        """The encoded identifier."""
        return EncodedDataset(self.message.dataset or [], self.transfer_syntax)

    @property
    def identifier(self) -> Dataset:
        """The query identifier decoded with pydicom (on first access)."""
        if self._identifier is None:
            self._identifier = self.encoded.decode()
        return self._identifier

    @property
    def cancelled(self) -> bool:
        """Whether the requestor sent a C-CANCEL-RQ for this request."""
        return self.message_id in self.assoc.cancelled_requests

    async def wait_cancelled(self) -> None:
        """Return once the requestor cancels this request."""
        await asyncio.shield(_cancel_set(self.assoc).waiter(self.message_id))

    def __repr__(self) -> str:
        return f"<FindRequest {self.model} #{self.message_id} from {self.calling_ae!r}>"


#: What a find handler yields: a match, or ``(status, match)``.
FindItem = Union[Dataset, tuple[int, Union[Dataset, None]]]
#: A find handler: an async generator (or a coroutine returning an iterable).
FindHandler = Callable[[FindRequest], Union[AsyncIterable[FindItem], Awaitable[Iterable[FindItem]]]]


async def _aiter_items(handler: FindHandler, req: FindRequest) -> AsyncGenerator[FindItem, None]:
    result: Any = handler(req)
    if inspect.isawaitable(result):
        result = await result
    if isinstance(result, AsyncIterable):
        try:
            async for item in result:
                yield item
        finally:
            # Leaving ``async for`` does not close the handler's generator.
            aclose = getattr(result, "aclose", None)
            if aclose is not None:
                await aclose()
    else:
        try:
            for item in result:
                yield item
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()


class _FindService:
    """The low-level C-FIND-RQ handler installed by :func:`serve_find`."""

    def __init__(self) -> None:
        self.handlers: dict[str, FindHandler] = {}

    async def __call__(self, assoc: Association, msg: Message) -> None:
        cmd = msg.command
        ctx = assoc.contexts.get(msg.context_id)
        handler = self.handlers.get(cmd.affected_sop_class_uid or "")
        if ctx is None or handler is None or ctx.abstract_syntax != cmd.affected_sop_class_uid:
            rsp = response_to(cmd, _SOP_CLASS_NOT_SUPPORTED)
            rsp.error_comment = "SOP Class not supported on this presentation context"
            await assoc.send(msg.context_id, rsp)
            return
        cancels = _cancel_set(assoc)
        req = FindRequest(assoc, msg, ctx.transfer_syntax)
        mid = req.message_id
        status, comment = await self._run(assoc, req, handler, cancels.waiter(mid))
        cancels.forget(mid)
        rsp = response_to(cmd, status)
        if comment and Status(status).is_failure:
            rsp.error_comment = comment
        await assoc.send(msg.context_id, rsp)

    async def _run(
        self,
        assoc: Association,
        req: FindRequest,
        handler: FindHandler,
        cancelled: asyncio.Future[None],
    ) -> tuple[int, str | None]:
        """Send the pending responses; return the final status and comment."""
        cmd = req.command
        items = _aiter_items(handler, req)
        step: asyncio.Future[FindItem] | None = None
        try:
            while True:
                if cancelled.done():
                    return _CANCEL, None
                step = asyncio.ensure_future(items.__anext__())
                await asyncio.wait((step, cancelled), return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    # C-CANCEL while the handler was working: stop it.
                    step.cancel()
                    try:
                        await step
                    except BaseException:
                        pass
                    return _CANCEL, None
                try:
                    item = step.result()
                except StopAsyncIteration:
                    return (_CANCEL if cancelled.done() else 0x0000), None
                match: Dataset | None
                if isinstance(item, Dataset):
                    status, match = 0xFF00, item
                else:
                    status, match = int(item[0]), item[1]
                if not Status(status).is_pending:
                    return status, None  # the handler chose the final status
                if not isinstance(match, Dataset):
                    raise TypeError(f"find handler yielded {type(match).__name__}, expected a Dataset")
                if cancelled.done():
                    return _CANCEL, None
                data = encode_identifier(match, req.transfer_syntax)
                await assoc.send(req.context_id, response_to(cmd, status), [data])
        except asyncio.CancelledError:
            raise
        except ServiceError as exc:
            return int(exc.status), exc.comment
        except (AssociationAborted, ConnectionError):
            raise
        except DatasetDecodeError as exc:
            log.warning("C-FIND identifier from %s cannot be decoded: %s", req.calling_ae, exc)
            return _IDENTIFIER_DOES_NOT_MATCH, "identifier cannot be decoded"
        except Exception as exc:
            log.exception("C-FIND handler failed")
            text = str(exc)
            return HANDLER_FAILED, f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        finally:
            if step is not None and not step.done():
                # cancelled from outside (association closed): stop the handler first
                step.cancel()
                await asyncio.wait((step,))
                if not step.cancelled():
                    step.exception()  # retrieved: the operation is over anyway
            await items.aclose()


def serve_find(
    server: Server,
    handler: FindHandler,
    *,
    models: Iterable[str] = ("patient", "study"),
    transfer_syntaxes: Iterable[str] | None = None,
) -> None:
    """Serve C-FIND on *server* for *models* (names or SOP Class UIDs) with *handler*.

    *handler* is ``async def handler(req: FindRequest)``, an async generator
    yielding matches (Datasets, sent as FF00) or ``(status, Dataset)``
    pairs; yielding ``(status, None)`` with a non-pending status ends the
    operation with that status.  Calling this again for other models adds
    another handler; the one for the request's SOP class is used.
    """
    from ..aio.server import DEFAULT_TRANSFER_SYNTAXES

    ts = list(transfer_syntaxes) if transfer_syntaxes is not None else list(DEFAULT_TRANSFER_SYNTAXES)
    existing = server.handlers.get(C_FIND_RQ)
    service = existing if isinstance(existing, _FindService) else _FindService()
    for model in models:
        uid = resolve_model(model)
        server.add_context(uid, ts)
        service.handlers[uid] = handler
    server.on(C_FIND_RQ, service)
