"""Tests for aiodicom.archive.storage: layout, atomic store + index, replacement, recovery."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from aiodicom.archive.index import InvalidInstanceError
from aiodicom.archive.storage import (
    DATA_DIR,
    INDEX_NAME,
    LAYOUT_FLAT,
    LAYOUT_NESTED,
    Storage,
    detect_layout,
    read_header,
    read_header_from_fragments,
)
from aiodicom.dataset import EncodedDataset
from aiodicom.part10 import read_part10_dataset, read_part10_info, write_part10
from aiodicom.uids import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

CT = "1.2.840.10008.5.1.4.1.1.2"
ROOT = "1.2.826.0.1.3680043.10.97"
REPO = Path(__file__).resolve().parents[2]


def uid(n: int) -> str:
    return f"{ROOT}.{n}"


def make_ds(n: int, *, name: str = "Doe^John", pixels: int = 64, **kw: Any) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = uid(n)
    ds.StudyDate = "20240101"
    ds.Modality = "CT"
    ds.PatientName = name
    ds.PatientID = "P1"
    ds.StudyInstanceUID = uid(100000 + n // 10)
    ds.SeriesInstanceUID = uid(200000 + n // 10)
    ds.InstanceNumber = str(n)
    ds.Rows = 1
    ds.Columns = pixels // 2
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    for key, value in kw.items():
        setattr(ds, key, value)
    ds.PixelData = bytes(range(256)) * (pixels // 256) + bytes(pixels % 256)
    return ds


def encode(ds: Dataset, ts: str = ExplicitVRLittleEndian) -> EncodedDataset:
    return EncodedDataset.from_dataset(ds, ts)


def image_query(**kw: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    for key, value in kw.items():
        setattr(ds, key, value)
    return ds


def files_under(root: Path, suffix: str) -> list[Path]:
    return sorted(p for p in (root / DATA_DIR).rglob("*") if p.is_file() and p.name.endswith(suffix))


@pytest.fixture
async def storage(tmp_path: Path) -> Any:
    s = await Storage.open(tmp_path / "archive")
    yield s
    await s.close()


async def name_in_index(storage: Storage, n: int) -> str | None:
    res = await storage.index.query(
        None,
        image_query(StudyInstanceUID=uid(100000 + n // 10), SeriesInstanceUID=uid(200000 + n // 10),
                    SOPInstanceUID=uid(n), PatientName=""),
        "study",
    )
    names = [str(r.PatientName) for r in res]
    return names[0] if names else None


# ---------------------------------------------------------------------------
# Storing and serving
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian]
)
async def test_store_then_query_and_retrieve(storage: Storage, ts: str) -> None:
    ds = make_ds(1, name="Müller^Jörg", SpecificCharacterSet="ISO_IR 100")
    enc = encode(ds, ts)
    result = await storage.store(CT, uid(1), ts, enc, "MODALITY")
    assert result.replaced is False
    digest = hashlib.sha1(uid(1).encode()).hexdigest()
    assert result.rel_path == f"{DATA_DIR}/{digest[:3]}/{uid(1)}.dcm"
    assert storage.layout == LAYOUT_FLAT
    path = storage.root / result.rel_path
    assert path.is_file() and result.size == path.stat().st_size

    info, data = read_part10_dataset(path)
    assert data.tobytes() == enc.tobytes()
    assert (info.sop_instance_uid, info.transfer_syntax, info.source_ae_title) == (uid(1), ts, "MODALITY")
    assert await name_in_index(storage, 1) == "Müller^Jörg"

    (item,) = await storage.index.instances_for_retrieve(
        None, image_query(StudyInstanceUID=uid(100000), SeriesInstanceUID=uid(200000), SOPInstanceUID=uid(1)))
    served = storage.open_for_retrieve(item.rel_path)
    assert served.path == path and served.transfer_syntax == ts
    assert (await storage.aopen_for_retrieve(item.rel_path)).dataset_length == enc.nbytes


@pytest.mark.parametrize(
    "bad",
    ["", "1.2.03", "../../etc/passwd", "1.2/3", "1.2.3\x00", "a.b", "1.2.3.", "1." * 40 + "1", "１.２"],
)
async def test_invalid_uids_never_become_paths(storage: Storage, bad: str) -> None:
    ds = make_ds(1)
    with pytest.raises(ValueError):
        await storage.store(CT, bad, ExplicitVRLittleEndian, encode(ds))
    with pytest.raises(ValueError):
        storage.path_for(bad)
    assert list((storage.root / DATA_DIR).rglob("*")) == []


@pytest.mark.parametrize(
    "rel",
    [
        "instances/../index.sqlite3",
        "/etc/passwd",
        "instances/00/00/1.2.3.dcm",  # wrong hash directories
        "instances/000/1.2.3.dcm",
        "instances/aa/bb/../../../x.dcm",
        "instances/abc/../../x.dcm",
        "instances/ab/cd/1.2.03.dcm",
        "instances/abc/1.2.03.dcm",
        "index.sqlite3",
    ],
)
def test_absolute_path_rejects_anything_outside_the_layout(tmp_path: Path, rel: str) -> None:
    s = Storage(tmp_path, index=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        s.absolute_path(rel)
    good = Storage.relative_path("1.2.3")
    assert s.absolute_path(good) == tmp_path.resolve() / good


async def test_header_decoding_never_reads_pixel_data(storage: Storage) -> None:
    ds = make_ds(2)
    del ds.PixelData
    head = encode(ds).tobytes()
    # A Pixel Data element claiming 2 GB that is not there: must not be read.
    bogus = head + struct.pack("<HH2s2xL", 0x7FE0, 0x0010, b"OW", 0x7FFFFFF0) + b"\x00" * 16
    fragments = [bogus[i : i + 7] for i in range(0, len(bogus), 7)]
    header = read_header_from_fragments(fragments, ExplicitVRLittleEndian)
    assert header.SOPInstanceUID == uid(2) and 0x7FE00010 not in header
    result = await storage.store(CT, uid(2), ExplicitVRLittleEndian, fragments)
    assert result.size > len(bogus)
    assert read_header(read_part10_info(storage.root / result.rel_path)).PatientID == "P1"


async def test_mismatched_or_incomplete_data_sets_are_refused(storage: Storage) -> None:
    with pytest.raises(InvalidInstanceError, match="SOPInstanceUID"):
        await storage.store(CT, uid(3), ExplicitVRLittleEndian, encode(make_ds(4)))
    with pytest.raises(InvalidInstanceError, match="SOPClassUID"):
        await storage.store("1.2.840.10008.5.1.4.1.1.4", uid(4), ExplicitVRLittleEndian, encode(make_ds(4)))
    ds = make_ds(5)
    del ds.StudyInstanceUID
    with pytest.raises(InvalidInstanceError, match="StudyInstanceUID"):
        await storage.store(CT, uid(5), ExplicitVRLittleEndian, encode(ds))
    assert files_under(storage.root, "") == []
    assert (await storage.index.count()).instances == 0


async def test_index_failure_leaves_no_file(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("database is gone")

    monkeypatch.setattr(storage.index, "add_instance", broken)
    with pytest.raises(RuntimeError):
        await storage.store(CT, uid(6), ExplicitVRLittleEndian, encode(make_ds(6)))
    assert files_under(storage.root, "") == []


# ---------------------------------------------------------------------------
# Duplicates
# ---------------------------------------------------------------------------


async def test_duplicate_replaces_file_and_row_consistently(storage: Storage) -> None:
    first = await storage.store(CT, uid(7), ExplicitVRLittleEndian, encode(make_ds(7, name="First^Version")))
    enc2 = encode(make_ds(7, name="Second^Version", pixels=512), ImplicitVRLittleEndian)
    second = await storage.store(CT, uid(7), ImplicitVRLittleEndian, enc2, "OTHER")
    assert (first.replaced, second.replaced) == (False, True)
    assert first.rel_path == second.rel_path
    assert files_under(storage.root, ".dcm") == [storage.root / second.rel_path]
    info, data = read_part10_dataset(storage.root / second.rel_path)
    assert info.transfer_syntax == ImplicitVRLittleEndian and data.tobytes() == enc2.tobytes()
    assert await name_in_index(storage, 7) == "Second^Version"
    loc = await storage.index.get_instance(uid(7))
    assert loc is not None
    assert (loc.size, loc.transfer_syntax) == (second.size, ImplicitVRLittleEndian)
    assert (await storage.index.count()).instances == 1


async def test_concurrent_duplicates_keep_file_and_row_in_step(storage: Storage) -> None:
    names = [f"Name^V{k}" for k in range(8)]
    results = await asyncio.gather(
        *(storage.store(CT, uid(8), ExplicitVRLittleEndian, encode(make_ds(8, name=n))) for n in names)
    )
    assert sum(not r.replaced for r in results) == 1
    on_disk = read_header(read_part10_info(storage.root / results[0].rel_path))
    assert str(on_disk.PatientName) == await name_in_index(storage, 8)
    assert len(files_under(storage.root, ".dcm")) == 1 and files_under(storage.root, ".tmp") == []


# ---------------------------------------------------------------------------
# Streaming, copying, removing, cancelling
# ---------------------------------------------------------------------------


async def test_streaming_writer_then_index_committed(storage: Storage) -> None:
    enc = encode(make_ds(9, pixels=4096))
    writer = storage.open_writer(CT, uid(9), ExplicitVRLittleEndian, "BIGSENDER")
    data = enc.tobytes()
    for i in range(0, len(data), 1000):
        writer.write(data[i : i + 1000])
    with pytest.raises(ValueError, match="not been committed"):
        await storage.index_committed(writer)
    assert await name_in_index(storage, 9) is None  # not an instance until indexed
    writer.commit()
    result = await storage.index_committed(writer, "BIGSENDER")
    assert result.replaced is False and result.rel_path == Storage.relative_path(uid(9))
    assert await name_in_index(storage, 9) == "Doe^John"
    # index_committed by path, after a second streamed version
    w2 = storage.open_writer(CT, uid(9), ExplicitVRLittleEndian)
    w2.write(encode(make_ds(9, name="Streamed^Again")).tobytes())
    w2.commit()
    assert (await storage.index_committed(storage.path_for(uid(9)))).replaced is True
    assert await name_in_index(storage, 9) == "Streamed^Again"
    with pytest.raises(ValueError):
        await storage.index_committed(storage.root.parent / "elsewhere.dcm")


async def test_store_from_a_part10_file(storage: Storage, tmp_path: Path) -> None:
    src = tmp_path / "incoming.dcm"
    enc = encode(make_ds(10))
    write_part10(src, CT, uid(10), ExplicitVRLittleEndian, enc.fragments, fsync=False)
    before = src.read_bytes()
    result = await storage.store(CT, uid(10), ExplicitVRLittleEndian, src, "IMPORT")
    assert src.read_bytes() == before  # copied, not moved
    assert read_part10_dataset(storage.root / result.rel_path)[1].tobytes() == enc.tobytes()
    assert await name_in_index(storage, 10) == "Doe^John"
    with pytest.raises(ValueError, match="encoded in"):
        await storage.store(CT, uid(10), ImplicitVRLittleEndian, src)


async def test_remove(storage: Storage) -> None:
    result = await storage.store(CT, uid(11), ExplicitVRLittleEndian, encode(make_ds(11)))
    assert await storage.remove(uid(11)) is True
    assert not (storage.root / result.rel_path).exists()
    assert await storage.index.get_instance(uid(11)) is None
    assert await storage.remove(uid(11)) is False
    with pytest.raises(FileNotFoundError):
        storage.open_for_retrieve(result.rel_path)


async def test_cancelled_store_still_completes_consistently(tmp_path: Path) -> None:
    s = await Storage.open(tmp_path / "archive")
    task = asyncio.ensure_future(s.store(CT, uid(12), ExplicitVRLittleEndian, encode(make_ds(12, pixels=1 << 16))))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await s.close()  # waits for the shielded store
    s = await Storage.open(tmp_path / "archive", recover=False)
    try:
        loc = await s.index.get_instance(uid(12))
        assert loc is not None and (s.root / loc.rel_path).is_file()
        assert files_under(s.root, ".tmp") == []
    finally:
        await s.close()


# ---------------------------------------------------------------------------
# Recovery
# ---------------------------------------------------------------------------


async def test_index_commits_are_synced_at_checkpoints_and_rows_lost_are_rebuilt(tmp_path: Path) -> None:
    # With fsync on, the files are fsynced before their row is committed and
    # the index runs WAL with synchronous=NORMAL (1): a power cut can lose the
    # last commits, and the recovery of the next open indexes those files.
    root = tmp_path / "archive"
    s = await Storage.open(root)
    try:
        assert await s.index.call(lambda ix: ix._conn.execute("PRAGMA synchronous").fetchone()[0]) == 1
        await s.store(CT, uid(30), ExplicitVRLittleEndian, encode(make_ds(30)))
        await s.store(CT, uid(31), ExplicitVRLittleEndian, encode(make_ds(31)))
        # the rows of the last commits "lost" (as a power cut may do)
        await s.index.remove_instance(uid(31))
    finally:
        await s.close()
    s = await Storage.open(root)
    try:
        assert await s.index.get_instance(uid(30)) is not None
        assert await s.index.get_instance(uid(31)) is not None  # re-indexed from its file
    finally:
        await s.close()
    s = await Storage.open(root, fsync=False)
    try:
        assert await s.index.call(lambda ix: ix._conn.execute("PRAGMA synchronous").fetchone()[0]) == 0
    finally:
        await s.close()


async def test_recover_repairs_every_kind_of_damage(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    s = await Storage.open(root)
    for n in (20, 21, 22):
        await s.store(CT, uid(n), ExplicitVRLittleEndian, encode(make_ds(n)))
    await s.close()

    # 1. a half-written temp file
    tmp = Storage(root, index=None).path_for(uid(20)).parent / f".{uid(23)}.dcm.0123456789abcdef.tmp"  # type: ignore[arg-type]
    tmp.write_bytes(b"partial")
    # 2. a row whose file is gone
    os.unlink(Storage(root, index=None).path_for(uid(20)))  # type: ignore[arg-type]
    # 3. a file replaced after its row was written (crash before the index update)
    p21 = Storage(root, index=None).path_for(uid(21))  # type: ignore[arg-type]
    write_part10(p21, CT, uid(21), ExplicitVRLittleEndian, encode(make_ds(21, pixels=128, InstanceNumber="77")).fragments,
                 fsync=False)
    # 4. a complete file without a row (crash between rename and index commit)
    p24 = Storage(root, index=None).path_for(uid(24))  # type: ignore[arg-type]
    p24.parent.mkdir(parents=True, exist_ok=True)
    write_part10(p24, CT, uid(24), ExplicitVRLittleEndian, encode(make_ds(24)).fragments, fsync=False)
    # 5. garbage at an instance path, and a foreign file
    p25 = Storage(root, index=None).path_for(uid(25))  # type: ignore[arg-type]
    p25.parent.mkdir(parents=True, exist_ok=True)
    p25.write_bytes(b"not dicom")
    (root / DATA_DIR / "README.txt").write_text("not ours")

    s = await Storage.open(root, recover=False)
    try:
        report = await s.recover()
        assert report.temp_files_removed == 1
        assert report.rows_removed == 1
        assert report.rows_refreshed == 1
        assert report.orphans_indexed == 1
        assert report.unreadable == [Storage.relative_path(uid(25))]
        assert not tmp.exists() and files_under(root, ".tmp") == []
        assert await s.index.get_instance(uid(20)) is None
        res = await s.index.query(None, image_query(StudyInstanceUID=uid(100002), SeriesInstanceUID=uid(200002),
                                                    SOPInstanceUID=uid(21), InstanceNumber=""), "study")
        assert [r.InstanceNumber for r in res] == [77]
        loc = await s.index.get_instance(uid(21))
        assert loc is not None and loc.size == p21.stat().st_size
        assert await name_in_index(s, 24) == "Doe^John"
        assert await s.index.get_instance(uid(25)) is None
        for state in await s.index.file_states():
            assert (root / state.rel_path).stat().st_size == state.size
        # a second pass finds nothing more to do
        again = await s.recover()
        assert (again.temp_files_removed, again.rows_removed, again.rows_refreshed, again.orphans_indexed) == (0,) * 4
    finally:
        await s.close()


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pydicom.dataset import Dataset
    from aiodicom.archive.storage import Storage
    from aiodicom.dataset import EncodedDataset

    CT = "1.2.840.10008.5.1.4.1.1.2"
    TS = "1.2.840.10008.1.2.1"
    ROOT = "1.2.826.0.1.3680043.10.96"
    PIXELS = bytes(range(256)) * 1024

    def encoded(i, generation):
        ds = Dataset()
        ds.InstanceNumber = str(generation)
        ds.SOPClassUID = CT
        ds.SOPInstanceUID = f"{ROOT}.{i}"
        ds.PatientName = "Crash^Test"
        ds.PatientID = "CRASH"
        ds.StudyInstanceUID = f"{ROOT}.1000.{i // 50}"
        ds.SeriesInstanceUID = f"{ROOT}.2000.{i // 10}"
        ds.BitsAllocated = 8
        ds.PixelData = PIXELS
        return EncodedDataset.from_dataset(ds, TS)

    async def main(root, start):
        storage = await Storage.open(root)
        async def worker(k):
            # 4 workers store continuously, so that when one is acknowledged
            # the others are somewhere in the middle of their store.
            i = start + k
            while True:
                target = i - 3 if i % 5 == 0 and i - 3 >= start else i  # some replacements
                await storage.store(CT, f"{ROOT}.{target}", TS, encoded(target, i), "CRASHER")
                sys.stdout.write(f"{ROOT}.{target}\\n")
                sys.stdout.flush()
                i += 4
        await asyncio.gather(*(worker(k) for k in range(4)))

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


async def test_crash_consistency_sigkill_mid_store(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    script = tmp_path / "crash_child.py"
    script.write_text(CHILD)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    acked: set[str] = set()
    for round_no, (kill_after, delay) in enumerate(((3, 0.0), (11, 0.003), (26, 0.011), (30, 0.0))):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(root), str(1 + round_no * 10000)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        assert proc.stdout is not None and proc.stderr is not None
        this_round: list[str] = []
        try:
            while len(this_round) < kill_after:
                line = await asyncio.to_thread(proc.stdout.readline)
                if not line:
                    pytest.fail(f"child exited early: {proc.stderr.read()}")
                this_round.append(line.strip())
            # Deliberate (not synchronisation): vary where in its store the
            # child is when the SIGKILL lands.
            await asyncio.sleep(delay)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            rest, _ = await asyncio.to_thread(proc.communicate)
        this_round += [line.strip() for line in rest.splitlines() if line.strip()]
        acked |= set(this_round)
        assert proc.returncode == -signal.SIGKILL

        temps_before = files_under(root, ".tmp")
        s = await Storage.open(root, recover=False)
        try:
            report = await s.recover()
            print(f"\nround {round_no}: {len(this_round)} acknowledged, {len(temps_before)} temp file(s) "
                  f"left by the kill, report {report}")
            assert report.temp_files_removed == len(temps_before)
            assert report.unreadable == []
            assert files_under(root, ".tmp") == []
            # every acknowledged instance is on disk, complete, and indexed
            for sop in sorted(acked):
                loc = await s.index.get_instance(sop)
                assert loc is not None, sop
                info = s.open_for_retrieve(loc.rel_path)
                assert info.sop_instance_uid == sop and info.dataset_length > 256 * 1024
                assert read_header(info).SOPInstanceUID == sop
            # nothing is indexed without its file, and every file is indexed
            states = await s.index.file_states()
            for state in states:
                assert (root / state.rel_path).stat().st_size == state.size
            assert {st.rel_path for st in states} == {
                p.relative_to(root.resolve()).as_posix() for p in files_under(root.resolve(), ".dcm")
            }
            # index rows describe the file in place (replacements included)
            for state in states:
                on_disk = read_header(read_part10_info(root / state.rel_path))
                res = await s.index.query(None, image_query(
                    StudyInstanceUID=on_disk.StudyInstanceUID, SeriesInstanceUID=on_disk.SeriesInstanceUID,
                    SOPInstanceUID=state.sop_instance_uid, InstanceNumber=""), "study")
                assert [r.InstanceNumber for r in res] == [on_disk.InstanceNumber]
        finally:
            await s.close()
    assert (root / INDEX_NAME).exists()


# ---------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------


def test_detect_layout(tmp_path: Path) -> None:
    d = tmp_path / "instances"
    assert detect_layout(d) == LAYOUT_FLAT  # missing: a new archive
    d.mkdir()
    (d / ".incoming").mkdir()
    (d / "ab").write_text("a file, not a hash directory")
    assert detect_layout(d) == LAYOUT_FLAT
    (d / "abc").mkdir()
    assert detect_layout(d) == LAYOUT_FLAT
    (d / "0f").mkdir()
    assert detect_layout(d) == LAYOUT_NESTED


async def test_an_archive_in_the_nested_layout_keeps_it(tmp_path: Path) -> None:
    """An archive created before the flat layout (instances/ab/cd/uid.dcm) is used as it is."""
    root = tmp_path / "archive"
    digest = hashlib.sha1(uid(30).encode()).hexdigest()
    old_path = root / DATA_DIR / digest[:2] / digest[2:4] / f"{uid(30)}.dcm"
    old_path.parent.mkdir(parents=True)
    write_part10(old_path, CT, uid(30), ExplicitVRLittleEndian, encode(make_ds(30)).fragments, fsync=False)

    s = await Storage.open(root)  # recovery indexes the file it finds
    try:
        assert s.layout == LAYOUT_NESTED
        assert await name_in_index(s, 30) == "Doe^John"
        loc = await s.index.get_instance(uid(30))
        assert loc is not None and s.absolute_path(loc.rel_path) == old_path
        result = await s.store(CT, uid(31), ExplicitVRLittleEndian, encode(make_ds(31)))
        d31 = hashlib.sha1(uid(31).encode()).hexdigest()
        assert result.rel_path == f"{DATA_DIR}/{d31[:2]}/{d31[2:4]}/{uid(31)}.dcm"
        with pytest.raises(ValueError):  # a flat path is not one of this archive's
            s.absolute_path(Storage.relative_path(uid(31), LAYOUT_FLAT))
    finally:
        await s.close()
    s = await Storage.open(root)
    try:
        assert s.layout == LAYOUT_NESTED
        assert (await s.recover()).orphans_indexed == 0
        assert {st.sop_instance_uid for st in await s.index.file_states()} == {uid(30), uid(31)}
    finally:
        await s.close()


async def test_a_new_archive_makes_one_directory_level(tmp_path: Path) -> None:
    s = await Storage.open(tmp_path / "archive")
    try:
        for n in range(40, 45):
            await s.store(CT, uid(n), ExplicitVRLittleEndian, encode(make_ds(n)))
        assert s.layout == LAYOUT_FLAT
        dirs = [p for p in (s.root / DATA_DIR).iterdir() if not p.name.startswith(".")]
        assert dirs and all(len(p.name) == 3 and p.is_dir() for p in dirs)
        assert all(f.parent.parent == s.root / DATA_DIR for f in files_under(s.root, ".dcm"))
    finally:
        await s.close()
    s = await Storage.open(tmp_path / "archive")
    try:
        assert s.layout == LAYOUT_FLAT
    finally:
        await s.close()
