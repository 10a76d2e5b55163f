"""Relevant Patient Information Query (PS3.4 Annex Q): SCU, SCP and builders.

The service is a C-FIND that answers with *at most one* patient: the
requested demographics plus an SR-style content tree built to a PS3.16
template (TID 9007 general, TID 9000 breast imaging, TID 3802 cardiovascular
history).  It runs on the C-FIND machinery of :mod:`aiodicom.services.find`.

SCU::

    ds = await assoc.relevant_patient_info("12345", template="9000")

returns the one matching identifier, ``None`` for no match, and raises
:class:`RelevantPatientInfoError` (status C100 "more than one patient
matched", C200 "template not supported", A900, ...).  The raw C-FIND is
available too: ``assoc.find(identifier, model="rpq-general")``.

SCP::

    async def handler(req: RelevantPatientRequest) -> Sequence[Dataset] | None:
        return [build_relevant_patient_info(patient, req.template, items=[...])]

    serve_relevant_patient_info(server, handler)

The library, not the handler, enforces Annex Q: it answers A900 to a request
without a single-valued PatientID (no wildcards, no list), without exactly
one DCMR ContentTemplateSequence item, or naming a template the SOP class
does not use (breast: 9000 only, cardiac: 3802 only; general: any), counts the handler's candidates (0: success
with no pending response; 1: one FF00 then success; more: C100, nothing
sent), answers C200 when the handler raises :class:`TemplateNotSupported` or
returns :data:`TEMPLATE_NOT_SUPPORTED`, and checks the single answer against
the requested template's structure before it goes out (a non-conforming
answer becomes a C000 failure, never a bad identifier on the wire).  The
response carries only the requested attributes and those Annex Q adds.

Facts and where they come from.  The service rules (request/response
identifier, statuses, SOP class -> root template, "Concept Name Code Sequence
and Content Sequence shall always be sent zero length in the Request
Identifier") are PS3.4 Annex Q as in chsasank/dicom_standard
``source/part04/chapter_Q.rst``.  Template root concepts
(:data:`ROOT_CONCEPTS`):

* TID 3802 Cardiovascular Patient History: ``(121060, DCM, "History")``, row 1
  of TID 3802 as printed in CP-759 "Update Cardiovascular Patient History".
* TID 9000 Relevant Patient Information for Breast Imaging:
  ``(111511, DCM, "Relevant Patient Information for Breast Imaging")``: the
  DCM code whose meaning is exactly the template title (pydicom's copy of
  the PS3.16 DCM table).  Row 1 of TID 9000 itself was not seen: unconfirmed.
* TID 9007 General Relevant Patient Information:
  ``(111517, DCM, "Relevant Patient Information")``: best match in the same
  table; row 1 of TID 9007 was not seen: UNCONFIRMED.

Because two of the three are unconfirmed, the SCP's conformance check does
not compare the root concept with this table; it checks structure only.
"""

from __future__ import annotations

import datetime
import enum
import inspect
import logging
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any, Final, Literal

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from ..aio.errors import DICOMError
from ..dimse.commands import PRIORITY_MEDIUM
from ..dimse.fragments import Message
from ..dimse.status import Status, describe
from ..uids import (
    RELEVANT_PATIENT_INFORMATION_QUERY_SOP_CLASSES,
    BreastImagingRelevantPatientInformationQuery,
    CardiacRelevantPatientInformationQuery,
    GeneralRelevantPatientInformationQuery,
)
from .find import FindRequest, resolve_model, serve_find
from .store import ServiceError

if TYPE_CHECKING:
    from ..aio.association import Association
    from ..aio.server import Server

__all__ = [
    "DEFAULT_RETURN_KEYS",
    "NONCONFORMING_ANSWER",
    "ROOT_CONCEPTS",
    "RPQ_MODELS",
    "TEMPLATE_NOT_SUPPORTED",
    "TEMPLATE_SOP_CLASSES",
    "RelevantPatientHandler",
    "RelevantPatientInfoError",
    "RelevantPatientRequest",
    "TemplateNotSupported",
    "build_relevant_patient_info",
    "build_relevant_patient_query",
    "check_relevant_patient_info",
    "content_item",
    "relevant_patient_info",
    "serve_relevant_patient_info",
    "sop_class_for_template",
]

log = logging.getLogger("aiodicom.rpq")

# ------------------------------------------------------------------ constants

#: Short names of the three SOP classes (also accepted by ``assoc.find(model=...)``).
RPQ_MODELS: Final[dict[str, str]] = {
    "rpq-general": GeneralRelevantPatientInformationQuery,
    "rpq-breast": BreastImagingRelevantPatientInformationQuery,
    "rpq-cardiac": CardiacRelevantPatientInformationQuery,
}

#: Template -> the SOP class whose root template it is (PS3.4 Table Q.4-3).
#: Any other PS3.16 Annex K template goes with the general SOP class.
TEMPLATE_SOP_CLASSES: Final[dict[str, str]] = {
    "9007": GeneralRelevantPatientInformationQuery,
    "9000": BreastImagingRelevantPatientInformationQuery,
    "3802": CardiacRelevantPatientInformationQuery,
}

#: SOP classes fixed to one root template; the general class takes TID 9007
#: "or [a template] from the list in PS3.16 Annex K", which is extensible.
_FIXED_TEMPLATE: Final[dict[str, str]] = {
    BreastImagingRelevantPatientInformationQuery: "9000",
    CardiacRelevantPatientInformationQuery: "3802",
}

#: Root concept name (code value, coding scheme, code meaning) of each
#: template; see the module docstring for which are confirmed.
ROOT_CONCEPTS: Final[dict[str, tuple[str, str, str]]] = {
    "9007": ("111517", "DCM", "Relevant Patient Information"),  # UNCONFIRMED
    "9000": ("111511", "DCM", "Relevant Patient Information for Breast Imaging"),  # name match only
    "3802": ("121060", "DCM", "History"),  # CP-759, TID 3802 row 1
}

#: Return keys asked for by :func:`relevant_patient_info` unless told otherwise.
DEFAULT_RETURN_KEYS: Final[tuple[str, ...]] = ("PatientName", "PatientBirthDate", "PatientSex")

#: Status for a handler answer that does not conform to the requested template.
NONCONFORMING_ANSWER: Final = 0xC000
_IDENTIFIER_DOES_NOT_MATCH: Final = 0xA900
_MORE_THAN_ONE_MATCH: Final = 0xC100
_UNSUPPORTED_TEMPLATE: Final = 0xC200

_MAPPING_RESOURCE: Final = "DCMR"

# Top-level attributes a response may carry besides those requested
# (PS3.4 Q.2.1.1.3.2, Table Q.4-1 structured information, Table Q.4-2).
_TAG_PATIENT_ID: Final = 0x00100020
_TAG_ISSUER: Final = 0x00100021
_TAG_CHARSET: Final = 0x00080005
_TAG_TEMPLATE_SEQ: Final = 0x0040A504
_TAG_OBSERVATION_DT: Final = 0x0040A032
_TAG_VALUE_TYPE: Final = 0x0040A040
_TAG_CONCEPT_NAME: Final = 0x0040A043
_TAG_CONTENT_SEQ: Final = 0x0040A730
_TAG_HL7_REFS: Final = 0x0040A390
_TAG_OTHER_STUDIES: Final = 0x00081200
_ANNEX_Q_TAGS: Final = frozenset(
    {
        _TAG_PATIENT_ID,
        _TAG_CHARSET,
        _TAG_TEMPLATE_SEQ,
        _TAG_OBSERVATION_DT,
        _TAG_VALUE_TYPE,
        _TAG_CONCEPT_NAME,
        _TAG_CONTENT_SEQ,
        _TAG_HL7_REFS,
        _TAG_OTHER_STUDIES,
    }
)
# Request attributes that are not "return keys" from a handler's point of view.
_NOT_RETURN_KEYS: Final = _ANNEX_Q_TAGS | {_TAG_ISSUER}

#: SR relationship types (PS3.3 C.17.3.2.4 defined terms).
_RELATIONSHIP_TYPES: Final = frozenset(
    {
        "CONTAINS",
        "HAS PROPERTIES",
        "HAS OBS CONTEXT",
        "HAS ACQ CONTEXT",
        "INFERRED FROM",
        "SELECTED FROM",
        "HAS CONCEPT MOD",
    }
)
# Value type -> the attribute holding the value (SR Document Content Module).
_VALUE_ATTRIBUTE: Final[dict[str, str]] = {
    "TEXT": "TextValue",
    "CODE": "ConceptCodeSequence",
    "NUM": "MeasuredValueSequence",
    "DATE": "Date",
    "DATETIME": "DateTime",
    "TIME": "Time",
    "PNAME": "PersonName",
    "UIDREF": "UID",
    "COMPOSITE": "ReferencedSOPSequence",
    "IMAGE": "ReferencedSOPSequence",
    "WAVEFORM": "ReferencedSOPSequence",
    "CONTAINER": "ContentSequence",
}
_MAX_DEPTH: Final = 64


# ------------------------------------------------------------------- errors


class RelevantPatientInfoError(DICOMError):
    """A Relevant Patient Information Query failed.

    :attr:`status` is the final DIMSE status (``None`` when the peer broke
    the protocol, e.g. sent two matches), :attr:`error_comment` the peer's
    Error Comment.  :attr:`more_than_one_match` and
    :attr:`template_not_supported` name the two Annex Q specific failures.
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        error_comment: str | None = None,
        *,
        patient_id: str = "",
        template: str = "",
    ) -> None:
        super().__init__(message)
        self.status = Status(status) if status is not None else None
        self.error_comment = error_comment
        self.patient_id = patient_id
        self.template = template

    @property
    def more_than_one_match(self) -> bool:
        """Status C100: the SCP found more than one patient."""
        return self.status == _MORE_THAN_ONE_MATCH

    @property
    def template_not_supported(self) -> bool:
        """Status C200: the SCP cannot produce the requested template."""
        return self.status == _UNSUPPORTED_TEMPLATE


class TemplateNotSupported(ServiceError):
    """Raise from an RPQ handler to answer C200 (unable to support the template)."""

    def __init__(self, template: str | None = None, comment: str | None = None) -> None:
        text = comment or (f"template TID {template} not supported" if template else "template not supported")
        super().__init__(_UNSUPPORTED_TEMPLATE, text)
        self.template = template


class _Sentinel(enum.Enum):
    TEMPLATE_NOT_SUPPORTED = "TEMPLATE_NOT_SUPPORTED"

    def __repr__(self) -> str:
        return self.value


#: Return this from an RPQ handler to answer C200, like raising :class:`TemplateNotSupported`.
TEMPLATE_NOT_SUPPORTED: Final = _Sentinel.TEMPLATE_NOT_SUPPORTED


# ------------------------------------------------------------ small helpers

#: A coded concept: ``(code value, coding scheme designator, code meaning)``
#: or any object with ``value``, ``scheme_designator`` and ``meaning``
#: attributes (e.g. :class:`pydicom.sr.coding.Code`).
Concept = Any  # tuple[str, str, str] | pydicom.sr.coding.Code | a code item Dataset


def _code_dataset(concept: Concept) -> Dataset:
    if isinstance(concept, Dataset):
        return concept
    version = None
    if hasattr(concept, "scheme_designator"):  # pydicom.sr.coding.Code and the like
        value, scheme, meaning = concept.value, concept.scheme_designator, concept.meaning
        version = getattr(concept, "scheme_version", None)
    elif isinstance(concept, tuple) and len(concept) == 3:
        value, scheme, meaning = concept
    else:
        raise TypeError(f"a code is (value, scheme, meaning) or a pydicom Code, not {concept!r}")
    ds = Dataset()
    ds.CodeValue = str(value)
    ds.CodingSchemeDesignator = str(scheme)
    if version:
        ds.CodingSchemeVersion = str(version)
    ds.CodeMeaning = str(meaning)
    return ds


def _template_id(template: str | int) -> str:
    text = str(template).strip()
    if text.upper().startswith("TID"):
        text = text[3:].strip()
    if not text.isdigit() or text != str(int(text)):
        raise ValueError(f"invalid template identifier {template!r} (digits, no leading zeros, e.g. '9007')")
    return text


def _template_sequence(template: str) -> list[Dataset]:
    item = Dataset()
    item.MappingResource = _MAPPING_RESOURCE
    item.TemplateIdentifier = template
    return [item]


def sop_class_for_template(template: str | int) -> str:
    """The SOP class to query *template* with: 9000 breast, 3802 cardiac, else general."""
    return TEMPLATE_SOP_CLASSES.get(_template_id(template), GeneralRelevantPatientInformationQuery)


def _resolve_sop_class(sop_class: str) -> str:
    name = sop_class.lower()
    for prefix in ("", "rpq-"):
        uid = RPQ_MODELS.get(prefix + name)
        if uid is not None:
            return uid
    return resolve_model(sop_class)


def _keyword_tag(key: str | int) -> int:
    if isinstance(key, int):
        return key
    tag = tag_for_keyword(key)
    if tag is None:
        raise ValueError(f"unknown attribute keyword {key!r}")
    return int(tag)


def _empty_element(tag: int) -> DataElement:
    try:
        vr = str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        vr = "UN"
    return DataElement(tag, vr, [] if vr == "SQ" else None)


def _single_value_problem(value: Any) -> str | None:
    """Why *value* is not usable for Single Value Matching, or None."""
    if isinstance(value, (MultiValue, list, tuple)) or "\\" in str(value):
        return "must be a single value"
    if "*" in str(value) or "?" in str(value):
        return "must not contain wildcards"
    return None


# ------------------------------------------------------------- conformance


def _code_problem(seq: Any, what: str) -> str | None:
    if not isinstance(seq, DicomSequence) or len(seq) != 1:
        n = len(seq) if isinstance(seq, DicomSequence) else "no"
        return f"{what} must have exactly one item (has {n})"
    item = seq[0]
    value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue")
    if not value:
        return f"{what} item has no CodeValue"
    if not item.get("CodingSchemeDesignator") and not item.get("URNCodeValue"):
        return f"{what} item has no CodingSchemeDesignator"
    if not item.get("CodeMeaning"):
        return f"{what} item has no CodeMeaning"
    return None


def _check_value(item: Dataset, value_type: str, where: str, problems: list[str]) -> None:
    attribute = _VALUE_ATTRIBUTE[value_type]
    if value_type == "CONTAINER":
        return  # an empty container has no ContentSequence; children are checked by the caller
    if attribute not in item:
        problems.append(f"{where}: {value_type} item without {attribute}")
        return
    value = item[attribute].value
    if value_type == "CODE":
        problem = _code_problem(value, "ConceptCodeSequence")
        if problem:
            problems.append(f"{where}: {problem}")
    elif value_type == "NUM":
        if len(value) > 1:
            problems.append(f"{where}: MeasuredValueSequence has more than one item")
        elif len(value) == 1:
            measured = value[0]
            if measured.get("NumericValue") in (None, ""):
                problems.append(f"{where}: MeasuredValueSequence item without NumericValue")
            problem = _code_problem(measured.get("MeasurementUnitsCodeSequence"), "MeasurementUnitsCodeSequence")
            if problem:
                problems.append(f"{where}: {problem}")
        elif "NumericValueQualifierCodeSequence" not in item:
            problems.append(f"{where}: empty MeasuredValueSequence without NumericValueQualifierCodeSequence")
    elif value_type in ("COMPOSITE", "IMAGE", "WAVEFORM"):
        if len(value) != 1:
            problems.append(f"{where}: ReferencedSOPSequence must have exactly one item")
    elif value in (None, ""):
        problems.append(f"{where}: {value_type} item with an empty {attribute}")


def _check_items(items: Any, path: str, depth: int, problems: list[str]) -> None:
    if not isinstance(items, DicomSequence):
        problems.append(f"{path or 'root'}: ContentSequence is not a sequence")
        return
    if depth > _MAX_DEPTH:
        problems.append(f"{path}: content tree nested deeper than {_MAX_DEPTH} levels")
        return
    for n, item in enumerate(items, 1):
        where = f"item {path}{n}"
        if "ReferencedContentItemIdentifier" in item:
            problems.append(f"{where}: by-reference relationship (not allowed in Annex Q)")
            continue
        relationship = str(item.get("RelationshipType") or "")
        if relationship not in _RELATIONSHIP_TYPES:
            problems.append(f"{where}: invalid RelationshipType {relationship!r}")
        value_type = str(item.get("ValueType") or "")
        if value_type not in _VALUE_ATTRIBUTE:
            problems.append(f"{where}: unsupported ValueType {value_type!r}")
        else:
            _check_value(item, value_type, where, problems)
        problem = _code_problem(item.get("ConceptNameCodeSequence"), "ConceptNameCodeSequence")
        if problem:
            problems.append(f"{where}: {problem}")
        if "ContentSequence" in item:
            _check_items(item.ContentSequence, f"{path}{n}.", depth + 1, problems)


def check_relevant_patient_info(ds: Dataset, template: str | int, *, patient_id: str | None = None) -> list[str]:
    """Structural problems of *ds* as an Annex Q answer for *template* (empty: conforms).

    Checks the root (ValueType CONTAINER, one ConceptNameCodeSequence item
    with value/scheme/meaning, ObservationDateTime, a ContentTemplateSequence
    of one DCMR item naming *template*), every content item (RelationshipType,
    ValueType, ConceptNameCodeSequence and the value attribute of its value
    type, recursively; no by-reference relationships) and, when given, that
    PatientID is *patient_id*.  It does not check the template's rows.
    """
    template = _template_id(template)
    problems: list[str] = []
    if not isinstance(ds, Dataset):
        return [f"answer is a {type(ds).__name__}, not a Dataset"]
    if patient_id is not None and ds.get("PatientID") not in (None, "") and str(ds.PatientID) != patient_id:
        problems.append(f"answer is for PatientID {ds.PatientID!s}, not {patient_id}")
    seq = ds.get("ContentTemplateSequence")
    if not isinstance(seq, DicomSequence) or len(seq) != 1:
        problems.append("ContentTemplateSequence must have exactly one item")
    else:
        mapping = str(seq[0].get("MappingResource") or "")
        tid = str(seq[0].get("TemplateIdentifier") or "")
        if mapping != _MAPPING_RESOURCE or tid != template:
            problems.append(f"ContentTemplateSequence names {mapping or '?'} {tid or '?'}, not DCMR {template}")
    if str(ds.get("ValueType") or "") != "CONTAINER":
        problems.append(f"root ValueType is {ds.get('ValueType')!r}, not CONTAINER")
    problem = _code_problem(ds.get("ConceptNameCodeSequence"), "root ConceptNameCodeSequence")
    if problem:
        problems.append(problem)
    if not ds.get("ObservationDateTime"):
        problems.append("no ObservationDateTime")
    if "ContentSequence" in ds:
        _check_items(ds.ContentSequence, "", 1, problems)
    return problems


# ---------------------------------------------------------------- builders


def content_item(
    value_type: str,
    concept: Concept,
    value: Any = None,
    *,
    relationship: str = "CONTAINS",
    units: Concept | None = None,
    children: Iterable[Dataset] = (),
) -> Dataset:
    """One SR content item for a relevant patient information tree.

    *value* by value type: TEXT, PNAME, UIDREF a string; CODE a concept;
    NUM a number (with *units*, default UCUM "1" "no units"); DATE, DATETIME,
    TIME a string or a :mod:`datetime` object; CONTAINER an iterable of
    child items; COMPOSITE/IMAGE/WAVEFORM ``(sop_class_uid,
    sop_instance_uid)``.  *children* are nested items of any item (e.g.
    ``HAS CONCEPT MOD``).
    """
    value_type = value_type.upper()
    if value_type not in _VALUE_ATTRIBUTE:
        raise ValueError(f"unsupported value type {value_type!r}")
    if relationship not in _RELATIONSHIP_TYPES:
        raise ValueError(f"invalid relationship type {relationship!r}")
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = [_code_dataset(concept)]
    nested = list(children)
    if value_type == "TEXT":
        item.TextValue = str(value)
    elif value_type == "PNAME":
        item.PersonName = str(value)
    elif value_type == "UIDREF":
        item.UID = str(value)
    elif value_type == "CODE":
        item.ConceptCodeSequence = [_code_dataset(value)]
    elif value_type == "NUM":
        measured = Dataset()
        measured.NumericValue = str(value)
        measured.MeasurementUnitsCodeSequence = [_code_dataset(units or ("1", "UCUM", "no units"))]
        item.MeasuredValueSequence = [measured]
    elif value_type == "DATE":
        item.Date = value.strftime("%Y%m%d") if isinstance(value, datetime.date) else str(value)
    elif value_type == "DATETIME":
        item.DateTime = value.strftime("%Y%m%d%H%M%S") if isinstance(value, datetime.datetime) else str(value)
    elif value_type == "TIME":
        item.Time = value.strftime("%H%M%S") if isinstance(value, datetime.time) else str(value)
    elif value_type == "CONTAINER":
        item.ContinuityOfContent = "SEPARATE"
        nested = list(value or ()) + nested
    else:  # COMPOSITE, IMAGE, WAVEFORM
        sop_class, sop_instance = value
        ref = Dataset()
        ref.ReferencedSOPClassUID = sop_class
        ref.ReferencedSOPInstanceUID = sop_instance
        item.ReferencedSOPSequence = [ref]
    if nested:
        item.ContentSequence = nested
    return item


def build_relevant_patient_info(
    patient: Dataset | Mapping[str, Any],
    template: str | int = "9007",
    items: Iterable[Dataset] = (),
    *,
    observation_datetime: datetime.datetime | str | None = None,
    root_concept: Concept | None = None,
) -> Dataset:
    """An Annex Q answer: *patient*'s demographics plus a content tree for *template*.

    *patient* is a Dataset or a ``{keyword: value}`` mapping (PatientID,
    PatientName, PatientBirthDate, PatientSex, SpecificCharacterSet, ...);
    its top-level attributes are copied.  The root is a CONTAINER titled
    with the template's root concept (:data:`ROOT_CONCEPTS`; pass
    *root_concept* for other templates or to override) holding *items*
    (see :func:`content_item`).  ObservationDateTime defaults to now.
    """
    template = _template_id(template)
    ds = Dataset()
    if isinstance(patient, Dataset):
        for elem in patient:
            ds.add(elem)
    else:
        for keyword, value in patient.items():
            setattr(ds, keyword, value)
    concept = root_concept if root_concept is not None else ROOT_CONCEPTS.get(template)
    if concept is None:
        raise ValueError(f"no root concept known for TID {template}; pass root_concept=(value, scheme, meaning)")
    if observation_datetime is None:
        observation_datetime = datetime.datetime.now()
    if isinstance(observation_datetime, datetime.datetime):
        observation_datetime = observation_datetime.strftime("%Y%m%d%H%M%S")
    ds.ObservationDateTime = observation_datetime
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code_dataset(concept)]
    ds.ContentTemplateSequence = _template_sequence(template)
    ds.ContentSequence = list(items)
    return ds


def build_relevant_patient_query(
    patient_id: str,
    template: str | int = "9007",
    *,
    issuer: str | None = None,
    return_keys: Iterable[str | int] = DEFAULT_RETURN_KEYS,
    specific_character_set: str | None = None,
) -> Dataset:
    """The C-FIND request identifier of a Relevant Patient Information Query.

    PatientID (and IssuerOfPatientID) to match, the *return_keys* empty,
    ContentTemplateSequence with one DCMR item naming *template*, and the
    structured-information attributes the response fills in, zero length as
    PS3.4 Q.4.3.1.2.1 requires.
    """
    if not patient_id or _single_value_problem(patient_id):
        raise ValueError(f"patient_id must be one value without wildcards, not {patient_id!r}")
    template = _template_id(template)
    ds = Dataset()
    if specific_character_set:
        ds.SpecificCharacterSet = specific_character_set
    ds.PatientID = patient_id
    if issuer is not None:
        ds.IssuerOfPatientID = issuer
    for key in return_keys:
        tag = _keyword_tag(key)
        if tag not in ds:
            ds.add(_empty_element(tag))
    ds.ContentTemplateSequence = _template_sequence(template)
    ds.ObservationDateTime = None
    ds.ValueType = None
    ds.ConceptNameCodeSequence = []
    ds.ContentSequence = []
    return ds


# --------------------------------------------------------------------- SCU


async def relevant_patient_info(
    assoc: Association,
    patient_id: str,
    template: str | int = "9007",
    *,
    issuer: str | None = None,
    return_keys: Iterable[str | int] = DEFAULT_RETURN_KEYS,
    sop_class: str | None = None,
    priority: int = PRIORITY_MEDIUM,
) -> Dataset | None:
    """Query the peer for *patient_id*'s relevant information in *template*.

    The SOP class follows the template (9007 general, 9000 breast, 3802
    cardiac, others general); *sop_class* (a UID or ``"general"``,
    ``"breast"``, ``"cardiac"``, ``"rpq-..."``) overrides it.  Returns the
    single matching identifier, or ``None`` when no patient matched.
    Raises :class:`RelevantPatientInfoError` for C100 (more than one patient
    matched), C200 (template not supported) and any other failure, and
    :class:`~aiodicom.aio.errors.NoAcceptedContext` when the SOP class was
    not accepted.
    """
    template = _template_id(template)
    uid = _resolve_sop_class(sop_class) if sop_class else sop_class_for_template(template)
    query = build_relevant_patient_query(patient_id, template, issuer=issuer, return_keys=return_keys)
    label = f"relevant patient information for {patient_id!r} (TID {template})"
    matches: list[Dataset] = []
    async with assoc.find(query, uid, priority=priority) as results:
        async for status, identifier in results:
            if identifier is None:
                continue
            matches.append(identifier)
            if len(matches) > 1:
                break  # leaving the loop cancels the operation
    if len(matches) > 1:
        raise RelevantPatientInfoError(
            f"{label}: the peer sent more than one match (Annex Q allows one)",
            None,
            patient_id=patient_id,
            template=template,
        )
    final = results.final_status
    comment = results.final_command.error_comment if results.final_command is not None else None
    if final is not None and final.is_success:
        return matches[0] if matches else None
    suffix = f"; peer says: {comment}" if comment else ""
    if final is None:
        text = f"{label}: no final response"
    elif final == _MORE_THAN_ONE_MATCH:
        text = f"{label}: more than one patient matched (status 0xC100){suffix}"
    elif final == _UNSUPPORTED_TEMPLATE:
        text = f"{label}: template TID {template} not supported by the peer (status 0xC200){suffix}"
    elif final.is_cancel:
        text = f"{label}: cancelled (status 0xFE00)"
    else:
        text = f"{label}: failed with status 0x{int(final):04X} ({describe(final)}){suffix}"
    raise RelevantPatientInfoError(text, final, comment, patient_id=patient_id, template=template)


# --------------------------------------------------------------------- SCP


class RelevantPatientRequest(FindRequest):
    """One received Relevant Patient Information Query, already checked against Annex Q.

    Besides everything a :class:`~aiodicom.services.find.FindRequest` has:
    :attr:`patient_id`, :attr:`issuer_of_patient_id` (``None`` when absent or
    empty), :attr:`template` (e.g. ``"9007"``), :attr:`return_keys` (the
    other requested attributes' keywords) and :attr:`sop_class_uid`.
    """

    __slots__ = ("issuer_of_patient_id", "patient_id", "return_keys", "template")

    def __init__(self, assoc: Association, message: Message, transfer_syntax: str) -> None:
        super().__init__(assoc, message, transfer_syntax)
        self.patient_id = ""
        self.issuer_of_patient_id: str | None = None
        self.template = ""
        self.return_keys: tuple[str, ...] = ()

    @property
    def sop_class_uid(self) -> str:
        """The SOP class queried (same as :attr:`model`)."""
        return self.model

    def __repr__(self) -> str:
        return f"<RelevantPatientRequest TID {self.template} PatientID={self.patient_id!r} #{self.message_id}>"


#: What a handler returns: the candidate match(es), or :data:`TEMPLATE_NOT_SUPPORTED`.
RelevantPatientAnswer = Dataset | Sequence[Dataset] | None | Literal[_Sentinel.TEMPLATE_NOT_SUPPORTED]
#: An RPQ handler: ``async def handler(req) -> Sequence[Dataset] | Dataset | None``
#: (a plain function or an async iterable of candidates also work).
RelevantPatientHandler = Callable[
    [RelevantPatientRequest],
    Awaitable[RelevantPatientAnswer] | RelevantPatientAnswer | AsyncIterable[Dataset],
]


def _refuse(comment: str) -> ServiceError:
    return ServiceError(_IDENTIFIER_DOES_NOT_MATCH, comment)


def _parse_request(find_req: FindRequest) -> RelevantPatientRequest:
    """Check the identifier against Annex Q (ServiceError A900 if it fails)."""
    req = RelevantPatientRequest(find_req.assoc, find_req.message, find_req.transfer_syntax)
    ident = req.identifier  # DatasetDecodeError -> A900 in the find driver
    pid = ident.get("PatientID")
    if pid is None or str(pid).strip() == "":
        raise _refuse("PatientID (0010,0020) missing or empty")
    problem = _single_value_problem(pid)
    if problem:
        raise _refuse(f"PatientID {problem}")
    req.patient_id = str(pid).strip()
    issuer = ident.get("IssuerOfPatientID")
    if issuer is not None and str(issuer).strip():
        problem = _single_value_problem(issuer)
        if problem:
            raise _refuse(f"IssuerOfPatientID {problem}")
        req.issuer_of_patient_id = str(issuer).strip()
    seq = ident.get("ContentTemplateSequence")
    if not isinstance(seq, DicomSequence) or len(seq) != 1:
        count = len(seq) if isinstance(seq, DicomSequence) else 0
        raise _refuse(f"ContentTemplateSequence needs exactly 1 item, has {count}")
    mapping = str(seq[0].get("MappingResource") or "").strip()
    if mapping != _MAPPING_RESOURCE:
        raise _refuse(f"MappingResource {mapping!r} is not DCMR")
    raw = str(seq[0].get("TemplateIdentifier") or "").strip()
    try:
        req.template = _template_id(raw)
    except ValueError:
        raise _refuse(f"invalid TemplateIdentifier {raw!r}") from None
    fixed = _FIXED_TEMPLATE.get(req.model)
    if fixed is not None and req.template != fixed:
        raise _refuse(f"this SOP class queries TID {fixed}, not TID {req.template}")
    keys = []
    for tag in ident.keys():  # noqa: SIM118 - iterating a Dataset yields elements
        if int(tag) not in _NOT_RETURN_KEYS:
            keys.append(keyword_for_tag(tag) or f"({tag.group:04X},{tag.element:04X})")
    req.return_keys = tuple(keys)
    return req


async def _candidates(handler: RelevantPatientHandler, req: RelevantPatientRequest) -> list[Any] | _Sentinel:
    """Call the handler; its answer as a list (at most two kept from an iterable)."""
    result: Any = handler(req)
    if inspect.isawaitable(result):
        result = await result
    if result is TEMPLATE_NOT_SUPPORTED:
        return _Sentinel.TEMPLATE_NOT_SUPPORTED
    if result is None:
        return []
    if isinstance(result, Dataset):
        return [result]
    if isinstance(result, AsyncIterable):
        found: list[Any] = []
        iterator: AsyncIterator[Any] = aiter(result)
        try:
            async for item in iterator:
                found.append(item)
                if len(found) > 1:
                    break
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
        return found
    if isinstance(result, (str, bytes)) or not isinstance(result, Iterable):
        raise TypeError(f"relevant patient handler returned {type(result).__name__}, expected Datasets or None")
    return list(result)


def _response_identifier(answer: Dataset, req: RelevantPatientRequest) -> Dataset:
    """Only the requested attributes and the Annex Q ones; keys from the request."""
    request = req.identifier
    allowed = {int(tag) for tag in request.keys()} | _ANNEX_Q_TAGS  # noqa: SIM118
    out = Dataset()
    for elem in answer:
        if int(elem.tag) in allowed:
            out.add(elem)
    for tag in request.keys():  # noqa: SIM118
        if tag not in out:
            out.add(_empty_element(int(tag)))  # requested, not known: zero length
    out.PatientID = req.patient_id
    if req.issuer_of_patient_id is not None and not out.get("IssuerOfPatientID"):
        out.IssuerOfPatientID = req.issuer_of_patient_id
    if "ContentSequence" not in out:
        out.ContentSequence = []  # Type 2
    return out


def _nonconforming(req: RelevantPatientRequest, problems: list[str]) -> ServiceError:
    log.warning(
        "RPQ answer for PatientID %r (TID %s) to %s does not conform; not sent: %s",
        req.patient_id,
        req.template,
        req.calling_ae,
        "; ".join(problems),
    )
    return ServiceError(NONCONFORMING_ANSWER, f"nonconforming: {problems[0]}")


def _adapter(
    handler: RelevantPatientHandler, templates: frozenset[str] | None
) -> Callable[[FindRequest], AsyncIterator[Dataset]]:
    async def rpq_find(find_req: FindRequest) -> AsyncIterator[Dataset]:
        req = _parse_request(find_req)
        if templates is not None and req.template not in templates:
            raise TemplateNotSupported(req.template)
        found = await _candidates(handler, req)
        if found is TEMPLATE_NOT_SUPPORTED:
            raise TemplateNotSupported(req.template)
        assert isinstance(found, list)
        if not found:
            return  # Success, no pending response
        if len(found) > 1:
            raise ServiceError(_MORE_THAN_ONE_MATCH, f"more than one patient matched PatientID {req.patient_id}")
        (answer,) = found
        if not isinstance(answer, Dataset):
            raise TypeError(f"relevant patient handler returned a {type(answer).__name__}, expected a Dataset")
        problems = check_relevant_patient_info(answer, req.template, patient_id=req.patient_id)
        if problems:
            raise _nonconforming(req, problems)
        yield _response_identifier(answer, req)

    return rpq_find


def serve_relevant_patient_info(
    server: Server,
    handler: RelevantPatientHandler,
    sop_classes: Iterable[str] = RELEVANT_PATIENT_INFORMATION_QUERY_SOP_CLASSES,
    *,
    templates: Iterable[str | int] | None = None,
    transfer_syntaxes: Iterable[str] | None = None,
) -> None:
    """Serve the Relevant Patient Information Query on *server* with *handler*.

    *handler* gets a :class:`RelevantPatientRequest` (already checked: one
    PatientID, one DCMR template) and returns the candidate matches: ``None``
    or ``[]`` (no match), one Dataset (or a one-item list), several (answered
    C100), or :data:`TEMPLATE_NOT_SUPPORTED` / raises
    :class:`TemplateNotSupported` (C200).  Any other exception is answered
    0xC001 with an error comment.  *sop_classes* are UIDs or ``"rpq-general"``,
    ``"rpq-breast"``, ``"rpq-cardiac"``; *templates*, when given, are the only
    templates served (others get C200 without calling the handler).
    """
    supported = frozenset(_template_id(t) for t in templates) if templates is not None else None
    uids = [_resolve_sop_class(s) for s in sop_classes]
    unknown = [u for u in uids if u not in RELEVANT_PATIENT_INFORMATION_QUERY_SOP_CLASSES]
    if unknown:
        raise ValueError(f"not Relevant Patient Information Query SOP classes: {', '.join(unknown)}")
    serve_find(server, _adapter(handler, supported), models=uids, transfer_syntaxes=transfer_syntaxes)
