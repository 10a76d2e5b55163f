"""Tests for aiodicom.part10 (Part 10 file reading and atomic writing)."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread, examples
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_dataset

from aiodicom import uids
from aiodicom.dataset import EncodedDataset
from aiodicom.part10 import (
    InvalidPart10Error,
    Part10Info,
    Part10Writer,
    build_file_meta,
    iter_part10_dataset_chunks,
    read_part10_dataset,
    read_part10_info,
    safe_instance_filename,
    write_part10,
)

CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
INSTANCE = "1.2.826.0.1.3680043.8.498.12345"
NATIVE = list(uids.NATIVE_TRANSFER_SYNTAXES)
TEST_FILES = [
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "image_dfl.dcm",
    "JPEG2000.dcm",
    "MR_small_RLE.dcm",
    "SC_rgb_rle.dcm",
    "JPEG-lossy.dcm",
]
COMPRESSED_FILES = ["JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_rle.dcm", "JPEG-lossy.dcm"]


def data_file(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:  # pragma: no cover - depends on the pydicom install
        pytest.skip(f"pydicom test file {name} not available")
    return str(path)


def pydicom_encode(ds: Dataset, implicit_vr: bool, little_endian: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit_vr
    fp.is_little_endian = little_endian
    write_dataset(fp, ds)
    return bytes(fp.getvalue())


def assert_same_dataset(actual: Dataset, expected: Dataset) -> None:
    assert sorted(actual.keys()) == sorted(expected.keys())
    for elem in expected:
        other = actual[elem.tag]
        if elem.VR == "SQ":
            assert len(other.value) == len(elem.value)
            for a, e in zip(other.value, elem.value):
                assert_same_dataset(a, e)
        else:
            assert other.value == elem.value, elem.tag


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def explicit_element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
        return struct.pack("<HH2s2xL", group, element, vr, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


# ---------------------------------------------------------------------------
# build_file_meta
# ---------------------------------------------------------------------------


def test_build_file_meta_layout() -> None:
    meta = build_file_meta(CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian, source_ae="STORESCU")
    # (0002,0000) UL 4 <group length>
    assert meta[:8] == b"\x02\x00\x00\x00UL\x04\x00"
    (group_length,) = struct.unpack_from("<L", meta, 8)
    assert group_length == len(meta) - 12
    # (0002,0001) OB, reserved, length 2, 00 01
    assert meta[12:26] == b"\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01"
    assert len(meta) % 2 == 0

    # walk the elements
    pos = 12
    seen: dict[int, tuple[bytes, bytes]] = {}
    while pos < len(meta):
        group, elem, vr = struct.unpack_from("<HH2s", meta, pos)
        if vr == b"OB":
            (length,) = struct.unpack_from("<L", meta, pos + 8)
            pos += 12
        else:
            (length,) = struct.unpack_from("<H", meta, pos + 6)
            pos += 8
        assert length % 2 == 0
        seen[group << 16 | elem] = (vr, meta[pos : pos + length])
        pos += length
    assert pos == len(meta)
    assert list(seen) == [
        0x00020001,
        0x00020002,
        0x00020003,
        0x00020010,
        0x00020012,
        0x00020013,
        0x00020016,
    ]
    assert seen[0x00020002] == (b"UI", CT_CLASS.encode() + b"\x00")  # odd -> NUL pad
    assert seen[0x00020003][1].rstrip(b"\x00") == INSTANCE.encode()
    assert seen[0x00020010] == (b"UI", uids.ExplicitVRLittleEndian.encode() + b"\x00")
    assert seen[0x00020012][1].rstrip(b"\x00") == uids.IMPLEMENTATION_CLASS_UID.encode()
    assert seen[0x00020013] == (b"SH", b"AIODICOM_010")
    assert seen[0x00020016] == (b"AE", b"STORESCU")


def test_build_file_meta_pads_text_with_space_and_omits_ae() -> None:
    meta = build_file_meta(CT_CLASS, INSTANCE, uids.ImplicitVRLittleEndian, source_ae="ABC")
    assert b"AE\x04\x00ABC " in meta
    no_ae = build_file_meta(CT_CLASS, INSTANCE, uids.ImplicitVRLittleEndian)
    assert b"\x02\x00\x16\x00" not in no_ae
    assert build_file_meta(CT_CLASS, INSTANCE, uids.ImplicitVRLittleEndian, source_ae="  ") == (
        no_ae
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"transfer_syntax": "1.2.840.10008.1.02"},
        {"transfer_syntax": ""},
        {"sop_class_uid": ""},
        {"sop_instance_uid": "1.2/3"},
        {"sop_instance_uid": "1.2.3" + "4" * 70},
        {"sop_instance_uid": "1.2.\u0663"},
        {"source_ae": "A" * 17},
        {"source_ae": "BAD\\AE"},
        {"source_ae": "ÄE"},
        {"source_ae": "A\nB"},
    ],
)
def test_build_file_meta_rejects(kwargs: dict[str, str]) -> None:
    args: dict[str, Any] = {
        "sop_class_uid": CT_CLASS,
        "sop_instance_uid": INSTANCE,
        "transfer_syntax": uids.ExplicitVRLittleEndian,
    }
    overrides = dict(kwargs)  # parametrized dicts are shared between runs
    source_ae = overrides.pop("source_ae", None)
    args.update(overrides)
    with pytest.raises(ValueError):
        build_file_meta(**args, source_ae=source_ae)


def test_build_file_meta_is_lenient_on_sop_uids() -> None:
    # real-world UIDs with leading zeros in a component are still stored
    meta = build_file_meta("1.2.840.10008.5.1.4.1.1.2", "1.2.03.4", uids.ExplicitVRLittleEndian)
    assert b"1.2.03.4" in meta


# ---------------------------------------------------------------------------
# write_part10 -> pydicom.dcmread
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("ts", NATIVE)
def test_written_file_is_read_by_pydicom(tmp_path: Path, ts: str) -> None:
    source = examples.ct
    encoded = EncodedDataset.from_dataset(source, ts)
    path = tmp_path / safe_instance_filename(source.SOPInstanceUID)
    write_part10(
        path,
        source.SOPClassUID,
        source.SOPInstanceUID,
        ts,
        encoded.fragments,
        source_ae="AIODICOM",
        fsync=False,
    )
    assert listing(tmp_path) == [path.name]

    ds = dcmread(path)
    meta = ds.file_meta
    assert ds.preamble == b"\x00" * 128
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert meta.MediaStorageSOPClassUID == source.SOPClassUID
    assert meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
    assert meta.TransferSyntaxUID == ts
    assert meta.ImplementationClassUID == uids.IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == uids.IMPLEMENTATION_VERSION_NAME
    assert meta.SourceApplicationEntityTitle == "AIODICOM"
    info = read_part10_info(path)
    assert meta.FileMetaInformationGroupLength == info.dataset_offset - 132 - 12

    reference = examples.ct
    assert_same_dataset(ds, reference)
    assert ds.PixelData == reference.PixelData
    if ts != uids.ExplicitVRBigEndian:
        assert (ds.pixel_array == reference.pixel_array).all()


@pytest.mark.parametrize("name", COMPRESSED_FILES)
def test_written_compressed_file_is_read_by_pydicom(tmp_path: Path, name: str) -> None:
    source = dcmread(data_file(name))
    ts = str(source.file_meta.TransferSyntaxUID)
    encoded = EncodedDataset.from_dataset(source, ts)
    path = tmp_path / "out.dcm"
    write_part10(path, source.SOPClassUID, source.SOPInstanceUID, ts, encoded, fsync=False)
    ds = dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == ts
    assert ds.PixelData == source.PixelData
    assert_same_dataset(ds, dcmread(data_file(name)))


def test_write_part10_accepts_generator_and_mixed_buffers(tmp_path: Path) -> None:
    data = EncodedDataset.from_dataset(examples.ct, uids.ExplicitVRLittleEndian).tobytes()

    def gen() -> Iterator[Any]:
        for i in range(0, len(data), 1000):
            chunk = data[i : i + 1000]
            yield (bytes, bytearray, memoryview)[(i // 1000) % 3](chunk)

    path = tmp_path / "gen.dcm"
    write_part10(path, CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian, gen(), fsync=False)
    info, encoded = read_part10_dataset(path)
    assert encoded.tobytes() == data


def test_write_part10_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(b"old")
    write_part10(path, CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian, [b"\x08\x00"], fsync=False)
    assert read_part10_info(path).dataset_length == 2


def test_write_part10_with_fsync(tmp_path: Path) -> None:
    path = tmp_path / "synced.dcm"
    data = EncodedDataset.from_dataset(examples.ct, uids.ImplicitVRLittleEndian)
    write_part10(path, CT_CLASS, INSTANCE, data.transfer_syntax, data.fragments)
    info, encoded = read_part10_dataset(path)
    assert encoded.tobytes() == data.tobytes()
    assert listing(tmp_path) == ["synced.dcm"]


def test_written_file_permissions_follow_umask(tmp_path: Path) -> None:
    if os.name != "posix":  # pragma: no cover
        pytest.skip("POSIX permissions")
    old = os.umask(0o022)
    try:
        path = tmp_path / "perm.dcm"
        write_part10(path, CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian, [], fsync=False)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------------------
# read_part10_info on files written by pydicom
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("ts", NATIVE)
def test_dcmwrite_file_offset_and_dataset_bytes(tmp_path: Path, ts: str) -> None:
    ds = examples.ct
    ds.file_meta.TransferSyntaxUID = ts
    path = tmp_path / "pydicom.dcm"
    dcmwrite(path, ds, enforce_file_format=True)

    info = read_part10_info(path)
    raw = path.read_bytes()
    assert info.path == path
    assert info.sop_class_uid == ds.SOPClassUID
    assert info.sop_instance_uid == ds.SOPInstanceUID
    assert info.transfer_syntax == ts
    assert info.dataset_offset == 132 + 12 + dcmread(path).file_meta.FileMetaInformationGroupLength
    assert info.dataset_length == len(raw) - info.dataset_offset
    assert info.implementation_class_uid  # pydicom's own

    # the bytes from the offset are exactly what encoding the data set gives
    body = raw[info.dataset_offset :]
    ours = EncodedDataset.from_dataset(examples.ct, ts).tobytes()
    assert body == ours
    if ts != uids.DeflatedExplicitVRLittleEndian:
        implicit = ts == uids.ImplicitVRLittleEndian
        little = ts != uids.ExplicitVRBigEndian
        assert body == pydicom_encode(examples.ct, implicit, little)

    _, encoded = read_part10_dataset(path)
    assert encoded.transfer_syntax == ts
    assert encoded.tobytes() == body
    assert_same_dataset(encoded.decode(), examples.ct)


@pytest.mark.parametrize("name", TEST_FILES)
def test_read_info_matches_pydicom(name: str) -> None:
    path = data_file(name)
    ref = dcmread(path)
    info = read_part10_info(path)
    meta = ref.file_meta
    assert info.sop_class_uid == meta.MediaStorageSOPClassUID
    assert info.sop_instance_uid == meta.MediaStorageSOPInstanceUID
    assert info.transfer_syntax == meta.TransferSyntaxUID
    assert info.implementation_class_uid == meta.get("ImplementationClassUID")
    assert info.dataset_offset == 132 + 12 + meta.FileMetaInformationGroupLength
    assert info.dataset_offset + info.dataset_length == os.path.getsize(path)

    info2, encoded = read_part10_dataset(path)
    assert info2 == info
    assert encoded.nbytes == info.dataset_length
    assert encoded.sop_uids() == (ref.SOPClassUID, ref.SOPInstanceUID)
    assert_same_dataset(encoded.decode(), ref)


@pytest.mark.parametrize("name", COMPRESSED_FILES + ["image_dfl.dcm", "MR_small_bigendian.dcm"])
def test_read_write_is_byte_identical(tmp_path: Path, name: str) -> None:
    info, encoded = read_part10_dataset(data_file(name))
    out = tmp_path / "copy.dcm"
    write_part10(
        out,
        info.sop_class_uid,
        info.sop_instance_uid,
        info.transfer_syntax,
        encoded.fragments,
        fsync=False,
    )
    info2, encoded2 = read_part10_dataset(out)
    assert encoded2.tobytes() == encoded.tobytes()
    assert (info2.sop_class_uid, info2.sop_instance_uid, info2.transfer_syntax) == (
        info.sop_class_uid,
        info.sop_instance_uid,
        info.transfer_syntax,
    )
    # and pydicom agrees it is the same instance
    original = dcmread(data_file(name))
    copy = dcmread(out)
    assert copy.PixelData == original.PixelData
    assert_same_dataset(copy, original)


# ---------------------------------------------------------------------------
# read_part10_info errors
# ---------------------------------------------------------------------------


def _valid_file_bytes() -> bytes:
    meta = build_file_meta(CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian)
    body = EncodedDataset.from_dataset(examples.ct, uids.ExplicitVRLittleEndian).tobytes()
    return bytes(128) + b"DICM" + meta + body


def test_read_info_garbage(tmp_path: Path) -> None:
    path = tmp_path / "garbage"
    path.write_bytes(os.urandom(4096).replace(b"DICM", b"XXXX"))
    with pytest.raises(InvalidPart10Error, match="DICM"):
        read_part10_info(path)


def test_read_info_empty_and_short(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    with pytest.raises(InvalidPart10Error, match="not a DICOM Part 10 file"):
        read_part10_info(path)
    path.write_bytes(bytes(100))
    with pytest.raises(InvalidPart10Error):
        read_part10_info(path)
    path.write_bytes(bytes(128) + b"DIC")
    with pytest.raises(InvalidPart10Error):
        read_part10_info(path)


def test_read_info_without_dicm(tmp_path: Path) -> None:
    # a raw data set without preamble (what some tools write) is rejected
    path = tmp_path / "raw.dcm"
    path.write_bytes(EncodedDataset.from_dataset(examples.ct, uids.ImplicitVRLittleEndian).tobytes())
    with pytest.raises(InvalidPart10Error, match="DICM"):
        read_part10_info(path)
    assert issubclass(InvalidPart10Error, ValueError)


def test_read_info_truncated_meta(tmp_path: Path) -> None:
    raw = _valid_file_bytes()
    meta_len = len(build_file_meta(CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian))
    path = tmp_path / "trunc.dcm"
    # cut inside the File Meta at many points: always a clear error
    for cut in range(133, 132 + meta_len - 1, 3):
        path.write_bytes(raw[:cut])
        with pytest.raises(InvalidPart10Error):
            read_part10_info(path)


def test_read_info_meta_only_file(tmp_path: Path) -> None:
    meta = build_file_meta(CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian)
    path = tmp_path / "meta_only.dcm"
    path.write_bytes(bytes(128) + b"DICM" + meta)
    info = read_part10_info(path)
    assert info.dataset_offset == 132 + len(meta)
    assert info.dataset_length == 0


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        (0x0002, "MediaStorageSOPClassUID"),
        (0x0003, "MediaStorageSOPInstanceUID"),
        (0x0010, "TransferSyntaxUID"),
    ],
)
def test_read_info_missing_required(tmp_path: Path, drop: int, message: str) -> None:
    elements = [
        explicit_element(2, 0x0001, b"OB", b"\x00\x01"),
        explicit_element(2, 0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.2\x00"),
        explicit_element(2, 0x0003, b"UI", b"1.2.3.4\x00"),
        explicit_element(2, 0x0010, b"UI", b"1.2.840.10008.1.2\x00"),
    ]
    kept = [e for e in elements if struct.unpack_from("<H", e, 2)[0] != drop]
    payload = b"".join(kept)
    meta = explicit_element(2, 0, b"UL", struct.pack("<L", len(payload))) + payload
    path = tmp_path / "missing.dcm"
    path.write_bytes(bytes(128) + b"DICM" + meta + b"\x08\x00\x05\x00\x00\x00\x00\x00")
    with pytest.raises(InvalidPart10Error, match=message):
        read_part10_info(path)


def test_read_info_empty_required_value(tmp_path: Path) -> None:
    payload = (
        explicit_element(2, 0x0002, b"UI", b"1.2.3\x00")
        + explicit_element(2, 0x0003, b"UI", b"")
        + explicit_element(2, 0x0010, b"UI", b"1.2.840.10008.1.2\x00")
    )
    path = tmp_path / "empty_uid.dcm"
    path.write_bytes(bytes(128) + b"DICM" + payload)
    with pytest.raises(InvalidPart10Error, match="MediaStorageSOPInstanceUID"):
        read_part10_info(path)


def test_read_info_implicit_vr_meta_rejected(tmp_path: Path) -> None:
    value = b"1.2.3\x00"
    implicit = struct.pack("<HHL", 2, 2, len(value)) + value
    path = tmp_path / "implicit_meta.dcm"
    path.write_bytes(bytes(128) + b"DICM" + implicit)
    with pytest.raises(InvalidPart10Error, match="Explicit VR"):
        read_part10_info(path)


def test_read_info_ignores_wrong_group_length(tmp_path: Path) -> None:
    meta = bytearray(build_file_meta(CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian))
    struct.pack_into("<L", meta, 8, 10)  # lie about the group length
    body = EncodedDataset.from_dataset(examples.ct, uids.ExplicitVRLittleEndian).tobytes()
    path = tmp_path / "liar.dcm"
    path.write_bytes(bytes(128) + b"DICM" + bytes(meta) + body)
    info, encoded = read_part10_dataset(path)
    assert info.dataset_offset == 132 + len(meta)
    assert encoded.tobytes() == body


def test_read_info_huge_meta_element_rejected(tmp_path: Path) -> None:
    header = struct.pack("<HH2s2xL", 2, 0x0102, b"OB", 0x7FFFFFFF)
    path = tmp_path / "huge.dcm"
    path.write_bytes(bytes(128) + b"DICM" + header + b"\x00" * 16)
    with pytest.raises(InvalidPart10Error, match="length"):
        read_part10_info(path)


def test_read_info_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_part10_info(tmp_path / "nope.dcm")


# ---------------------------------------------------------------------------
# streaming read
# ---------------------------------------------------------------------------


def test_iter_chunks(tmp_path: Path) -> None:
    path = tmp_path / "f.dcm"
    path.write_bytes(_valid_file_bytes())
    info, encoded = read_part10_dataset(path)
    for size in (1, 7, 4096, 1 << 20):
        chunks = list(iter_part10_dataset_chunks(info, chunk_size=size))
        assert all(0 < len(c) <= size for c in chunks)
        assert b"".join(chunks) == encoded.tobytes()
    assert b"".join(iter_part10_dataset_chunks(info)) == encoded.tobytes()


def test_iter_chunks_detects_truncation_and_bad_size(tmp_path: Path) -> None:
    path = tmp_path / "f.dcm"
    raw = _valid_file_bytes()
    path.write_bytes(raw)
    info = read_part10_info(path)
    path.write_bytes(raw[:-100])
    with pytest.raises(InvalidPart10Error, match="shorter"):
        list(iter_part10_dataset_chunks(info, chunk_size=4096))
    with pytest.raises(ValueError):
        list(iter_part10_dataset_chunks(info, chunk_size=0))


def test_iter_chunks_on_meta_only_file(tmp_path: Path) -> None:
    path = tmp_path / "m.dcm"
    path.write_bytes(bytes(128) + b"DICM" + build_file_meta(CT_CLASS, INSTANCE, uids.RLELossless))
    info = read_part10_info(path)
    assert list(iter_part10_dataset_chunks(info)) == []


# ---------------------------------------------------------------------------
# atomicity
# ---------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_exception_mid_write_leaves_nothing(tmp_path: Path) -> None:
    def fragments() -> Iterator[bytes]:
        yield b"\x08\x00\x05\x00" * 1000
        yield b"\x00" * 1000
        raise Boom("network went away")

    path = tmp_path / "partial.dcm"
    with pytest.raises(Boom):
        write_part10(path, CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian, fragments())
    assert listing(tmp_path) == []


def test_exception_mid_write_keeps_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "existing.dcm"
    write_part10(path, CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian, [b"\x08\x00"], fsync=False)
    before = path.read_bytes()

    def fragments() -> Iterator[bytes]:
        yield b"\x00" * 10
        raise Boom()

    with pytest.raises(Boom):
        write_part10(path, CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian, fragments())
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["existing.dcm"]


def test_invalid_arguments_create_no_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.dcm"
    with pytest.raises(ValueError):
        write_part10(path, CT_CLASS, "../../etc", uids.ExplicitVRLittleEndian, [b""])
    assert listing(tmp_path) == []


def test_rename_failure_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError("replace failed")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="replace failed"):
        write_part10(tmp_path / "x.dcm", CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian, [b"ab"])
    assert listing(tmp_path) == []


def test_fsync_failure_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError("fsync failed")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="fsync failed"):
        write_part10(tmp_path / "x.dcm", CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian, [b"ab"])
    assert listing(tmp_path) == []


def test_fsync_sequence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """File fsync happens before the rename, directory fsync after it."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    path = tmp_path / "seq.dcm"

    def spy_fsync(fd: int) -> None:
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def spy_replace(src: Any, dst: Any) -> None:
        events.append("replace")
        assert Path(src).parent == tmp_path
        assert Path(src).name.startswith(".") and Path(src).name.endswith(".tmp")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    write_part10(path, CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian, [b"ab"])
    if os.path.isdir("/proc/self/fd"):
        assert events == ["fsync-file", "replace", "fsync-dir"]
    else:  # pragma: no cover
        assert events[1] == "replace" and len(events) == 3
    assert path.exists()


def test_temp_file_is_hidden_in_same_directory(tmp_path: Path) -> None:
    path = tmp_path / "visible.dcm"
    writer = Part10Writer(path, CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian, fsync=False)
    names = listing(tmp_path)
    assert len(names) == 1
    assert names[0].startswith(".") and names[0].endswith(".tmp")
    assert writer.temp_path == tmp_path / names[0]
    assert not path.exists()
    writer.commit()
    assert listing(tmp_path) == ["visible.dcm"]


# ---------------------------------------------------------------------------
# Part10Writer
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("fsync", [False, True])
def test_streaming_writer_matches_write_part10(tmp_path: Path, fsync: bool) -> None:
    encoded = EncodedDataset.from_dataset(examples.ct, uids.ExplicitVRLittleEndian)
    data = encoded.tobytes()
    a = tmp_path / "a.dcm"
    b = tmp_path / "b.dcm"
    write_part10(
        a, CT_CLASS, INSTANCE, encoded.transfer_syntax, [data], source_ae="X", fsync=fsync
    )
    with Part10Writer(
        b, CT_CLASS, INSTANCE, encoded.transfer_syntax, source_ae="X", fsync=fsync
    ) as writer:
        for i in range(0, len(data), 333):  # many small chunks
            writer.write(memoryview(data)[i : i + 333])
        assert writer.bytes_written == len(data)
        assert not b.exists()
    assert writer.closed
    assert a.read_bytes() == b.read_bytes()
    assert writer.dataset_offset == read_part10_info(b).dataset_offset


def test_writer_context_manager_aborts_on_exception(tmp_path: Path) -> None:
    path = tmp_path / "w.dcm"
    with pytest.raises(Boom):
        with Part10Writer(path, CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian) as writer:
            writer.write(b"\x00" * 4096)
            raise Boom()
    assert writer.closed
    assert listing(tmp_path) == []


def test_writer_explicit_commit_abort_and_misuse(tmp_path: Path) -> None:
    path = tmp_path / "w.dcm"
    writer = Part10Writer(path, CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian, fsync=False)
    writer.write(b"\x08\x00")
    writer.abort()
    writer.abort()  # idempotent
    assert listing(tmp_path) == []
    with pytest.raises(ValueError):
        writer.write(b"x")
    with pytest.raises(ValueError):
        writer.commit()

    writer = Part10Writer(path, CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian, fsync=False)
    writer.write(b"\x08\x00")
    writer.commit()
    writer.abort()  # no-op after commit
    assert listing(tmp_path) == ["w.dcm"]
    with pytest.raises(ValueError):
        writer.write(b"x")
    with pytest.raises(ValueError):
        writer.commit()
    # explicit commit inside a with block is fine
    with Part10Writer(path, CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian) as w2:
        w2.commit()
    assert read_part10_info(path).dataset_length == 0


def test_writer_memory_stays_bounded(tmp_path: Path) -> None:
    """A large instance streamed in chunks is never held in memory."""
    import tracemalloc

    path = tmp_path / "big.dcm"
    chunk = b"\x00" * (256 * 1024)
    tracemalloc.start()
    try:
        with Part10Writer(path, CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian, fsync=False) as w:
            for _ in range(64):  # 16 MiB
                w.write(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024
    assert read_part10_info(path).dataset_length == 64 * len(chunk)


def test_forgotten_writer_cleans_up(tmp_path: Path) -> None:
    writer = Part10Writer(tmp_path / "f.dcm", CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian)
    assert len(listing(tmp_path)) == 1
    del writer
    import gc

    gc.collect()
    assert listing(tmp_path) == []


def test_writer_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Part10Writer(tmp_path / "no" / "x.dcm", CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian)


# ---------------------------------------------------------------------------
# safe_instance_filename
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uid",
    [
        "1.2.840.10008.5.1.4.1.1.2",
        "1.2.826.0.1.3680043.8.498.12345",
        "2.25.211340304432877920896909238886605501942",
        "0",
        "1." + "9" * 62,
    ],
)
def test_safe_instance_filename_accepts(uid: str) -> None:
    name = safe_instance_filename(uid)
    assert name == f"{uid}.dcm"
    assert os.path.basename(name) == name


@pytest.mark.parametrize(
    "uid",
    [
        "../etc/passwd",
        "..",
        ".",
        "1.2/3",
        "1.2\\3",
        "/1.2.3",
        "1.2.03",
        "",
        "1." + "9" * 63,  # 65 characters
        "\uff11.\uff12",  # fullwidth digits
        "\u0661.\u0662",  # arabic-indic digits
        "1.2.3\x00",
        "1.2.3 ",
        "1.2.3\n",
        "1.2.3.dcm",
        "~",
        "C:1.2",
    ],
)
def test_safe_instance_filename_rejects(uid: str) -> None:
    with pytest.raises(ValueError):
        safe_instance_filename(uid)


def test_safe_instance_filename_rejects_non_str() -> None:
    with pytest.raises(ValueError):
        safe_instance_filename(b"1.2.3")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        safe_instance_filename(None)  # type: ignore[arg-type]


def test_part10_info_is_a_dataclass() -> None:
    info = Part10Info(Path("x"), "1.2", "1.3", uids.ExplicitVRLittleEndian, 200, 10)
    assert info.dataset_offset == 200 and info.dataset_length == 10
    assert info.implementation_class_uid is None


def test_file_meta_dataset_accepts_our_meta(tmp_path: Path) -> None:
    """pydicom's own File Meta validation accepts what we write."""
    from pydicom.dataset import validate_file_meta

    path = tmp_path / "v.dcm"
    write_part10(path, CT_CLASS, INSTANCE, uids.JPEG2000, [], source_ae="SCU", fsync=False)
    meta = dcmread(path, force=True).file_meta
    assert isinstance(meta, FileMetaDataset)
    validate_file_meta(meta, enforce_standard=True)


# --- read_part10_dataset_nowait: page-cache reads on the event loop ----------------

from aiodicom import part10 as _p10  # noqa: E402


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs preadv RWF_NOWAIT (Linux)")
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"])
def test_nowait_read_matches_the_normal_reader(tmp_path: Path, name: str) -> None:
    src = get_testdata_file(name)
    assert src is not None
    path = tmp_path / name
    path.write_bytes(Path(src).read_bytes())  # just written: in the page cache
    got = _p10.read_part10_dataset_nowait(path)
    if got is None:
        pytest.skip("this file system does not support RWF_NOWAIT reads")
    info, encoded = got
    ref_info, ref = _p10.read_part10_dataset(path)
    assert info == ref_info
    assert encoded.transfer_syntax == ref.transfer_syntax
    assert encoded.tobytes() == ref.tobytes()


def test_nowait_read_declines_instead_of_blocking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = get_testdata_file("CT_small.dcm")
    assert src is not None
    path = tmp_path / "ct.dcm"
    path.write_bytes(Path(src).read_bytes())
    monkeypatch.setattr(os, "RWF_NOWAIT", 8, raising=False)

    def would_block(fd: int, buffers: list[Any], offset: int, flags: int = 0) -> int:
        assert flags == 8
        raise BlockingIOError("not in the page cache")

    monkeypatch.setattr(os, "preadv", would_block)
    assert _p10.read_part10_dataset_nowait(path) is None


def test_nowait_read_declines_large_files_and_missing_support(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = get_testdata_file("CT_small.dcm")
    assert src is not None
    path = tmp_path / "ct.dcm"
    path.write_bytes(Path(src).read_bytes())
    monkeypatch.setattr(_p10, "NOWAIT_READ_MAX", 1000)
    assert _p10.read_part10_dataset_nowait(path) is None
    monkeypatch.delattr(os, "RWF_NOWAIT", raising=False)
    assert _p10.read_part10_dataset_nowait(path) is None


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs preadv RWF_NOWAIT (Linux)")
def test_nowait_read_rejects_non_part10_like_the_normal_reader(tmp_path: Path) -> None:
    path = tmp_path / "garbage.dcm"
    path.write_bytes(b"\x00" * 200)
    try:
        result = _p10.read_part10_dataset_nowait(path)
    except InvalidPart10Error:
        return
    assert result is None  # file system without RWF_NOWAIT


def test_writer_with_staging_dir_creates_the_final_directory_at_commit(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    final = tmp_path / "a" / "b" / "x.dcm"
    prepared: list[Path] = []

    def prepare(directory: Path) -> None:
        prepared.append(directory)
        directory.mkdir(parents=True, exist_ok=True)

    w = Part10Writer(final, CT_CLASS, INSTANCE, "1.2.840.10008.1.2.1", temp_dir=staging, prepare_dir=prepare,
                     fsync=False)
    assert w.temp_path.parent == staging and not final.parent.exists()
    w.write(b"\x08\x00\x16\x00UI\x00\x00")
    w.commit()
    assert prepared == [final.parent]
    assert final.is_file() and list(staging.iterdir()) == []
    assert read_part10_info(final).sop_instance_uid == INSTANCE


def test_writer_with_staging_dir_abort_leaves_nothing(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    final = tmp_path / "a" / "x.dcm"
    w = Part10Writer(final, CT_CLASS, INSTANCE, "1.2.840.10008.1.2.1", temp_dir=staging,
                     prepare_dir=lambda d: d.mkdir(parents=True, exist_ok=True), fsync=False)
    w.abort()
    assert list(staging.iterdir()) == [] and not final.parent.exists()


# ---------------------------------------------------------------- sendfile support


@pytest.mark.parametrize("impl", ["default", "mincore"])
def test_page_cache_residency(tmp_path: Path, impl: str) -> None:
    from aiodicom import part10

    cache = part10._get_page_cache()
    assert cache is not None  # Linux
    if impl == "mincore":
        cache = part10._PageCache()
        cache._nr = None
    path = tmp_path / "sparse.bin"
    with open(path, "wb") as f:
        f.write(b"x" * 8192)
        f.truncate(1 << 20)  # a hole: pages no one has read are not cached
    fd = os.open(path, os.O_RDONLY)
    try:
        if not cache.resident(fd, 0, 8192):
            # A file system whose page cache this call cannot see (overlayfs
            # and cachestat): the answer must then always be the safe "no".
            assert not cache.resident(fd, 0, 1 << 20)
            return
        assert cache.resident(fd, 0, 8192)
        assert cache.resident(fd, 100, 10)  # unaligned, within a page
        assert not cache.resident(fd, 0, 1 << 20)
        assert not cache.resident(fd, 500_000, 10)
        assert cache.resident(fd, 0, 0)
        os.pread(fd, 1 << 20, 0)  # reading the hole brings it in
        assert cache.resident(fd, 0, 1 << 20)
    finally:
        os.close(fd)


def test_open_part10_cached(tmp_path: Path) -> None:
    from aiodicom.part10 import open_part10_cached, read_part10_dataset_nowait

    ds_bytes = bytes(range(256)) * 1024
    path = tmp_path / "a.dcm"
    write_part10(path, "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", uids.ExplicitVRLittleEndian, [ds_bytes])
    opened = open_part10_cached(path)
    if read_part10_dataset_nowait(path) is None:
        # no RWF_NOWAIT reads on this file system: open_part10_cached declines too
        assert opened is None
        return
    assert opened is not None
    info, fd = opened
    try:
        assert info == read_part10_info(path)
        assert os.pread(fd, info.dataset_length, info.dataset_offset) == ds_bytes
    finally:
        os.close(fd)
    # the data set not in the page cache (a hole here): None, nothing left open
    holed = tmp_path / "holed.dcm"
    raw = path.read_bytes()
    with open(holed, "wb") as f:
        f.write(raw[: info.dataset_offset])
        f.truncate(info.dataset_offset + (1 << 20))
    before = len(os.listdir("/proc/self/fd"))
    assert open_part10_cached(holed) is None
    assert len(os.listdir("/proc/self/fd")) == before
    with pytest.raises(ValueError, match="Part 10"):
        bogus = tmp_path / "bogus.dcm"
        bogus.write_bytes(b"not dicom")
        open_part10_cached(bogus)


@pytest.mark.parametrize("name", TEST_FILES)
def test_meta_window_parse_equals_the_element_reader(name: str) -> None:
    from aiodicom import part10 as _p

    path = Path(data_file(name))
    raw = path.read_bytes()
    ref = read_part10_info(path)
    # the whole file, a page, and just enough to see the first data set element
    for window in (len(raw), max(4096, ref.dataset_offset + 8), ref.dataset_offset + 8):
        view = memoryview(raw)[:window]
        assert _p._parse_meta_window(view, path, len(raw)) == ref


def _meta_variants() -> list[bytes]:
    good = bytearray(
        build_file_meta(CT_CLASS, INSTANCE, uids.ExplicitVRLittleEndian)
    )
    out = [bytes(good)]
    bad_vr = bytearray(good)
    bad_vr[132 + 4 : 132 + 6] = b"u!"  # first element's VR not upper-case letters
    out.append(bytes(bad_vr))
    out.append(bytes(good[:-3]))  # truncated inside the last element
    out.append(bytes(good[:140]))  # truncated inside an element header
    long_el = bytearray(good)
    long_el[132 + 8 : 132 + 12] = struct.pack("<L", 0xFFFFFFFF)  # (0002,0001) OB with an undefined length
    out.append(bytes(long_el))
    out.append(bytes(good[:132]))  # magic, no elements
    return out


@pytest.mark.parametrize("index", range(6))
def test_meta_window_parse_raises_what_the_element_reader_raises(index: int) -> None:
    import io

    from aiodicom import part10 as _p

    data = bytes(128) + b"DICM" + _meta_variants()[index][132:] if index else _meta_variants()[0] + b"\x08\x00"
    path = Path("variant.dcm")

    def outcome(f: Any) -> object:
        try:
            return f()
        except InvalidPart10Error as exc:
            return ("error", str(exc))

    ref = outcome(lambda: _p._parse_meta(io.BytesIO(data), path, len(data)))
    got = outcome(lambda: _p._parse_meta_window(memoryview(data), path, len(data)))
    assert got == ref
    assert index == 0 or isinstance(ref, tuple)


def _settle(path: Path, age_s: int = 60) -> None:
    """Backdate ``path``'s times so that its File Meta may be remembered.

    Only mtime can be set; a file's ctime is the time of the change, so the
    cache also needs ctime settled: the tests that want a hit lower the
    threshold instead (``_META_SETTLED_NS``).
    """
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns - age_s * 10**9, st.st_mtime_ns - age_s * 10**9))


@pytest.fixture
def meta_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """An empty File Meta cache that trusts files at once; yields the paths parsed."""
    from aiodicom import part10 as _p

    if getattr(os, "RWF_NOWAIT", None) is None or _p._get_page_cache() is None:
        pytest.skip("no RWF_NOWAIT / page cache checks on this platform")
    monkeypatch.setattr(_p, "_meta_cache", {})
    monkeypatch.setattr(_p, "_META_SETTLED_NS", -(10**12))
    parsed: list[Path] = []
    real = _p._parse_meta_window

    def counting(window: memoryview, path: Path, size: int) -> Part10Info:
        parsed.append(path)
        return real(window, path, size)

    monkeypatch.setattr(_p, "_parse_meta_window", counting)
    yield parsed


def _open_cached(path: Path) -> Part10Info:
    from aiodicom.part10 import open_part10_cached

    opened = open_part10_cached(path)
    if opened is None:
        pytest.skip("RWF_NOWAIT reads are not supported on this file system")
    info, fd = opened
    os.close(fd)
    return info


def test_open_part10_cached_remembers_file_meta(tmp_path: Path, meta_cache: list[Path]) -> None:
    path = tmp_path / "a.dcm"
    write_part10(path, CT_CLASS, "1.2.3.4", uids.ExplicitVRLittleEndian, [b"\x08\x00\x05\x00CS\x00\x00"])
    first = _open_cached(path)
    first.sop_instance_uid = "9.9"  # what the caller does with its copy stays its own
    second = _open_cached(str(path))
    assert meta_cache == [path]  # parsed once
    assert second == read_part10_info(path) and second.sop_instance_uid == "1.2.3.4"
    second.sop_instance_uid = "9.8"  # a copy of the remembered one, too
    assert _open_cached(path).sop_instance_uid == "1.2.3.4"
    assert meta_cache == [path]


def test_open_part10_cached_sees_a_changed_file(tmp_path: Path, meta_cache: list[Path]) -> None:
    path = tmp_path / "a.dcm"
    ds = [b"\x08\x00\x05\x00CS\x00\x00"]
    write_part10(path, CT_CLASS, "1.2.3.4", uids.ExplicitVRLittleEndian, ds)
    assert _open_cached(path).sop_instance_uid == "1.2.3.4"
    # replaced by rename (a new inode)
    write_part10(path, CT_CLASS, "1.2.3.5", uids.ExplicitVRLittleEndian, ds)
    assert _open_cached(path).sop_instance_uid == "1.2.3.5"
    # rewritten in place, same size, mtime put back: the ctime still moves
    st = os.stat(path)
    raw = path.read_bytes()
    with open(path, "r+b") as f:
        f.write(raw.replace(b"1.2.3.5", b"1.2.3.6"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    if os.stat(path).st_ctime_ns == st.st_ctime_ns:
        pytest.skip("this file system's ctime did not move")
    assert _open_cached(path).sop_instance_uid == "1.2.3.6"
    assert len(meta_cache) == 3


def test_open_part10_cached_does_not_trust_fresh_files(tmp_path: Path, meta_cache: list[Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from aiodicom import part10 as _p

    monkeypatch.setattr(_p, "_META_SETTLED_NS", 3600 * 10**9)  # an hour: this file is fresh
    path = tmp_path / "a.dcm"
    write_part10(path, CT_CLASS, "1.2.3.4", uids.ExplicitVRLittleEndian, [b"\x08\x00\x05\x00CS\x00\x00"])
    _settle(path)  # an old mtime is not enough: the ctime is now
    _open_cached(path)
    _open_cached(path)
    assert len(meta_cache) == 2 and _p._meta_cache == {}


def test_open_part10_cached_cache_is_bounded(tmp_path: Path, meta_cache: list[Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from aiodicom import part10 as _p

    monkeypatch.setattr(_p, "_META_CACHE_MAX", 3)
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.dcm")
        write_part10(paths[-1], CT_CLASS, f"1.2.3.{i}", uids.ExplicitVRLittleEndian, [b"\x08\x00\x05\x00CS\x00\x00"])
        _open_cached(paths[-1])
    assert len(_p._meta_cache) == 3
    assert {k[0] for k in _p._meta_cache} == {os.fspath(p) for p in paths[2:]}  # the oldest went first
    _open_cached(paths[0])
    assert meta_cache.count(paths[0]) == 2
