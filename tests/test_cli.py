"""The ``aiodicom`` command line, run as ``python -m aiodicom`` subprocesses.

Contract (aiodicom/cli.py): exit 0 on success; otherwise a one-line error
on stderr (argparse's usage text for bad arguments) and a non-zero exit
status, never a traceback.
"""

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import aiodicom
from aiodicom.cli import main

REPO = Path(__file__).resolve().parents[1]
DEADLINE = 20.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONWARNINGS", None)
    return env


def cli(*args: str, timeout: float = DEADLINE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiodicom", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=REPO,
        check=False,
    )


def assert_clean_failure(proc: subprocess.CompletedProcess[str], *, one_line: bool = True) -> str:
    """Non-zero exit, a message on stderr, no traceback; returns stderr."""
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert proc.stderr.strip(), "no error message on stderr"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    if one_line:
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


async def _echo(port: int, called: str) -> int:
    async with aiodicom.associate("127.0.0.1", port, called_ae=called) as assoc:
        return await assoc.echo()


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------
# `aiodicom serve` as a subprocess


@dataclass
class Serve:
    proc: subprocess.Popen[str]
    port: int
    banner: str


def _readline(proc: subprocess.Popen[str], deadline: float) -> str:
    """One line of the process's stdout, waiting at most until ``deadline``."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not sel.select(remaining):
            raise AssertionError("no output from `aiodicom serve` in time")
    return proc.stdout.readline()


def start_serve(*extra: str) -> Serve:
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiodicom", "serve", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=REPO,
    )
    try:
        line = _readline(proc, time.monotonic() + DEADLINE)
        match = re.search(r"serving .* on [\d.]+:(\d+)", line)
        assert match, f"unexpected first line {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        return Serve(proc, int(match.group(1)), line)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def stop_serve(serve: Serve) -> tuple[int, str, str]:
    if serve.proc.poll() is None:
        serve.proc.send_signal(signal.SIGTERM)
    try:
        out, err = serve.proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        serve.proc.kill()
        out, err = serve.proc.communicate()
        raise AssertionError("`aiodicom serve` did not stop on SIGTERM") from None
    return serve.proc.returncode, out, err


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """One ``aiodicom serve --strict-aet`` for the echo tests of this module."""
    srv = start_serve("--aet", "CLISCP", "--strict-aet", "--storage", str(tmp_path_factory.mktemp("store")))
    try:
        yield srv
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
        srv.proc.communicate()


# --------------------------------------------------------------------------
# echo


def test_echo_against_serve_subprocess(serve: Serve) -> None:
    proc = cli("echo", "127.0.0.1", str(serve.port), "--aec", "CLISCP", "--repeat", "3")
    assert proc.returncode == 0, proc.stderr
    assert "success" in proc.stdout
    assert "CLISCP" in proc.stdout
    assert proc.stderr == ""


def test_echo_rejected_by_strict_server(serve: Serve) -> None:
    proc = cli("echo", "127.0.0.1", str(serve.port), "--aec", "WRONG")
    err = assert_clean_failure(proc)
    assert "rejected" in err.lower() and "called AE title" in err
    assert serve.proc.poll() is None  # the server is still up


def test_echo_connection_refused() -> None:
    port = unused_port()
    proc = cli("echo", "127.0.0.1", str(port), "--timeout", "5")
    err = assert_clean_failure(proc)
    assert "refused" in err.lower()
    assert str(port) in err


def test_echo_to_something_that_is_not_dicom() -> None:
    """A peer that answers garbage: one-line error, non-zero exit."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "aiodicom", "echo", "127.0.0.1", str(port), "--timeout", "10"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=REPO,
        )
        listener.settimeout(DEADLINE)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(DEADLINE)
            assert conn.recv(6)[:1] == b"\x01"  # their A-ASSOCIATE-RQ
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            out, err = proc.communicate(timeout=DEADLINE)
    assert_clean_failure(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["echo", "127.0.0.1", "99999"], "99999"),
        (["echo", "127.0.0.1", "-1"], None),
        (["echo", "127.0.0.1", "port"], "port"),
        (["echo", "127.0.0.1", "104", "--aet", "A" * 17], "AE title"),
        (["echo", "127.0.0.1", "104", "--aec", "WAY_TOO_LONG_AE_TITLE"], "AE title"),
        (["echo", "127.0.0.1", "104", "--aec", "   "], "AE title"),
        (["echo", "127.0.0.1", "104", "--timeout", "-3"], "positive"),
        (["echo", "127.0.0.1"], "required"),
        (["echo"], "required"),
        ([], None),
        (["serve", "--port", "70000"], "70000"),
        (["serve", "--aet", "X" * 20], "AE title"),
        (["no-such-command"], "invalid choice"),
    ],
    ids=[
        "port-99999",
        "port-negative",
        "port-not-a-number",
        "aet-too-long",
        "aec-too-long",
        "aec-blank",
        "negative-timeout",
        "missing-port",
        "missing-host-and-port",
        "no-command",
        "serve-port-out-of-range",
        "serve-aet-too-long",
        "unknown-command",
    ],
)
def test_bad_arguments(args: list[str], needle: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code not in (0, None)
    captured = capsys.readouterr()
    assert "usage:" in captured.err
    assert "Traceback" not in captured.err
    if needle is not None:
        assert needle in captured.err


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["echo", "127.0.0.1", "99999"], "99999"), (["echo"], "required")],
    ids=["port-99999", "missing-args"],
)
def test_bad_arguments_subprocess(args: list[str], needle: str) -> None:
    proc = cli(*args)
    err = assert_clean_failure(proc, one_line=False)
    assert proc.returncode == 2  # argparse's usage error
    assert needle in err
    assert err.strip().splitlines()[-1].startswith("aiodicom")


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "echo" in out and "serve" in out
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert aiodicom.__version__ in capsys.readouterr().out


# --------------------------------------------------------------------------
# serve


def test_serve_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        proc = cli("serve", "--port", str(port), "--storage", str(tmp_path / "s"))
    err = assert_clean_failure(proc)
    assert str(port) in err


def test_serve_stops_cleanly_on_sigterm_and_creates_storage(tmp_path: Path) -> None:
    storage = tmp_path / "deep" / "storage"
    assert not storage.exists()
    srv = start_serve("--aet", "TERMME", "--storage", str(storage))
    try:
        assert "TERMME" in srv.banner
        assert storage.is_dir()
        # it really serves
        assert asyncio.run(_echo(srv.port, "TERMME")) == 0
    finally:
        rc, out, err = stop_serve(srv)
    assert rc == 0, err
    assert "Traceback" not in err
    assert "shutting down" in out
    # the port is released
    with socket.socket() as s:
        s.bind(("127.0.0.1", srv.port))


def test_serve_logs_one_line_per_association_unless_quiet(tmp_path: Path) -> None:
    for quiet in (False, True):
        srv = start_serve("--storage", str(tmp_path / f"s{quiet}"), *(["--quiet"] if quiet else []))
        try:
            assert asyncio.run(_echo(srv.port, "AIODICOM")) == 0
        finally:
            rc, _out, err = stop_serve(srv)
        assert rc == 0, err
        lines = [line for line in err.splitlines() if "association closed" in line]
        if quiet:
            assert lines == [], err
        else:
            assert len(lines) == 1 and "ops=C-ECHO=1" in lines[0], err


def test_serve_verbose_and_quiet_conflict(tmp_path: Path) -> None:
    proc = cli("serve", "--verbose", "--quiet", "--storage", str(tmp_path / "s"))
    err = assert_clean_failure(proc)
    assert "--quiet" in err
