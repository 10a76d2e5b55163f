"""Tests for aiodicom.uids."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom._uid_dict import UID_dictionary

from aiodicom import uids
from aiodicom.uids import uid_is_valid

_KEYWORD_TO_UID = {entry[4]: uid for uid, entry in UID_dictionary.items() if entry[4]}


@pytest.mark.parametrize(
    "uid",
    [
        "0",
        "1",
        "1.2",
        "0.0",
        "1.0.2",
        "10.20.30",
        "1.2.840.10008.1.2",
        "1.2.840.10008.5.1.4.1.1.2",
        "2.25.211340304432877920896909238886605501942",
        "1." + "2" * 62,  # exactly 64 characters
        "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23.24",
    ],
)
def test_uid_is_valid_accepts(uid: str) -> None:
    assert len(uid) <= 64
    assert uid_is_valid(uid)


@pytest.mark.parametrize(
    "uid",
    [
        "",
        ".",
        "..",
        "1.",
        ".1",
        "1..2",
        "01",
        "1.02",
        "1.2.03",
        "00",
        "1.2a",
        "a.b",
        "1.2 ",
        " 1.2",
        "1.2\x00",
        "1,2",
        "1-2",
        "+1.2",
        "-1.2",
        "1.2/3",
        "../etc/passwd",
        "1.2\n",
        "\uff11.\uff12",  # fullwidth digits
        "\u0661.\u0662",  # arabic-indic digits
        "1.\u00b2",  # superscript two (str.isdigit() is True)
        "1." + "2" * 63,  # 65 characters
        "1" * 65,
    ],
)
def test_uid_is_valid_rejects(uid: str) -> None:
    assert not uid_is_valid(uid)


@pytest.mark.parametrize("value", [None, 1, 1.2, b"1.2", ["1.2"]])
def test_uid_is_valid_rejects_non_str(value: object) -> None:
    assert not uid_is_valid(value)  # type: ignore[arg-type]


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=12))
def test_uid_is_valid_matches_construction(components: list[int]) -> None:
    uid = ".".join(str(c) for c in components)
    assert uid_is_valid(uid) == (len(uid) <= 64)


@given(st.text(max_size=70))
def test_uid_is_valid_never_accepts_foreign_characters(text: str) -> None:
    if uid_is_valid(text):
        assert set(text) <= set("0123456789.")
        assert 0 < len(text) <= 64
        assert all(c and (c == "0" or not c.startswith("0")) for c in text.split("."))


def test_implementation_identification() -> None:
    uid = uids.IMPLEMENTATION_CLASS_UID
    assert uid_is_valid(uid)
    assert uid.startswith("2.25.")
    # A UUID-derived OID (PS3.5 B.2): the integer value of a 128-bit UUID.
    value = int(uid[len("2.25.") :])
    assert 0 < value < 2**128
    assert uuid.UUID(int=value).version == 4
    assert not uid.startswith("1.2.826.0.1.3680043")  # not the pydicom root
    name = uids.IMPLEMENTATION_VERSION_NAME
    assert name == "AIODICOM_010"
    assert 0 < len(name) <= 16 and name.isascii() and "\\" not in name


def test_all_exports_exist() -> None:
    for name in uids.__all__:
        assert hasattr(uids, name), name


def test_string_constants_are_valid_and_match_pydicom_keywords() -> None:
    checked = 0
    for name in uids.__all__:
        value = getattr(uids, name)
        if not isinstance(value, str) or name.isupper():
            continue
        assert uid_is_valid(value), name
        assert name in _KEYWORD_TO_UID, name
        assert _KEYWORD_TO_UID[name] == value, name
        checked += 1
    assert checked > 30


def test_aliases() -> None:
    assert uids.APPLICATION_CONTEXT_NAME == "1.2.840.10008.3.1.1.1"
    assert uids.VERIFICATION_SOP_CLASS == uids.Verification == "1.2.840.10008.1.1"


def test_core_transfer_syntax_values() -> None:
    assert uids.ImplicitVRLittleEndian == "1.2.840.10008.1.2"
    assert uids.ExplicitVRLittleEndian == "1.2.840.10008.1.2.1"
    assert uids.DeflatedExplicitVRLittleEndian == "1.2.840.10008.1.2.1.99"
    assert uids.ExplicitVRBigEndian == "1.2.840.10008.1.2.2"
    assert uids.JPEGBaseline8Bit == "1.2.840.10008.1.2.4.50"
    assert uids.JPEGExtended12Bit == "1.2.840.10008.1.2.4.51"
    assert uids.JPEGLossless == "1.2.840.10008.1.2.4.57"
    assert uids.JPEGLosslessSV1 == "1.2.840.10008.1.2.4.70"
    assert uids.JPEGLSLossless == "1.2.840.10008.1.2.4.80"
    assert uids.JPEGLSNearLossless == "1.2.840.10008.1.2.4.81"
    assert uids.JPEG2000Lossless == "1.2.840.10008.1.2.4.90"
    assert uids.JPEG2000 == "1.2.840.10008.1.2.4.91"
    assert uids.RLELossless == "1.2.840.10008.1.2.5"
    assert uids.HTJ2KLossless == "1.2.840.10008.1.2.4.201"
    assert uids.HTJ2KLosslessRPCL == "1.2.840.10008.1.2.4.202"
    assert uids.HTJ2K == "1.2.840.10008.1.2.4.203"


def test_transfer_syntax_groups() -> None:
    native = uids.NATIVE_TRANSFER_SYNTAXES
    compressed = uids.COMPRESSED_TRANSFER_SYNTAXES
    assert set(native) == {
        uids.ImplicitVRLittleEndian,
        uids.ExplicitVRLittleEndian,
        uids.DeflatedExplicitVRLittleEndian,
        uids.ExplicitVRBigEndian,
    }
    assert len(native) == 4
    assert not set(native) & set(compressed)
    for ts in (
        uids.JPEGBaseline8Bit,
        uids.JPEGExtended12Bit,
        uids.JPEGLossless,
        uids.JPEGLosslessSV1,
        uids.JPEGLSLossless,
        uids.JPEGLSNearLossless,
        uids.JPEG2000Lossless,
        uids.JPEG2000,
        uids.RLELossless,
        uids.HTJ2KLossless,
        uids.HTJ2KLosslessRPCL,
        uids.HTJ2K,
        uids.HEVCMP51,
        uids.MPEG4HP41,
    ):
        assert ts in compressed
    all_ts = uids.ALL_TRANSFER_SYNTAXES
    assert len(all_ts) == len(set(all_ts))
    assert set(native) | set(compressed) <= set(all_ts)
    assert uids.DEFLATED_TRANSFER_SYNTAXES <= set(all_ts)
    assert uids.DeflatedExplicitVRLittleEndian in uids.DEFLATED_TRANSFER_SYNTAXES
    assert set(uids.TRANSFER_SYNTAX_NAMES) == set(all_ts)
    for ts in all_ts:
        assert uid_is_valid(ts)
        assert UID_dictionary[ts][1] == "Transfer Syntax"
        assert UID_dictionary[ts][3] == "" or ts == uids.ExplicitVRBigEndian


def test_query_retrieve_classes() -> None:
    assert uids.PatientRootQueryRetrieveInformationModelFind == "1.2.840.10008.5.1.4.1.2.1.1"
    assert uids.StudyRootQueryRetrieveInformationModelMove == "1.2.840.10008.5.1.4.1.2.2.2"
    assert uids.PatientStudyOnlyQueryRetrieveInformationModelGet == (
        "1.2.840.10008.5.1.4.1.2.3.3"
    )
    assert uids.CompositeInstanceRootRetrieveMove == "1.2.840.10008.5.1.4.1.2.4.2"
    assert uids.CompositeInstanceRootRetrieveGet == "1.2.840.10008.5.1.4.1.2.4.3"
    assert uids.CompositeInstanceRetrieveWithoutBulkDataGet == "1.2.840.10008.5.1.4.1.2.5.3"
    assert uids.ModalityWorklistInformationModelFind == "1.2.840.10008.5.1.4.31"
    assert uids.RELEVANT_PATIENT_INFORMATION_QUERY_SOP_CLASSES == (
        "1.2.840.10008.5.1.4.37.1",
        "1.2.840.10008.5.1.4.37.2",
        "1.2.840.10008.5.1.4.37.3",
    )
    groups = (uids.QR_FIND_SOP_CLASSES, uids.QR_MOVE_SOP_CLASSES, uids.QR_GET_SOP_CLASSES)
    seen: set[str] = set()
    for group in groups:
        assert not seen & set(group)
        seen |= set(group)
    for uid in uids.QR_FIND_SOP_CLASSES:
        assert UID_dictionary[uid][0].endswith("FIND")
    for uid in uids.QR_MOVE_SOP_CLASSES:
        assert UID_dictionary[uid][0].endswith("MOVE")
    for uid in uids.QR_GET_SOP_CLASSES:
        assert UID_dictionary[uid][0].endswith("GET")


def test_storage_sop_classes_table() -> None:
    table = uids.STORAGE_SOP_CLASSES
    assert len(table) > 150
    for uid, name in table.items():
        assert uid_is_valid(uid), uid
        entry = UID_dictionary[uid]
        assert entry[0] == name
        assert entry[1] == "SOP Class"
        assert entry[3] == "", f"{uid} is retired"
        assert "Storage" in name and "Commitment" not in name
    # a few classes every archive must know
    for uid in (
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
        "1.2.840.10008.5.1.4.1.1.1.2.1",  # Digital Mammography ... - For Processing
        "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
        "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR Storage
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF Storage
        "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image Storage
        "1.2.840.10008.5.1.4.38.1",  # Hanging Protocol Storage
    ):
        assert uid in table
    assert "1.2.840.10008.1.20.1" not in table  # Storage Commitment Push Model
    # immutable
    with pytest.raises(TypeError):
        table["1.2.3"] = "x"  # type: ignore[index]


def test_retired_storage_table_is_separate() -> None:
    retired = uids.RETIRED_STORAGE_SOP_CLASSES
    assert "1.2.840.10008.5.1.4.1.1.6" in retired  # Ultrasound Image Storage (retired)
    assert not set(retired) & set(uids.STORAGE_SOP_CLASSES)
    for uid in retired:
        assert UID_dictionary[uid][3] == "Retired"
