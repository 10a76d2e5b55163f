"""C-GET interoperability with pynetdicom and DCMTK, both directions.

* pynetdicom ``send_c_get`` (role selection with ``build_role``) against our
  SCP, including a C-CANCEL sent from its C-STORE handler;
* our SCU against a pynetdicom GET SCP (``EVT_C_GET`` yielding the count,
  then the data sets);
* DCMTK ``getscu`` against our SCP, files compared byte for byte;
* our ``aiodicom get`` command and ``retrieve_series`` against DCMTK
  ``dcmqrscp`` (populated with DCMTK ``storescu``).

pynetdicom is blocking: it runs in ``asyncio.to_thread``.  DCMTK tools run
as subprocesses found with ``require_dcmtk`` (never via PATH).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import dcmtk_env, free_port, require_dcmtk
from tests.interop._pynetdicom_sync import pause_reactor
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset

import aiodicom
from aiodicom.dataset import EncodedDataset
from aiodicom.part10 import read_part10_dataset, read_part10_info, write_part10
from aiodicom.services.get import GetRequest, GetResult, ReceivedInstance, get_contexts, get_identifier, retrieve_series, serve_get

pynetdicom = pytest.importorskip("pynetdicom")
from pynetdicom import AE, build_role, evt

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
ROOT = "1.2.826.0.1.3680043.8.498.77"
STUDY = f"{ROOT}.1"
SERIES = f"{ROOT}.1.1"
PATIENT = "GETPAT"
DEADLINE = 60.0
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def _quiet_pynetdicom() -> Iterator[None]:
    logger = logging.getLogger("pynetdicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def make_ct(index: int, *, series: str = SERIES, ts: str = EXPLICIT, rows: int = 16) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = f"{series}.{index}"
    ds.PatientName = "Interop^Get"
    ds.PatientID = PATIENT
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = series
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = "ACC1"
    ds.StudyID = "1"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = index
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = rows
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((index * 13 + i) % 251 for i in range(rows * rows * 2))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.file_meta.MediaStorageSOPClassUID = CT
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def write_files(directory: Path, datasets: list[Dataset]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        ts = str(ds.file_meta.TransferSyntaxUID)
        path = directory / f"{ds.SOPInstanceUID}.dcm"
        write_part10(path, CT, ds.SOPInstanceUID, ts, EncodedDataset.from_dataset(ds, ts).fragments, fsync=False)
        paths.append(path)
    return paths


def dataset_bytes(path: Path | str) -> bytes:
    return read_part10_dataset(path)[1].tobytes()


@pytest.fixture
async def our_scp(tmp_path: Path) -> AsyncIterator[tuple[aiodicom.Server, list[Path]]]:
    """Our GET SCP serving five CT files (patient and study root)."""
    paths = write_files(tmp_path / "archive", [make_ct(i) for i in range(1, 6)])
    by_uid = {p.name[:-4]: p for p in paths}

    async def handler(req: GetRequest) -> AsyncIterator[Any]:
        if req.level == "IMAGE":
            matches = [by_uid[u] for u in req.sop_instance_uids if u in by_uid]
        elif req.patient_id not in (None, PATIENT) or (req.study_instance_uids and STUDY not in req.study_instance_uids):
            matches = []
        elif req.series_instance_uids and SERIES not in req.series_instance_uids:
            matches = []
        else:
            matches = paths
        yield len(matches)
        for p in matches:
            yield p

    server = aiodicom.Server("GETSCP")
    serve_get(server, handler)
    await server.start("127.0.0.1", 0)
    try:
        yield server, paths
    finally:
        await server.close(timeout=1.0)


# --------------------------------------------------------------------------
# pynetdicom SCU -> our SCP


def pynetdicom_get(
    port: int, identifier: Dataset, model: str, *, fail_uid: str | None = None, cancel_after: int | None = None
) -> tuple[list[Dataset], list[tuple[int, Any, Any, Any, Any, Dataset | None]], bool]:
    received: list[Dataset] = []
    responses: list[tuple[int, Any, Any, Any, Any, Dataset | None]] = []
    ae = AE(ae_title="PYNGETSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(model)
    ae.add_requested_context(CT, [EXPLICIT, IMPLICIT])
    ae.add_requested_context(VERIFICATION)
    get_ctx: list[int] = []

    def handle_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        if fail_uid is not None and ds.SOPInstanceUID == fail_uid:
            return 0xA700
        received.append(ds)
        if cancel_after is not None and len(received) == cancel_after:
            event.assoc.send_c_cancel(1, get_ctx[0])
        return 0x0000

    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title="GETSCP",
        ext_neg=[build_role(CT, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, handle_store)],
    )
    assert assoc.is_established
    try:
        get_ctx.extend(c.context_id for c in assoc.accepted_contexts if c.abstract_syntax == model)
        for status, ident in assoc.send_c_get(identifier, model, msg_id=1):
            responses.append(
                (
                    int(status.Status),
                    status.get("NumberOfRemainingSuboperations"),
                    status.get("NumberOfCompletedSuboperations"),
                    status.get("NumberOfFailedSuboperations"),
                    status.get("NumberOfWarningSuboperations"),
                    ident,
                )
            )
        # pynetdicom race (not ours): right after a C-GET its reactor thread
        # may still look paused while it is already running again, and a
        # C-ECHO sent at once can have its response swallowed as "unexpected".
        # Wait until the reactor is really blocked (see _pynetdicom_sync).
        pause_reactor(assoc)
        echo_ok = int(getattr(assoc.send_c_echo(), "Status", -1)) == 0
    finally:
        assoc.release()
    return received, responses, echo_ok


async def test_pynetdicom_get_scu_with_role_selection(our_scp: tuple[aiodicom.Server, list[Path]]) -> None:
    server, paths = our_scp
    ident = get_identifier("SERIES", model="patient", patient_id=PATIENT, study_uid=STUDY, series_uid=SERIES)
    async with asyncio.timeout(DEADLINE):
        received, responses, echo_ok = await asyncio.to_thread(pynetdicom_get, server.port, ident, PATIENT_ROOT_GET)
    assert echo_ok
    assert sorted(ds.SOPInstanceUID for ds in received) == sorted(p.name[:-4] for p in paths)
    for ds in received:
        source = read_part10_dataset(f"{paths[0].parent}/{ds.SOPInstanceUID}.dcm")[1].decode()
        assert ds.PixelData == source.PixelData
    statuses = [r[0] for r in responses]
    assert statuses == [0xFF00] * 4 + [0x0000]
    assert [r[1] for r in responses[:-1]] == [4, 3, 2, 1]
    assert responses[-1][2:5] == (5, 0, 0)


async def test_pynetdicom_get_scu_failed_suboperation(our_scp: tuple[aiodicom.Server, list[Path]]) -> None:
    server, paths = our_scp
    bad = paths[1].name[:-4]
    ident = get_identifier("STUDY", model="study", study_uid=STUDY)
    async with asyncio.timeout(DEADLINE):
        received, responses, _ = await asyncio.to_thread(
            pynetdicom_get, server.port, ident, STUDY_ROOT_GET, fail_uid=bad
        )
    assert len(received) == 4
    status, _, completed, failed, warning, final_ident = responses[-1]
    assert status == 0xB000 and (completed, failed, warning) == (4, 1, 0)
    assert final_ident is not None
    assert final_ident.FailedSOPInstanceUIDList == bad


async def test_pynetdicom_get_scu_cancel(our_scp: tuple[aiodicom.Server, list[Path]]) -> None:
    server, _ = our_scp
    ident = get_identifier("STUDY", model="study", study_uid=STUDY)
    async with asyncio.timeout(DEADLINE):
        received, responses, echo_ok = await asyncio.to_thread(
            pynetdicom_get, server.port, ident, STUDY_ROOT_GET, cancel_after=2
        )
    assert echo_ok
    assert responses[-1][0] == 0xFE00
    assert 2 <= len(received) <= 3 and responses[-1][2] == len(received)


# --------------------------------------------------------------------------
# our SCU -> pynetdicom SCP


@pytest.fixture
def pynetdicom_scp() -> Iterator[tuple[int, list[Dataset], dict[str, Any]]]:
    datasets = [make_ct(i) for i in range(1, 7)]
    state: dict[str, Any] = {"cancelled": False, "identifiers": []}
    ae = AE(ae_title="PYNGETSCP")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_supported_context(VERIFICATION)
    ae.add_supported_context(PATIENT_ROOT_GET)
    ae.add_supported_context(STUDY_ROOT_GET)
    ae.add_supported_context(CT, [EXPLICIT, IMPLICIT], scu_role=True, scp_role=True)
    lock = threading.Lock()

    def handle_get(event: Any) -> Iterator[Any]:
        ident = event.identifier
        with lock:
            state["identifiers"].append(ident)
        matches = [ds for ds in datasets if ident.get("StudyInstanceUID", STUDY) == STUDY]
        yield len(matches)
        for ds in matches:
            if event.is_cancelled:
                state["cancelled"] = True
                yield (0xFE00, None)
                return
            yield (0xFF00, ds)

    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_GET, handle_get)])
    try:
        yield port, datasets, state
    finally:
        server.shutdown()


def our_contexts() -> tuple[list[Any], dict[str, tuple[bool, bool]]]:
    return get_contexts([CT], [EXPLICIT, IMPLICIT], extra=[VERIFICATION])


async def test_our_scu_against_pynetdicom_scp(
    pynetdicom_scp: tuple[int, list[Dataset], dict[str, Any]], tmp_path: Path
) -> None:
    port, datasets, state = pynetdicom_scp
    contexts, roles = our_contexts()
    out = tmp_path / "out"
    async with aiodicom.associate("127.0.0.1", port, called_ae="PYNGETSCP", contexts=contexts, roles=roles) as assoc:
        items = []
        async with asyncio.timeout(DEADLINE):
            async with assoc.get(get_identifier("STUDY", model="study", study_uid=STUDY), "study", write_to=out) as op:
                async for item in op:
                    items.append(item)
        assert await assoc.echo() == 0
    result = items[-1]
    assert isinstance(result, GetResult)
    assert result.status == 0 and result.completed == 6
    remaining = [i.remaining for i in items if i.kind == "progress"]
    assert remaining == sorted(remaining, reverse=True) and remaining[0] == 5
    assert state["identifiers"][0].QueryRetrieveLevel == "STUDY"
    for ds in datasets:
        path = out / f"{ds.SOPInstanceUID}.dcm"
        info = read_part10_info(path)
        assert info.sop_class_uid == CT
        got = read_part10_dataset(path)[1].decode()
        assert got.PixelData == ds.PixelData and got.SOPInstanceUID == ds.SOPInstanceUID


async def test_our_scu_cancel_and_failure_against_pynetdicom_scp(
    pynetdicom_scp: tuple[int, list[Dataset], dict[str, Any]]
) -> None:
    port, datasets, state = pynetdicom_scp
    contexts, roles = our_contexts()
    bad = datasets[0].SOPInstanceUID

    def on_instance(inst: ReceivedInstance) -> None:
        if inst.sop_instance_uid == bad:
            raise ValueError("refuse the first one")

    async with aiodicom.associate("127.0.0.1", port, called_ae="PYNGETSCP", contexts=contexts, roles=roles) as assoc:
        async with asyncio.timeout(DEADLINE):
            # one sub-operation refused: Warning B000 and the failed UID list
            async with assoc.get(get_identifier("STUDY", model="study", study_uid=STUDY), "study",
                                 on_instance=on_instance) as op:
                async for _ in op:
                    pass
            assert op.result is not None and op.result.status == 0xB000
            assert op.result.failed_sop_instance_uids == [bad]
            assert op.result.refused == {bad: 0xC000}
            # leave after two instances: C-CANCEL, FE00, association usable
            taken = 0
            async with assoc.get(get_identifier("STUDY", model="study", study_uid=STUDY), "study") as op2:
                async for item in op2:
                    if isinstance(item, ReceivedInstance):
                        taken += 1
                        if taken == 2:
                            break
            assert op2.result is not None and op2.result.status == 0xFE00
            assert state["cancelled"]
            assert await assoc.echo() == 0


# --------------------------------------------------------------------------
# DCMTK getscu -> our SCP


async def run_tool(*args: str, timeout: float = DEADLINE) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=dcmtk_env(), cwd=REPO
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.parametrize(
    "model_flag,keys",
    [
        ("-S", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={STUDY}"]),
        ("-P", ["QueryRetrieveLevel=SERIES", f"PatientID={PATIENT}", f"StudyInstanceUID={STUDY}",
                f"SeriesInstanceUID={SERIES}"]),
    ],
)
async def test_dcmtk_getscu_against_our_scp(
    our_scp: tuple[aiodicom.Server, list[Path]], tmp_path: Path, model_flag: str, keys: list[str]
) -> None:
    getscu = require_dcmtk("getscu")
    server, paths = our_scp
    out = tmp_path / "getscu-out"
    out.mkdir()
    args = [getscu, model_flag, "-aec", "GETSCP", "+B", "-od", str(out)]
    for k in keys:
        args += ["-k", k]
    rc, log = await run_tool(*args, "127.0.0.1", str(server.port))
    assert rc == 0, log
    files = sorted(out.iterdir())
    assert len(files) == len(paths), log
    by_uid = {p.name[:-4]: p for p in paths}
    for f in files:
        info = read_part10_info(f)
        source = by_uid[info.sop_instance_uid]
        assert info.transfer_syntax == read_part10_info(source).transfer_syntax
        # bit-preserving mode: the data set is byte-identical to what we served
        assert dataset_bytes(f) == dataset_bytes(source)
        assert dcmread(f).PixelData == dcmread(source).PixelData


async def test_dcmtk_getscu_bad_identifier(our_scp: tuple[aiodicom.Server, list[Path]], tmp_path: Path) -> None:
    getscu = require_dcmtk("getscu")
    server, _ = our_scp
    out = tmp_path / "getscu-out"
    out.mkdir()
    _rc, log = await run_tool(
        getscu, "-S", "-v", "-aec", "GETSCP", "-od", str(out), "-k", "QueryRetrieveLevel=SERIES",
        "-k", f"SeriesInstanceUID={SERIES}", "127.0.0.1", str(server.port),
    )
    assert list(out.iterdir()) == []
    assert "DataSetDoesNotMatchSOPClass" in log, log  # DCMTK's name for 0xA900


# --------------------------------------------------------------------------
# our SCU (CLI and retrieve_series) -> DCMTK dcmqrscp


@pytest.fixture
async def dcmqrscp(tmp_path: Path) -> AsyncIterator[tuple[int, list[Path]]]:
    tool = require_dcmtk("dcmqrscp")
    storescu = require_dcmtk("storescu")
    db = tmp_path / "qrdb"
    db.mkdir()
    port = free_port()
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
QRSCP   {db}   RW   (100, 64mb)   ANY
AETable END
"""
    )
    proc = await asyncio.create_subprocess_exec(
        tool, "-c", str(cfg), "-dhl", str(port),  # fork mode: -s exits after one association
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=dcmtk_env(),
    )
    try:
        async with asyncio.timeout(20):
            while True:  # readiness of another process: poll with a real connection, deadline above
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                except OSError:
                    if proc.returncode is not None:
                        pytest.fail("dcmqrscp exited")
                    await asyncio.sleep(0.1)
        sources = write_files(tmp_path / "src", [make_ct(i, ts=EXPLICIT) for i in range(1, 5)])
        rc, log = await run_tool(storescu, "-aec", "QRSCP", "127.0.0.1", str(port), *map(str, sources))
        assert rc == 0, log
        yield port, sources
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(5):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_aiodicom_cli_get_against_dcmqrscp(dcmqrscp: tuple[int, list[Path]], tmp_path: Path) -> None:
    port, sources = dcmqrscp
    out = tmp_path / "cli-out"
    rc, log = await run_tool(
        sys.executable, "-m", "aiodicom", "get", "127.0.0.1", str(port), "--aec", "QRSCP",
        "--model", "patient", "--level", "SERIES",
        "-k", f"PatientID={PATIENT}", "-k", f"(0020,000D)={STUDY}", "-k", f"0020,000E={SERIES}",
        "--out", str(out), "--no-fsync",
    )
    assert rc == 0, log
    assert "status 0x0000" in log and f"{len(sources)} instance(s)" in log
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in sources)
    for src in sources:
        got = dcmread(out / src.name)
        want = dcmread(src)
        assert got.SOPInstanceUID == want.SOPInstanceUID and got.PixelData == want.PixelData
        assert read_part10_info(out / src.name).sop_class_uid == CT

    # a retrieve that matches nothing: success, nothing written
    rc, log = await run_tool(
        sys.executable, "-m", "aiodicom", "get", "127.0.0.1", str(port), "--aec", "QRSCP",
        "--level", "PATIENT", "-k", "PatientID=NOBODY", "--out", str(tmp_path / "none"),
    )
    assert rc == 0, log
    assert list((tmp_path / "none").iterdir()) == []


@pytest.mark.parametrize("level", ["PATIENT", "STUDY", "SERIES", "IMAGE"])
async def test_retrieve_series_against_dcmqrscp(dcmqrscp: tuple[int, list[Path]], tmp_path: Path, level: str) -> None:
    port, sources = dcmqrscp
    wanted = sources[1:3] if level == "IMAGE" else sources
    async with asyncio.timeout(DEADLINE):
        result = await retrieve_series(
            "127.0.0.1", port, PATIENT, STUDY, SERIES, tmp_path / "out",
            level=level, sop_instance_uids=[p.name[:-4] for p in wanted] if level == "IMAGE" else None,
            called_ae="QRSCP", sop_classes=[CT], fsync=False,
        )
    assert result.status == 0, result
    assert result.completed == len(wanted)
    assert sorted(p.name for p in result.files) == sorted(p.name for p in wanted)
    for path in result.files:
        assert dcmread(path).PixelData == dcmread(sources[0].parent / path.name).PixelData
