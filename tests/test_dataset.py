"""Tests for aiodicom.dataset (EncodedDataset and identifier helpers)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread, examples
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

import aiodicom.dataset as dataset_mod
from aiodicom import uids
from aiodicom.dataset import (
    DatasetDecodeError,
    EncodedDataset,
    decode_identifier,
    encode_identifier,
    transfer_syntax_encoding,
)

NATIVE = list(uids.NATIVE_TRANSFER_SYNTAXES)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def assert_same_dataset(actual: Dataset, expected: Dataset, path: str = "") -> None:
    """Element-by-element comparison (tags, values, nested sequences)."""
    assert sorted(actual.keys()) == sorted(expected.keys()), path
    for elem in expected:
        other = actual[elem.tag]
        where = f"{path}{elem.tag}"
        if elem.VR == "SQ":
            assert other.VR == "SQ", where
            assert len(other.value) == len(elem.value), where
            for i, (a, e) in enumerate(zip(other.value, elem.value)):
                assert_same_dataset(a, e, f"{where}[{i}].")
        else:
            assert other.value == elem.value, where


def make_dataset() -> Dataset:
    """A small but varied data set: charset, sequences, numbers, pixels."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.StudyDate = "20240102"
    ds.Modality = "OT"
    ds.PatientName = "Müller^Jürgen"
    ds.PatientID = "ID-123"
    ds.PatientWeight = "72.5"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.InstanceNumber = 7
    ds.ImagePositionPatient = [-1.5, 2.25, 3.0]
    ds.ReferencedSeriesSequence = Sequence(
        [
            Dataset(),
            Dataset(),
        ]
    )
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.3.4"
    ds.ReferencedSeriesSequence[1].SeriesInstanceUID = "1.2.3.5"
    inner = Dataset()
    inner.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    inner.ReferencedSOPInstanceUID = "1.2.3.4.5"
    ds.ReferencedSeriesSequence[1].ReferencedInstanceSequence = Sequence([inner])
    ds.add_new(0x00181063, "DS", "33.3")  # FrameTime
    ds.add_new(0x00189089, "FD", [0.0, 1.0, -1.0])  # DiffusionGradientOrientation
    ds.add_new(0x00200032, "DS", [1, 2, 3])
    ds.add_new(0x00280002, "US", 1)  # SamplesPerPixel
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 4
    ds.Columns = 3
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 1
    ds.add_new(0x00280106, "SS", -5)  # SmallestImagePixelValue
    ds.add_new(0x00280107, "SS", 900)  # LargestImagePixelValue
    ds.add_new(0x00540016, "SQ", Sequence())  # empty sequence
    ds.add_new(0x00100030, "DA", "")  # empty value
    ds.PixelData = bytes(range(24))
    return ds


def split(data: bytes, sizes: list[int]) -> list[Any]:
    """Split *data* into fragments of mixed buffer types."""
    out: list[Any] = []
    pos = 0
    kinds = [bytes, bytearray, memoryview]
    i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        chunk = data[pos : pos + size]
        kind = kinds[i % 3]
        out.append(memoryview(chunk) if kind is memoryview else kind(chunk))
        pos += size
        i += 1
    return out


def pydicom_encode(ds: Dataset, implicit_vr: bool, little_endian: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit_vr
    fp.is_little_endian = little_endian
    write_dataset(fp, ds)
    return bytes(fp.getvalue())


def data_file(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:  # pragma: no cover - depends on the pydicom install
        pytest.skip(f"pydicom test file {name} not available")
    return str(path)


# ---------------------------------------------------------------------------
# transfer syntax encoding table
# ---------------------------------------------------------------------------


def test_transfer_syntax_encoding() -> None:
    enc = transfer_syntax_encoding
    assert enc(uids.ImplicitVRLittleEndian) == (True, True, False, False)
    assert enc(uids.ExplicitVRLittleEndian) == (False, True, False, False)
    assert enc(uids.DeflatedExplicitVRLittleEndian) == (False, True, True, False)
    assert enc(uids.ExplicitVRBigEndian) == (False, False, False, False)
    assert enc(uids.JPEG2000) == (False, True, False, True)
    assert enc(uids.RLELossless).encapsulated
    assert enc(uids.JPIPReferencedDeflate).deflated
    assert enc("1.2.840.10008.1.2\x00") == (True, True, False, False)
    # unknown / private syntaxes: explicit VR little endian
    assert enc("1.2.3.4.5") == (False, True, False, False)


# ---------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("ts", NATIVE)
def test_round_trip_rich_dataset(ts: str) -> None:
    original = make_dataset()
    encoded = EncodedDataset.from_dataset(original, ts)
    assert encoded.transfer_syntax == ts
    assert encoded.nbytes == len(encoded) == len(encoded.tobytes()) > 0
    assert encoded.nbytes % 2 == 0
    decoded = EncodedDataset(encoded.fragments, ts).decode()
    assert_same_dataset(decoded, make_dataset())
    assert decoded.file_meta.TransferSyntaxUID == ts


@pytest.mark.parametrize("ts", NATIVE)
def test_round_trip_pydicom_example_ct(ts: str) -> None:
    original = examples.ct
    encoded = EncodedDataset.from_dataset(original, ts)
    decoded = EncodedDataset(encoded.tobytes(), ts).decode()
    reference = examples.ct
    assert_same_dataset(decoded, reference)
    assert decoded.PixelData == reference.PixelData
    if ts != uids.ExplicitVRBigEndian:
        # pixel data handling knows the transfer syntax
        assert (decoded.pixel_array == reference.pixel_array).all()


@pytest.mark.parametrize("ts", NATIVE)
def test_encoding_matches_pydicom(ts: str) -> None:
    ds = make_dataset()
    ours = EncodedDataset.from_dataset(ds, ts).tobytes()
    enc = transfer_syntax_encoding(ts)
    theirs = pydicom_encode(make_dataset(), enc.implicit_vr, enc.little_endian)
    if enc.deflated:
        assert len(ours) % 2 == 0
        assert zlib.decompressobj(-15).decompress(ours) == theirs
    else:
        assert ours == theirs


@pytest.mark.parametrize("ts", NATIVE)
def test_decode_fragmented_input(ts: str) -> None:
    data = EncodedDataset.from_dataset(make_dataset(), ts).tobytes()
    for sizes in ([1], [2, 3, 5], [7, 1000], [len(data)]):
        frags = split(data, sizes)
        encoded = EncodedDataset(frags, ts)
        assert encoded.nbytes == len(data)
        assert encoded.tobytes() == data
        assert_same_dataset(encoded.decode(), make_dataset())


def test_decode_matches_pydicom_reading_files() -> None:
    for name in ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm"):
        path = data_file(name)
        ref = dcmread(path)
        ts = str(ref.file_meta.TransferSyntaxUID)
        enc = transfer_syntax_encoding(ts)
        raw = pydicom_encode(dcmread(path), enc.implicit_vr, enc.little_endian)
        decoded = EncodedDataset([raw], ts).decode()
        assert_same_dataset(decoded, ref)


def test_decode_deflated_file_dataset() -> None:
    path = data_file("image_dfl.dcm")
    ref = dcmread(path)
    ts = str(ref.file_meta.TransferSyntaxUID)
    assert ts == uids.DeflatedExplicitVRLittleEndian
    encoded = EncodedDataset.from_dataset(ref, ts)
    assert_same_dataset(encoded.decode(), dcmread(path))


def test_decode_is_cached() -> None:
    encoded = EncodedDataset.from_dataset(make_dataset(), uids.ExplicitVRLittleEndian)
    assert not encoded.is_decoded
    first = encoded.decode()
    assert encoded.is_decoded
    assert encoded.decode() is first
    encoded.invalidate()
    assert not encoded.is_decoded
    assert encoded.decode() is not first


def test_constructor_accepts_single_buffer_and_strips_padding() -> None:
    data = EncodedDataset.from_dataset(make_dataset(), uids.ImplicitVRLittleEndian).tobytes()
    for buf in (data, bytearray(data), memoryview(data)):
        encoded = EncodedDataset(buf, uids.ImplicitVRLittleEndian + "\x00")
        assert encoded.fragments == [buf]
        assert encoded.transfer_syntax == uids.ImplicitVRLittleEndian
        assert list(encoded) == [buf]
        assert encoded.decode().PatientID == "ID-123"
    assert "EncodedDataset" in repr(encoded)


def test_empty_dataset() -> None:
    for ts in NATIVE:
        encoded = EncodedDataset.from_dataset(Dataset(), ts)
        assert len(encoded.decode()) == 0
    assert len(EncodedDataset([], uids.ExplicitVRLittleEndian).decode()) == 0


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    ts=st.sampled_from(NATIVE),
    name=st.from_regex(r"[A-Za-z0-9]{1,20}(\^[A-Za-z0-9]{1,20}){0,2}", fullmatch=True),
    patient_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,30}[A-Za-z0-9]", fullmatch=True),
    rows=st.integers(min_value=0, max_value=65535),
    weight=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    pixels=st.binary(max_size=64).map(lambda b: b + b"\x00" * (len(b) % 2)),
)
def test_round_trip_property(
    ts: str, name: str, patient_id: str, rows: int, weight: float, pixels: bytes
) -> None:
    ds = Dataset()
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.Rows = rows
    ds.add_new(0x00189089, "FD", weight)
    ds.add_new(0x7FE00010, "OW", pixels)
    decoded = EncodedDataset.from_dataset(ds, ts).decode()
    assert decoded.PatientName == name
    assert decoded.PatientID == patient_id
    assert decoded.Rows == rows
    assert decoded[0x00189089].value == weight
    assert (decoded.PixelData or b"") == pixels  # pydicom reads empty OW as None


# ---------------------------------------------------------------------------
# encapsulated (compressed) syntaxes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_rle.dcm", "JPEG-lossy.dcm"]
)
def test_round_trip_encapsulated(name: str) -> None:
    path = data_file(name)
    ref = dcmread(path)
    ts = str(ref.file_meta.TransferSyntaxUID)
    assert ts in uids.COMPRESSED_TRANSFER_SYNTAXES
    encoded = EncodedDataset.from_dataset(ref, ts)
    # encapsulated syntaxes are explicit VR little endian
    assert encoded.tobytes() == pydicom_encode(dcmread(path), False, True)
    decoded = encoded.decode()
    assert_same_dataset(decoded, dcmread(path))
    assert decoded.PixelData == ref.PixelData
    assert decoded["PixelData"].is_undefined_length


def test_encapsulated_pixel_array_uses_transfer_syntax() -> None:
    path = data_file("MR_small_RLE.dcm")  # RLE: decodable without plugins
    ts = uids.RLELossless
    encoded = EncodedDataset.from_dataset(dcmread(path), ts)
    decoded = EncodedDataset(encoded.tobytes(), ts).decode()
    assert (decoded.pixel_array == dcmread(path).pixel_array).all()


def test_encapsulated_syntax_requires_encapsulated_pixel_data() -> None:
    with pytest.raises(ValueError, match="requires encapsulated"):
        EncodedDataset.from_dataset(make_dataset(), uids.JPEG2000)


def test_native_syntax_rejects_encapsulated_pixel_data() -> None:
    ds = dcmread(data_file("JPEG2000.dcm"))
    with pytest.raises(ValueError, match="requires native"):
        EncodedDataset.from_dataset(ds, uids.ExplicitVRLittleEndian)


def test_encapsulated_flag_restored_on_source() -> None:
    """Encoding sets the undefined-length flag only for the duration."""
    ref = dcmread(data_file("JPEG2000.dcm"))
    ref["PixelData"].is_undefined_length = False  # as if built by hand
    encoded = EncodedDataset.from_dataset(ref, uids.JPEG2000)
    assert ref["PixelData"].is_undefined_length is False
    assert encoded.decode()["PixelData"].is_undefined_length


# ---------------------------------------------------------------------------
# non-data-set groups
# ---------------------------------------------------------------------------


def test_group_0000_and_0002_are_omitted_without_mutating_source() -> None:
    ds = make_dataset()
    ds.add_new(0x00020010, "UI", uids.ExplicitVRLittleEndian)
    ds.add_new(0x00000100, "US", 1)
    encoded = EncodedDataset.from_dataset(ds, uids.ImplicitVRLittleEndian)
    decoded = encoded.decode()
    assert 0x00020010 not in decoded
    assert 0x00000100 not in decoded
    assert 0x00020010 in ds and 0x00000100 in ds
    assert encoded.tobytes() == EncodedDataset.from_dataset(
        make_dataset(), uids.ImplicitVRLittleEndian
    ).tobytes()


# ---------------------------------------------------------------------------
# deflate details
# ---------------------------------------------------------------------------


def test_deflated_is_raw_deflate_and_even() -> None:
    encoded = EncodedDataset.from_dataset(make_dataset(), uids.DeflatedExplicitVRLittleEndian)
    data = encoded.tobytes()
    assert len(data) % 2 == 0
    with pytest.raises(zlib.error):
        zlib.decompress(data)  # no zlib header
    plain = zlib.decompressobj(-15).decompress(data)
    assert plain == pydicom_encode(make_dataset(), False, True)


def test_deflated_with_zlib_header_is_tolerated() -> None:
    plain = pydicom_encode(make_dataset(), False, True)
    wrapped = zlib.compress(plain)
    decoded = EncodedDataset([wrapped], uids.DeflatedExplicitVRLittleEndian).decode()
    assert_same_dataset(decoded, make_dataset())


def test_deflated_fragmented_with_padding() -> None:
    data = EncodedDataset.from_dataset(
        make_dataset(), uids.DeflatedExplicitVRLittleEndian
    ).tobytes()
    padded = data + b"\x00\x00"  # extra trailing bytes after the stream end
    encoded = EncodedDataset(split(padded, [3, 11]), uids.DeflatedExplicitVRLittleEndian)
    assert_same_dataset(encoded.decode(), make_dataset())


def test_deflated_corrupt_or_truncated_raises() -> None:
    data = EncodedDataset.from_dataset(
        make_dataset(), uids.DeflatedExplicitVRLittleEndian
    ).tobytes()
    with pytest.raises(DatasetDecodeError):
        EncodedDataset([data[: len(data) // 2]], uids.DeflatedExplicitVRLittleEndian).decode()
    with pytest.raises(DatasetDecodeError):
        EncodedDataset([b"\xff" * 64], uids.DeflatedExplicitVRLittleEndian).decode()
    assert issubclass(DatasetDecodeError, ValueError)


# ---------------------------------------------------------------------------
# sop_uids
# ---------------------------------------------------------------------------


EXPECTED_UIDS = ("1.2.840.10008.5.1.4.1.1.7", "1.2.826.0.1.3680043.8.498.1")


@pytest.mark.parametrize("ts", NATIVE)
def test_sop_uids(ts: str) -> None:
    data = EncodedDataset.from_dataset(make_dataset(), ts).tobytes()
    encoded = EncodedDataset(split(data, [5, 17]), ts)
    assert encoded.sop_uids() == EXPECTED_UIDS
    assert not encoded.is_decoded  # did not fully decode


@pytest.mark.parametrize("ts", NATIVE)
def test_sop_uids_past_the_prefix(ts: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the first prefix is too small, the whole data set is used."""
    monkeypatch.setattr(dataset_mod, "_SOP_UID_PREFIX", 16)
    ds = make_dataset()
    # a big element before (0008,0016)
    ds.add_new(0x00080006, "SQ", Sequence([Dataset() for _ in range(10)]))
    for item in ds[0x00080006].value:
        item.CodeValue = "X" * 16
        item.CodeMeaning = "Y" * 64
    data = EncodedDataset.from_dataset(ds, ts).tobytes()
    assert EncodedDataset([data], ts).sop_uids() == EXPECTED_UIDS


def test_sop_uids_stops_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """sop_uids only parses what it needs; the pixel data is never read."""
    ds = make_dataset()
    ds.PixelData = b"\x00" * (4 * 1024 * 1024)
    data = EncodedDataset.from_dataset(ds, uids.ExplicitVRLittleEndian).tobytes()
    calls: list[int] = []
    real_read = dataset_mod._read

    def spy(buf: Any, *args: Any, **kwargs: Any) -> Dataset:
        calls.append(len(buf.getbuffer()) if isinstance(buf, BytesIO) else len(buf))
        return real_read(buf, *args, **kwargs)

    monkeypatch.setattr(dataset_mod, "_read", spy)
    assert EncodedDataset([data[:100000], data[100000:]], uids.ExplicitVRLittleEndian).sop_uids() == (
        EXPECTED_UIDS
    )
    assert calls and max(calls) <= 64 * 1024


def test_sop_uids_uses_cache_and_reports_missing() -> None:
    encoded = EncodedDataset.from_dataset(make_dataset(), uids.ImplicitVRLittleEndian)
    encoded.decode()
    assert encoded.sop_uids() == EXPECTED_UIDS

    ds = make_dataset()
    del ds.SOPInstanceUID
    with pytest.raises(DatasetDecodeError, match="SOPInstanceUID"):
        EncodedDataset.from_dataset(ds, uids.ExplicitVRLittleEndian).sop_uids()
    with pytest.raises(DatasetDecodeError, match="SOPClassUID or SOPInstanceUID"):
        EncodedDataset([b""], uids.ExplicitVRLittleEndian).sop_uids()


def test_sop_uids_strips_padding() -> None:
    ds = Dataset()
    ds.add_new(0x00080016, "UI", "1.2.3")  # odd length -> NUL padded on the wire
    ds.add_new(0x00080018, "UI", "1.2.34")
    for ts in NATIVE:
        assert EncodedDataset.from_dataset(ds, ts).sop_uids() == ("1.2.3", "1.2.34")


# ---------------------------------------------------------------------------
# identifiers
# ---------------------------------------------------------------------------


def _identifier() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = "DOE^J*"
    ds.PatientID = ""
    ds.StudyInstanceUID = ""
    ds.StudyDate = "20200101-20201231"
    ds.ModalitiesInStudy = ""
    ds.ReferencedStudySequence = Sequence()
    return ds


@pytest.mark.parametrize("ts", NATIVE)
def test_identifier_round_trip(ts: str) -> None:
    data = encode_identifier(_identifier(), ts)
    assert isinstance(data, bytes)
    decoded = decode_identifier(data, ts)
    assert_same_dataset(decoded, _identifier())
    # universal matching keys survive as present-but-empty elements
    assert "PatientID" in decoded and decoded.PatientID == ""
    assert "StudyInstanceUID" in decoded


def test_decode_identifier_accepts_fragments() -> None:
    data = encode_identifier(_identifier(), uids.ImplicitVRLittleEndian)
    frags: Iterator[Any] = iter(split(data, [3]))
    assert decode_identifier(frags, uids.ImplicitVRLittleEndian).PatientName == "DOE^J*"
    assert decode_identifier(memoryview(data), uids.ImplicitVRLittleEndian).QueryRetrieveLevel == (
        "STUDY"
    )
