"""The README walkthrough, run as written (ports and folders substituted).

Two ``aiodicom serve`` processes (ARCHIVE with ``--peer SECOND=...``, and
SECOND), then ``aiodicom store``, ``find``, ``get``, ``move`` and ``rpq``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset

from aiodicom.services.rpq import build_relevant_patient_info, content_item
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
ROOT = "1.2.826.0.1.3680043.10.7777"
EXPLICIT = "1.2.840.10008.1.2.1"


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def aiodicom(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aiodicom", *args], capture_output=True, text=True,
                          timeout=60, env=env(), cwd=REPO, check=False)


def serve(*args: str, log: Path) -> subprocess.Popen[str]:
    with open(log, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "aiodicom", "serve", *args], stdout=subprocess.PIPE,
                            stderr=log_file, text=True, env=env(), cwd=REPO)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert re.search(r"serving .* on [\d.]+:\d+", line), (line, log.read_text())
    return proc


def write_folder(folder: Path) -> None:
    """A CT series of patient P1 plus a Comprehensive SR (TID 9007) for the RPQ step."""
    folder.mkdir()
    for n in (1, 2, 3):
        ds = Dataset()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = f"{ROOT}.1.1.{n}"
        ds.PatientName, ds.PatientID = "Walk^Through", "P1"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{ROOT}.1", f"{ROOT}.1.1"
        ds.StudyDate, ds.Modality, ds.InstanceNumber = "20240101", "CT", n
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = EXPLICIT
        dcmwrite(folder / f"ct{n}.dcm", ds, enforce_file_format=True)
    sr = build_relevant_patient_info(
        {"PatientID": "P1", "PatientName": "Walk^Through", "PatientSex": "F"}, "9007",
        [content_item("TEXT", ("121106", "DCM", "Comment"), "no known allergies")],
        observation_datetime="20240102030405",
    )
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    sr.SOPInstanceUID = f"{ROOT}.1.9.1"
    sr.StudyInstanceUID, sr.SeriesInstanceUID = f"{ROOT}.1", f"{ROOT}.1.9"
    sr.Modality = "SR"
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = EXPLICIT
    dcmwrite(folder / "sr.dcm", sr, enforce_file_format=True)


def test_readme_walkthrough(tmp_path: Path) -> None:
    port_a, port_b = str(free_port()), str(free_port())
    write_folder(tmp_path / "my-dicom-folder")
    b = serve("--port", port_b, "--aet", "SECOND", "--storage", str(tmp_path / "archive-b"),
              log=tmp_path / "b.log")
    a = serve("--port", port_a, "--aet", "ARCHIVE", "--storage", str(tmp_path / "archive-a"),
              "--peer", f"SECOND=127.0.0.1:{port_b}", log=tmp_path / "a.log")
    try:
        proc = aiodicom("store", "127.0.0.1", port_a, "--aec", "ARCHIVE", str(tmp_path / "my-dicom-folder"))
        assert proc.returncode == 0, proc.stderr

        proc = aiodicom("find", "127.0.0.1", port_a, "--aec", "ARCHIVE", "--level", "STUDY",
                        "-k", "PatientID=P1", "-k", "StudyInstanceUID", "-k", "StudyDate")
        assert proc.returncode == 0, proc.stderr
        assert f"{ROOT}.1" in proc.stdout and "20240101" in proc.stdout

        proc = aiodicom("get", "127.0.0.1", port_a, "--aec", "ARCHIVE", "--level", "STUDY",
                        "-k", "PatientID=P1", "-k", f"StudyInstanceUID={ROOT}.1", "--out", str(tmp_path / "retrieved"))
        assert proc.returncode == 0, proc.stderr
        assert len(list((tmp_path / "retrieved").glob("*.dcm"))) == 4

        proc = aiodicom("move", "127.0.0.1", port_a, "--aec", "ARCHIVE", "--dest", "SECOND",
                        "--level", "PATIENT", "-k", "PatientID=P1")
        assert proc.returncode == 0, proc.stderr
        assert "completed 4" in proc.stdout
        assert len(list((tmp_path / "archive-b").rglob("*.dcm"))) == 4

        proc = aiodicom("rpq", "127.0.0.1", port_a, "--aec", "ARCHIVE", "P1", "--template", "9007")
        assert proc.returncode == 0, proc.stderr
        assert "no known allergies" in proc.stdout
    finally:
        for p in (a, b):
            p.terminate()
            p.wait(timeout=15)
