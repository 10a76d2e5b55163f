"""``aiodicom serve --workers N``: N processes on one port sharing one archive."""

from __future__ import annotations

import asyncio
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

import aiodicom

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 30.0
CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or not hasattr(socket, "SO_REUSEPORT"), reason="needs fork and SO_REUSEPORT"
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        pytest.skip("/proc children list unavailable")
    return {int(x) for x in text.split()}


def _wait_for(predicate, what: str, deadline: float = DEADLINE) -> None:  # type: ignore[no-untyped-def]
    """Poll a condition of another process (there is no event to wait on)."""
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Serve:
    def __init__(self, storage: Path, workers: int) -> None:
        self.port = _port()
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aiodicom", "serve", "--port", str(self.port), "--storage", str(storage),
             "--workers", str(workers)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
        )
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(DEADLINE):
                self.stop()
                raise AssertionError("no banner from `aiodicom serve --workers`")
        self.banner = self.proc.stdout.readline()

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _out, err = self.proc.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise AssertionError("supervisor did not stop on SIGTERM") from None
        return self.proc.returncode, err


def _instance(i: int) -> Dataset:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    from pydicom import dcmread

    ds = dcmread(path)
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.7777.{i}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


async def _store_many(port: int, datasets: list[Dataset]) -> list[int]:
    async def one(ds: Dataset) -> int:
        async with aiodicom.associate("127.0.0.1", port, called_ae="AIODICOM", contexts=[CT]) as assoc:
            return int(await assoc.store(ds))

    return await asyncio.gather(*(one(ds) for ds in datasets))


async def _count_images(port: int, ref: Dataset) -> int:
    q = Dataset()
    q.QueryRetrieveLevel = "IMAGE"
    q.StudyInstanceUID = ref.StudyInstanceUID
    q.SeriesInstanceUID = ref.SeriesInstanceUID
    q.SOPInstanceUID = ""
    n = 0
    async with aiodicom.associate("127.0.0.1", port, called_ae="AIODICOM", contexts=[STUDY_FIND]) as assoc:
        async for status, ident in assoc.find(q, model="study"):
            if ident is not None:
                n += 1
            else:
                assert status.is_success, status
    return n


async def test_workers_share_port_and_archive(tmp_path: Path) -> None:
    serve = Serve(tmp_path / "data", workers=2)
    try:
        assert re.search(r"serving AIODICOM on 127\.0\.0\.1:\d+ with 2 workers", serve.banner), serve.banner
        workers = _children(serve.proc.pid)
        assert len(workers) == 2

        # distinct instances over many associations, spread by the kernel over both workers
        datasets = [_instance(i) for i in range(24)]
        assert await _store_many(serve.port, datasets) == [0] * 24
        # the same instance from several associations at once: one file, one row
        same = [_instance(999) for _ in range(6)]
        assert await _store_many(serve.port, same) == [0] * 6
        # every worker answers queries from the shared index
        study = datasets[0]
        counts = await asyncio.gather(*(_count_images(serve.port, study) for _ in range(8)))
        assert counts == [25] * 8
        files = [p for p in (tmp_path / "data" / "instances").rglob("*") if p.is_file()]
        assert len(files) == 25 and not any(p.name.startswith(".") for p in files)

        # a worker that dies is replaced
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: len(_children(serve.proc.pid) - {victim}) == 2, "a replacement worker")
        assert await _count_images(serve.port, study) == 25
    finally:
        code, err = serve.stop()
    assert code == 0, err
    assert "restarting" in err


def test_workers_bad_values_are_one_line_errors(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for extra in (["--workers", "0"], ["--workers", "x"], ["--workers", "2", "--port", "0"]):
        proc = subprocess.run(
            [sys.executable, "-m", "aiodicom", "serve", "--storage", str(tmp_path / "d"), *extra],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=DEADLINE, check=False,
        )
        assert proc.returncode != 0, extra
        assert "Traceback" not in proc.stderr, proc.stderr
        assert "--workers" in proc.stderr or "workers" in proc.stderr, proc.stderr
