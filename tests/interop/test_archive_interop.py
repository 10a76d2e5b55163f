"""`aiodicom serve` (the archive) against DCMTK tools and pynetdicom SCUs.

Two archives run as subprocesses: A (``ARCHIVE``, with ``--peer SECOND=...``)
and B (``SECOND``), the C-MOVE destination.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset

from tests.conftest import dcmtk_env, free_port, require_dcmtk

REPO = Path(__file__).resolve().parents[2]
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
ROOT = "1.2.826.0.1.3680043.10.5555"


def make_image(pid: str, study: int, series: int, n: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = f"{ROOT}.{study}.{series}.{n}"
    ds.PatientName = f"Interop^{pid}"
    ds.PatientID = pid
    ds.StudyInstanceUID = f"{ROOT}.{study}"
    ds.StudyDate = "20240101"
    ds.SeriesInstanceUID = f"{ROOT}.{study}.{series}"
    ds.Modality = "CT"
    ds.SeriesNumber = series
    ds.InstanceNumber = n
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((n + i) % 256 for i in range(32))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = EXPLICIT
    return ds


def write_files(folder: Path, datasets: list[Dataset]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(str(path))
    return paths


@dataclass
class Serve:
    proc: subprocess.Popen[str]
    port: int
    aet: str
    log: Path


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def start_serve(tmp: Path, aet: str, *extra: str) -> Serve:
    log = tmp / f"{aet}.log"
    port = free_port()
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aiodicom", "serve", "--port", str(port), "--aet", aet,
             "--storage", str(tmp / aet), *extra],
            stdout=subprocess.PIPE, stderr=log_file, text=True, env=env(), cwd=REPO,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert re.search(r"serving .* on [\d.]+:(\d+)", line), (line, log.read_text())
    return Serve(proc, port, aet, log)


def stop(serve: Serve) -> None:
    serve.proc.terminate()
    try:
        serve.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:  # pragma: no cover
        serve.proc.kill()
        serve.proc.wait()


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, Serve, Path]]:
    tmp = tmp_path_factory.mktemp("archive-interop")
    b = start_serve(tmp, "SECOND")
    a = start_serve(tmp, "ARCHIVE", "--peer", f"SECOND=127.0.0.1:{b.port}")
    try:
        yield a, b, tmp
    finally:
        stop(a)
        stop(b)
    # One INFO line per association, without patient data.
    text = a.log.read_text()
    assert "association closed calling_ae=" in text
    assert "Interop^" not in text


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=dcmtk_env(), check=False)


def count_on(serve: Serve, tmp: Path, study_uid: str) -> int:
    """Instances of the study stored in ``serve``'s archive (files are named by SOP Instance UID)."""
    return sum(1 for p in (tmp / serve.aet / "instances").rglob(f"{study_uid}.*.dcm"))


def test_dcmtk_store_find_get_move(archives: tuple[Serve, Serve, Path]) -> None:
    storescu, findscu = require_dcmtk("storescu"), require_dcmtk("findscu")
    getscu, movescu = require_dcmtk("getscu"), require_dcmtk("movescu")
    a, b, tmp = archives
    files = write_files(tmp / "dcmtk-in", [make_image("D1", 1, 1, n) for n in (1, 2, 3)])
    proc = run([storescu, "-aec", a.aet, "127.0.0.1", str(a.port), *files])
    assert proc.returncode == 0, proc.stderr

    proc = run([findscu, "-P", "-aec", a.aet, "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=D1",
                "-k", "PatientName", "127.0.0.1", str(a.port)])
    assert proc.returncode == 0, proc.stderr
    assert "Interop^D1" in proc.stdout + proc.stderr
    proc = run([findscu, "-S", "-aec", a.aet, "-k", "QueryRetrieveLevel=SERIES",
                "-k", f"StudyInstanceUID={ROOT}.1", "-k", "SeriesInstanceUID", "-k", "Modality",
                "127.0.0.1", str(a.port)])
    assert proc.returncode == 0, proc.stderr
    assert f"{ROOT}.1.1" in proc.stdout + proc.stderr

    out = tmp / "dcmtk-get"
    out.mkdir()
    proc = run([getscu, "-S", "-aec", a.aet, "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ROOT}.1",
                "-od", str(out), "127.0.0.1", str(a.port)])
    assert proc.returncode == 0, proc.stderr
    got = sorted(out.iterdir())
    assert len(got) == 3
    assert {dcmread(p).SOPInstanceUID for p in got} == {f"{ROOT}.1.1.{n}" for n in (1, 2, 3)}

    proc = run([movescu, "-S", "-aec", a.aet, "-aem", "SECOND", "-k", "QueryRetrieveLevel=STUDY",
                "-k", f"StudyInstanceUID={ROOT}.1", "127.0.0.1", str(a.port)])
    assert proc.returncode == 0, proc.stderr
    assert count_on(b, tmp, f"{ROOT}.1") == 3

    proc = run([movescu, "-S", "-aec", a.aet, "-aem", "UNKNOWN", "-k", "QueryRetrieveLevel=STUDY",
                "-k", f"StudyInstanceUID={ROOT}.1", "127.0.0.1", str(a.port)])
    assert "A801" in (proc.stdout + proc.stderr).upper() or "DESTINATION" in (proc.stdout + proc.stderr).upper()


def test_pynetdicom_store_find_get_move(archives: tuple[Serve, Serve, Path]) -> None:
    from pynetdicom import AE, build_role
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        CTImageStorage,
        PatientRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelMove,
    )

    a, b, tmp = archives
    datasets = [make_image("N1", 2, 1, n) for n in (1, 2)]
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    role = build_role(CTImageStorage, scp_role=True, scu_role=True)
    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        received.append(event.dataset)
        return 0

    from pynetdicom import evt

    assoc = ae.associate("127.0.0.1", a.port, ae_title=a.aet, ext_neg=[role],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        for ds in datasets:
            assert assoc.send_c_store(ds).Status == 0

        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.PatientID = "N1"
        q.StudyInstanceUID = ""
        answers = [(s.Status, i) for s, i in assoc.send_c_find(q, PatientRootQueryRetrieveInformationModelFind)]
        assert [st for st, _ in answers] == [0xFF00, 0x0000]
        assert answers[0][1].StudyInstanceUID == f"{ROOT}.2"

        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.PatientID = "N1"
        q.StudyInstanceUID = f"{ROOT}.2"
        q.SeriesInstanceUID = f"{ROOT}.2.1"
        statuses = [s.Status for s, _ in assoc.send_c_get(q, PatientRootQueryRetrieveInformationModelGet)]
        assert statuses[-1] == 0
        assert sorted(str(d.SOPInstanceUID) for d in received) == [f"{ROOT}.2.1.1", f"{ROOT}.2.1.2"]

        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.StudyInstanceUID = f"{ROOT}.2"
        rsps = [s for s, _ in assoc.send_c_move(q, "SECOND", StudyRootQueryRetrieveInformationModelMove)]
        assert rsps[-1].Status == 0 and rsps[-1].NumberOfCompletedSuboperations == 2
    finally:
        assoc.release()
    # B answers each C-STORE only once the file is on disk, and the C-MOVE
    # reported both sub-operations completed: nothing to wait for.
    assert count_on(b, tmp, f"{ROOT}.2") == 2
