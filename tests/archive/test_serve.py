"""The archive application (aiodicom/archive/server.py) served in-process.

Store via our SCU, find at every level in both models, get back
byte-identical, move to a second archive, RPQ from a stored SR, restart.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset

import aiodicom
from aiodicom.archive.server import ArchiveServer, create_archive_server
from aiodicom.services.get import get_contexts
from aiodicom.services.rpq import build_relevant_patient_info, content_item

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
PR_FIND, SR_FIND = "1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.2.1"
PR_MOVE, SR_MOVE = "1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.2.2"
RPQ_GENERAL, RPQ_CARDIAC = "1.2.840.10008.5.1.4.37.1", "1.2.840.10008.5.1.4.37.3"
ROOT = "1.2.826.0.1.3680043.10.1234"


def make_image(pid: str, study: int, series: int, n: int, sop_class: str = CT) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = f"{ROOT}.{study}.{series}.{n}"
    ds.PatientName = f"Test^{pid}"
    ds.PatientID = pid
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = f"{ROOT}.{study}"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = f"A{study}"
    ds.StudyID = str(study)
    ds.SeriesInstanceUID = f"{ROOT}.{study}.{series}"
    ds.SeriesNumber = series
    ds.Modality = "CT" if sop_class == CT else "MR"
    ds.InstanceNumber = n
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((n * 7 + i) % 256 for i in range(32))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = EXPLICIT
    return ds


def dataset_collection() -> list[Dataset]:
    """P1: studies 1 (2 series x 2) and 2 (1 MR series x 2); P2: study 3 (1 x 2)."""
    out = [make_image("P1", 1, s, n) for s in (1, 2) for n in (1, 2)]
    out += [make_image("P1", 2, 1, n, MR) for n in (1, 2)]
    out += [make_image("P2", 3, 1, n) for n in (1, 2)]
    return out


def make_sr(pid: str, study: int, template: str = "9007", *, issuer: str | None = None, n: int = 1) -> Dataset:
    patient: dict[str, Any] = {"PatientID": pid, "PatientName": f"Sr^{pid}", "PatientSex": "F",
                               "PatientBirthDate": "19800202"}
    if issuer:
        patient["IssuerOfPatientID"] = issuer
    items = [
        content_item("TEXT", ("121106", "DCM", "Comment"), "no known allergies"),
        content_item("CONTAINER", ("111513", "DCM", "Relevant Previous Procedures"),
                     [content_item("DATE", ("111526", "DCM", "DateTime Started"), "20200101")]),
    ]
    ds = build_relevant_patient_info(patient, template, items, observation_datetime="20240102030405")
    ds.SOPClassUID = COMPREHENSIVE_SR
    ds.SOPInstanceUID = f"{ROOT}.{study}.99.{n}"
    ds.StudyInstanceUID = f"{ROOT}.{study}"
    ds.SeriesInstanceUID = f"{ROOT}.{study}.99"
    ds.Modality = "SR"
    ds.InstanceNumber = n
    ds.ContentDate, ds.ContentTime = "20240102", "030405"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = EXPLICIT
    return ds


async def start_archive(root: Path, ae: str = "ARCHIVE", peers: dict[str, tuple[str, int]] | None = None
                        ) -> ArchiveServer:
    server = await create_archive_server(root, ae, peers, fsync=False)
    await server.start("127.0.0.1", 0)
    return server


def scu_contexts() -> tuple[list[Any], dict[str, tuple[bool, bool]]]:
    contexts, roles = get_contexts([CT, MR, COMPREHENSIVE_SR], models=("patient", "study"),
                                   extra=[(CT, [EXPLICIT]), (MR, [EXPLICIT]), (COMPREHENSIVE_SR, [EXPLICIT]),
                                          PR_FIND, SR_FIND, PR_MOVE, SR_MOVE, RPQ_GENERAL, RPQ_CARDIAC])
    # Store (SCU role) and receive C-GET sub-operations (SCP role) on one association.
    return contexts, {uid: (True, True) for uid in roles}


def connect(server: ArchiveServer) -> aiodicom.associate:
    contexts, roles = scu_contexts()
    return aiodicom.associate("127.0.0.1", server.port, called_ae=server.ae_title, calling_ae="TESTSCU",
                              contexts=contexts, roles=roles)


async def store_all(server: ArchiveServer, datasets: list[Dataset]) -> None:
    async with connect(server) as assoc:
        for ds in datasets:
            assert await assoc.store(ds) == 0


async def find(assoc: aiodicom.Association, model: str, **keys: Any) -> list[Dataset]:
    q = Dataset()
    for k, v in keys.items():
        setattr(q, k, v)
    out = []
    async for status, ident in assoc.find(q, model):
        if ident is not None:
            assert status in (0xFF00, 0xFF01)
            out.append(ident)
        else:
            assert status == 0, hex(status)
    return out


def keywords(ds: Dataset) -> set[str]:
    return {e.keyword for e in ds}


@pytest.fixture
async def archive(tmp_path: Path) -> AsyncIterator[ArchiveServer]:
    server = await start_archive(tmp_path / "a")
    await store_all(server, dataset_collection())
    try:
        yield server
    finally:
        await server.close(timeout=1.0)


async def test_find_each_level_both_models(archive: ArchiveServer) -> None:
    async with connect(archive) as assoc:
        pats = await find(assoc, "patient", QueryRetrieveLevel="PATIENT", PatientID="", PatientName="")
        assert sorted(p.PatientID for p in pats) == ["P1", "P2"]
        assert keywords(pats[0]) == {"QueryRetrieveLevel", "PatientID", "PatientName", "RetrieveAETitle"}
        assert pats[0].QueryRetrieveLevel == "PATIENT" and pats[0].RetrieveAETitle == "ARCHIVE"

        studies = await find(assoc, "patient", QueryRetrieveLevel="STUDY", PatientID="P1", StudyInstanceUID="",
                             StudyDate="")
        assert sorted(s.StudyInstanceUID for s in studies) == [f"{ROOT}.1", f"{ROOT}.2"]
        assert keywords(studies[0]) == {"QueryRetrieveLevel", "PatientID", "StudyInstanceUID", "StudyDate",
                                        "RetrieveAETitle"}

        studies = await find(assoc, "study", QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientName="Test^P2")
        assert [s.StudyInstanceUID for s in studies] == [f"{ROOT}.3"]

        series = await find(assoc, "study", QueryRetrieveLevel="SERIES", StudyInstanceUID=f"{ROOT}.1",
                            SeriesInstanceUID="", Modality="")
        assert sorted(s.SeriesInstanceUID for s in series) == [f"{ROOT}.1.1", f"{ROOT}.1.2"]
        assert keywords(series[0]) == {"QueryRetrieveLevel", "StudyInstanceUID", "SeriesInstanceUID",
                                       "Modality", "RetrieveAETitle"}

        images = await find(assoc, "patient", QueryRetrieveLevel="IMAGE", PatientID="P1",
                            StudyInstanceUID=f"{ROOT}.2", SeriesInstanceUID=f"{ROOT}.2.1", SOPInstanceUID="",
                            InstanceNumber="")
        assert sorted(i.SOPInstanceUID for i in images) == [f"{ROOT}.2.1.1", f"{ROOT}.2.1.2"]
        assert images[0].QueryRetrieveLevel == "IMAGE"

        # Study Root has no PATIENT level: the archive answers A900.
        q = Dataset()
        q.QueryRetrieveLevel = "PATIENT"
        q.PatientID = ""
        statuses = [int(s) async for s, _ in assoc.find(q, "study")]
        assert statuses == [0xA900]


async def test_get_move_duplicate(archive: ArchiveServer, tmp_path: Path) -> None:
    # C-GET: byte-identical data sets come back.
    out = tmp_path / "got"
    async with connect(archive) as assoc:
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.PatientID = "P1"
        ident.StudyInstanceUID = f"{ROOT}.1"
        async with assoc.get(ident, "patient", write_to=out, fsync=False) as items:
            async for _ in items:
                pass
        assert items.result is not None and items.result.status == 0 and items.result.completed == 4
    for path in out.iterdir():
        loc = await archive.storage.index.get_instance(path.stem)
        assert loc is not None
        stored = archive.storage.absolute_path(loc.rel_path)
        assert dcmread(path).PixelData == dcmread(stored).PixelData
        # Same data set bytes (File Meta may differ by source AE).
        assert path.read_bytes()[-200:] == stored.read_bytes()[-200:]

    # C-MOVE to a second archive registered as a peer.
    second = await start_archive(tmp_path / "b", "SECOND")
    archive_move = archive.handlers[0x0021]
    archive_move.peers = {"SECOND": ("127.0.0.1", second.port)}  # type: ignore[attr-defined]
    try:
        async with connect(archive) as assoc:
            ident = Dataset()
            ident.QueryRetrieveLevel = "PATIENT"
            ident.PatientID = "P1"
            progress = []
            async with assoc.move(ident, "SECOND", "patient") as op:
                async for item in op:
                    progress.append(item)
            result = op.result
            assert result is not None and result.status == 0, result
            assert (result.completed, result.failed, result.warning) == (6, 0, 0)
            assert [p.remaining for p in progress[:-1]] == [5, 4, 3, 2, 1]
            counts = await second.storage.index.count()
            assert counts.instances == 6 and counts.patients == 1

            # Unknown destination: A801, nothing sent.
            result = await assoc.move(ident, "NOWHERE", "patient").wait()
            assert result.status == 0xA801 and not result.completed

            # Study Root move of one series.
            ident = Dataset()
            ident.QueryRetrieveLevel = "SERIES"
            ident.StudyInstanceUID = f"{ROOT}.3"
            ident.SeriesInstanceUID = f"{ROOT}.3.1"
            result = await assoc.move(ident, "SECOND", "study").wait()
            assert result.status == 0 and result.completed == 2
            assert (await second.storage.index.count()).instances == 8
    finally:
        await second.close(timeout=1.0)

    # A duplicate SOP Instance UID replaces the stored instance.
    before = await archive.storage.index.count()
    ds = make_image("P1", 1, 1, 1)
    ds.PixelData = b"\x01" * 32
    await store_all(archive, [ds])
    assert await archive.storage.index.count() == before
    loc = await archive.storage.index.get_instance(ds.SOPInstanceUID)
    assert loc is not None
    assert dcmread(archive.storage.absolute_path(loc.rel_path)).PixelData == b"\x01" * 32


async def test_relevant_patient_information(tmp_path: Path) -> None:
    server = await start_archive(tmp_path / "a")
    try:
        older = make_sr("P7", 70, n=1)
        older.ObservationDateTime = "20200101000000"
        older.ContentSequence[0].TextValue = "old"
        await store_all(server, [make_image("P7", 71, 1, 1), older, make_sr("P7", 70, n=2),
                                 make_sr("DUP", 80, issuer="HOSP_A"), make_sr("DUP", 81, issuer="HOSP_B")])
        async with connect(server) as assoc:
            ans = await assoc.relevant_patient_info("P7", "9007")
            assert ans is not None
            assert ans.PatientID == "P7" and ans.PatientName == "Sr^P7"
            assert ans.ValueType == "CONTAINER"
            assert ans.ContentTemplateSequence[0].TemplateIdentifier == "9007"
            assert ans.ContentSequence[0].TextValue == "no known allergies"  # the latest SR
            assert ans.ContentSequence[1].ContentSequence[0].Date == "20200101"

            # Same PatientID under two issuers, none in the request: C100.
            with pytest.raises(aiodicom.RelevantPatientInfoError) as info:
                await assoc.relevant_patient_info("DUP", "9007")
            assert info.value.status == 0xC100
            # The issuer narrows it to one.
            ans = await assoc.relevant_patient_info("DUP", "9007", issuer="HOSP_B")
            assert ans is not None and ans.IssuerOfPatientID == "HOSP_B"

            # Known patient, no SR with TID 3802: success with zero matches.
            assert await assoc.relevant_patient_info("P7", "3802") is None
            # Unknown patient: zero matches as well.
            assert await assoc.relevant_patient_info("NOBODY", "9007") is None
            # A template the archive cannot produce: C200.
            with pytest.raises(aiodicom.RelevantPatientInfoError) as info:
                await assoc.relevant_patient_info("P7", "1500", sop_class=RPQ_GENERAL)
            assert info.value.status == 0xC200
    finally:
        await server.close(timeout=1.0)


async def test_restart_keeps_everything(tmp_path: Path) -> None:
    root = tmp_path / "a"
    server = await start_archive(root)
    await store_all(server, dataset_collection())
    await server.close(timeout=1.0)
    # A leftover temporary file from a "crash" is removed on startup.
    some_dir = next(p for p in (root / "instances").rglob("*") if p.is_dir() and any(p.glob("*.dcm")))
    (some_dir / ".junk.dcm.123.tmp").write_bytes(b"partial")

    server = await start_archive(root)
    try:
        assert not list(root.rglob("*.tmp"))
        assert (await server.storage.index.count()).instances == 8
        async with connect(server) as assoc:
            pats = await find(assoc, "patient", QueryRetrieveLevel="PATIENT", PatientID="")
            assert len(pats) == 2
            ident = Dataset()
            ident.QueryRetrieveLevel = "PATIENT"
            ident.PatientID = "P2"
            async with assoc.get(ident, "patient", write_to=tmp_path / "got", fsync=False) as items:
                async for _ in items:
                    pass
            assert items.result is not None and items.result.completed == 2
    finally:
        await server.close(timeout=1.0)
    assert sorted(os.listdir(tmp_path / "got")) == [f"{ROOT}.3.1.1.dcm", f"{ROOT}.3.1.2.dcm"]


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
async def test_store_paths_index_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streamed: bool, temp_files_on_loop: list[bool]
) -> None:
    """A small data set is kept in memory and stored in one worker-thread hop;
    past the spool limit it streams into a file opened on the loop.  Either
    way the file holds the data set as sent and the index has its row."""
    from aiodicom import part10
    from aiodicom.dataset import EncodedDataset
    from aiodicom.dimse.commands import C_STORE_RQ, Command
    from aiodicom.services import store as store_mod

    if streamed:
        monkeypatch.setattr(store_mod, "SPOOL_MEMORY_LIMIT", 100)
    server = await start_archive(tmp_path / "a")
    ds = make_image("P9", 9, 1, 1)
    try:
        async with connect(server) as assoc:
            assert await assoc.store(ds) == 0
            bad = make_image("P9", 9, 1, 2)
            bad.SOPInstanceUID = "1.2..3"
            rsp = await assoc.send_request(
                assoc.find_context(CT).context_id,  # type: ignore[union-attr]
                Command(
                    C_STORE_RQ, message_id=77, affected_sop_class_uid=CT,
                    affected_sop_instance_uid="1.2..3", priority=0,
                ),
                EncodedDataset.from_dataset(bad, EXPLICIT).fragments,
            )
            assert rsp.command.status == 0x0117
            found = await find(assoc, "study", QueryRetrieveLevel="IMAGE", StudyInstanceUID=ds.StudyInstanceUID,
                               SeriesInstanceUID=ds.SeriesInstanceUID, SOPInstanceUID="")
            assert [f.SOPInstanceUID for f in found] == [ds.SOPInstanceUID]
    finally:
        await server.close(timeout=1.0)
    assert temp_files_on_loop == [streamed]
    (stored,) = [p for p in (tmp_path / "a" / "instances").rglob("*.dcm")]
    assert part10.read_part10_dataset(stored)[1].tobytes() == EncodedDataset.from_dataset(ds, EXPLICIT).tobytes()
