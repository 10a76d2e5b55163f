"""Query/Retrieve C-GET (PS3.4 C.4.3) with interleaved C-STORE sub-operations.

A C-GET moves instances over the *same* association: the Q/R SCP answers the
C-GET-RQ by sending each matching instance as a C-STORE-RQ on a storage
context where the requestor holds the SCP role (PS3.7 D.3.3.4), with pending
C-GET-RSPs (FF00) carrying the four sub-operation counters in between, and a
final C-GET-RSP (facts sheet 4.6).

SCU
---
:func:`get` (``assoc.get(...)``) returns a :class:`GetOperation`, an async
iterator (and async context manager) that yields, in wire order,

* :class:`ReceivedInstance` -- one per C-STORE sub-operation we accepted;
* :class:`GetProgress` -- one per pending C-GET-RSP;
* :class:`GetResult` -- the final C-GET-RSP, always the last item.

Backpressure: the C-STORE-RSP for an instance is sent only when the consumer
comes back for the next item, so with the usual asynchronous-operations
window of 1 the SCP has at most one sub-operation outstanding and a slow
consumer slows the sender.  The response reflects what happened to the
instance: success once the consumer took it; 0xA700 when writing it failed
for lack of space; 0xC000 when the ``on_instance`` callback raised, the Part
10 write failed otherwise, the SOP Instance UID is not usable as a file name,
or the consumer called :meth:`ReceivedInstance.reject`.  Refused instances
are not yielded; they are listed in :attr:`GetResult.refused`.

Leaving the loop early (``break``, an exception, :meth:`GetOperation.aclose`)
sends C-CANCEL on the C-GET context and keeps answering incoming C-STOREs
(refused, 0xC000) until the final C-GET-RSP, so the association stays
usable.  Use ``async with assoc.get(...) as items: async for item in
items: ...`` to make that cleanup run before the block exits; a bare ``async
for`` + ``break`` schedules the same cleanup as a task when the iterator is
garbage collected, and the next :func:`get` on the association waits for it.

SCP
---
:func:`serve_get` registers a handler ``handler(req: GetRequest)`` that
returns (or is an async generator of) the matching instances: pydicom
Datasets, Part 10 file paths (``str`` / ``os.PathLike``; sent without
re-encoding when an accepted context has the file's transfer syntax),
:class:`~aiodicom.dataset.EncodedDataset` objects (SOP UIDs read from the
data set) or :class:`ReceivedInstance` objects (relay of a C-GET SCU).

Counting (the choice we made): the total number of sub-operations is known
when the handler yields an ``int`` first (as in pynetdicom) or returns a
sized collection (``len()``); pending responses then carry Remaining.
Otherwise instances are streamed as they come and pending responses omit
Remaining (it is conditional in PS3.4); the library never buffers a whole
result set to count it.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import inspect
import logging
import os
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union, cast

from pydicom.dataset import Dataset

from ..aio.association import arm_timeout
from ..aio.errors import AssociationAborted, DIMSETimeout
from ..dataset import Buffer, DatasetDecodeError, EncodedDataset, encode_identifier
from ..dimse.commands import C_GET_RQ, C_STORE_RQ, C_STORE_RSP, PRIORITY_MEDIUM, Command
from ..dimse.fragments import Message
from ..dimse.status import Category, category
from ..part10 import (
    open_part10_cached,
    read_part10_dataset,
    read_part10_dataset_nowait,
    safe_instance_filename,
    write_part10,
)
from ..uids import (
    COMPRESSED_TRANSFER_SYNTAXES,
    STORAGE_SOP_CLASSES,
    CompositeInstanceRootRetrieveGet,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    PatientRootQueryRetrieveInformationModelGet,
    PatientStudyOnlyQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)
from ..ul.negotiation import AcceptedContext
from ._retrieve import (
    ALL_LEVELS,
    IDENTIFIER_MISMATCH,
    LEVEL_KEYS,
    MODEL_LEVELS,
    NO_SOP_UIDS,
    SOP_CLASS_NOT_SUPPORTED,
    SUCCESS,
    UNABLE,
    RetrieveOperation,
    RetrieveProgress,
    RetrieveRequest,
    RetrieveResult,
    SubOperations,
    accept_request,
    dataset_uids,
    keep_until_done,
    model_uid,
)
from .store import _EncodedPayload

if TYPE_CHECKING:
    from ..aio.association import Association, _Operation
    from ..aio.client import ContextSpec
    from ..aio.server import Server

__all__ = [
    "GET_MODELS",
    "COMMON_STORAGE_SOP_CLASSES",
    "ReceivedInstance",
    "GetProgress",
    "GetResult",
    "GetItem",
    "GetOperation",
    "get",
    "get_contexts",
    "get_identifier",
    "retrieve",
    "retrieve_series",
    "GetRequest",
    "GetSource",
    "GetHandler",
    "GetService",
    "serve_get",
]

log = logging.getLogger("aiodicom.get")

#: Short names accepted for ``model``.
GET_MODELS: Mapping[str, str] = {
    "patient": PatientRootQueryRetrieveInformationModelGet,
    "study": StudyRootQueryRetrieveInformationModelGet,
    "psonly": PatientStudyOnlyQueryRetrieveInformationModelGet,
    "composite": CompositeInstanceRootRetrieveGet,
}

#: Storage SOP classes a C-GET SCU proposes by default (about 100 of the most
#: common, so that they fit with the Q/R contexts in the 128-context limit).
COMMON_STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(
    "1.2.840.10008.5.1.4.1.1." + suffix
    for suffix in (
        # projection radiography, CT, MR, US, secondary capture
        "1", "1.1", "1.1.1", "1.2", "1.2.1", "1.3", "1.3.1",
        "2", "2.1", "2.2", "3.1", "4", "4.1", "4.2", "4.3", "4.4",
        "6.1", "6.2", "7", "7.1", "7.2", "7.3", "7.4",
        # waveforms
        "9.1.1", "9.1.2", "9.1.3", "9.2.1", "9.3.1", "9.4.1", "9.4.2", "9.5.1", "9.6.1",
        # presentation states
        "11.1", "11.2", "11.3", "11.4", "11.5",
        # angio / fluoro / 3D X-ray / breast tomo / IVOCT
        "12.1", "12.1.1", "12.2", "12.2.1", "13.1.1", "13.1.2", "13.1.3", "13.1.4", "13.1.5",
        "14.1", "14.2",
        # NM, parametric map, raw data, registration, segmentation
        "20", "30", "66", "66.1", "66.2", "66.3", "66.4", "66.5", "67",
        # visible light
        "77.1.1", "77.1.1.1", "77.1.2", "77.1.2.1", "77.1.3", "77.1.4", "77.1.4.1",
        "77.1.5.1", "77.1.5.2", "77.1.5.4", "77.1.5.7", "77.1.5.8", "77.1.6", "77.1.7",
        # ophthalmic maps
        "81.1", "82.1",
        # structured reports
        "88.11", "88.22", "88.33", "88.34", "88.35", "88.40", "88.50", "88.59", "88.65",
        "88.67", "88.68", "88.69", "88.71", "88.72", "88.73",
        # encapsulated documents
        "104.1", "104.2", "104.3",
        # PET
        "128", "128.1", "130",
        # radiotherapy
        "481.1", "481.2", "481.3", "481.4", "481.5", "481.6", "481.7", "481.8", "481.9",
    )
)

_STATUS_OUT_OF_RESOURCES = 0xA700

#: Native syntaxes we convert between (decode + re-encode).  Big endian is
#: excluded: pydicom does not byte-swap OW/OF values, so Pixel Data would be
#: corrupted; a big endian instance is only sent on a big endian context.
_CONVERTIBLE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)

#: Default transfer syntaxes an SCP accepts on storage contexts (uncompressed
#: first, so a context offering both is used uncompressed).
_DEFAULT_STORAGE_TS: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    "1.2.840.10008.1.2.2",
    *COMPRESSED_TRANSFER_SYNTAXES,
)


def _model_uid(model: str) -> str:
    return model_uid(model, GET_MODELS, "C-GET")


def _nospace(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


# ============================================================================
# SCU: the items a retrieve yields
# ============================================================================


class ReceivedInstance(_EncodedPayload):
    """An instance received as a C-STORE sub-operation of a C-GET.

    The data set is kept encoded (:attr:`fragments`, as received); it is
    decoded with pydicom only when :attr:`dataset` is first read.
    """

    kind = "instance"

    __slots__ = (
        "sop_class_uid",
        "sop_instance_uid",
        "transfer_syntax",
        "encoded",
        "path",
        "context_id",
        "message_id",
        "status",
        "error_comment",
    )

    def __init__(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        encoded: EncodedDataset,
        *,
        context_id: int = 0,
        message_id: int = 0,
        path: Path | None = None,
    ) -> None:
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid
        self.transfer_syntax = encoded.transfer_syntax
        self.encoded = encoded
        #: Where the instance was written (``write_to``), else None.
        self.path = path
        self.context_id = context_id
        self.message_id = message_id
        #: The C-STORE-RSP status that will be sent (0 unless :meth:`reject`).
        self.status = SUCCESS
        self.error_comment: str | None = None

    def reject(self, status: int = UNABLE, comment: str | None = None) -> None:
        """Answer this sub-operation with a failure (or warning) ``status``.

        Call it before asking for the next item; the C-STORE-RSP is sent then.
        """
        self.status = int(status)
        self.error_comment = comment

    def __repr__(self) -> str:
        return f"<ReceivedInstance {self.sop_instance_uid} ({self.sop_class_uid}, {self.transfer_syntax})>"


@dataclass
class GetProgress(RetrieveProgress):
    """A pending C-GET-RSP: the SCP's sub-operation counters so far."""


@dataclass
class GetResult(RetrieveResult):
    """The final C-GET-RSP, plus what we refused on our side."""

    offending_element: list[int] | None = None
    #: The decoded response identifier, if the SCP sent one.
    identifier: Dataset | None = None
    #: Instances we accepted (and yielded).
    received: int = 0
    #: Files written under ``write_to`` during this retrieve.
    files: list[Path] = field(default_factory=list)
    #: SOP Instance UID -> the failure status we answered its C-STORE with.
    refused: dict[str, int] = field(default_factory=dict)
    #: True when the operation was cancelled by us (early exit).
    cancelled: bool = False


#: What a :class:`GetOperation` yields.
GetItem = Union[ReceivedInstance, GetProgress, GetResult]

#: ``on_instance`` callback: may be sync or async; a returned int is used as
#: the C-STORE-RSP status, raising refuses the instance.
InstanceCallback = Callable[[ReceivedInstance], Any]


class _Inbox:
    """Where the association drops incoming C-STORE-RQs during a retrieve.

    Each store is stamped with the number of C-GET responses delivered
    before it, so that stores and responses are taken in wire order.  Kept
    apart from :class:`GetOperation` so the association does not keep the
    operation alive (its finalizer schedules the cleanup).
    """

    __slots__ = ("stores", "waiter", "op", "taken")

    def __init__(self) -> None:
        self.stores: collections.deque[tuple[int, Message]] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None
        self.op: Any = None  # the association's operation record of the C-GET
        self.taken = 0  # C-GET responses taken so far

    def put(self, msg: Message) -> None:
        op = self.op
        self.stores.append((self.taken + (len(op.messages) if op is not None else 0), msg))
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


# Association -> the cleanup (C-CANCEL and drain) of its last retrieve; the
# next get() on the association waits for it (an abandoned iterator's cleanup
# runs as a task).
_CLOSING: weakref.WeakKeyDictionary[Association, asyncio.Future[None]] = weakref.WeakKeyDictionary()


class GetOperation(RetrieveOperation[GetProgress, GetResult]):
    """One C-GET as an async iterator of :data:`GetItem` (see the module doc).

    Also an async context manager: leaving the ``async with`` block before
    the final response cancels the retrieve and drains it.  After the
    iteration ends, :attr:`result` holds the :class:`GetResult`.
    """

    service = "C-GET"
    command_field = C_GET_RQ
    _log = log
    _progress_type = GetProgress
    _result_type = GetResult

    def __init__(
        self,
        assoc: Association,
        identifier: Dataset | Mapping[str, Any],
        model: str = "patient",
        *,
        write_to: str | os.PathLike[str] | None = None,
        on_instance: InstanceCallback | None = None,
        priority: int = PRIORITY_MEDIUM,
        fsync: bool = True,
        timeout: float | None = -1.0,
    ) -> None:
        super().__init__(assoc, identifier, _model_uid(model), priority, timeout)
        self.write_to = Path(write_to) if write_to is not None else None
        self.on_instance = on_instance
        self.fsync = fsync
        self._inbox = _Inbox()
        self._held: ReceivedInstance | None = None
        self._pending: Message | None = None
        self._closing: asyncio.Future[None] | None = None
        self._received = 0
        self._files: list[Path] = []
        self._refused: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---------------------------------------------------------- iteration

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.aclose(failed=exc_type is not None)

    async def __anext__(self) -> GetItem:
        if self._finished or self._closing is not None:
            raise StopAsyncIteration
        if not self._started:
            await self._start()
        try:
            await self._answer_held()
            while True:
                msg, is_store = await self._next_event(self.timeout)
                if is_store:
                    self._pending = msg  # answered by the cleanup if we are interrupted
                    instance = await self._accept(msg)
                    self._pending = None
                    if instance is not None:
                        self._held = instance
                        return instance
                    continue
                return self._on_response(msg)
        except DIMSETimeout:
            # Abort rather than leave C-STOREs of this retrieve to arrive later.
            self._abort_on_timeout("message from the peer")
            raise
        except BaseException:
            if self.result is None and not self.assoc.is_established:
                self._finish()
            raise

    async def _start(self) -> None:
        assoc = self.assoc
        self._loop = asyncio.get_running_loop()
        previous = _CLOSING.get(assoc)
        if previous is not None and not previous.done():
            await asyncio.shield(previous)
        ctx = self._accepted_context()
        if assoc.store_sink is not None:
            raise RuntimeError("another C-GET is in progress on this association")
        payload = encode_identifier(self.identifier, ctx.transfer_syntax)
        if self.write_to is not None:
            try:
                os.makedirs(self.write_to, exist_ok=True)
            except OSError as exc:  # each write then fails and is refused
                log.warning("C-GET: cannot create %s: %s", self.write_to, exc)
        await self._send_request(ctx, payload)

    def _attach(self) -> None:
        self._inbox.op = self._op
        self.assoc.store_sink = self._inbox.put

    def _detach(self) -> None:
        assoc = self.assoc
        if assoc.store_sink == self._inbox.put:
            assoc.store_sink = None
        # Anything still queued was sent after the final response: ignore it.
        self._inbox.stores.clear()

    async def _next_event(self, timeout: float | None) -> tuple[Message, bool]:
        """The next incoming C-STORE-RQ (True) or C-GET-RSP (False), in wire order."""
        inbox = self._inbox
        op = self._op
        while True:
            if op.messages and (not inbox.stores or inbox.stores[0][0] > inbox.taken):
                inbox.taken += 1
                return op.messages.popleft(), False
            if inbox.stores:
                return inbox.stores.popleft()[1], True
            if op.error is not None:
                raise op.error
            fut: asyncio.Future[None] = (self._loop or asyncio.get_running_loop()).create_future()
            inbox.waiter = op.waiter = fut
            timer = arm_timeout(fut.get_loop(), fut, timeout, "C-GET message")
            try:
                await fut
            finally:
                inbox.waiter = None
                if op.waiter is fut:
                    op.waiter = None
                if timer is not None:
                    timer.cancel()

    async def _answer_held(self, failed: bool = False) -> None:
        inst, self._held = self._held, None
        if inst is None:
            return
        if failed and inst.status == SUCCESS:
            inst.reject(UNABLE, "the receiving application failed")
        await self._respond(inst.context_id, inst.message_id, inst.sop_class_uid, inst.sop_instance_uid,
                            inst.status, inst.error_comment)
        if category(inst.status) == Category.FAILURE:
            self._refused[inst.sop_instance_uid] = inst.status

    async def _respond(
        self, context_id: int, message_id: int, sop_class: str | None, sop_instance: str | None,
        status: int, comment: str | None = None,
    ) -> None:
        rsp = Command(
            C_STORE_RSP,
            message_id_being_responded_to=message_id,
            affected_sop_class_uid=sop_class,
            affected_sop_instance_uid=sop_instance,
            status=status,
            error_comment=comment if status != SUCCESS else None,
        )
        await self.assoc.send(context_id, rsp)

    async def _refuse(self, msg: Message, status: int, comment: str) -> None:
        cmd = msg.command
        uid = cmd.affected_sop_instance_uid or ""
        if self._pending is msg:
            self._pending = None
        log.warning("C-GET: refusing instance %r: %s (0x%04X)", uid, comment, status)
        self._refused[uid] = status
        await self._respond(msg.context_id, cmd.message_id or 0, cmd.affected_sop_class_uid,
                            cmd.affected_sop_instance_uid, status, comment)

    async def _accept(self, msg: Message) -> ReceivedInstance | None:
        """Check, write and hand an incoming C-STORE to the callback.

        Returns the instance to yield, or None when it was refused (the
        C-STORE-RSP has then been sent).
        """
        assoc = self.assoc
        cmd = msg.command
        sop_class = cmd.affected_sop_class_uid or ""
        sop_instance = cmd.affected_sop_instance_uid or ""
        ctx = assoc.contexts.get(msg.context_id)
        if ctx is None or not ctx.can_receive_requests(assoc.requestor) or ctx.abstract_syntax != sop_class:
            await self._refuse(msg, SOP_CLASS_NOT_SUPPORTED, "no storage context with the SCP role for this SOP class")
            return None
        if msg.dataset is None:
            await self._refuse(msg, UNABLE, "C-STORE-RQ without a data set")
            return None
        instance = ReceivedInstance(
            sop_class, sop_instance, EncodedDataset(msg.dataset, ctx.transfer_syntax),
            context_id=msg.context_id, message_id=cmd.message_id or 0,
        )
        if self.write_to is not None:
            try:
                name = safe_instance_filename(sop_instance)
            except ValueError:
                await self._refuse(msg, UNABLE, "SOP Instance UID is not a valid UID")
                return None
            try:
                uids = instance.encoded.sop_uids()
            except DatasetDecodeError as exc:
                await self._refuse(msg, UNABLE, f"cannot read the data set: {exc}")
                return None
            if uids != (sop_class, sop_instance):
                await self._refuse(msg, IDENTIFIER_MISMATCH, "SOP Class/Instance UID differ from the command")
                return None
            path = self.write_to / name
            try:
                await asyncio.to_thread(
                    write_part10, path, sop_class, sop_instance, ctx.transfer_syntax, instance.fragments,
                    source_ae=(assoc.called_ae if assoc.requestor else assoc.calling_ae) or None,
                    fsync=self.fsync,
                )
            except Exception as exc:
                status = _STATUS_OUT_OF_RESOURCES if _nospace(exc) else UNABLE
                await self._refuse(msg, status, f"cannot write the file: {exc}")
                return None
            instance.path = path
            self._files.append(path)
        if self.on_instance is not None:
            try:
                outcome = self.on_instance(instance)
                if inspect.isawaitable(outcome):
                    outcome = await outcome
            except Exception as exc:
                status = _STATUS_OUT_OF_RESOURCES if _nospace(exc) else UNABLE
                log.debug("C-GET: on_instance failed for %s", sop_instance, exc_info=True)
                self._discard_file(instance)
                await self._refuse(msg, status, f"on_instance failed: {type(exc).__name__}: {exc}")
                return None
            if isinstance(outcome, int) and not isinstance(outcome, bool):
                if category(outcome) == Category.FAILURE:
                    self._discard_file(instance)
                    await self._refuse(msg, outcome, "refused by on_instance")
                    return None
                instance.status = outcome
        self._received += 1
        return instance

    def _discard_file(self, instance: ReceivedInstance) -> None:
        if instance.path is not None:
            try:
                os.unlink(instance.path)
            except OSError:
                pass
            if self._files and self._files[-1] == instance.path:
                self._files.pop()
            instance.path = None

    def _result_details(self, cmd: Command, identifier: Dataset | None) -> dict[str, Any]:
        return {
            "offending_element": cmd.offending_element,
            "identifier": identifier,
            "received": self._received,
            "files": self._files,
            "refused": self._refused,
            "cancelled": self._closing is not None,
        }

    # ------------------------------------------------------------ closing

    async def aclose(self, *, failed: bool = False) -> None:
        """Stop the retrieve: C-CANCEL, then drain it to its final response.

        ``failed`` says the consumer failed on the instance it holds (its
        C-STORE-RSP is then a failure).  Idempotent; concurrent callers all
        wait for the same cleanup.
        """
        if self._closing is None:
            loop = asyncio.get_running_loop()
            if not self._started or self._finished:
                self._finish()
                done: asyncio.Future[None] = loop.create_future()
                done.set_result(None)
                self._closing = done
                return
            self._closing = _CLOSING[self.assoc] = loop.create_task(self._cancel_and_drain(failed))
        await asyncio.shield(self._closing)

    async def _cancel_and_drain(self, failed: bool) -> None:
        assoc = self.assoc
        try:
            await self._answer_held(failed)
            if self._pending is not None:  # interrupted while taking it in
                await self._refuse(self._pending, UNABLE, "the receiving application was interrupted")
            if self.context_id is not None and self.message_id is not None:
                await assoc.send_cancel(self.context_id, self.message_id)
            while not self._finished:
                msg, is_store = await self._next_event(self.timeout)
                if is_store:
                    await self._refuse(msg, UNABLE, "C-GET cancelled by the receiver")
                else:
                    self._on_response(msg)
        except (AssociationAborted, ConnectionError):
            pass
        except DIMSETimeout:
            log.warning("C-GET: no final response after C-CANCEL within %s s, aborting", self.timeout)
            assoc.abort()
        except asyncio.CancelledError:
            assoc.abort()
            raise
        except Exception:
            log.exception("C-GET: cleanup failed, aborting the association")
            assoc.abort()
        finally:
            self._finish()

    def __del__(self) -> None:
        # A bare ``async for ... break`` drops the iterator without closing
        # it: finish the retrieve in a task, as asyncio does for async
        # generators, so the association does not stay in the middle of it.
        if not getattr(self, "_started", False) or self._finished or self._closing is not None:
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            self._finish()
            return
        try:
            task = loop.create_task(self._cancel_and_drain(False))
        except RuntimeError:
            self._finish()
            return
        self._closing = _CLOSING[self.assoc] = task
        keep_until_done(task)


def get(
    assoc: Association,
    identifier: Dataset | Mapping[str, Any],
    model: str = "patient",
    *,
    write_to: str | os.PathLike[str] | None = None,
    on_instance: InstanceCallback | None = None,
    priority: int = PRIORITY_MEDIUM,
    fsync: bool = True,
    timeout: float | None = -1.0,
) -> GetOperation:
    """Start a C-GET on ``assoc``: ``async for item in get(assoc, ds): ...``.

    :param identifier: the C-GET identifier (QueryRetrieveLevel and unique
        keys), a Dataset or a mapping of keywords to values.
    :param model: ``"patient"``, ``"study"``, ``"psonly"``, ``"composite"``
        or a GET SOP class UID.
    :param write_to: write each instance there as a Part 10 file named
        ``<SOPInstanceUID>.dcm`` (a UID unfit for a file name is refused).
    :param on_instance: called with each accepted instance before it is
        yielded (sync or async); raising refuses it, an int return value
        becomes the C-STORE-RSP status.
    :param fsync: fsync each written file (and its directory).
    :param timeout: seconds to wait for the next message from the peer
        (default: the association's DIMSE timeout; ``None`` waits forever).
        On expiry the association is aborted and DIMSETimeout raised.

    The association must have accepted a context for the model and storage
    contexts with the SCP role for us (see :func:`get_contexts`).
    """
    return GetOperation(
        assoc, identifier, model, write_to=write_to, on_instance=on_instance,
        priority=priority, fsync=fsync, timeout=timeout,
    )


def get_contexts(
    sop_classes: Iterable[str] = COMMON_STORAGE_SOP_CLASSES,
    transfer_syntaxes: Sequence[str] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian),
    *,
    models: Iterable[str] = ("patient", "study"),
    extra: Iterable[ContextSpec] = (),
) -> tuple[list[ContextSpec], dict[str, tuple[bool, bool]]]:
    """Contexts and role selections for a C-GET SCU, for :func:`~aiodicom.associate`.

    One context per GET model (``models``: names or UIDs) and one per
    storage SOP class with ``transfer_syntaxes``; each storage class gets a
    role selection asking for the SCP role only (SCU 0, SCP 1), as
    pynetdicom's and DCMTK's getscu do.  ``extra`` contexts (e.g.
    Verification) are appended.  Raises ValueError beyond 128 contexts::

        contexts, roles = get_contexts([CTImageStorage])
        async with associate(host, port, contexts=contexts, roles=roles) as assoc: ...
    """
    contexts: list[ContextSpec] = []
    for model in models:
        contexts.append(_model_uid(model))
    roles: dict[str, tuple[bool, bool]] = {}
    for uid in sop_classes:
        if uid in roles:
            continue
        roles[uid] = (False, True)
        contexts.append((uid, list(transfer_syntaxes)))
    contexts.extend(extra)
    if len(contexts) > 128:
        raise ValueError(f"{len(contexts)} presentation contexts requested; at most 128 can be proposed")
    return contexts, roles


def get_identifier(
    level: str,
    *,
    model: str = "patient",
    patient_id: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_instance_uids: str | Sequence[str] | None = None,
) -> Dataset:
    """A C-GET identifier for ``level`` with the unique keys of the levels above.

    At PATIENT level only PatientID; below it, in the Patient Root model,
    PatientID plus the UIDs down to ``level`` (Study Root starts at STUDY).
    ``sop_instance_uids`` (IMAGE level) may be a list.
    """
    level = level.upper()
    uid = _model_uid(model)
    levels = MODEL_LEVELS.get(uid, ALL_LEVELS)
    if level not in levels:
        raise ValueError(f"level {level!r} is not one of {', '.join(levels)} for this model")
    given: dict[str, str | Sequence[str] | None] = {
        "PATIENT": patient_id,
        "STUDY": study_uid,
        "SERIES": series_uid,
        "IMAGE": sop_instance_uids,
    }
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for lvl in levels[: levels.index(level) + 1]:
        value = given[lvl]
        keyword = LEVEL_KEYS[lvl][1]
        if value is None or value == "" or (not isinstance(value, str) and not list(value)):
            raise ValueError(f"{keyword} is required at {level} level")
        setattr(ds, keyword, value if isinstance(value, str) else list(value))
    return ds


async def retrieve(
    host: str,
    port: int,
    out_dir: str | os.PathLike[str],
    *,
    level: str,
    model: str = "patient",
    patient_id: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_instance_uids: Sequence[str] | None = None,
    sop_classes: Iterable[str] = COMMON_STORAGE_SOP_CLASSES,
    transfer_syntaxes: Sequence[str] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian),
    on_instance: InstanceCallback | None = None,
    fsync: bool = True,
    **associate_kwargs: Any,
) -> GetResult:
    """Connect, C-GET ``level`` into ``out_dir`` as Part 10 files, release.

    ``associate_kwargs`` go to :func:`~aiodicom.associate` (``called_ae``,
    ``calling_ae``, timeouts, ...).  Returns the :class:`GetResult`;
    :attr:`GetResult.files` lists the files written.
    """
    from ..aio.client import associate

    identifier = get_identifier(
        level, model=model, patient_id=patient_id, study_uid=study_uid,
        series_uid=series_uid, sop_instance_uids=sop_instance_uids,
    )
    contexts, roles = get_contexts(sop_classes, transfer_syntaxes, models=(model,))
    os.makedirs(out_dir, exist_ok=True)
    async with associate(host, port, contexts=contexts, roles=roles, **associate_kwargs) as assoc:
        async with get(assoc, identifier, model, write_to=out_dir, on_instance=on_instance, fsync=fsync) as op:
            async for _item in op:
                pass
        assert op.result is not None
        return op.result


async def retrieve_series(
    host: str,
    port: int,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    out_dir: str | os.PathLike[str],
    *,
    level: str = "SERIES",
    sop_instance_uids: Sequence[str] | None = None,
    model: str = "patient",
    **kwargs: Any,
) -> GetResult:
    """Retrieve the instances of one series into ``out_dir``.

    ``level`` picks how: ``"SERIES"`` (default) names the series;
    ``"STUDY"``/``"PATIENT"`` retrieve the whole study/patient it belongs to;
    ``"IMAGE"`` retrieves ``sop_instance_uids``.  The unique keys of the
    levels above are always sent.  Other arguments as for :func:`retrieve`.
    """
    return await retrieve(
        host, port, out_dir, level=level, model=model, patient_id=patient_id, study_uid=study_uid,
        series_uid=series_uid, sop_instance_uids=sop_instance_uids, **kwargs,
    )


# ============================================================================
# SCP
# ============================================================================

#: What a GET handler may produce for one matching instance.
GetSource = Union[Dataset, str, "os.PathLike[str]", EncodedDataset, ReceivedInstance]

#: ``handler(req)``: an async generator (optionally yielding an int total
#: first), or a function returning an (async) iterable, possibly via a
#: coroutine.
GetHandler = Callable[["GetRequest"], Any]


@dataclass
class GetRequest(RetrieveRequest):
    """A validated C-GET request, as a handler sees it."""


@dataclass
class _Outgoing:
    """One prepared sub-operation."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    context: AcceptedContext | None = None
    fragments: Sequence[Buffer] | None = None
    error: str | None = None
    # or the data set as (open fd, offset, length) of a cached file, for sendfile
    file: tuple[int, int, int] | None = None

    def close(self) -> None:
        """Close the file, if any (idempotent)."""
        if self.file is not None:
            fd, self.file = self.file[0], None
            os.close(fd)


def _storage_contexts(assoc: Association, sop_class_uid: str) -> list[AcceptedContext]:
    """Accepted contexts for ``sop_class_uid`` on which we may send C-STOREs."""
    return [
        c for c in assoc.contexts.values()
        if c.abstract_syntax == sop_class_uid and c.can_send_requests(assoc.requestor)
    ]


def _choose(contexts: list[AcceptedContext], source_ts: str | None) -> tuple[AcceptedContext, bool] | None:
    """(context, needs re-encoding) for data in ``source_ts`` (None: native, any)."""
    if source_ts is not None:
        for ctx in contexts:
            if ctx.transfer_syntax == source_ts:
                return ctx, False
        if source_ts not in _CONVERTIBLE:
            return None
    for ts in _CONVERTIBLE:
        for ctx in contexts:
            if ctx.transfer_syntax == ts:
                return ctx, True
    return None


def _no_context(sop_class: str, sop_instance: str, source_ts: str | None, any_ctx: bool) -> _Outgoing:
    if not any_ctx:
        why = f"no accepted storage context with the SCP role for SOP class {sop_class}"
    else:
        why = f"no accepted context can carry transfer syntax {source_ts} for SOP class {sop_class}"
    return _Outgoing(sop_class, sop_instance, error=why)


def _reencode(encoded: EncodedDataset, target_ts: str) -> list[Buffer]:
    """Decode and re-encode between native syntaxes (run in a thread)."""
    return list(EncodedDataset.from_dataset(encoded.decode(), target_ts).fragments)


async def _prepare(assoc: Association, item: object) -> _Outgoing:
    """Resolve one handler item into what to send, on which context."""
    if isinstance(item, (str, os.PathLike)):
        # A file in the page cache is sent with sendfile (no copy through
        # user space); else one thread hop reads File Meta and data set.
        try:
            opened = open_part10_cached(item)
        except (OSError, ValueError) as exc:
            return _Outgoing(None, None, error=f"cannot read {os.fspath(item)!r}: {exc}")
        if opened is not None:
            info, fd = opened
            contexts = _storage_contexts(assoc, info.sop_class_uid)
            choice = _choose(contexts, info.transfer_syntax)
            if choice is not None and not choice[1]:
                region = (fd, info.dataset_offset, info.dataset_length)
                return _Outgoing(info.sop_class_uid, info.sop_instance_uid, choice[0], file=region)
            os.close(fd)
            if choice is None:
                return _no_context(info.sop_class_uid, info.sop_instance_uid, info.transfer_syntax, bool(contexts))
        try:
            # from the page cache without a thread hop when it is there
            cached = read_part10_dataset_nowait(item)
            if cached is None:
                cached = await asyncio.to_thread(read_part10_dataset, item)
            info, encoded = cached
        except (OSError, ValueError) as exc:
            return _Outgoing(None, None, error=f"cannot read {os.fspath(item)!r}: {exc}")
        contexts = _storage_contexts(assoc, info.sop_class_uid)
        choice = _choose(contexts, info.transfer_syntax)
        if choice is None:
            return _no_context(info.sop_class_uid, info.sop_instance_uid, info.transfer_syntax, bool(contexts))
        ctx, convert = choice
        if not convert:
            return _Outgoing(info.sop_class_uid, info.sop_instance_uid, ctx, encoded.fragments)
        try:
            frags = await asyncio.to_thread(_reencode, encoded, ctx.transfer_syntax)
        except Exception as exc:  # pydicom raises many types
            return _Outgoing(info.sop_class_uid, info.sop_instance_uid, error=f"cannot re-encode {item!r}: {exc}")
        return _Outgoing(info.sop_class_uid, info.sop_instance_uid, ctx, frags)

    if isinstance(item, ReceivedInstance):
        sop_class, sop_instance, encoded = item.sop_class_uid, item.sop_instance_uid, item.encoded
    elif isinstance(item, EncodedDataset):
        try:
            sop_class, sop_instance = item.sop_uids()
        except DatasetDecodeError as exc:
            return _Outgoing(None, None, error=str(exc))
        encoded = item
    elif isinstance(item, Dataset):
        uids = dataset_uids(item)
        if uids is None:
            return _Outgoing(None, None, error=NO_SOP_UIDS)
        sop_class, sop_instance, source_ts = uids
        if source_ts is None and 0x7FE00010 in item and item[0x7FE00010].is_undefined_length:
            return _Outgoing(sop_class, sop_instance,
                             error="encapsulated Pixel Data without file_meta.TransferSyntaxUID")
        contexts = _storage_contexts(assoc, sop_class)
        choice = _choose(contexts, source_ts)
        if choice is None:
            return _no_context(sop_class, sop_instance, source_ts, bool(contexts))
        ctx = choice[0]
        try:
            frags = EncodedDataset.from_dataset(item, ctx.transfer_syntax).fragments
        except Exception as exc:  # pydicom raises many types for unencodable values
            return _Outgoing(sop_class, sop_instance, error=f"cannot encode the data set: {exc}")
        return _Outgoing(sop_class, sop_instance, ctx, frags)
    else:
        raise TypeError(f"a C-GET handler yielded {type(item).__name__}, not an instance")

    contexts = _storage_contexts(assoc, sop_class)
    choice = _choose(contexts, encoded.transfer_syntax)
    if choice is None:
        return _no_context(sop_class, sop_instance, encoded.transfer_syntax, bool(contexts))
    ctx, convert = choice
    if not convert:
        return _Outgoing(sop_class, sop_instance, ctx, encoded.fragments)
    try:
        frags = EncodedDataset.from_dataset(encoded.decode(), ctx.transfer_syntax).fragments
    except Exception as exc:
        return _Outgoing(sop_class, sop_instance, error=f"cannot re-encode the data set: {exc}")
    return _Outgoing(sop_class, sop_instance, ctx, frags)


class _HandlerError(Exception):
    """The handler (or its iterator) raised; carries the original."""


async def _aiter_items(result: object) -> AsyncIterator[object]:
    if hasattr(result, "__aiter__"):
        async for item in cast("AsyncIterable[object]", result):
            yield item
    else:
        for item in cast("Iterable[object]", result):
            yield item


class _Source:
    """The handler's result as a stream of items, with the total if known."""

    def __init__(self, result: object) -> None:
        if isinstance(result, (Dataset, str, os.PathLike, EncodedDataset, ReceivedInstance)):
            result = [result]
        if result is None:
            result = []
        if not hasattr(result, "__aiter__") and not hasattr(result, "__iter__"):
            raise TypeError(f"a C-GET handler returned {type(result).__name__}, not an iterable")
        self.result = result
        self.total: int | None = None
        if hasattr(result, "__len__"):
            try:
                self.total = len(result)
            except TypeError:
                pass
        self._it = _aiter_items(result)
        self._first = True

    async def next(self) -> object | None:
        """The next instance source; None at the end.  Raises _HandlerError."""
        try:
            item = await self._it.__anext__()
            if self._first:
                self._first = False
                if isinstance(item, int) and not isinstance(item, bool):
                    self.total = max(item, 0)
                    item = await self._it.__anext__()
        except StopAsyncIteration:
            return None
        except Exception as exc:
            raise _HandlerError(exc) from exc
        return item

    async def close(self) -> None:
        for obj in (self._it, self.result):
            aclose = getattr(obj, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    log.debug("closing the C-GET handler's iterator failed", exc_info=True)
            else:
                close = getattr(obj, "close", None)
                if close is not None and inspect.isgenerator(obj):
                    close()


class GetService:
    """The C-GET-RQ handler :func:`serve_get` installs on a server.

    One per server; ``handlers`` maps GET SOP class UIDs to user handlers.
    """

    def __init__(self, *, strict: bool = True) -> None:
        self.handlers: dict[str, GetHandler] = {}
        self.strict = strict

    async def __call__(self, assoc: Association, msg: Message) -> None:
        accepted = await accept_request(assoc, msg, self.handlers, self.strict, "C-GET")
        if accepted is not None:
            handler, identifier, sop_class, level, keys = accepted
            await _perform(GetRequest(assoc, msg, identifier, sop_class, level, keys), handler)


async def _perform(req: GetRequest, handler: GetHandler) -> None:
    """Run the sub-operations of one C-GET and send its responses."""
    assoc, msg = req.assoc, req.message
    ctx_id = msg.context_id
    mid = req.message_id
    subops = SubOperations()
    source: _Source | None = None
    ahead: _Outgoing | None = None  # the next sub-operation, prepared early
    final_status = SUCCESS
    comment: str | None = None
    cancelled = False
    try:
        try:
            result = handler(req)
            if inspect.isawaitable(result):
                result = await result
            source = _Source(result)
        except Exception as exc:
            raise _HandlerError(exc) from exc
        at_end = False
        while True:
            if mid in assoc.cancelled_requests:
                cancelled = True
                break
            if ahead is not None:
                out, ahead = ahead, None
            else:
                if at_end:
                    break
                item = await source.next()
                if item is None:
                    break
                if mid in assoc.cancelled_requests:
                    cancelled = True
                    break
                out = await _prepare_item(assoc, item)
            if out.context is None or (out.fragments is None and out.file is None):
                log.warning("C-GET sub-operation for %s failed: %s", out.sop_instance_uid, out.error)
                subops.fail(out.sop_instance_uid or None)
            else:
                rsp_op, store_mid = await _send_store(assoc, out, req.priority)
                late: _HandlerError | None = None
                try:
                    # While the peer receives this instance and answers, take
                    # the next one from the handler and read it, so that the
                    # reading is off the per-instance round trip.
                    if mid not in assoc.cancelled_requests:
                        try:
                            item = await source.next()
                            if item is None:
                                at_end = True
                            else:
                                ahead = await _prepare_item(assoc, item)
                        except _HandlerError as exc:
                            late = exc  # reported after this sub-operation's response
                    status = await _store_response(assoc, rsp_op, out)
                finally:
                    assoc.close_operation(store_mid)
                subops.count(status, out.sop_instance_uid or None)
                if late is not None:
                    raise late
            remaining = subops.remaining(source.total)
            if remaining != 0 and mid not in assoc.cancelled_requests:
                # With the next instance already prepared, the pending
                # response (optional, PS3.4 C.4.3.1.4) leaves in the same
                # write as that sub-operation's C-STORE-RQ.
                if ahead is not None:
                    assoc._send_with_next(ctx_id, subops.pending(msg.command, remaining))
                else:
                    await assoc.send(ctx_id, subops.pending(msg.command, remaining))
    except _HandlerError as exc:
        cause = exc.__cause__ or exc
        log.error("C-GET handler failed", exc_info=cause)
        final_status = UNABLE
        comment = f"handler error: {type(cause).__name__}"
    finally:
        if ahead is not None:
            ahead.close()  # prepared, never sent (cancel or failure)
        if source is not None:
            await source.close()

    if final_status == SUCCESS:
        final_status = subops.final_status(cancelled)
    total = source.total if cancelled and source is not None else None
    await subops.send_final(assoc, msg, final_status, remaining=subops.remaining(total), comment=comment)


async def _prepare_item(assoc: Association, item: object) -> _Outgoing:
    try:
        return await _prepare(assoc, item)
    except TypeError as exc:
        raise _HandlerError(exc) from exc


async def _send_store(assoc: Association, out: _Outgoing, priority: int) -> tuple[_Operation, int]:
    """Send one C-STORE sub-operation; returns the operation its response comes to.

    The caller must :meth:`~Association.close_operation` the message ID.
    """
    assert out.context is not None and (out.fragments is not None or out.file is not None)
    store_mid = assoc.next_message_id()
    cmd = Command(
        C_STORE_RQ,
        message_id=store_mid,
        affected_sop_class_uid=out.sop_class_uid,
        affected_sop_instance_uid=out.sop_instance_uid,
        priority=priority if priority in (0, 1, 2) else PRIORITY_MEDIUM,
    )
    op = assoc.open_operation(out.context.context_id, store_mid)
    try:
        if out.file is not None:
            await assoc.send_file(out.context.context_id, cmd, *out.file)
        else:
            await assoc.send(out.context.context_id, cmd, out.fragments)
    except BaseException:
        assoc.close_operation(store_mid)
        raise
    finally:
        out.close()
    return op, store_mid


async def _store_response(assoc: Association, op: _Operation, out: _Outgoing) -> int:
    """Wait for the C-STORE-RSP of a sub-operation and return its status."""
    try:
        rsp = await assoc.next_response(op)
    except DIMSETimeout:
        log.warning("C-GET: no C-STORE-RSP for %s; aborting the association", out.sop_instance_uid)
        assoc.abort()
        raise AssociationAborted("no C-STORE-RSP within the DIMSE timeout") from None
    status = rsp.command.status
    return status if status is not None else UNABLE


def serve_get(
    server: Server,
    handler: GetHandler,
    models: Iterable[str] = (PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet),
    storage_classes: Iterable[str] = STORAGE_SOP_CLASSES,
    *,
    transfer_syntaxes: Sequence[str] | None = None,
    storage_transfer_syntaxes: Sequence[str] = _DEFAULT_STORAGE_TS,
    strict: bool = True,
) -> GetService:
    """Serve C-GET for ``models`` (names or UIDs) on ``server`` with ``handler``.

    Accepts a context for each model and, for each storage class, a context
    on which the requestor may take the SCP role (existing storage contexts
    are kept as they are).  ``strict`` requires the unique keys of every
    level above the retrieve level (single-valued), like DCMTK; otherwise
    only the retrieve level's key is required.  Returns the installed
    :class:`GetService` (shared by all models of the server).
    """
    from ..aio.server import DEFAULT_TRANSFER_SYNTAXES

    existing = server.handlers.get(C_GET_RQ)
    service = existing if isinstance(existing, GetService) else GetService(strict=strict)
    service.strict = strict
    for model in models:
        uid = _model_uid(model)
        service.handlers[uid] = handler
        server.add_context(uid, transfer_syntaxes or DEFAULT_TRANSFER_SYNTAXES)
    classes = list(storage_classes)
    for uid in classes:
        if uid not in server.contexts:
            server.add_context(uid, storage_transfer_syntaxes)
    server.policy.scu_role_classes = set(server.policy.scu_role_classes) | set(classes)
    server.on(C_GET_RQ, service)
    return service

