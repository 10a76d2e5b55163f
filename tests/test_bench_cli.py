"""``aiodicom bench``: the load generator against an in-process aiodicom server.

The server runs on its own event loop in a thread (``aiodicom.cli.main`` runs
its own loop), with a discarding C-STORE handler, a C-FIND handler yielding
25 matches and a C-GET handler returning 3 prebuilt instances.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from aiodicom import Server, serve_find, serve_get, serve_store
from aiodicom.bench import synthetic_ct
from aiodicom.cli import main

N_MATCHES = 25
N_GET = 3


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def discard(req: Any) -> int:
        return 0

    async def find_handler(req: Any) -> Any:
        for i in range(N_MATCHES):
            ds = Dataset()
            ds.QueryRetrieveLevel = "PATIENT"
            ds.PatientID = f"P{i}"
            yield ds

    instances = []
    for i in range(N_GET):
        ds = synthetic_ct(8, f"1.2.3.4.{i + 1}")
        instances.append(ds)

    def get_handler(req: Any) -> Any:
        return list(instances)

    async def serve() -> None:
        srv = Server("BENCHSCP")
        serve_store(srv, discard)
        serve_find(srv, find_handler)
        serve_get(srv, get_handler, strict=False)
        await srv.start("127.0.0.1", 0)
        box["port"] = srv.port
        box["loop"] = asyncio.get_running_loop()
        box["stop"] = stop = asyncio.Event()
        ready.set()
        await stop.wait()
        await srv.close()

    t = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    t.start()
    assert ready.wait(10)
    yield int(box["port"])
    box["loop"].call_soon_threadsafe(box["stop"].set)
    t.join(10)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_bench_echo_count(server_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "echo.json"
    rc, out, err = _run(
        capsys, "bench", "echo", "127.0.0.1", str(server_port), "-n", "40", "-c", "3", "--json", str(report)
    )
    assert rc == 0, err
    assert "40 (40 ok, 0 failed)" in out
    assert "p50" in out and "p99" in out
    data = json.loads(report.read_text())
    res = data["result"]
    assert res["ops"] == 40 and res["ok"] == 40 and res["failed"] == 0 and res["errors_total"] == 0
    assert sum(res["errors"].values()) == 0
    assert len(res["latencies_ms"]) == 40
    assert res["associations"] == 3  # keep-open: one per worker
    assert data["config"]["concurrency"] == 3


def test_bench_store_count_and_cycle(server_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "store.json"
    rc, out, err = _run(
        capsys, "bench", "store", "127.0.0.1", str(server_port), "-n", "12", "-c", "2", "--size", "40",
        "--json", str(report), "-q",
    )
    assert rc == 0, err
    res = json.loads(report.read_text())["result"]
    assert res["ok"] == 12 and res["items"] == 12 and res["errors_total"] == 0
    assert 38 * 1024 <= res["instance_bytes"] <= 42 * 1024
    assert res["bytes"] == 12 * res["instance_bytes"]
    assert "MB/s" in out

    rc, out, err = _run(capsys, "bench", "store", "127.0.0.1", str(server_port), "-n", "5", "--size", "4", "--cycle")
    assert rc == 0, err
    assert "5 (5 ok, 0 failed)" in out and "5 opened" in out


def test_bench_find_and_get(server_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "find.json"
    rc, out, err = _run(
        capsys, "bench", "find", "127.0.0.1", str(server_port), "-n", "4", "-c", "2", "-k", "PatientID",
        "--json", str(report),
    )
    assert rc == 0, err
    res = json.loads(report.read_text())["result"]
    assert res["ok"] == 4 and res["items"] == 4 * N_MATCHES and res["errors_total"] == 0

    report = tmp_path / "get.json"
    rc, out, err = _run(
        capsys, "bench", "get", "127.0.0.1", str(server_port), "-n", "3", "--level", "PATIENT",
        "-k", "PatientID=BENCH", "--json", str(report), "--per-association", "2",
    )
    assert rc == 0, err
    res = json.loads(report.read_text())["result"]
    assert res["ok"] == 3 and res["items"] == 3 * N_GET and res["errors_total"] == 0
    assert res["bytes"] > 3 * N_GET * 7 * 1024
    assert res["associations"] == 2


def test_bench_duration(server_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(
        capsys, "bench", "echo", "127.0.0.1", str(server_port), "--duration", "0.3", "--warmup", "0.1", "-c", "2"
    )
    assert rc == 0, err
    assert "window          0.30 s" in out
    # stderr is not a TTY here: a progress line every few seconds at most, no carriage returns
    assert "\r" not in err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["bench", "echo", "127.0.0.1", "1", "-n", "2"], "connection refused"),
        (["bench", "echo", "127.0.0.1", "PORT", "-c", "0", "-n", "2"], "--concurrency must be at least 1"),
        (["bench", "store", "127.0.0.1", "PORT", "-n", "2", "-k", "PatientID=1"], "find and get only"),
        (["bench", "store", "127.0.0.1", "PORT", "-n", "0"], "--count must be at least 1"),
        (["bench", "echo", "127.0.0.1", "PORT", "-n", "1", "--cycle", "--per-association", "2"], "exclude"),
    ],
)
def test_bench_errors_one_line(
    server_port: int, argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(server_port) if a == "PORT" else a for a in argv]
    rc, out, err = _run(capsys, *argv)
    assert rc != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("aiodicom bench: ") and needle in lines[0]
    assert "Traceback" not in err


def test_bench_argparse_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "echo", "127.0.0.1", "104", "-n", "3", "--duration", "2"])
    assert exc.value.code != 0
    assert "not allowed with" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "nonsense", "127.0.0.1", "104"])
