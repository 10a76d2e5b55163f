"""Peer processes: find tools, start servers, wait for their port, kill them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import RESULT_PREFIX

__all__ = [
    "REPO_ROOT",
    "ServerProcess",
    "dcmtk_tool",
    "free_port",
    "python_env",
    "run_loadgen",
    "start_server",
]

#: the checkout holding ``benchmarks/`` and ``aiodicom/`` (put first on PYTHONPATH)
REPO_ROOT = Path(__file__).resolve().parent.parent


def python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Python subprocesses: this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop("PYTHONASYNCIODEBUG", None)
    env.pop("PYTHONDEVMODE", None)
    if extra:
        env.update(extra)
    return env


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dcmtk_tool(name: str) -> str | None:
    """Path of DCMTK's ``name`` tool, or None.

    pynetdicom installs Python apps called echoscu/storescp that may shadow
    DCMTK's on PATH; DCMTK's are recognised by their ``--version`` banner.
    """
    candidates = [f"/usr/bin/{name}", f"/usr/local/bin/{name}"]
    found = shutil.which(name)
    if found:
        candidates.append(found)
    for path in candidates:
        if not os.path.exists(path):
            continue
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        if "dcmtk" in out.lower():
            return path
    return None


def dcmtk_version(path: str) -> str:
    """The first line of ``path --version`` (e.g. ``$dcmtk: echoscu v3.6.7 ... $``)."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    for line in out.splitlines():
        if "dcmtk" in line.lower():
            return line.strip().strip("$").strip()
    return "?"


@dataclass
class ServerProcess:
    """A peer server started by us (in its own process group)."""

    name: str
    argv: list[str]
    port: int
    proc: subprocess.Popen[bytes]
    log_path: str
    tmpdir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError:
            return ""
        return data[-n:].decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM the process group we started, then SIGKILL; clean up."""
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:
            # the leader is gone; forked children (storescp --fork) may remain
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


def wait_for_port(host: str, port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Return once ``host:port`` accepts a TCP connection; raise on exit or timeout."""
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"not listening on {host}:{port} after the start-up deadline")
        time.sleep(0.05)


def start_server(
    name: str,
    argv: Sequence[str],
    port: int,
    *,
    env: dict[str, str] | None = None,
    tmpdir: str | None = None,
    startup_timeout: float = 20.0,
    host: str = "127.0.0.1",
) -> ServerProcess:
    """Start ``argv`` in a new process group and wait until ``port`` accepts."""
    fd, log_path = tempfile.mkstemp(prefix="aiodicom-bench-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmpdir or None,
            start_new_session=True,
        )
    sp = ServerProcess(name, list(argv), port, proc, log_path, tmpdir)
    try:
        wait_for_port(host, port, proc, time.monotonic() + startup_timeout)
    except BaseException as exc:
        tail = sp.log_tail()
        sp.stop()
        if not isinstance(exc, Exception):
            raise
        raise RuntimeError(f"{name}: {exc}; output: {tail.strip()[-500:]}") from None
    return sp


def run_loadgen(argv: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run a load generator process; return its ``BENCH_RESULT`` dicts."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env or python_env(),
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        raise RuntimeError(f"load generator timed out after {timeout:.0f} s: {err.decode(errors='replace')[-500:]}")
    finally:
        if proc.poll() is None:  # pragma: no cover - interrupted
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    results = [
        json.loads(line[len(RESULT_PREFIX) :])
        for line in out.decode(errors="replace").splitlines()
        if line.startswith(RESULT_PREFIX)
    ]
    if proc.returncode != 0 and not results:
        raise RuntimeError(f"load generator failed (status {proc.returncode}): {err.decode(errors='replace')[-800:]}")
    return results


def python_module(module: str, *args: str) -> list[str]:
    """``[sys.executable, -m, module, *args]``."""
    return [sys.executable, "-m", module, *args]
