"""PDV reassembly (receive) and message fragmentation (send).

PS3.8 9.3.5 / E.2 (facts sheet 1.5): a P-DATA-TF PDU carries one or more PDV
items ``item-length u32 BE | context-id u8 | control u8 | fragment``, where
item-length = ``len(fragment) + 2``.  Control bit 0 says command (1) or data
set (0), bit 1 says last fragment.  All fragments of one message use the same
presentation context; messages are never interleaved; the command and the
data set never share a PDV; a command precedes its data set.

:class:`Reassembler` turns the PDVs of received P-DATA-TF PDUs into whole
:class:`Message` objects (exactly one per DIMSE message), keeping data set
fragments as the memoryviews it was given (no copy).
:func:`fragment_message` does the reverse, returning the buffers of complete
P-DATA-TF PDUs ready for ``transport.writelines``.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiodicom.dimse.commands import Command, decode_command
from aiodicom.ul.errors import ProtocolError

__all__ = [
    "PDV",
    "Message",
    "DatasetSink",
    "DatasetSinkFactory",
    "Reassembler",
    "fragment_message",
    "MIN_MAX_PDU_LENGTH",
    "UNLIMITED_PDU_CAP",
    "MAX_COMMAND_LENGTH",
    "MAX_DATASET_IN_MEMORY",
]

#: One received PDV: (presentation context ID, message control header, fragment).
PDV = tuple[int, int, memoryview]

_CTRL_COMMAND = 0x01
_CTRL_LAST = 0x02

#: Smallest peer maximum PDU length :func:`fragment_message` can honour: a
#: 6-byte PDV header plus a 2-byte (even) fragment.
MIN_MAX_PDU_LENGTH = 8
#: PDU length used when the peer announces 0 (no limit, PS3.8 D.1).
UNLIMITED_PDU_CAP = 4 * 1024 * 1024
#: Default limit on the size of one received command set.  Real command sets
#: are a few hundred bytes; this bounds memory spent on a hostile peer.
MAX_COMMAND_LENGTH = 64 * 1024
#: Default size past which a received data set (with no sink) is spooled to
#: an anonymous temporary file instead of being held in memory.
MAX_DATASET_IN_MEMORY = 64 * 1024 * 1024

_PDU_HDR = struct.Struct(">BBI")  # type 0x04, reserved, length
_PDV_HDR = struct.Struct(">IBB")  # item length, context id, control
_PDU_TYPE_P_DATA_TF = 0x04
# Buffers shorter than this are joined together on output; longer ones are
# passed on as memoryview slices so large payloads are never copied.
_COALESCE_BELOW = 2048


@dataclass(slots=True)
class Message:
    """One complete DIMSE message.

    ``dataset`` is ``None`` when the command announced no data set, otherwise
    the data set fragments exactly as received (possibly empty buffers, never
    joined).  When a :data:`DatasetSinkFactory` took the data set,
    ``dataset`` is an empty list and ``sink_result`` holds what the sink's
    ``close()`` returned.
    """

    context_id: int
    command: Command
    dataset: list[memoryview | bytes] | None
    sink_result: object = None

    def dataset_bytes(self) -> bytes:
        """The data set joined into one ``bytes`` (``b""`` when there is none).

        Copies; meant for small messages (identifiers, tests).
        """
        if self.dataset is None:
            return b""
        return b"".join(self.dataset)

    @property
    def dataset_length(self) -> int:
        """Total bytes of the in-memory data set fragments."""
        if self.dataset is None:
            return 0
        return sum(len(f) for f in self.dataset)


class DatasetSink(Protocol):
    """Receives a data set fragment by fragment instead of memory.

    ``write`` gets each fragment (a read-only memoryview valid as long as the
    caller keeps the PDU buffer; copy it if you keep it); ``close`` is called
    after the last fragment and its result lands in
    :attr:`Message.sink_result`.  If the sink also has an ``abort()`` method
    it is called when :meth:`Reassembler.reset` drops a partial message or a
    protocol error ends it.  Exceptions from the sink propagate unchanged.
    """

    def write(self, data: memoryview) -> object:
        """Take the next data set fragment."""
        ...

    def close(self) -> object:
        """The data set is complete; the return value becomes :attr:`Message.sink_result`."""
        ...


#: ``(context_id, command) -> sink or None``; ``None`` keeps the data set in
#: memory as usual.  Called once the command set is complete and announced a
#: data set.
DatasetSinkFactory = Callable[[int, Command], DatasetSink | None]

# Reassembler phases.
_IDLE = 0  # between messages
_COMMAND = 1  # receiving command fragments
_DATASET = 2  # command complete, receiving data set fragments


def _error(message: str) -> ProtocolError:
    return ProtocolError(message)


class Reassembler:
    """Reassemble PDVs into whole DIMSE messages (PS3.8 9.3.5, E.2).

    ``feed()`` the PDVs of each received P-DATA-TF in order; it returns the
    messages completed by them.  Any breach of the PDV rules raises
    :class:`~aiodicom.ul.errors.ProtocolError` (A-ABORT source 2, reason 6);
    the association must then be aborted and the reassembler dropped.

    ``dataset_sink`` (optional) is a :data:`DatasetSinkFactory`; set it to
    stream large data sets (e.g. C-STORE to disk) instead of keeping the
    fragments in memory.  Without a sink, a data set that grows past
    ``max_dataset_in_memory`` bytes is moved to an unlinked temporary file
    and delivered as one read-only memoryview of a memory map of it, so a
    peer cannot make us hold more than that many bytes of a message in
    memory (``None``: no limit).
    """

    __slots__ = (
        "accepted_contexts",
        "dataset_sink",
        "max_command_length",
        "max_dataset_in_memory",
        "_phase",
        "_context_id",
        "_command_parts",
        "_command_length",
        "_command",
        "_dataset",
        "_dataset_length",
        "_sink",
    )

    def __init__(
        self,
        accepted_contexts: Container[int],
        *,
        dataset_sink: DatasetSinkFactory | None = None,
        max_command_length: int = MAX_COMMAND_LENGTH,
        max_dataset_in_memory: int | None = MAX_DATASET_IN_MEMORY,
    ) -> None:
        self.accepted_contexts = accepted_contexts
        self.dataset_sink = dataset_sink
        self.max_command_length = max_command_length
        self.max_dataset_in_memory = max_dataset_in_memory
        self._phase = _IDLE
        self._context_id = 0
        self._command_parts: list[memoryview | bytes] = []
        self._command_length = 0
        self._command: Command | None = None
        self._dataset: list[memoryview | bytes] = []
        self._dataset_length = 0
        self._sink: DatasetSink | None = None

    @property
    def in_progress(self) -> bool:
        """True while a message is partially received."""
        return self._phase != _IDLE

    @property
    def context_id(self) -> int | None:
        """The presentation context of the partial message, if any."""
        return self._context_id if self._phase != _IDLE else None

    @property
    def pending_command(self) -> Command | None:
        """The decoded command of a message still awaiting its data set."""
        return self._command if self._phase == _DATASET else None

    def reset(self) -> None:
        """Drop any partial message (aborting its sink, if any)."""
        sink = self._sink
        self._phase = _IDLE
        self._context_id = 0
        self._command_parts = []
        self._command_length = 0
        self._command = None
        self._dataset = []
        self._dataset_length = 0
        self._sink = None
        if sink is not None:
            abort = getattr(sink, "abort", None)
            if abort is not None:
                abort()

    def _fail(self, message: str) -> ProtocolError:
        self.reset()
        return _error(message)

    def feed(self, pdvs: Iterable[tuple[int, int, memoryview | bytes]]) -> list[Message]:
        """Consume PDVs ``(context_id, control, fragment)``; return completed messages."""
        done: list[Message] = []
        accepted = self.accepted_contexts
        for context_id, control, data in pdvs:
            if context_id not in accepted:
                raise self._fail(f"PDV on presentation context {context_id}, which is not accepted")
            is_command = control & _CTRL_COMMAND
            last = control & _CTRL_LAST
            phase = self._phase

            if phase == _DATASET:
                if context_id != self._context_id:
                    raise self._fail(
                        f"data set fragment on context {context_id} while the message "
                        f"on context {self._context_id} is incomplete"
                    )
                if is_command:
                    raise self._fail("command fragment while a data set was expected")
                sink = self._sink
                if sink is not None:
                    sink.write(data if isinstance(data, memoryview) else memoryview(data))
                else:
                    self._dataset.append(data)
                    self._dataset_length += len(data)
                    limit = self.max_dataset_in_memory
                    if limit is not None and self._dataset_length > limit:
                        self._spool_to_file()
                if last:
                    done.append(self._finish_dataset())
                continue

            if not is_command:
                if phase == _IDLE:
                    raise self._fail(
                        "data set fragment without a command that announced a data set"
                    )
                raise self._fail("data set fragment before the command was complete")

            if phase == _IDLE:
                self._phase = _COMMAND
                self._context_id = context_id
            elif context_id != self._context_id:
                raise self._fail(
                    f"command fragment on context {context_id} while the command "
                    f"on context {self._context_id} is incomplete"
                )
            self._command_length += len(data)
            if self._command_length > self.max_command_length:
                raise self._fail(
                    f"command set longer than {self.max_command_length} bytes"
                )
            self._command_parts.append(data)
            if last:
                message = self._finish_command()
                if message is not None:
                    done.append(message)
        return done

    def _finish_command(self) -> Message | None:
        parts = self._command_parts
        raw = parts[0] if len(parts) == 1 else b"".join(parts)
        try:
            command = decode_command(raw)
        except ProtocolError:
            self.reset()
            raise
        context_id = self._context_id
        self._command_parts = []
        self._command_length = 0
        if not command.has_dataset:
            self._phase = _IDLE
            return Message(context_id, command, None)
        self._phase = _DATASET
        self._command = command
        self._dataset = []
        self._dataset_length = 0
        factory = self.dataset_sink
        if factory is not None:
            self._sink = factory(context_id, command)
        return None

    def _finish_dataset(self) -> Message:
        command = self._command
        assert command is not None
        sink = self._sink
        if isinstance(sink, _FileSpool):
            self._sink = None
            message = Message(self._context_id, command, sink.close())
        elif sink is not None:
            self._sink = None
            message = Message(self._context_id, command, [], sink.close())
        else:
            message = Message(self._context_id, command, self._dataset)
        self._phase = _IDLE
        self._command = None
        self._dataset = []
        self._dataset_length = 0
        return message

    def _spool_to_file(self) -> None:
        spool = _FileSpool()
        try:
            for part in self._dataset:
                spool.write(part if isinstance(part, memoryview) else memoryview(part))
        except BaseException:
            spool.abort()
            raise
        self._dataset = []
        self._sink = spool


class _FileSpool:
    """A data set too large for memory: an unlinked temporary file.

    ``close()`` maps the file read-only and returns it as the message's one
    data set buffer (pages are file-backed, so the kernel can drop them).
    A write error (disk full) raises ``OSError``, which aborts the
    association like any other failure to take a message.  Writes go to the
    page cache from the caller's thread (the event loop); this path only
    serves data sets that no service streams and that exceed the limit.
    """

    __slots__ = ("_file", "_size")

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="aiodicom-spool-")
        self._size = 0

    def write(self, data: memoryview) -> None:
        fd = self._file.fileno()
        while data:
            n = os.write(fd, data)
            data = data[n:]
            self._size += n

    def close(self) -> list[memoryview | bytes]:
        f = self._file
        try:
            if self._size == 0:
                return [b""]
            mapped = mmap.mmap(f.fileno(), self._size, access=mmap.ACCESS_READ)
        finally:
            f.close()  # the mapping keeps the (already unlinked) file alive
        return [memoryview(mapped)]

    def abort(self) -> None:
        self._file.close()


def _as_bytes_view(buf: bytes | bytearray | memoryview) -> memoryview:
    mv = memoryview(buf)
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
    return mv


def fragment_message(
    context_id: int,
    command: bytes | bytearray | memoryview,
    dataset: Sequence[bytes | bytearray | memoryview] | None,
    max_pdu_length: int,
) -> list[bytes | bytearray | memoryview]:
    """Split one DIMSE message into complete P-DATA-TF PDUs.

    *command* is an encoded command set (:func:`~aiodicom.dimse.commands.
    encode_command`); *dataset* the encoded data set as one or more buffers
    (``None`` for no data set; an empty sequence or empty buffers give one
    empty last data set PDV).  *max_pdu_length* is the peer's Maximum Length
    Received (the PDU-length field limit, PS3.8 D.1); 0 means unlimited and
    is capped at :data:`UNLIMITED_PDU_CAP`.

    Returns buffers to write in order (e.g. with ``transport.writelines``);
    in practice ``bytes`` and read-only memoryview slices of the inputs (the
    wider element type matches the upper layer's output buffer type).
    Every PDU length field is <= *max_pdu_length*; every fragment but the
    last of a stream has even length (PS3.8 E.2 requires even fragments;
    an odd input total leaves an odd last fragment).  Consecutive PDVs of
    the message share a PDU while they fit, and a fragment may span input
    buffers; large payloads are passed on as memoryview slices, only small
    pieces are joined.

    Raises :class:`ValueError` for *max_pdu_length* below
    :data:`MIN_MAX_PDU_LENGTH` (8: a 6-byte PDV header plus a 2-byte
    fragment; a peer announcing less cannot be sent to), a context ID
    outside 1..255 or an empty command.
    """
    if max_pdu_length == 0:
        max_pdu_length = UNLIMITED_PDU_CAP
    elif max_pdu_length < MIN_MAX_PDU_LENGTH:
        raise ValueError(
            f"peer maximum PDU length {max_pdu_length} is below {MIN_MAX_PDU_LENGTH}"
        )
    elif max_pdu_length > 0xFFFFFFFF:
        max_pdu_length = 0xFFFFFFFF
    if not 1 <= context_id <= 255:
        raise ValueError(f"presentation context ID {context_id} is not in 1..255")
    if not len(command):
        raise ValueError("empty command set")

    streams: list[tuple[list[memoryview], int, int]] = [
        ([_as_bytes_view(command)], _CTRL_COMMAND, _CTRL_COMMAND | _CTRL_LAST)
    ]
    if dataset is not None:
        streams.append(([_as_bytes_view(b) for b in dataset], 0, _CTRL_LAST))

    out: list[bytes | bytearray | memoryview] = []
    pdu_header_index = -1
    used = max_pdu_length  # bytes in the current PDU; "full" forces a new one
    pdv_pack = _PDV_HDR.pack
    pdu_pack = _PDU_HDR.pack

    for buffers, ctrl_more, ctrl_last in streams:
        remaining = sum(len(b) for b in buffers)
        index = 0  # current input buffer
        offset = 0  # offset in it
        first = True
        while first or remaining:
            first = False
            avail = max_pdu_length - used - 6
            # A non-empty fragment needs room for at least 2 bytes (even).
            if avail < (remaining if remaining < 2 else 2):
                # Start a new PDU.
                if pdu_header_index >= 0:
                    out[pdu_header_index] = pdu_pack(_PDU_TYPE_P_DATA_TF, 0, used)
                pdu_header_index = len(out)
                out.append(b"")  # placeholder for the PDU header
                used = 0
                avail = max_pdu_length - 6
            if remaining <= avail:
                n = remaining
                control = ctrl_last
            else:
                n = avail & ~1
                control = ctrl_more
            out.append(pdv_pack(n + 2, context_id, control))
            used += n + 6
            remaining -= n
            # Emit n bytes from the buffer list as slices.
            while n:
                buf = buffers[index]
                take = len(buf) - offset
                if take > n:
                    take = n
                if take == len(buf):
                    out.append(buf)
                else:
                    out.append(buf[offset : offset + take])
                offset += take
                n -= take
                if offset == len(buf):
                    index += 1
                    offset = 0

    out[pdu_header_index] = pdu_pack(_PDU_TYPE_P_DATA_TF, 0, used)
    return _coalesce(out)


def _coalesce(
    parts: list[bytes | bytearray | memoryview],
) -> list[bytes | bytearray | memoryview]:
    """Join runs of small buffers; pass large ones through untouched."""
    result: list[bytes | bytearray | memoryview] = []
    run: list[bytes | bytearray | memoryview] = []
    for part in parts:
        if len(part) < _COALESCE_BELOW:
            run.append(part)
        else:
            if run:
                result.append(b"".join(run))
                run = []
            result.append(part)
    if run:
        result.append(b"".join(run))
    return result
