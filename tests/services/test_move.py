"""C-MOVE SCU and SCP (aiodicom/services/move.py) over loopback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset

import aiodicom
from aiodicom import events
from aiodicom.services.move import (
    MoveInstance,
    MoveProgress,
    MoveRequest,
    serve_move,
    storage_contexts_for,
)
from aiodicom.services.store import StoreRequest, serve_store

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
PR_MOVE, SR_MOVE = "1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.2.2"
ROOT = "1.2.826.0.1.3680043.10.4321"


def make(n: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = f"{ROOT}.{n}"
    ds.PatientID = "P1"
    ds.StudyInstanceUID = f"{ROOT}.0"
    ds.SeriesInstanceUID = f"{ROOT}.0.1"
    ds.Modality = "CT"
    ds.InstanceNumber = n
    return ds


class Destination:
    """A storage SCP recording what it received (and failing some on request)."""

    def __init__(self, fail: set[str] = frozenset(), gate: asyncio.Event | None = None) -> None:  # type: ignore[assignment]
        self.received: list[tuple[str, tuple[str, int] | None]] = []
        self.fail = fail
        self.gate = gate
        self.server = aiodicom.Server("DEST")
        serve_store(self.server, self.handle, sop_classes=[CT])

    async def handle(self, req: StoreRequest) -> int:
        if self.gate is not None:
            await self.gate.wait()
        self.received.append((req.sop_instance_uid, req.move_originator))
        return 0xA700 if req.sop_instance_uid in self.fail else 0


@pytest.fixture
async def moving() -> AsyncIterator[Any]:
    """A C-MOVE SCP whose handler serves ``state["items"]`` and records the requests."""
    state: dict[str, Any] = {"items": [make(i) for i in range(1, 5)], "requests": [], "peers": {}}

    async def handler(req: MoveRequest) -> Any:
        state["requests"].append(req)
        for item in state["items"]:
            yield item

    server = aiodicom.Server("MOVESCP")
    serve_move(server, handler, lambda ae: state["peers"].get(ae), connect_timeout=2.0)
    await server.start("127.0.0.1", 0)
    state["server"] = server
    try:
        yield state
    finally:
        await server.close(timeout=1.0)


def ident(level: str = "SERIES") -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.StudyInstanceUID = f"{ROOT}.0"
    if level == "SERIES":
        ds.SeriesInstanceUID = f"{ROOT}.0.1"
    return ds


def scu(state: dict[str, Any]) -> aiodicom.associate:
    return aiodicom.associate("127.0.0.1", state["server"].port, calling_ae="MOVESCU", contexts=[PR_MOVE, SR_MOVE])


async def test_move_success_with_originator(moving: dict[str, Any]) -> None:
    dest = Destination()
    await dest.server.start("127.0.0.1", 0)
    moving["peers"]["DEST"] = ("127.0.0.1", dest.server.port)
    try:
        async with scu(moving) as assoc:
            items = [item async for item in assoc.move(ident(), "DEST", "study")]
        progress, result = items[:-1], items[-1]
        assert all(isinstance(p, MoveProgress) and p.status == 0xFF00 for p in progress)
        assert [(p.remaining, p.completed) for p in progress] == [(3, 1), (2, 2), (1, 3)]
        assert result.status == 0 and (result.completed, result.failed, result.warning) == (4, 0, 0)
        assert result.failed_sop_instance_uids == []
        req = moving["requests"][0]
        assert req.level == "SERIES" and req.destination_ae == "DEST"
        # Each C-STORE names the move originator and the C-MOVE's message ID.
        assert [r[1] for r in dest.received] == [("MOVESCU", req.message_id)] * 4
        assert [r[0] for r in dest.received] == [f"{ROOT}.{i}" for i in range(1, 5)]
    finally:
        await dest.server.close(timeout=1.0)


async def test_unknown_destination_and_bad_identifier(moving: dict[str, Any]) -> None:
    async with scu(moving) as assoc:
        result = await assoc.move(ident(), "NOWHERE", "study").wait()
        assert result.status == 0xA801 and "NOWHERE" in (result.error_comment or "")
        assert moving["requests"] == []
        bad = Dataset()
        bad.StudyInstanceUID = f"{ROOT}.0"  # no QueryRetrieveLevel
        result = await assoc.move(bad, "DEST", "study").wait()
        assert result.status == 0xA900
        no_key = Dataset()
        no_key.QueryRetrieveLevel = "SERIES"
        no_key.StudyInstanceUID = f"{ROOT}.0"
        result = await assoc.move(no_key, "DEST", "study").wait()
        assert result.status == 0xA900


async def test_partial_failure_b000_and_all_failed_a702(moving: dict[str, Any]) -> None:
    dest = Destination(fail={f"{ROOT}.2"})
    await dest.server.start("127.0.0.1", 0)
    moving["peers"]["DEST"] = ("127.0.0.1", dest.server.port)
    try:
        async with scu(moving) as assoc:
            result = await assoc.move(ident(), "DEST", "study").wait()
            assert result.status == 0xB000
            assert (result.completed, result.failed, result.warning) == (3, 1, 0)
            assert result.failed_sop_instance_uids == [f"{ROOT}.2"]
            dest.fail = {f"{ROOT}.{i}" for i in range(1, 5)}
            result = await assoc.move(ident(), "DEST", "study").wait()
            assert result.status == 0xA702 and result.failed == 4 and result.completed == 0
            assert len(result.failed_sop_instance_uids) == 4
    finally:
        await dest.server.close(timeout=1.0)


async def test_destination_refusing_is_a702(moving: dict[str, Any], port: int) -> None:
    # Nobody listens on the destination's port: every sub-operation fails.
    moving["peers"]["DEST"] = ("127.0.0.1", port)
    async with scu(moving) as assoc:
        result = await assoc.move(ident(), "DEST", "study").wait()
    assert result.status == 0xA702 and result.failed == 4 and result.completed == 0
    assert sorted(result.failed_sop_instance_uids) == [f"{ROOT}.{i}" for i in range(1, 5)]
    assert "DEST" in (result.error_comment or "")

    # A destination that rejects the association (wrong called AE): the same.
    strict = aiodicom.Server("OTHER", strict_called_ae=True)
    serve_store(strict, lambda req: asyncio.sleep(0, 0), sop_classes=[CT])
    await strict.start("127.0.0.1", 0)
    moving["peers"]["DEST"] = ("127.0.0.1", strict.port)
    try:
        async with scu(moving) as assoc:
            result = await assoc.move(ident(), "DEST", "study").wait()
        assert result.status == 0xA702 and result.failed == 4
        assert "rejected" in (result.error_comment or "")
    finally:
        await strict.close(timeout=1.0)


async def test_cancel_between_sub_operations(moving: dict[str, Any]) -> None:
    gate = asyncio.Event()
    dest = Destination(gate=gate)

    def on_message(ev: events.Event) -> None:
        # the C-MOVE SCP has the C-CANCEL-RQ: let the held sub-operation finish
        if ev.data["command"] == "C-CANCEL-RQ" and ev.assoc is not None and not ev.assoc.requestor:
            gate.set()

    unsubscribe = events.subscribe(on_message, kinds={events.MESSAGE_RECEIVED})
    await dest.server.start("127.0.0.1", 0)
    moving["peers"]["DEST"] = ("127.0.0.1", dest.server.port)
    try:
        async with scu(moving) as assoc:
            gate.set()
            async with asyncio.timeout(10):  # the gate opens only once the C-CANCEL-RQ is in
                async with assoc.move(ident(), "DEST", "study") as op:
                    async for item in op:
                        assert isinstance(item, MoveProgress)
                        gate.clear()  # hold the next sub-operation until the cancel is in
                        break
            result = op.result
            assert result is not None and result.cancelled
            assert result.status == 0xFE00
            assert result.completed is not None and result.completed < 4
            assert result.remaining == 4 - result.completed - (result.failed or 0)
            # The association is still usable.
            gate.set()
            result = await assoc.move(ident(), "DEST", "study").wait()
            assert result.status == 0
    finally:
        unsubscribe()
        await dest.server.close(timeout=1.0)


async def test_files_and_compressed_contexts(moving: dict[str, Any], tmp_path: Path) -> None:
    # Part 10 paths are read for their File Meta; a compressed instance gets
    # its own context and is sent as stored.
    paths = []
    for i, ts in ((1, EXPLICIT), (2, JPEG_BASELINE)):
        ds = make(i)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ts
        if ts == JPEG_BASELINE:
            from pydicom.encaps import encapsulate

            ds.PixelData = encapsulate([b"\xff\xd8fake\xff\xd9"])
            ds["PixelData"].VR = "OB"
        path = tmp_path / f"{i}.dcm"
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(str(path))
    moving["items"] = paths
    dest = Destination()
    dest.server.add_context(CT, [EXPLICIT, JPEG_BASELINE])
    await dest.server.start("127.0.0.1", 0)
    moving["peers"]["DEST"] = ("127.0.0.1", dest.server.port)
    try:
        async with scu(moving) as assoc:
            result = await assoc.move(ident(), "DEST", "study").wait()
        assert result.status == 0 and result.completed == 2
    finally:
        await dest.server.close(timeout=1.0)
    contexts = storage_contexts_for([MoveInstance(CT, "1", JPEG_BASELINE, "x"), MoveInstance(CT, "2", EXPLICIT, "y")])
    assert contexts == [(CT, [EXPLICIT, "1.2.840.10008.1.2"]), (CT, [JPEG_BASELINE])]


@pytest.mark.parametrize("how", ["task-cancel", "timeout"])
async def test_cancelling_the_task_sends_c_cancel(moving: dict[str, Any], how: str) -> None:
    """task.cancel() / asyncio.timeout inside ``async with`` sends C-CANCEL and settles the move."""
    from aiodicom import events

    gate = asyncio.Event()
    dest = Destination(gate=gate)
    await dest.server.start("127.0.0.1", 0)
    moving["peers"]["DEST"] = ("127.0.0.1", dest.server.port)

    def on_message(ev: events.Event) -> None:
        # the SCP saw the C-CANCEL: let the held sub-operation finish
        if ev.data["command"] == "C-CANCEL-RQ" and ev.assoc is not None and not ev.assoc.requestor:
            gate.set()

    unsubscribe = events.subscribe(on_message, kinds={events.MESSAGE_RECEIVED})
    try:
        async with scu(moving) as assoc:
            first = asyncio.Event()
            ops: list[Any] = []

            async def consumer() -> None:
                async with assoc.move(ident(), "DEST", "study") as op:
                    ops.append(op)
                    async for item in op:
                        gate.clear()  # hold the next sub-operation
                        first.set()

            gate.set()
            if how == "task-cancel":
                task = asyncio.create_task(consumer())
                await first.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            else:
                loop = asyncio.get_running_loop()
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(30) as cm:
                        inner = asyncio.create_task(consumer())
                        await first.wait()
                        cm.reschedule(loop.time())
                        await inner
            result = ops[0].result
            assert result is not None and result.cancelled and result.status == 0xFE00
            assert result.completed is not None and 1 <= result.completed < 4
            gate.set()
            assert (await assoc.move(ident(), "DEST", "study").wait()).status == 0
    finally:
        unsubscribe()
        await dest.server.close(timeout=1.0)


def _write_files(tmp_path: Path, n: int) -> list[str]:
    paths = []
    for i in range(1, n + 1):
        ds = make(i)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = EXPLICIT
        path = tmp_path / f"{i}.dcm"
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(str(path))
    return paths


async def test_next_file_is_read_while_the_destination_answers(
    moving: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read-ahead: file n+1 is opened and inspected while sub-operation n waits for its C-STORE-RSP."""
    from aiodicom.services import move as move_mod

    moving["items"] = _write_files(tmp_path, 3)
    inspected: list[str] = []
    second = asyncio.Event()
    real = move_mod._prepare_file

    async def spy(path: Any) -> Any:
        inspected.append(Path(path).name)
        if len(inspected) == 2:
            second.set()
        return await real(path)

    monkeypatch.setattr(move_mod, "_prepare_file", spy, raising=False)
    gate = asyncio.Event()
    dest = Destination(gate=gate)  # holds every C-STORE-RSP until the gate opens
    await dest.server.start("127.0.0.1", 0)
    moving["peers"]["DEST"] = ("127.0.0.1", dest.server.port)
    try:
        async with scu(moving) as assoc:
            op = asyncio.ensure_future(assoc.move(ident(), "DEST", "study").wait())
            await asyncio.wait_for(second.wait(), 10)  # the first sub-operation is still unanswered
            assert dest.received == [] and inspected == ["1.dcm", "2.dcm"]
            gate.set()
            result = await asyncio.wait_for(op, 10)
        assert result.status == 0 and result.completed == 3
        assert [r[0] for r in dest.received] == [f"{ROOT}.{i}" for i in (1, 2, 3)]
        assert inspected == ["1.dcm", "2.dcm", "3.dcm"]
    finally:
        gate.set()
        await dest.server.close(timeout=1.0)


async def test_unreadable_file_is_a_failed_sub_operation_and_read_ahead_is_closed(
    moving: dict[str, Any], tmp_path: Path
) -> None:
    paths = _write_files(tmp_path, 3)
    Path(paths[1]).write_bytes(b"not a Part 10 file")
    moving["items"] = [MoveInstance(CT, f"{ROOT}.{i}", EXPLICIT, p) for i, p in enumerate(paths, 1)]
    dest = Destination()
    await dest.server.start("127.0.0.1", 0)
    moving["peers"]["DEST"] = ("127.0.0.1", dest.server.port)
    fds_before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    try:
        async with scu(moving) as assoc:
            result = await assoc.move(ident(), "DEST", "study").wait()
        assert result.status == 0xB000 and (result.completed, result.failed) == (2, 1)
        assert result.failed_sop_instance_uids == [f"{ROOT}.2"]
        assert [r[0] for r in dest.received] == [f"{ROOT}.1", f"{ROOT}.3"]
    finally:
        await dest.server.close(timeout=1.0)
    if fds_before is not None:
        assert len(os.listdir("/proc/self/fd")) <= fds_before  # nothing read ahead was left open
