"""Query/Retrieve matching (PS3.4 C.2.2.2) translated to parameterised SQL.

This module is pure: it turns a C-FIND / C-GET / C-MOVE identifier (a pydicom
:class:`~pydicom.dataset.Dataset`) into a :class:`QueryPlan` or
:class:`RetrievePlan` -- SQL text built only from constants of this module
plus a list of bound parameters -- and turns result rows back into response
identifiers.  Values from the identifier are *never* interpolated into SQL
text; they always travel as ``?`` parameters.  :mod:`aiodicom.archive.index`
runs the SQL against its SQLite database.

Matching types (PS3.4 C.2.2.2)
------------------------------

* **Universal** -- a zero-length value, or a value of ``*`` alone: no
  condition; the key is only returned.
* **Single value** -- exact, case-sensitive comparison (SQLite ``BINARY``
  collation), except for **PN** which is matched **case-insensitively**: the
  index keeps a lower-cased copy of every person name (``str.lower()``,
  Unicode aware, not just ASCII) and the query value is lower-cased the same
  way.  PN values are normalised before comparison by removing trailing
  empty components (``"Doe^John^^"`` equals ``"Doe^John"``).  IS values
  (SeriesNumber, InstanceNumber) are compared as integers written in their
  canonical form (``"05"`` matches ``"5"``).
* **List of UID** -- a multi-valued UI key (``uid1\\uid2``) matches any UID
  in the list (SQL ``IN``).  As an extension, other multi-valued keys match
  when any of their values matches (PS3.4 allows this for
  ModalitiesInStudy).
* **Wild card** -- ``*`` (any run, including none) and ``?`` (exactly one
  character), only for the VRs AE, CS, LO, LT, PN, SH, ST, UC, UR, UT.  A
  wildcard value is translated to SQLite ``GLOB`` (case-sensitive, matching
  the standard's case rules; PN is matched against the lower-cased copy).
  ``GLOB`` has no ``%``/``_`` metacharacters, so those match literally; the
  only GLOB-special character that can appear in a DICOM value is ``[``,
  which is escaped as ``[[]``.  A literal prefix before the first wildcard
  is additionally turned into a ``>= / <`` range so that the column's index
  is used.  A wildcard in a key of any other VR is an error (A900).
* **Range** -- for DA, TM and DT: ``a-b``, ``a-`` and ``-b``; a value
  without ``-`` is a single value.  Values compare as strings, which is
  correct for DA (``YYYYMMDD``; legacy ``YYYY.MM.DD`` is normalised) and for
  TM/DT of equal precision.  The upper bound is inclusive *at its own
  precision*: ``-1030`` includes ``103059.99``, ``-20240131`` (DT) includes
  the whole day.  Entities with no value never match a range.  Combined
  date-time matching (an extended negotiation option) is not offered.
* **Empty value** -- a value of two QUOTATION MARKs (``""``) matches
  entities where the attribute is absent or empty (C.2.2.2.5).
* **Sequence** -- for the sequences the index holds
  (ContentTemplateSequence: MappingResource, TemplateIdentifier;
  ConceptNameCodeSequence: CodeValue, CodingSchemeDesignator,
  CodeMeaning), the keys in the first item are matched with the rules
  above; a sequence with no item is a universal (return) key.

Hierarchical (baseline) rules
-----------------------------

Levels PATIENT/STUDY/SERIES/IMAGE for the Patient Root model and
STUDY/SERIES/IMAGE for the Study Root model (where the patient attributes
belong to the STUDY level).  The following raise :class:`MatchingError` with
status 0xA900 ("identifier does not match SOP class"):

* QueryRetrieveLevel missing, empty or unknown, or PATIENT in Study Root;
* a unique key of a level above the query level missing, empty, multi-valued
  or using wildcards/ranges (baseline: exactly one value).  IssuerOfPatientID
  is accepted above the PATIENT level as a qualifier of PatientID;
* any other key of a level above the query level carrying a value (matching
  above the query level needs relational queries, which we do not offer).
  Such keys *without* a value are accepted as return keys and filled in;
* malformed values: a wildcard in a key whose VR forbids it, a malformed
  date/time range, a non-integer IS value.

Decisions
---------

* **Keys the index does not hold** (unknown or private attributes, sequences
  other than the two above, keys below the query level, matching values on
  return-only keys such as NumberOfStudyRelatedInstances or OtherPatientIDs)
  are *not* matched; they are returned with an empty value and listed in
  :attr:`QueryPlan.unsupported`, so the SCP can answer with pending status
  0xFF01 ("one or more optional keys were not supported") instead of 0xFF00.
* Responses carry exactly the requested keys, plus QueryRetrieveLevel, plus
  RetrieveAETitle when the caller passes ``retrieve_ae``.
  SpecificCharacterSet is copied from the request when present; otherwise,
  if a returned value is not plain ASCII, ``ISO_IR 192`` (UTF-8) is added so
  the values can be encoded (index values are stored as decoded Python
  ``str``).
* The unique key of the query level itself is not required (many SCUs omit
  it); when requested it may use single value, list of UID or universal
  matching.
* Computed keys supported: NumberOfPatientRelatedStudies/Series/Instances,
  NumberOfStudyRelatedSeries/Instances, NumberOfSeriesRelatedInstances,
  ModalitiesInStudy and SOPClassesInStudy (both matchable: a study matches
  when any of its series/instances matches), InstanceAvailability (always
  ``ONLINE``) and AvailableTransferSyntaxUID (the stored transfer syntax).
* Retrieve identifiers (C-GET/C-MOVE): only QueryRetrieveLevel, the unique
  keys and IssuerOfPatientID are used; other keys are ignored.  The unique
  key of the retrieve level is required (single value, or a list of UIDs at
  STUDY/SERIES/IMAGE); those above it need exactly one value.  In Study Root
  a PatientID above the STUDY level is accepted as an extra filter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from aiodicom.uids import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTES_BY_TAG",
    "Attr",
    "ENTITIES",
    "LEVELS",
    "MatchingError",
    "QueryPlan",
    "RetrievePlan",
    "SEQUENCES",
    "SeqAttr",
    "normalize_value",
    "plan_query",
    "plan_retrieve",
    "resolve_level",
    "resolve_model",
]

Entity = Literal["patient", "study", "series", "instance"]

#: Entities from the top of the hierarchy down.
ENTITIES: Final[tuple[Entity, ...]] = ("patient", "study", "series", "instance")
#: Query/Retrieve levels from the top down.
LEVELS: Final = ("PATIENT", "STUDY", "SERIES", "IMAGE")

#: SQL table alias of each entity (constants; part of every generated query).
ALIAS: Final[dict[Entity, str]] = {"patient": "p", "study": "st", "series": "se", "instance": "i"}
_JOINS: Final[dict[Entity, str]] = {
    "patient": "patient AS p",
    "study": "JOIN study AS st ON st.patient_pk = p.pk",
    "series": "JOIN series AS se ON se.study_pk = st.pk",
    "instance": "JOIN instance AS i ON i.series_pk = se.pk",
}

#: Status for identifier errors: "Identifier does not match SOP Class".
IDENTIFIER_DOES_NOT_MATCH: Final = 0xA900

_WILDCARD_VRS: Final = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_RANGE_VRS: Final = frozenset({"DA", "TM", "DT"})
_TEXT_VRS: Final = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
#: Appended to an upper range bound so that it is inclusive at its precision.
_UPPER_PAD: Final = "~"

_DA_RE: Final = re.compile(r"\d{8}")
_TM_RE: Final = re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?")
_DT_RE: Final = re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?")
_DT_RANGE_RE: Final = re.compile(
    r"(?P<a>\d{4}(?:\d{2}){0,5}(?:\.\d{1,6})?(?:[+-]\d{4})?)?-"
    r"(?P<b>\d{4}(?:\d{2}){0,5}(?:\.\d{1,6})?(?:[+-]\d{4})?)?"
)

_TAG_QUERY_RETRIEVE_LEVEL: Final = 0x00080052
_TAG_SPECIFIC_CHARACTER_SET: Final = 0x00080005
_TAG_RETRIEVE_AE_TITLE: Final = 0x00080054
_TAG_INSTANCE_AVAILABILITY: Final = 0x00080056


class MatchingError(Exception):
    """The identifier cannot be processed; ``status`` is the DIMSE status to send."""

    def __init__(self, comment: str, status: int = IDENTIFIER_DOES_NOT_MATCH) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment

    def __repr__(self) -> str:
        return f"MatchingError(status=0x{self.status:04X}, comment={self.comment!r})"


# ---------------------------------------------------------------------------
# The attributes the index holds
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Attr:
    """An attribute the index holds (or computes) for one entity.

    ``column`` is the stored column (``None`` for computed attributes, whose
    SQL is ``computed``).  ``ci_column`` holds the lower-cased copy used for
    PN matching.  ``exists`` (computed multi-valued keys only) is an SQL
    template matching on a child table with ``{cond}`` replaced by the
    condition on the child column ``exists_column``.  ``separator`` splits
    multi-valued results.  ``extract`` says whether the value is taken from
    stored data sets (``False`` for AvailableTransferSyntaxUID).
    """

    keyword: str
    vr: str
    entity: Entity
    column: str | None = None
    ci_column: str | None = None
    computed: str | None = None
    exists: str | None = None
    exists_column: str | None = None
    separator: str | None = None
    matchable: bool = True
    integer: bool = False
    extract: bool = True
    tag: int = field(default=0, compare=False)

    @property
    def sql(self) -> str:
        """The SQL expression yielding this attribute's value."""
        if self.computed is not None:
            return self.computed
        assert self.column is not None
        return f"{ALIAS[self.entity]}.{self.column}"

    @property
    def ci_sql(self) -> str | None:
        """The SQL expression of the lower-cased copy, if any."""
        if self.ci_column is None:
            return None
        return f"{ALIAS[self.entity]}.{self.ci_column}"


@dataclass(frozen=True)
class SeqAttr:
    """A sequence the index holds: the first item's ``items`` are stored as
    columns of ``entity``; ``presence`` is the column whose non-NULL value
    says the item exists."""

    keyword: str
    entity: Entity
    presence: str
    items: tuple[Attr, ...]
    tag: int = field(default=0, compare=False)


def _a(keyword: str, vr: str, entity: Entity, column: str | None = None, **kw: object) -> Attr:
    tag = tag_for_keyword(keyword)
    if tag is None:  # pragma: no cover - a typo in the table below
        raise AssertionError(keyword)
    return Attr(keyword, vr, entity, column, tag=int(tag), **kw)  # type: ignore[arg-type]


_COUNT_PATIENT_STUDIES = "(SELECT COUNT(*) FROM study AS x WHERE x.patient_pk = p.pk)"
_COUNT_PATIENT_SERIES = (
    "(SELECT COUNT(*) FROM series AS x JOIN study AS y ON x.study_pk = y.pk "
    "WHERE y.patient_pk = p.pk)"
)
_COUNT_PATIENT_INSTANCES = (
    "(SELECT COUNT(*) FROM instance AS x JOIN series AS y ON x.series_pk = y.pk "
    "JOIN study AS z ON y.study_pk = z.pk WHERE z.patient_pk = p.pk)"
)
_COUNT_STUDY_SERIES = "(SELECT COUNT(*) FROM series AS x WHERE x.study_pk = st.pk)"
_COUNT_STUDY_INSTANCES = (
    "(SELECT COUNT(*) FROM instance AS x JOIN series AS y ON x.series_pk = y.pk "
    "WHERE y.study_pk = st.pk)"
)
_COUNT_SERIES_INSTANCES = "(SELECT COUNT(*) FROM instance AS x WHERE x.series_pk = se.pk)"
_MODALITIES = "(SELECT group_concat(DISTINCT x.modality) FROM series AS x WHERE x.study_pk = st.pk)"
_MODALITIES_EXISTS = "EXISTS (SELECT 1 FROM series AS x WHERE x.study_pk = st.pk AND {cond})"
_SOP_CLASSES = (
    "(SELECT group_concat(DISTINCT x.sop_class_uid) FROM instance AS x "
    "JOIN series AS y ON x.series_pk = y.pk WHERE y.study_pk = st.pk)"
)
_SOP_CLASSES_EXISTS = (
    "EXISTS (SELECT 1 FROM instance AS x JOIN series AS y ON x.series_pk = y.pk "
    "WHERE y.study_pk = st.pk AND {cond})"
)

#: Every attribute the index holds or computes, in entity order.
ATTRIBUTES: Final[tuple[Attr, ...]] = (
    # -- patient
    _a("PatientName", "PN", "patient", "patient_name", ci_column="patient_name_ci"),
    _a("PatientID", "LO", "patient", "patient_id"),
    _a("IssuerOfPatientID", "LO", "patient", "issuer"),
    _a("PatientBirthDate", "DA", "patient", "birth_date"),
    _a("PatientBirthTime", "TM", "patient", "birth_time"),
    _a("PatientSex", "CS", "patient", "sex"),
    _a("OtherPatientIDs", "LO", "patient", "other_patient_ids", separator="\\", matchable=False),
    _a("NumberOfPatientRelatedStudies", "IS", "patient", computed=_COUNT_PATIENT_STUDIES,
       matchable=False, integer=True),
    _a("NumberOfPatientRelatedSeries", "IS", "patient", computed=_COUNT_PATIENT_SERIES,
       matchable=False, integer=True),
    _a("NumberOfPatientRelatedInstances", "IS", "patient", computed=_COUNT_PATIENT_INSTANCES,
       matchable=False, integer=True),
    # -- study
    _a("StudyInstanceUID", "UI", "study", "study_uid"),
    _a("StudyDate", "DA", "study", "study_date"),
    _a("StudyTime", "TM", "study", "study_time"),
    _a("AccessionNumber", "SH", "study", "accession_number"),
    _a("StudyID", "SH", "study", "study_id"),
    _a("ReferringPhysicianName", "PN", "study", "referring_physician_name",
       ci_column="referring_physician_name_ci"),
    _a("StudyDescription", "LO", "study", "study_description"),
    _a("ModalitiesInStudy", "CS", "study", computed=_MODALITIES, exists=_MODALITIES_EXISTS,
       exists_column="x.modality", separator=","),
    _a("SOPClassesInStudy", "UI", "study", computed=_SOP_CLASSES, exists=_SOP_CLASSES_EXISTS,
       exists_column="x.sop_class_uid", separator=","),
    _a("NumberOfStudyRelatedSeries", "IS", "study", computed=_COUNT_STUDY_SERIES,
       matchable=False, integer=True),
    _a("NumberOfStudyRelatedInstances", "IS", "study", computed=_COUNT_STUDY_INSTANCES,
       matchable=False, integer=True),
    # -- series
    _a("SeriesInstanceUID", "UI", "series", "series_uid"),
    _a("Modality", "CS", "series", "modality"),
    _a("SeriesNumber", "IS", "series", "series_number"),
    _a("SeriesDescription", "LO", "series", "series_description"),
    _a("BodyPartExamined", "CS", "series", "body_part_examined"),
    _a("SeriesDate", "DA", "series", "series_date"),
    _a("SeriesTime", "TM", "series", "series_time"),
    _a("NumberOfSeriesRelatedInstances", "IS", "series", computed=_COUNT_SERIES_INSTANCES,
       matchable=False, integer=True),
    # -- instance
    _a("SOPInstanceUID", "UI", "instance", "sop_instance_uid"),
    _a("SOPClassUID", "UI", "instance", "sop_class_uid"),
    _a("InstanceNumber", "IS", "instance", "instance_number"),
    _a("ContentDate", "DA", "instance", "content_date"),
    _a("ContentTime", "TM", "instance", "content_time"),
    _a("ObservationDateTime", "DT", "instance", "observation_datetime"),
    _a("CompletionFlag", "CS", "instance", "completion_flag"),
    _a("VerificationFlag", "CS", "instance", "verification_flag"),
    _a("ValueType", "CS", "instance", "value_type"),
    _a("AvailableTransferSyntaxUID", "UI", "instance", "transfer_syntax", extract=False),
)

#: Sequences the index holds (first item only).
SEQUENCES: Final[tuple[SeqAttr, ...]] = (
    SeqAttr(
        "ContentTemplateSequence",
        "instance",
        "template_id",
        (
            _a("MappingResource", "CS", "instance", "mapping_resource"),
            _a("TemplateIdentifier", "CS", "instance", "template_id"),
        ),
        tag=0x0040A504,
    ),
    SeqAttr(
        "ConceptNameCodeSequence",
        "instance",
        "concept_code_value",
        (
            _a("CodeValue", "SH", "instance", "concept_code_value"),
            _a("CodingSchemeDesignator", "SH", "instance", "concept_coding_scheme"),
            _a("CodeMeaning", "LO", "instance", "concept_code_meaning"),
        ),
        tag=0x0040A043,
    ),
)

ATTRIBUTES_BY_TAG: Final[dict[int, Attr]] = {a.tag: a for a in ATTRIBUTES}
ATTRIBUTES_BY_KEYWORD: Final[dict[str, Attr]] = {a.keyword: a for a in ATTRIBUTES}
SEQUENCES_BY_TAG: Final[dict[int, SeqAttr]] = {s.tag: s for s in SEQUENCES}

# ---------------------------------------------------------------------------
# Models and levels
# ---------------------------------------------------------------------------

_MODEL_NAMES: Final[dict[str, str]] = {
    "patient": "patient",
    "patientroot": "patient",
    "patient_root": "patient",
    "study": "study",
    "studyroot": "study",
    "study_root": "study",
    PatientRootQueryRetrieveInformationModelFind: "patient",
    PatientRootQueryRetrieveInformationModelMove: "patient",
    PatientRootQueryRetrieveInformationModelGet: "patient",
    StudyRootQueryRetrieveInformationModelFind: "study",
    StudyRootQueryRetrieveInformationModelMove: "study",
    StudyRootQueryRetrieveInformationModelGet: "study",
}

#: Entities belonging to each level, per model.
_LEVEL_ENTITIES: Final[dict[str, dict[str, tuple[Entity, ...]]]] = {
    "patient": {
        "PATIENT": ("patient",),
        "STUDY": ("study",),
        "SERIES": ("series",),
        "IMAGE": ("instance",),
    },
    "study": {
        "STUDY": ("patient", "study"),
        "SERIES": ("series",),
        "IMAGE": ("instance",),
    },
}
#: Unique key of each level.
_UNIQUE_KEY: Final[dict[str, str]] = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


def resolve_model(model: str) -> str:
    """Return ``"patient"`` or ``"study"`` for a model name or Q/R SOP Class UID.

    Raises :class:`ValueError` for anything else (a programming error, not an
    identifier error).
    """
    resolved = _MODEL_NAMES.get(model.strip().lower()) or _MODEL_NAMES.get(model.strip())
    if resolved is None:
        raise ValueError(
            f"unknown query/retrieve information model {model!r} (use 'patient', 'study' "
            "or a Patient/Study Root Q/R SOP Class UID)"
        )
    return resolved


def resolve_level(level: str | None, identifier: Dataset, model: str) -> str:
    """The Query/Retrieve Level to use; raises :class:`MatchingError` (A900).

    *level* (if given) and the identifier's QueryRetrieveLevel (if present)
    must agree; at least one must be present.
    """
    levels = _LEVEL_ENTITIES[model]
    in_ds: str | None = None
    if _TAG_QUERY_RETRIEVE_LEVEL in identifier:
        raw = identifier[_TAG_QUERY_RETRIEVE_LEVEL].value
        if isinstance(raw, (list, MultiValue)):
            raise MatchingError("QueryRetrieveLevel (0008,0052) must have a single value")
        in_ds = (str(raw) if raw is not None else "").strip().upper() or None
    wanted = level.strip().upper() if level is not None else None
    if wanted and in_ds and wanted != in_ds:
        raise MatchingError(
            f"QueryRetrieveLevel (0008,0052) is {in_ds!r}, expected {wanted!r}"
        )
    chosen = wanted or in_ds
    if not chosen:
        raise MatchingError("QueryRetrieveLevel (0008,0052) is missing or empty")
    if chosen not in levels:
        if chosen == "PATIENT":
            raise MatchingError("QueryRetrieveLevel PATIENT is not valid for the Study Root model")
        raise MatchingError(f"unknown QueryRetrieveLevel (0008,0052) {chosen!r}")
    return chosen


def _levels_for(model: str, level: str) -> tuple[list[str], list[Entity], list[Entity]]:
    """(levels above, entities at the level, entities above the level)."""
    names = list(_LEVEL_ENTITIES[model])
    idx = names.index(level)
    above_levels = names[:idx]
    at = list(_LEVEL_ENTITIES[model][level])
    above: list[Entity] = [e for lv in above_levels for e in _LEVEL_ENTITIES[model][lv]]
    return above_levels, at, above


def _deepest(entities: Iterable[Entity]) -> Entity:
    return max(entities, key=ENTITIES.index)


def _from_clause(deepest: Entity) -> str:
    return " ".join(_JOINS[e] for e in ENTITIES[: ENTITIES.index(deepest) + 1])


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


def _elements(identifier: Dataset) -> list[DataElement]:
    """The identifier's elements, decoded; MatchingError if one cannot be.

    Group length, command (0000) and File Meta (0002) elements are skipped.
    """
    out: list[DataElement] = []
    for tag in list(identifier.keys()):
        group, element = tag >> 16, tag & 0xFFFF
        if element == 0 or group in (0x0000, 0x0002):
            continue
        try:
            elem = identifier[tag]
            _ = elem.value
        except Exception as exc:
            raise MatchingError(f"cannot decode {_tag_name(int(tag))}: {exc}") from exc
        out.append(elem)
    return out


def _tag_name(tag: int) -> str:
    keyword = keyword_for_tag(tag) or "Unknown"
    return f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _element_values(elem: DataElement) -> list[str]:
    """The values of a (non-sequence) identifier element as stripped strings.

    An empty list means universal matching (zero length).
    """
    value = elem.value
    if value is None:
        return []
    if isinstance(value, (bytes, bytearray)):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return ["\x00"]  # binary junk: will never match anything sensible
    if isinstance(value, (list, tuple, MultiValue)):
        items = [str(v).strip() for v in value]
    else:
        items = [str(value).strip()]
    if all(not v for v in items):
        return []
    return items


def _normalize_pn(value: str) -> str:
    groups = value.split("=")
    groups = [g.rstrip("^ ") for g in groups]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def normalize_value(vr: str, value: str) -> str:
    """Canonical stored form of a (non-empty, single) value of VR *vr*.

    DA: ``.`` removed (legacy ``YYYY.MM.DD``); TM: ``:`` removed; IS: the
    integer in canonical form when it parses; PN: trailing empty components
    removed.  Other values are returned stripped.
    """
    value = value.strip()
    if vr == "DA":
        return value.replace(".", "")
    if vr == "TM":
        return value.replace(":", "")
    if vr == "IS":
        try:
            return str(int(value))
        except ValueError:
            return value
    if vr == "PN":
        return _normalize_pn(value)
    return value


def _glob_escape(text: str) -> str:
    """Escape the GLOB metacharacters that can appear in a literal DICOM value."""
    return text.replace("[", "[[]")


def _dicom_wildcard_to_glob(pattern: str) -> str:
    # '*' and '?' mean the same in GLOB; only '[' needs escaping.  (A DICOM
    # value can never hold a literal '*' or '?': they are always wildcards.)
    return _glob_escape(pattern)


def _prefix_bounds(prefix: str) -> tuple[str, str | None]:
    """``[prefix, upper)`` covering every string that starts with *prefix*."""
    last = ord(prefix[-1])
    nxt = last + 1
    if 0xD800 <= nxt <= 0xDFFF:
        nxt = 0xE000
    if nxt > 0x10FFFF:
        return prefix, None
    return prefix, prefix[:-1] + chr(nxt)


def _check_range_bound(vr: str, bound: str, keyword: str) -> str:
    value = normalize_value(vr, bound)
    regex = {"DA": _DA_RE, "TM": _TM_RE, "DT": _DT_RE}[vr]
    if not regex.fullmatch(value):
        raise MatchingError(f"invalid {vr} value {bound!r} in {keyword}")
    return value


def _split_range(vr: str, value: str, keyword: str) -> tuple[str | None, str | None] | None:
    """``(lower, upper)`` if *value* is a range, ``None`` for a single value."""
    if "-" not in value:
        return None
    if vr == "DT":
        m = _DT_RANGE_RE.fullmatch(value)
        if m is None:
            # maybe a single DT with a negative UTC offset
            if _DT_RE.fullmatch(value):
                return None
            raise MatchingError(f"invalid DT range {value!r} in {keyword}")
        lo, hi = m.group("a"), m.group("b")
        if lo is None and hi is None:
            raise MatchingError(f"invalid DT range {value!r} in {keyword}")
        return lo, hi
    if value.count("-") != 1:
        raise MatchingError(f"invalid {vr} range {value!r} in {keyword}")
    lo_s, hi_s = value.split("-")
    if not lo_s and not hi_s:
        raise MatchingError(f"invalid {vr} range {value!r} in {keyword}")
    return lo_s or None, hi_s or None


def _condition_one(
    expr: str, ci_expr: str | None, vr: str, value: str, keyword: str
) -> tuple[str, list[object]]:
    """SQL condition and parameters for one non-universal value."""
    if value == '""':
        return f"({expr} IS NULL OR {expr} = '')", []
    has_wild = "*" in value or "?" in value
    if vr in _RANGE_VRS:
        if has_wild:
            raise MatchingError(f"wildcards are not allowed in {vr} key {keyword}: {value!r}")
        bounds = _split_range(vr, value, keyword)
        if bounds is None:
            return f"{expr} = ?", [_check_range_bound(vr, value, keyword)]
        lo, hi = bounds
        parts: list[str] = []
        params: list[object] = []
        if lo is not None:
            parts.append(f"{expr} >= ?")
            params.append(_check_range_bound(vr, lo, keyword))
        if hi is not None:
            parts.append(f"{expr} <= ?")
            params.append(_check_range_bound(vr, hi, keyword) + _UPPER_PAD)
        return "(" + " AND ".join(parts) + ")", params
    if has_wild:
        if vr not in _WILDCARD_VRS:
            raise MatchingError(f"wildcards are not allowed in {vr} key {keyword}: {value!r}")
        target = expr
        pattern = value
        if vr == "PN":
            assert ci_expr is not None
            target = ci_expr
            pattern = value.lower()
        cut = min(i for i in (pattern.find("*"), pattern.find("?")) if i >= 0)
        prefix = pattern[:cut]
        sql = f"{target} GLOB ?"
        params = [_dicom_wildcard_to_glob(pattern)]
        if prefix:
            lower, upper = _prefix_bounds(prefix)
            sql = f"({target} >= ? AND " + (f"{target} < ? AND " if upper is not None else "") + sql + ")"
            params = [lower] + ([upper] if upper is not None else []) + params
        return sql, params
    if vr == "PN":
        assert ci_expr is not None
        return f"{ci_expr} = ?", [_normalize_pn(value).lower()]
    if vr == "IS":
        try:
            return f"{expr} = ?", [str(int(value))]
        except ValueError:
            raise MatchingError(f"invalid IS value {value!r} in {keyword}") from None
    return f"{expr} = ?", [value]


def _condition(
    expr: str, ci_expr: str | None, vr: str, values: Sequence[str], keyword: str
) -> tuple[str, list[object]] | None:
    """SQL condition for the values of one key; ``None`` for universal matching."""
    if not values or any(v == "*" for v in values):
        return None
    if vr == "UI":
        for v in values:
            if v != '""' and ("*" in v or "?" in v):
                raise MatchingError(f"wildcards are not allowed in UI key {keyword}: {v!r}")
        uids = [v for v in values if v != '""']
        if len(uids) == len(values):
            if len(uids) == 1:
                return f"{expr} = ?", [uids[0]]
            return f"{expr} IN ({', '.join('?' * len(uids))})", list(uids)
    parts: list[str] = []
    params: list[object] = []
    for v in values:
        sql, p = _condition_one(expr, ci_expr, vr, v, keyword)
        parts.append(sql)
        params.extend(p)
    if len(parts) == 1:
        return parts[0], params
    return "(" + " OR ".join(parts) + ")", params


def _attr_condition(attr: Attr, values: Sequence[str]) -> tuple[str, list[object]] | None:
    if attr.exists is not None:
        assert attr.exists_column is not None
        inner = _condition(attr.exists_column, None, attr.vr, values, attr.keyword)
        if inner is None:
            return None
        return attr.exists.format(cond=inner[0]), inner[1]
    return _condition(attr.sql, attr.ci_sql, attr.vr, values, attr.keyword)


def _single_unique_value(attr: Attr, elem: DataElement | None, why: str) -> str:
    """The one value of a unique key above the query level (or A900)."""
    if elem is None:
        raise MatchingError(f"{attr.keyword} {why} is missing")
    values = _element_values(elem)
    if len(values) != 1 or not values[0]:
        raise MatchingError(f"{attr.keyword} {why} must have exactly one value")
    value = values[0]
    if value in ('""', "*") or "*" in value or "?" in value:
        raise MatchingError(f"{attr.keyword} {why} must be a single value, not {value!r}")
    if attr.vr == "UI":
        return value
    return normalize_value(attr.vr, value)


# ---------------------------------------------------------------------------
# Query plans
# ---------------------------------------------------------------------------

_SlotKind = Literal["text", "multi", "int", "seq", "const", "empty"]


@dataclass(frozen=True)
class _Slot:
    tag: int
    vr: str
    kind: _SlotKind
    index: int = -1
    separator: str = ""
    const: object = None
    #: For sequences: the column index of the presence column and the
    #: (tag, vr, index) of every item attribute to return.
    presence: int = -1
    items: tuple[tuple[int, str, int], ...] = ()


def _empty_value(vr: str) -> object:
    if vr == "SQ":
        return []
    if vr in _TEXT_VRS:
        return ""
    return None


@dataclass
class QueryPlan:
    """A compiled C-FIND identifier: SQL, parameters and response layout."""

    level: str
    model: str
    sql: str
    params: list[object]
    #: Names of requested keys that were not matched/returned ("FF01").
    unsupported: tuple[str, ...]
    slots: tuple[_Slot, ...]
    character_set: object = None
    retrieve_ae: str | None = None

    def build(self, row: Sequence[object]) -> Dataset:
        """The response identifier for one result row."""
        ds = Dataset()
        non_ascii = False
        for slot in self.slots:
            kind = slot.kind
            if kind == "text":
                v = row[slot.index]
                if v is None:
                    ds.add_new(slot.tag, slot.vr, "")
                else:
                    text = str(v)
                    if not text.isascii():
                        non_ascii = True
                    ds.add_new(slot.tag, slot.vr, text)
            elif kind == "int":
                v = row[slot.index]
                ds.add_new(slot.tag, slot.vr, "" if v is None else int(v))  # type: ignore[call-overload]
            elif kind == "multi":
                v = row[slot.index]
                if v is None or v == "":
                    ds.add_new(slot.tag, slot.vr, "")
                else:
                    parts = str(v).split(slot.separator)
                    if slot.separator == ",":
                        parts = sorted(set(parts))
                    if not all(p.isascii() for p in parts):
                        non_ascii = True
                    ds.add_new(slot.tag, slot.vr, parts if len(parts) > 1 else parts[0])
            elif kind == "seq":
                items: list[Dataset] = []
                if row[slot.presence] is not None:
                    item = Dataset()
                    for tag, vr, idx in slot.items:
                        v = row[idx]
                        text = "" if v is None else str(v)
                        if not text.isascii():
                            non_ascii = True
                        item.add_new(tag, vr, text)
                    items.append(item)
                ds.add_new(slot.tag, "SQ", DicomSequence(items))
            elif kind == "const":
                ds.add_new(slot.tag, slot.vr, slot.const)
            else:
                ds.add_new(slot.tag, slot.vr, _empty_value(slot.vr))
        ds.add_new(_TAG_QUERY_RETRIEVE_LEVEL, "CS", self.level)
        if self.retrieve_ae is not None:
            ds.add_new(_TAG_RETRIEVE_AE_TITLE, "AE", self.retrieve_ae)
        if self.character_set is not None:
            ds.add_new(_TAG_SPECIFIC_CHARACTER_SET, "CS", self.character_set)
        elif non_ascii:
            ds.add_new(_TAG_SPECIFIC_CHARACTER_SET, "CS", "ISO_IR 192")
        return ds


class _Select:
    """Collects SELECT expressions, de-duplicated, and hands out indexes."""

    def __init__(self) -> None:
        self.exprs: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, expr: str) -> int:
        idx = self._index.get(expr)
        if idx is None:
            idx = len(self.exprs)
            self.exprs.append(expr)
            self._index[expr] = idx
        return idx


def plan_query(
    identifier: Dataset,
    model: str = "study",
    level: str | None = None,
    *,
    retrieve_ae: str | None = None,
    limit: int | None = None,
) -> QueryPlan:
    """Compile a C-FIND *identifier* for the Patient or Study Root *model*.

    *level* overrides/validates the identifier's QueryRetrieveLevel.  Raises
    :class:`MatchingError` (status 0xA900) for identifiers that violate the
    hierarchical rules or hold malformed values (see the module docstring).
    """
    model = resolve_model(model)
    level = resolve_level(level, identifier, model)
    above_levels, at, above = _levels_for(model, level)
    deepest = _deepest(at)
    deepest_index = ENTITIES.index(deepest)
    required_above = {_UNIQUE_KEY[lv] for lv in above_levels}
    qualifiers = {"IssuerOfPatientID"} if "PATIENT" in above_levels else set()

    select = _Select()
    where: list[str] = []
    params: list[object] = []
    slots: list[_Slot] = []
    unsupported: list[str] = []
    seen_required: set[str] = set()
    character_set: object = None
    wants_retrieve_ae = False

    for elem in _elements(identifier):
        tag = int(elem.tag)
        if tag == _TAG_QUERY_RETRIEVE_LEVEL:
            continue
        if tag == _TAG_SPECIFIC_CHARACTER_SET:
            if elem.value not in (None, "", []):
                character_set = elem.value
            continue
        if tag == _TAG_RETRIEVE_AE_TITLE:
            wants_retrieve_ae = True
            if retrieve_ae is None:
                slots.append(_Slot(tag, "AE", "empty"))
            continue
        if tag == _TAG_INSTANCE_AVAILABILITY:
            slots.append(_Slot(tag, "CS", "const", const="ONLINE"))
            continue

        seq = SEQUENCES_BY_TAG.get(tag)
        if seq is not None:
            _plan_sequence(elem, seq, at, above, select, where, params, slots, unsupported)
            continue

        attr = ATTRIBUTES_BY_TAG.get(tag)
        if attr is None or elem.VR == "SQ":
            unsupported.append(_tag_name(tag))
            slots.append(_Slot(tag, elem.VR or "UN", "empty"))
            continue

        values = _element_values(elem)
        if attr.entity in above:
            if attr.keyword in required_above or attr.keyword in qualifiers:
                if attr.keyword in required_above or values:
                    value = _single_unique_value(attr, elem, "above the query level")
                    where.append(f"{attr.sql} = ?")
                    params.append(value)
                    seen_required.add(attr.keyword)
            elif values:
                raise MatchingError(
                    f"{attr.keyword} is not a unique key and lies above the query level "
                    f"{level}; only unique keys may be matched there (relational queries "
                    "are not supported)"
                )
        elif attr.entity not in at:
            # below the query level: not matched, returned empty
            unsupported.append(_tag_name(tag))
            slots.append(_Slot(tag, attr.vr, "empty"))
            continue
        elif values:
            if not attr.matchable:
                unsupported.append(_tag_name(tag))
            else:
                cond = _attr_condition(attr, values)
                if cond is not None:
                    where.append(cond[0])
                    params.extend(cond[1])

        idx = select.add(attr.sql)
        if attr.integer:
            slots.append(_Slot(tag, attr.vr, "int", idx))
        elif attr.separator is not None:
            slots.append(_Slot(tag, attr.vr, "multi", idx, separator=attr.separator))
        else:
            slots.append(_Slot(tag, attr.vr, "text", idx))

    missing = required_above - seen_required
    if missing:
        raise MatchingError(
            f"{', '.join(sorted(missing))} (unique key above the query level {level}) "
            "is missing"
        )

    if not select.exprs:
        select.add(f"{ALIAS[deepest]}.pk")
    sql = f"SELECT {', '.join(select.exprs)} FROM {_from_clause(ENTITIES[deepest_index])}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {ALIAS[deepest]}.pk"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    return QueryPlan(
        level=level,
        model=model,
        sql=sql,
        params=params,
        unsupported=tuple(unsupported),
        slots=tuple(slots),
        character_set=character_set,
        retrieve_ae=retrieve_ae if (retrieve_ae is not None or wants_retrieve_ae) else None,
    )


def _plan_sequence(
    elem: DataElement,
    seq: SeqAttr,
    at: list[Entity],
    above: list[Entity],
    select: _Select,
    where: list[str],
    params: list[object],
    slots: list[_Slot],
    unsupported: list[str],
) -> None:
    tag = int(elem.tag)
    if seq.entity not in at:
        items_present = bool(elem.value) and any(len(item) for item in elem.value)
        if seq.entity in above and items_present and any(
            _element_values(e) for item in elem.value for e in item if e.VR != "SQ"
        ):
            raise MatchingError(
                f"{seq.keyword} lies above the query level; only unique keys may be matched there"
            )
        if seq.entity not in above:
            unsupported.append(_tag_name(tag))
            slots.append(_Slot(tag, "SQ", "empty"))
            return
    alias = ALIAS[seq.entity]
    presence = select.add(f"{alias}.{seq.presence}")
    by_tag = {a.tag: a for a in seq.items}
    item_slots: list[tuple[int, str, int]] = []
    request_items = list(elem.value or [])
    if len(request_items) > 1:
        raise MatchingError(f"{seq.keyword} used as a matching key must hold a single item")
    if not request_items or len(request_items[0]) == 0:
        # universal: return every item attribute we hold
        for a in seq.items:
            item_slots.append((a.tag, a.vr, select.add(a.sql)))
    else:
        for sub in request_items[0]:
            sub_tag = int(sub.tag)
            sub_attr = by_tag.get(sub_tag)
            if sub_attr is None:
                unsupported.append(f"{seq.keyword}/{_tag_name(sub_tag)}")
                continue
            item_slots.append((sub_attr.tag, sub_attr.vr, select.add(sub_attr.sql)))
            values = _element_values(sub)
            if values and seq.entity in at:
                cond = _condition(
                    sub_attr.sql, sub_attr.ci_sql, sub_attr.vr, values,
                    f"{seq.keyword}/{sub_attr.keyword}",
                )
                if cond is not None:
                    where.append(cond[0])
                    params.extend(cond[1])
    slots.append(_Slot(tag, "SQ", "seq", presence=presence, items=tuple(item_slots)))


# ---------------------------------------------------------------------------
# Retrieve plans
# ---------------------------------------------------------------------------


@dataclass
class RetrievePlan:
    """A compiled C-GET/C-MOVE identifier.

    The SQL yields ``(sop_class_uid, sop_instance_uid, rel_path,
    transfer_syntax)`` rows.
    """

    level: str
    model: str
    sql: str
    params: list[object]


def plan_retrieve(identifier: Dataset, model: str = "study", level: str | None = None) -> RetrievePlan:
    """Compile a C-GET/C-MOVE *identifier* (unique keys only; see module docstring).

    Raises :class:`MatchingError` (0xA900) when the level or a unique key is
    missing or invalid.
    """
    model = resolve_model(model)
    level = resolve_level(level, identifier, model)
    above_levels, _at, _above = _levels_for(model, level)
    where: list[str] = []
    params: list[object] = []

    for lv in above_levels:
        attr = ATTRIBUTES_BY_KEYWORD[_UNIQUE_KEY[lv]]
        elem = identifier.get(attr.tag) if attr.tag in identifier else None
        value = _single_unique_value(attr, elem, "above the retrieve level")
        where.append(f"{attr.sql} = ?")
        params.append(value)

    key = ATTRIBUTES_BY_KEYWORD[_UNIQUE_KEY[level]]
    if key.tag not in identifier:
        raise MatchingError(f"{key.keyword} (unique key of the retrieve level {level}) is missing")
    values = _element_values(identifier[key.tag])
    if not values or any(not v or v in ('""', "*") or "*" in v or "?" in v for v in values):
        raise MatchingError(
            f"{key.keyword} (unique key of the retrieve level {level}) must hold "
            "a single value or a list of UIDs"
        )
    if level == "PATIENT":
        if len(values) != 1:
            raise MatchingError("PatientID at the PATIENT retrieve level must hold a single value")
        where.append(f"{key.sql} = ?")
        params.append(values[0])
    elif len(values) == 1:
        where.append(f"{key.sql} = ?")
        params.append(values[0])
    else:
        where.append(f"{key.sql} IN ({', '.join('?' * len(values))})")
        params.extend(values)

    # Optional qualifiers: IssuerOfPatientID; PatientID in Study Root.
    issuer = ATTRIBUTES_BY_KEYWORD["IssuerOfPatientID"]
    if issuer.tag in identifier and _element_values(identifier[issuer.tag]):
        where.append(f"{issuer.sql} = ?")
        params.append(_single_unique_value(issuer, identifier[issuer.tag], "in a retrieve"))
    pid = ATTRIBUTES_BY_KEYWORD["PatientID"]
    if (
        model == "study"
        and pid.tag in identifier
        and _element_values(identifier[pid.tag])
    ):
        where.append(f"{pid.sql} = ?")
        params.append(_single_unique_value(pid, identifier[pid.tag], "in a retrieve"))

    sql = (
        "SELECT i.sop_class_uid, i.sop_instance_uid, i.rel_path, i.transfer_syntax "
        f"FROM {_from_clause('instance')} WHERE {' AND '.join(where)} "
        "ORDER BY st.pk, se.pk, CAST(i.instance_number AS INTEGER), i.pk"
    )
    return RetrievePlan(level=level, model=model, sql=sql, params=params)
