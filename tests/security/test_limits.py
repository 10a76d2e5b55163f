"""Resource limits and timeouts: nothing a peer does (or fails to do) hangs the server."""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

import aiodicom
from aiodicom.aio.association import Association
from aiodicom.aio.errors import AssociationRejectedError, DIMSETimeout
from aiodicom.dimse import commands as C
from aiodicom.dimse.commands import echo_rq, encode_command
from aiodicom.dimse.fragments import Message
from aiodicom.part10 import Part10Writer
from aiodicom.services.store import serve_store, store_to_directory
from aiodicom.ul import pdu as P
from tests._sync import wait_no_associations, wait_until

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"
CT = "1.2.840.10008.5.1.4.1.1.2"
DEADLINE = 10.0
INVALID_PARAMETER = 6


def ct_file() -> str:
    path = get_testdata_file("CT_small.dcm")
    if path is None:  # pragma: no cover
        pytest.skip("pydicom test file CT_small.dcm unavailable")
    return str(path)


def request_pdu(max_length: int = 16384) -> bytes:
    return P.AAssociateRQ(
        "AIODICOM",
        "RAWPEER",
        [P.PresentationContextRQ(1, VERIFICATION, [IMPLICIT])],
        P.UserInformation(max_length=max_length, implementation_class_uid="1.2.3.4"),
    ).encode()


def p_data(pdvs: bytes) -> bytes:
    return struct.pack(">BBL", P.P_DATA_TF, 0, len(pdvs)) + pdvs


def echo_pdu(message_id: int) -> bytes:
    cmd = encode_command(echo_rq(message_id))
    return p_data(struct.pack(">LBB", len(cmd) + 2, 1, 0x03) + cmd)


async def read_pdu(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    header = await asyncio.wait_for(reader.readexactly(6), DEADLINE)
    pdu_type, _res, length = struct.unpack(">BBL", header)
    return pdu_type, await asyncio.wait_for(reader.readexactly(length), DEADLINE)


async def raw_associate(port: int, sock: socket.socket | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if sock is not None:
        reader, writer = await asyncio.open_connection(sock=sock)
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request_pdu())
    pdu_type, _ = await read_pdu(reader)
    assert pdu_type == P.A_ASSOCIATE_AC
    return reader, writer


async def read_until_eof(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    async with asyncio.timeout(DEADLINE):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


async def still_serving(server: aiodicom.Server) -> None:
    async with aiodicom.associate("127.0.0.1", server.port) as assoc:
        assert await assoc.echo() == 0


@pytest.fixture
async def make_server() -> AsyncIterator[object]:
    servers: list[aiodicom.Server] = []

    async def make(**kwargs: object) -> aiodicom.Server:
        srv = aiodicom.Server("AIODICOM", **kwargs)  # type: ignore[arg-type]
        await srv.start("127.0.0.1", 0)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        await srv.close(timeout=1.0)


# ----------------------------------------------------------------- limits


async def test_max_associations_rejects_transient(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(max_associations=2)
    a1 = await aiodicom.associate("127.0.0.1", server.port)
    a2 = await aiodicom.associate("127.0.0.1", server.port)
    try:
        for _ in range(3):
            async with asyncio.timeout(DEADLINE):  # never a hang
                with pytest.raises(AssociationRejectedError) as err:
                    await aiodicom.associate("127.0.0.1", server.port)
            rj = err.value.reject
            assert (rj.result, rj.source, rj.reason) == (2, 3, 2)  # transient, presentation, local limit
        assert await a1.echo() == 0 and await a2.echo() == 0
    finally:
        await a1.release()
    await a2.release()
    await wait_no_associations(server)
    await still_serving(server)


async def test_oversized_p_data_is_aborted(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(max_pdu_length=16384)
    reader, writer = await raw_associate(server.port)
    try:
        # A P-DATA-TF whose length exceeds our announced maximum: rejected on
        # the header alone (the body is never buffered).
        writer.write(struct.pack(">BBL", P.P_DATA_TF, 0, 16385) + b"\x00" * 64)
        data = await read_until_eof(reader)
    finally:
        writer.close()
    assert data[:1] == bytes([P.A_ABORT]) and len(data) == 10, data
    assert data[8:10] == bytes([2, INVALID_PARAMETER])  # source: provider, reason: invalid PDU parameter
    await wait_no_associations(server)
    await still_serving(server)
    # Our SCU honours the peer's maximum: a 39 KB instance goes out in 16 KB PDUs.
    serve_store(server, lambda req: _ok())
    async with aiodicom.associate("127.0.0.1", server.port, contexts=[CT]) as assoc:
        assert assoc.peer_max_pdu == 16384
        assert (await assoc.store(ct_file())).is_success


async def _ok() -> int:
    return 0


async def test_artim_closes_silent_connection(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(artim_timeout=0.3)
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    start = loop.time()
    try:
        data = await read_until_eof(reader)  # we say nothing
    finally:
        writer.close()
    assert data == b""
    assert loop.time() - start < 5.0
    await wait_no_associations(server)


async def test_artim_closes_after_release_when_the_requestor_stays(make_server) -> None:  # type: ignore[no-untyped-def]
    # PS3.8 9.2 (AR-4): after its A-RELEASE-RP the acceptor waits for the
    # requestor to close, under ARTIM, and closes itself when it expires.
    # (tests/aio/test_artim_timer.py drives the timer on a controlled clock.)
    server = await make_server(artim_timeout=0.3)
    reader, writer = await raw_associate(server.port)
    try:
        writer.write(P.AReleaseRQ().encode())
        ptype, _body = await read_pdu(reader)
        assert ptype == P.A_RELEASE_RP
        data = await read_until_eof(reader)  # we do not close: ARTIM must
    finally:
        writer.close()
    assert data == b""
    await wait_no_associations(server)


async def test_artim_after_partial_request(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(artim_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request_pdu()[:20])  # a header and then nothing
        data = await read_until_eof(reader)
    finally:
        writer.close()
    assert data in (b"",) or data[:1] == bytes([P.A_ABORT])
    await wait_no_associations(server)


async def test_idle_association_is_aborted(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(network_timeout=0.3)
    async with asyncio.timeout(DEADLINE):
        assoc = await aiodicom.associate("127.0.0.1", server.port)
        assert await assoc.echo() == 0
        await assoc.wait_closed()  # idle: the server aborts it
    assert assoc.abort_info is not None and assoc.abort_info.by_peer
    await wait_no_associations(server)
    await still_serving(server)


async def test_dimse_timeout_on_silent_peer(make_server) -> None:  # type: ignore[no-untyped-def]
    never = asyncio.Event()

    async def black_hole(assoc: Association, msg: Message) -> None:
        await never.wait()  # never answers

    server = await make_server(handlers={C.C_ECHO_RQ: black_hole})
    async with asyncio.timeout(DEADLINE):
        assoc = await aiodicom.associate("127.0.0.1", server.port, dimse_timeout=0.3)
        with pytest.raises(DIMSETimeout):
            await assoc.echo()
        assoc.abort()
        await assoc.wait_closed()
    await wait_no_associations(server)  # the stuck handler was cancelled with its association


async def test_slow_reader_stops_server_reading(make_server) -> None:  # type: ignore[no-untyped-def]
    """A peer that sends requests but never reads the answers: the server stops reading."""
    big = b"\x00" * (256 * 1024)

    async def big_answer(assoc: Association, msg: Message) -> None:
        await assoc.send(msg.context_id, C.response_to(msg.command, 0), [big])

    server = await make_server(handlers={C.C_ECHO_RQ: big_answer})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    _reader, writer = await raw_associate(server.port, sock)
    try:
        [srv_assoc] = list(server.associations)
        transport = srv_assoc.transport
        assert transport is not None
        sent = len(request_pdu())
        for batch in range(20):
            data = b"".join(echo_pdu(batch * 10 + i + 1) for i in range(10))
            writer.write(data)
            await writer.drain()
            sent += len(data)
            # no event for either: the server read the batch, or stopped reading
            await wait_until(
                lambda sent=sent: srv_assoc.bytes_received >= sent or not transport.is_reading(),
                DEADLINE, f"server read batch {batch} or paused reading",
            )
            if not transport.is_reading():
                break
        await wait_until(lambda: not transport.is_reading(), DEADLINE, "server paused reading")
        # Bounded: handlers wait for the transport instead of queueing more.
        running = len(srv_assoc._running)
        assert 16 <= running <= 64, running
        buffered = transport.get_write_buffer_size()
        assert buffered <= running * (len(big) + 64 * 1024), buffered
        received = srv_assoc.bytes_received
        # The server keeps serving others meanwhile (real I/O through its
        # loop), and the stalled association stays paused all along.
        await still_serving(server)
        assert not transport.is_reading()
        assert len(srv_assoc._running) == running  # nothing new was read
        assert srv_assoc.bytes_received == received
    finally:
        writer.close()
    await wait_no_associations(server)
    await still_serving(server)


async def test_disk_full_answers_a700_and_keeps_serving(
    make_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    server = await make_server()
    serve_store(server, store_to_directory(tmp_path / "in", fsync=False))
    real_write = Part10Writer.write

    def disk_full(self: Part10Writer, buf: object) -> None:
        self.abort()
        raise OSError(errno.ENOSPC, "No space left on device")

    async with aiodicom.associate("127.0.0.1", server.port, contexts=[CT]) as assoc:
        monkeypatch.setattr(Part10Writer, "write", disk_full)
        status = await assoc.store(ct_file())
        assert int(status) == 0xA700
        monkeypatch.setattr(Part10Writer, "write", real_write)
        assert (await assoc.store(ct_file())).is_success  # same association keeps working
    files = [p for p in (tmp_path / "in").rglob("*") if p.is_file()]
    assert len(files) == 1 and not files[0].name.startswith("."), files  # no temp file left behind
    await still_serving(server)


async def test_large_dataset_to_plain_handler_is_spooled_not_held(make_server) -> None:  # type: ignore[no-untyped-def]
    """A data set past ``max_dataset_in_memory`` reaches a plain handler intact, from a file."""
    from pydicom import dcmread

    server = await make_server(max_dataset_in_memory=4096)
    seen: list[tuple[int, object, bytes]] = []

    async def handler(req) -> int:  # type: ignore[no-untyped-def]
        frags = req.message.dataset
        seen.append((len(frags), req.dataset.PatientName, req.dataset.PixelData))
        return 0x0000

    serve_store(server, handler)
    async with aiodicom.associate("127.0.0.1", server.port, contexts=[CT], max_pdu_length=4096) as assoc:
        assert (await assoc.store(ct_file())).is_success
    original = dcmread(ct_file())
    assert len(seen) == 1
    n_fragments, name, pixels = seen[0]
    assert n_fragments == 1  # one mapped file, not the many received fragments
    assert name == original.PatientName and pixels == original.PixelData
