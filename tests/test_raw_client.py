"""The lean load generator of the SCP cycle benchmark (``benchmarks/raw_client.py``).

It is only useful if it is as strict as a real SCU: every reply it gets is
checked, and anything but a clean associate / C-ECHO success / release is a
failed cycle.  Real sockets, aiodicom's server as the peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from pathlib import Path

import pytest

import aiodicom
from aiodicom.dimse.commands import C_ECHO_RQ, echo_rsp, encode_command
from aiodicom.dimse.fragments import Message
from aiodicom.services.echo import handle_echo

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import null_scp
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



async def test_cycles_over_ipv6() -> None:
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
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
