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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Union, cast

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

from ..aio.errors import (
    AssociationAborted,
    AssociationRejectedError,
    DIMSETimeout,
    NoAcceptedContext,
)
from ..dataset import (
    DatasetDecodeError,
    EncodedDataset,
    decode_identifier,
    encode_identifier,
)
from ..dimse.commands import C_MOVE_RQ, PRIORITY_MEDIUM, Command, response_to
from ..dimse.fragments import Message
from ..dimse.status import Category, Status, category
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

if TYPE_CHECKING:
    from ..aio.association import Association, _Operation
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

_SUCCESS = 0x0000
_PENDING = 0xFF00
_CANCEL = 0xFE00
_SUBOPS_FAILED = 0xA702
_DESTINATION_UNKNOWN = 0xA801
_IDENTIFIER_MISMATCH = 0xA900
_SUBOPS_WARNING = 0xB000
_UNABLE = 0xC000
_SOP_CLASS_NOT_SUPPORTED = 0x0122

_TAG_QR_LEVEL = 0x00080052
_TAG_FAILED_UIDS = 0x00080058

_LEVEL_KEYS: dict[str, tuple[int, str]] = {
    "PATIENT": (0x00100020, "PatientID"),
    "STUDY": (0x0020000D, "StudyInstanceUID"),
    "SERIES": (0x0020000E, "SeriesInstanceUID"),
    "IMAGE": (0x00080018, "SOPInstanceUID"),
}
_ALL_LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_MODEL_LEVELS: dict[str, tuple[str, ...]] = {
    PatientRootQueryRetrieveInformationModelMove: _ALL_LEVELS,
    StudyRootQueryRetrieveInformationModelMove: ("STUDY", "SERIES", "IMAGE"),
    PatientStudyOnlyQueryRetrieveInformationModelMove: ("PATIENT", "STUDY"),
    CompositeInstanceRootRetrieveMove: ("STUDY", "SERIES", "IMAGE"),
}
_NATIVE = frozenset(NATIVE_TRANSFER_SYNTAXES)
_MAX_CONTEXTS = 128


def _model_uid(model: str) -> str:
    uid = MOVE_MODELS.get(model.lower(), model)
    if not uid or not all(c.isdigit() or c == "." for c in uid):
        raise ValueError(f"unknown C-MOVE information model {model!r}")
    return uid


def _identifier_dataset(identifier: Dataset | Mapping[str, Any]) -> Dataset:
    if isinstance(identifier, Dataset):
        return identifier
    ds = Dataset()
    for key, value in identifier.items():
        setattr(ds, key, value)
    return ds


def _values(ds: Dataset, tag: int) -> list[str]:
    if tag not in ds:
        return []
    value = ds[tag].value
    if value is None:
        return []
    items: list[object] = [value] if isinstance(value, (str, bytes)) else list(value)
    out = []
    for item in items:
        text = item.decode("ascii", "replace") if isinstance(item, bytes) else str(item)
        text = text.strip("\x00 ")
        if text:
            out.append(text)
    return out


# ============================================================================
# SCU
# ============================================================================


@dataclass
class MoveProgress:
    """A pending C-MOVE-RSP: the SCP's sub-operation counters so far."""

    status: Status
    remaining: int | None
    completed: int | None
    failed: int | None
    warning: int | None

    kind = "progress"


@dataclass
class MoveResult:
    """The final C-MOVE-RSP."""

    status: Status
    remaining: int | None = None
    completed: int | None = None
    failed: int | None = None
    warning: int | None = None
    #: FailedSOPInstanceUIDList (0008,0058) of the response identifier.
    failed_sop_instance_uids: list[str] = field(default_factory=list)
    error_comment: str | None = None
    #: The decoded response identifier, if the SCP sent one.
    identifier: Dataset | None = None
    #: True when we cancelled the operation (early exit).
    cancelled: bool = False

    kind = "result"

    @property
    def category(self) -> Category:
        """The status class of :attr:`status`."""
        return category(self.status)

    @property
    def ok(self) -> bool:
        """True when every sub-operation succeeded (status 0x0000)."""
        return self.status == _SUCCESS


#: What a :class:`MoveOperation` yields.
MoveItem = Union[MoveProgress, MoveResult]


class MoveOperation:
    """One C-MOVE as an async iterator of :class:`MoveProgress` then one :class:`MoveResult`.

    Also an async context manager: leaving the block before the final
    response sends C-CANCEL and drains the operation.
    """

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
        self.assoc = assoc
        self.identifier = _identifier_dataset(identifier)
        self.destination_ae = destination_ae.strip()
        self.sop_class_uid = _model_uid(model)
        self.priority = priority
        #: Seconds to wait for each response; sub-operations can be slow,
        #: so this applies per response, not to the whole operation.
        self.timeout = assoc.dimse_timeout if timeout == -1.0 else timeout
        self.result: MoveResult | None = None
        self.message_id: int | None = None
        self.context_id: int | None = None
        self._op: _Operation | None = None
        self._started = False
        self._finished = False
        self._cancelling = False

    def __aiter__(self) -> MoveOperation:
        return self

    async def __aenter__(self) -> MoveOperation:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.aclose()

    async def _start(self) -> None:
        assoc = self.assoc
        ctx = assoc.find_context(self.sop_class_uid)
        if ctx is None:
            raise NoAcceptedContext(f"C-MOVE SOP class {self.sop_class_uid} was not accepted")
        payload = encode_identifier(self.identifier, ctx.transfer_syntax)
        mid = assoc.next_message_id()
        cmd = Command(
            C_MOVE_RQ,
            message_id=mid,
            affected_sop_class_uid=self.sop_class_uid,
            priority=self.priority,
            move_destination=self.destination_ae,
        )
        self.message_id, self.context_id = mid, ctx.context_id
        self._op = assoc.open_operation(ctx.context_id, mid)
        self._started = True
        try:
            await assoc.send(ctx.context_id, cmd, [payload])
        except BaseException:
            self._finish()
            raise

    async def __anext__(self) -> MoveItem:
        if self._finished:
            raise StopAsyncIteration
        if not self._started:
            await self._start()
        assert self._op is not None
        try:
            msg = await self.assoc.next_response(self._op, self.timeout)
        except DIMSETimeout:
            log.warning("C-MOVE: no response within %s s, aborting", self.timeout)
            self._finish()
            self.assoc.abort()
            raise
        except BaseException:
            self._finish()
            raise
        return self._on_response(msg)

    def _on_response(self, msg: Message) -> MoveItem:
        cmd = msg.command
        status = Status(cmd.status if cmd.status is not None else _UNABLE)
        if status.category == Category.PENDING:
            return MoveProgress(status, cmd.remaining, cmd.completed, cmd.failed, cmd.warning)
        identifier: Dataset | None = None
        failed_uids: list[str] = []
        if msg.dataset is not None and msg.dataset_length > 0 and self.context_id is not None:
            ctx = self.assoc.contexts.get(self.context_id)
            try:
                identifier = decode_identifier(msg.dataset, ctx.transfer_syntax if ctx else ExplicitVRLittleEndian)
                failed_uids = _values(identifier, _TAG_FAILED_UIDS)
            except (DatasetDecodeError, ValueError) as exc:
                log.warning("C-MOVE: cannot decode the final response identifier: %s", exc)
        self.result = MoveResult(
            status=status,
            remaining=cmd.remaining,
            completed=cmd.completed,
            failed=cmd.failed,
            warning=cmd.warning,
            failed_sop_instance_uids=failed_uids,
            error_comment=cmd.error_comment,
            identifier=identifier,
            cancelled=self._cancelling,
        )
        self._finish()
        return self.result

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self.message_id is not None:
            self.assoc.close_operation(self.message_id)

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
        task = loop.create_task(self.aclose())
        _CLEANUPS.add(task)
        task.add_done_callback(_CLEANUPS.discard)


_CLEANUPS: set[asyncio.Task[None]] = set()


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
class MoveRequest:
    """A validated C-MOVE request, as a handler sees it."""

    assoc: Association
    message: Message
    identifier: Dataset
    #: The MOVE SOP class (information model) UID.
    sop_class_uid: str
    #: QueryRetrieveLevel, upper case.
    level: str
    #: Unique key values by level (``{"PATIENT": [...], "STUDY": [...]}``).
    keys: dict[str, list[str]]
    #: The Move Destination AE title and its resolved address.
    destination_ae: str
    destination_address: tuple[str, int]

    @property
    def message_id(self) -> int:
        """MessageID of the C-MOVE-RQ."""
        return self.message.command.message_id or 0

    @property
    def priority(self) -> int:
        """Priority of the C-MOVE-RQ."""
        return self.message.command.priority or PRIORITY_MEDIUM

    @property
    def calling_ae(self) -> str:
        """The requestor's AE title (the move originator)."""
        return self.assoc.calling_ae.strip()

    @property
    def is_cancelled(self) -> bool:
        """Whether the requestor sent C-CANCEL for this request."""
        return self.message_id in self.assoc.cancelled_requests


class _IdentifierError(Exception):
    def __init__(self, comment: str, tag: int | None = None) -> None:
        super().__init__(comment)
        self.tag = tag


def _check_identifier(ds: Dataset, sop_class_uid: str, strict: bool) -> tuple[str, dict[str, list[str]]]:
    """(level, unique key values by level); _IdentifierError -> A900."""
    try:
        levels = _values(ds, _TAG_QR_LEVEL)
    except Exception:  # noqa: BLE001 - any failure to read the identifier is A900
        raise _IdentifierError("QueryRetrieveLevel (0008,0052) cannot be read", _TAG_QR_LEVEL) from None
    if not levels:
        raise _IdentifierError("QueryRetrieveLevel (0008,0052) is missing", _TAG_QR_LEVEL)
    level = levels[0].upper()
    model_levels = _MODEL_LEVELS.get(sop_class_uid, _ALL_LEVELS)
    if len(levels) != 1 or level not in model_levels:
        raise _IdentifierError(f"QueryRetrieveLevel {levels[0]!r} is not valid for this model", _TAG_QR_LEVEL)
    keys: dict[str, list[str]] = {}
    below = model_levels.index(level)
    for i, lvl in enumerate(model_levels[: below + 1]):
        tag, keyword = _LEVEL_KEYS[lvl]
        try:
            values = _values(ds, tag)
        except Exception:  # noqa: BLE001 - idem
            raise _IdentifierError(f"{keyword} cannot be read", tag) from None
        if not values:
            if strict or i == below:
                raise _IdentifierError(f"unique key {keyword} is missing for a {level} level C-MOVE", tag)
            continue
        if len(values) > 1 and (i < below or lvl == "PATIENT") and strict:
            raise _IdentifierError(f"{keyword} must have a single value above the retrieve level", tag)
        keys[lvl] = values
    return level, keys


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
        try:
            sop_class = str(item.SOPClassUID).strip("\x00 ")
            sop_instance = str(item.SOPInstanceUID).strip("\x00 ")
        except AttributeError:
            return "data set has no SOPClassUID/SOPInstanceUID"
        meta_any: Any = getattr(item, "file_meta", None)
        ts = str(meta_any.TransferSyntaxUID) if meta_any is not None and "TransferSyntaxUID" in meta_any else None
        return MoveInstance(sop_class, sop_instance, ts, item)
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
        cmd = msg.command
        ctx = assoc.contexts.get(msg.context_id)
        sop_class = cmd.affected_sop_class_uid or ""
        handler = self.handlers.get(sop_class)
        if ctx is None or ctx.abstract_syntax != sop_class or handler is None:
            rsp = response_to(cmd, _SOP_CLASS_NOT_SUPPORTED)
            rsp.error_comment = "C-MOVE SOP class not supported on this presentation context"
            await assoc.send(msg.context_id, rsp)
            return
        try:
            identifier = decode_identifier(msg.dataset or [], ctx.transfer_syntax)
            level, keys = _check_identifier(identifier, sop_class, self.strict)
        except (_IdentifierError, DatasetDecodeError) as exc:
            rsp = response_to(cmd, _IDENTIFIER_MISMATCH)
            rsp.error_comment = str(exc)[:64]
            if isinstance(exc, _IdentifierError) and exc.tag is not None:
                rsp.offending_element = [exc.tag]
            await assoc.send(msg.context_id, rsp)
            return
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
        ctx_id = msg.context_id
        completed = failed = warning = 0
        failed_uids: list[str] = []
        comment: str | None = None
        final: int | None = None
        cancelled = False
        instances: list[MoveInstance] = []
        try:
            for item in await _collect(handler(req)):
                norm = await _normalize(item)
                if isinstance(norm, str):
                    log.warning("C-MOVE: %s", norm)
                    failed += 1
                else:
                    instances.append(norm)
        except Exception as exc:
            status = getattr(exc, "status", None)
            if isinstance(status, int):  # MatchingError, ServiceError
                final = status
                comment = getattr(exc, "comment", None) or str(exc)
            else:
                log.error("C-MOVE handler failed", exc_info=exc)
                final = _UNABLE
                comment = f"handler error: {type(exc).__name__}"
            rsp = response_to(msg.command, final)
            rsp.error_comment = (comment or "")[:64] or None
            await assoc.send(ctx_id, rsp)
            return
        total = len(instances) + failed
        index = 0
        if instances:
            dest: Association | None = None
            try:
                dest = await self._connect(req, instances)
            except Exception as exc:  # noqa: BLE001 - a handler may raise anything
                reason = _failure_text(exc)
                log.warning("C-MOVE to %s at %s:%d: %s", req.destination_ae, *req.destination_address, reason)
                comment = f"cannot associate with {req.destination_ae}: {reason}"
                failed += len(instances)
                failed_uids.extend(i.sop_instance_uid for i in instances)
                index = len(instances)
            try:
                while index < len(instances):
                    if req.is_cancelled:
                        cancelled = True
                        break
                    inst = instances[index]
                    index += 1
                    assert dest is not None
                    status = await self._store_one(dest, req, inst)
                    cat = category(status)
                    if cat == Category.SUCCESS:
                        completed += 1
                    elif cat == Category.WARNING:
                        warning += 1
                    else:
                        failed += 1
                        failed_uids.append(inst.sop_instance_uid)
                    remaining = total - completed - failed - warning
                    if not dest.is_established and remaining:
                        # The destination went away: the rest cannot be sent.
                        rest = instances[index:]
                        failed += len(rest)
                        failed_uids.extend(i.sop_instance_uid for i in rest)
                        index = len(instances)
                        comment = f"association with {req.destination_ae} lost"
                        remaining = 0
                    if remaining and not req.is_cancelled:
                        pending = response_to(msg.command, _PENDING)
                        pending.remaining, pending.completed = remaining, completed
                        pending.failed, pending.warning = failed, warning
                        await assoc.send(ctx_id, pending)
            finally:
                if dest is not None:
                    await _close_quietly(dest)
        if cancelled:
            final = _CANCEL
        elif failed or warning:
            final = _SUBOPS_FAILED if completed == 0 and warning == 0 else _SUBOPS_WARNING
        else:
            final = _SUCCESS
        rsp = response_to(msg.command, final)
        rsp.completed, rsp.failed, rsp.warning = completed, failed, warning
        if cancelled:
            rsp.remaining = total - completed - failed - warning
        if comment and final != _SUCCESS:
            rsp.error_comment = comment[:64]
        payload: list[Any] | None = None
        if failed_uids and final != _SUCCESS:
            ident = Dataset()
            ident.FailedSOPInstanceUIDList = failed_uids if len(failed_uids) > 1 else failed_uids[0]
            ctx = assoc.contexts.get(ctx_id)
            payload = [encode_identifier(ident, ctx.transfer_syntax if ctx else ImplicitVRLittleEndian)]
        log.info(
            "C-MOVE from %s to %s: status 0x%04X, completed %d, failed %d, warning %d",
            req.calling_ae, req.destination_ae, final, completed, failed, warning,
        )
        await assoc.send(ctx_id, rsp, payload)

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

    async def _store_one(self, dest: Association, req: MoveRequest, inst: MoveInstance) -> int:
        if not dest.is_established:
            return _UNABLE
        try:
            return int(await dest.store(inst.source, priority=req.priority,
                                        move_originator=(req.calling_ae, req.message_id)))
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
        return _UNABLE


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
