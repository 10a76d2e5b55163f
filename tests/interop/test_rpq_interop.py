"""Relevant Patient Information Query (PS3.4 Annex Q) against pynetdicom.

* pynetdicom SCU ``send_c_find(ds, GeneralRelevantPatientInformationQuery)``
  (and the breast/cardiac classes) -> our SCP: one match, no match, C100,
  C200, A900.
* our SCU (``assoc.relevant_patient_info``) -> a pynetdicom SCP with an
  ``EVT_C_FIND`` handler.  pynetdicom's Relevant Patient Information SCP
  takes only the handler's *first* yield: a pending match is sent followed
  by its own Success, a failure status is sent as is, no yield at all is
  Success, and a handler exception is answered 0xC311.

pynetdicom is a test dependency only.  Async tests run on asyncio and uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset

import aiodicom
from aiodicom.services.rpq import (
    RelevantPatientInfoError,
    RelevantPatientRequest,
    TemplateNotSupported,
    build_relevant_patient_info,
    check_relevant_patient_info,
    content_item,
    serve_relevant_patient_info,
)
from aiodicom.uids import (
    BreastImagingRelevantPatientInformationQuery,
    CardiacRelevantPatientInformationQuery,
    ExplicitVRLittleEndian,
    GeneralRelevantPatientInformationQuery,
    ImplicitVRLittleEndian,
)
from tests.conftest import free_port

pynetdicom = pytest.importorskip("pynetdicom")

GENERAL = GeneralRelevantPatientInformationQuery
BREAST = BreastImagingRelevantPatientInformationQuery
CARDIAC = CardiacRelevantPatientInformationQuery
RPQ = (GENERAL, BREAST, CARDIAC)
DEADLINE = 20.0
MENARCHE = ("111518", "DCM", "Age when first menstrual period occurred")


@pytest.fixture(autouse=True)
def _quiet_pynetdicom() -> Iterator[None]:
    logger = logging.getLogger("pynetdicom")
    old = logger.level
    logger.setLevel(logging.CRITICAL)  # its SCP logs our deliberate handler exception
    yield
    logger.setLevel(old)
    gc.collect()


def answer(pid: str, template: str) -> Dataset:
    return build_relevant_patient_info(
        {"PatientID": pid, "PatientName": "Doe^Jane", "PatientBirthDate": "19700101", "PatientSex": "F"},
        template,
        [
            content_item("NUM", MENARCHE, 12, units=("a", "UCUM", "year")),
            content_item("TEXT", ("121106", "DCM", "Comment"), "from the registry"),
        ],
        observation_datetime="20240102030405",
    )


def pyn_query(pid: str | None, template: str = "9007", mapping: str = "DCMR") -> Dataset:
    """A request identifier written the way a pynetdicom user would."""
    ds = Dataset()
    if pid is not None:
        ds.PatientID = pid
    ds.PatientName = ""
    ds.PatientSex = ""
    item = Dataset()
    item.MappingResource = mapping
    item.TemplateIdentifier = template
    ds.ContentTemplateSequence = [item]
    ds.ConceptNameCodeSequence = []
    ds.ContentSequence = []
    ds.ValueType = None
    ds.ObservationDateTime = None
    return ds


# ======================================================= pynetdicom SCU -> us


async def test_pynetdicom_scu_against_our_scp() -> None:
    seen: list[tuple[str, str, str]] = []

    async def handler(req: RelevantPatientRequest) -> Any:
        seen.append((req.sop_class_uid, req.patient_id, req.template))
        if req.patient_id == "TWINS":
            return [answer("TWINS", req.template), answer("TWINS", req.template)]
        if req.patient_id == "NOBODY":
            return None
        if req.template == "9000":
            raise TemplateNotSupported(req.template)
        return [answer(req.patient_id, req.template)]

    server = aiodicom.Server("OURSCP", dimse_timeout=DEADLINE)
    serve_relevant_patient_info(server, handler)
    await server.start("127.0.0.1", 0)

    def scu() -> dict[str, list[tuple[int, Dataset | None]]]:
        ae = pynetdicom.AE(ae_title="PYNSCU")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = DEADLINE
        ae.add_requested_context(GENERAL, [ExplicitVRLittleEndian])
        ae.add_requested_context(BREAST, [ImplicitVRLittleEndian])
        ae.add_requested_context(CARDIAC, [ExplicitVRLittleEndian])
        assoc = ae.associate("127.0.0.1", server.port, ae_title="OURSCP")
        assert assoc.is_established
        out: dict[str, list[tuple[int, Dataset | None]]] = {}
        try:
            runs = {
                "one": (pyn_query("P1"), GENERAL),
                "cardiac": (pyn_query("P2", "3802"), CARDIAC),
                "none": (pyn_query("NOBODY"), GENERAL),
                "c100": (pyn_query("TWINS"), GENERAL),
                "c200": (pyn_query("P3", "9000"), BREAST),
                "a900-no-id": (pyn_query(None), GENERAL),
                "a900-mapping": (pyn_query("P1", mapping="99LOCAL"), GENERAL),
            }
            for name, (q, sop_class) in runs.items():
                out[name] = [(int(st.Status), ds) for st, ds in assoc.send_c_find(q, sop_class)]
        finally:
            assoc.release()
        return out

    try:
        got = await asyncio.to_thread(scu)
    finally:
        await server.close(timeout=1.0)

    statuses = {name: [s for s, _ in rsps] for name, rsps in got.items()}
    assert statuses == {
        "one": [0xFF00, 0x0000],
        "cardiac": [0xFF00, 0x0000],
        "none": [0x0000],
        "c100": [0xC100],
        "c200": [0xC200],
        "a900-no-id": [0xA900],
        "a900-mapping": [0xA900],
    }
    ds = got["one"][0][1]
    assert ds is not None
    assert ds.PatientID == "P1" and str(ds.PatientName) == "Doe^Jane" and ds.PatientSex == "F"
    assert "PatientBirthDate" not in ds  # pynetdicom's query did not ask for it
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "9007"
    assert check_relevant_patient_info(ds, "9007", patient_id="P1") == []
    assert ds.ContentSequence[0].ConceptNameCodeSequence[0].CodeValue == "111518"
    cardiac = got["cardiac"][0][1]
    assert cardiac is not None and cardiac.ConceptNameCodeSequence[0].CodeValue == "121060"
    assert seen == [
        (GENERAL, "P1", "9007"),
        (CARDIAC, "P2", "3802"),
        (GENERAL, "NOBODY", "9007"),
        (GENERAL, "TWINS", "9007"),
        (BREAST, "P3", "9000"),
    ]  # the A900 requests never reached the handler


# ======================================================= us -> pynetdicom SCP


@contextlib.contextmanager
def pynetdicom_rpq_scp(handler: Any) -> Iterator[int]:
    ae = pynetdicom.AE(ae_title="PYNSCP")
    ae.dimse_timeout = ae.network_timeout = DEADLINE
    for uid in RPQ:
        ae.add_supported_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(pynetdicom.evt.EVT_C_FIND, handler)])
    try:
        yield port
    finally:
        server.shutdown()


async def test_our_scu_against_pynetdicom_scp() -> None:
    requests: list[tuple[str, Dataset]] = []

    def on_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        q = event.identifier
        requests.append((str(event.request.AffectedSOPClassUID), q))
        template = str(q.ContentTemplateSequence[0].TemplateIdentifier)
        pid = str(q.PatientID)
        if pid == "NOBODY":
            return
        if pid == "TWINS":
            yield 0xC100, None
            return
        if pid == "BOOM":
            raise RuntimeError("handler failure")
        if template == "9000":
            yield 0xC200, None
            return
        yield 0xFF00, answer(pid, template)
        yield 0xFF00, answer(pid, template)  # ignored: pynetdicom sends the first match only

    with pynetdicom_rpq_scp(on_find) as port:
        async with aiodicom.associate(
            "127.0.0.1", port, called_ae="PYNSCP", contexts=list(RPQ), dimse_timeout=DEADLINE
        ) as assoc:
            ds = await assoc.relevant_patient_info("P1", issuer="HOSP")
            cardiac = await assoc.relevant_patient_info("P2", "3802")
            nobody = await assoc.relevant_patient_info("NOBODY")
            with pytest.raises(RelevantPatientInfoError, match="more than one patient") as c100:
                await assoc.relevant_patient_info("TWINS")
            with pytest.raises(RelevantPatientInfoError, match="TID 9000 not supported") as c200:
                await assoc.relevant_patient_info("P3", "9000")
            with pytest.raises(RelevantPatientInfoError, match="0xC311") as boom:
                await assoc.relevant_patient_info("BOOM")
            statuses = [int(s) async for s, _ in assoc.find(requests[0][1], "rpq-general")]
            assert await assoc.relevant_patient_info("P1") is not None

    assert ds is not None and check_relevant_patient_info(ds, "9007", patient_id="P1") == []
    assert str(ds.PatientName) == "Doe^Jane" and ds.ContentSequence[1].TextValue == "from the registry"
    assert cardiac is not None and cardiac.ContentTemplateSequence[0].TemplateIdentifier == "3802"
    assert nobody is None
    assert c100.value.status == 0xC100 and c200.value.status == 0xC200 and boom.value.status == 0xC311
    assert statuses == [0xFF00, 0x0000]  # one match, then pynetdicom's own Success

    sop_class, q = requests[0]
    assert sop_class == GENERAL
    assert q.PatientID == "P1" and q.IssuerOfPatientID == "HOSP"
    assert "PatientName" in q and "PatientBirthDate" in q and "PatientSex" in q
    (item,) = q.ContentTemplateSequence
    assert item.MappingResource == "DCMR" and item.TemplateIdentifier == "9007"
    assert len(q.ConceptNameCodeSequence) == 0 and len(q.ContentSequence) == 0
    assert [s for s, _ in requests[1:6]] == [CARDIAC, GENERAL, GENERAL, BREAST, GENERAL]
