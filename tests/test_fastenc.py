"""The fast identifier encoder gives pydicom's bytes, or defers to pydicom."""

from __future__ import annotations

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import Dataset
from pydicom.sequence import Sequence

from aiodicom._fastenc import encode_flat
from aiodicom.dataset import EncodedDataset, encode_identifier

SYNTAXES = [("1.2.840.10008.1.2", True), ("1.2.840.10008.1.2.1", False)]


def _identifier() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 6"
    ds.QueryRetrieveLevel = "SERIES"
    ds.PatientName = "DOE^JOHN"
    ds.PatientID = "ID-1"
    ds.StudyInstanceUID = "1.2.840.1"
    ds.SeriesInstanceUID = "1.2.840.1.2"
    ds.StudyDate = "20200101"
    ds.StudyTime = ""
    ds.AccessionNumber = None
    ds.ModalitiesInStudy = ["CT", "MR"]
    ds.NumberOfSeriesRelatedInstances = 12
    ds.SliceThickness = "1.25"
    ds.Rows = 512
    ds.RetrieveAETitle = "ARCHIVE"
    ds.ReferencedStudySequence = Sequence([])
    ds.StudyDescription = "odd"
    return ds


@pytest.mark.parametrize("ts,implicit", SYNTAXES)
def test_same_bytes_as_pydicom(ts: str, implicit: bool) -> None:
    ds = _identifier()
    fast = encode_flat(ds, implicit)
    assert fast is not None
    assert fast == EncodedDataset.from_dataset(ds, ts).tobytes()


@pytest.mark.parametrize("ts,implicit", SYNTAXES)
def test_falls_back_for_what_it_does_not_handle(ts: str, implicit: bool) -> None:
    ds = _identifier()
    item = Dataset()
    item.CodeValue = "121060"
    ds.ContentTemplateSequence = Sequence([item])
    assert encode_flat(ds, implicit) is None  # a sequence with items
    assert encode_identifier(ds, ts) == EncodedDataset.from_dataset(ds, ts).tobytes()

    latin = _identifier()
    latin.SpecificCharacterSet = "ISO_IR 100"
    latin.PatientName = "MÜLLER^HANS"
    assert encode_flat(latin, implicit) is None
    assert encode_identifier(latin, ts) == EncodedDataset.from_dataset(latin, ts).tobytes()


def test_raw_elements_defer_to_pydicom() -> None:
    ds = _identifier()
    raw = EncodedDataset.from_dataset(ds, "1.2.840.10008.1.2.1").tobytes()
    read = pydicom.filereader.read_dataset(pydicom.filebase.DicomBytesIO(raw), False, True)
    assert encode_flat(read, False) is None
    assert encode_identifier(read, "1.2.840.10008.1.2.1") == raw


_text = st.text(alphabet="ABCDEFGHIJ^ 0123456789", max_size=15)


@settings(max_examples=150, deadline=None)
@given(name=_text, pid=_text, desc=_text, n=st.integers(0, 65535), implicit=st.booleans())
def test_property_matches_pydicom(name: str, pid: str, desc: str, n: int, implicit: bool) -> None:
    ds = Dataset()
    ds.PatientName = name
    ds.PatientID = pid
    ds.StudyDescription = desc
    ds.Rows = n
    ts = "1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1"
    assert encode_flat(ds, implicit) == EncodedDataset.from_dataset(ds, ts).tobytes()
