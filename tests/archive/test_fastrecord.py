"""The fast index-record reader gives exactly what the pydicom path gives, or declines."""

from __future__ import annotations

from pathlib import Path

import pytest
import pydicom.data
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from aiodicom.archive._fastrecord import fast_record
from aiodicom.archive.index import InvalidInstanceError, record_from_dataset
from aiodicom.archive.storage import read_header_from_fragments
from aiodicom.dataset import EncodedDataset
from aiodicom.part10 import InvalidPart10Error, read_part10_dataset

IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"


def _reference(data: bytes, ts: str) -> object:
    try:
        return record_from_dataset(read_header_from_fragments([data], ts))
    except InvalidInstanceError:
        return InvalidInstanceError


def _fast(data: bytes, ts: str, complete: bool = True) -> object:
    try:
        return fast_record(data, ts, complete)
    except InvalidInstanceError:
        return InvalidInstanceError


def _test_files() -> list[tuple[str, bytes, str]]:
    out = []
    # the files shipped with pydicom (no download)
    for name in sorted(str(p) for p in (Path(pydicom.data.__file__).parent / "test_files").rglob("*.dcm")):
        try:
            info, encoded = read_part10_dataset(name)
        except (InvalidPart10Error, OSError, ValueError):
            continue
        if info.transfer_syntax in (IMPLICIT, EXPLICIT):
            out.append((Path(name).name, encoded.tobytes(), info.transfer_syntax))
    return out


def test_same_record_as_pydicom_on_every_test_file() -> None:
    fast_taken = 0
    files = _test_files()
    assert len(files) > 20
    for name, data, ts in files:
        try:
            expected = _reference(data, ts)
        except Exception:  # noqa: BLE001 - pydicom cannot read it: nothing to compare
            continue
        got = _fast(data, ts)
        if got is None:
            continue
        fast_taken += 1
        assert got == expected, name
        # a prefix window either gives the same record or declines
        for cut in (64, 512, 4096):
            part = _fast(data[:cut], ts, complete=False)
            assert part is None or part == expected, (name, cut)
    assert fast_taken >= 20, fast_taken


def _ds(**extra: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.PatientID = "P1"
    ds.PatientName = "Doe^John"
    ds.StudyDate = "20240102"
    for k, v in extra.items():
        setattr(ds, k, v)
    ds.file_meta = FileMetaDataset()
    return ds


def _encode(ds: Dataset, ts: str) -> bytes:
    return EncodedDataset.from_dataset(ds, ts).tobytes()


@pytest.mark.parametrize("ts", [IMPLICIT, EXPLICIT])
def test_sequences_multivalues_and_charsets(ts: str) -> None:
    item = Dataset()
    item.MappingResource = "DCMR"
    item.TemplateIdentifier = "2000"
    other = Dataset()
    other.CodeValue = "121060"
    other.CodingSchemeDesignator = "DCM"
    other.CodeMeaning = "History"
    cases = [
        _ds(),
        _ds(ModalitiesInStudy=["CT", "MR"], OtherPatientIDs="A\\B", AccessionNumber=""),
        _ds(ReferencedImageSequence=Sequence([Dataset(), Dataset()])),
        _ds(ConceptNameCodeSequence=Sequence([other, item]), ContentTemplateSequence=Sequence([item])),
        _ds(SpecificCharacterSet="ISO_IR 192", PatientName="Müller^Jürgen"),
        _ds(SpecificCharacterSet="ISO_IR 100", PatientName="Müller^Jürgen"),
        _ds(SeriesNumber="  7 ", StudyTime="10:11:12"),
    ]
    for ds in cases:
        data = _encode(ds, ts)
        expected = _reference(data, ts)
        got = _fast(data, ts)
        assert got is not None, ds
        assert got == expected


def test_declines_what_it_cannot_match_exactly() -> None:
    # a character set it does not handle
    data = _encode(_ds(SpecificCharacterSet="ISO_IR 144", PatientName="Иванов"), EXPLICIT)
    assert fast_record(data, EXPLICIT, True) is None
    # non-ASCII text without a character set
    raw = _encode(_ds(PatientName="XXXXXX"), EXPLICIT).replace(b"XXXXXX", b"M\xfcller")
    assert fast_record(raw, EXPLICIT, True) is None
    # an IS pydicom might reject
    assert fast_record(_encode(_ds(SeriesNumber="1.5"), EXPLICIT), EXPLICIT, True) is None
    # other transfer syntaxes
    assert fast_record(_encode(_ds(), EXPLICIT), "1.2.840.10008.1.2.2", True) is None
    # truncated inside an element
    data = _encode(_ds(), EXPLICIT)
    assert fast_record(data[: len(data) - 3], EXPLICIT, True) is None
    # a window that ends before the header does: maybe more follows
    assert fast_record(data[:40], EXPLICIT, False) is None


def test_missing_uid_raises_like_the_reference() -> None:
    ds = _ds()
    del ds.SeriesInstanceUID
    data = _encode(ds, IMPLICIT)
    with pytest.raises(InvalidInstanceError):
        fast_record(data, IMPLICIT, True)
    assert _reference(data, IMPLICIT) is InvalidInstanceError
