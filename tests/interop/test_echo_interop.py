"""C-ECHO interoperability with pynetdicom and DCMTK, both directions.

pynetdicom is blocking: its side runs in ``asyncio.to_thread`` while our
Server or client runs in the test's event loop.  DCMTK tools run as
subprocesses (found with ``require_dcmtk``, never via PATH, because
pynetdicom installs Python apps with the same names).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import aiodicom
from aiodicom.ul import pdu as P
from tests.conftest import dcmtk_env, free_port, require_dcmtk
from tests.interop._pynetdicom_sync import pause_reactor

pynetdicom = pytest.importorskip("pynetdicom")
from pynetdicom import AE, build_role, evt
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.pdu_primitives import UserIdentityNegotiation

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
DEADLINE = 20.0
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def _quiet_pynetdicom() -> Iterator[None]:
    logger = logging.getLogger("pynetdicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


async def start(server: aiodicom.Server) -> aiodicom.Server:
    await server.start("127.0.0.1", 0)
    return server


@pytest.fixture
async def server() -> AsyncIterator[aiodicom.Server]:
    srv = await start(aiodicom.Server("AIODICOM"))
    try:
        yield srv
    finally:
        await srv.close(timeout=1.0)


# --------------------------------------------------------------------------
# pynetdicom SCU -> aiodicom Server


@dataclass
class PynOutcome:
    established: bool
    # (result, source, reason) of an A-ASSOCIATE-RJ pynetdicom received
    rejection: tuple[int, int, int] | None = None
    statuses: tuple[int, ...] = ()
    identity_response: bytes | None = None
    roles: dict[str, tuple[bool, bool]] | None = None
    accepted: tuple[str, ...] = ()


def pynetdicom_scu(
    port: int,
    *,
    called: str = "AIODICOM",
    echoes: int = 1,
    contexts: tuple[str, ...] = (VERIFICATION,),
    ext_neg: list[Any] | None = None,
) -> PynOutcome:
    ae = AE(ae_title="PYNSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for uid in contexts:
        ae.add_requested_context(uid)
    rejections: list[tuple[int, int, int]] = []

    def on_pdu(event: Any) -> None:
        pdu = event.pdu
        if isinstance(pdu, A_ASSOCIATE_RJ):
            rejections.append((int(pdu.result), int(pdu.source), int(pdu.reason_diagnostic)))

    # The RJ is recorded as pynetdicom decodes it: a fast RJ can make
    # pynetdicom's requestor see the closed socket first and report an abort
    # instead of ``is_rejected`` (a pynetdicom race, not a protocol matter).
    assoc = ae.associate(
        "127.0.0.1", port, ae_title=called, ext_neg=ext_neg, evt_handlers=[(evt.EVT_PDU_RECV, on_pdu)]
    )
    try:
        if not assoc.is_established:
            return PynOutcome(False, rejection=rejections[0] if rejections else None)
        statuses = []
        if VERIFICATION in contexts:
            for _ in range(echoes):
                # pynetdicom's reactor race (see _pynetdicom_sync): pause it for real first.
                pause_reactor(assoc)
                statuses.append(int(assoc.send_c_echo().Status))
        ident = assoc.acceptor.user_identity
        roles = {str(cx.abstract_syntax): (bool(cx.as_scu), bool(cx.as_scp)) for cx in assoc.accepted_contexts}
        out = PynOutcome(
            True,
            statuses=tuple(statuses),
            identity_response=None if ident is None else ident.server_response,
            roles=roles,
            accepted=tuple(str(cx.abstract_syntax) for cx in assoc.accepted_contexts),
        )
        assoc.release()
        assert assoc.is_released
        return out
    finally:
        if assoc.is_established:
            assoc.abort()
        ae.shutdown()


async def test_pynetdicom_echo_to_our_server(server: aiodicom.Server) -> None:
    outcome = await asyncio.wait_for(asyncio.to_thread(pynetdicom_scu, server.port, echoes=3), DEADLINE)
    assert outcome.established
    assert outcome.statuses == (0, 0, 0)


async def test_pynetdicom_rejected_by_strict_server() -> None:
    srv = await start(aiodicom.Server("AIODICOM", strict_called_ae=True))
    try:
        outcome = await asyncio.wait_for(asyncio.to_thread(pynetdicom_scu, srv.port, called="SOMEONE"), DEADLINE)
        assert not outcome.established
        assert outcome.rejection == (1, 1, 7)
        outcome = await asyncio.wait_for(asyncio.to_thread(pynetdicom_scu, srv.port), DEADLINE)
        assert outcome.statuses == (0,)
    finally:
        await srv.close(timeout=1.0)


async def test_pynetdicom_role_selection() -> None:
    srv = await start(
        aiodicom.Server(
            "AIODICOM",
            contexts={VERIFICATION: [EXPLICIT, IMPLICIT], CT: [EXPLICIT, IMPLICIT], MR: [EXPLICIT, IMPLICIT]},
            scu_role_classes=[CT],
        )
    )
    try:
        roles = [build_role(CT, scp_role=True), build_role(MR, scp_role=True)]
        outcome = await asyncio.wait_for(
            asyncio.to_thread(pynetdicom_scu, srv.port, contexts=(VERIFICATION, CT, MR), ext_neg=roles), DEADLINE
        )
        assert outcome.established and outcome.statuses == (0,)
        assert outcome.roles is not None
        # pynetdicom's view of its own (requestor) roles
        assert outcome.roles[CT] == (False, True)
        assert outcome.roles[VERIFICATION] == (True, False)
        # MR: SCP role proposed, we cannot be the SCU -> not usable
        assert MR not in outcome.accepted
    finally:
        await srv.close(timeout=1.0)


def _identity(user: bytes, password: bytes, positive: bool = True) -> UserIdentityNegotiation:
    item = UserIdentityNegotiation()
    item.user_identity_type = 2
    item.primary_field = user
    item.secondary_field = password
    item.positive_response_requested = positive
    return item


async def test_pynetdicom_user_identity() -> None:
    seen: list[P.UserIdentityRQ] = []

    def check(item: P.UserIdentityRQ) -> tuple[bool, bytes | None]:
        seen.append(item)
        ok = (item.primary, item.secondary) == (b"alice", b"secret")
        return ok, (b"tok" if ok else None)

    srv = await start(aiodicom.Server("AIODICOM", identity_check=check))
    try:
        good = await asyncio.wait_for(
            asyncio.to_thread(pynetdicom_scu, srv.port, ext_neg=[_identity(b"alice", b"secret")]), DEADLINE
        )
        assert good.established and good.statuses == (0,)
        assert good.identity_response == b"tok"
        assert seen[-1].identity_type == 2 and seen[-1].positive_response_requested

        bad = await asyncio.wait_for(
            asyncio.to_thread(pynetdicom_scu, srv.port, ext_neg=[_identity(b"alice", b"guess")]), DEADLINE
        )
        assert not bad.established
        assert bad.rejection is not None and bad.rejection[0] == 1  # permanent

        no_positive = await asyncio.wait_for(
            asyncio.to_thread(pynetdicom_scu, srv.port, ext_neg=[_identity(b"alice", b"secret", positive=False)]),
            DEADLINE,
        )
        assert no_positive.established and no_positive.identity_response is None
        assert len(seen) == 3
    finally:
        await srv.close(timeout=1.0)


# --------------------------------------------------------------------------
# aiodicom SCU -> pynetdicom SCP


async def test_our_echo_to_pynetdicom_scp() -> None:
    calls: list[tuple[str, str]] = []
    status_to_return = [0x0000]

    def on_echo(event: Any) -> int:
        calls.append((event.assoc.requestor.ae_title.strip(), event.assoc.acceptor.ae_title.strip()))
        return status_to_return[0]

    ae = AE(ae_title="PYNSCP")
    ae.add_supported_context(VERIFICATION, [EXPLICIT, IMPLICIT])
    scp = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_ECHO, on_echo)])
    try:
        port = int(scp.server_address[1])
        async with aiodicom.associate("127.0.0.1", port, called_ae="PYNSCP", calling_ae="AIOSCU") as assoc:
            assert await asyncio.wait_for(assoc.echo(), DEADLINE) == 0x0000
            status_to_return[0] = 0x0211
            assert await asyncio.wait_for(assoc.echo(), DEADLINE) == 0x0211
        assert assoc.abort_info is None
        assert calls == [("AIOSCU", "PYNSCP")] * 2
    finally:
        await asyncio.to_thread(scp.shutdown)
        ae.shutdown()


async def test_our_roles_against_pynetdicom_scp() -> None:
    ae = AE(ae_title="PYNSCP")
    ae.add_supported_context(VERIFICATION)
    ae.add_supported_context(CT, scu_role=True, scp_role=True)
    scp = ae.start_server(("127.0.0.1", 0), block=False)
    try:
        port = int(scp.server_address[1])
        async with aiodicom.associate(
            "127.0.0.1", port, contexts=[VERIFICATION, CT], roles={CT: (False, True)}
        ) as assoc:
            ct = [c for c in assoc.contexts.values() if c.abstract_syntax == CT]
            assert len(ct) == 1
            assert (ct[0].requestor_scu, ct[0].requestor_scp) == (False, True)
            assert assoc.find_context(CT, as_scu=False) is not None
            assert assoc.find_context(CT) is None  # we may not send CT requests
            assert await asyncio.wait_for(assoc.echo(), DEADLINE) == 0
    finally:
        await asyncio.to_thread(scp.shutdown)
        ae.shutdown()


# --------------------------------------------------------------------------
# DCMTK


async def run_tool(*argv: str, timeout: float = DEADLINE) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dcmtk_env(),
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_dcmtk_echoscu_to_our_server(server: aiodicom.Server) -> None:
    echoscu = require_dcmtk("echoscu")
    rc, out = await run_tool(echoscu, "-aet", "DCMTKSCU", "-aec", "AIODICOM", "--repeat", "3", "127.0.0.1", str(server.port))
    assert rc == 0, out
    assert server.total_associations == 1


async def test_dcmtk_echoscu_verbose_shows_success(server: aiodicom.Server) -> None:
    echoscu = require_dcmtk("echoscu")
    rc, out = await run_tool(echoscu, "-v", "-aec", "AIODICOM", "127.0.0.1", str(server.port))
    assert rc == 0, out
    assert "Association Accepted" in out
    assert "Received Echo Response (Success)" in out


async def test_dcmtk_echoscu_wrong_called_ae_on_strict_server() -> None:
    echoscu = require_dcmtk("echoscu")
    srv = await start(aiodicom.Server("AIODICOM", strict_called_ae=True))
    try:
        rc, out = await run_tool(echoscu, "-aec", "WRONG", "127.0.0.1", str(srv.port))
        assert rc != 0
        assert "Called AE Title Not Recognized" in out, out
        rc, out = await run_tool(echoscu, "-aec", "AIODICOM", "127.0.0.1", str(srv.port))
        assert rc == 0, out
    finally:
        await srv.close(timeout=1.0)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], deadline: float = DEADLINE) -> None:
    """Wait until ``port`` accepts connections or ``proc`` exits (external process start-up).

    storescp says nothing when it starts listening (not even with ``-d``),
    so readiness is a condition polled with a deadline; between attempts we
    wait on the process itself, so a storescp that dies is reported at once
    instead of after the deadline.
    """
    end = time.monotonic() + deadline
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"port {port} never accepted connections") from None
        try:
            proc.wait(timeout=min(0.05, remaining))
        except subprocess.TimeoutExpired:
            continue  # still starting: try the port again
        raise AssertionError(f"process exited early with {proc.returncode}")


@pytest.fixture
def dcmtk_storescp(tmp_path: Any) -> Iterator[int]:
    """DCMTK storescp (Verification + Storage SCP, AE title STORESCP) on a free port."""
    storescp = require_dcmtk("storescp")
    port = free_port()
    out_dir = tmp_path / "received"
    out_dir.mkdir()
    proc = subprocess.Popen(
        [storescp, "-aet", "STORESCP", "-od", str(out_dir), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dcmtk_env(),
    )
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=DEADLINE)


def test_our_cli_echo_to_dcmtk_storescp(dcmtk_storescp: int) -> None:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "aiodicom", "echo", "127.0.0.1", str(dcmtk_storescp), "--aec", "STORESCP", "--repeat", "2"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=DEADLINE,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "success" in proc.stdout
    assert "Traceback" not in proc.stderr


async def test_our_echo_to_dcmtk_storescp(dcmtk_storescp: int) -> None:
    async with aiodicom.associate("127.0.0.1", dcmtk_storescp, called_ae="STORESCP") as assoc:
        assert [await asyncio.wait_for(assoc.echo(), DEADLINE) for _ in range(5)] == [0] * 5
    assert assoc.abort_info is None
