"""Cancelling C-FIND / C-GET the asyncio way: task.cancel() and asyncio.timeout().

The SCP's handlers block on an asyncio.Event the test controls; the test
learns that the SCP saw the C-CANCEL-RQ from an aiodicom.events
subscription (no sleeps as synchronisation).  Every test checks that no
task outlives it and that asyncio logged no error ("Task was destroyed but
it is pending", "Future exception was never retrieved", ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset

import aiodicom
from aiodicom import events
from aiodicom.dimse.commands import C_FIND_RQ, response_to
from aiodicom.dimse.fragments import Message
from aiodicom.dimse.status import Category
from aiodicom.services.find import settle
from aiodicom.services.get import GetResult, ReceivedInstance
from tests._sync import tasks_settle, wait_until

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
PATIENT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
DEADLINE = 10.0


@contextlib.asynccontextmanager
async def no_leaks(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    """No task created inside survives the block; asyncio logs no ERROR."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    before = asyncio.all_tasks()
    yield
    await tasks_settle(before, DEADLINE)  # waits on the tasks themselves
    gc.collect()
    await asyncio.sleep(0)  # one loop pass: run any callback the collection scheduled
    assert asyncio.all_tasks() == before
    errors = [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


class Slow:
    """A server whose find/get handlers send one result, then wait for ``gate``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.cancel_seen = asyncio.Event()
        self.server = aiodicom.Server("PACS", dimse_timeout=5.0)
        self.find_requests: list[aiodicom.FindRequest] = []
        aiodicom.serve_find(self.server, self.find_handler, models=("patient",))
        aiodicom.serve_get(self.server, self.get_handler, ["patient"], [CT])
        self._unsub = events.subscribe(self._on_message, kinds={events.MESSAGE_RECEIVED})

    def _on_message(self, ev: events.Event) -> None:
        if ev.data["command"] == "C-CANCEL-RQ" and ev.assoc is not None and not ev.assoc.requestor:
            self.cancel_seen.set()

    async def find_handler(self, req: aiodicom.FindRequest) -> AsyncIterator[Dataset]:
        self.find_requests.append(req)
        ds = Dataset()
        ds.PatientID = "P1"
        yield ds
        await self.gate.wait()
        yield ds

    async def get_handler(self, req: aiodicom.GetRequest) -> AsyncIterator[Any]:
        yield 3
        yield instance(1)
        await self.gate.wait()
        yield instance(2)
        yield instance(3)

    async def __aenter__(self) -> Slow:
        await self.server.start("127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._unsub()
        self.gate.set()
        await self.server.close(timeout=1.0)

    def associate(self, **kw: Any) -> aiodicom.associate:
        contexts, roles = aiodicom.get_contexts([CT], models=["patient"], extra=[VERIFICATION, PATIENT_FIND])
        return aiodicom.associate("127.0.0.1", self.server.port, called_ae="PACS", contexts=contexts,
                                  roles=roles, **kw)

    def pool(self, **kw: Any) -> aiodicom.Pool:
        contexts, roles = aiodicom.get_contexts([CT], models=["patient"], extra=[VERIFICATION, PATIENT_FIND])
        return aiodicom.Pool("127.0.0.1", self.server.port, called_ae="PACS", contexts=contexts, roles=roles,
                             **kw)

    def open_gate_on_cancel(self) -> asyncio.Task[None]:
        async def run() -> None:
            await self.cancel_seen.wait()
            self.gate.set()

        return asyncio.create_task(run())


def instance(i: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.77.{i}"
    ds.PatientID = "P1"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = EXPLICIT
    return ds


def query() -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = "PATIENT"
    q.PatientID = "P1"
    return q


def get_identifier() -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = "PATIENT"
    q.PatientID = "P1"
    return q


# ------------------------------------------------------------------ C-FIND


async def test_find_task_cancel(caplog: pytest.LogCaptureFixture) -> None:
    async with no_leaks(caplog), Slow() as slow, slow.associate() as assoc:
        first = asyncio.Event()
        holder: dict[str, aiodicom.FindResults] = {}

        async def consumer() -> None:
            async with assoc.find(query()) as results:
                holder["r"] = results
                async for _status, _ds in results:
                    first.set()

        task = asyncio.create_task(consumer())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert slow.cancel_seen.is_set()  # C-CANCEL went out before the drain ended
        assert holder["r"].final_status == 0xFE00
        assert assoc.is_established
        assert await assoc.echo() == 0
        slow.gate.set()
        statuses = [s async for s, _ in assoc.find(query())]
        assert statuses == [0xFF00, 0xFF00, 0x0000]


async def test_find_timeout_plain_async_for(caplog: pytest.LogCaptureFixture) -> None:
    """asyncio.timeout around a bare ``async for``: C-CANCEL at once, drained in the background."""
    async with no_leaks(caplog), Slow() as slow, slow.associate() as assoc:
        loop = asyncio.get_running_loop()
        got = 0
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(DEADLINE) as cm:
                async for _status, ds in assoc.find(query()):
                    got += 1
                    cm.reschedule(loop.time())  # "time out" right after the first match
        assert got == 1
        async with asyncio.timeout(DEADLINE):
            await slow.cancel_seen.wait()
            await settle(assoc)  # the background drain got the final response
        assert assoc.is_established
        assert await assoc.echo() == 0


async def test_find_timeout_through_pool(caplog: pytest.LogCaptureFixture) -> None:
    async with no_leaks(caplog), Slow() as slow:
        async with slow.pool() as pool:
            loop = asyncio.get_running_loop()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(DEADLINE) as cm:
                    async for _status, _ds in pool.find(query()):
                        cm.reschedule(loop.time())
            assert slow.cancel_seen.is_set()
            assert pool.idle == 1 and pool.size == 1  # returned, reusable
            assert await pool.echo() == 0
            assert slow.server.total_associations == 1


async def test_find_peer_ignores_cancel_aborts(caplog: pytest.LogCaptureFixture) -> None:
    """A peer that never answers the C-CANCEL: the association is aborted after the DIMSE timeout."""
    async with no_leaks(caplog), Slow() as slow:
        gate = slow.gate

        async def deaf(assoc: aiodicom.Association, msg: Message) -> None:
            ds = Dataset()
            ds.PatientID = "P1"
            from aiodicom.dataset import encode_identifier

            ctx = assoc.contexts[msg.context_id]
            await assoc.send(msg.context_id, response_to(msg.command, 0xFF00),
                             [encode_identifier(ds, ctx.transfer_syntax)])
            await gate.wait()  # ignores C-CANCEL

        slow.server.on(C_FIND_RQ, deaf)
        async with slow.associate(dimse_timeout=0.3) as assoc:
            results = assoc.find(query())
            task = asyncio.create_task(anext_then_wait(results))
            await slow_first(results)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with asyncio.timeout(DEADLINE):
                await assoc.wait_closed()
            assert assoc.abort_info is not None and not assoc.abort_info.by_peer


async def anext_then_wait(results: aiodicom.FindResults) -> None:
    async with results:
        async for _ in results:
            pass


async def slow_first(results: aiodicom.FindResults) -> None:
    # no event for the consumer task having taken a match: poll, with a deadline
    await wait_until(lambda: results.matches >= 1, DEADLINE, "the first C-FIND match reached the consumer")


# ------------------------------------------------------------------- C-GET


async def test_get_task_cancel(caplog: pytest.LogCaptureFixture) -> None:
    async with no_leaks(caplog), Slow() as slow, slow.associate() as assoc:
        first = asyncio.Event()
        ops: list[Any] = []

        async def consumer() -> None:
            async with assoc.get(get_identifier(), "patient") as op:
                ops.append(op)
                async for item in op:
                    if isinstance(item, ReceivedInstance):
                        first.set()

        opener = slow.open_gate_on_cancel()
        task = asyncio.create_task(consumer())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await opener
        result = ops[0].result
        assert isinstance(result, GetResult)
        assert result.cancelled and result.status.category == Category.CANCEL
        assert result.received == 1
        assert assoc.is_established
        assert await assoc.echo() == 0


async def test_get_timeout_through_pool(caplog: pytest.LogCaptureFixture) -> None:
    async with no_leaks(caplog), Slow() as slow:
        async with slow.pool() as pool:
            loop = asyncio.get_running_loop()
            opener = slow.open_gate_on_cancel()
            received = 0
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(DEADLINE) as cm:
                    async for item in pool.get(get_identifier(), "patient"):
                        if isinstance(item, ReceivedInstance):
                            received += 1
                            cm.reschedule(loop.time())
            await opener
            assert received == 1
            assert pool.idle == 1
            assert await pool.echo() == 0
            assert slow.server.total_associations == 1


async def test_get_peer_ignores_cancel_aborts(caplog: pytest.LogCaptureFixture) -> None:
    async with no_leaks(caplog), Slow() as slow, slow.associate(dimse_timeout=0.3) as assoc:
        loop = asyncio.get_running_loop()
        # the gate stays closed: the SCP never gets to see the C-CANCEL
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(DEADLINE) as cm:
                async with assoc.get(get_identifier(), "patient") as op:
                    async for item in op:
                        if isinstance(item, ReceivedInstance):
                            cm.reschedule(loop.time())
        assert slow.cancel_seen.is_set()
        async with asyncio.timeout(DEADLINE):
            await assoc.wait_closed()
        assert assoc.abort_info is not None
