"""Shared fixtures: event loops (asyncio and uvloop), free ports, DCMTK tools."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    """Every async test runs once on asyncio's default loop and once on uvloop."""
    factories: dict[str, object] = {"asyncio": asyncio.new_event_loop}
    if uvloop is not None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture
def loop_kind(request: pytest.FixtureRequest) -> str:
    """Name of the event loop implementation under test ("asyncio" or "uvloop")."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None:
        for value in callspec.params.values():
            if value in ("asyncio", "uvloop"):
                return str(value)
    return "uvloop" if "[uvloop" in request.node.name or "-uvloop" in request.node.name else "asyncio"


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dcmtk_tool(name: str) -> str | None:
    """Path of DCMTK's ``name`` tool, or None.

    pynetdicom installs Python apps with the same names (echoscu, storescp,
    ...) into the Python bin directory, which may come first on PATH; DCMTK's
    tools are recognised by their ``--version`` banner ("$dcmtk: ...").
    """
    candidates = [f"/usr/bin/{name}", f"/usr/local/bin/{name}"]
    found = shutil.which(name)
    if found:
        candidates.append(found)
    for path in candidates:
        if not os.path.exists(path):
            continue
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        if "dcmtk" in out.lower():
            return path
    return None


def require_dcmtk(name: str) -> str:
    """The DCMTK tool's path, or skip the test (CI installs DCMTK)."""
    path = dcmtk_tool(name)
    if path is None:
        pytest.skip(f"DCMTK {name} is not installed (apt-get install dcmtk)")
    return path


def dcmtk_env() -> dict[str, str]:
    """Environment for DCMTK tools: TCP_NODELAY=1 so Nagle does not add 40 ms."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


@pytest.fixture
def port() -> int:
    """A free TCP port."""
    return free_port()


@pytest.fixture
async def echo_server() -> AsyncIterator["object"]:
    """A running aiodicom Server (Verification only) on a free port."""
    import aiodicom

    server = aiodicom.Server("AIODICOM")
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.close(timeout=1.0)


@pytest.fixture
def tmp_storage(tmp_path: "os.PathLike[str]") -> Iterator[str]:
    """A temporary storage directory."""
    path = os.path.join(os.fspath(tmp_path), "storage")
    os.makedirs(path)
    yield path



@pytest.fixture
def temp_files_on_loop(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For every Part 10 temporary file created during the test: whether it was
    created on the event loop's thread (the test's thread) or in a worker thread."""
    import threading

    from aiodicom import part10

    loop_thread = threading.get_ident()
    where: list[bool] = []
    orig = part10._create_temp

    def spy(directory: object, final_name: str) -> object:
        where.append(threading.get_ident() == loop_thread)
        return orig(directory, final_name)  # type: ignore[arg-type]

    monkeypatch.setattr(part10, "_create_temp", spy)
    return where


@pytest.fixture
def sendfile_heads(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The bytes written ahead of each sendfile during the test (PDU header,
    and any queued PDUs that left with it), in order."""
    from aiodicom.aio import association as assoc_mod

    heads: list[bytes] = []
    orig = assoc_mod._sendfile_pdu

    def spy(sock: object, hdr: bytes, fd: int, offset: int, n: int) -> tuple[bytes, int]:
        heads.append(bytes(hdr))
        return orig(sock, hdr, fd, offset, n)  # type: ignore[arg-type]

    monkeypatch.setattr(assoc_mod, "_sendfile_pdu", spy)
    return heads
