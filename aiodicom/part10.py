"""DICOM Part 10 (PS3.10) file handling: File Meta parsing and atomic writing.

A Part 10 file is a 128-byte preamble, the magic ``b"DICM"``, the File Meta
Information group (0002,eeee) -- always Explicit VR Little Endian -- and then
the data set encoded in the transfer syntax named by (0002,0010).

Reading (:func:`read_part10_info`) parses only the File Meta group with a
small parser of our own; the data set itself is handed out as raw bytes
(:func:`read_part10_dataset`, :func:`iter_part10_dataset_chunks`) so it can be
sent over the network without being decoded.

Writing (:func:`write_part10`, :class:`Part10Writer`) is atomic: the file is
written under a hidden temporary name (``.<name>.<random>.tmp``) in the
target directory, flushed and fsync'ed, renamed onto the final path with
:func:`os.replace` and the directory is fsync'ed.  A reader therefore sees
either no file or the complete file, never a partial one.

Instance file names are derived from SOP Instance UIDs only through
:func:`safe_instance_filename`.
"""

from __future__ import annotations

import errno
import io
import os
import secrets
import struct
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final

from aiodicom.dataset import Buffer, EncodedDataset
from aiodicom.uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    uid_is_valid,
)

__all__ = [
    "InvalidPart10Error",
    "Part10Info",
    "Part10Writer",
    "build_file_meta",
    "iter_part10_dataset_chunks",
    "read_part10_dataset",
    "read_part10_dataset_nowait",
    "read_part10_info",
    "open_part10_cached",
    "safe_instance_filename",
    "write_part10",
]

#: A file system path accepted by the functions of this module.
StrPath = str | os.PathLike[str]

#: Length of the (all-zero, when we write it) Part 10 preamble.
PREAMBLE_LENGTH: Final = 128
#: The magic following the preamble.
MAGIC: Final = b"DICM"
#: Offset of the first File Meta element (after preamble and magic).
META_START: Final = PREAMBLE_LENGTH + len(MAGIC)

#: Explicit VRs with a reserved 2-byte field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
#: Sanity limits for the File Meta group of a file we read.
_MAX_META_ELEMENT: Final = 64 * 1024
_MAX_META_TOTAL: Final = 1024 * 1024

_TAG_GROUP_LENGTH: Final = 0x00020000
_TAG_VERSION: Final = 0x00020001
_TAG_SOP_CLASS: Final = 0x00020002
_TAG_SOP_INSTANCE: Final = 0x00020003
_TAG_TRANSFER_SYNTAX: Final = 0x00020010
_TAG_IMPL_CLASS: Final = 0x00020012
_TAG_IMPL_VERSION: Final = 0x00020013
_TAG_SOURCE_AE: Final = 0x00020016

_UID_CHARS: Final = frozenset("0123456789.")


class InvalidPart10Error(ValueError):
    """The file is not a valid DICOM Part 10 file (or its File Meta is bad)."""


@dataclass
class Part10Info:
    """What :func:`read_part10_info` learned from a Part 10 file's File Meta.

    ``dataset_offset`` is the byte offset of the data set (just after the File
    Meta group) and ``dataset_length`` the number of bytes from there to the
    end of the file.  The UIDs have their padding stripped.
    """

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    dataset_offset: int
    dataset_length: int
    implementation_class_uid: str | None = None
    implementation_version_name: str | None = None
    source_ae_title: str | None = None


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def _read_exact(fp: BinaryIO, n: int, path: object, what: str) -> bytes:
    data = fp.read(n)
    if len(data) != n:
        raise InvalidPart10Error(
            f"{path}: truncated File Meta Information while reading {what} "
            f"(wanted {n} bytes, got {len(data)})"
        )
    return data


def _decode_text(value: bytes, path: object, tag: int) -> str:
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidPart10Error(
            f"{path}: File Meta element ({tag >> 16:04X},{tag & 0xFFFF:04X}) "
            "is not ASCII"
        ) from None
    return text.rstrip("\x00 ").lstrip(" ")


def _parse_meta(fp: BinaryIO, path: Path, size: int | None = None) -> Part10Info:
    """Parse preamble, magic and File Meta from *fp* positioned at 0.

    *size* is the file's size (default: ``fstat`` of *fp*).
    """
    head = fp.read(META_START)
    if len(head) < META_START:
        raise InvalidPart10Error(
            f"{path}: not a DICOM Part 10 file (only {len(head)} bytes, "
            f"a preamble and 'DICM' need {META_START})"
        )
    if head[PREAMBLE_LENGTH:] != MAGIC:
        raise InvalidPart10Error(
            f"{path}: not a DICOM Part 10 file (no 'DICM' magic after the "
            "128-byte preamble)"
        )

    values: dict[int, bytes] = {}
    offset = META_START
    while True:
        header = fp.read(8)
        if len(header) == 0:
            break  # File Meta followed by an empty data set
        if len(header) < 2:
            raise InvalidPart10Error(f"{path}: truncated element header at offset {offset}")
        if struct.unpack_from("<H", header)[0] != 0x0002:
            break  # first data set element: File Meta ends here
        if len(header) < 8:
            raise InvalidPart10Error(
                f"{path}: truncated File Meta element header at offset {offset}"
            )
        group, element, vr = struct.unpack_from("<HH2s", header)
        tag = group << 16 | element
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise InvalidPart10Error(
                f"{path}: File Meta element ({group:04X},{element:04X}) at offset "
                f"{offset} is not Explicit VR Little Endian"
            )
        if vr in _LONG_VRS:
            length = struct.unpack(
                "<L", _read_exact(fp, 4, path, f"length of ({group:04X},{element:04X})")
            )[0]
            header_len = 12
        else:
            length = struct.unpack_from("<H", header, 6)[0]
            header_len = 8
        if length == 0xFFFFFFFF or length > _MAX_META_ELEMENT:
            raise InvalidPart10Error(
                f"{path}: File Meta element ({group:04X},{element:04X}) has an "
                f"invalid length {length:#x}"
            )
        values[tag] = _read_exact(fp, length, path, f"value of ({group:04X},{element:04X})")
        offset += header_len + length
        if offset - META_START > _MAX_META_TOTAL:
            raise InvalidPart10Error(f"{path}: File Meta Information is implausibly large")

    if size is None:
        size = os.fstat(fp.fileno()).st_size
    return _info_from_values(values, path, offset, size)


def _info_from_values(values: dict[int, bytes], path: Path, offset: int, size: int) -> Part10Info:
    missing = [
        name
        for tag, name in (
            (_TAG_SOP_CLASS, "MediaStorageSOPClassUID (0002,0002)"),
            (_TAG_SOP_INSTANCE, "MediaStorageSOPInstanceUID (0002,0003)"),
            (_TAG_TRANSFER_SYNTAX, "TransferSyntaxUID (0002,0010)"),
        )
        if not _decode_text(values.get(tag, b""), path, tag)
    ]
    if missing:
        raise InvalidPart10Error(f"{path}: File Meta Information lacks {', '.join(missing)}")

    def optional(tag: int) -> str | None:
        if tag not in values:
            return None
        return _decode_text(values[tag], path, tag) or None

    return Part10Info(
        path=path,
        sop_class_uid=_decode_text(values[_TAG_SOP_CLASS], path, _TAG_SOP_CLASS),
        sop_instance_uid=_decode_text(values[_TAG_SOP_INSTANCE], path, _TAG_SOP_INSTANCE),
        transfer_syntax=_decode_text(values[_TAG_TRANSFER_SYNTAX], path, _TAG_TRANSFER_SYNTAX),
        dataset_offset=offset,
        dataset_length=max(size - offset, 0),
        implementation_class_uid=optional(_TAG_IMPL_CLASS),
        implementation_version_name=optional(_TAG_IMPL_VERSION),
        source_ae_title=optional(_TAG_SOURCE_AE),
    )


_ELEMENT_HEADER = struct.Struct("<HH2sH")


def _parse_meta_window(window: memoryview, path: Path, size: int) -> Part10Info:
    """:func:`_parse_meta` over bytes already read (the file's first ``len(window)`` bytes).

    Scans the usual File Meta quickly; anything unusual (a truncated or
    malformed element, a File Meta running past the window) goes to
    :func:`_parse_meta`, which reads the same bytes element by element and
    words its errors precisely.
    """
    n = len(window)
    if n >= META_START and window[PREAMBLE_LENGTH:META_START].tobytes() == MAGIC:
        values: dict[int, bytes] = {}
        offset = META_START
        unpack = _ELEMENT_HEADER.unpack_from
        while True:
            if offset == n:
                if n == size:  # File Meta followed by an empty data set
                    return _info_from_values(values, path, offset, size)
                break
            if n - offset < 8:
                break
            group, element, vr, length = unpack(window, offset)
            if group != 0x0002:
                return _info_from_values(values, path, offset, size)
            if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
                break
            head = 8
            if vr in _LONG_VRS:
                if n - offset < 12:
                    break
                length = struct.unpack_from("<L", window, offset + 8)[0]
                head = 12
            if length > _MAX_META_ELEMENT or offset + head + length > n:
                break
            values[group << 16 | element] = bytes(window[offset + head : offset + head + length])
            offset += head + length
            if offset - META_START > _MAX_META_TOTAL:
                break
    return _parse_meta(io.BytesIO(window), path, size)


def read_part10_info(path: StrPath) -> Part10Info:
    """Parse the preamble, ``DICM`` magic and File Meta group of *path*.

    Only the File Meta is read, never the data set.  The File Meta ends at the
    first element whose group is not 0002 (the value of (0002,0000) is not
    trusted).  Raises :class:`InvalidPart10Error` if the file has no
    preamble/``DICM`` magic, the File Meta is truncated or not Explicit VR
    Little Endian, or Media Storage SOP Class/Instance UID or Transfer Syntax
    UID is missing; :class:`OSError` if the file cannot be read.
    """
    p = Path(path)
    with open(p, "rb") as fp:
        return _parse_meta(fp, p)


def read_part10_dataset(path: StrPath) -> tuple[Part10Info, EncodedDataset]:
    """Read the File Meta and the whole data set of *path*.

    The data set (everything after the File Meta) is read into one
    :class:`bytes` object -- not memory-mapped, so the file can be replaced
    or deleted right away and no file handle stays open.  For large files
    prefer :func:`iter_part10_dataset_chunks`.
    """
    p = Path(path)
    with open(p, "rb") as fp:
        info = _parse_meta(fp, p)
        fp.seek(info.dataset_offset)
        data = fp.read()
    info.dataset_length = len(data)
    return info, EncodedDataset([data], info.transfer_syntax)


#: Files larger than this are never read on the event loop (see below).
NOWAIT_READ_MAX = 16 * 1024 * 1024
_META_WINDOW = 64 * 1024


def _preadv_nowait(fd: int, view: memoryview, offset: int, flag: int) -> int | None:
    """``preadv(..., RWF_NOWAIT)``: bytes read, or None if it would wait or is unsupported here."""
    try:
        return os.preadv(fd, [view], offset, flag)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return None
        raise


def read_part10_dataset_nowait(path: StrPath) -> tuple[Part10Info, EncodedDataset] | None:
    """:func:`read_part10_dataset`, but only if no read has to wait for the disk.

    Reads with ``preadv(..., RWF_NOWAIT)`` (Linux >= 4.14), which copies
    from the page cache and fails instead of blocking when a page is not
    there.  Returns ``None`` when the file is not entirely cached, is larger
    than :data:`NOWAIT_READ_MAX`, the File Meta is unusually large, or the
    platform or file system lacks ``RWF_NOWAIT``: the caller then reads it in
    a worker thread.  An event loop can call this directly and skip the
    thread hop for hot files.  The data set is a memoryview of the one
    buffer read (no second copy).  Opening the file can still touch the disk
    for its metadata (a cold directory entry or inode); that is the one wait
    this cannot rule out.
    """
    flag = getattr(os, "RWF_NOWAIT", None)
    if flag is None:
        return None
    p = Path(path)
    fd = os.open(p, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.fstat(fd).st_size
        if size > NOWAIT_READ_MAX:
            return None
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = _preadv_nowait(fd, view[got:], got, flag)
            if n is None:
                return None
            if n == 0:
                break  # shorter than fstat said: parse what is there
            got += n
    finally:
        os.close(fd)
    try:
        info = _parse_meta_window(view[: min(got, _META_WINDOW)], p, got)
    except InvalidPart10Error:
        if got > _META_WINDOW:
            return None  # a File Meta past the window: the normal reader decides
        raise
    if info.dataset_offset > got:
        return None
    info.dataset_length = got - info.dataset_offset
    return info, EncodedDataset([view[info.dataset_offset : got]], info.transfer_syntax)


#: Files larger than this are not sent with ``sendfile`` (see below).
SENDFILE_MAX = 1 << 32
_CACHED_META_WINDOW = 4096  # File Meta is usually a few hundred bytes


class _PageCache:
    """Are a file's pages all in the page cache?  Never waits for the disk.

    ``cachestat(2)`` (Linux >= 6.5; one call) where the kernel has it,
    else ``mincore(2)`` on a transient mapping of the range; both through
    ctypes.
    """

    _CACHESTAT = {"x86_64": 451, "aarch64": 451}  # the unified syscall table

    def __init__(self) -> None:
        import ctypes
        import ctypes.util
        import mmap
        import platform

        c = self._ctypes = ctypes
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self._page = mmap.PAGESIZE
        # mincore fallback
        self._mmap = libc.mmap
        self._mmap.restype = c.c_void_p
        self._mmap.argtypes = [c.c_void_p, c.c_size_t, c.c_int, c.c_int, c.c_int, c.c_long]
        self._munmap = libc.munmap
        self._munmap.argtypes = [c.c_void_p, c.c_size_t]
        self._mincore = libc.mincore
        self._mincore.argtypes = [c.c_void_p, c.c_size_t, c.c_void_p]
        self._prot, self._flags = mmap.PROT_READ, mmap.MAP_SHARED
        self._failed = c.c_void_p(-1).value
        # the low bit of each mincore byte says "resident"; the others are reserved
        self._low_bit = bytes(i & 1 for i in range(256))
        # cachestat: struct cachestat_range {u64 off, len}; struct cachestat {u64 x 5}
        self._nr = self._CACHESTAT.get(platform.machine())
        if self._nr is not None:
            self._syscall = libc.syscall
            self._syscall.restype = c.c_long
            self._range = (c.c_uint64 * 2)()
            self._stat = (c.c_uint64 * 5)()
            self._range_ref, self._stat_ref = c.byref(self._range), c.byref(self._stat)

    def resident(self, fd: int, offset: int, length: int) -> bool:
        """Whether bytes ``offset`` .. ``offset + length`` of ``fd`` are all cached."""
        if length <= 0:
            return True
        first = offset // self._page
        pages = (offset + length - 1) // self._page - first + 1
        if self._nr is not None:
            self._range[0], self._range[1] = offset, length
            if self._syscall(self._nr, fd, self._range_ref, self._stat_ref, 0) == 0:
                return int(self._stat[0]) >= pages
            if self._ctypes.get_errno() not in (errno.ENOSYS, errno.EPERM):
                return False
            self._nr = None  # an older kernel (or a seccomp filter): mincore from now on
        start = first * self._page
        span = offset + length - start
        addr = self._mmap(None, span, self._prot, self._flags, fd, start)
        if addr is None or addr == self._failed:
            return False
        try:
            vec = self._ctypes.create_string_buffer(pages)
            if self._mincore(addr, span, vec) != 0:
                return False
            return vec.raw[:pages].translate(self._low_bit).find(0) < 0
        finally:
            self._munmap(addr, span)


_page_cache: list[_PageCache | None] = []  # made on first use


def _get_page_cache() -> _PageCache | None:
    if not _page_cache:
        try:
            _page_cache.append(_PageCache() if sys.platform.startswith("linux") else None)
        except (OSError, AttributeError):
            _page_cache.append(None)
    return _page_cache[0]


def open_part10_cached(path: StrPath) -> tuple[Part10Info, int] | None:
    """Open *path* for ``sendfile`` if all of it is in the page cache.

    Returns the File Meta and an open file descriptor (the caller closes
    it); the data set is the byte range ``info.dataset_offset`` ..
    ``+ info.dataset_length``.  Nothing here waits for the disk: the File
    Meta is read with ``preadv(..., RWF_NOWAIT)`` and the data set's pages
    are checked with ``mincore(2)``, so an event loop may call it and then
    send the data set with ``os.sendfile`` (no copy through user space).
    Returns ``None`` when any page is not cached, the platform lacks these
    calls, the File Meta is unusually large or the file is larger than
    :data:`SENDFILE_MAX`: read it with :func:`read_part10_dataset` then.
    Invalid files raise as :func:`read_part10_info` does.
    """
    flag = getattr(os, "RWF_NOWAIT", None)
    cache = _get_page_cache() if flag is not None else None
    if cache is None or flag is None:
        return None
    name = os.fspath(path)
    fd = os.open(name, _O_RDONLY_CLOEXEC)
    keep = False
    try:
        st = os.fstat(fd)
        size = st.st_size
        if size > SENDFILE_MAX:
            return None
        key = (name, st.st_dev, st.st_ino, size, st.st_mtime_ns, st.st_ctime_ns)
        info = _meta_cache.get(key)
        if info is None:
            p = Path(name)
            window = bytearray(min(size, _CACHED_META_WINDOW))
            read = _preadv_nowait(fd, memoryview(window), 0, flag) if window else 0
            if read is None:
                return None
            got = read
            try:
                info = _parse_meta_window(memoryview(window)[:got], p, size)
            except InvalidPart10Error:
                if got < size:
                    return None  # a File Meta past the window (or a short read): the normal reader decides
                raise
            _remember_meta(key, st, info)
        else:
            info = _copy_info(info)
        if info.dataset_offset > size or not cache.resident(fd, info.dataset_offset, info.dataset_length):
            return None
        keep = True
        return info, fd
    finally:
        if not keep:
            os.close(fd)


_O_RDONLY_CLOEXEC: Final = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)

#: File Meta already parsed, by (path, st_dev, st_ino, st_size, st_mtime_ns,
#: st_ctime_ns): a C-GET or C-MOVE SCP sends the same files again and again,
#: and parsing their File Meta was a third of its Python work per instance.
_meta_cache: dict[tuple[str, int, int, int, int, int], Part10Info] = {}
_META_CACHE_MAX = 4096
#: Only files unchanged for this long are remembered ("racy" entries, as git
#: calls them: a file rewritten in place within the file system's timestamp
#: granularity could keep its size and times, so a fresh one is parsed each time).
_META_SETTLED_NS = 2_000_000_000


def _remember_meta(key: tuple[str, int, int, int, int, int], st: os.stat_result, info: Part10Info) -> None:
    now = time.time_ns()
    if now - st.st_mtime_ns < _META_SETTLED_NS or now - st.st_ctime_ns < _META_SETTLED_NS:
        return
    if len(_meta_cache) >= _META_CACHE_MAX:
        try:
            del _meta_cache[next(iter(_meta_cache))]  # the oldest entry
        except (KeyError, RuntimeError, StopIteration):  # another thread got there first
            pass
    _meta_cache[key] = _copy_info(info)


def _copy_info(info: Part10Info) -> Part10Info:
    """A shallow copy (callers may change the UIDs of theirs)."""
    new = object.__new__(Part10Info)
    new.__dict__.update(info.__dict__)
    return new


def iter_part10_dataset_chunks(info: Part10Info, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Yield the data set bytes of the file described by *info* in chunks.

    Exactly ``info.dataset_length`` bytes starting at ``info.dataset_offset``
    are yielded, each chunk at most *chunk_size* bytes.  The file is opened on
    the first iteration and closed when the generator finishes or is closed.
    Raises :class:`InvalidPart10Error` if the file became shorter since
    *info* was read.
    """
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    with open(info.path, "rb") as fp:
        fp.seek(info.dataset_offset)
        remaining = info.dataset_length
        while remaining > 0:
            chunk = fp.read(min(chunk_size, remaining))
            if not chunk:
                raise InvalidPart10Error(
                    f"{info.path}: file is shorter than when its File Meta was "
                    f"read ({remaining} bytes missing)"
                )
            remaining -= len(chunk)
            yield chunk


# ---------------------------------------------------------------------------
# File Meta encoding
# ---------------------------------------------------------------------------


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    """Encode one Explicit VR Little Endian element."""
    if vr in _LONG_VRS:
        return struct.pack("<HH2s2xL", tag >> 16, tag & 0xFFFF, vr, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _ui_value(uid: str, what: str, *, strict: bool) -> bytes:
    uid = uid.rstrip("\x00 ")
    if strict:
        ok = uid_is_valid(uid)
    else:
        # Lenient: accept real-world UIDs with e.g. leading zeros, but only
        # the UID character repertoire and the 64-character limit.
        ok = 0 < len(uid) <= 64 and _UID_CHARS.issuperset(uid)
    if not ok:
        raise ValueError(f"invalid {what}: {uid!r}")
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text_value(text: str, what: str, max_len: int) -> bytes:
    if not 0 < len(text) <= max_len or not all(0x20 <= ord(c) < 0x7F for c in text):
        raise ValueError(f"invalid {what}: {text!r}")
    if "\\" in text:
        raise ValueError(f"invalid {what}: {text!r} (backslash)")
    raw = text.encode("ascii")
    return raw + b" " if len(raw) % 2 else raw


def build_file_meta(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax: str,
    *,
    source_ae: str | None = None,
) -> bytes:
    """Return the encoded File Meta Information group (PS3.10 7.1).

    Elements: (0002,0000) group length, (0002,0001) version ``00 01`` (OB),
    (0002,0002)/(0002,0003) Media Storage SOP Class/Instance UID, (0002,0010)
    Transfer Syntax UID, (0002,0012) Implementation Class UID, (0002,0013)
    Implementation Version Name and, if *source_ae* is given and not blank,
    (0002,0016) Source Application Entity Title.  Explicit VR Little Endian;
    UI values are NUL-padded and SH/AE values space-padded to even length.

    The transfer syntax must be a valid UID (PS3.5 9.1).  The SOP UIDs are
    checked leniently (only ``0-9`` and ``.``, at most 64 characters) so that
    instances with slightly non-conformant UIDs received from peers can still
    be stored.  Raises :class:`ValueError` for invalid input.
    """
    body = [
        _element(_TAG_VERSION, b"OB", b"\x00\x01"),
        _element(
            _TAG_SOP_CLASS,
            b"UI",
            _ui_value(sop_class_uid, "Media Storage SOP Class UID", strict=False),
        ),
        _element(
            _TAG_SOP_INSTANCE,
            b"UI",
            _ui_value(sop_instance_uid, "Media Storage SOP Instance UID", strict=False),
        ),
        _element(
            _TAG_TRANSFER_SYNTAX,
            b"UI",
            _ui_value(transfer_syntax, "Transfer Syntax UID", strict=True),
        ),
        _element(
            _TAG_IMPL_CLASS,
            b"UI",
            _ui_value(IMPLEMENTATION_CLASS_UID, "Implementation Class UID", strict=True),
        ),
        _element(
            _TAG_IMPL_VERSION,
            b"SH",
            _text_value(IMPLEMENTATION_VERSION_NAME, "Implementation Version Name", 16),
        ),
    ]
    if source_ae is not None and source_ae.strip(" "):
        body.append(
            _element(
                _TAG_SOURCE_AE,
                b"AE",
                _text_value(source_ae.strip(" "), "Source AE Title", 16),
            )
        )
    payload = b"".join(body)
    return _element(_TAG_GROUP_LENGTH, b"UL", struct.pack("<L", len(payload))) + payload


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def _fsync_directory(directory: Path) -> None:
    """fsync *directory* so a rename in it is durable (no-op on Windows)."""
    if sys.platform == "win32":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp(directory: Path, final_name: str) -> tuple[Path, BinaryIO]:
    """Create a new hidden temp file in *directory*; respects the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temp = directory / f".{final_name}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(temp, flags, 0o666)
        except FileExistsError:
            continue
        try:
            return temp, os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            os.unlink(temp)
            raise
    raise FileExistsError(f"could not create a temporary file in {directory}")


class Part10Writer:
    """Write a Part 10 file incrementally and atomically.

    The constructor validates the File Meta arguments, creates the temporary
    file (``.<name>.<random>.tmp`` in the directory of *path*) and writes the
    preamble, ``DICM`` and the File Meta.  Feed the encoded data set with
    :meth:`write` (data is streamed to disk, memory stays bounded), then
    :meth:`commit` to publish the file or :meth:`abort` to discard it.

    As a context manager it aborts when the block raises and commits when the
    block completes normally (unless already committed or aborted).  An
    existing file at *path* is replaced.  With ``fsync=False`` the file and
    directory fsyncs are skipped (faster, for tests and scratch data; the
    rename is still atomic).
    """

    def __init__(
        self,
        path: StrPath,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        *,
        source_ae: str | None = None,
        fsync: bool = True,
        temp_dir: StrPath | None = None,
        prepare_dir: Callable[[Path], None] | None = None,
    ) -> None:
        """Create the temporary file and write preamble and File Meta.

        ``temp_dir`` (on the same file system as *path*) holds the temporary
        file instead of the final directory; ``prepare_dir`` is then called
        with the final directory in :meth:`commit`, before the rename (e.g.
        to create it), so that creating directories stays off the caller's
        thread until the commit.
        """
        self.path = Path(path)
        self._fsync = fsync
        self._prepare_dir = prepare_dir
        self._file: BinaryIO | None = None
        self._done = False
        #: True once the file has been renamed onto :attr:`path`.
        self.committed = False
        self.bytes_written = 0
        meta = build_file_meta(
            sop_class_uid, sop_instance_uid, transfer_syntax, source_ae=source_ae
        )
        directory = Path(temp_dir) if temp_dir is not None else self.path.parent
        self.temp_path, self._file = _create_temp(directory, self.path.name)
        try:
            self._file.write(bytes(PREAMBLE_LENGTH))
            self._file.write(MAGIC)
            self._file.write(meta)
        except BaseException:
            self.abort()
            raise
        #: Byte offset of the data set in the final file.
        self.dataset_offset = META_START + len(meta)

    @property
    def closed(self) -> bool:
        """Whether :meth:`commit` or :meth:`abort` has been called."""
        return self._done

    def write(self, buf: Buffer) -> None:
        """Append *buf* (part of the encoded data set) to the file.

        On an I/O error the writer is aborted and the error propagates.
        """
        if self._done or self._file is None:
            raise ValueError("Part10Writer is already committed or aborted")
        try:
            self._file.write(buf)
        except BaseException:
            self.abort()
            raise
        self.bytes_written += memoryview(buf).nbytes

    def commit(self) -> None:
        """Flush, fsync, rename onto the final path and fsync the directory.

        If anything before the rename fails, the temporary file is removed and
        the error propagates.  If only the final directory fsync fails, the
        file is already in place and the error propagates.
        """
        if self._done or self._file is None:
            raise ValueError("Part10Writer is already committed or aborted")
        try:
            self._file.flush()
            if self._fsync:
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            if self._prepare_dir is not None:
                self._prepare_dir(self.path.parent)
            os.replace(self.temp_path, self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True
        self.committed = True
        if self._fsync:
            _fsync_directory(self.path.parent)

    def abort(self) -> None:
        """Discard the temporary file.  Idempotent; no-op after :meth:`commit`."""
        if self._done:
            return
        self._done = True
        file, self._file = self._file, None
        try:
            if file is not None:
                file.close()
        finally:
            try:
                os.unlink(self.temp_path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> Part10Writer:
        """Return ``self``."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Abort if the block raised, otherwise commit (if still open)."""
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.commit()

    def __del__(self) -> None:
        # Best effort: never leave a temp file behind for a forgotten writer.
        if getattr(self, "_done", True) is False and hasattr(self, "temp_path"):
            try:
                self.abort()
            except Exception:
                pass


def write_part10(
    path: StrPath,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax: str,
    fragments: Iterable[Buffer],
    *,
    source_ae: str | None = None,
    fsync: bool = True,
) -> None:
    """Atomically write a Part 10 file at *path*.

    Writes the 128-byte zero preamble, ``DICM``, :func:`build_file_meta` and
    the encoded data set *fragments* (an iterable of buffers, e.g.
    ``EncodedDataset.fragments``; it may be a lazy generator) to a temporary
    file in the same directory, then flushes, fsyncs, renames it onto *path*
    and fsyncs the directory (fsyncs skipped with ``fsync=False``).  On any
    error -- including one raised by the *fragments* iterator -- the
    temporary file is removed, *path* is left untouched and the exception
    propagates.
    """
    writer = Part10Writer(
        path,
        sop_class_uid,
        sop_instance_uid,
        transfer_syntax,
        source_ae=source_ae,
        fsync=fsync,
    )
    with writer:
        for fragment in fragments:
            writer.write(fragment)


def safe_instance_filename(sop_instance_uid: str) -> str:
    """Return the file name for an instance: ``f"{sop_instance_uid}.dcm"``.

    The UID must pass :func:`~aiodicom.uids.uid_is_valid` (digits and dots
    only, no empty components or leading zeros, at most 64 characters), which
    rules out path separators, ``..``, NULs and non-ASCII digits.  Raises
    :class:`ValueError` otherwise.  This is the only way aiodicom turns a UID
    into a file name.
    """
    if not isinstance(sop_instance_uid, str) or not uid_is_valid(sop_instance_uid):
        raise ValueError(f"not a valid SOP Instance UID for a file name: {sop_instance_uid!r}")
    return f"{sop_instance_uid}.dcm"
