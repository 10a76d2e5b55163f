"""Query/Retrieve C-MOVE (PS3.4 C.4.2): SCU and SCP.

A C-MOVE asks the Q/R SCP to send instances to a *third* application entity,
the move destination, named by its AE title.  The SCP resolves the title to
an address from its own configuration, opens a **separate association** to
it and performs one C-STORE sub-operation per instance there, each carrying
Move Originator AE Title and Move Originator Message ID.  On the C-MOVE
association it sends a pending C-MOVE-RSP (FF00, four counters) after each
sub-operation and finally 0000 / B000 / A702 / FE00 (facts sheet 4.6; MOVE
adds A801 "move destination unknown").

SCU
---
``assoc.move(identifier, "DEST", model="study")`` returns a
:class:`MoveOperation`, an async iterator yielding :class:`MoveProgress` for
every pending response and finally one :class:`MoveResult`::

    async with assoc.move(ds, "DEST", "study") as op:
        async for item in op:
            ...
    result = op.result

``await op.wait()`` runs it to the end and returns the result.  Leaving the
loop early sends C-CANCEL on the C-MOVE context and consumes responses up to
the final one (FE00), which :attr:`MoveOperation.result` then holds
(``cancelled=True``).

SCP
---
:func:`serve_move` registers ``handler(req: MoveRequest)``: a coroutine
returning, or an (async) generator yielding, the matching instances --
:class:`MoveInstance` (SOP class and transfer syntax known up front, no file
access needed), Part 10 paths, pydicom Datasets or
:class:`~aiodicom.dataset.EncodedDataset`.  The library collects them first,
because the storage contexts to propose to the destination depend on their
SOP classes and transfer syntaxes (paths are opened once to read their File
Meta; hand out :class:`MoveInstance` to avoid that).  Then:

* unknown destination AE title -> **A801** with an ErrorComment, no
  sub-operations, the handler is not called;
* missing/invalid QueryRetrieveLevel or unique keys -> **A900**;
* no match -> **0000** with zero counters and no association to the
  destination;
* the destination cannot be reached or rejects the association -> every
  sub-operation failed: **A702** (the choice we made: PS3.4 reserves A801 for
  an *unknown* destination) with FailedSOPInstanceUIDList listing every
  instance and an ErrorComment saying why;
* a C-STORE that fails, or an instance the destination has no context for,
  counts as a failed sub-operation; the final status is 0000 when all
  succeeded, B000 when some failed or warned, A702 when all failed;
* C-CANCEL is honoured between sub-operations: **FE00** with the counters,
  Remaining (sub-operations never started) and the failed UID list.

Each instance is sent with :meth:`Association.store` and so as stored when
the destination accepted its transfer syntax (compressed data is never
transcoded; a native instance may be re-encoded to another native syntax).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import (
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Union, cast

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

from ..aio.errors import (
    AssociationAborted,
    AssociationRejectedError,
    DIMSETimeout,
    NoAcceptedContext,
)
from ..dataset import DatasetDecodeError, EncodedDataset, encode_identifier
from ..dimse.commands import C_MOVE_RQ, PRIORITY_MEDIUM, Command, response_to
from ..dimse.fragments import Message
from ..part10 import read_part10_info
from ..uids import (
    NATIVE_TRANSFER_SYNTAXES,
    CompositeInstanceRootRetrieveMove,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    PatientRootQueryRetrieveInformationModelMove,
    PatientStudyOnlyQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
)
from ._retrieve import (
    NO_SOP_UIDS,
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
from .store import _prepare_file, _PreparedFile, _store_prepared_status

if TYPE_CHECKING:
    from ..aio.association import Association
    from ..aio.server import Server

__all__ = [
    "MOVE_MODELS",
    "MoveHandler",
    "MoveInstance",
    "MoveOperation",
    "MoveProgress",
    "MoveRequest",
    "MoveResult",
    "PeerResolver",
    "move",
    "serve_move",
]

log = logging.getLogger("aiodicom.move")

#: Short names accepted for ``model``.
MOVE_MODELS: Mapping[str, str] = {
    "patient": PatientRootQueryRetrieveInformationModelMove,
    "study": StudyRootQueryRetrieveInformationModelMove,
    "psonly": PatientStudyOnlyQueryRetrieveInformationModelMove,
    "composite": CompositeInstanceRootRetrieveMove,
}

_DESTINATION_UNKNOWN = 0xA801
_NATIVE = frozenset(NATIVE_TRANSFER_SYNTAXES)
_MAX_CONTEXTS = 128


def _model_uid(model: str) -> str:
    return model_uid(model, MOVE_MODELS, "C-MOVE")


# ============================================================================
# SCU
# ============================================================================


@dataclass
class MoveProgress(RetrieveProgress):
    """A pending C-MOVE-RSP: the SCP's sub-operation counters so far."""


@dataclass
class MoveResult(RetrieveResult):
    """The final C-MOVE-RSP."""

    #: The decoded response identifier, if the SCP sent one.
    identifier: Dataset | None = None
    #: True when we cancelled the operation (early exit).
    cancelled: bool = False


#: What a :class:`MoveOperation` yields.
MoveItem = Union[MoveProgress, MoveResult]


class MoveOperation(RetrieveOperation[MoveProgress, MoveResult]):
    """One C-MOVE as an async iterator of :class:`MoveProgress` then one :class:`MoveResult`.

    Also an async context manager: leaving the block before the final
    response sends C-CANCEL and drains the operation.
    """

    service = "C-MOVE"
    command_field = C_MOVE_RQ
    _log = log
    _progress_type = MoveProgress
    _result_type = MoveResult

    def __init__(
        self,
        assoc: Association,
        identifier: Dataset | Mapping[str, Any],
        destination_ae: str,
        model: str = "patient",
        *,
        priority: int = PRIORITY_MEDIUM,
        timeout: float | None = -1.0,
    ) -> None:
        from ..ul.pdu import encode_ae_title

        encode_ae_title(destination_ae)  # validate early
        self.destination_ae = destination_ae.strip()
        super().__init__(assoc, identifier, _model_uid(model), priority, timeout)
        self._cancelling = False

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.aclose()

    async def _start(self) -> None:
        ctx = self._accepted_context()
        payload = encode_identifier(self.identifier, ctx.transfer_syntax)
        await self._send_request(ctx, payload, move_destination=self.destination_ae)

    async def __anext__(self) -> MoveItem:
        if self._finished:
            raise StopAsyncIteration
        if not self._started:
            await self._start()
        assert self._op is not None
        try:
            msg = await self.assoc.next_response(self._op, self.timeout)
        except DIMSETimeout:
            self._abort_on_timeout("response")
            raise
        except BaseException:
            # Cancelled (task.cancel(), asyncio.timeout) while the association
            # lives: stay unfinished so aclose() / __aexit__ / __del__ still
            # send C-CANCEL and drain (PS3.4 C.4.3.3); finish only if the
            # association is gone.
            if self.result is None and not self.assoc.is_established:
                self._finish()
            raise
        return self._on_response(msg)

    def _result_details(self, cmd: Command, identifier: Dataset | None) -> dict[str, Any]:
        return {"identifier": identifier, "cancelled": self._cancelling}

    async def wait(self) -> MoveResult:
        """Run the C-MOVE to its end (ignoring progress); return the result."""
        async for _item in self:
            pass
        if self.result is None:  # pragma: no cover - the iterator always ends with a result
            raise AssociationAborted("no final C-MOVE response")
        return self.result

    async def aclose(self) -> None:
        """Stop early: C-CANCEL, then consume responses up to the final one."""
        if not self._started or self._finished or self._cancelling:
            self._finish()
            return
        self._cancelling = True
        assert self.context_id is not None and self.message_id is not None and self._op is not None
        try:
            await self.assoc.send_cancel(self.context_id, self.message_id)
            while not self._finished:
                self._on_response(await self.assoc.next_response(self._op, self.timeout))
        except (AssociationAborted, ConnectionError):
            pass
        except DIMSETimeout:
            log.warning("C-MOVE: no final response after C-CANCEL within %s s, aborting", self.timeout)
            self.assoc.abort()
        finally:
            self._finish()

    def __del__(self) -> None:
        # A bare ``async for ... break``: finish in a task, like asyncio does
        # for abandoned async generators.
        if not getattr(self, "_started", False) or self._finished or self._cancelling:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._finish()
            return
        keep_until_done(loop.create_task(self.aclose()))


def move(
    assoc: Association,
    identifier: Dataset | Mapping[str, Any],
    destination_ae: str,
    model: str = "patient",
    *,
    priority: int = PRIORITY_MEDIUM,
    timeout: float | None = -1.0,
) -> MoveOperation:
    """Start a C-MOVE of ``identifier`` to ``destination_ae`` (see :class:`MoveOperation`).

    ``model`` is ``"patient"``, ``"study"``, ``"psonly"``, ``"composite"`` or a
    MOVE SOP class UID; the association must have accepted its context.
    """
    return MoveOperation(assoc, identifier, destination_ae, model, priority=priority, timeout=timeout)


# ============================================================================
# SCP
# ============================================================================


class MoveInstance(NamedTuple):
    """One instance to move, with what the library needs to know up front."""

    sop_class_uid: str
    sop_instance_uid: str
    #: Transfer syntax of ``source`` (``None`` for a Dataset without File Meta: native).
    transfer_syntax: str | None
    #: A Part 10 file path or a pydicom Dataset.
    source: str | os.PathLike[str] | Dataset


#: ``resolver(ae_title)`` -> (host, port) or None (unknown); may be async.
PeerResolver = Callable[[str], tuple[str, int] | None | Awaitable[tuple[str, int] | None]]
#: ``handler(req)``: returns or yields the instances to move.
MoveHandler = Callable[["MoveRequest"], Any]


@dataclass
class MoveRequest(RetrieveRequest):
    """A validated C-MOVE request, as a handler sees it."""

    #: The Move Destination AE title and its resolved address.
    destination_ae: str
    destination_address: tuple[str, int]


async def _collect(result: Any) -> list[Any]:
    if inspect.isawaitable(result):
        result = await result
    if result is None:
        return []
    if isinstance(result, (Dataset, str, os.PathLike, EncodedDataset, MoveInstance)):
        return [result]
    items: list[Any] = []
    if isinstance(result, AsyncIterable):
        async for item in result:
            items.append(item)
    else:
        items.extend(cast("Iterable[Any]", result))
    # A leading int (total, as C-GET handlers may yield) carries no information here.
    return [i for i in items if not (isinstance(i, int) and not isinstance(i, bool))]


def _describe_path(path: str | os.PathLike[str]) -> MoveInstance:
    info = read_part10_info(path)
    return MoveInstance(info.sop_class_uid, info.sop_instance_uid, info.transfer_syntax, path)


async def _normalize(item: Any) -> MoveInstance | str:
    """A :class:`MoveInstance`, or an error text for an unusable item."""
    if isinstance(item, MoveInstance):
        return item
    if isinstance(item, (str, os.PathLike)):
        try:
            return await asyncio.to_thread(_describe_path, item)
        except (OSError, ValueError) as exc:
            return f"cannot read {os.fspath(item)!r}: {exc}"
    if isinstance(item, EncodedDataset):
        try:
            ds = item.decode()
        except DatasetDecodeError as exc:
            return f"cannot decode a data set: {exc}"
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = UID(item.transfer_syntax)
        ds.file_meta = meta
        item = ds
    if isinstance(item, Dataset):
        uids = dataset_uids(item)
        return NO_SOP_UIDS if uids is None else MoveInstance(*uids, item)
    # Duck typing: anything with the MoveInstance fields and a path.
    try:
        return MoveInstance(
            str(item.sop_class_uid), str(item.sop_instance_uid), item.transfer_syntax, item.path
        )
    except AttributeError:
        raise TypeError(f"a C-MOVE handler produced {type(item).__name__}, not an instance") from None


def storage_contexts_for(instances: Iterable[MoveInstance]) -> list[tuple[str, list[str]]]:
    """Presentation contexts to propose to a destination for ``instances``.

    Per SOP class one context with the native syntaxes (the instances' own
    native syntaxes first, then Explicit and Implicit VR Little Endian) and one
    context per compressed transfer syntax seen, so compressed data is sent
    as stored.  At most 128 (native contexts first); instances left without
    a context fail as sub-operations.
    """
    native: dict[str, list[str]] = {}
    compressed: dict[tuple[str, str], None] = {}
    for inst in instances:
        ts_list = native.setdefault(inst.sop_class_uid, [])
        ts = inst.transfer_syntax
        if ts is not None and ts not in _NATIVE:
            compressed[(inst.sop_class_uid, ts)] = None
        elif ts is not None and ts not in ts_list:
            ts_list.insert(0, ts)
    out: list[tuple[str, list[str]]] = []
    for sop_class, ts_list in native.items():
        for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if ts not in ts_list:
                ts_list.append(ts)
        out.append((sop_class, ts_list))
    out.extend((sop_class, [ts]) for sop_class, ts in compressed)
    return out[:_MAX_CONTEXTS]


class MoveService:
    """The C-MOVE-RQ handler :func:`serve_move` installs on a server."""

    def __init__(
        self,
        peers: Mapping[str, tuple[str, int]] | PeerResolver,
        *,
        strict: bool = True,
        calling_ae: str | None = None,
        connect_timeout: float = 10.0,
        dimse_timeout: float | None = 60.0,
    ) -> None:
        self.handlers: dict[str, MoveHandler] = {}
        self.peers = peers
        self.strict = strict
        self.calling_ae = calling_ae
        self.connect_timeout = connect_timeout
        self.dimse_timeout = dimse_timeout

    async def resolve(self, ae_title: str) -> tuple[str, int] | None:
        """The (host, port) of ``ae_title``, or None when unknown."""
        peers = self.peers
        if isinstance(peers, Mapping):
            found = peers.get(ae_title)
            if found is None:
                found = next((v for k, v in peers.items() if k.strip() == ae_title), None)
            return (str(found[0]), int(found[1])) if found is not None else None
        answer = peers(ae_title)
        if inspect.isawaitable(answer):
            answer = await answer
        return (str(answer[0]), int(answer[1])) if answer is not None else None

    async def __call__(self, assoc: Association, msg: Message) -> None:
        accepted = await accept_request(assoc, msg, self.handlers, self.strict, "C-MOVE")
        if accepted is None:
            return
        handler, identifier, sop_class, level, keys = accepted
        cmd = msg.command
        destination = (cmd.move_destination or "").strip()
        address = await self.resolve(destination) if destination else None
        if address is None:
            log.info("C-MOVE from %s: unknown move destination %r", assoc.calling_ae, destination)
            rsp = response_to(cmd, _DESTINATION_UNKNOWN)
            rsp.error_comment = f"move destination {destination!r} unknown"[:64]
            await assoc.send(msg.context_id, rsp)
            return
        req = MoveRequest(assoc, msg, identifier, sop_class, level, keys, destination, address)
        await self._perform(req, handler)

    async def _perform(self, req: MoveRequest, handler: MoveHandler) -> None:
        assoc, msg = req.assoc, req.message
        subops = SubOperations()
        comment: str | None = None
        cancelled = False
        instances: list[MoveInstance] = []
        try:
            for item in await _collect(handler(req)):
                norm = await _normalize(item)
                if isinstance(norm, str):
                    log.warning("C-MOVE: %s", norm)
                    subops.fail(None)
                else:
                    instances.append(norm)
        except Exception as exc:
            status = getattr(exc, "status", None)
            if isinstance(status, int):  # MatchingError, ServiceError
                final = status
                comment = getattr(exc, "comment", None) or str(exc)
            else:
                log.error("C-MOVE handler failed", exc_info=exc)
                final = UNABLE
                comment = f"handler error: {type(exc).__name__}"
            rsp = response_to(msg.command, final)
            rsp.error_comment = (comment or "")[:64] or None
            await assoc.send(msg.context_id, rsp)
            return
        total = len(instances) + subops.failed
        index = 0
        if instances:
            dest: Association | None = None
            try:
                dest = await self._connect(req, instances)
            except Exception as exc:  # noqa: BLE001 - a handler may raise anything
                reason = _failure_text(exc)
                log.warning("C-MOVE to %s at %s:%d: %s", req.destination_ae, *req.destination_address, reason)
                comment = f"cannot associate with {req.destination_ae}: {reason}"
                subops.fail_all([i.sop_instance_uid for i in instances])
                index = len(instances)
            # Read-ahead, as the C-GET SCP does: while one sub-operation is
            # sent and answered, the next file is opened and inspected from
            # the page cache, or (cold, up to 4 MiB) read in a worker thread.
            ahead = _prefetch(instances, index)
            try:
                while index < len(instances):
                    if req.is_cancelled:
                        cancelled = True
                        break
                    inst = instances[index]
                    index += 1
                    assert dest is not None
                    current, ahead = ahead, None
                    if index < len(instances) and not req.is_cancelled:
                        ahead = _prefetch(instances, index)
                    subops.count(await self._store_one(dest, req, inst, current), inst.sop_instance_uid)
                    remaining = subops.remaining(total)
                    if not dest.is_established and remaining:
                        # The destination went away: the rest cannot be sent.
                        subops.fail_all([i.sop_instance_uid for i in instances[index:]])
                        index = len(instances)
                        comment = f"association with {req.destination_ae} lost"
                        remaining = 0
                    if remaining and not req.is_cancelled:
                        await assoc.send(msg.context_id, subops.pending(msg.command, remaining))
            finally:
                _discard(ahead)
                if dest is not None:
                    await _close_quietly(dest)
        final = subops.final_status(cancelled)
        log.info(
            "C-MOVE from %s to %s: status 0x%04X, completed %d, failed %d, warning %d",
            req.calling_ae, req.destination_ae, final, subops.completed, subops.failed, subops.warning,
        )
        await subops.send_final(
            assoc, msg, final, remaining=subops.remaining(total) if cancelled else None, comment=comment
        )

    async def _connect(self, req: MoveRequest, instances: Sequence[MoveInstance]) -> Association:
        from ..aio.client import associate

        server = req.assoc.server
        calling = self.calling_ae or (server.ae_title if server is not None else None) or req.assoc.called_ae
        host, port = req.destination_address
        return await associate(
            host,
            port,
            called_ae=req.destination_ae,
            calling_ae=calling.strip() or "AIODICOM",
            contexts=storage_contexts_for(instances),
            connect_timeout=self.connect_timeout,
            acse_timeout=self.connect_timeout,
            dimse_timeout=self.dimse_timeout,
        )

    async def _store_one(
        self, dest: Association, req: MoveRequest, inst: MoveInstance,
        prepared: asyncio.Task[_PreparedFile] | None = None,
    ) -> int:
        if not dest.is_established:
            _discard(prepared)
            return UNABLE
        originator = (req.calling_ae, req.message_id)
        try:
            if prepared is not None:
                try:
                    ready = await prepared
                except BaseException:
                    _discard(prepared)  # e.g. cancelled while it ran: close what it opens
                    raise
                return int(await _store_prepared_status(dest, ready, req.priority, originator))
            return int(await dest.store(inst.source, priority=req.priority, move_originator=originator))
        except NoAcceptedContext as exc:
            log.warning("C-MOVE sub-operation for %s failed: %s", inst.sop_instance_uid, exc)
        except DIMSETimeout:
            log.warning("C-MOVE: no C-STORE-RSP for %s; aborting the destination association",
                        inst.sop_instance_uid)
            dest.abort()
        except (AssociationAborted, ConnectionError) as exc:
            log.warning("C-MOVE: destination association lost: %s", exc)
        except (OSError, ValueError) as exc:
            log.warning("C-MOVE sub-operation for %s failed: %s", inst.sop_instance_uid, exc)
        return UNABLE


def _prefetch(instances: Sequence[MoveInstance], index: int) -> asyncio.Task[_PreparedFile] | None:
    """Start inspecting the file of ``instances[index]`` (None for a data set)."""
    source = instances[index].source if index < len(instances) else None
    if not isinstance(source, (str, os.PathLike)):
        return None
    return asyncio.ensure_future(_prepare_file(source))


def _discard(task: asyncio.Task[_PreparedFile] | None) -> None:
    """Drop a read-ahead that will not be sent, closing what it opened."""
    if task is None:
        return
    if not task.done():
        task.cancel()
        # It may still finish with an open file (cancelled too late): close it then.
        task.add_done_callback(_close_result)
    else:
        _close_result(task)


def _close_result(task: asyncio.Task[_PreparedFile]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close()


def _failure_text(exc: BaseException) -> str:
    if isinstance(exc, AssociationRejectedError):
        return f"association rejected ({exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}"


async def _close_quietly(assoc: Association) -> None:
    try:
        await assoc.release()
    except Exception:  # noqa: BLE001  # pragma: no cover - release failures only matter to the peer
        assoc.abort()


def serve_move(
    server: Server,
    handler: MoveHandler,
    peers: Mapping[str, tuple[str, int]] | PeerResolver,
    models: Iterable[str] = (PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove),
    *,
    transfer_syntaxes: Sequence[str] | None = None,
    strict: bool = True,
    calling_ae: str | None = None,
    connect_timeout: float = 10.0,
    dimse_timeout: float | None = -1.0,
) -> MoveService:
    """Serve C-MOVE for ``models`` (names or UIDs) on ``server`` with ``handler``.

    ``peers`` maps move destination AE titles to ``(host, port)``, or is a
    resolver ``(ae_title) -> (host, port) | None`` (sync or async).  The
    association to the destination calls it as ``calling_ae`` (default: the
    server's AE title).  ``strict`` requires single-valued unique keys for
    every level above the retrieve level.  ``dimse_timeout`` applies to the
    destination's C-STORE responses (default: the server's).  Returns the
    installed :class:`MoveService` (shared by all models of the server).
    """
    from ..aio.server import DEFAULT_TRANSFER_SYNTAXES

    existing = server.handlers.get(C_MOVE_RQ)
    timeout = server.dimse_timeout if dimse_timeout == -1.0 else dimse_timeout
    if isinstance(existing, MoveService):
        service = existing
        service.peers, service.strict = peers, strict
    else:
        service = MoveService(
            peers, strict=strict, calling_ae=calling_ae, connect_timeout=connect_timeout, dimse_timeout=timeout
        )
    for model in models:
        uid = _model_uid(model)
        service.handlers[uid] = handler
        server.add_context(uid, transfer_syntaxes or DEFAULT_TRANSFER_SYNTAXES)
    server.on(C_MOVE_RQ, service)
    return service
