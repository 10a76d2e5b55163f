"""Run every example's main() against in-process aiodicom servers so they cannot rot."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset

import aiodicom

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
STUDY = "1.2.826.0.1.3680043.8.498.501"
SERIES = STUDY + ".1"
DEADLINE = 20.0


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def ct(i: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = f"{SERIES}.{i}"
    ds.PatientID = "PID1"
    ds.PatientName = "Example^Patient"
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.Modality = "CT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = EXPLICIT
    return ds


@pytest.fixture
async def pacs() -> AsyncIterator[aiodicom.Server]:
    server = aiodicom.Server("PACS")

    async def find(req: aiodicom.FindRequest) -> AsyncIterator[Dataset]:
        pid = str(req.identifier.get("PatientID", ""))
        if pid in ("", "*", "PID1"):
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.PatientID = "PID1"
            ds.PatientName = "Example^Patient"
            ds.StudyInstanceUID = STUDY
            ds.StudyDate = "20240102"
            yield ds

    async def get(req: aiodicom.GetRequest) -> AsyncIterator[Any]:
        if req.series_instance_uids == [SERIES]:
            yield 3
            for i in range(1, 4):
                yield ct(i)

    aiodicom.serve_find(server, find, models=("study", "patient"))
    aiodicom.serve_get(server, get, ["patient", "study"], [CT])
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.close(timeout=1.0)


async def test_echo_and_find(pacs: aiodicom.Server, capsys: pytest.CaptureFixture[str]) -> None:
    found = await load("echo_and_find").main("127.0.0.1", pacs.port, "PACS", "Example*")
    assert [str(ds.StudyInstanceUID) for ds in found] == [STUDY]
    assert "C-ECHO" in capsys.readouterr().out


async def test_retrieve_series(pacs: aiodicom.Server, tmp_path: Path) -> None:
    result = await load("retrieve_series").main("127.0.0.1", pacs.port, "PACS", "PID1", STUDY, SERIES, tmp_path)
    assert result.ok and result.completed == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{SERIES}.{i}.dcm" for i in range(1, 4)]


async def http_get(port: int, path: str) -> tuple[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), json.loads(body)


async def test_fastapi_style_service(pacs: aiodicom.Server) -> None:
    mod = load("fastapi_style_service")
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(mod.main("127.0.0.1", pacs.port, "PACS", 0, ready=port.set_result, stop=stop))
    try:
        async with asyncio.timeout(DEADLINE):
            http_port = await port
            results = await asyncio.gather(*(http_get(http_port, "/studies?PatientID=PID1") for _ in range(10)))
            for status, body in results:
                assert status == "HTTP/1.1 200 OK"
                assert body == [{"PatientID": "PID1", "PatientName": "Example^Patient",
                                 "StudyInstanceUID": STUDY, "StudyDate": "20240102"}]
            status, body = await http_get(http_port, "/health")
            assert body["echo"] == 0 and 1 <= body["pool_size"] <= 4
    finally:
        stop.set()
        await task
    assert pacs.total_associations <= 4  # ten requests shared the pool's associations


async def test_embedded_scp(tmp_path: Path) -> None:
    mod = load("embedded_scp")
    stop = asyncio.Event()
    ports: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        mod.main(0, 0, tmp_path, ready=lambda d, s: ports.set_result((d, s)), stop=stop)
    )
    try:
        async with asyncio.timeout(DEADLINE):
            dicom_port, status_port = await ports
            async with aiodicom.associate("127.0.0.1", dicom_port, called_ae="EMBEDDED",
                                          contexts=["1.2.840.10008.1.1", CT]) as assoc:
                assert await assoc.echo() == 0
                assert await assoc.store(ct(1)) == 0
            reader, writer = await asyncio.open_connection("127.0.0.1", status_port)
            writer.write(b"stats\n")
            stats = json.loads(await reader.readline())
            writer.close()
            assert stats["stored"] == 1
            assert stats["associations_total"] >= 1
    finally:
        stop.set()
        stored = await task
    assert stored == 1
    assert (tmp_path / f"{SERIES}.1.dcm").exists()
