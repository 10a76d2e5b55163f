"""Tests for aiodicom.archive.matching: PS3.4 C.2.2.2 matching over the index."""

from __future__ import annotations

import re
import sqlite3
import struct
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from aiodicom.archive.index import Index
from aiodicom.archive.matching import (
    MatchingError,
    _condition,
    normalize_value,
    plan_query,
    plan_retrieve,
    resolve_model,
)
from aiodicom.dataset import decode_identifier
from aiodicom.uids import ExplicitVRLittleEndian

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SR = "1.2.840.10008.5.1.4.1.1.88.33"
ROOT = "1.2.826.0.1.3680043.10.99"


def U(*parts: int) -> str:
    return ROOT + "." + ".".join(str(p) for p in parts)


def ds_of(**kw: Any) -> Dataset:
    ds = Dataset()
    with warnings.catch_warnings():  # identifiers hold wildcards, ranges, '""' ...
        warnings.simplefilter("ignore")
        for key, value in kw.items():
            setattr(ds, key, value)
    return ds


def template_seq(tid: str, resource: str = "DCMR") -> Sequence:
    return Sequence([ds_of(MappingResource=resource, TemplateIdentifier=tid)])


# Study / series / instance UIDs of the fixture archive.
S1, S2, S3, S4, S5, S6, S7 = (U(1, n) for n in range(1, 8))
SE1, SE2, SE3, SE4, SE5, SE6, SE7, SE8 = (U(2, n) for n in range(1, 9))
I1, I2, I3, I4, I5, I6, I7, I8, I9 = (U(3, n) for n in range(1, 10))


def _instances() -> list[Dataset]:
    common_p1a = dict(PatientID="P1", IssuerOfPatientID="HOSP_A", PatientName="Doe^John",
                      PatientBirthDate="19700101", PatientSex="M")
    s1 = dict(StudyInstanceUID=S1, StudyDate="20240101", StudyTime="093000", AccessionNumber="ACC1",
              StudyID="1", StudyDescription="Chest CT", ReferringPhysicianName="Welby^Marcus")
    return [
        ds_of(**common_p1a, **s1, SeriesInstanceUID=SE1, Modality="CT", SeriesNumber="1",
              SeriesDescription="Axial", BodyPartExamined="CHEST", SOPInstanceUID=I1, SOPClassUID=CT,
              InstanceNumber="1", ContentDate="20240101", ContentTime="093100"),
        ds_of(**common_p1a, **s1, SeriesInstanceUID=SE1, Modality="CT", SeriesNumber="1",
              SOPInstanceUID=I2, SOPClassUID=CT, InstanceNumber="2"),
        ds_of(**common_p1a, **s1, SeriesInstanceUID=SE2, Modality="SR", SeriesNumber="99",
              SOPInstanceUID=I3, SOPClassUID=SR, InstanceNumber="1",
              ContentTemplateSequence=template_seq("9007"), ValueType="CONTAINER",
              ConceptNameCodeSequence=Sequence([ds_of(CodeValue="11329-0", CodingSchemeDesignator="LN",
                                                      CodeMeaning="History")]),
              ObservationDateTime="20240101120000", CompletionFlag="COMPLETE",
              VerificationFlag="UNVERIFIED"),
        ds_of(PatientID="P1", IssuerOfPatientID="HOSP_B", PatientName="Doe^Jane", PatientSex="F",
              StudyInstanceUID=S2, StudyDate="20240115", StudyTime="103015", AccessionNumber="ACC2",
              StudyDescription="Brain MR", SeriesInstanceUID=SE3, Modality="MR", SeriesNumber="5",
              SOPInstanceUID=I4, SOPClassUID=MR, InstanceNumber="1"),
        ds_of(PatientID="AB%_1", PatientName="Percent^Under", StudyInstanceUID=S3,
              StudyDate="20240201", AccessionNumber="A%B_C", StudyDescription="x",
              SeriesInstanceUID=SE4, Modality="CT", SOPInstanceUID=I5, SOPClassUID=CT),
        ds_of(PatientID="ABX_1", PatientName="Other^X", StudyInstanceUID=S4, StudyDate="20231231",
              AccessionNumber="AXBYC", StudyDescription="y", SeriesInstanceUID=SE5, Modality="CT",
              SOPInstanceUID=I6, SOPClassUID=CT),
        ds_of(PatientID="AB%Z1", PatientName="Zed^Z", StudyInstanceUID=S5,
              SeriesInstanceUID=SE6, Modality="US", SOPInstanceUID=I7, SOPClassUID=CT),
        ds_of(PatientID="A[1]", PatientName="Müller^Jörg", StudyInstanceUID=S6,
              StudyDate="2024.02.15", StudyDescription="Knee", SeriesInstanceUID=SE7, Modality="CT",
              SOPInstanceUID=I8, SOPClassUID=CT),
        ds_of(PatientID="P7", StudyInstanceUID=S7, StudyDate="20240301", StudyDescription="",
              SeriesInstanceUID=SE8, Modality="OT", SOPInstanceUID=I9, SOPClassUID=CT),
    ]


@pytest.fixture(scope="module")
def index() -> Iterator[Index]:
    ix = Index(":memory:")
    for n, ds in enumerate(_instances()):
        ix.add_instance(ds, f"instances/rel/{n}.dcm", ExplicitVRLittleEndian, 1000 + n, "SCU")
    yield ix
    ix.close()


def decoded(elements: list[tuple[int, str, bytes]]) -> Dataset:
    """An identifier decoded from Explicit VR Little Endian bytes (values unchecked)."""
    raw = b""
    for tag, vr, value in elements:
        if len(value) % 2:
            value += b"\0" if vr == "UI" else b" "
        raw += struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value
    return decode_identifier(raw, ExplicitVRLittleEndian)


def q(level: str | None, **kw: Any) -> Dataset:
    if level is not None:
        kw = {"QueryRetrieveLevel": level, **kw}
    return ds_of(**kw)


def find(index: Index, ident: Dataset, model: str = "study", **kw: Any) -> list[Dataset]:
    return index.query(None, ident, model, **kw).datasets()


def values(results: list[Dataset], keyword: str) -> list[Any]:
    return sorted(str(getattr(r, keyword)) for r in results)


# ---------------------------------------------------------------------------
# Single value, universal, list of UID
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["patient", "study"])
def test_single_value_is_case_sensitive_for_lo(index: Index, model: str) -> None:
    level = "PATIENT" if model == "patient" else "STUDY"
    res = find(index, q(level, PatientID="P7", PatientName=""), model)
    assert values(res, "PatientID") == ["P7"]
    assert find(index, q(level, PatientID="p7"), model) == []


def test_single_value_at_each_level_patient_root(index: Index) -> None:
    assert values(find(index, q("PATIENT", PatientID="AB%_1"), "patient"), "PatientID") == ["AB%_1"]
    res = find(index, q("STUDY", PatientID="P1", IssuerOfPatientID="HOSP_A", AccessionNumber="ACC1",
                        StudyInstanceUID=""), "patient")
    assert values(res, "StudyInstanceUID") == [S1]
    res = find(index, q("SERIES", PatientID="P1", StudyInstanceUID=S1, Modality="SR",
                        SeriesInstanceUID=""), "patient")
    assert values(res, "SeriesInstanceUID") == [SE2]
    res = find(index, q("IMAGE", PatientID="P1", StudyInstanceUID=S1, SeriesInstanceUID=SE1,
                        InstanceNumber="2", SOPInstanceUID=""), "patient")
    assert values(res, "SOPInstanceUID") == [I2]


def test_single_value_at_each_level_study_root(index: Index) -> None:
    res = find(index, q("STUDY", AccessionNumber="ACC2", StudyInstanceUID=""))
    assert values(res, "StudyInstanceUID") == [S2]
    res = find(index, q("SERIES", StudyInstanceUID=S1, Modality="CT", SeriesInstanceUID=""))
    assert values(res, "SeriesInstanceUID") == [SE1]
    res = find(index, q("IMAGE", StudyInstanceUID=S1, SeriesInstanceUID=SE1, SOPInstanceUID=I1,
                        SOPClassUID=""))
    assert values(res, "SOPClassUID") == [CT]


def test_is_values_compare_as_integers(index: Index) -> None:
    res = find(index, q("SERIES", StudyInstanceUID=S2, SeriesNumber="05", SeriesInstanceUID=""))
    assert values(res, "SeriesInstanceUID") == [SE3]
    ident = decoded(
        [(0x00080052, "CS", b"SERIES"), (0x0020000D, "UI", S2.encode()), (0x00200011, "IS", b"five")]
    )
    with pytest.raises(MatchingError) as exc:
        find(index, ident)
    assert exc.value.status == 0xA900


@pytest.mark.parametrize("universal", ["", "*"])
@pytest.mark.parametrize(
    "model,level,expected",
    [("patient", "PATIENT", 7), ("study", "STUDY", 7), ("patient", "STUDY", 1)],
)
def test_universal_matching(index: Index, universal: str, model: str, level: str, expected: int) -> None:
    ident = q(level, PatientName=universal) if level == "PATIENT" else q(level, StudyDescription=universal)
    if model == "patient" and level == "STUDY":
        ident.PatientID = "P7"
    assert len(find(index, ident, model)) == expected


def test_list_of_uid_matching_at_study_series_image(index: Index) -> None:
    res = find(index, q("STUDY", StudyInstanceUID=[S1, S3, U(9, 9)]))
    assert values(res, "StudyInstanceUID") == sorted([S1, S3])
    res = find(index, q("SERIES", StudyInstanceUID=S1, SeriesInstanceUID=[SE1, SE2]))
    assert values(res, "SeriesInstanceUID") == sorted([SE1, SE2])
    res = find(index, q("IMAGE", StudyInstanceUID=S1, SeriesInstanceUID=SE1, SOPInstanceUID=[I2, I9]))
    assert values(res, "SOPInstanceUID") == [I2]
    res = find(index, q("IMAGE", PatientID="P1", StudyInstanceUID=S1, SeriesInstanceUID=SE1,
                        SOPInstanceUID=[I1, I2]), "patient")
    assert values(res, "SOPInstanceUID") == sorted([I1, I2])


def test_multi_valued_modalities_in_study(index: Index) -> None:
    res = find(index, q("STUDY", ModalitiesInStudy=["MR", "US"], StudyInstanceUID=""))
    assert values(res, "StudyInstanceUID") == sorted([S2, S5])
    res = find(index, q("STUDY", ModalitiesInStudy="SR", StudyInstanceUID=S1))
    assert len(res) == 1
    assert list(res[0].ModalitiesInStudy) == ["CT", "SR"]


@pytest.mark.parametrize("model", ["patient", "study"])
@pytest.mark.parametrize(
    "level,keys,expected",
    [
        # SERIES level in study S1: SE1 = CT "Axial" CHEST, SE2 = SR (no description/body part)
        ("SERIES", {"Modality": "SR"}, [SE2]),  # single value
        ("SERIES", {"Modality": ""}, [SE1, SE2]),  # universal
        ("SERIES", {"Modality": "*"}, [SE1, SE2]),
        ("SERIES", {"SeriesDescription": "Ax*"}, [SE1]),  # wildcard
        ("SERIES", {"BodyPartExamined": "CH?ST"}, [SE1]),
        ("SERIES", {"SeriesDescription": "ax*"}, []),  # case-sensitive
        ("SERIES", {"BodyPartExamined": '""'}, [SE2]),  # empty value
        ("SERIES", {"SeriesNumber": "99"}, [SE2]),
        # IMAGE level in series SE1 (I1 has ContentDate/Time, I2 not)
        ("IMAGE", {"InstanceNumber": "2"}, [I2]),
        ("IMAGE", {"InstanceNumber": ""}, [I1, I2]),
        ("IMAGE", {"SOPClassUID": CT}, [I1, I2]),
        ("IMAGE", {"ContentDate": "20240101-"}, [I1]),  # range
        ("IMAGE", {"ContentDate": '""'}, [I2]),  # empty value
        ("IMAGE", {"SOPInstanceUID": [I1, I3]}, [I1]),  # list of UID
    ],
)
def test_matching_types_at_series_and_image_levels(
    index: Index, model: str, level: str, keys: dict[str, Any], expected: list[str]
) -> None:
    ident = q(level, StudyInstanceUID=S1, **keys)
    if model == "patient":
        ident.PatientID = "P1"
    if level == "IMAGE":
        ident.SeriesInstanceUID = SE1
    key = "SeriesInstanceUID" if level == "SERIES" else "SOPInstanceUID"
    if key not in ident:
        ident.add_new(0x0020000E if level == "SERIES" else 0x00080018, "UI", "")
    assert values(find(index, ident, model), key) == sorted(expected)


def test_wildcard_on_sr_keys_at_image_level(index: Index) -> None:
    res = find(index, q("IMAGE", StudyInstanceUID=S1, SeriesInstanceUID=SE2, CompletionFlag="COMP*",
                        ValueType="CONT?INER", SOPInstanceUID=""))
    assert values(res, "SOPInstanceUID") == [I3]


# ---------------------------------------------------------------------------
# PN case-insensitivity and wildcards
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["doe^john", "DOE^JOHN", "Doe^John^^", "dOe^JoHn"])
def test_pn_single_value_is_case_insensitive(index: Index, name: str) -> None:
    res = find(index, q("PATIENT", PatientName=name, PatientID=""), "patient")
    assert values(res, "PatientID") == ["P1"]
    assert str(res[0].PatientName) == "Doe^John"  # stored value returned as stored


@pytest.mark.parametrize(
    "pattern,expected",
    [
        ("DOE*", ["Doe^Jane", "Doe^John"]),
        ("d?e^j*", ["Doe^Jane", "Doe^John"]),
        ("*JOHN", ["Doe^John"]),
        ("*^J???", ["Doe^Jane", "Doe^John", "Müller^Jörg"]),
        ("müller*", ["Müller^Jörg"]),
        ("MÜLLER^JÖRG", ["Müller^Jörg"]),
        ("*", None),
        ("x*", []),
    ],
)
def test_pn_wildcards_case_insensitive(index: Index, pattern: str, expected: list[str] | None) -> None:
    res = find(index, q("STUDY", PatientName=pattern))
    if expected is None:
        assert len(res) == 7  # '*' alone is universal, including the patient without a name
    else:
        assert values(res, "PatientName") == expected


def test_wildcard_is_case_sensitive_for_non_pn(index: Index) -> None:
    assert values(find(index, q("STUDY", StudyDescription="Ch*")), "StudyDescription") == ["Chest CT"]
    assert find(index, q("STUDY", StudyDescription="ch*")) == []
    assert values(find(index, q("STUDY", StudyDescription="*MR")), "StudyDescription") == ["Brain MR"]
    assert values(find(index, q("STUDY", StudyDescription="?")), "StudyDescription") == ["x", "y"]


@pytest.mark.parametrize(
    "pattern,expected",
    [
        ("AB%_1", ["AB%_1"]),  # single value: % and _ literal
        ("AB%*", ["AB%Z1", "AB%_1"]),  # % literal, not "any run"
        ("AB_*", []),  # _ literal, not "any character"
        ("AB?_1", ["AB%_1", "ABX_1"]),
        ("*%*", ["AB%Z1", "AB%_1"]),
        ("A[*", ["A[1]"]),  # GLOB metacharacter escaped
        ("A[1]", ["A[1]"]),
        ("A?1]", ["A[1]"]),
        ("*]", ["A[1]"]),
    ],
)
def test_sql_metacharacters_match_literally(index: Index, pattern: str, expected: list[str]) -> None:
    res = find(index, q("PATIENT", PatientID=pattern), "patient")
    assert values(res, "PatientID") == expected


def test_sql_metacharacters_in_study_keys(index: Index) -> None:
    assert values(find(index, q("STUDY", AccessionNumber="A%B_C")), "AccessionNumber") == ["A%B_C"]
    assert values(find(index, q("STUDY", AccessionNumber="A%*")), "AccessionNumber") == ["A%B_C"]
    assert values(find(index, q("STUDY", AccessionNumber="A?B?C")), "AccessionNumber") == ["A%B_C", "AXBYC"]


def test_values_never_reach_the_sql_text(index: Index) -> None:
    evil = "x' OR '1'='1"
    plan = plan_query(q("STUDY", PatientID=evil, StudyDescription="a%' --*"))
    assert evil not in plan.sql and "a%" not in plan.sql and "--" not in plan.sql
    assert evil in plan.params
    assert find(index, q("STUDY", PatientID=evil)) == []


def test_wildcard_not_allowed_for_other_vrs(index: Index) -> None:
    for ident in (
        q("STUDY", StudyDate="2024*"),
        q("STUDY", StudyInstanceUID="1.2.*"),
        decoded([(0x00080052, "CS", b"SERIES"), (0x0020000D, "UI", S1.encode()),
                 (0x00200011, "IS", b"1?")]),
    ):
        with pytest.raises(MatchingError) as exc:
            find(index, ident)
        assert exc.value.status == 0xA900


# ---------------------------------------------------------------------------
# Ranges
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,expected",
    [
        ("20240101-20240131", [S1, S2]),
        ("20240115-", [S2, S3, S6, S7]),
        ("-20240101", [S1, S4]),
        ("20240201", [S3]),
        ("20240215", [S6]),  # stored as legacy 2024.02.15, normalised
        ("2024.01.01-2024.01.15", [S1, S2]),  # legacy query syntax
        ("20250101-", []),
    ],
)
def test_date_ranges(index: Index, value: str, expected: list[str]) -> None:
    res = find(index, q("STUDY", StudyDate=value, StudyInstanceUID=""))
    assert values(res, "StudyInstanceUID") == sorted(expected)


def test_date_range_in_patient_root(index: Index) -> None:
    res = find(index, q("STUDY", PatientID="P1", StudyDate="20240110-", StudyInstanceUID=""), "patient")
    assert values(res, "StudyInstanceUID") == [S2]


@pytest.mark.parametrize(
    "value,expected",
    [
        ("0900-1000", [S1]),
        ("-1030", [S1, S2]),  # upper bound inclusive at its precision: 103015 <= 1030
        ("-103014", [S1]),
        ("1030-", [S2]),
        ("093000", [S1]),
    ],
)
def test_time_ranges(index: Index, value: str, expected: list[str]) -> None:
    res = find(index, q("STUDY", StudyTime=value, StudyInstanceUID=""))
    assert values(res, "StudyInstanceUID") == sorted(expected)


@pytest.mark.parametrize(
    "value,matches",
    [
        ("20240101-20240102", True),
        ("20240101120000-", True),
        ("-20240101", True),  # the whole day
        ("-20231231", False),
        ("20240101120001-", False),
        ("2024-2025", True),
    ],
)
def test_datetime_ranges_at_image_level(index: Index, value: str, matches: bool) -> None:
    res = find(index, q("IMAGE", StudyInstanceUID=S1, SeriesInstanceUID=SE2, ObservationDateTime=value,
                        SOPInstanceUID=""))
    assert values(res, "SOPInstanceUID") == ([I3] if matches else [])


@pytest.mark.parametrize("value", ["2024010-", "a-b", "20240101-20240102-20240103", "-", "2024-01-01"])
def test_malformed_ranges_are_a900(index: Index, value: str) -> None:
    with pytest.raises(MatchingError) as exc:
        find(index, q("STUDY", StudyDate=value))
    assert exc.value.status == 0xA900


def test_range_on_other_levels(index: Index) -> None:
    res = find(index, q("PATIENT", PatientBirthDate="19600101-19800101", PatientID=""), "patient")
    assert values(res, "PatientID") == ["P1"]
    res = find(index, q("IMAGE", StudyInstanceUID=S1, SeriesInstanceUID=SE1, ContentDate="-20240101",
                        ContentTime="0931-", SOPInstanceUID=""))
    assert values(res, "SOPInstanceUID") == [I1]


# ---------------------------------------------------------------------------
# Empty value matching
# ---------------------------------------------------------------------------


def test_empty_value_matching(index: Index) -> None:
    # StudyDescription absent (S5) or empty (S7)
    res = find(index, q("STUDY", StudyDescription='""', StudyInstanceUID=""))
    assert values(res, "StudyInstanceUID") == sorted([S5, S7])
    res = find(index, q("STUDY", StudyDate='""', StudyInstanceUID=""))
    assert values(res, "StudyInstanceUID") == [S5]
    res = find(index, q("PATIENT", PatientName='""', PatientID=""), "patient")
    assert values(res, "PatientID") == ["P7"]
    res = find(index, q("PATIENT", IssuerOfPatientID='""', PatientID="P1"), "patient")
    assert res == []


# ---------------------------------------------------------------------------
# Sequence matching
# ---------------------------------------------------------------------------


def test_sequence_matching_content_template(index: Index) -> None:
    ident = q("IMAGE", StudyInstanceUID=S1, SeriesInstanceUID=SE2, SOPInstanceUID="",
              ContentTemplateSequence=template_seq("9007"))
    res = find(index, ident)
    assert values(res, "SOPInstanceUID") == [I3]
    item = res[0].ContentTemplateSequence[0]
    assert item.TemplateIdentifier == "9007" and item.MappingResource == "DCMR"

    ident.ContentTemplateSequence = template_seq("1500")
    assert find(index, ident) == []
    ident.ContentTemplateSequence = Sequence([ds_of(TemplateIdentifier="90*")])
    res = find(index, ident)
    assert values(res, "SOPInstanceUID") == [I3]
    assert list(res[0].ContentTemplateSequence[0].keys()) == [0x0040DB00]  # only the requested item key


def test_sequence_universal_and_absent(index: Index) -> None:
    # No items: return key. The CT instances have no template -> empty sequence.
    ident = q("IMAGE", StudyInstanceUID=S1, SeriesInstanceUID=SE1, SOPInstanceUID="",
              ContentTemplateSequence=Sequence([]))
    res = find(index, ident)
    assert len(res) == 2
    assert all(len(r.ContentTemplateSequence) == 0 for r in res)
    ident.SeriesInstanceUID = SE2
    res = find(index, ident)
    assert res[0].ContentTemplateSequence[0].TemplateIdentifier == "9007"


def test_concept_name_code_sequence_and_sr_keys(index: Index) -> None:
    ident = q("IMAGE", StudyInstanceUID=S1, SeriesInstanceUID=SE2, SOPInstanceUID="",
              ConceptNameCodeSequence=Sequence([ds_of(CodeValue="11329-0", CodeMeaning="")]),
              ValueType="CONTAINER", CompletionFlag="", VerificationFlag="UNVERIFIED",
              ObservationDateTime="")
    res = find(index, ident)
    assert len(res) == 1
    r = res[0]
    assert r.ConceptNameCodeSequence[0].CodeMeaning == "History"
    assert r.CompletionFlag == "COMPLETE" and r.ObservationDateTime == "20240101120000"


def test_sequence_with_two_items_is_a900(index: Index) -> None:
    ident = q("IMAGE", StudyInstanceUID=S1, SeriesInstanceUID=SE2,
              ContentTemplateSequence=Sequence([ds_of(TemplateIdentifier="1"), ds_of(TemplateIdentifier="2")]))
    with pytest.raises(MatchingError):
        find(index, ident)


# ---------------------------------------------------------------------------
# Hierarchical rules: Patient Root vs Study Root, unique keys
# ---------------------------------------------------------------------------


def test_patient_attributes_are_study_level_keys_in_study_root(index: Index) -> None:
    res = find(index, q("STUDY", PatientName="doe*", PatientID="", StudyInstanceUID=""))
    assert values(res, "StudyInstanceUID") == sorted([S1, S2])
    # Patient Root: PatientName with a value above the STUDY level is not allowed ...
    with pytest.raises(MatchingError) as exc:
        find(index, q("STUDY", PatientID="P1", PatientName="doe*"), "patient")
    assert exc.value.status == 0xA900
    # ... but as a return key it is filled in.
    res = find(index, q("STUDY", PatientID="P1", IssuerOfPatientID="HOSP_B", PatientName="",
                        StudyInstanceUID=""), "patient")
    assert [str(r.PatientName) for r in res] == ["Doe^Jane"]


def test_patient_level_not_in_study_root(index: Index) -> None:
    with pytest.raises(MatchingError) as exc:
        find(index, q("PATIENT", PatientID="P1"), "study")
    assert exc.value.status == 0xA900
    assert "Study Root" in exc.value.comment


@pytest.mark.parametrize(
    "model,ident",
    [
        ("patient", q("STUDY", StudyInstanceUID="")),  # PatientID missing above STUDY
        ("patient", q("STUDY", PatientID="", StudyInstanceUID="")),  # empty unique key above
        ("patient", q("STUDY", PatientID="P*")),  # wildcard in a unique key above
        ("patient", q("SERIES", PatientID="P1", SeriesInstanceUID="")),  # StudyInstanceUID missing
        ("study", q("SERIES", SeriesInstanceUID="")),
        ("study", q("SERIES", StudyInstanceUID=[S1, S2])),  # list above the level (baseline)
        ("study", q("SERIES", StudyInstanceUID="*")),
        ("study", q("IMAGE", StudyInstanceUID=S1, SOPInstanceUID="")),  # series UID missing
        ("study", q("SERIES", StudyInstanceUID=S1, StudyDate="20240101")),  # non-unique key above
        ("study", q("SERIES", StudyInstanceUID=S1, PatientName="Doe*")),
        ("study", q("IMAGE", StudyInstanceUID=S1, SeriesInstanceUID=SE1, Modality="CT")),
        ("patient", q("SERIES", PatientID="P1", StudyInstanceUID=S1, AccessionNumber="ACC1")),
        ("study", q("SERIES", StudyInstanceUID='""')),
    ],
)
def test_unique_key_rule_violations_are_a900(index: Index, model: str, ident: Dataset) -> None:
    with pytest.raises(MatchingError) as exc:
        index.query(None, ident, model)
    assert exc.value.status == 0xA900
    assert exc.value.comment


@pytest.mark.parametrize("level", [None, "", "FRAME", "STUDIES"])
def test_missing_or_invalid_query_retrieve_level(index: Index, level: str | None) -> None:
    with pytest.raises(MatchingError) as exc:
        index.query(None, q(level, PatientID=""), "study")
    assert exc.value.status == 0xA900


def test_level_argument_must_agree_with_identifier(index: Index) -> None:
    assert len(index.query("STUDY", q(None, StudyInstanceUID=S1), "study")) == 1
    with pytest.raises(MatchingError):
        index.query("SERIES", q("STUDY", StudyInstanceUID=S1), "study")


def test_issuer_qualifies_patient_id_above_the_level(index: Index) -> None:
    res = find(index, q("STUDY", PatientID="P1", StudyInstanceUID=""), "patient")
    assert values(res, "StudyInstanceUID") == sorted([S1, S2])
    res = find(index, q("STUDY", PatientID="P1", IssuerOfPatientID="HOSP_A", StudyInstanceUID=""), "patient")
    assert values(res, "StudyInstanceUID") == [S1]


# ---------------------------------------------------------------------------
# Response identifiers
# ---------------------------------------------------------------------------


def test_response_has_exactly_the_requested_keys(index: Index) -> None:
    ident = q("STUDY", PatientID="P1", IssuerOfPatientID="HOSP_A", StudyInstanceUID="", StudyDate="",
              StudyTime="", AccessionNumber="", StudyDescription="")
    res = find(index, ident, "patient")
    assert len(res) == 1
    assert set(res[0].keys()) == set(ident.keys())
    r = res[0]
    assert (r.StudyInstanceUID, r.StudyDate, r.StudyTime, r.AccessionNumber) == (S1, "20240101", "093000", "ACC1")
    assert r.QueryRetrieveLevel == "STUDY"

    res = find(index, ident, "patient", retrieve_ae="ARCHIVE")
    assert set(res[0].keys()) == set(ident.keys()) | {0x00080054}
    assert res[0].RetrieveAETitle == "ARCHIVE"
    assert index.query(None, ident, "patient").pending_status == 0xFF00


def test_unsupported_keys_are_returned_empty_and_reported(index: Index) -> None:
    ident = q("STUDY", StudyInstanceUID=S1, PatientAge="", InstitutionName="Somewhere",
              Modality="", OtherPatientIDs="X")
    ident.add_new(0x00091010, "LO", "private")
    result = index.query(None, ident, "study")
    assert len(result) == 1  # InstitutionName with a value is not matched
    r = result.datasets()[0]
    assert set(r.keys()) == set(ident.keys())
    assert r.PatientAge == "" and r.InstitutionName == "" and r.Modality == ""
    assert r[0x00091010].value in ("", None)
    assert result.pending_status == 0xFF01
    names = " ".join(result.unsupported)
    for kw in ("PatientAge", "InstitutionName", "Modality", "OtherPatientIDs", "(0009,1010)"):
        assert kw in names


def test_computed_keys(index: Index) -> None:
    r = find(index, q("PATIENT", PatientID="P1", IssuerOfPatientID="HOSP_A", NumberOfPatientRelatedStudies="",
                      NumberOfPatientRelatedSeries="", NumberOfPatientRelatedInstances=""), "patient")[0]
    assert (r.NumberOfPatientRelatedStudies, r.NumberOfPatientRelatedSeries,
            r.NumberOfPatientRelatedInstances) == (1, 2, 3)
    r = find(index, q("STUDY", StudyInstanceUID=S1, NumberOfStudyRelatedSeries="",
                      NumberOfStudyRelatedInstances="", ModalitiesInStudy="", SOPClassesInStudy=""))[0]
    assert (r.NumberOfStudyRelatedSeries, r.NumberOfStudyRelatedInstances) == (2, 3)
    assert list(r.ModalitiesInStudy) == ["CT", "SR"]
    assert sorted(r.SOPClassesInStudy) == sorted([CT, SR])
    r = find(index, q("SERIES", StudyInstanceUID=S1, SeriesInstanceUID=SE1, NumberOfSeriesRelatedInstances=""))[0]
    assert r.NumberOfSeriesRelatedInstances == 2
    r = find(index, q("IMAGE", StudyInstanceUID=S1, SeriesInstanceUID=SE1, SOPInstanceUID=I1,
                      AvailableTransferSyntaxUID="", InstanceAvailability=""))[0]
    assert r.AvailableTransferSyntaxUID == ExplicitVRLittleEndian and r.InstanceAvailability == "ONLINE"
    res = find(index, q("STUDY", SOPClassesInStudy=SR, StudyInstanceUID=""))
    assert values(res, "StudyInstanceUID") == [S1]


def test_above_level_return_keys_filled(index: Index) -> None:
    r = find(index, q("IMAGE", StudyInstanceUID=S2, SeriesInstanceUID=SE3, SOPInstanceUID="",
                      PatientName="", StudyDate="", Modality=""))[0]
    assert (str(r.PatientName), r.StudyDate, r.Modality) == ("Doe^Jane", "20240115", "MR")


def test_specific_character_set(index: Index) -> None:
    ident = q("STUDY", PatientName="müller*", StudyInstanceUID="")
    ident.SpecificCharacterSet = "ISO_IR 100"
    r = find(index, ident)[0]
    assert r.SpecificCharacterSet == "ISO_IR 100"
    assert str(r.PatientName) == "Müller^Jörg"
    # No charset in the request but a non-ASCII value: UTF-8 is declared.
    r = find(index, q("STUDY", PatientName="müller*"))[0]
    assert r.SpecificCharacterSet == "ISO_IR 192"
    r = find(index, q("STUDY", PatientName="doe^john"))[0]
    assert "SpecificCharacterSet" not in r


def test_limit(index: Index) -> None:
    assert len(index.query(None, q("STUDY", StudyInstanceUID=""), "study", limit=3)) == 3


# ---------------------------------------------------------------------------
# Retrieve plans
# ---------------------------------------------------------------------------


def _uids(items: list[Any]) -> list[str]:
    return sorted(i.sop_instance_uid for i in items)


def test_retrieve_levels(index: Index) -> None:
    assert _uids(index.instances_for_retrieve(None, q("PATIENT", PatientID="P1"), "patient")) == sorted(
        [I1, I2, I3, I4]
    )
    assert _uids(index.instances_for_retrieve(
        None, q("PATIENT", PatientID="P1", IssuerOfPatientID="HOSP_B"), "patient")) == [I4]
    assert _uids(index.instances_for_retrieve(None, q("STUDY", StudyInstanceUID=[S1, S2]))) == sorted(
        [I1, I2, I3, I4]
    )
    assert _uids(index.instances_for_retrieve(
        None, q("STUDY", PatientID="P1", StudyInstanceUID=S2), "patient")) == [I4]
    assert _uids(index.instances_for_retrieve(
        None, q("SERIES", StudyInstanceUID=S1, SeriesInstanceUID=SE1))) == sorted([I1, I2])
    items = index.instances_for_retrieve(
        None, q("IMAGE", StudyInstanceUID=S1, SeriesInstanceUID=SE1, SOPInstanceUID=[I2, I1]))
    assert [i.sop_instance_uid for i in items] == [I1, I2]  # ordered by InstanceNumber
    assert items[0].rel_path.startswith("instances/") and items[0].transfer_syntax == ExplicitVRLittleEndian
    assert items[0].sop_class_uid == CT
    # Study Root PatientID is an extra filter
    assert index.instances_for_retrieve(None, q("STUDY", StudyInstanceUID=S1, PatientID="P7")) == []


@pytest.mark.parametrize(
    "model,ident",
    [
        ("patient", q("PATIENT", PatientID="")),
        ("patient", q("PATIENT", PatientID=["P1", "P7"])),
        ("patient", q("PATIENT", PatientID="P*")),
        ("patient", q("STUDY", StudyInstanceUID=S1)),  # PatientID missing
        ("study", q("STUDY")),
        ("study", q("STUDY", StudyInstanceUID="")),
        ("study", q("SERIES", SeriesInstanceUID=SE1)),  # StudyInstanceUID missing
        ("study", q("SERIES", StudyInstanceUID=[S1, S2], SeriesInstanceUID=SE1)),
        ("study", q("IMAGE", StudyInstanceUID=S1, SeriesInstanceUID=SE1, SOPInstanceUID="1.2.*")),
        ("study", q(None, StudyInstanceUID=S1)),
        ("study", q("PATIENT", PatientID="P1")),
    ],
)
def test_retrieve_identifier_errors(index: Index, model: str, ident: Dataset) -> None:
    with pytest.raises(MatchingError) as exc:
        index.instances_for_retrieve(None, ident, model)
    assert exc.value.status == 0xA900


def test_plan_retrieve_is_parameterised() -> None:
    plan = plan_retrieve(q("IMAGE", StudyInstanceUID=S1, SeriesInstanceUID=SE1, SOPInstanceUID=[I1, I2]))
    assert S1 not in plan.sql and I1 not in plan.sql
    assert plan.params == [S1, SE1, I1, I2]


def test_resolve_model() -> None:
    assert resolve_model("patient") == "patient"
    assert resolve_model("1.2.840.10008.5.1.4.1.2.2.1") == "study"
    assert resolve_model("1.2.840.10008.5.1.4.1.2.1.3") == "patient"
    with pytest.raises(ValueError):
        resolve_model("worklist")


def test_normalize_value() -> None:
    assert normalize_value("DA", "2024.01.02") == "20240102"
    assert normalize_value("TM", "10:30:00") == "103000"
    assert normalize_value("IS", " 007 ") == "7"
    assert normalize_value("PN", "Doe^John^^^") == "Doe^John"
    assert normalize_value("PN", "Doe^John^^=山田^太郎") == "Doe^John=山田^太郎"


# ---------------------------------------------------------------------------
# Property: the wildcard translation agrees with a reference implementation
# ---------------------------------------------------------------------------


def _reference_match(pattern: str, value: str, ci: bool) -> bool:
    if ci:
        pattern, value = pattern.lower(), value.lower()
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


_ALPHABET = st.sampled_from(list("aAbB%_[]^\\.*?-é\u00c9!"))
_TEXT = st.text(_ALPHABET.filter(lambda c: c not in "*?\\"), max_size=8)
_PATTERN = st.text(_ALPHABET.filter(lambda c: c != "\\"), min_size=1, max_size=8)


@settings(max_examples=400, deadline=None)
@given(pattern=_PATTERN, value=_TEXT, pn=st.booleans())
def test_wildcard_translation_matches_reference(pattern: str, value: str, pn: bool) -> None:
    pattern = pattern.strip()
    if not pattern or pattern in ('""', "*") or ("*" not in pattern and "?" not in pattern):
        return
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (v TEXT, v_ci TEXT)")
    conn.execute("INSERT INTO t VALUES (?, ?)", (value, value.lower()))
    cond = _condition("v", "v_ci", "PN" if pn else "LO", [pattern], "Key")
    assert cond is not None
    got = conn.execute(f"SELECT COUNT(*) FROM t WHERE {cond[0]}", cond[1]).fetchone()[0] == 1
    assert got == _reference_match(pattern, value, pn), (pattern, value, cond)
    conn.close()
