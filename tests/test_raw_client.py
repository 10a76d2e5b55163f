"""The load generators of the SCP cycle benchmark: ``benchmarks/raw_client.py`` and ``cycle_client.c``.

They are only useful if they are as strict as a real SCU: every reply they
get is checked, and anything but a clean associate / C-ECHO success /
release is a failed cycle.  Real sockets, aiodicom's server (or a scripted
bad peer) on the other end; the C generator (``benchmarks/c_client.py``) is
held to the Python one's checks and messages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aiodicom
from aiodicom.dimse.commands import C_ECHO_RQ, echo_rq, echo_rsp, encode_command
from aiodicom.dimse.fragments import Message
from aiodicom.services.echo import handle_echo
from aiodicom.ul import pdu as P

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import c_client, null_scp, runner
from benchmarks.common import RESULT_PREFIX, Window
from benchmarks.procs import python_env
from benchmarks.raw_client import CycleError, _check_echo_rsp, cycle, encode_cycle


async def _server(**kw: object) -> aiodicom.Server:
    server = aiodicom.Server("ANY-SCP", **kw)  # type: ignore[arg-type]
    await server.start("127.0.0.1", 0)
    return server


def test_the_request_is_the_one_associate_sends() -> None:
    rq, echo, release = encode_cycle("ANY-SCP", "BENCH")
    scu = aiodicom.associate("127.0.0.1", 1, called_ae="ANY-SCP", calling_ae="BENCH")
    assert rq == scu.request.encode()
    assert release == bytes([5, 0, 0, 0, 0, 4, 0, 0, 0, 0])
    # one PDV, context 1, command + last fragment
    assert echo[:6] == bytes([4, 0]) + (len(echo) - 6).to_bytes(4, "big")
    assert echo[10:12] == bytes([1, 0x03])


async def test_cycles_against_aiodicom() -> None:
    server = await _server()
    try:
        pdus = encode_cycle("ANY-SCP", "BENCH")
        for _ in range(3):
            await asyncio.wait_for(cycle(("127.0.0.1", server.port), pdus), 10)
        assert server.total_associations == 3
    finally:
        await server.close()


async def test_a_rejection_fails_the_cycle() -> None:
    server = await _server(strict_called_ae=True)
    try:
        with pytest.raises(CycleError, match="A-ASSOCIATE-RJ"):
            await asyncio.wait_for(cycle(("127.0.0.1", server.port), encode_cycle("SOMEONE-ELSE", "BENCH")), 10)
    finally:
        await server.close()


async def test_a_failure_status_fails_the_cycle() -> None:
    async def refuse(assoc: aiodicom.Association, msg: Message) -> None:
        await handle_echo(assoc, msg, status=0x0110)

    server = await _server(handlers={C_ECHO_RQ: refuse})
    try:
        with pytest.raises(CycleError, match="status 272"):
            await asyncio.wait_for(cycle(("127.0.0.1", server.port), encode_cycle("ANY-SCP", "BENCH")), 10)
    finally:
        await server.close()


async def test_a_close_before_the_release_reply_fails_the_cycle() -> None:
    async def vanish(assoc: aiodicom.Association, msg: Message) -> None:
        assoc.abort()

    server = await _server(handlers={C_ECHO_RQ: vanish})
    try:
        with pytest.raises(CycleError, match="A-ABORT|closed"):
            await asyncio.wait_for(cycle(("127.0.0.1", server.port), encode_cycle("ANY-SCP", "BENCH")), 10)
    finally:
        await server.close()


async def test_nothing_listening_is_an_error() -> None:
    server = await _server()
    port = server.port
    await server.close()
    with pytest.raises(OSError):
        await asyncio.wait_for(cycle(("127.0.0.1", port), encode_cycle("ANY-SCP", "BENCH")), 10)


def test_response_checks() -> None:
    _check_echo_rsp(encode_command(echo_rsp(1, 0)))
    with pytest.raises(CycleError, match="message ID 2"):
        _check_echo_rsp(encode_command(echo_rsp(2, 0)))
    with pytest.raises(CycleError, match="status"):
        _check_echo_rsp(encode_command(echo_rsp(1, 0xC000)))
    with pytest.raises(CycleError, match="truncated"):
        _check_echo_rsp(encode_command(echo_rsp(1, 0))[:-1])



def _need_ipv6_loopback() -> None:
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")


async def test_cycles_over_ipv6() -> None:
    _need_ipv6_loopback()
    server = aiodicom.Server("ANY-SCP")
    await server.start("::1", 0)
    try:
        await asyncio.wait_for(cycle(("::1", server.port), encode_cycle("ANY-SCP", "BENCH")), 10)
        assert server.total_associations == 1
    finally:
        await server.close()


@pytest.mark.skipif(null_scp.compiler() is None, reason="no C compiler for benchmarks/null_scp.c")
async def test_the_ceiling_server_passes_the_generators_checks(tmp_path: Path) -> None:
    # benchmarks/null_scp.c answers with replies encoded once by aiodicom;
    # the generator checks each of them in full, so a wrong canned reply or
    # a framing bug in the C server fails here.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = null_scp.command(str(tmp_path), port)
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)  # printed once it listens
        assert line.startswith(b"listening"), line
        pdus = encode_cycle("ANY-SCP", "BENCH")
        for _ in range(20):
            await asyncio.wait_for(cycle(("127.0.0.1", port), pdus), 10)
        assert proc.returncode is None  # still serving
    finally:
        proc.kill()
        await proc.wait()


def test_canned_replies_are_aiodicoms_answers() -> None:
    ac, rsp, rp = null_scp.canned_replies()
    assert ac[0] == 0x02 and int.from_bytes(ac[2:6], "big") == len(ac) - 6
    assert rp == bytes([6, 0, 0, 0, 0, 4, 0, 0, 0, 0])
    # one PDV on context 1, command + last fragment, a C-ECHO-RSP to ID 1
    assert rsp[0] == 0x04 and rsp[10:12] == bytes([1, 0x03])
    _check_echo_rsp(rsp[12:])


async def test_the_python_canned_server_passes_the_generators_checks() -> None:
    listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(null_scp.serve_python(0, listening=listening))
    try:
        port = await asyncio.wait_for(asyncio.shield(listening), 10)
        pdus = encode_cycle("ANY-SCP", "BENCH")
        for _ in range(10):
            await asyncio.wait_for(cycle(("127.0.0.1", port), pdus), 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ---------------------------------------------------------------------------
# benchmarks/cycle_client.c (via benchmarks/c_client.py): the same cycle and
# the same checks in C.  The C program runs as a real process against real
# sockets; the servers run on the test's event loop meanwhile.

needs_cc = pytest.mark.skipif(null_scp.compiler() is None, reason="no C compiler for benchmarks/cycle_client.c")

#: what every generator's BENCH_RESULT carries (benchmarks.common.Window.result)
WINDOW_KEYS = set(Window(1, 0.0, 0.0).result(stragglers_cancelled=0))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """The binary and the cycle's PDUs (called AE ANY-SCP), built once for the module."""
    if null_scp.compiler() is None:
        pytest.skip("no C compiler for benchmarks/cycle_client.c")
    yield c_client.prepare(str(tmp_path_factory.mktemp("cycle-client")))


def _cell_args(port: int, host: str = "127.0.0.1", timeout: float = 10.0, peer_pid: int | None = None,
               duration: float = 0.3) -> argparse.Namespace:  # fmt: skip
    return argparse.Namespace(host=host, port=port, warmup=0.05, duration=duration, timeout=timeout, peer_pid=peer_pid)


async def _cell(prepared: list[str], port: int, clients: int = 2, **kw: Any) -> dict[str, Any]:
    """One cell of the C generator (blocking: run in a thread while the server serves here)."""
    return await asyncio.wait_for(asyncio.to_thread(c_client.run_cell, prepared, _cell_args(port, **kw), clients), 120)


async def _python_failure(port: int, called_ae: str = "ANY-SCP") -> str:
    """The message raw_client's EchoCycle fails one cycle against ``port`` with."""
    with pytest.raises(CycleError) as info:
        await asyncio.wait_for(cycle(("127.0.0.1", port), encode_cycle(called_ae, "BENCH")), 10)
    return str(info.value)


def _only_errors(res: dict[str, Any]) -> dict[str, int]:
    """Check a cell in which every cycle failed; its error samples."""
    assert res["cycles"] == 0 and res["cycles_total"] == 0 and res["latencies_ms"] == []
    assert res["errors_total"] >= 2 and res["errors_total"] >= res["errors"] > 0, res
    samples: dict[str, int] = res["error_samples"]
    assert sum(samples.values()) == res["errors_total"], samples  # one message each: all kept
    assert res["loadgen"] == "c" and res["stragglers_cancelled"] == 0
    return samples


class _Scripted(asyncio.Protocol):
    """A bad peer: answers each whole PDU by type from a script, ``(reply, close after)``; unknown types close."""

    def __init__(self, script: dict[int, tuple[bytes, bool]]) -> None:
        self.script = script
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        while len(self.buf) >= 6:
            end = 6 + int.from_bytes(self.buf[2:6], "big")
            if len(self.buf) < end:
                return
            ptype = self.buf[0]
            del self.buf[:end]
            reply, close = self.script.get(ptype, (b"", True))
            if reply:
                self.transport.write(reply)
            if close:
                self.transport.close()
                return


async def _scripted(script: dict[int, tuple[bytes, bool]]) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Scripted(script), "127.0.0.1", 0)


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


def _pdata(*pdvs: tuple[int, bytes]) -> bytes:
    return P.PDataTF([(1, ctrl, memoryview(data)) for ctrl, data in pdvs]).encode()


@needs_cc
async def test_c_generator_cycles_against_aiodicom() -> None:
    # the whole path: python -m benchmarks.c_client builds the program, runs
    # a cell per client count and prints the result lines the runner reads
    server = await _server()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.c_client", "--port", str(server.port), "--clients", "1,3",
            "--warmup", "0.05", "--duration", "0.3", "--pause", "0", "--peer-pid", str(os.getpid()),
            cwd=ROOT, env=python_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err
        results = [json.loads(ln[len(RESULT_PREFIX) :]) for ln in out.decode().splitlines()
                   if ln.startswith(RESULT_PREFIX)]  # fmt: skip
        assert [r["clients"] for r in results] == [1, 3]
        for res in results:
            assert set(res) == WINDOW_KEYS | {"loadgen"}, set(res) ^ (WINDOW_KEYS | {"loadgen"})
            assert res["loadgen"] == "c" and res["stragglers_cancelled"] == 0
            assert res["cycles"] > 0 and res["rate"] == res["cycles"] / 0.3
            assert res["errors"] == res["errors_total"] == 0 and res["error_samples"] == {}
            assert len(res["latencies_ms"]) == res["cycles"] <= res["cycles_total"]
            lat = sorted(res["latencies_ms"])
            assert 0 < lat[0] and res["p50_ms"] <= res["p99_ms"] <= res["max_ms"]
            assert abs(res["max_ms"] - lat[-1]) < 1e-3 and lat[0] - 1e-3 <= res["mean_ms"] <= lat[-1] + 1e-3
            assert res["warmup_effective_s"] >= 0.05 and res["cpu_window_s"] > 0
            assert res["cpu_s"]["self"] is not None and res["cpu_s"]["children"] == 0.0
            assert res["cpu_s"]["peer"] is not None  # --peer-pid: this process, the server's
        # every association the server saw was a completed, counted cycle
        assert server.total_associations == sum(r["cycles_total"] for r in results)
    finally:
        await server.close()


@needs_cc
async def test_c_generator_over_ipv6(prepared: list[str]) -> None:
    _need_ipv6_loopback()
    server = aiodicom.Server("ANY-SCP")
    await server.start("::1", 0)
    try:
        res = await _cell(prepared, server.port, clients=1, host="::1")
        assert res["cycles"] > 0 and res["errors_total"] == 0
    finally:
        await server.close()


@needs_cc
async def test_c_generator_fragmented_command_set_is_accepted(prepared: list[str]) -> None:
    # the C-ECHO-RSP command set in two PDVs, in two P-DATA-TF PDUs (only
    # the second has the last-fragment bit): one command set, a good cycle
    ac, _rsp, rp = null_scp.canned_replies()
    command = encode_command(echo_rsp(1, 0))
    rsp = _pdata((0x01, command[:7])) + _pdata((0x03, command[7:]))
    server = await _scripted({0x01: (ac, False), 0x04: (rsp, False), 0x05: (rp, False)})
    try:
        res = await _cell(prepared, _port(server))
        assert res["cycles"] > 0 and res["errors_total"] == 0, res["error_samples"]
    finally:
        server.close()


@needs_cc
async def test_c_generator_a_rejection_fails_every_cycle(tmp_path: Path) -> None:
    server = await _server(strict_called_ae=True)
    try:
        rejected = c_client.prepare(str(tmp_path), "SOMEONE-ELSE", "BENCH")
        samples = _only_errors(await _cell(rejected, server.port))
        # worded as raw_client words it: "A-ASSOCIATE-RJ (result, source, reason)"
        expected = await _python_failure(server.port, "SOMEONE-ELSE")
        assert expected.startswith("A-ASSOCIATE-RJ (")
        assert list(samples) == [expected]
    finally:
        await server.close()


@needs_cc
@pytest.mark.parametrize(
    ("status", "message_id", "expected"),
    [(0x0110, 1, "C-ECHO status 272"), (0x0000, 2, "C-ECHO-RSP answers message ID 2, not 1")],
)
async def test_c_generator_a_bad_echo_response_fails_every_cycle(
    prepared: list[str], status: int, message_id: int, expected: str
) -> None:
    async def answer(assoc: aiodicom.Association, msg: Message) -> None:
        await assoc.send(msg.context_id, echo_rsp(message_id, status, msg.command.affected_sop_class_uid))

    server = await _server(handlers={C_ECHO_RQ: answer})
    try:
        samples = _only_errors(await _cell(prepared, server.port))
        assert list(samples) == [expected]
        assert await _python_failure(server.port) == expected
    finally:
        await server.close()


@needs_cc
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("close after AC", "connection closed in state 1"),
        ("close after RSP", "connection closed in state 2"),
        ("A-ABORT", "A-ABORT source 2 reason 0"),
        ("AC without context 1", "A-ASSOCIATE-AC without presentation context 1"),
        ("context refused", "Verification context not accepted (result 3)"),
        ("RP first", "PDU type 6 instead of A-ASSOCIATE-AC"),
        ("data PDV", "unexpected PDV (context 1, control 0x02)"),
        ("not a C-ECHO-RSP", "expected C-ECHO-RSP, got command field 48"),
        ("truncated", "truncated command set"),
        ("PDU after RP", "PDU type 6 after A-RELEASE-RP"),
        ("huge PDU", "PDU length 16777216 above 1048576"),
    ],
)
async def test_c_generator_bad_peers(prepared: list[str], case: str, expected: str) -> None:
    ac, rsp, rp = null_scp.canned_replies()
    body = bytearray(ac[6:])
    off = 68
    while body[off] != 0x21:  # the AC's presentation context item
        off += 4 + int.from_bytes(body[off + 2 : off + 4], "big")
    abort = bytes([7, 0, 0, 0, 0, 4, 0, 0, 2, 0])
    good = {0x01: (ac, False), 0x04: (rsp, False), 0x05: (rp, False)}
    if case == "close after AC":
        script = {0x01: (ac, True)}
    elif case == "close after RSP":
        script = {0x01: (ac, False), 0x04: (rsp, True)}
    elif case == "A-ABORT":
        script = {0x01: (ac, False), 0x04: (abort, True)}
    elif case in ("AC without context 1", "context refused"):
        if case == "AC without context 1":
            body[off + 4] = 3  # the item answers context 3
        else:
            body[off + 6] = 3  # abstract syntax not supported (PS3.8 Table 9-18)
        script = {**good, 0x01: (ac[:6] + bytes(body), True)}
    elif case == "RP first":
        script = {0x01: (rp, True)}
    elif case == "data PDV":
        script = {**good, 0x04: (_pdata((0x02, b"\0\0")), True)}
    elif case == "not a C-ECHO-RSP":
        script = {**good, 0x04: (_pdata((0x03, encode_command(echo_rq(1)))), True)}
    elif case == "truncated":
        script = {**good, 0x04: (_pdata((0x03, encode_command(echo_rsp(1, 0))[:-1])), True)}
    elif case == "PDU after RP":
        script = {**good, 0x05: (rp + rp, True)}
    else:  # a header announcing a 16 MiB body
        script = {0x01: (bytes([2, 0, 1, 0, 0, 0]), True)}
    server = await _scripted(script)
    try:
        samples = _only_errors(await _cell(prepared, _port(server)))
        assert all(msg.startswith(expected) for msg in samples), samples
        if case != "huge PDU":  # (raw_client has no size guard)
            python = await _python_failure(_port(server))
            assert python.startswith(expected), python
    finally:
        server.close()


@needs_cc
async def test_c_generator_timeouts_and_refused_connects(prepared: list[str]) -> None:
    # a listener that never accepts: the kernel completes the handshake, nobody answers
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(128)
        port = mute.getsockname()[1]
        samples = _only_errors(await _cell(prepared, port, timeout=0.1))
        assert list(samples) == ["timeout: no reply within 0.1 s (state 0)"]
    # closed now: nothing listens on that port
    samples = _only_errors(await _cell(prepared, port))
    assert list(samples) == [f"connect to 127.0.0.1:{port}: Connection refused"]


@needs_cc
def test_c_generator_too_many_clients_for_the_fd_limit(prepared: list[str]) -> None:
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    argv = c_client.command(prepared, "127.0.0.1", 1, 500, 0.0, 0.1, 1.0)
    proc = subprocess.run(argv, preexec_fn=low_limit, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "500 clients need 516 file descriptors; RLIMIT_NOFILE allows 64" in proc.stderr


@pytest.mark.parametrize("cc", ["/nonexistent/cc", "false"])
def test_c_generator_without_a_working_compiler(tmp_path: Path, cc: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.c_client", "--port", "1", "--duration", "0.1"],
        cwd=ROOT, env=python_env({"CC": cc}), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("c_client: "), lines
    assert ("no C compiler" if cc.startswith("/") else "failed (status 1)") in lines[0]


def test_c_generator_output_parsing() -> None:
    parsed = c_client.parse_output([
        "STATS cycles_total=5 errors=1 errors_total=2 stragglers=0 warmup_effective_s=1.25",
        "ERR 2 connection closed in state 1: EOF",
        "LAT 0.500000",
        "LAT 0.250000",
        "END",
    ])  # fmt: skip
    assert parsed["stats"]["cycles_total"] == 5 and parsed["stats"]["warmup_effective_s"] == 1.25
    assert parsed["error_samples"] == {"connection closed in state 1: EOF": 2}
    assert parsed["latencies_ms"] == [0.5, 0.25]
    with pytest.raises(c_client.CellError, match="incomplete"):
        c_client.parse_output(["STATS cycles_total=5", "LAT 1.0"])  # cut short: no END
    with pytest.raises(c_client.CellError, match="unexpected line"):
        c_client.parse_output(["Segmentation fault", "END"])


def test_runner_generator_option(monkeypatch: pytest.MonkeyPatch) -> None:
    parse = runner.build_parser().parse_args
    assert runner.config_from_args(parse(["--generator", "python", "-q"])).generator == "python"
    assert runner.config_from_args(parse(["-q"])).generator == runner.default_generator()
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert runner.default_generator() == "python"
    assert runner.config_from_args(parse(["-q"])).generator == "python"
    with pytest.raises(SystemExit, match="no C compiler"):
        runner.config_from_args(parse(["--generator", "c", "-q"]))


def test_runner_with_the_python_generator(tmp_path: Path) -> None:
    pytest.importorskip("uvloop")
    cfg = runner.Config(clients=[1], duration=0.2, warmup=0.05, pause=0.05, sides=["scp"],
                        impls={"ceiling-python"}, generator="python", json_path=str(tmp_path / "r.json"))  # fmt: skip
    report = runner.run(cfg)
    row = report.row("scp", "ceiling-python", 1)
    assert row is not None and row.failure is None and row.cycles > 0 and row.errors_total == 0
    assert row.runs[0]["loadgen"] == "raw"  # benchmarks.raw_client's result
    assert report.meta["config"]["generator"] == "python"
    text = runner.format_report(report)
    assert "fixed load generator: benchmarks.raw_client, Python on uvloop" in text
