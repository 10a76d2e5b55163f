"""Faults: peers that vanish mid-operation, handlers that raise, shutdown.

Nothing a peer or a handler does leaves a partial file, an index row, a
running task or a stuck association behind, and the server keeps serving:

* a peer that disappears (TCP reset or plain close, no A-RELEASE/A-ABORT)
  in the middle of a C-STORE data set, while the archive commits a received
  instance, in a C-GET (while C-STORE sub-operations flow) or a C-FIND
  (while many pending responses flow);
* store, find and get handlers that raise: a failure status, and the same
  association keeps working;
* :meth:`Server.close` lets a running operation finish before its deadline
  and refuses new connections meanwhile; past the deadline it aborts what
  is still open;
* SIGTERM on ``aiodicom serve`` with an association open: exit 0 once the
  association is released, and what was stored is on disk and indexed.

Synchronisation is by events and futures (an association's ``closed``,
handler events); where there is no event (bytes consumed by the server, a
listening socket gone) a condition is polled with a deadline.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import socket
import struct
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset

import aiodicom
from tests import _sync
from aiodicom.aio.association import Association
from aiodicom.aio.errors import AssociationAborted
from aiodicom.archive.server import ArchiveServer, create_archive_server
from aiodicom.dataset import EncodedDataset
from aiodicom.dimse.commands import C_STORE_RQ, Command, encode_command
from aiodicom.part10 import Part10Writer
from aiodicom.services import store as store_mod
from aiodicom.services.find import FindRequest, serve_find
from aiodicom.services.get import GetRequest, GetResult, ReceivedInstance, get_contexts, serve_get
from aiodicom.services.store import StoreRequest, serve_store
from aiodicom.ul import pdu as P
from tests._sync import wait_no_associations

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
PATIENT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
VERIFICATION = "1.2.840.10008.1.1"
ROOT = "1.2.826.0.1.3680043.10.4711"
REPO = Path(__file__).resolve().parents[2]
DEADLINE = 10.0
PDU_MAX = 16384

# Failure statuses the services answer (aiodicom/services/{store,find,get}.py).
STORE_HANDLER_FAILED = 0xC001
STORE_OUT_OF_RESOURCES = 0xA700
FIND_HANDLER_FAILED = 0xC001
GET_UNABLE_TO_PROCESS = 0xC000


# --------------------------------------------------------------------------
# helpers


def make_ct(n: int, *, study: int = 1, pixels: int = 32, pid: str = "FAULT") -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = f"{ROOT}.{study}.1.{n}"
    ds.PatientName = f"Fault^{pid}"
    ds.PatientID = pid
    ds.StudyInstanceUID = f"{ROOT}.{study}"
    ds.StudyDate = "20240101"
    ds.SeriesInstanceUID = f"{ROOT}.{study}.1"
    ds.Modality = "CT"
    ds.InstanceNumber = n
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    side = int((pixels // 2) ** 0.5) or 1
    ds.Rows = ds.Columns = side
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((n * 7 + i) % 251 for i in range(side * side * 2))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = EXPLICIT
    return ds


def vanish(transport: Any, how: str = "reset") -> None:
    """Drop the connection without A-RELEASE or A-ABORT.

    ``reset``: SO_LINGER 0, so the close sends a TCP RST; ``close``: an
    orderly FIN with nothing said at the DICOM level.
    """
    if how == "reset":
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


async def poll(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` with a deadline (only where no event exists)."""
    try:
        async with asyncio.timeout(DEADLINE):
            while not condition():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"not within {DEADLINE} s: {what}") from None


async def closed(assoc: Association) -> None:
    """Wait for ``assoc`` (either side) to be closed."""
    async with asyncio.timeout(DEADLINE):
        await asyncio.shield(assoc.closed)


async def tasks_settle(baseline: set[asyncio.Task[Any]]) -> None:
    """Every task started since ``baseline`` finishes (none leaks)."""
    await _sync.tasks_settle(baseline, DEADLINE)


def server_association(server: aiodicom.Server) -> Association:
    [assoc] = list(server.associations)
    return assoc


def storage_files(root: Path) -> list[Path]:
    """Every file under the archive's instance tree (finished or temporary)."""
    return sorted(p for p in (root / "instances").rglob("*") if p.is_file())


async def read_pdu(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    header = await asyncio.wait_for(reader.readexactly(6), DEADLINE)
    pdu_type, _res, length = struct.unpack(">BBL", header)
    return pdu_type, await asyncio.wait_for(reader.readexactly(length), DEADLINE)


def p_data(context_id: int, control: int, fragment: bytes) -> bytes:
    pdv = struct.pack(">LBB", len(fragment) + 2, context_id, control) + fragment
    return struct.pack(">BBL", P.P_DATA_TF, 0, len(pdv)) + pdv


@pytest.fixture
async def archive(tmp_path: Path) -> AsyncIterator[ArchiveServer]:
    server = await create_archive_server(tmp_path / "archive", "ARCHIVE", fsync=False, max_pdu_length=PDU_MAX)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.close(timeout=1.0)


def archive_client(server: aiodicom.Server, **kwargs: Any) -> aiodicom.associate:
    contexts, roles = get_contexts([CT], models=("study",), extra=[(CT, [EXPLICIT]), STUDY_FIND, VERIFICATION])
    return aiodicom.associate(
        "127.0.0.1", server.port, called_ae="ARCHIVE", calling_ae="FAULTSCU",
        contexts=contexts, roles={uid: (True, True) for uid in roles}, **kwargs,
    )


def study_query(study: int = 1) -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = f"{ROOT}.{study}"
    return q


async def still_serves_archive(server: ArchiveServer, ds: Dataset) -> None:
    """A new association: C-ECHO, a full C-STORE of ``ds`` and a C-FIND that sees it."""
    async with archive_client(server) as assoc:
        assert await assoc.echo() == 0
        assert (await assoc.store(ds)).is_success
        q = study_query()
        q.SOPInstanceUID = ds.SOPInstanceUID
        q.QueryRetrieveLevel = "IMAGE"
        q.SeriesInstanceUID = ds.SeriesInstanceUID
        found = [ident.SOPInstanceUID async for _s, ident in assoc.find(q, "study") if ident is not None]
        assert found == [ds.SOPInstanceUID]


# --------------------------------------------------------------------------
# 1. peer vanishes mid C-STORE


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "in-memory"])
@pytest.mark.parametrize("how", ["reset", "close"])
async def test_peer_vanishes_mid_store_leaves_no_partial_file(
    archive: ArchiveServer, how: str, streamed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if streamed:  # past the spool limit: the data set goes into a temporary file as it arrives
        monkeypatch.setattr(store_mod, "SPOOL_MEMORY_LIMIT", 1000)
    root = archive.storage.root
    ds = make_ct(1, pixels=256 * 1024)
    uid = ds.SOPInstanceUID
    data = b"".join(bytes(b) for b in EncodedDataset.from_dataset(ds, EXPLICIT).fragments)
    chunk = PDU_MAX - 6 - 6  # PDU header + PDV header
    partial = [data[i : i + chunk] for i in range(0, 5 * chunk, chunk)]  # 5 PDUs, far from the end
    assert sum(map(len, partial)) < len(data)

    reader, writer = await asyncio.open_connection("127.0.0.1", archive.port)
    rq = P.AAssociateRQ(
        "ARCHIVE", "VANISHER", [P.PresentationContextRQ(1, CT, [EXPLICIT])],
        P.UserInformation(max_length=PDU_MAX, implementation_class_uid="1.2.3.4"),
    )
    writer.write(rq.encode())
    assert (await read_pdu(reader))[0] == P.A_ASSOCIATE_AC
    srv_assoc = server_association(archive)
    cmd = encode_command(Command(C_STORE_RQ, message_id=1, affected_sop_class_uid=CT,
                                 affected_sop_instance_uid=uid, priority=0, has_dataset=True))
    writer.write(p_data(1, 0x03, cmd))
    for fragment in partial:
        writer.write(p_data(1, 0x00, fragment))  # data set, not the last fragment
    await writer.drain()
    sent = len(rq.encode()) + 6 + 6 + len(cmd) + sum(len(f) + 12 for f in partial)
    # The server consumed all of it: the instance is being streamed into a
    # temporary file, or (below the spool limit) is still only in memory.
    await poll(lambda: srv_assoc.bytes_received >= sent, "server read the partial data set")
    during = storage_files(root)
    if streamed:
        assert len(during) == 1 and during[0].name.endswith(".tmp"), during
    else:
        assert during == []

    vanish(writer.transport, how)
    await closed(srv_assoc)
    assert not archive.associations
    assert storage_files(root) == []  # the partial temporary file is gone
    assert await archive.storage.index.get_instance(uid) is None

    await still_serves_archive(archive, ds)
    files = storage_files(root)
    assert [p.name for p in files] == [f"{uid}.dcm"]  # the complete instance, no temporary file
    assert await archive.storage.index.get_instance(uid) is not None


async def test_peer_vanishes_during_archive_commit_keeps_file_and_index_together(
    archive: ArchiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole data set arrived; the peer vanishes while the server commits it.

    The request is cancelled while the worker thread is still in
    ``Part10Writer.commit`` after the rename (its directory fsync): the
    instance must end up both on disk and indexed (the store runs to
    completion, like ``Storage.store``), never a file the index does not know.
    """
    root = archive.storage.root
    loop = asyncio.get_running_loop()
    renamed = asyncio.Event()
    gate = threading.Event()
    real_commit = Part10Writer.commit

    def slow_commit(self: Part10Writer) -> None:
        real_commit(self)  # renamed onto the final path
        loop.call_soon_threadsafe(renamed.set)
        gate.wait(DEADLINE)  # still "fsyncing the directory" when the peer vanishes

    ds = make_ct(1, pixels=64 * 1024)
    baseline = set(asyncio.all_tasks())
    monkeypatch.setattr(Part10Writer, "commit", slow_commit)
    try:
        assoc = await archive_client(archive)
        srv_assoc = server_association(archive)
        store = asyncio.create_task(assoc.store(ds))
        async with asyncio.timeout(DEADLINE):
            await renamed.wait()
        vanish(assoc.transport)
        with pytest.raises((AssociationAborted, ConnectionError)):
            await store  # no response will come
        await closed(srv_assoc)  # the request was cancelled mid-commit
    finally:
        gate.set()
    await tasks_settle(baseline)  # the store in progress is not abandoned
    assert [p.name for p in storage_files(root)] == [f"{ds.SOPInstanceUID}.dcm"]
    assert await archive.storage.index.get_instance(ds.SOPInstanceUID) is not None
    monkeypatch.setattr(Part10Writer, "commit", real_commit)
    await still_serves_archive(archive, make_ct(2))


# --------------------------------------------------------------------------
# 2. peer vanishes mid C-GET


async def test_peer_vanishes_mid_get(archive: ArchiveServer) -> None:
    stored = [make_ct(n, pixels=4096) for n in range(1, 9)]
    async with archive_client(archive) as assoc:
        for ds in stored:
            assert (await assoc.store(ds)).is_success
    await wait_no_associations(archive, DEADLINE)  # the storing association closed

    baseline = set(asyncio.all_tasks())
    assoc = await archive_client(archive)
    srv_assoc = server_association(archive)
    received: list[str] = []
    items = assoc.get(study_query(), "study")
    with pytest.raises((AssociationAborted, ConnectionError)):
        async for item in items:
            assert not isinstance(item, GetResult), item  # must not get this far
            if isinstance(item, ReceivedInstance):
                received.append(item.sop_instance_uid)
                # The server now waits for this sub-operation's C-STORE-RSP,
                # with more instances to go: the requestor vanishes.
                vanish(assoc.transport)
    assert len(received) == 1
    await closed(srv_assoc)
    await closed(assoc)
    assert not archive.associations
    assert not srv_assoc._running and not srv_assoc._ops
    await items.aclose()
    await tasks_settle(baseline)

    # Still serves: a complete C-GET of the same study.
    async with archive_client(archive) as again:
        assert await again.echo() == 0
        uids = []
        result = None
        async with again.get(study_query(), "study") as items2:
            async for item in items2:
                if isinstance(item, ReceivedInstance):
                    uids.append(item.sop_instance_uid)
                elif isinstance(item, GetResult):
                    result = item
        assert result is not None and result.ok and result.completed == len(stored)
        assert sorted(uids) == sorted(ds.SOPInstanceUID for ds in stored)


# --------------------------------------------------------------------------
# 3. peer vanishes mid C-FIND


class CountingFind:
    """A find handler yielding ``PatientID`` many matches (0 = endless)."""

    def __init__(self) -> None:
        self.started = 0
        self.closed = 0
        self.yielded = 0
        self.closed_event = asyncio.Event()
        #: For each close: was the request still running on its association?
        #: True when the service closed the generator itself (aclose in its
        #: clean-up), False if only garbage collection finalised it later.
        self.closed_by_service: list[bool] = []

    async def __call__(self, req: FindRequest) -> AsyncIterator[Dataset]:
        self.started += 1
        count = int(req.identifier.PatientID)
        try:
            n = 0
            while count == 0 or n < count:
                n += 1
                ds = Dataset()
                ds.QueryRetrieveLevel = "PATIENT"
                ds.PatientID = f"P{n:06d}"
                ds.PatientName = f"Many^{n}"
                self.yielded += 1
                yield ds
        finally:
            self.closed += 1
            self.closed_by_service.append(req.message_id in req.assoc._running)
            self.closed_event.set()


def patient_query(pid: str) -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = "PATIENT"
    q.PatientID = pid
    q.PatientName = ""
    return q


@pytest.fixture
async def find_server() -> AsyncIterator[tuple[aiodicom.Server, CountingFind]]:
    server = aiodicom.Server("FINDSCP")
    handler = CountingFind()
    serve_find(server, handler, models=("patient",))
    await server.start("127.0.0.1", 0)
    try:
        yield server, handler
    finally:
        await server.close(timeout=1.0)


@pytest.mark.parametrize("how", ["reset", "close"])
async def test_peer_vanishes_mid_find_closes_handler(
    find_server: tuple[aiodicom.Server, CountingFind], how: str
) -> None:
    server, handler = find_server
    baseline = set(asyncio.all_tasks())
    assoc = await aiodicom.associate("127.0.0.1", server.port, contexts=[PATIENT_FIND, VERIFICATION])
    srv_assoc = server_association(server)
    results = assoc.find(patient_query("0"), "patient")  # endless matches
    matches = 0
    with pytest.raises((AssociationAborted, ConnectionError)):
        async for status, ident in results:
            assert status.is_pending, status  # an endless find never ends by itself
            matches += 1
            if matches == 100:
                vanish(assoc.transport, how)
    await closed(srv_assoc)
    await closed(assoc)
    async with asyncio.timeout(DEADLINE):
        await handler.closed_event.wait()  # the handler's generator was closed (aclose ran)
    assert handler.started == handler.closed == 1
    assert handler.closed_by_service == [True]
    assert handler.yielded >= 100
    assert not server.associations and not srv_assoc._running
    await results.aclose()
    await tasks_settle(baseline)

    # Still serves, and a find that runs to the end closes its generator too.
    handler.closed_event.clear()
    async with aiodicom.associate("127.0.0.1", server.port, contexts=[PATIENT_FIND, VERIFICATION]) as again:
        assert await again.echo() == 0
        got = [(int(s), ident.PatientID if ident is not None else None)
               async for s, ident in again.find(patient_query("3"), "patient")]
    assert got == [(0xFF00, "P000001"), (0xFF00, "P000002"), (0xFF00, "P000003"), (0x0000, None)]
    assert handler.closed == 2 and handler.closed_by_service == [True, True]


# --------------------------------------------------------------------------
# 4. handlers that raise


class Boom(RuntimeError):
    pass


async def failing_store(req: StoreRequest) -> int:
    pid = req.dataset.PatientID
    if pid == "BOOM":
        raise Boom("store handler exploded")
    if pid == "FULL":
        raise OSError(errno.ENOSPC, "No space left on device")
    return 0x0000


async def failing_find(req: FindRequest) -> AsyncIterator[Dataset]:
    pid = req.identifier.PatientID
    if pid == "BOOM":
        raise Boom("find handler exploded")
    for n in (1, 2):
        ds = Dataset()
        ds.QueryRetrieveLevel = "PATIENT"
        ds.PatientID = f"{pid}{n}"
        yield ds
    if pid == "MIDWAY":
        raise Boom("find handler exploded midway")


async def failing_get(req: GetRequest) -> AsyncIterator[Any]:
    if req.patient_id == "BOOM":
        raise Boom("get handler exploded")
    yield 2
    yield make_ct(1, pid=req.patient_id or "")
    if req.patient_id == "MIDWAY":
        raise Boom("get handler exploded midway")
    yield make_ct(2, pid=req.patient_id or "")


def get_query(pid: str) -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = "PATIENT"
    q.PatientID = pid
    return q


async def run_get(assoc: Association, pid: str) -> tuple[list[str], GetResult]:
    uids: list[str] = []
    result: GetResult | None = None
    async with assoc.get(get_query(pid), "patient") as items:
        async for item in items:
            if isinstance(item, ReceivedInstance):
                uids.append(item.sop_instance_uid)
            elif isinstance(item, GetResult):
                result = item
    assert result is not None
    return uids, result


async def find_all(assoc: Association, pid: str) -> tuple[list[str], int, str | None]:
    async with assoc.find(patient_query(pid), "patient") as results:
        pids = [ident.PatientID async for _s, ident in results if ident is not None]
    assert results.final_status is not None and results.final_command is not None
    return pids, int(results.final_status), results.final_command.error_comment


async def test_raising_handlers_answer_failure_and_keep_association() -> None:
    server = aiodicom.Server("FAILSCP")
    serve_store(server, failing_store, sop_classes=[CT])
    serve_find(server, failing_find, models=("patient",))
    serve_get(server, failing_get, models=(PATIENT_GET,), storage_classes=[CT])
    await server.start("127.0.0.1", 0)
    try:
        contexts, roles = get_contexts([CT], models=("patient",), extra=[(CT, [EXPLICIT]), PATIENT_FIND, VERIFICATION])
        async with aiodicom.associate(
            "127.0.0.1", server.port, contexts=contexts, roles={uid: (True, True) for uid in roles}
        ) as assoc:
            # C-STORE: 0xC001 for a failing handler, 0xA700 for "no space left".
            assert int(await assoc.store(make_ct(1, pid="BOOM"))) == STORE_HANDLER_FAILED
            assert int(await assoc.store(make_ct(2, pid="FULL"))) == STORE_OUT_OF_RESOURCES
            assert int(await assoc.store(make_ct(3, pid="OK"))) == 0x0000

            # C-FIND: 0xC001 with the exception in the comment, before or after matches.
            pids, status, comment = await find_all(assoc, "BOOM")
            assert (pids, status) == ([], FIND_HANDLER_FAILED) and comment and "Boom" in comment
            pids, status, comment = await find_all(assoc, "MIDWAY")
            assert (pids, status) == (["MIDWAY1", "MIDWAY2"], FIND_HANDLER_FAILED) and comment
            assert (await find_all(assoc, "OK"))[:2] == (["OK1", "OK2"], 0x0000)

            # C-GET: 0xC000 "handler error", with the sub-operations done so far counted.
            uids, result = await run_get(assoc, "BOOM")
            assert uids == [] and int(result.status) == GET_UNABLE_TO_PROCESS
            assert result.error_comment and "Boom" in result.error_comment
            uids, result = await run_get(assoc, "MIDWAY")
            assert uids == [make_ct(1).SOPInstanceUID] and int(result.status) == GET_UNABLE_TO_PROCESS
            assert result.completed == 1
            uids, result = await run_get(assoc, "OK")
            assert len(uids) == 2 and result.ok and result.completed == 2

            # Same association throughout: nothing was aborted.
            assert await assoc.echo() == 0
            assert assoc.abort_info is None and assoc.is_established
    finally:
        await server.close(timeout=1.0)


async def test_archive_store_failure_leaves_no_file(
    archive: ArchiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive's index commit fails: 0xC001, the written file is removed, nothing indexed."""
    root = archive.storage.root
    index = archive.storage.index

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise Boom("index is on fire")

    ds = make_ct(1, pixels=64 * 1024)
    async with archive_client(archive) as assoc:
        monkeypatch.setattr(index, "add_instance", broken)  # after the file's commit
        assert int(await assoc.store(ds)) == STORE_HANDLER_FAILED
        assert storage_files(root) == []
        assert await archive.storage.index.get_instance(ds.SOPInstanceUID) is None
        monkeypatch.undo()
        assert (await assoc.store(ds)).is_success  # the same association keeps working
        assert await assoc.echo() == 0
    assert [p.name for p in storage_files(root)] == [f"{ds.SOPInstanceUID}.dcm"]
    assert await archive.storage.index.get_instance(ds.SOPInstanceUID) is not None


# --------------------------------------------------------------------------
# 5. graceful shutdown: Server.close(timeout)


class GatedFind:
    """Yields one match, then waits for ``release`` before the second."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.closed = asyncio.Event()
        self.closed_by_service: bool | None = None  # see CountingFind

    async def __call__(self, req: FindRequest) -> AsyncIterator[Dataset]:
        try:
            for n in (1, 2):
                if n == 2:
                    self.entered.set()
                    await self.release.wait()
                ds = Dataset()
                ds.QueryRetrieveLevel = "PATIENT"
                ds.PatientID = f"G{n}"
                yield ds
        finally:
            self.closed_by_service = req.message_id in req.assoc._running
            self.closed.set()


async def collect_find(assoc: Association) -> tuple[list[str], int | None]:
    results = assoc.find(patient_query("*"), "patient")
    pids = [ident.PatientID async for _s, ident in results if ident is not None]
    return pids, None if results.final_status is None else int(results.final_status)


async def connection_refused(port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def start_gated_server() -> tuple[aiodicom.Server, GatedFind]:
    server = aiodicom.Server("GATESCP")
    handler = GatedFind()
    serve_find(server, handler, models=("patient",))
    await server.start("127.0.0.1", 0)
    return server, handler


async def test_close_lets_running_find_finish_and_refuses_new_connections() -> None:
    server, handler = await start_gated_server()
    port = server.port
    close_task: asyncio.Task[None] | None = None
    try:
        assoc = await aiodicom.associate("127.0.0.1", port, contexts=[PATIENT_FIND, VERIFICATION])
        consumer = asyncio.create_task(collect_find(assoc))
        async with asyncio.timeout(DEADLINE):
            await handler.entered.wait()  # mid C-FIND: one match sent, the handler waits

        close_task = asyncio.create_task(server.close(timeout=DEADLINE))
        await poll(lambda: not server.sockets, "server stopped listening")
        assert await connection_refused(port)  # no new connections once close began
        assert not consumer.done() and not close_task.done()  # the running find is not cut off

        handler.release.set()  # released before the deadline
        async with asyncio.timeout(DEADLINE):
            pids, final = await consumer
        assert (pids, final) == (["G1", "G2"], 0x0000)
        assert await assoc.echo() == 0  # the open association still works during close
        await assoc.release()
        async with asyncio.timeout(DEADLINE):
            await close_task  # returns once the last association is gone
        assert assoc.abort_info is None  # released, not aborted
        assert not server.associations and handler.closed.is_set()
    finally:
        handler.release.set()
        if close_task is None:
            await server.close(timeout=1.0)
        elif not close_task.done():
            close_task.cancel()


async def test_close_aborts_idle_association_after_deadline() -> None:
    server, _handler = await start_gated_server()
    assoc = await aiodicom.associate("127.0.0.1", server.port, contexts=[PATIENT_FIND, VERIFICATION])
    assert await assoc.echo() == 0
    srv_assoc = server_association(server)
    async with asyncio.timeout(DEADLINE):
        await server.close(timeout=0.5)  # the association stays idle past the deadline
        await assoc.wait_closed()
    assert srv_assoc.closed.done() and not server.associations
    assert assoc.abort_info is not None and assoc.abort_info.by_peer  # the client sees an A-ABORT


async def test_close_aborts_running_find_after_deadline_and_closes_handler() -> None:
    server, handler = await start_gated_server()
    baseline = set(asyncio.all_tasks())
    assoc = await aiodicom.associate("127.0.0.1", server.port, contexts=[PATIENT_FIND, VERIFICATION])
    consumer = asyncio.create_task(collect_find(assoc))
    async with asyncio.timeout(DEADLINE):
        await handler.entered.wait()
        await server.close(timeout=0.5)  # never released: aborted at the deadline
        await handler.closed.wait()  # the handler's generator was closed...
        assert handler.closed_by_service  # ...by the service's clean-up
        with pytest.raises(AssociationAborted):
            await consumer
        await assoc.wait_closed()
    assert assoc.abort_info is not None and assoc.abort_info.by_peer
    assert not server.associations
    await tasks_settle(baseline)


# --------------------------------------------------------------------------
# 6. SIGTERM on `aiodicom serve`


async def read_line_until(stream: asyncio.StreamReader, pattern: str, seen: list[str]) -> re.Match[str]:
    async with asyncio.timeout(DEADLINE):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"`aiodicom serve` output ended without {pattern!r}: {seen}")
            seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match


async def test_sigterm_on_serve_with_open_association(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiodicom", "serve", "--port", "0", "--aet", "TERMSCP", "--storage", str(storage),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out: list[str] = []
    ds = make_ct(1, pixels=8192)
    try:
        port = int((await read_line_until(proc.stdout, r"serving .* on [\d.]+:(\d+)", out)).group(1))
        async with aiodicom.associate("127.0.0.1", port, called_ae="TERMSCP", calling_ae="TERMSCU",
                                      contexts=[(CT, [EXPLICIT]), VERIFICATION]) as assoc:
            assert (await assoc.store(ds)).is_success
            proc.send_signal(signal.SIGTERM)  # with the association open
            await read_line_until(proc.stdout, r"shutting down", out)
            assert proc.returncode is None  # waits for the open association...
            assert await assoc.echo() == 0  # ...which is still served
        async with asyncio.timeout(DEADLINE):  # released: the server exits
            rc = await proc.wait()
        err = (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert rc == 0, err
    assert "Traceback" not in err, err
    assert re.search(r"association closed calling_ae=TERMSCU .*C-ECHO=1,C-STORE=1", err), err

    # After a restart (recovery included) the instance is on disk and indexed.
    server = await create_archive_server(storage, "TERMSCP", fsync=False)
    try:
        loc = await server.storage.index.get_instance(ds.SOPInstanceUID)
        assert loc is not None
        assert [p.name for p in storage_files(storage)] == [f"{ds.SOPInstanceUID}.dcm"]
    finally:
        await server.close(timeout=1.0)
