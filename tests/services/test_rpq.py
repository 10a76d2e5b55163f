"""Relevant Patient Information Query (PS3.4 Annex Q): aiodicom SCU against
aiodicom SCP over loopback.  Every async test runs on asyncio and uvloop.

The raw ``assoc.find(..., model="rpq-...")`` iteration is used to see exactly
which responses went over the wire (e.g. no pending response before C100).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydicom.dataset import Dataset

import aiodicom
from aiodicom import cli
from aiodicom.services.find import FindRequest, resolve_model, serve_find
from aiodicom.services.rpq import (
    DEFAULT_RETURN_KEYS,
    NONCONFORMING_ANSWER,
    ROOT_CONCEPTS,
    TEMPLATE_NOT_SUPPORTED,
    RelevantPatientInfoError,
    RelevantPatientRequest,
    TemplateNotSupported,
    build_relevant_patient_info,
    build_relevant_patient_query,
    check_relevant_patient_info,
    content_item,
    serve_relevant_patient_info,
    sop_class_for_template,
)
from aiodicom.services.store import HANDLER_FAILED
from aiodicom.uids import (
    RELEVANT_PATIENT_INFORMATION_QUERY_SOP_CLASSES,
    BreastImagingRelevantPatientInformationQuery,
    CardiacRelevantPatientInformationQuery,
    GeneralRelevantPatientInformationQuery,
)

GENERAL = GeneralRelevantPatientInformationQuery
BREAST = BreastImagingRelevantPatientInformationQuery
CARDIAC = CardiacRelevantPatientInformationQuery
VERIFICATION = "1.2.840.10008.1.1"
DEADLINE = 10.0

MENARCHE = ("111518", "DCM", "Age when first menstrual period occurred")
COMMENT = ("121106", "DCM", "Comment")


@pytest.fixture(autouse=True)
def _no_asyncio_errors(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.INFO)
    yield
    gc.collect()
    bad = [
        r
        for when in ("setup", "call", "teardown")
        for r in caplog.get_records(when)  # type: ignore[arg-type]
        if r.levelno >= logging.ERROR and r.name.startswith("asyncio")
    ]
    assert not bad, [r.getMessage() for r in bad]


# ------------------------------------------------------------------ helpers

PATIENTS: dict[str, dict[str, Any]] = {
    "P1": {"PatientID": "P1", "PatientName": "Doe^Jane", "PatientBirthDate": "19700101", "PatientSex": "F"},
    "P2": {"PatientID": "P2", "PatientName": "Roe^Rick", "PatientSex": "M"},
}


def answer_for(pid: str, template: str, **extra: Any) -> Dataset:
    """A conforming answer with a small tree (NUM, TEXT, nested CONTAINER with a DATE)."""
    demographics = dict(PATIENTS.get(pid, {"PatientID": pid}))
    demographics.update(extra)
    items = [
        content_item("NUM", MENARCHE, 12, units=("a", "UCUM", "year")),
        content_item("TEXT", COMMENT, "no known allergies"),
        content_item(
            "CONTAINER",
            ("111513", "DCM", "Relevant Previous Procedures"),
            [content_item("DATE", ("111526", "DCM", "DateTime Started"), "20200101")],
        ),
    ]
    return build_relevant_patient_info(
        demographics, template, items, observation_datetime="20240102030405"
    )


class Scp:
    """State shared between a test and its handler."""

    def __init__(self) -> None:
        self.requests: list[RelevantPatientRequest] = []
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self.saw_cancel = False


def patient_handler(state: Scp) -> Callable[[RelevantPatientRequest], Any]:
    """P1/P2 match once, TWINS twice, anything else not at all."""

    async def handler(req: RelevantPatientRequest) -> list[Dataset]:
        state.requests.append(req)
        if req.patient_id == "TWINS":
            return [answer_for("TWINS", req.template), answer_for("TWINS", req.template)]
        if req.patient_id in PATIENTS:
            return [answer_for(req.patient_id, req.template, PatientAge="054Y")]
        return []

    return handler


async def start(handler: Any, **kw: Any) -> aiodicom.Server:
    server = aiodicom.Server("RPQSCP", dimse_timeout=DEADLINE)
    serve_relevant_patient_info(server, handler, **kw)
    await server.start("127.0.0.1", 0)
    return server


def connect(server: aiodicom.Server, contexts: Any = None) -> aiodicom.associate:
    return aiodicom.associate(
        "127.0.0.1",
        server.port,
        called_ae="RPQSCP",
        calling_ae="RPQSCU",
        contexts=contexts or [*RELEVANT_PATIENT_INFORMATION_QUERY_SOP_CLASSES, VERIFICATION],
        dimse_timeout=DEADLINE,
    )


async def raw(assoc: aiodicom.Association, query: Dataset, model: str = "rpq-general") -> tuple[list[int], Any]:
    """Every response status of one C-FIND, and the results object (for the final command)."""
    async with assoc.find(query, model) as results:
        statuses = [int(s) async for s, _ in results]
    return statuses, results


def comment_of(results: Any) -> str:
    return str(results.final_command.error_comment or "") if results.final_command is not None else ""


# ------------------------------------------------------------------ matches


async def test_zero_matches_returns_none_and_sends_no_pending() -> None:
    state = Scp()
    server = await start(patient_handler(state))
    try:
        async with connect(server) as assoc:
            assert await assoc.relevant_patient_info("NOBODY") is None
            statuses, _ = await raw(assoc, build_relevant_patient_query("NOBODY"))
    finally:
        await server.close(timeout=1.0)
    assert statuses == [0x0000]  # success only, no FF00
    assert [r.patient_id for r in state.requests] == ["NOBODY", "NOBODY"]


async def test_one_match_returns_the_conforming_tree() -> None:
    state = Scp()
    server = await start(patient_handler(state))
    try:
        async with connect(server) as assoc:
            ds = await assoc.relevant_patient_info("P1")
            statuses, _ = await raw(assoc, build_relevant_patient_query("P1"))
    finally:
        await server.close(timeout=1.0)
    assert statuses == [0xFF00, 0x0000]
    assert ds is not None
    assert check_relevant_patient_info(ds, "9007", patient_id="P1") == []
    assert ds.PatientID == "P1" and str(ds.PatientName) == "Doe^Jane"
    assert ds.PatientBirthDate == "19700101" and ds.PatientSex == "F"
    assert "PatientAge" not in ds  # not requested: stripped by the library
    assert ds.ValueType == "CONTAINER"
    assert ds.ConceptNameCodeSequence[0].CodeValue == ROOT_CONCEPTS["9007"][0]
    assert ds.ContentTemplateSequence[0].MappingResource == "DCMR"
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "9007"
    assert ds.ObservationDateTime == "20240102030405"
    num, text, box = ds.ContentSequence
    assert num.ValueType == "NUM" and num.RelationshipType == "CONTAINS"
    assert num.ConceptNameCodeSequence[0].CodeMeaning == MENARCHE[2]
    assert float(num.MeasuredValueSequence[0].NumericValue) == 12.0
    assert num.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "a"
    assert text.TextValue == "no known allergies"
    assert box.ValueType == "CONTAINER" and box.ContentSequence[0].Date == "20200101"
    req = state.requests[0]
    assert req.template == "9007" and req.sop_class_uid == GENERAL
    assert req.issuer_of_patient_id is None
    assert set(req.return_keys) == set(DEFAULT_RETURN_KEYS)
    assert req.calling_ae == "RPQSCU"


async def test_missing_demographics_are_returned_empty_and_issuer_is_matched() -> None:
    state = Scp()
    server = await start(patient_handler(state))
    try:
        async with connect(server) as assoc:
            ds = await assoc.relevant_patient_info(
                "P2", issuer="HOSP", return_keys=("PatientName", "PatientBirthDate", "EthnicGroup")
            )
    finally:
        await server.close(timeout=1.0)
    assert ds is not None
    assert str(ds.PatientName) == "Roe^Rick"
    assert ds.PatientBirthDate == "" and ds.EthnicGroup == ""  # requested, unknown: zero length
    assert "PatientSex" not in ds  # known to the handler, but not requested
    assert ds.IssuerOfPatientID == "HOSP"  # the key comes back with the request's value
    assert state.requests[0].issuer_of_patient_id == "HOSP"
    assert state.requests[0].return_keys == ("PatientName", "PatientBirthDate", "EthnicGroup")


async def test_more_than_one_patient_is_c100_without_pending() -> None:
    server = await start(patient_handler(Scp()))
    try:
        async with connect(server) as assoc:
            with pytest.raises(RelevantPatientInfoError, match="more than one patient matched") as info:
                await assoc.relevant_patient_info("TWINS")
            statuses, results = await raw(assoc, build_relevant_patient_query("TWINS"))
            assert await assoc.echo() == 0
    finally:
        await server.close(timeout=1.0)
    assert statuses == [0xC100]
    err = info.value
    assert isinstance(err, aiodicom.DICOMError)
    assert err.status == 0xC100 and err.more_than_one_match and not err.template_not_supported
    assert err.error_comment and "TWINS" in err.error_comment
    assert err.patient_id == "TWINS" and err.template == "9007"
    assert "TWINS" in comment_of(results)


# ---------------------------------------------------------- C200 templates


async def test_template_not_supported_by_exception_sentinel_and_templates_option() -> None:
    calls: list[str] = []

    async def handler(req: RelevantPatientRequest) -> Any:
        calls.append(req.template)
        if req.template == "9000":
            raise TemplateNotSupported(req.template)
        if req.template == "3802":
            return TEMPLATE_NOT_SUPPORTED
        return answer_for(req.patient_id, req.template)  # a bare Dataset is one match

    server = await start(handler)
    only_9007 = await start(handler, templates=["9007", 3802])
    try:
        async with connect(server) as assoc:
            for template in ("9000", "3802"):
                with pytest.raises(RelevantPatientInfoError, match=f"TID {template} not supported") as info:
                    await assoc.relevant_patient_info("P1", template)
                assert info.value.status == 0xC200 and info.value.template_not_supported
            statuses, results = await raw(assoc, build_relevant_patient_query("P1", "9000"), "rpq-breast")
            assert statuses == [0xC200] and "9000" in comment_of(results)
            assert (await assoc.relevant_patient_info("P1")) is not None
        async with connect(only_9007) as assoc:
            with pytest.raises(RelevantPatientInfoError) as info:
                await assoc.relevant_patient_info("P1", "9000")
            assert info.value.status == 0xC200
    finally:
        await server.close(timeout=1.0)
        await only_9007.close(timeout=1.0)
    assert calls == ["9000", "3802", "9000", "9007"]  # the templates= option answered without the handler


# ------------------------------------------------------------- A900 checks


def query_with(**changes: Any) -> Dataset:
    q = build_relevant_patient_query("P1")
    for keyword, value in changes.items():
        if value is ...:
            delattr(q, keyword)
        else:
            setattr(q, keyword, value)
    return q


def template_item(mapping: str = "DCMR", tid: str = "9007") -> Dataset:
    item = Dataset()
    item.MappingResource = mapping
    item.TemplateIdentifier = tid
    return item


@pytest.mark.parametrize(
    ("changes", "comment"),
    [
        ({"PatientID": ...}, "PatientID (0010,0020) missing"),
        ({"PatientID": ""}, "PatientID (0010,0020) missing"),
        ({"PatientID": "P*"}, "PatientID must not contain wildcards"),
        ({"PatientID": "P?"}, "PatientID must not contain wildcards"),
        ({"PatientID": "P1\\P2"}, "PatientID must be a single value"),
        ({"IssuerOfPatientID": "HO*"}, "IssuerOfPatientID must not contain wildcards"),
    ],
    ids=["missing", "empty", "star", "question", "list", "issuer-wildcard"],
)
async def test_bad_patient_id_is_a900(changes: dict[str, Any], comment: str) -> None:
    state = Scp()
    server = await start(patient_handler(state))
    try:
        async with connect(server) as assoc:
            statuses, results = await raw(assoc, query_with(**changes))
    finally:
        await server.close(timeout=1.0)
    assert statuses == [0xA900]
    assert comment in comment_of(results)
    assert state.requests == []  # the handler never saw it


def test_scu_refuses_to_build_a_wildcard_query() -> None:
    for bad in ("", "P*", "A\\B"):
        with pytest.raises(ValueError, match="patient_id"):
            build_relevant_patient_query(bad)
    with pytest.raises(ValueError, match="template"):
        build_relevant_patient_query("P1", "09007")


@pytest.mark.parametrize(
    ("sequence", "comment"),
    [
        (..., "ContentTemplateSequence needs exactly 1 item, has 0"),
        ([], "ContentTemplateSequence needs exactly 1 item, has 0"),
        ([template_item(), template_item()], "has 2"),
        ([template_item(mapping="99LOCAL")], "MappingResource '99LOCAL' is not DCMR"),
        ([template_item(tid="90_07")], "invalid TemplateIdentifier"),
        ([template_item(tid="")], "invalid TemplateIdentifier"),
    ],
    ids=["missing", "empty", "two-items", "not-dcmr", "bad-tid", "no-tid"],
)
async def test_bad_content_template_sequence_is_a900(sequence: Any, comment: str) -> None:
    state = Scp()
    server = await start(patient_handler(state))
    try:
        async with connect(server) as assoc:
            statuses, results = await raw(assoc, query_with(ContentTemplateSequence=sequence))
    finally:
        await server.close(timeout=1.0)
    assert statuses == [0xA900]
    assert comment in comment_of(results)
    assert state.requests == []


async def test_template_that_does_not_fit_the_sop_class_is_a900() -> None:
    state = Scp()
    server = await start(patient_handler(state))
    try:
        async with connect(server) as assoc:
            statuses, results = await raw(assoc, build_relevant_patient_query("P1", "9007"), "rpq-cardiac")
            assert statuses == [0xA900] and "TID 3802" in comment_of(results)
            with pytest.raises(RelevantPatientInfoError, match="0xA900") as info:
                await assoc.relevant_patient_info("P1", "9007", sop_class="breast")
            assert info.value.status == 0xA900
            # the general class takes any template (Annex K list, extensible)
            assert await assoc.relevant_patient_info("P1", "9000", sop_class="general") is not None
    finally:
        await server.close(timeout=1.0)
    assert [(r.template, r.sop_class_uid) for r in state.requests] == [("9000", GENERAL)]


# ---------------------------------------------------- non-conforming answers


def _breaks(mutate: Callable[[Dataset], Any]) -> Callable[[str, str], Any]:
    def make(pid: str, template: str) -> Any:
        ds = answer_for(pid, template)
        result = mutate(ds)
        return ds if result is None else result

    return make


def _set(path: Callable[[Dataset], Dataset], keyword: str, value: Any) -> Callable[[Dataset], None]:
    def mutate(ds: Dataset) -> None:
        target = path(ds)
        if value is ...:
            delattr(target, keyword)
        else:
            setattr(target, keyword, value)

    return mutate


def _root(ds: Dataset) -> Dataset:
    return ds


def _num(ds: Dataset) -> Dataset:
    return ds.ContentSequence[0]


def _text(ds: Dataset) -> Dataset:
    return ds.ContentSequence[1]


def _nested(ds: Dataset) -> Dataset:
    return ds.ContentSequence[2].ContentSequence[0]


def _by_reference(ds: Dataset) -> None:
    ds.ContentSequence[1].ReferencedContentItemIdentifier = [1, 1]


NONCONFORMING: dict[str, tuple[Callable[[Dataset], Any], str]] = {
    "root-value-type": (_set(_root, "ValueType", "TEXT"), "root ValueType is 'TEXT'"),
    "root-concept-missing": (_set(_root, "ConceptNameCodeSequence", ...), "root ConceptNameCodeSequence"),
    "root-concept-no-meaning": (
        lambda ds: delattr(ds.ConceptNameCodeSequence[0], "CodeMeaning"),
        "item has no CodeMeaning",
    ),
    "no-observation-datetime": (_set(_root, "ObservationDateTime", ...), "no ObservationDateTime"),
    "wrong-template": (
        lambda ds: setattr(ds.ContentTemplateSequence[0], "TemplateIdentifier", "9000"),
        "not DCMR 9007",
    ),
    "no-template-sequence": (_set(_root, "ContentTemplateSequence", ...), "ContentTemplateSequence must have"),
    "num-without-value": (_set(_num, "MeasuredValueSequence", ...), "NUM item without MeasuredValueSequence"),
    "num-without-units": (
        lambda ds: delattr(ds.ContentSequence[0].MeasuredValueSequence[0], "MeasurementUnitsCodeSequence"),
        "MeasurementUnitsCodeSequence",
    ),
    "text-without-value": (_set(_text, "TextValue", ...), "TEXT item without TextValue"),
    "bad-relationship": (_set(_text, "RelationshipType", "OWNS"), "invalid RelationshipType 'OWNS'"),
    "unknown-value-type": (_set(_text, "ValueType", "BLOB"), "unsupported ValueType 'BLOB'"),
    "item-without-concept": (_set(_text, "ConceptNameCodeSequence", ...), "ConceptNameCodeSequence must have"),
    "nested-date-missing": (_set(_nested, "Date", ...), "item 3.1: DATE item without Date"),
    "code-without-code": (
        lambda ds: setattr(ds.ContentSequence[1], "ValueType", "CODE"),
        "CODE item without ConceptCodeSequence",
    ),
    "by-reference": (_by_reference, "by-reference relationship"),
    "other-patient": (_set(_root, "PatientID", "SOMEONE-ELSE"), "answer is for PatientID SOMEONE-ELSE"),
    "not-a-dataset": (lambda ds: {"PatientID": "P1"}, "expected a Dataset"),
}


@pytest.mark.parametrize("case", list(NONCONFORMING), ids=list(NONCONFORMING))
async def test_nonconforming_answer_is_a_c000_failure_never_sent(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    mutate, comment = NONCONFORMING[case]
    make = _breaks(mutate)

    async def handler(req: RelevantPatientRequest) -> list[Any]:
        return [make(req.patient_id, req.template)]

    server = await start(handler)
    try:
        async with connect(server) as assoc:
            statuses, results = await raw(assoc, build_relevant_patient_query("P1"))
            with pytest.raises(RelevantPatientInfoError) as info:
                await assoc.relevant_patient_info("P1")
            assert await assoc.echo() == 0
    finally:
        await server.close(timeout=1.0)
    assert len(statuses) == 1 and 0xC000 <= statuses[0] <= 0xCFFF  # no FF00 went out
    assert info.value.status == statuses[0]
    assert comment in caplog.text  # the whole story is logged on the SCP side
    if case == "not-a-dataset":
        assert statuses == [HANDLER_FAILED] and "TypeError" in comment_of(results)
    else:
        assert statuses == [NONCONFORMING_ANSWER]
        wire = comment_of(results)  # an LO: at most 64 characters
        assert wire.startswith("nonconforming: ") and len(wire) > 20 and wire[15:] in caplog.text


def test_check_relevant_patient_info_lists_every_problem() -> None:
    ds = answer_for("P1", "3802")
    assert check_relevant_patient_info(ds, "3802") == []
    assert check_relevant_patient_info(ds, "3802", patient_id="P1") == []
    ds.ValueType = "TEXT"
    del ds.ContentSequence[1].TextValue
    ds.ContentSequence[2].ContentSequence[0].RelationshipType = ""
    problems = check_relevant_patient_info(ds, "9007", patient_id="P9")
    assert len(problems) == 5, problems
    assert check_relevant_patient_info("nope", "9007") == ["answer is a str, not a Dataset"]  # type: ignore[arg-type]


async def test_handler_raising_is_c001_with_comment_and_association_survives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(req: RelevantPatientRequest) -> Any:
        if req.patient_id == "BOOM":
            raise RuntimeError("registry offline")
        return answer_for(req.patient_id, req.template)

    server = await start(handler)
    try:
        async with connect(server) as assoc:
            with pytest.raises(RelevantPatientInfoError, match="registry offline") as info:
                await assoc.relevant_patient_info("BOOM")
            assert info.value.status == HANDLER_FAILED
            assert await assoc.relevant_patient_info("P1") is not None
    finally:
        await server.close(timeout=1.0)
    assert any(r.exc_info and "registry offline" in str(r.exc_info[1]) for r in caplog.records)


# ------------------------------------------------------------------- cancel


def waiting_handler(state: Scp) -> Callable[[RelevantPatientRequest], Any]:
    async def handler(req: RelevantPatientRequest) -> Any:
        state.requests.append(req)
        if req.patient_id != "SLOW":
            return answer_for(req.patient_id, req.template)
        state.started.set()
        try:
            await asyncio.Event().wait()  # only a C-CANCEL gets us out
        finally:
            state.saw_cancel = req.cancelled
            state.finished.set()

    return handler


async def test_cancel_mid_operation_is_fe00_and_association_stays_usable() -> None:
    state = Scp()
    server = await start(waiting_handler(state))
    try:
        async with connect(server) as assoc:
            async with assoc.find(build_relevant_patient_query("SLOW"), "rpq-general") as results:

                async def cancel_when_started() -> None:
                    await asyncio.wait_for(state.started.wait(), DEADLINE)
                    assert results.context_id is not None and results.message_id is not None
                    await assoc.send_cancel(results.context_id, results.message_id)

                canceller = asyncio.ensure_future(cancel_when_started())
                statuses = [int(s) async for s, _ in results]
                await canceller
            assert statuses == [0xFE00]
            assert results.final_status is not None and results.final_status.is_cancel
            await asyncio.wait_for(state.finished.wait(), DEADLINE)
            assert state.saw_cancel
            assert await assoc.echo() == 0
            assert (await assoc.relevant_patient_info("P1")) is not None
    finally:
        await server.close(timeout=1.0)


async def test_scu_timeout_cancels_the_query_and_association_stays_usable() -> None:
    state = Scp()
    server = await start(waiting_handler(state))
    try:
        async with connect(server) as assoc:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await assoc.relevant_patient_info("SLOW")
            await asyncio.wait_for(state.finished.wait(), DEADLINE)
            assert state.saw_cancel  # our SCU sent C-CANCEL when the caller gave up
            assert (await assoc.relevant_patient_info("P1")) is not None
            assert await assoc.echo() == 0
    finally:
        await server.close(timeout=1.0)


# ------------------------------------------------------- the three classes


@pytest.mark.parametrize(
    ("template", "sop_class", "model"),
    [("9007", GENERAL, "rpq-general"), ("9000", BREAST, "rpq-breast"), ("3802", CARDIAC, "rpq-cardiac")],
)
async def test_each_sop_class(template: str, sop_class: str, model: str) -> None:
    state = Scp()
    server = await start(patient_handler(state))
    try:
        async with connect(server, contexts=[sop_class]) as assoc:  # only this class offered
            ds = await assoc.relevant_patient_info("P1", template)
            statuses, _ = await raw(assoc, build_relevant_patient_query("P2", template), model)
            statuses_uid, _ = await raw(assoc, build_relevant_patient_query("NOBODY", template), sop_class)
    finally:
        await server.close(timeout=1.0)
    assert sop_class_for_template(template) == sop_class == resolve_model(model)
    assert ds is not None and ds.ContentTemplateSequence[0].TemplateIdentifier == template
    assert tuple(ds.ConceptNameCodeSequence[0][k].value for k in ("CodeValue", "CodingSchemeDesignator")) == (
        ROOT_CONCEPTS[template][:2]
    )
    assert check_relevant_patient_info(ds, template) == []
    assert statuses == [0xFF00, 0x0000] and statuses_uid == [0x0000]
    assert [(r.sop_class_uid, r.template) for r in state.requests] == [(sop_class, template)] * 3


async def test_sop_class_not_accepted_and_serving_a_subset() -> None:
    server = await start(patient_handler(Scp()), sop_classes=["rpq-cardiac"])
    try:
        async with connect(server) as assoc:
            with pytest.raises(aiodicom.NoAcceptedContext):
                await assoc.relevant_patient_info("P1", "9007")
            assert await assoc.relevant_patient_info("P1", "3802") is not None
    finally:
        await server.close(timeout=1.0)
    with pytest.raises(ValueError, match="not Relevant Patient Information Query"):
        serve_relevant_patient_info(aiodicom.Server("X"), patient_handler(Scp()), sop_classes=["study"])


async def test_scu_rejects_a_peer_that_sends_two_matches() -> None:
    """A non-conforming SCP (plain C-FIND handler) answering twice: the SCU cancels and raises."""

    async def handler(req: FindRequest) -> AsyncIterator[Dataset]:
        yield answer_for("P1", "9007")
        yield answer_for("P1", "9007")
        await asyncio.Event().wait()  # pragma: no cover - cancelled

    server = aiodicom.Server("RPQSCP", dimse_timeout=DEADLINE)
    serve_find(server, handler, models=["rpq-general"])
    await server.start("127.0.0.1", 0)
    try:
        async with connect(server) as assoc:
            with pytest.raises(RelevantPatientInfoError, match="more than one match") as info:
                await assoc.relevant_patient_info("P1")
            assert info.value.status is None
            assert await assoc.echo() == 0
    finally:
        await server.close(timeout=1.0)


# ------------------------------------------------------------------ builders


def test_build_query_identifier() -> None:
    q = build_relevant_patient_query("12345", "TID 3802", issuer="HOSP", return_keys=("PatientName", 0x00100030))
    assert q.PatientID == "12345" and q.IssuerOfPatientID == "HOSP"
    assert "PatientName" in q and not q.PatientName and not q.PatientBirthDate
    (item,) = q.ContentTemplateSequence
    assert item.MappingResource == "DCMR" and item.TemplateIdentifier == "3802"
    # zero length in the request (PS3.4 Q.4.3.1.2.1)
    assert len(q.ConceptNameCodeSequence) == 0 and len(q.ContentSequence) == 0
    assert q.ValueType is None and q.ObservationDateTime is None
    assert "SpecificCharacterSet" not in q
    assert build_relevant_patient_query("1", specific_character_set="ISO_IR 192").SpecificCharacterSet == "ISO_IR 192"
    with pytest.raises(ValueError, match="unknown attribute keyword"):
        build_relevant_patient_query("1", return_keys=("NoSuchKeyword",))


def test_build_answer_root_concepts_and_items() -> None:
    assert ROOT_CONCEPTS["3802"] == ("121060", "DCM", "History")
    for template, (value, scheme, meaning) in ROOT_CONCEPTS.items():
        patient = Dataset()
        patient.PatientID = "1"
        patient.PatientName = "A^B"
        ds = build_relevant_patient_info(patient, template)
        assert ds.ConceptNameCodeSequence[0].CodeValue == value
        assert ds.ConceptNameCodeSequence[0].CodingSchemeDesignator == scheme
        assert ds.ConceptNameCodeSequence[0].CodeMeaning == meaning
        assert len(ds.ContentSequence) == 0 and len(ds.ObservationDateTime) == 14
        assert check_relevant_patient_info(ds, template) == []
    with pytest.raises(ValueError, match="no root concept known for TID 9001"):
        build_relevant_patient_info({"PatientID": "1"}, "9001")
    ds = build_relevant_patient_info({"PatientID": "1"}, 9001, root_concept=("X1", "99LOCAL", "Gyn history"))
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "9001"

    import datetime

    from pydicom.sr.codedict import codes

    items = [
        content_item("CODE", ("111520", "DCM", "Age at Menopause"), codes.DCM.History, relationship="HAS PROPERTIES"),
        content_item("DATETIME", COMMENT, datetime.datetime(2024, 1, 2, 3, 4, 5)),
        content_item("DATE", COMMENT, datetime.date(2024, 1, 2)),
        content_item("TIME", COMMENT, datetime.time(3, 4, 5)),
        content_item("PNAME", COMMENT, "Doe^John"),
        content_item("UIDREF", COMMENT, "1.2.3"),
        content_item("IMAGE", COMMENT, ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4")),
        content_item("TEXT", COMMENT, "x", children=[content_item("CODE", COMMENT, COMMENT, relationship="HAS CONCEPT MOD")]),
        content_item("NUM", MENARCHE, 13),
    ]
    ds = build_relevant_patient_info({"PatientID": "1"}, "9000", items)
    assert check_relevant_patient_info(ds, "9000") == []
    assert ds.ContentSequence[0].ConceptCodeSequence[0].CodeValue == "121060"
    assert ds.ContentSequence[1].DateTime == "20240102030405"
    assert ds.ContentSequence[2].Date == "20240102" and ds.ContentSequence[3].Time == "030405"
    assert ds.ContentSequence[8].MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeMeaning == "no units"
    with pytest.raises(ValueError, match="unsupported value type"):
        content_item("BLOB", COMMENT, 1)
    with pytest.raises(ValueError, match="invalid relationship"):
        content_item("TEXT", COMMENT, "x", relationship="OWNS")


def test_model_names_and_error_type() -> None:
    assert resolve_model("rpq-general") == GENERAL
    assert resolve_model("RPQ-Breast") == BREAST
    assert resolve_model("rpq-cardiac") == CARDIAC
    assert sop_class_for_template("9001") == GENERAL  # other Annex K templates: general class
    assert issubclass(RelevantPatientInfoError, aiodicom.DICOMError)
    assert issubclass(TemplateNotSupported, aiodicom.ServiceError)
    assert TemplateNotSupported("9000").status == 0xC200
    assert repr(TEMPLATE_NOT_SUPPORTED) == "TEMPLATE_NOT_SUPPORTED"


# ----------------------------------------------------------------------- CLI


async def test_cli_rpq_text_json_no_match_and_failure(capsys: pytest.CaptureFixture[str]) -> None:
    server = await start(patient_handler(Scp()))
    base = ["rpq", "127.0.0.1", str(server.port), "--aec", "RPQSCP"]
    try:
        rc = await asyncio.to_thread(cli.main, [*base, "P1"])
        out, err = capsys.readouterr()
        assert rc == 0, err
        assert "Doe^Jane" in out and "DCMR TID 9007" in out
        assert "CONTAINS NUM Age when first menstrual period occurred (111518, DCM): 12 a" in out
        assert "    CONTAINS DATE" in out  # nested under the container

        rc = await asyncio.to_thread(cli.main, [*base, "P2", "--template", "3802", "--json"])
        out, err = capsys.readouterr()
        assert rc == 0, err
        data = json.loads(out)
        assert data["00100020"]["Value"] == ["P2"]
        assert data["0040A504"]["Value"][0]["0040DB00"]["Value"] == ["3802"]

        rc = await asyncio.to_thread(cli.main, [*base, "NOBODY", "--template", "9000"])
        out, err = capsys.readouterr()
        assert rc == 0 and "no match for PatientID NOBODY" in out

        rc = await asyncio.to_thread(cli.main, [*base, "TWINS", "--issuer", "HOSP"])
        out, err = capsys.readouterr()
        assert rc == 1
        assert len(err.strip().splitlines()) == 1 and "0xC100" in err and err.startswith("aiodicom rpq:")
    finally:
        await server.close(timeout=1.0)
