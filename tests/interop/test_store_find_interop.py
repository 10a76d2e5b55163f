"""C-STORE and C-FIND against independent implementations.

* DCMTK ``storescu`` -> our SCP; our ``aiodicom store`` CLI -> DCMTK ``storescp``
* DCMTK ``findscu -P/-S`` (and ``--cancel``) -> our SCP; our find -> DCMTK ``dcmqrscp``
* pynetdicom SCU -> our SCP and our SCU -> pynetdicom SCP, for store and find,
  including a C-CANCEL in the middle of a C-FIND in both directions.

DCMTK tools are found with ``require_dcmtk`` (pynetdicom ships same-named
apps); tests skip when DCMTK is not installed.  Async tests run on asyncio and
on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

import aiodicom
from aiodicom.dataset import EncodedDataset
from aiodicom.part10 import read_part10_dataset, read_part10_info
from aiodicom.services.find import FindRequest, serve_find
from aiodicom.services.store import serve_store, store_to_directory
from aiodicom.uids import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)
from aiodicom.uids import (
    PatientRootQueryRetrieveInformationModelFind as PATIENT_FIND,
)
from aiodicom.uids import (
    StudyRootQueryRetrieveInformationModelFind as STUDY_FIND,
)
from tests.conftest import dcmtk_env, free_port, require_dcmtk

pynetdicom = pytest.importorskip("pynetdicom")

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
DEADLINE = 20.0


def sample(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:  # pragma: no cover
        pytest.skip(f"pydicom test file {name} unavailable")
    return str(path)


def dataset_bytes(path: str | Path) -> bytes:
    return read_part10_dataset(path)[1].tobytes()


@pytest.fixture(autouse=True)
def _quiet_pynetdicom() -> Iterator[None]:
    logger = logging.getLogger("pynetdicom")
    old = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(old)
    gc.collect()


async def run_tool(*argv: str, timeout: float = DEADLINE) -> tuple[int, str]:
    """Run a command; return (exit status, stdout+stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=dcmtk_env()
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace")


@contextlib.asynccontextmanager
async def background(*argv: str, port: int, aet: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """Start a DICOM server process and wait until it answers C-ECHO."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=dcmtk_env()
    )
    try:
        deadline = time.monotonic() + DEADLINE
        while True:  # readiness: poll with a real association (not a fixed sleep)
            try:
                async with aiodicom.associate("127.0.0.1", port, called_ae=aet, acse_timeout=5) as a:
                    if await a.echo() == 0:
                        break
            except (OSError, aiodicom.DICOMError):
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


PATIENTS = [("P1", "Doe^John", "1.2.3.1"), ("P2", "Doe^Jane", "1.2.3.2"), ("P3", "Roe^Richard", "1.2.3.3")]


def make_find_handler(log: list[FindRequest], *, wait_for_cancel: bool = False) -> Any:
    """Matches PATIENTS on PatientID (universal or exact) at PATIENT or STUDY level."""

    async def handler(req: FindRequest) -> AsyncIterator[Dataset]:
        log.append(req)
        q = req.identifier
        wanted = str(q.get("PatientID", "") or "")
        for pid, name, study in PATIENTS:
            if wanted not in ("", "*") and wanted != pid:
                continue
            ds = Dataset()
            ds.QueryRetrieveLevel = q.QueryRetrieveLevel
            if "PatientID" in q:
                ds.PatientID = pid
            if "PatientName" in q:
                ds.PatientName = name
            if "StudyInstanceUID" in q:
                ds.StudyInstanceUID = study
            yield ds
            if wait_for_cancel:
                await asyncio.wait_for(req.wait_cancelled(), DEADLINE)

    return handler


@pytest.fixture
async def our_scp(tmp_path: Path) -> AsyncIterator[tuple[aiodicom.Server, Path, list[FindRequest]]]:
    store_dir = tmp_path / "our-scp"
    log: list[FindRequest] = []
    server = aiodicom.Server("OURSCP", dimse_timeout=DEADLINE)
    serve_store(server, store_to_directory(store_dir, fsync=False))
    serve_find(server, make_find_handler(log))
    await server.start("127.0.0.1", 0)
    try:
        yield server, store_dir, log
    finally:
        await server.close(timeout=1.0)


# ====================================================================== DCMTK


async def test_dcmtk_storescu_to_our_scp(our_scp: Any) -> None:
    storescu = require_dcmtk("storescu")
    server, store_dir, _ = our_scp
    ct, rle = sample("CT_small.dcm"), sample("MR_small_RLE.dcm")
    rc, out = await run_tool(storescu, "-xr", "-aet", "DCMTKSCU", "-aec", "OURSCP", "127.0.0.1", str(server.port), ct, rle)
    assert rc == 0, out
    for src in (ct, rle):
        info = read_part10_info(src)
        stored = store_dir / f"{info.sop_instance_uid}.dcm"
        got = dcmread(stored)  # readable by pydicom
        orig = dcmread(src)
        assert got.SOPInstanceUID == orig.SOPInstanceUID
        assert got.file_meta.SourceApplicationEntityTitle == "DCMTKSCU"
        assert got.PixelData == orig.PixelData  # byte-identical pixel data
    # the RLE file arrived in RLE and is stored as received
    assert read_part10_info(store_dir / f"{read_part10_info(rle).sop_instance_uid}.dcm").transfer_syntax == RLELossless
    assert sorted(p.name for p in store_dir.iterdir()) == sorted(
        f"{read_part10_info(p).sop_instance_uid}.dcm" for p in (ct, rle)
    )


async def test_our_cli_store_to_dcmtk_storescp(tmp_path: Path) -> None:
    storescp = require_dcmtk("storescp")
    out_dir = tmp_path / "storescp"
    out_dir.mkdir()
    port = free_port()
    files = [sample("CT_small.dcm"), sample("MR_small_RLE.dcm"), sample("rtdose.dcm")]
    async with background(storescp, "+xa", "+B", "-aet", "DCMTKSCP", "-od", str(out_dir), str(port), port=port, aet="DCMTKSCP"):
        rc, out = await run_tool(
            sys.executable, "-m", "aiodicom", "store", "127.0.0.1", str(port), "--aec", "DCMTKSCP", *files
        )
    assert rc == 0, out
    assert "3 stored, 0 failed" in out
    received = {dcmread(p).SOPInstanceUID: p for p in out_dir.iterdir()}
    assert len(received) == 3
    for src in files:
        info = read_part10_info(src)
        path = received[dcmread(src).SOPInstanceUID]  # rtdose.dcm: File Meta names another UID
        # +B: storescp wrote exactly what we sent: our bytes were the file's own
        assert read_part10_info(path).transfer_syntax == info.transfer_syntax
        assert dataset_bytes(path) == dataset_bytes(src)


@pytest.mark.parametrize("model", ["-P", "-S"])
async def test_dcmtk_findscu_to_our_scp(model: str, our_scp: Any) -> None:
    findscu = require_dcmtk("findscu")
    server, _, log = our_scp
    level = "PATIENT" if model == "-P" else "STUDY"
    keys = ["-k", f"QueryRetrieveLevel={level}", "-k", "PatientID", "-k", "PatientName"]
    if level == "STUDY":
        keys += ["-k", "StudyInstanceUID"]
    rc, out = await run_tool(findscu, "-v", model, "-aec", "OURSCP", *keys, "127.0.0.1", str(server.port))
    assert rc == 0, out
    ids = re.findall(r"\(0010,0020\) LO \[([^\]]*)\]", out)
    names = re.findall(r"\(0010,0010\) PN \[([^\]]*)\]", out)
    assert [i.strip() for i in ids] == ["P1", "P2", "P3"]
    assert [n.strip() for n in names] == ["Doe^John", "Doe^Jane", "Roe^Richard"]
    if level == "STUDY":
        assert [u.strip("\x00 ") for u in re.findall(r"\(0020,000d\) UI \[([^\]]*)\]", out)] == [
            "1.2.3.1", "1.2.3.2", "1.2.3.3",
        ]
    assert "Received Final Find Response (Success)" in out
    assert log[-1].model == (PATIENT_FIND if model == "-P" else STUDY_FIND)
    assert log[-1].calling_ae == "FINDSCU"


async def test_dcmtk_findscu_cancel_to_our_scp() -> None:
    findscu = require_dcmtk("findscu")
    log: list[FindRequest] = []
    server = aiodicom.Server("OURSCP", dimse_timeout=DEADLINE)
    serve_find(server, make_find_handler(log, wait_for_cancel=True))
    await server.start("127.0.0.1", 0)
    try:
        rc, out = await run_tool(
            findscu, "-v", "-P", "--cancel", "1", "-aec", "OURSCP", "-k", "QueryRetrieveLevel=PATIENT",
            "-k", "PatientID", "127.0.0.1", str(server.port),
        )
    finally:
        await server.close(timeout=1.0)
    assert rc == 0, out
    assert "Sending Cancel Request" in out
    assert "Received Final Find Response (Cancel" in out
    assert len(re.findall(r"\(0010,0020\) LO", out)) == 2  # request echo + one match


def _dcmqrscp_config(tmp_path: Path, port: int) -> Path:
    db = tmp_path / "qrdb"
    db.mkdir()
    cfg = tmp_path / "dcmqrscp.cfg"
    cfg.write_text(
        f"""NetworkTCPPort  = {port}
MaxPDUSize      = 16384
MaxAssociations = 16

HostTable BEGIN
HostTable END

VendorTable BEGIN
VendorTable END

AETable BEGIN
QRSCP   {db}   RW (100, 1024mb)   ANY
AETable END
"""
    )
    return cfg


async def test_our_find_to_dcmtk_dcmqrscp(tmp_path: Path) -> None:
    dcmqrscp = require_dcmtk("dcmqrscp")
    storescu = require_dcmtk("storescu")
    port = free_port()
    cfg = _dcmqrscp_config(tmp_path, port)
    ct, mr = sample("CT_small.dcm"), sample("MR_small.dcm")
    async with background(dcmqrscp, "-c", str(cfg), str(port), port=port, aet="QRSCP"):
        rc, out = await run_tool(storescu, "-aec", "QRSCP", "127.0.0.1", str(port), ct, mr)
        assert rc == 0, out
        async with aiodicom.associate(
            "127.0.0.1", port, called_ae="QRSCP", contexts=[PATIENT_FIND, STUDY_FIND, VERIFICATION],
            dimse_timeout=DEADLINE,
        ) as assoc:
            q = Dataset()
            q.QueryRetrieveLevel = "PATIENT"
            q.PatientID = ""
            q.PatientName = ""
            got = [(s, d) async for s, d in assoc.find(q, "patient")]
            assert [int(s) for s, _ in got] == [0xFF00, 0xFF00, 0x0000]
            pats = sorted((str(d.PatientID), str(d.PatientName)) for _, d in got if d is not None)
            assert pats == [("1CT1", "CompressedSamples^CT1"), ("4MR1", "CompressedSamples^MR1")]

            q = Dataset()
            q.QueryRetrieveLevel = "STUDY"
            q.PatientID = "4MR1"
            q.StudyInstanceUID = ""
            q.StudyDate = ""
            studies = [d async for s, d in assoc.find(q, "study") if d is not None]
            assert [d.StudyInstanceUID for d in studies] == [dcmread(mr).StudyInstanceUID]

            # Leave a query early: the C-CANCEL/drain keeps the association usable
            q = Dataset()
            q.QueryRetrieveLevel = "PATIENT"
            q.PatientID = ""
            async with assoc.find(q) as results:
                async for status, ds in results:
                    break
            assert results.final_status is not None and (results.final_status.is_cancel or results.final_status == 0)
            assert await assoc.echo() == 0
            again = [s async for s, d in assoc.find(q)]
            assert len(again) == 3


# ================================================================== pynetdicom


def _pyn_ae(*contexts: tuple[str, list[str]]) -> Any:
    ae = pynetdicom.AE(ae_title="PYNSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = DEADLINE
    for uid, ts in contexts:
        ae.add_requested_context(uid, ts)
    return ae


async def test_pynetdicom_scu_store_to_our_scp(our_scp: Any) -> None:
    server, store_dir, _ = our_scp
    ct, rle = sample("CT_small.dcm"), sample("MR_small_RLE.dcm")

    def scu() -> list[int]:
        ae = _pyn_ae((CT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]), (MR, [RLELossless]))
        assoc = ae.associate("127.0.0.1", server.port, ae_title="OURSCP")
        assert assoc.is_established
        try:
            statuses = [assoc.send_c_store(dcmread(ct)).Status, assoc.send_c_store(rle).Status]
        finally:
            assoc.release()
        return statuses

    assert await asyncio.to_thread(scu) == [0, 0]
    for src in (ct, rle):
        info = read_part10_info(src)
        got = dcmread(store_dir / f"{info.sop_instance_uid}.dcm")
        assert got.PixelData == dcmread(src).PixelData
        assert got.file_meta.SourceApplicationEntityTitle == "PYNSCU"
    assert dataset_bytes(store_dir / f"{read_part10_info(rle).sop_instance_uid}.dcm") == dataset_bytes(rle)


async def test_pynetdicom_scu_find_and_cancel_against_our_scp() -> None:
    log: list[FindRequest] = []
    server = aiodicom.Server("OURSCP", dimse_timeout=DEADLINE)
    serve_find(server, make_find_handler(log, wait_for_cancel=True), models=["patient"])
    serve_find(server, make_find_handler(log), models=["study"])
    await server.start("127.0.0.1", 0)

    def scu() -> tuple[list[int], list[str], list[int]]:
        ae = _pyn_ae((PATIENT_FIND, [ExplicitVRLittleEndian]), (STUDY_FIND, [ImplicitVRLittleEndian]))
        assoc = ae.associate("127.0.0.1", server.port, ae_title="OURSCP")
        assert assoc.is_established
        try:
            q = Dataset()
            q.QueryRetrieveLevel = "STUDY"
            q.PatientID = ""
            q.StudyInstanceUID = ""
            full = [(st.Status, ds) for st, ds in assoc.send_c_find(q, STUDY_FIND, msg_id=3)]
            uids = [str(ds.StudyInstanceUID) for s, ds in full if ds is not None]
            # C-CANCEL after the first match, on the operation's context
            cx = next(c for c in assoc.accepted_contexts if c.abstract_syntax == PATIENT_FIND)
            q.QueryRetrieveLevel = "PATIENT"
            cancelled: list[int] = []
            for st, ds in assoc.send_c_find(q, PATIENT_FIND, msg_id=7):
                cancelled.append(st.Status)
                if len(cancelled) == 1:
                    assoc.send_c_cancel(7, cx.context_id)
        finally:
            assoc.release()
        return [s for s, _ in full], uids, cancelled

    try:
        statuses, uids, cancelled = await asyncio.to_thread(scu)
    finally:
        await server.close(timeout=1.0)
    assert statuses == [0xFF00, 0xFF00, 0xFF00, 0x0000]
    assert uids == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
    assert cancelled == [0xFF00, 0xFE00]
    assert [r.calling_ae for r in log] == ["PYNSCU", "PYNSCU"]


@contextlib.contextmanager
def pynetdicom_scp(handlers: list[Any], contexts: list[tuple[str, list[str]]]) -> Iterator[int]:
    ae = pynetdicom.AE(ae_title="PYNSCP")
    ae.dimse_timeout = ae.network_timeout = DEADLINE
    for uid, ts in contexts:
        ae.add_supported_context(uid, ts)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    try:
        yield port
    finally:
        server.shutdown()


async def test_our_store_to_pynetdicom_scp() -> None:
    received: list[tuple[str, bytes, str]] = []

    def on_store(event: Any) -> int:
        ts = str(event.context.transfer_syntax)
        received.append((str(event.request.AffectedSOPInstanceUID), event.request.DataSet.getvalue(), ts))
        return 0x0000

    ct, rle = sample("CT_small.dcm"), sample("MR_small_RLE.dcm")
    with pynetdicom_scp(
        [(pynetdicom.evt.EVT_C_STORE, on_store)],
        [(CT, [ImplicitVRLittleEndian]), (MR, [RLELossless, ExplicitVRLittleEndian])],
    ) as port:
        async with aiodicom.associate(
            "127.0.0.1", port, called_ae="PYNSCP",
            contexts=[(CT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]), (MR, [RLELossless])],
        ) as assoc:
            assert await assoc.store(ct) == 0  # re-encoded: the SCP only takes implicit VR
            assert await assoc.store(rle) == 0  # sent as stored
            assert await assoc.store(dcmread(ct), priority=2) == 0
    assert [r[2] for r in received] == [ImplicitVRLittleEndian, RLELossless, ImplicitVRLittleEndian]
    assert received[1][1] == dataset_bytes(rle)
    for uid, data, ts in (received[0], received[2]):
        assert uid == read_part10_info(ct).sop_instance_uid
        back = EncodedDataset(data, ts).decode()
        assert back.PixelData == dcmread(ct).PixelData


async def test_our_find_and_cancel_against_pynetdicom_scp() -> None:
    seen_cancel = threading.Event()

    def on_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        q = event.identifier
        cancelled = False  # pynetdicom's is_cancelled is true only once
        for pid, name, _ in PATIENTS:
            if cancelled or event.is_cancelled:
                seen_cancel.set()
                yield 0xFE00, None
                return
            ds = Dataset()
            ds.QueryRetrieveLevel = q.QueryRetrieveLevel
            ds.PatientID = pid
            ds.PatientName = name
            yield 0xFF00, ds
            if q.PatientID == "wait":
                # pynetdicom's cancel flag has no event (and this runs in its
                # thread): poll it with a deadline; a timeout shows up below
                # as a final status other than FE00.
                deadline = time.monotonic() + DEADLINE
                while not cancelled and time.monotonic() < deadline:
                    cancelled = event.is_cancelled
                    time.sleep(0.002)

    with pynetdicom_scp(
        [(pynetdicom.evt.EVT_C_FIND, on_find)],
        [(PATIENT_FIND, [ExplicitVRLittleEndian]), (VERIFICATION, [ImplicitVRLittleEndian])],
    ) as port:
        async with aiodicom.associate(
            "127.0.0.1", port, called_ae="PYNSCP", contexts=[PATIENT_FIND, VERIFICATION], dimse_timeout=DEADLINE
        ) as assoc:
            q = Dataset()
            q.QueryRetrieveLevel = "PATIENT"
            q.PatientID = ""
            q.PatientName = ""
            got = [(s, d) async for s, d in assoc.find(q)]
            assert [int(s) for s, _ in got] == [0xFF00, 0xFF00, 0xFF00, 0x0000]
            assert [str(d.PatientName) for _, d in got if d is not None] == ["Doe^John", "Doe^Jane", "Roe^Richard"]

            q.PatientID = "wait"
            async with assoc.find(q) as results:
                async for status, ds in results:
                    break
            assert results.final_status == 0xFE00
            assert seen_cancel.is_set()
            assert await assoc.echo() == 0
            # and a plain ``break`` (no async with) too
            seen_cancel.clear()
            async for status, ds in assoc.find(q):
                break
            assert await assoc.echo() == 0
            q.PatientID = ""
            again = [int(s) async for s, _ in assoc.find(q)]  # runs after the earlier drain
            assert again == [0xFF00, 0xFF00, 0xFF00, 0x0000]
            assert seen_cancel.is_set()

