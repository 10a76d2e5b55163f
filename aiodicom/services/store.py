"""Storage service (PS3.4 Annex B): C-STORE SCU and SCP.

SCU: :func:`store` sends a pydicom :class:`~pydicom.dataset.Dataset` or a
Part 10 file.  A file whose transfer syntax was accepted for its SOP class is
sent as stored, without decoding; large files are streamed from disk in
chunks (:meth:`~aiodicom.aio.association.Association.send_streaming`).  A
file in a native (uncompressed) syntax the peer did not accept is decoded
and re-encoded in an accepted native syntax; compressed data is never
transcoded (:class:`~aiodicom.aio.errors.NoAcceptedContext`).

SCP: :func:`serve_store` registers an ``async def handler(req:
StoreRequest) -> int`` on a :class:`~aiodicom.aio.server.Server`.  A handler
that raises is answered with a failure status (0xA700 for "no space left",
0xC001 otherwise) and an error comment; the association keeps working.
:func:`store_to_directory` is a ready-made handler writing atomic Part 10
files; with it the data set of each C-STORE-RQ is streamed straight into the
file while it arrives, so instance size does not bound memory.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import functools
import logging
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import correct_ambiguous_vr

from ..aio.errors import NoAcceptedContext
from ..dataset import (
    Buffer,
    DatasetDecodeError,
    EncodedDataset,
    transfer_syntax_encoding,
)
from ..dimse.commands import (
    C_STORE_RQ,
    C_STORE_RSP,
    PRIORITY_MEDIUM,
    Command,
    response_to,
)
from ..dimse.fragments import Message
from ..dimse.status import Status
from ..part10 import (
    Part10Info,
    Part10Writer,
    open_part10_cached,
    read_part10_dataset,
    read_part10_info,
    safe_instance_filename,
    write_part10,
)
from ..uids import (
    COMPRESSED_TRANSFER_SYNTAXES,
    NATIVE_TRANSFER_SYNTAXES,
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAX_NAMES,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from ..ul.negotiation import AcceptedContext
from ._request import RequestInfo

if TYPE_CHECKING:
    from ..aio.association import Association
    from ..aio.server import Server

__all__ = [
    "HANDLER_FAILED",
    "STORAGE_TRANSFER_SYNTAXES",
    "ServiceError",
    "StoreHandler",
    "resolve_file_uids",
    "StoreRequest",
    "StoreToDirectory",
    "serve_store",
    "store",
    "store_response",
    "store_to_directory",
]

log = logging.getLogger("aiodicom.store")

#: Status sent when a service handler raises (PS3.4: C000-CFFF "unable to process").
HANDLER_FAILED = 0xC001
#: Refused: out of resources (PS3.4 B.2.3), sent when a handler hits ENOSPC/EDQUOT.
_OUT_OF_RESOURCES = 0xA700
_INVALID_INSTANCE = 0x0117
_SOP_CLASS_NOT_SUPPORTED = 0x0122

#: Transfer syntaxes a storage SCP accepts by default: native ones first,
#: then every compressed syntax (a store-to-disk SCP keeps them as received).
STORAGE_TRANSFER_SYNTAXES: tuple[str, ...] = NATIVE_TRANSFER_SYNTAXES + COMPRESSED_TRANSFER_SYNTAXES

# Data sets of Part 10 files larger than this are streamed from disk.
_STREAM_THRESHOLD = 4 << 20
_CHUNK = 1 << 20
_UID_PREFIX = 64 << 10
_NATIVE = frozenset(NATIVE_TRANSFER_SYNTAXES)
_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_NO_SPACE = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


class ServiceError(Exception):
    """Raise from an SCP handler to answer with ``status`` and ``comment``.

    Unlike any other exception it is not logged as a handler failure.
    """

    def __init__(self, status: int, comment: str | None = None) -> None:
        super().__init__(comment or f"status 0x{status:04X}")
        self.status = Status(status)
        self.comment = comment


def _ts_name(uid: str) -> str:
    return TRANSFER_SYNTAX_NAMES.get(uid, uid)


# ============================================================== SCU


def _storage_contexts(assoc: Association, sop_class: str) -> list[AcceptedContext]:
    return [
        c
        for c in assoc.contexts.values()
        if c.abstract_syntax == sop_class and c.can_send_requests(assoc.requestor)
    ]


def _native_target(contexts: list[AcceptedContext], preferred: str | None) -> AcceptedContext | None:
    order = ([preferred] if preferred else []) + [
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
    ]
    for ts in order:
        for ctx in contexts:
            if ctx.transfer_syntax == ts:
                return ctx
    return None


def _no_context(sop_class: str, ts: str | None, contexts: list[AcceptedContext]) -> NoAcceptedContext:
    if not contexts:
        return NoAcceptedContext(f"no presentation context was accepted for SOP Class {sop_class}")
    accepted = ", ".join(sorted({_ts_name(c.transfer_syntax) for c in contexts}))
    return NoAcceptedContext(
        f"the data set is {_ts_name(ts or '?')} but the peer accepted only {accepted} for SOP Class "
        f"{sop_class}; aiodicom does not transcode compressed pixel data"
    )


def _swap(value: bytes, width: int) -> bytes:
    code = {2: "H", 4: "I", 8: "Q"}[width]
    arr = array.array(code)
    if arr.itemsize != width or len(value) % width:  # pragma: no cover - exotic platforms / bad data
        return value
    arr.frombytes(value)
    arr.byteswap()
    return arr.tobytes()


def _reendian(ds: Dataset, source_little: bool, target_implicit: bool, target_little: bool) -> Dataset:
    """A copy of *ds* whose OW/OF/OL/OD/OV values are byte-swapped.

    pydicom writes these VRs verbatim, so changing endianness needs this
    (its documented caveat for dcmwrite).  UN values cannot be swapped.
    """
    correct_ambiguous_vr(ds, source_little)
    out = Dataset()
    for elem in ds:
        value = elem.value
        if elem.VR == "SQ" and value is not None:
            new = DataElement(
                elem.tag,
                "SQ",
                [_reendian(item, source_little, target_implicit, target_little) for item in value],
            )
        elif elem.VR in _SWAP_WIDTH and isinstance(value, (bytes, bytearray)) and not elem.is_undefined_length:
            new = DataElement(elem.tag, elem.VR, _swap(bytes(value), _SWAP_WIDTH[elem.VR]))
        else:
            new = elem
        out.add(new)
    out.set_original_encoding(target_implicit, target_little, ds.original_character_set)
    return out


def _encode_for(ds: Dataset, source_little: bool, target_ts: str) -> EncodedDataset:
    target = transfer_syntax_encoding(target_ts)
    if target.little_endian != source_little:
        ds = _reendian(ds, source_little, target.implicit_vr, target.little_endian)
    return EncodedDataset.from_dataset(ds, target_ts)


def _store_command(
    assoc: Association,
    sop_class: str,
    sop_instance: str,
    priority: int,
    move_originator: tuple[str, int] | None,
) -> Command:
    cmd = Command(
        C_STORE_RQ,
        message_id=assoc.next_message_id(),
        affected_sop_class_uid=sop_class,
        affected_sop_instance_uid=sop_instance,
        priority=priority,
        has_dataset=True,
    )
    if move_originator is not None:
        cmd.move_originator_aet, cmd.move_originator_message_id = move_originator
    return cmd


async def _read_chunks(info: Part10Info, chunk_size: int = _CHUNK) -> AsyncGenerator[bytes, None]:
    """The data set bytes of a Part 10 file, read off the event loop."""
    loop = asyncio.get_running_loop()
    fp = await loop.run_in_executor(None, open, info.path, "rb")
    try:
        await loop.run_in_executor(None, fp.seek, info.dataset_offset)
        remaining = info.dataset_length
        while remaining > 0:
            chunk: bytes = await loop.run_in_executor(None, fp.read, min(chunk_size, remaining))
            if not chunk:
                raise OSError(f"{info.path}: file shrank while being sent")
            remaining -= len(chunk)
            yield chunk
    finally:
        fp.close()


async def _exchange(
    assoc: Association,
    ctx: AcceptedContext,
    cmd: Command,
    dataset: list[Buffer] | None = None,
    streamed: tuple[AsyncGenerator[bytes, None], int] | None = None,
    file: tuple[int, int, int] | None = None,
) -> Command:
    mid = cmd.message_id
    assert mid is not None
    op = assoc.open_operation(ctx.context_id, mid)
    try:
        if file is not None:
            await assoc.send_file(ctx.context_id, cmd, *file)
        elif streamed is not None:
            async with contextlib.aclosing(streamed[0]) as chunks:
                await assoc.send_streaming(ctx.context_id, cmd, chunks, streamed[1])
        else:
            await assoc.send(ctx.context_id, cmd, dataset)
        while True:
            rsp = await assoc.next_response(op)
            if rsp.command.command_field == C_STORE_RSP:
                return rsp.command
            log.warning("unexpected response 0x%04X to C-STORE-RQ ignored", rsp.command.command_field)
    finally:
        assoc.close_operation(mid)


async def store_response(
    assoc: Association,
    dataset_or_path: Dataset | str | os.PathLike[str],
    *,
    priority: int = PRIORITY_MEDIUM,
    move_originator: tuple[str, int] | None = None,
) -> Command:
    """Like :func:`store` but return the whole C-STORE-RSP command.

    Useful for the response's ErrorComment or OffendingElement.
    """
    from .find import settle

    await settle(assoc)
    if isinstance(dataset_or_path, Dataset):
        return await _store_dataset(assoc, dataset_or_path, priority, move_originator)
    return await _store_file(assoc, dataset_or_path, priority, move_originator)


async def store(
    assoc: Association,
    dataset_or_path: Dataset | str | os.PathLike[str],
    *,
    priority: int = PRIORITY_MEDIUM,
    move_originator: tuple[str, int] | None = None,
) -> Status:
    """Send one instance with C-STORE and return the response status.

    :param dataset_or_path: a pydicom Dataset (needs SOPClassUID and
        SOPInstanceUID) or the path of a Part 10 file.
    :param priority: 0 medium, 1 high, 2 low.
    :param move_originator: ``(AE title, message ID)`` of the C-MOVE this
        store is a sub-operation of.
    :raises NoAcceptedContext: no accepted context can carry the instance.
    """
    rsp = await store_response(assoc, dataset_or_path, priority=priority, move_originator=move_originator)
    return _status_of(rsp)


def _status_of(rsp: Command) -> Status:
    """The status of a C-STORE-RSP (logged when it is not success)."""
    status = Status(rsp.status if rsp.status is not None else 0xFFFF)
    if status.is_failure or status.is_warning:
        log.info("C-STORE answered %s%s", status, f": {rsp.error_comment}" if rsp.error_comment else "")
    return status


async def _store_prepared_status(
    assoc: Association, prepared: _PreparedFile, priority: int, move_originator: tuple[str, int] | None
) -> Status:
    """:func:`store` for a file already inspected with :func:`_prepare_file` (closes it)."""
    from .find import settle

    try:
        await settle(assoc)
    except BaseException:
        prepared.close()
        raise
    return _status_of(await _store_prepared(assoc, prepared, priority, move_originator))


async def _store_dataset(
    assoc: Association, ds: Dataset, priority: int, move_originator: tuple[str, int] | None
) -> Command:
    try:
        sop_class = str(ds.SOPClassUID)
        sop_instance = str(ds.SOPInstanceUID)
    except AttributeError as exc:
        raise ValueError(f"the data set lacks {exc.name or 'SOPClassUID/SOPInstanceUID'}") from None
    meta = getattr(ds, "file_meta", None)
    ts_value = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    source_ts = str(ts_value) if ts_value else None
    contexts = _storage_contexts(assoc, sop_class)
    if source_ts is not None and source_ts not in _NATIVE:
        ctx = next((c for c in contexts if c.transfer_syntax == source_ts), None)
        if ctx is None:
            raise _no_context(sop_class, source_ts, contexts)
    else:
        found = _native_target(contexts, source_ts)
        if found is None:
            raise _no_context(sop_class, source_ts or ExplicitVRLittleEndian, contexts)
        ctx = found
    if source_ts is not None:
        source_little = transfer_syntax_encoding(source_ts).little_endian
    else:
        source_little = ds.original_encoding[1] is not False
    encoded = _encode_for(ds, source_little, ctx.transfer_syntax)
    cmd = _store_command(assoc, sop_class, sop_instance, priority, move_originator)
    return await _exchange(assoc, ctx, cmd, encoded.fragments)


def resolve_file_uids(info: Part10Info, fd: int | None = None) -> None:
    """Set *info*'s SOP UIDs from the data set itself when they differ from the File Meta.

    The command must name the instance that is sent (DCMTK's storescp
    refuses a mismatch); only a 64 KiB prefix of the data set is parsed.
    ``fd``, an open descriptor of the file, is read instead of opening
    ``info.path`` again.
    """
    n = min(info.dataset_length, _UID_PREFIX)
    if fd is not None:
        head = os.pread(fd, n, info.dataset_offset)
    else:
        with open(info.path, "rb") as fp:
            fp.seek(info.dataset_offset)
            head = fp.read(n)
    try:
        sop_class, sop_instance = EncodedDataset([head], info.transfer_syntax).sop_uids()
    except DatasetDecodeError:
        return
    if (sop_class, sop_instance) != (info.sop_class_uid, info.sop_instance_uid):
        log.warning(
            "%s: File Meta names %s / %s but the data set is %s / %s; sending the data set's UIDs",
            info.path, info.sop_class_uid, info.sop_instance_uid, sop_class, sop_instance,
        )
        info.sop_class_uid, info.sop_instance_uid = sop_class, sop_instance


def _read_file_info(path: str | os.PathLike[str]) -> Part10Info:
    """File Meta plus the data set's own SOP UIDs (blocking: run in a thread)."""
    info = read_part10_info(path)
    resolve_file_uids(info)
    return info


class _PreparedFile:
    """A Part 10 file made ready for sending: its File Meta and either an
    open descriptor for ``sendfile`` (all in the page cache) or, for a file
    of up to ``_STREAM_THRESHOLD`` bytes that was not, its data set read in
    a worker thread.  Close it unless :func:`_store_prepared` took it."""

    __slots__ = ("info", "fd", "encoded")

    def __init__(self, info: Part10Info, fd: int | None, encoded: EncodedDataset | None = None) -> None:
        self.info = info
        self.fd = fd
        self.encoded = encoded

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


def _read_file_for_sending(path: str | os.PathLike[str]) -> _PreparedFile:
    """A file not in the page cache (blocking: run in a thread): File Meta, and the data set if small."""
    info = _read_file_info(path)
    if info.dataset_length > _STREAM_THRESHOLD:
        return _PreparedFile(info, None)  # streamed from the file when sent
    _, encoded = read_part10_dataset(info.path)
    return _PreparedFile(info, None, encoded)


async def _prepare_file(path: str | os.PathLike[str]) -> _PreparedFile:
    """Make ``path`` ready for :func:`_store_prepared` (File Meta, SOP UIDs, data)."""
    # A file all in the page cache is inspected on the loop (nothing there
    # waits for the disk) and sent with sendfile; any other file is read in
    # a worker thread, so a cold file never stalls the event loop.
    opened = open_part10_cached(path)
    if opened is None:
        return await asyncio.to_thread(_read_file_for_sending, path)
    info, fd = opened
    try:
        resolve_file_uids(info, fd)  # from the page cache
    except BaseException:
        os.close(fd)
        raise
    return _PreparedFile(info, fd)


async def _store_file(
    assoc: Association, path: str | os.PathLike[str], priority: int, move_originator: tuple[str, int] | None
) -> Command:
    return await _store_prepared(assoc, await _prepare_file(path), priority, move_originator)


async def _store_prepared(
    assoc: Association, prepared: _PreparedFile, priority: int, move_originator: tuple[str, int] | None
) -> Command:
    """Send a prepared file with C-STORE (closes it); the C-STORE-RSP command."""
    info, fd = prepared.info, prepared.fd
    try:
        contexts = _storage_contexts(assoc, info.sop_class_uid)
        ctx = next((c for c in contexts if c.transfer_syntax == info.transfer_syntax), None)
        cmd = _store_command(assoc, info.sop_class_uid, info.sop_instance_uid, priority, move_originator)
        if ctx is not None:
            # Send the stored bytes as they are.
            if fd is not None:
                return await _exchange(assoc, ctx, cmd, file=(fd, info.dataset_offset, info.dataset_length))
            if prepared.encoded is not None:
                return await _exchange(assoc, ctx, cmd, prepared.encoded.fragments)
            return await _exchange(assoc, ctx, cmd, streamed=(_read_chunks(info), info.dataset_length))
    finally:
        prepared.close()
    if info.transfer_syntax not in _NATIVE:
        raise _no_context(info.sop_class_uid, info.transfer_syntax, contexts)
    target = _native_target(contexts, None)
    if target is None:
        raise _no_context(info.sop_class_uid, info.transfer_syntax, contexts)
    if prepared.encoded is not None:
        source = prepared.encoded
    else:
        _, source = await asyncio.to_thread(read_part10_dataset, info.path)
    ds = source.decode()
    encoded = _encode_for(ds, source.encoding.little_endian, target.transfer_syntax)
    return await _exchange(assoc, target, cmd, encoded.fragments)


# ============================================================== SCP


#: A streamed C-STORE data set is first kept in memory -- the received PDU
#: buffers themselves, no copy -- until it grows past this many bytes.  One
#: that stays below is handed to the storage handler as fragments and written
#: in a single worker-thread hop (temporary file, write, fsync, rename), so
#: no file is created or written on the event loop for the common instance
#: sizes (a CT or MR image is well below 1 MiB); a larger one spills into the
#: Part 10 writer and streams from there, with bounded memory.
SPOOL_MEMORY_LIMIT = 1 << 20


def _spool_limit(assoc: Association) -> int:
    """How much of a data set a store sink keeps in memory on ``assoc``.

    :data:`SPOOL_MEMORY_LIMIT`, or the server's ``max_dataset_in_memory``
    where that is smaller: a server configured to keep little in memory
    streams to disk sooner.
    """
    server_limit = getattr(assoc.server, "max_dataset_in_memory", None)
    if server_limit is not None and server_limit < SPOOL_MEMORY_LIMIT:
        return max(0, int(server_limit))
    return SPOOL_MEMORY_LIMIT


class _Spool:
    """Dataset sink: streams a C-STORE data set into a :class:`Part10Writer`.

    With an ``opener`` the writer is only opened once more than ``limit``
    bytes have arrived (see :data:`SPOOL_MEMORY_LIMIT`); until then the
    fragments are kept in :attr:`held`, and a data set that ends there is
    never written by the spool at all.

    Never raises into the reassembler: an I/O error is kept in ``error``, the
    temporary file is removed and the rest of the data set is discarded.
    """

    __slots__ = ("writer", "error", "path", "held", "_held_bytes", "_opener", "_limit")

    def __init__(
        self,
        writer: Part10Writer | None,
        error: BaseException | None,
        path: Path | None,
        *,
        opener: Callable[[], Part10Writer] | None = None,
        limit: int | None = None,
    ) -> None:
        self.writer = writer
        self.error = error
        self.path = path
        #: the data set so far while it is kept in memory; None once written to a file
        self.held: list[memoryview] | None = [] if opener is not None else None
        self._held_bytes = 0
        self._opener = opener
        self._limit = SPOOL_MEMORY_LIMIT if limit is None else limit

    def write(self, data: memoryview) -> None:
        held = self.held
        if held is not None:
            size = self._held_bytes + data.nbytes
            if size <= self._limit:
                held.append(data)
                self._held_bytes = size
                return
            self._spill()
        w = self.writer
        if w is None:
            return
        try:
            w.write(data)
        except Exception as exc:  # Part10Writer.write aborted itself
            self.error = exc
            self.writer = None

    def _spill(self) -> None:
        """Past the limit: open the writer and write what was held."""
        held, self.held = self.held or [], None
        opener, self._opener = self._opener, None
        assert opener is not None
        try:
            w = opener()
        except Exception as exc:  # noqa: BLE001 - kept and answered as a failure
            self.error = exc
            return
        self.writer, self.path = w, w.path
        for part in held:
            self.write(part)

    def close(self) -> _Spool:
        return self

    def abort(self) -> None:
        self.held = None
        w, self.writer = self.writer, None
        if w is not None:
            w.abort()


class _HasEncoded(Protocol):
    @property
    def encoded(self) -> EncodedDataset: ...


class _EncodedPayload:
    """:attr:`fragments` and :attr:`dataset` of a received instance, read from its ``encoded``.

    Shared by :class:`StoreRequest` and the C-GET
    :class:`~aiodicom.services.get.ReceivedInstance`.
    """

    __slots__ = ()

    @property
    def fragments(self: _HasEncoded) -> list[Buffer]:
        """The encoded data set as received (a list of buffers, no copy)."""
        return self.encoded.fragments

    @property
    def dataset(self: _HasEncoded) -> Dataset:
        """The data set decoded with pydicom (decoded once, on first access)."""
        return self.encoded.decode()


class StoreRequest(RequestInfo, _EncodedPayload):
    """One received C-STORE-RQ, as handed to a storage handler.

    The data set stays encoded until :attr:`dataset` is read (decoded with
    pydicom once, cached).  When the server streamed the data set to disk
    (:func:`store_to_directory`), :attr:`spooled_path` names the temporary
    file and :attr:`fragments` reads it back on demand.
    """

    __slots__ = ("assoc", "message", "context_id", "transfer_syntax", "_encoded", "_spool")

    def __init__(self, assoc: Association, message: Message, transfer_syntax: str) -> None:
        self.assoc = assoc
        self.message = message
        self.context_id = message.context_id
        self.transfer_syntax = transfer_syntax
        self._encoded: EncodedDataset | None = None
        spool = message.sink_result
        self._spool = spool if isinstance(spool, _Spool) else None
        if self._spool is not None and self._spool.held is not None and self._spool.error is None:
            # A deferred spool that never reached its limit: the data set is
            # in memory, exactly as without a sink.
            self._encoded = EncodedDataset(self._spool.held, transfer_syntax)
            self._spool = None

    @property
    def sop_class_uid(self) -> str:
        """Affected SOP Class UID."""
        return self.message.command.affected_sop_class_uid or ""

    @property
    def sop_instance_uid(self) -> str:
        """Affected SOP Instance UID (as sent; not yet validated)."""
        return self.message.command.affected_sop_instance_uid or ""

    @property
    def move_originator(self) -> tuple[str, int] | None:
        """``(AE title, message ID)`` when sent as a C-MOVE sub-operation."""
        c = self.message.command
        if c.move_originator_aet is None:
            return None
        return c.move_originator_aet, c.move_originator_message_id or 0

    @property
    def spooled_path(self) -> Path | None:
        """The temporary file holding the streamed data set, if any."""
        w = self._spool.writer if self._spool is not None else None
        return w.temp_path if w is not None else None

    @property
    def encoded(self) -> EncodedDataset:
        """The encoded data set (in :attr:`transfer_syntax`)."""
        if self._encoded is None:
            spool = self._spool
            if spool is not None:
                if spool.error is not None:
                    raise spool.error
                w = spool.writer
                assert w is not None
                fh = w._file  # make what was written visible to the reader
                if fh is not None:
                    fh.flush()
                with open(w.temp_path, "rb") as fp:
                    fp.seek(w.dataset_offset)
                    data = fp.read()
                self._encoded = EncodedDataset([data], self.transfer_syntax)
            else:
                self._encoded = EncodedDataset(self.message.dataset or [], self.transfer_syntax)
        return self._encoded

    def __repr__(self) -> str:
        return f"<StoreRequest {self.sop_class_uid} {self.sop_instance_uid!r} from {self.calling_ae!r}>"


#: A storage handler: returns the status (an int, e.g. 0 for success).
StoreHandler = Callable[[StoreRequest], Awaitable[int]]


def _failure_for(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, ServiceError):
        return exc.status, exc.comment or ""
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return _OUT_OF_RESOURCES, f"out of resources: {exc.strerror or exc}"
    text = str(exc)
    return HANDLER_FAILED, f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _StoreService:
    """The low-level C-STORE-RQ handler installed by :func:`serve_store`."""

    def __init__(self, handler: StoreHandler) -> None:
        self.handler = handler

    async def __call__(self, assoc: Association, msg: Message) -> None:
        cmd = msg.command
        ctx = assoc.contexts.get(msg.context_id)
        req: StoreRequest | None = None
        status: int
        comment: str | None = None
        try:
            if ctx is None or ctx.abstract_syntax != cmd.affected_sop_class_uid:
                status = _SOP_CLASS_NOT_SUPPORTED
                comment = "SOP Class does not match the presentation context"
            else:
                req = StoreRequest(assoc, msg, ctx.transfer_syntax)
                try:
                    status = int(await self.handler(req))
                    Status(status)  # a 16-bit value
                except asyncio.CancelledError:
                    raise
                except ServiceError as exc:
                    status, comment = int(exc.status), exc.comment
                except Exception as exc:
                    status, comment = _failure_for(exc)
                    if status == HANDLER_FAILED:
                        log.exception("C-STORE handler failed for %s", cmd.affected_sop_instance_uid)
                    else:
                        log.error("C-STORE of %s failed: %s", cmd.affected_sop_instance_uid, comment)
        finally:
            spool = req._spool if req is not None else msg.sink_result
            if isinstance(spool, _Spool):
                spool.abort()  # no-op once committed
        rsp = response_to(cmd, status)
        if comment and Status(status).is_failure:
            rsp.error_comment = comment
        await assoc.send(msg.context_id, rsp)


def serve_store(
    server: Server,
    handler: StoreHandler,
    *,
    sop_classes: Iterable[str] | Mapping[str, str] = STORAGE_SOP_CLASSES,
    transfer_syntaxes: Iterable[str] = STORAGE_TRANSFER_SYNTAXES,
) -> None:
    """Serve C-STORE on *server* with *handler* (``async (StoreRequest) -> status``).

    Adds a presentation context for every SOP class in *sop_classes* (a
    mapping is read by its keys) with *transfer_syntaxes*.  If *handler* has
    a ``dataset_sink(assoc, context_id, command)`` method (as
    :class:`StoreToDirectory` does), incoming data sets are streamed to it
    instead of being kept in memory.
    """
    ts = list(transfer_syntaxes)
    for uid in sop_classes:
        server.add_context(uid, ts)
    service = _StoreService(handler)
    server.on(C_STORE_RQ, service)
    sink = getattr(handler, "dataset_sink", None)
    if callable(sink):
        server.dataset_sink_factory = _SinkFactory(server, service, sink)
    elif isinstance(server.dataset_sink_factory, _SinkFactory):
        server.dataset_sink_factory = None  # an earlier serve_store's streaming


class _SinkFactory:
    """Routes C-STORE-RQ data sets to the handler's ``dataset_sink`` while it serves C-STORE."""

    def __init__(self, server: Server, service: _StoreService, sink: Callable[..., Any]) -> None:
        self.server = server
        self.service = service
        self.sink = sink

    def __call__(self, assoc: Association, context_id: int, command: Command) -> Any:
        if command.command_field != C_STORE_RQ or self.server.handlers.get(C_STORE_RQ) is not self.service:
            return None
        return self.sink(assoc, context_id, command)


class StoreToDirectory:
    """A storage handler writing each instance to ``directory/<SOPInstanceUID>.dcm``.

    Files are written atomically (temporary file, fsync, rename) before the
    success response goes out.  The file name comes only from
    :func:`~aiodicom.part10.safe_instance_filename`: an instance whose UID is
    not a valid UID is refused with status 0x0117 and nothing is written.
    Registered with :func:`serve_store`, a data set larger than
    :data:`SPOOL_MEMORY_LIMIT` is streamed to disk as it arrives
    (:meth:`dataset_sink`); a smaller one is written in one worker-thread hop.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: bool = True,
        on_stored: Callable[[StoreRequest, Path], Awaitable[None]] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.on_stored = on_stored

    def _target(self, sop_instance_uid: str) -> Path:
        try:
            name = safe_instance_filename(sop_instance_uid)
        except ValueError:
            raise ServiceError(_INVALID_INSTANCE, "invalid SOP Instance UID") from None
        return self.directory / name

    def dataset_sink(self, assoc: Association, context_id: int, command: Command) -> _Spool:
        """The sink for the incoming data set: a Part 10 writer once it passes the memory limit (never raises)."""
        ctx = assoc.contexts.get(context_id)
        try:
            if ctx is None or ctx.abstract_syntax != command.affected_sop_class_uid:
                return _Spool(None, None, None)  # answered 0x0122; discard
            path = self._target(command.affected_sop_instance_uid or "")
        except Exception as exc:
            return _Spool(None, exc, None)
        return _Spool(
            None,
            None,
            path,
            limit=_spool_limit(assoc),
            opener=functools.partial(
                Part10Writer,
                path,
                command.affected_sop_class_uid or "",
                command.affected_sop_instance_uid or "",
                ctx.transfer_syntax,
                source_ae=assoc.calling_ae.strip() or None,
                fsync=self.fsync,
            ),
        )

    async def __call__(self, req: StoreRequest) -> int:
        loop = asyncio.get_running_loop()
        spool = req._spool
        if spool is not None:
            if spool.error is not None:
                raise spool.error
            writer = spool.writer
            if writer is None or spool.path is None:  # pragma: no cover - discarded spool
                raise ServiceError(HANDLER_FAILED, "data set was discarded")
            await loop.run_in_executor(None, writer.commit)
            path = spool.path
        else:
            path = self._target(req.sop_instance_uid)
            fragments = list(req.fragments)
            await loop.run_in_executor(
                None,
                lambda: write_part10(
                    path,
                    req.sop_class_uid,
                    req.sop_instance_uid,
                    req.transfer_syntax,
                    fragments,
                    source_ae=req.calling_ae or None,
                    fsync=self.fsync,
                ),
            )
        log.debug("stored %s", path)
        if self.on_stored is not None:
            await self.on_stored(req, path)
        return 0x0000


def store_to_directory(
    directory: str | os.PathLike[str],
    *,
    fsync: bool = True,
    on_stored: Callable[[StoreRequest, Path], Awaitable[None]] | None = None,
) -> StoreToDirectory:
    """A ready-made storage handler writing Part 10 files into *directory*.

    Use with :func:`serve_store`; see :class:`StoreToDirectory`.
    """
    os.makedirs(directory, exist_ok=True)
    return StoreToDirectory(directory, fsync=fsync, on_stored=on_stored)

