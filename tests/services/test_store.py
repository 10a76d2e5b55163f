"""C-STORE SCU and SCP: aiodicom against aiodicom over loopback.

Every async test runs on asyncio and on uvloop (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import errno
import gc
import hashlib
import logging
import os
import socket
import struct
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

import aiodicom
from aiodicom import cli
from aiodicom.dataset import EncodedDataset
from aiodicom.dimse.commands import C_STORE_RQ, Command
from aiodicom.part10 import Part10Writer, read_part10_dataset, read_part10_info
from aiodicom.services import store as store_mod
from aiodicom.services.store import (
    HANDLER_FAILED,
    ServiceError,
    StoreRequest,
    serve_store,
    store_response,
    store_to_directory,
)
from aiodicom.uids import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"
NATIVE = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian]
NATIVE_FILES = {
    ExplicitVRLittleEndian: "MR_small.dcm",
    ImplicitVRLittleEndian: "MR_small_implicit.dcm",
    ExplicitVRBigEndian: "MR_small_bigendian.dcm",
    DeflatedExplicitVRLittleEndian: "image_dfl.dcm",
}


def sample(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:  # pragma: no cover
        pytest.skip(f"pydicom test file {name} unavailable")
    return str(path)


@pytest.fixture(autouse=True)
def _no_unexpected_errors(caplog: pytest.LogCaptureFixture) -> Any:
    """No asyncio 'never retrieved' noise; error logs only where a test expects them."""
    caplog.set_level(logging.INFO)
    yield
    gc.collect()
    bad = [
        r
        for when in ("setup", "call", "teardown")
        for r in caplog.get_records(when)  # type: ignore[arg-type]
        if r.levelno >= logging.ERROR and r.name.startswith("asyncio")
    ]
    assert not bad, [r.getMessage() for r in bad]


class Recorder:
    """A storage handler that keeps the requests (and their bytes) it saw."""

    def __init__(self, status: int = 0) -> None:
        self.status = status
        self.requests: list[StoreRequest] = []
        self.data: list[bytes] = []

    async def __call__(self, req: StoreRequest) -> int:
        assert not req.encoded.is_decoded  # lazy: nothing decoded unless asked
        self.requests.append(req)
        self.data.append(req.encoded.tobytes())
        return self.status


async def start_server(
    handler: Any, *, sop_classes: Any = None, transfer_syntaxes: Any = None, max_pdu: int = 262144
) -> aiodicom.Server:
    server = aiodicom.Server("STORESCP", max_pdu_length=max_pdu, dimse_timeout=10.0)
    kwargs: dict[str, Any] = {}
    if sop_classes is not None:
        kwargs["sop_classes"] = sop_classes
    if transfer_syntaxes is not None:
        kwargs["transfer_syntaxes"] = transfer_syntaxes
    serve_store(server, handler, **kwargs)
    await server.start("127.0.0.1", 0)
    return server


def connect(server: aiodicom.Server, contexts: list[Any], **kw: Any) -> aiodicom.associate:
    return aiodicom.associate(
        "127.0.0.1", server.port, called_ae="STORESCP", calling_ae="STORESCU", contexts=contexts,
        dimse_timeout=10.0, **kw,
    )


@pytest.fixture
async def recorder_server() -> AsyncIterator[tuple[aiodicom.Server, Recorder]]:
    rec = Recorder()
    server = await start_server(rec)
    try:
        yield server, rec
    finally:
        await server.close(timeout=1.0)


def dataset_bytes(path: str) -> bytes:
    return read_part10_dataset(path)[1].tobytes()


# ------------------------------------------------------------------ SCU: Dataset


@pytest.mark.parametrize("ts", NATIVE)
async def test_store_dataset_in_each_native_syntax(ts: str) -> None:
    rec = Recorder()
    server = await start_server(rec, sop_classes=[CT], transfer_syntaxes=[ts])
    try:
        ds = dcmread(sample("CT_small.dcm"))
        async with connect(server, [(CT, NATIVE)]) as assoc:
            status = await assoc.store(ds)
            assert status == 0 and isinstance(status, aiodicom.Status) and status.is_success
        (req,) = rec.requests
        assert req.transfer_syntax == ts
        assert req.sop_class_uid == CT and req.sop_instance_uid == ds.SOPInstanceUID
        assert req.calling_ae == "STORESCU" and req.called_ae == "STORESCP"
        assert req.peer_address is not None and req.peer_address[0] == "127.0.0.1"
        got = req.dataset
        assert got.PatientName == ds.PatientName
        assert (got.pixel_array == ds.pixel_array).all()  # byte order handled for BE
    finally:
        await server.close(timeout=1.0)


async def test_store_dataset_needs_sop_uids(recorder_server: Any) -> None:
    server, rec = recorder_server
    async with connect(server, [CT, VERIFICATION]) as assoc:
        with pytest.raises(ValueError, match="SOPClassUID|SOPInstanceUID"):
            await assoc.store(Dataset())
        assert await assoc.echo() == 0


async def test_store_dataset_without_context_raises(recorder_server: Any) -> None:
    server, rec = recorder_server
    ds = dcmread(sample("CT_small.dcm"))
    async with connect(server, [MR, VERIFICATION]) as assoc:
        with pytest.raises(aiodicom.NoAcceptedContext, match=CT):
            await assoc.store(ds)
        assert await assoc.echo() == 0
    assert rec.requests == []


async def test_store_dataset_priority_and_move_originator(recorder_server: Any) -> None:
    server, rec = recorder_server
    ds = dcmread(sample("CT_small.dcm"))
    async with connect(server, [CT]) as assoc:
        assert await assoc.store(ds, priority=1, move_originator=("MOVESCU", 77)) == 0
    (req,) = rec.requests
    assert req.priority == 1
    assert req.move_originator == ("MOVESCU", 77)


# ------------------------------------------------------------------ SCU: files


@pytest.mark.parametrize("ts", NATIVE)
async def test_store_file_sends_stored_bytes(ts: str, recorder_server: Any) -> None:
    server, rec = recorder_server
    path = sample(NATIVE_FILES[ts])
    info = read_part10_info(path)
    assert info.transfer_syntax == ts
    async with connect(server, [(info.sop_class_uid, [ts])]) as assoc:
        assert await assoc.store(path) == 0
        assert await assoc.store(Path(path)) == 0  # PathLike too
    assert rec.requests[0].transfer_syntax == ts
    assert rec.data[0] == dataset_bytes(path)  # not re-encoded
    assert rec.data[1] == rec.data[0]


@pytest.mark.parametrize("ts", [ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian])
async def test_store_file_reencoded_to_other_native_syntax(ts: str) -> None:
    rec = Recorder()
    path = sample(NATIVE_FILES[ts])
    info = read_part10_info(path)
    server = await start_server(rec, sop_classes=[info.sop_class_uid], transfer_syntaxes=[ExplicitVRLittleEndian])
    try:
        async with connect(server, [(info.sop_class_uid, [ts, ExplicitVRLittleEndian])]) as assoc:
            assert await assoc.store(path) == 0
    finally:
        await server.close(timeout=1.0)
    (req,) = rec.requests
    assert req.transfer_syntax == ExplicitVRLittleEndian
    original = dcmread(path)
    got = req.dataset
    assert got.SOPInstanceUID == original.SOPInstanceUID
    assert (got.pixel_array == original.pixel_array).all()


async def test_store_native_file_into_big_endian_context() -> None:
    rec = Recorder()
    path = sample("MR_small.dcm")
    server = await start_server(rec, sop_classes=[MR], transfer_syntaxes=[ExplicitVRBigEndian])
    try:
        async with connect(server, [(MR, [ExplicitVRLittleEndian, ExplicitVRBigEndian])]) as assoc:
            assert await assoc.store(path) == 0
    finally:
        await server.close(timeout=1.0)
    (req,) = rec.requests
    assert req.transfer_syntax == ExplicitVRBigEndian
    assert (req.dataset.pixel_array == dcmread(path).pixel_array).all()


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "JPEG2000.dcm"])
async def test_store_compressed_file_byte_identical(name: str, tmp_path: Path) -> None:
    path = sample(name)
    info = read_part10_info(path)
    server = await start_server(store_to_directory(tmp_path / "in", fsync=False))
    try:
        async with connect(server, [(info.sop_class_uid, [info.transfer_syntax])]) as assoc:
            assert await assoc.store(path) == 0
    finally:
        await server.close(timeout=1.0)
    stored = tmp_path / "in" / f"{info.sop_instance_uid}.dcm"
    got_info, got = read_part10_dataset(stored)
    assert got_info.transfer_syntax == info.transfer_syntax
    assert got_info.sop_class_uid == info.sop_class_uid
    assert got.tobytes() == dataset_bytes(path)
    assert dcmread(stored).PixelData == dcmread(path).PixelData


async def test_store_compressed_file_to_uncompressed_context_is_refused(recorder_server: Any) -> None:
    server, rec = recorder_server
    path = sample("MR_small_RLE.dcm")
    async with connect(server, [(MR, [ExplicitVRLittleEndian]), VERIFICATION]) as assoc:
        with pytest.raises(aiodicom.NoAcceptedContext) as info:
            await assoc.store(path)
        message = str(info.value)
        assert "RLE Lossless" in message and "Explicit VR Little Endian" in message
        assert "transcode" in message
        assert await assoc.echo() == 0  # nothing was sent; still usable
    assert rec.requests == []
    # A compressed Dataset likewise
    async with connect(server, [(MR, [ExplicitVRLittleEndian])]) as assoc:
        with pytest.raises(aiodicom.NoAcceptedContext):
            await assoc.store(dcmread(path))


@pytest.mark.parametrize("cache", ["cached", "cold"])
async def test_store_file_uses_the_data_sets_own_uids(
    recorder_server: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, cache: str
) -> None:
    """rtdose.dcm's File Meta names another instance than its data set does.

    A file in the page cache is inspected on the loop and sent by sendfile;
    a cold one is read in a worker thread, never on the event loop.
    """
    import threading

    server, rec = recorder_server
    path = sample("rtdose.dcm")
    open(path, "rb").read()
    readers: list[bool] = []
    if cache == "cold":
        monkeypatch.setattr(store_mod, "open_part10_cached", lambda p: None)
        real_info = store_mod.read_part10_info

        def spy(p: Any) -> Any:
            readers.append(threading.current_thread() is threading.main_thread())
            return real_info(p)

        monkeypatch.setattr(store_mod, "read_part10_info", spy)
    meta_uid = read_part10_info(path).sop_instance_uid
    ds_uid = dcmread(path).SOPInstanceUID
    assert meta_uid != ds_uid
    async with connect(server, [(read_part10_info(path).sop_class_uid, [ImplicitVRLittleEndian])]) as assoc:
        assert await assoc.store(path) == 0
    assert rec.requests[0].sop_instance_uid == ds_uid
    assert any("File Meta names" in r.getMessage() for r in caplog.records)
    assert rec.data == [dataset_bytes(path)]
    if cache == "cold":
        assert readers == [False]  # read in a worker thread


async def test_store_file_not_dicom(recorder_server: Any, tmp_path: Path) -> None:
    server, _ = recorder_server
    bogus = tmp_path / "x.dcm"
    bogus.write_bytes(b"hello")
    async with connect(server, [CT]) as assoc:
        with pytest.raises(ValueError, match="Part 10"):
            await assoc.store(bogus)
        with pytest.raises(FileNotFoundError):
            await assoc.store(tmp_path / "missing.dcm")


async def test_streamed_file_small_pdus_byte_identical(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The streaming path (forced for a small file) with a 4 KiB peer PDU limit."""
    monkeypatch.setattr(store_mod, "open_part10_cached", lambda path: None)  # as if not in the page cache
    monkeypatch.setattr(store_mod, "_STREAM_THRESHOLD", 0)
    monkeypatch.setattr(store_mod, "_CHUNK", 4097)  # odd chunks exercise the carry byte
    rec = Recorder()
    server = await start_server(rec, max_pdu=4096)
    try:
        path = sample("CT_small.dcm")
        async with connect(server, [CT]) as assoc:
            assert await assoc.store(path) == 0
            assert await assoc.store(path) == 0
    finally:
        await server.close(timeout=1.0)
    assert rec.data[0] == dataset_bytes(path)
    assert rec.data[1] == rec.data[0]


async def test_cached_file_goes_by_sendfile_small_pdus_byte_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file in the page cache is sent with send_file (sendfile), here with a 4 KiB peer PDU limit."""
    calls: list[int] = []
    orig = aiodicom.Association.send_file

    async def spy(self: aiodicom.Association, ctx: int, cmd: Command, fd: int, offset: int, length: int) -> None:
        calls.append(length)
        await orig(self, ctx, cmd, fd, offset, length)

    monkeypatch.setattr(aiodicom.Association, "send_file", spy)
    rec = Recorder()
    server = await start_server(rec, max_pdu=4096)
    try:
        path = sample("CT_small.dcm")
        open(path, "rb").read()  # in the page cache
        async with connect(server, [CT]) as assoc:
            assert await assoc.store(path) == 0
    finally:
        await server.close(timeout=1.0)
    assert rec.data == [dataset_bytes(path)]
    probe = store_mod.open_part10_cached(path)  # None where the file system has no RWF_NOWAIT reads
    if probe is not None:
        os.close(probe[1])
    assert calls == ([len(rec.data[0])] if probe is not None else [])


async def test_send_file_command_goes_with_the_first_data_header(sendfile_heads: list[bytes]) -> None:
    """The command PDU and the first data PDU's header leave in one send (MSG_MORE), not two writes."""

    heads = sendfile_heads
    rec = Recorder()
    server = await start_server(rec, max_pdu=4096)
    try:
        path = sample("CT_small.dcm")
        open(path, "rb").read()  # in the page cache
        probe = store_mod.open_part10_cached(path)
        if probe is None:
            pytest.skip("no RWF_NOWAIT reads here: the file is not sent with sendfile")
        os.close(probe[1])
        async with connect(server, [CT]) as assoc:
            assert await assoc.store(path) == 0
    finally:
        await server.close(timeout=1.0)
    assert rec.data == [dataset_bytes(path)]
    first = heads[0]
    # a P-DATA-TF with the whole command (PDV control 0x03), then a data PDU header (control 0x00)
    length = int.from_bytes(first[2:6], "big")
    assert first[0] == 0x04 and first[11] == 0x03
    assert len(first) == 6 + length + 12
    assert first[6 + length] == 0x04 and first[6 + length + 11] in (0x00, 0x02)
    assert all(len(h) == 12 for h in heads[1:])  # the other PDUs: their header alone


async def test_send_streaming_odd_chunks_and_async_iterables(recorder_server: Any) -> None:
    server, rec = recorder_server
    payload = bytes(range(256)) * 41 + b"\x01"  # odd total

    def pieces() -> list[bytes]:
        out, i, step = [], 0, 1
        while i < len(payload):
            out.append(payload[i : i + step])
            i += step
            step = step * 3 + 1
        return out

    async def apieces() -> AsyncIterator[bytes]:
        for p in [b""] + pieces():
            yield p

    async with connect(server, [CT]) as assoc:
        ctx = assoc.find_context(CT)
        assert ctx is not None
        for chunks in (pieces(), apieces(), [payload]):
            mid = assoc.next_message_id()
            cmd = Command(
                C_STORE_RQ, message_id=mid, affected_sop_class_uid=CT, affected_sop_instance_uid="1.2.3", priority=0
            )
            op = assoc.open_operation(ctx.context_id, mid)
            await assoc.send_streaming(ctx.context_id, cmd, chunks, len(payload))
            rsp = await assoc.next_response(op)
            assoc.close_operation(mid)
            assert rsp.command.status == 0
    assert rec.data == [payload, payload, payload]


async def test_send_streaming_short_data_aborts(recorder_server: Any) -> None:
    server, rec = recorder_server
    async with connect(server, [CT]) as assoc:
        ctx = assoc.find_context(CT)
        assert ctx is not None
        cmd = Command(C_STORE_RQ, message_id=1, affected_sop_class_uid=CT, affected_sop_instance_uid="1.2", priority=0)
        with pytest.raises(ValueError, match="expected 100"):
            await assoc.send_streaming(ctx.context_id, cmd, [b"ab"], 100)
        await asyncio.wait_for(assoc.wait_closed(), 10)
        assert not assoc.is_established
    assert rec.requests == []


def _c_store(assoc: aiodicom.Association, mid: int, uid: str = "1.2.3") -> Command:
    return Command(C_STORE_RQ, message_id=mid, affected_sop_class_uid=CT, affected_sop_instance_uid=uid, priority=0)


def _stall_peer(server: aiodicom.Server, assoc: aiodicom.Association) -> tuple[asyncio.Transport, asyncio.Event]:
    """Stop the server side reading, with small fixed socket buffers (no
    autotuning to megabytes), so that send_file fills the socket.  Returns
    the peer's transport and an event set when send_file waits for the
    transport to drain."""
    (peer,) = server.associations
    assert peer.transport is not None and assoc.transport is not None
    peer.transport.pause_reading()
    assoc.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    peer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    full = asyncio.Event()
    orig_drain = assoc._drain_empty

    async def drain_empty() -> None:
        full.set()
        await orig_drain()

    assoc._drain_empty = drain_empty  # type: ignore[method-assign]
    return cast(asyncio.Transport, peer.transport), full


async def test_send_file_through_a_full_socket_is_byte_identical(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """send_file: sendfile until the socket is full, then the transport, then sendfile again."""
    from aiodicom.aio import association as assoc_mod

    rec = Recorder()
    server = await start_server(rec, max_pdu=16384)
    payload = os.urandom(3 * 1024 * 1024 + 1)  # odd: the last fragment is odd
    path = tmp_path / "payload.bin"
    path.write_bytes(b"junk" + payload + b"trailing")
    results: list[tuple[int, int]] = []
    orig_pdu = assoc_mod._sendfile_pdu

    def counting_pdu(sock: Any, hdr: bytes, fd: int, offset: int, n: int) -> tuple[bytes, int]:
        head, done = orig_pdu(sock, hdr, fd, offset, n)
        results.append((len(head), n - done))
        return head, done

    monkeypatch.setattr(assoc_mod, "_sendfile_pdu", counting_pdu)
    try:
        async with connect(server, [CT]) as assoc:
            ctx = assoc.find_context(CT)
            assert ctx is not None
            peer, full = _stall_peer(server, assoc)
            mid = assoc.next_message_id()
            op = assoc.open_operation(ctx.context_id, mid)
            fd = os.open(path, os.O_RDONLY)
            try:
                task = asyncio.create_task(assoc.send_file(ctx.context_id, _c_store(assoc, mid), fd, 4, len(payload)))
                await asyncio.wait_for(full.wait(), 10)
                peer.resume_reading()
                await asyncio.wait_for(task, 30)
            finally:
                os.close(fd)
            rsp = await assoc.next_response(op)
            assoc.close_operation(mid)
            assert rsp.command.status == 0
            assert assoc.bytes_sent > len(payload)
    finally:
        await server.close(timeout=1.0)
    assert rec.data == [payload]
    assert any(left == (0, 0) for left in results)  # whole PDUs went by sendfile
    assert any(left != (0, 0) for left in results)  # and a full socket sent the rest through the transport


async def test_send_file_peer_vanishing_while_the_socket_is_full_raises(tmp_path: Path) -> None:
    """The peer drops the connection while send_file waits for the transport: it raises, nothing hangs."""
    rec = Recorder()
    server = await start_server(rec, max_pdu=16384)
    path = tmp_path / "payload.bin"
    path.write_bytes(os.urandom(4 * 1024 * 1024))
    try:
        async with connect(server, [CT]) as assoc:
            ctx = assoc.find_context(CT)
            assert ctx is not None
            peer, full = _stall_peer(server, assoc)
            fd = os.open(path, os.O_RDONLY)
            try:
                task = asyncio.create_task(
                    assoc.send_file(ctx.context_id, _c_store(assoc, 1), fd, 0, 4 * 1024 * 1024)
                )
                await asyncio.wait_for(full.wait(), 10)
                peer.abort()  # the peer vanishes mid-message
                with pytest.raises((aiodicom.AssociationAborted, ConnectionError)):
                    await asyncio.wait_for(task, 10)
            finally:
                os.close(fd)
            await asyncio.wait_for(assoc.wait_closed(), 10)
            assert not assoc.is_established
    finally:
        await server.close(timeout=1.0)
    assert rec.requests == []


async def test_send_file_shorter_than_announced_aborts(recorder_server: Any, tmp_path: Path) -> None:
    server, rec = recorder_server
    path = tmp_path / "short.bin"
    path.write_bytes(b"x" * 1000)
    async with connect(server, [CT]) as assoc:
        ctx = assoc.find_context(CT)
        assert ctx is not None
        fd = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(ValueError, match="ended 1000 bytes early"):
                await assoc.send_file(ctx.context_id, _c_store(assoc, 1), fd, 0, 2000)
        finally:
            os.close(fd)
        await asyncio.wait_for(assoc.wait_closed(), 10)
        assert not assoc.is_established
    assert rec.requests == []


# ------------------------------------------------------------------ SCP behaviour


async def test_handler_exception_answers_failure_and_association_survives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def handler(req: StoreRequest) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("disk on fire")
        return 0

    server = await start_server(handler)
    try:
        ds = dcmread(sample("CT_small.dcm"))
        async with connect(server, [CT]) as assoc:
            rsp = await store_response(assoc, ds)
            assert rsp.status == HANDLER_FAILED
            assert aiodicom.Status(rsp.status).is_failure
            assert rsp.error_comment is not None and "disk on fire" in rsp.error_comment
            assert rsp.affected_sop_instance_uid == ds.SOPInstanceUID
            assert await assoc.store(ds) == 0  # the association keeps working
    finally:
        await server.close(timeout=1.0)
    logged = [r for r in caplog.records if r.exc_info and "disk on fire" in str(r.exc_info[1])]
    assert len(logged) == 1


@pytest.mark.parametrize(
    "exc, status",
    [
        (OSError(errno.ENOSPC, "No space left on device"), 0xA700),
        (ServiceError(0xA900, "does not match"), 0xA900),
        (ValueError(), HANDLER_FAILED),
    ],
)
async def test_handler_exception_statuses(exc: BaseException, status: int) -> None:
    async def handler(req: StoreRequest) -> int:
        raise exc

    server = await start_server(handler)
    try:
        async with connect(server, [CT]) as assoc:
            rsp = await store_response(assoc, dcmread(sample("CT_small.dcm")))
            assert rsp.status == status
            assert rsp.error_comment
    finally:
        await server.close(timeout=1.0)


async def test_handler_status_passed_through() -> None:
    server = await start_server(Recorder(status=0xB000))
    try:
        async with connect(server, [CT]) as assoc:
            status = await assoc.store(dcmread(sample("CT_small.dcm")))
            assert status == 0xB000 and status.is_warning
    finally:
        await server.close(timeout=1.0)


async def test_store_to_directory_writes_part10(tmp_path: Path) -> None:
    target = tmp_path / "store"
    server = await start_server(store_to_directory(target, fsync=False))
    try:
        ds = dcmread(sample("CT_small.dcm"))
        async with connect(server, [CT, (MR, NATIVE)]) as assoc:
            assert await assoc.store(ds) == 0
            assert await assoc.store(sample("MR_small_bigendian.dcm")) == 0
    finally:
        await server.close(timeout=1.0)
    ct = target / f"{ds.SOPInstanceUID}.dcm"
    back = dcmread(ct)
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.SourceApplicationEntityTitle == "STORESCU"
    assert back.PixelData == ds.PixelData
    names = sorted(p.name for p in target.iterdir())
    assert len(names) == 2 and not any(n.startswith(".") for n in names)  # no temp files left


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
async def test_store_to_directory_in_memory_path(tmp_path: Path) -> None:
    """The handler also works without the streaming sink (fragments in memory)."""
    handler = store_to_directory(tmp_path, fsync=False)
    server = aiodicom.Server("STORESCP")
    serve_store(server, lambda req: handler(req))  # a plain callable: no dataset_sink
    assert server.dataset_sink_factory is None
    await server.start("127.0.0.1", 0)
    try:
        ds = dcmread(sample("CT_small.dcm"))
        async with connect(server, [CT]) as assoc:
            assert await assoc.store(ds) == 0
            ds2 = Dataset()
            ds2.SOPClassUID = CT
            ds2.SOPInstanceUID = "../../evil"
            rsp = await store_response(assoc, ds2)
            assert rsp.status == 0x0117
    finally:
        await server.close(timeout=1.0)
    assert [p.name for p in tmp_path.iterdir()] == [f"{ds.SOPInstanceUID}.dcm"]


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize("uid", ["../../x", "1.2.3/../../x", "/etc/passwd", "1.2..3", ".."])
async def test_hostile_sop_instance_uid_refused(uid: str, tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "store"
    server = await start_server(store_to_directory(target, fsync=False))
    try:
        ds = dcmread(sample("CT_small.dcm"))
        ds.SOPInstanceUID = uid
        async with connect(server, [CT]) as assoc:
            rsp = await store_response(assoc, ds)
            assert rsp.status == 0x0117
            assert rsp.error_comment == "invalid SOP Instance UID"
            ds.SOPInstanceUID = "1.2.3.4"
            assert await assoc.store(ds) == 0
    finally:
        await server.close(timeout=1.0)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [os.path.join("a", "b", "store", "1.2.3.4.dcm")]


async def test_sop_class_must_match_context(tmp_path: Path) -> None:
    rec = Recorder()
    server = await start_server(rec)
    try:
        async with connect(server, [CT, MR]) as assoc:
            ctx = assoc.find_context(MR)
            assert ctx is not None
            ds = dcmread(sample("CT_small.dcm"))
            cmd = Command(
                C_STORE_RQ, message_id=5, affected_sop_class_uid=CT,
                affected_sop_instance_uid=ds.SOPInstanceUID, priority=0,
            )
            data = EncodedDataset.from_dataset(ds, ctx.transfer_syntax).fragments
            rsp = await assoc.send_request(ctx.context_id, cmd, data)
            assert rsp.command.status == 0x0122
            assert await assoc.store(ds) == 0
    finally:
        await server.close(timeout=1.0)
    assert len(rec.requests) == 1


@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
async def test_write_error_while_streaming_answers_out_of_resources(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, streamed: bool
) -> None:
    if streamed:  # past the limit: written by the streaming writer as it arrives
        monkeypatch.setattr(store_mod, "SPOOL_MEMORY_LIMIT", 1000)

    def full(self: Part10Writer, buf: Any) -> None:
        self.abort()
        raise OSError(errno.ENOSPC, "No space left on device")

    orig_write = Part10Writer.write
    monkeypatch.setattr(Part10Writer, "write", full)
    server = await start_server(store_to_directory(tmp_path, fsync=False))
    try:
        async with connect(server, [CT]) as assoc:
            rsp = await store_response(assoc, dcmread(sample("CT_small.dcm")))
            assert rsp.status == 0xA700
            assert rsp.error_comment is not None and "space" in rsp.error_comment
            monkeypatch.setattr(Part10Writer, "write", orig_write)
            assert await assoc.store(sample("CT_small.dcm")) == 0
    finally:
        await server.close(timeout=1.0)
    assert len(list(tmp_path.iterdir())) == 1


def _write_big_instance(path: Path, size: int) -> str:
    """A Part 10 file of about ``size`` bytes written in chunks (never in memory)."""
    ds = Dataset()
    ds.SOPClassUID = SC
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.9.7133.1.99"
    ds.PatientID = "BIG"
    head = EncodedDataset.from_dataset(ds, ExplicitVRLittleEndian).tobytes()
    w = Part10Writer(path, SC, ds.SOPInstanceUID, ExplicitVRLittleEndian, fsync=False)
    w.write(head)
    w.write(struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OB", size))
    block = hashlib.sha256(b"x").digest() * (1 << 15)  # 1 MiB
    for _ in range(size // len(block)):
        w.write(block)
    w.commit()
    return str(ds.SOPInstanceUID)


def _file_digest(path: Path, offset: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        fp.seek(offset)
        while chunk := fp.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


async def test_large_instance_streamed_with_bounded_memory(tmp_path: Path) -> None:
    size = 64 << 20
    src = tmp_path / "big.dcm"
    uid = _write_big_instance(src, size)
    target = tmp_path / "store"
    server = await start_server(store_to_directory(target, fsync=False))
    try:
        gc.collect()
        tracemalloc.start()
        try:
            async with connect(server, [(SC, [ExplicitVRLittleEndian])]) as assoc:
                assert await assoc.store(src) == 0
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        await server.close(timeout=1.0)
    # SCU and SCP both ran in this process: neither held the 64 MiB instance.
    assert peak < 16 << 20, f"peak traced memory {peak / 2**20:.1f} MiB"
    stored = target / f"{uid}.dcm"
    a, b = read_part10_info(src), read_part10_info(stored)
    assert b.dataset_length == a.dataset_length
    assert _file_digest(stored, b.dataset_offset) == _file_digest(src, a.dataset_offset)


async def test_generic_handler_gets_dataset_lazily(recorder_server: Any) -> None:
    server, rec = recorder_server
    ds = dcmread(sample("CT_small.dcm"))
    async with connect(server, [CT]) as assoc:
        assert await assoc.store(ds) == 0
    (req,) = rec.requests
    assert req.message_id >= 1 and req.context_id == 1
    assert req.fragments and sum(len(f) for f in req.fragments) == len(rec.data[0])
    assert req.dataset.SOPInstanceUID == ds.SOPInstanceUID
    assert req.encoded.is_decoded
    assert "StoreRequest" in repr(req)


# ------------------------------------------------------------------ CLI


async def _run_cli(argv: list[str]) -> int:
    return await asyncio.to_thread(cli.main, argv)


async def test_cli_store_files_and_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "received"
    server = await start_server(store_to_directory(target, fsync=False))
    src = tmp_path / "src" / "deeper"
    src.mkdir(parents=True)
    # distinct SOP Instance UIDs; native and compressed, little and big endian
    names = ["CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_small_odd_big_endian.dcm", "JPEG2000.dcm"]
    for n in names:
        (src / n).write_bytes(Path(sample(n)).read_bytes())
    (src / "README.txt").write_text("not dicom")
    single = sample("rtdose.dcm")
    try:
        rc = await _run_cli(
            ["store", "127.0.0.1", str(server.port), "--aec", "STORESCP", str(tmp_path / "src"), single]
        )
    finally:
        await server.close(timeout=1.0)
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "5 stored, 0 failed, 1 skipped" in out
    assert "[5/5]" in err
    uids = {dcmread(sample(n)).SOPInstanceUID for n in names + ["rtdose.dcm"]}
    assert len(uids) == 5
    assert {p.name for p in target.iterdir()} == {f"{u}.dcm" for u in uids}
    # compressed ones went through unchanged
    rle = read_part10_info(sample("MR_small_RLE.dcm"))
    assert read_part10_dataset(target / f"{rle.sop_instance_uid}.dcm")[1].tobytes() == dataset_bytes(
        sample("MR_small_RLE.dcm")
    )


async def test_cli_store_reports_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calls = 0

    async def handler(req: StoreRequest) -> int:
        nonlocal calls
        calls += 1
        return 0xA700 if calls == 1 else 0

    server = await start_server(handler)
    bogus = tmp_path / "bogus.dcm"
    bogus.write_bytes(b"nope")
    try:
        rc = await _run_cli(
            ["store", "127.0.0.1", str(server.port), sample("CT_small.dcm"), sample("MR_small.dcm"), str(bogus)]
        )
    finally:
        await server.close(timeout=1.0)
    out, err = capsys.readouterr()
    assert rc == 1
    assert "1 stored, 2 failed" in out
    assert "FAILED" in err and "0xA700" in err and "bogus.dcm" in err


async def test_cli_store_nothing_to_send(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = await _run_cli(["store", "127.0.0.1", "9", str(tmp_path)])
    assert rc == 1
    assert "no DICOM files found" in capsys.readouterr().err


def test_store_batches_respect_context_limit() -> None:
    infos = []
    for i in range(70):
        info = read_part10_info(sample("CT_small.dcm"))
        info.sop_class_uid = f"1.2.3.{i}"
        info2 = read_part10_info(sample("MR_small_RLE.dcm"))
        info2.sop_class_uid = f"1.2.3.{i}"
        infos += [info, info2]
    batches = cli._store_batches(infos)
    assert len(batches) == 2
    assert all(len(specs) <= 128 for specs, _ in batches)
    assert sum(len(files) for _, files in batches) == 140
    specs, _ = batches[0]
    assert specs[:3] == [
        ("1.2.3.0", [ExplicitVRLittleEndian]),
        ("1.2.3.0", [RLELossless]),
        ("1.2.3.0", [ImplicitVRLittleEndian]),  # fallback for re-encoding
    ]
    assert len(specs) == 126



# ------------------------------------------------------- deferred spool


class _FakeWriter:
    def __init__(self) -> None:
        self.data = bytearray()
        self.path = Path("/nonexistent/x.dcm")
        self.aborted = False

    def write(self, buf: Any) -> None:
        self.data += buf

    def abort(self) -> None:
        self.aborted = True


def test_spool_keeps_data_in_memory_up_to_its_limit() -> None:
    opened: list[_FakeWriter] = []

    def opener() -> Any:
        opened.append(_FakeWriter())
        return opened[-1]

    spool = store_mod._Spool(None, None, None, opener=opener, limit=10)
    spool.write(memoryview(b"abcd"))
    spool.write(memoryview(b"efghij"))  # exactly the limit: still held
    assert opened == [] and spool.writer is None
    assert spool.held is not None and b"".join(spool.held) == b"abcdefghij"
    spool.write(memoryview(b"k"))  # past it: the writer gets everything, in order
    assert len(opened) == 1 and spool.writer is opened[0] and spool.held is None
    assert bytes(opened[0].data) == b"abcdefghijk"
    assert spool.path == opened[0].path
    spool.write(memoryview(b"lm"))
    assert bytes(opened[0].data) == b"abcdefghijklm"
    spool.abort()
    assert opened[0].aborted and spool.writer is None


def test_spool_opener_failure_is_kept_not_raised() -> None:
    def opener() -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    spool = store_mod._Spool(None, None, None, opener=opener, limit=2)
    spool.write(memoryview(b"ab"))
    spool.write(memoryview(b"cd"))
    assert isinstance(spool.error, OSError) and spool.writer is None and spool.held is None
    spool.write(memoryview(b"ef"))  # discarded
    spool.abort()


async def test_small_instance_file_is_created_off_the_loop(tmp_path: Path, temp_files_on_loop: list[bool]) -> None:
    where = temp_files_on_loop
    server = await start_server(store_to_directory(tmp_path, fsync=False))
    try:
        async with connect(server, [CT]) as assoc:
            assert await assoc.store(sample("CT_small.dcm")) == 0
    finally:
        await server.close(timeout=1.0)
    assert where == [False]  # one temporary file, made in a worker thread
    (stored,) = tmp_path.iterdir()
    assert read_part10_dataset(stored)[1].tobytes() == dataset_bytes(sample("CT_small.dcm"))


async def test_instance_past_the_limit_streams(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, temp_files_on_loop: list[bool]
) -> None:
    monkeypatch.setattr(store_mod, "SPOOL_MEMORY_LIMIT", 1000)
    where = temp_files_on_loop
    server = await start_server(store_to_directory(tmp_path, fsync=False), max_pdu=4096)
    try:
        async with connect(server, [CT]) as assoc:
            assert await assoc.store(sample("CT_small.dcm")) == 0
    finally:
        await server.close(timeout=1.0)
    assert where == [True]  # opened by the streaming writer as the data arrived
    (stored,) = tmp_path.iterdir()
    assert read_part10_dataset(stored)[1].tobytes() == dataset_bytes(sample("CT_small.dcm"))


async def test_a_small_max_dataset_in_memory_streams_sooner(tmp_path: Path, temp_files_on_loop: list[bool]) -> None:
    """A server told to keep little in memory does not hold a data set up to the spool limit."""
    server = aiodicom.Server("STORESCP", max_dataset_in_memory=1000)
    serve_store(server, store_to_directory(tmp_path, fsync=False))
    await server.start("127.0.0.1", 0)
    try:
        async with connect(server, [CT]) as assoc:
            assert await assoc.store(sample("CT_small.dcm")) == 0
    finally:
        await server.close(timeout=1.0)
    assert temp_files_on_loop == [True]  # streamed: the writer was opened as the data arrived
    (stored,) = tmp_path.iterdir()
    assert read_part10_dataset(stored)[1].tobytes() == dataset_bytes(sample("CT_small.dcm"))


async def test_a_file_not_in_the_page_cache_is_read_in_one_thread_hop(
    monkeypatch: pytest.MonkeyPatch, recorder_server: Any
) -> None:
    """File Meta and data set of a cold file of up to 4 MiB come from one worker-thread call."""
    server, rec = recorder_server
    monkeypatch.setattr(store_mod, "open_part10_cached", lambda path: None)  # as if not cached
    hops: list[str] = []
    real = asyncio.to_thread

    async def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(func.__name__)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(store_mod.asyncio, "to_thread", counting)
    path = sample("CT_small.dcm")
    async with connect(server, [CT]) as assoc:
        assert await assoc.store(path) == 0
    assert hops == ["_read_file_for_sending"]
    assert rec.data == [dataset_bytes(path)]


async def test_closed_association_is_freed_by_reference_counting(tmp_path: Path) -> None:
    """A store server's association is no reference cycle once closed.

    The sink factory (a partial holding the association) made every
    association on a C-STORE server cyclic garbage, left for the cyclic GC:
    at thousands of associations per second its collections were several
    per cent of the server's CPU.
    """
    import weakref

    path = sample("CT_small.dcm")
    info = read_part10_info(path)
    server = await start_server(store_to_directory(tmp_path / "in", fsync=False))
    gc.collect()
    gc.disable()
    try:
        # no C-STORE: the cycle was there from the A-ASSOCIATE-AC on (and no
        # worker thread of the handler may hold the association for a moment)
        async with connect(server, [(info.sop_class_uid, [info.transfer_syntax])]) as assoc:
            assert assoc.is_established
            (served,) = server.associations
            ref = weakref.ref(served)
            closed = served.closed
            del served
        await closed
        for _ in range(50):  # callbacks of the close run on the next loop iterations
            if ref() is None:
                break
            await asyncio.sleep(0)
        assert ref() is None, [type(r).__name__ for r in gc.get_referrers(ref())]
    finally:
        gc.enable()
        await server.close(timeout=1.0)
