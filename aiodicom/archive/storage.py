"""The archive's instance store: Part 10 files on disk plus the SQLite index.

Layout (decided here, never derived from an unchecked string)::

    <root>/index.sqlite3                      the attribute index (+ -wal, -shm)
    <root>/instances/<h[0:3]>/<SOPInstanceUID>.dcm

where ``h`` is the hex SHA-1 of the SOP Instance UID.  The UID must pass
:func:`~aiodicom.uids.uid_is_valid` (digits and dots only, at most 64
characters) and the file name comes from
:func:`~aiodicom.part10.safe_instance_filename`; anything else is refused
with :class:`ValueError` before a path is built.  The path of an instance
depends on its UID only, so a duplicate lands on the same path.  The 4,096
directories are created as instances arrive; after the first 20,000 or so
instances a store almost never makes a directory (a new directory costs a
``mkdir`` and, with fsync on, an fsync of its parent before the instance is
durable), and at ten million instances a directory holds about 2,500 files.
Paths stored in the index are relative to *root* (``instances/abc/….dcm``)
and are validated against the layout again before a file is opened.

Archives created before this layout use two levels,
``instances/<h[0:2]>/<h[2:4]>/<SOPInstanceUID>.dcm`` (65,536 directories,
so most of the first hundred thousand stores made a directory); such an
archive is recognised at :meth:`Storage.open` by its two-character
directories and keeps its layout (:attr:`Storage.layout`).

Ordering and crash consistency:

* :meth:`Storage.store` writes the file atomically (temporary
  ``.<name>.<random>.tmp`` in the target directory, fsync, rename, directory
  fsync -- :func:`~aiodicom.part10.write_part10`) on a worker thread, *then*
  commits the index row (WAL, ``synchronous=NORMAL``); success is only ever
  answered for an instance whose file is durable and whose row is committed.
  The files are the source of truth: a power cut can lose the last row
  commits (WAL with ``synchronous=NORMAL`` is atomic but syncs at
  checkpoints, not at every commit), and :meth:`recover`, which every
  :meth:`open` runs, indexes a file that has no row.  That saves one fsync
  per instance.  A partially written file only ever exists under a
  ``.tmp`` name, which is never indexed.
* A duplicate SOP Instance UID is written to the same final path (the rename
  replaces the old file atomically) and its index row is replaced;
  ``StoreResult.replaced`` is ``True``.  Stores of the same UID are
  serialised, so file and row always describe the same bytes.
* Once started, a store runs to completion even if the awaiting task is
  cancelled (it is shielded), so a cancellation cannot separate file and row.
* :meth:`Storage.recover` (run by :meth:`Storage.open`) deletes leftover
  ``.tmp`` files, removes index rows whose file is missing, re-indexes files
  whose size or modification time differ from what the row recorded (a crash
  between the rename of a replacement and its index commit) and indexes
  complete files that have no row (a crash between rename and index commit;
  the file is complete because it only appears by rename).  Afterwards every
  indexed instance has its file and nothing half-written is visible.
* :meth:`Storage.remove` deletes the file first and the row second, so a
  crash in between leaves a row without a file, which recovery removes.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import sys
from bisect import bisect_right
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final, NamedTuple, Union, cast

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag

from aiodicom.archive._fastrecord import HEADER_WINDOW, fast_record
from aiodicom.archive.index import AsyncIndex, InstanceRecord, InvalidInstanceError, record_from_dataset
from aiodicom.archive.matching import ATTRIBUTES, SEQUENCES
from aiodicom.dataset import Buffer, DatasetDecodeError, EncodedDataset, transfer_syntax_encoding
from aiodicom.part10 import (
    InvalidPart10Error,
    Part10Info,
    Part10Writer,
    iter_part10_dataset_chunks,
    read_part10_info,
    safe_instance_filename,
    write_part10,
)
from aiodicom.uids import uid_is_valid

__all__ = [
    "DATA_DIR",
    "INDEX_NAME",
    "LAYOUT_FLAT",
    "LAYOUT_NESTED",
    "RecoveryReport",
    "Storage",
    "StoreResult",
    "detect_layout",
    "read_header",
    "read_header_from_fragments",
]

#: Name of the index database inside the storage root.
INDEX_NAME: Final = "index.sqlite3"
#: Name of the directory holding the instance files.
DATA_DIR: Final = "instances"
#: Under DATA_DIR: where streamed instances are written before their commit
#: (hidden; recovery removes temporary files left there).
STAGING_DIR: Final = ".incoming"

#: ``instances/<h[0:3]>/<uid>.dcm`` -- every archive created now
LAYOUT_FLAT: Final = "flat"
#: ``instances/<h[0:2]>/<h[2:4]>/<uid>.dcm`` -- archives created before
LAYOUT_NESTED: Final = "nested"

_REL_PATH_RE: Final = {
    LAYOUT_FLAT: re.compile(DATA_DIR + r"/(?P<h>[0-9a-f]{3})/(?P<uid>[0-9.]{1,64})\.dcm"),
    LAYOUT_NESTED: re.compile(
        DATA_DIR + r"/(?P<h1>[0-9a-f]{2})/(?P<h2>[0-9a-f]{2})/(?P<uid>[0-9.]{1,64})\.dcm"
    ),
}
_HEX = frozenset("0123456789abcdef")


def detect_layout(data_dir: str | os.PathLike[str]) -> str:
    """The layout of the instance directory *data_dir*: nested if it has two-character hash directories.

    An empty or missing directory is a new archive: :data:`LAYOUT_FLAT`.
    """
    try:
        with os.scandir(data_dir) as entries:
            for entry in entries:
                name = entry.name
                if len(name) == 2 and set(name) <= _HEX and entry.is_dir(follow_symlinks=False):
                    return LAYOUT_NESTED
    except FileNotFoundError:
        pass
    return LAYOUT_FLAT

#: The only top-level tags the index needs (plus SpecificCharacterSet).
_HEADER_TAGS: Final[list[int]] = sorted(
    {a.tag for a in ATTRIBUTES if a.column is not None and a.extract}
    | {s.tag for s in SEQUENCES}
    | {0x00080005}
)
_HEADER_LAST_TAG: Final = max(_HEADER_TAGS)

#: What :meth:`Storage.store` accepts as the data set.
DataSource = Union[EncodedDataset, Buffer, Iterable[Buffer], str, "os.PathLike[str]"]


class StoreResult(NamedTuple):
    """Outcome of a successful store."""

    sop_instance_uid: str
    rel_path: str
    size: int
    #: ``True`` if an instance with this SOP Instance UID was replaced.
    replaced: bool


@dataclass
class RecoveryReport:
    """What :meth:`Storage.recover` did."""

    temp_files_removed: int = 0
    rows_removed: int = 0
    rows_refreshed: int = 0
    orphans_indexed: int = 0
    #: Relative paths of instance files that could not be read (left alone).
    unreadable: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Header decoding
# ---------------------------------------------------------------------------


class _FragmentReader(io.RawIOBase):
    """A seekable read-only file over a list of buffers (no joining)."""

    def __init__(self, fragments: Iterable[Buffer]) -> None:
        super().__init__()
        self._views = [memoryview(f).cast("B") for f in fragments]
        self._views = [v for v in self._views if v.nbytes]
        self._starts: list[int] = []
        pos = 0
        for v in self._views:
            self._starts.append(pos)
            pos += v.nbytes
        self._size = pos
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(self._size - self._pos, 0)
        end = min(self._pos + size, self._size)
        if end <= self._pos:
            return b""
        parts: list[bytes] = []
        pos = self._pos
        i = bisect_right(self._starts, pos) - 1
        while pos < end:
            view, start = self._views[i], self._starts[i]
            take = min(end, start + view.nbytes)
            parts.append(bytes(view[pos - start : take - start]))
            pos = take
            i += 1
        self._pos = end
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, buffer: Buffer) -> int:  # type: ignore[override]
        data = self.read(memoryview(buffer).nbytes)
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)


def _stop_after_header(tag: BaseTag, vr: str | None, length: int) -> bool:
    return int(tag) > _HEADER_LAST_TAG


def _read_header_fp(fp: BinaryIO, transfer_syntax: str) -> Dataset:
    encoding = transfer_syntax_encoding(transfer_syntax)
    try:
        ds = read_dataset(
            fp,
            encoding.implicit_vr,
            encoding.little_endian,
            stop_when=_stop_after_header,
            specific_tags=list(_HEADER_TAGS),
        )
    except Exception as exc:  # pydicom raises many exception types
        raise DatasetDecodeError(f"cannot decode data set header: {exc}") from exc
    return ds


def read_header_from_fragments(fragments: Iterable[Buffer], transfer_syntax: str) -> Dataset:
    """Decode only the attributes the index needs from an encoded data set.

    Elements after (0040,A504) -- Pixel Data, SR content -- are never read
    and large unwanted values are skipped, not copied.  Deflated data sets
    are inflated first.
    """
    frags = list(fragments)
    if transfer_syntax_encoding(transfer_syntax).deflated:
        return EncodedDataset(frags, transfer_syntax).decode()
    return _read_header_fp(cast(BinaryIO, _FragmentReader(frags)), transfer_syntax)


def read_header(info: Part10Info) -> Dataset:
    """Decode the indexed attributes of the Part 10 file described by *info*."""
    if transfer_syntax_encoding(info.transfer_syntax).deflated:
        data = b"".join(iter_part10_dataset_chunks(info))
        return EncodedDataset([data], info.transfer_syntax).decode()
    with open(info.path, "rb") as fp:
        fp.seek(info.dataset_offset)
        return _read_header_fp(fp, info.transfer_syntax)


def record_from_fragments(fragments: Iterable[Buffer], transfer_syntax: str) -> InstanceRecord:
    """The index record of an encoded data set: the fast reader, else pydicom."""
    frags = list(fragments)
    window = bytearray()
    total = 0
    for f in frags:
        view = memoryview(f).cast("B")
        total += view.nbytes
        if len(window) < HEADER_WINDOW:
            window += view[: HEADER_WINDOW - len(window)]
    record = fast_record(window, transfer_syntax, complete=total <= HEADER_WINDOW)
    if record is None:
        record = record_from_dataset(read_header_from_fragments(frags, transfer_syntax))
    return record


def record_from_file(info: Part10Info) -> InstanceRecord:
    """The index record of the Part 10 file described by *info*: the fast reader, else pydicom."""
    with open(info.path, "rb") as fp:
        fp.seek(info.dataset_offset)
        window = fp.read(HEADER_WINDOW)
    record = fast_record(window, info.transfer_syntax, complete=info.dataset_length <= HEADER_WINDOW)
    if record is None:
        record = record_from_dataset(read_header(info))
    return record


# ---------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    if sys.platform == "win32":  # pragma: no cover
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Storage:
    """Part 10 files under *root* plus their :class:`~aiodicom.archive.index.AsyncIndex`.

    Create with ``await Storage.open(root)``.  With ``fsync=False`` files,
    directories and the index skip fsync (tests and scratch data only).
    """

    def __init__(
        self, root: str | os.PathLike[str], index: AsyncIndex, *, fsync: bool = True, layout: str | None = None
    ) -> None:
        self.root = Path(root).resolve()
        self.data_dir = self.root / DATA_DIR
        self.index = index
        self.fsync = fsync
        if layout is None:
            layout = detect_layout(self.data_dir)
        if layout not in _REL_PATH_RE:
            raise ValueError(f"unknown archive layout {layout!r}")
        #: :data:`LAYOUT_FLAT` or, for an archive created before it, :data:`LAYOUT_NESTED`
        self.layout = layout
        self._locks = _KeyedLocks()
        #: set by :meth:`share_between_processes`: lock files for same-UID writes
        self._lock_dir: Path | None = None
        self._known_dirs: set[Path] = set()
        self._staging_ready = False
        self._tasks: set[asyncio.Task[StoreResult]] = set()

    def share_between_processes(self) -> None:
        """Serialise writes of one SOP Instance UID across processes, too.

        For ``aiodicom serve --workers N``: the in-process per-UID lock only
        orders this process's tasks; with this on, a write (file rename and
        index update) also holds an ``flock`` on one of 64 lock files under
        ``ROOT/.locks`` chosen by the UID, so two workers storing the same
        instance at once leave the file and the index row from the same one.
        """
        lock_dir = self.root / ".locks"
        lock_dir.mkdir(exist_ok=True)
        self._lock_dir = lock_dir

    @asynccontextmanager
    async def _hold(self, uid: str) -> AsyncIterator[None]:
        async with self._locks.hold(uid):
            lock_dir = self._lock_dir
            if lock_dir is None:
                yield
                return
            import fcntl

            bucket = hashlib.blake2s(uid.encode(), digest_size=1).digest()[0] % 64
            fd = os.open(lock_dir / f"{bucket:02d}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                # blocking flock in a worker thread: the event loop keeps running
                await asyncio.get_running_loop().run_in_executor(None, fcntl.flock, fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing the descriptor releases the lock

    @classmethod
    async def open(
        cls,
        root: str | os.PathLike[str],
        *,
        fsync: bool = True,
        recover: bool = True,
    ) -> Storage:
        """Open (creating if needed) the archive at *root*; run :meth:`recover`."""
        root_path = Path(root)
        loop = asyncio.get_running_loop()

        def prepare() -> str:
            (root_path / DATA_DIR).mkdir(parents=True, exist_ok=True)
            return detect_layout(root_path / DATA_DIR)

        layout = await loop.run_in_executor(None, prepare)
        # NORMAL, not FULL: rows lost in a power cut are rebuilt from the
        # (fsynced) files by recover(); see the module docstring.
        index = await AsyncIndex.open(root_path / INDEX_NAME, synchronous="NORMAL" if fsync else "OFF")
        storage = cls(root_path, index, fsync=fsync, layout=layout)
        if recover:
            try:
                await storage.recover()
            except BaseException:
                await index.close()
                raise
        return storage

    # -- paths -------------------------------------------------------------------

    @staticmethod
    def relative_path(sop_instance_uid: str, layout: str = LAYOUT_FLAT) -> str:
        """``instances/<h[0:3]>/<uid>.dcm`` (or the nested form) for a valid UID; ValueError otherwise."""
        name = safe_instance_filename(sop_instance_uid)  # validates the UID
        digest = hashlib.sha1(sop_instance_uid.encode("ascii")).hexdigest()
        if layout == LAYOUT_NESTED:
            return f"{DATA_DIR}/{digest[0:2]}/{digest[2:4]}/{name}"
        return f"{DATA_DIR}/{digest[0:3]}/{name}"

    def rel_path(self, sop_instance_uid: str) -> str:
        """The index-relative path of *sop_instance_uid* in this archive's layout; ValueError if invalid."""
        return self.relative_path(sop_instance_uid, self.layout)

    def path_for(self, sop_instance_uid: str) -> Path:
        """Absolute final path of the instance *sop_instance_uid*."""
        return self.root / self.rel_path(sop_instance_uid)

    def absolute_path(self, rel_path: str) -> Path:
        """Validate an index-relative path against the layout; return it absolute.

        Raises :class:`ValueError` for anything that is not exactly a path
        this class would have produced.
        """
        m = _REL_PATH_RE[self.layout].fullmatch(rel_path) if isinstance(rel_path, str) else None
        if m is None or not uid_is_valid(m.group("uid")) or self.rel_path(m.group("uid")) != rel_path:
            raise ValueError(f"not an archive instance path: {rel_path!r}")
        return self.root / rel_path

    def _uid_of(self, path: Path) -> tuple[str, str]:
        """(rel_path, sop_instance_uid) of an absolute instance path."""
        try:
            rel = Path(path).resolve().relative_to(self.root).as_posix()
        except ValueError:
            raise ValueError(f"{path} is not inside the archive {self.root}") from None
        self.absolute_path(rel)
        uid = rel.rsplit("/", 1)[1][: -len(".dcm")]
        return rel, uid

    def _ensure_dir(self, directory: Path) -> None:
        """Create *directory* (and parents) durably; cached."""
        if directory in self._known_dirs:
            return
        missing: list[Path] = []
        d = directory
        while not d.exists():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                pass
            if self.fsync:
                _fsync_dir(d.parent)
        self._known_dirs.add(directory)

    def open_writer(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        source_ae: str | None = None,
    ) -> Part10Writer:
        """A :class:`~aiodicom.part10.Part10Writer` for streaming a large instance.

        Write the data set into it, :meth:`~aiodicom.part10.Part10Writer.commit`
        it, then call :meth:`index_committed` -- only then is the instance
        stored.  (Blocking, briefly: creates the temporary file; directories are made at commit.)
        """
        path = self.path_for(sop_instance_uid)
        staging = self.data_dir / STAGING_DIR
        if not self._staging_ready:
            staging.mkdir(parents=True, exist_ok=True)
            self._staging_ready = True
        # The temporary file goes to one staging directory (same file system,
        # so the commit's rename stays atomic) and the instance's directory is
        # created at commit time, in the committing thread: no mkdir or
        # directory fsync on the event loop for each new instance.
        return Part10Writer(
            path,
            sop_class_uid,
            sop_instance_uid,
            transfer_syntax,
            source_ae=(source_ae or "").strip() or None,
            fsync=self.fsync,
            temp_dir=staging,
            prepare_dir=self._ensure_dir,
        )

    # -- storing -------------------------------------------------------------------

    async def store(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        data: DataSource,
        source_ae: str | None = None,
        *,
        attrs: Dataset | None = None,
    ) -> StoreResult:
        """Write the instance atomically, then index it; return when both are durable.

        *data* is the encoded data set (an :class:`~aiodicom.dataset.EncodedDataset`,
        a buffer or an iterable of buffers) or the path of a Part 10 file to
        copy (its transfer syntax must equal *transfer_syntax*).  *attrs*
        may supply the already decoded data set (header is enough);
        otherwise the header is decoded from *data*.  Raises
        :class:`ValueError` for an invalid UID,
        :class:`~aiodicom.archive.index.InvalidInstanceError` if the data set
        lacks Study/Series/SOP UIDs or names another SOP Instance/Class UID,
        :class:`~aiodicom.dataset.DatasetDecodeError` if it cannot be
        decoded, :class:`OSError` on I/O errors.  Nothing is visible as an
        instance unless this returns.
        """
        rel = self.rel_path(sop_instance_uid)
        if isinstance(data, EncodedDataset):
            source: list[Buffer] | Path = list(data.fragments)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            source = [data]
        elif isinstance(data, (str, os.PathLike)):
            source = Path(data)
        else:
            source = list(data)
        task = asyncio.ensure_future(
            self._store(rel, sop_class_uid, sop_instance_uid, transfer_syntax, source, source_ae, attrs)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def _store(
        self,
        rel: str,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        source: list[Buffer] | Path,
        source_ae: str | None,
        attrs: Dataset | None,
    ) -> StoreResult:
        loop = asyncio.get_running_loop()
        ts = transfer_syntax.rstrip("\x00 ")
        async with self._hold(sop_instance_uid):
            record, size, mtime_ns = await loop.run_in_executor(
                None,
                self._write_sync,
                rel,
                sop_class_uid,
                sop_instance_uid,
                ts,
                source,
                source_ae,
                attrs,
            )
            try:
                replaced = await self.index.add_instance(
                    record, rel, ts, size, source_ae, file_mtime_ns=mtime_ns
                )
            except Exception:
                # Never leave a file for an instance the index does not know
                # (recovery would index it later, but don't rely on that).
                if await self.index.get_instance(sop_instance_uid) is None:
                    await loop.run_in_executor(None, self._unlink_sync, self.root / rel)
                raise
        return StoreResult(sop_instance_uid, rel, size, replaced)

    @staticmethod
    def _check_record(record: InstanceRecord, sop_class_uid: str, sop_instance_uid: str) -> None:
        if record.sop_instance_uid != sop_instance_uid.rstrip("\x00 "):
            raise InvalidInstanceError(
                f"data set SOPInstanceUID {record.sop_instance_uid} differs from "
                f"{sop_instance_uid}"
            )
        if record.sop_class_uid != sop_class_uid.rstrip("\x00 "):
            raise InvalidInstanceError(
                f"data set SOPClassUID {record.sop_class_uid} differs from {sop_class_uid}"
            )

    def _write_sync(
        self,
        rel: str,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        source: list[Buffer] | Path,
        source_ae: str | None,
        attrs: Dataset | None,
    ) -> tuple[InstanceRecord, int, int]:
        """Worker thread: decode header, write the file atomically, stat it."""
        path = self.root / rel
        if isinstance(source, Path):
            info = read_part10_info(source)
            if info.transfer_syntax != transfer_syntax:
                raise ValueError(
                    f"{source} is encoded in {info.transfer_syntax}, not {transfer_syntax}"
                )
            record = record_from_dataset(attrs) if attrs is not None else record_from_file(info)
            self._check_record(record, sop_class_uid, sop_instance_uid)
            fragments: Iterable[Buffer] = iter_part10_dataset_chunks(info)
        else:
            if attrs is not None:
                record = record_from_dataset(attrs)
            else:
                record = record_from_fragments(source, transfer_syntax)
            self._check_record(record, sop_class_uid, sop_instance_uid)
            fragments = source
        self._ensure_dir(path.parent)
        write_part10(
            path,
            sop_class_uid,
            sop_instance_uid,
            transfer_syntax,
            fragments,
            source_ae=(source_ae or "").strip() or None,
            fsync=self.fsync,
        )
        st = os.stat(path)
        return record, st.st_size, st.st_mtime_ns

    def _read_committed_sync(self, path: Path, expected_uid: str) -> tuple[InstanceRecord, str, int, int]:
        """Worker thread: read the header of a committed file, stat it."""
        st = os.stat(path)
        info = read_part10_info(path)
        if info.sop_instance_uid != expected_uid:
            raise InvalidInstanceError(
                f"{path}: File Meta names SOP Instance {info.sop_instance_uid}, "
                f"the path {expected_uid}"
            )
        record = record_from_file(info)
        self._check_record(record, info.sop_class_uid, info.sop_instance_uid)
        return record, info.transfer_syntax, st.st_size, st.st_mtime_ns

    async def index_committed(
        self, target: Part10Writer | str | os.PathLike[str], source_ae: str | None = None
    ) -> StoreResult:
        """Index an instance a :meth:`open_writer` writer has already committed.

        *target* is the committed writer or its final path.  The attributes
        are read back from the file itself (under the per-UID lock), so the
        row always describes the file that is in place.
        """
        if isinstance(target, Part10Writer):
            if not target.closed:
                raise ValueError("the Part10Writer has not been committed")
            path = target.path
        else:
            path = Path(target)
        rel, uid = self._locate(path)
        task = asyncio.ensure_future(self._index_file(rel, uid, source_ae))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def commit_and_index(self, writer: Part10Writer, source_ae: str | None = None) -> StoreResult:
        """Commit an :meth:`open_writer` writer and index the instance.

        :meth:`~aiodicom.part10.Part10Writer.commit` followed by
        :meth:`index_committed`, with the commit and the reading back of the
        file in one worker-thread hop.  A failed commit removes its
        temporary file; if indexing fails after the commit, the committed
        file stays (the caller decides, e.g. removes it when the index does
        not know the instance).  Shielded: once started it completes.
        """
        rel, uid = self._locate(writer.path)
        task = asyncio.ensure_future(self._index_file(rel, uid, source_ae, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    def _locate(self, path: Path) -> tuple[str, str]:
        """(rel_path, sop_instance_uid) of an instance path inside the archive."""
        # A path from path_for()/open_writer() is checked without touching the
        # file system; anything else is resolved and validated.
        uid = path.name[: -len(".dcm")] if path.name.endswith(".dcm") else ""
        if uid and uid_is_valid(uid):
            rel = self.rel_path(uid)
            if path == self.root / rel:
                return rel, uid
        return self._uid_of(path)

    def _commit_read_sync(
        self, writer: Part10Writer, path: Path, expected_uid: str
    ) -> tuple[InstanceRecord, str, int, int]:
        """Worker thread: commit the writer, then read the committed file's header back."""
        writer.commit()  # removes its temporary file if it fails
        return self._read_committed_sync(path, expected_uid)

    async def _index_file(
        self, rel: str, uid: str, source_ae: str | None, writer: Part10Writer | None = None
    ) -> StoreResult:
        loop = asyncio.get_running_loop()
        async with self._hold(uid):
            if writer is not None:
                record, ts, size, mtime_ns = await loop.run_in_executor(
                    None, self._commit_read_sync, writer, self.root / rel, uid
                )
            else:
                record, ts, size, mtime_ns = await loop.run_in_executor(
                    None, self._read_committed_sync, self.root / rel, uid
                )
            replaced = await self.index.add_instance(
                record, rel, ts, size, source_ae, file_mtime_ns=mtime_ns
            )
        return StoreResult(uid, rel, size, replaced)

    # -- removing ------------------------------------------------------------------

    def _unlink_sync(self, path: Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        if self.fsync:
            _fsync_dir(path.parent)

    async def remove(self, sop_instance_uid: str) -> bool:
        """Delete an instance (file first, then row); ``False`` if unknown."""
        loop = asyncio.get_running_loop()
        async with self._hold(sop_instance_uid):
            loc = await self.index.get_instance(sop_instance_uid)
            if loc is None:
                return False
            await loop.run_in_executor(None, self._unlink_sync, self.absolute_path(loc.rel_path))
            await self.index.remove_instance(sop_instance_uid)
        return True

    # -- serving -------------------------------------------------------------------

    def open_for_retrieve(self, rel_path: str) -> Part10Info:
        """File Meta of a stored instance, for sending it (see :mod:`aiodicom.part10`).

        *rel_path* comes from the index and is validated against the layout.
        Raises :class:`ValueError` for a path outside the layout,
        :class:`FileNotFoundError` if the file is gone and
        :class:`~aiodicom.part10.InvalidPart10Error` if it is damaged.
        Blocking (reads the File Meta); see :meth:`aopen_for_retrieve`.
        """
        return read_part10_info(self.absolute_path(rel_path))

    async def aopen_for_retrieve(self, rel_path: str) -> Part10Info:
        """:meth:`open_for_retrieve` on a worker thread."""
        path = self.absolute_path(rel_path)
        return await asyncio.get_running_loop().run_in_executor(None, read_part10_info, path)

    # -- recovery ------------------------------------------------------------------

    def _scan_sync(self) -> tuple[int, dict[str, tuple[int, int]]]:
        """Worker thread: delete temp files; map rel_path -> (size, mtime_ns)."""
        removed = 0
        files: dict[str, tuple[int, int]] = {}
        if not self.data_dir.is_dir():
            return removed, files
        for dirpath, _dirnames, filenames in os.walk(self.data_dir):
            directory = Path(dirpath)
            touched = False
            for name in filenames:
                full = directory / name
                if name.startswith(".") and name.endswith(".tmp"):
                    try:
                        os.unlink(full)
                        removed += 1
                        touched = True
                    except FileNotFoundError:
                        pass
                    continue
                if not name.endswith(".dcm"):
                    continue
                rel = full.relative_to(self.root).as_posix()
                try:
                    self.absolute_path(rel)
                except ValueError:
                    continue  # not ours; leave it alone
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                files[rel] = (st.st_size, st.st_mtime_ns)
            if touched and self.fsync:
                _fsync_dir(directory)
        return removed, files

    async def recover(self) -> RecoveryReport:
        """Make files and index consistent after a crash (see module docstring)."""
        loop = asyncio.get_running_loop()
        report = RecoveryReport()
        report.temp_files_removed, disk = await loop.run_in_executor(None, self._scan_sync)
        for state in await self.index.file_states():
            on_disk = disk.pop(state.rel_path, None)
            if on_disk is None:
                await self.index.remove_instance(state.sop_instance_uid)
                report.rows_removed += 1
            elif on_disk != (state.size, state.file_mtime_ns):
                if await self._reindex(state.rel_path, report):
                    report.rows_refreshed += 1
        for rel in sorted(disk):
            if await self._reindex(rel, report):
                report.orphans_indexed += 1
        return report

    async def _reindex(self, rel: str, report: RecoveryReport) -> bool:
        uid = rel.rsplit("/", 1)[1][: -len(".dcm")]
        try:
            await self._index_file(rel, uid, None)
        except (InvalidPart10Error, InvalidInstanceError, DatasetDecodeError, ValueError, OSError):
            report.unreadable.append(rel)
            return False
        return True

    # -- closing -------------------------------------------------------------------

    async def close(self) -> None:
        """Wait for stores in progress, then close the index."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.index.close()

    async def __aenter__(self) -> Storage:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
