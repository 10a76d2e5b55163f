"""aiodicom.Pool: reuse, limit + FIFO fairness, dead associations, idle release, close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pydicom.dataset import Dataset

import aiodicom
from aiodicom.dimse.commands import C_ECHO_RQ
from aiodicom.services.echo import handle_echo
from tests._sync import wait_until

VERIFICATION = "1.2.840.10008.1.1"
DEADLINE = 10.0


@pytest.fixture
async def server() -> AsyncIterator[aiodicom.Server]:
    srv = aiodicom.Server("PACS")

    async def find_handler(req: aiodicom.FindRequest) -> AsyncIterator[Dataset]:
        for i in range(3):
            ds = Dataset()
            ds.PatientID = f"P{i}"
            yield ds

    aiodicom.serve_find(srv, find_handler)
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.close(timeout=1.0)


def make_pool(server: aiodicom.Server, **kw: object) -> aiodicom.Pool:
    kw.setdefault("contexts", [VERIFICATION, "1.2.840.10008.5.1.4.1.2.1.1"])
    return aiodicom.Pool("127.0.0.1", server.port, called_ae="PACS", **kw)  # type: ignore[arg-type]


async def test_reuse_same_association(server: aiodicom.Server) -> None:
    async with make_pool(server) as pool:
        seen = set()
        for _ in range(10):
            async with pool.acquire() as assoc:
                seen.add(id(assoc))
                assert await assoc.echo() == 0
        assert len(seen) == 1
        for _ in range(10):
            assert await pool.echo() == 0
        assert server.total_associations == 1
        assert pool.size == 1 and pool.idle == 1 and pool.waiting == 0
    assert pool.size == 0
    assert not server.associations or all(not a.is_established for a in server.associations)


async def test_lifo_warm_reuse(server: aiodicom.Server) -> None:
    async with make_pool(server, max_associations=3) as pool:
        lease1, lease2 = pool.acquire(), pool.acquire()
        a1 = await lease1.__aenter__()
        a2 = await lease2.__aenter__()
        await lease1.__aexit__(None, None, None)
        await lease2.__aexit__(None, None, None)
        async with pool.acquire() as again:
            assert again is a2  # most recently returned first
        assert a1 is not a2


async def test_limit_and_fifo_fairness(server: aiodicom.Server) -> None:
    max_open = 0
    gate = asyncio.Event()
    real_opened = server._association_opened

    def opened(assoc: aiodicom.Association) -> None:
        nonlocal max_open
        real_opened(assoc)
        max_open = max(max_open, len(server.associations))

    server._association_opened = opened  # type: ignore[method-assign]
    order: list[int] = []
    two_leased = asyncio.Event()
    async with make_pool(server, max_associations=2) as pool:

        async def worker(i: int) -> None:
            async with pool.acquire() as assoc:
                order.append(i)
                if len(order) == 2:
                    two_leased.set()
                await gate.wait()
                await assoc.echo()

        tasks = []
        for i in range(10):
            tasks.append(asyncio.create_task(worker(i)))
            # each request is registered (queued or opening) before the next
            await wait_until(lambda n=i + 1: pool.size + pool.waiting >= n, DEADLINE, f"request {i} registered")
        async with asyncio.timeout(DEADLINE):
            await two_leased.wait()
        assert pool.size == 2 and pool.waiting == 8
        gate.set()
        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(*tasks)
        assert order == list(range(10))
        assert max_open <= 2
        assert server.total_associations == 2


async def test_peer_abort_mid_use_is_dropped_and_echo_retried(server: aiodicom.Server) -> None:
    calls = 0

    async def flaky_echo(assoc: aiodicom.Association, msg: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the second echo: abort instead of answering
            assoc.abort()
            return
        await handle_echo(assoc, msg)  # type: ignore[arg-type]

    server.on(C_ECHO_RQ, flaky_echo)
    async with make_pool(server) as pool:
        async with pool.acquire() as first:
            assert await first.echo() == 0
        assert await pool.echo() == 0  # aborted on `first`, retried on a fresh one
        assert first.closed.done() and first.abort_info is not None
        assert calls == 3
        async with pool.acquire() as second:
            assert second is not first and second.is_established
        assert pool.size == 1
        assert server.total_associations == 2


async def test_idle_association_aborted_by_peer_is_dropped(server: aiodicom.Server) -> None:
    async with make_pool(server) as pool:
        async with pool.acquire() as first:
            pass
        for a in list(server.associations):
            a.abort()
        async with asyncio.timeout(DEADLINE):
            await first.wait_closed()
        assert pool.idle == 0 and pool.size == 0
        async with pool.acquire() as second:
            assert second is not first
            assert await second.echo() == 0


async def test_no_retry_when_second_attempt_fails_too(server: aiodicom.Server) -> None:
    async def abort_always(assoc: aiodicom.Association, msg: object) -> None:
        assoc.abort()

    server.on(C_ECHO_RQ, abort_always)
    async with make_pool(server) as pool:
        with pytest.raises(aiodicom.AssociationAborted):
            await pool.echo()
        assert server.total_associations == 2  # one try + one retry
        assert pool.size == 0


async def test_find_through_pool(server: aiodicom.Server) -> None:
    async with make_pool(server) as pool:
        q = Dataset()
        q.QueryRetrieveLevel = "PATIENT"
        q.PatientID = ""
        results = [ds.PatientID async for s, ds in pool.find(q, "patient") if ds is not None]
        assert results == ["P0", "P1", "P2"]
        # early exit with async with: C-CANCEL, drain, association returned
        async with pool.find(q) as it:
            async for status, ds in it:
                break
        assert pool.idle == 1
        assert await pool.echo() == 0
        assert server.total_associations == 1


async def test_idle_release(server: aiodicom.Server) -> None:
    async with make_pool(server, idle_timeout=0.05) as pool:
        async with pool.acquire() as assoc:
            pass
        assert pool.idle == 1
        async with asyncio.timeout(DEADLINE):
            await assoc.wait_closed()
        assert assoc.abort_info is None  # released, not aborted
        assert pool.size == 0
        async with pool.acquire() as fresh:
            assert fresh is not assoc


async def test_close_fails_waiters(server: aiodicom.Server) -> None:
    pool = make_pool(server, max_associations=1)
    lease = pool.acquire()
    held = await lease.__aenter__()
    waiters = [asyncio.create_task(pool.echo()) for _ in range(3)]
    await wait_until(lambda: pool.waiting >= 3, DEADLINE, "three waiters queued")
    closing = asyncio.create_task(pool.close())
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, aiodicom.PoolClosed) for r in results), results
    assert not closing.done()  # waits for the lent association
    await lease.__aexit__(None, None, None)
    async with asyncio.timeout(DEADLINE):
        await closing
    assert held.closed.done() and held.abort_info is None
    with pytest.raises(aiodicom.PoolClosed):
        async with pool.acquire():
            pass


async def test_cancelled_waiter_leaves_queue(server: aiodicom.Server) -> None:
    async with make_pool(server, max_associations=1) as pool:
        async with pool.acquire() as assoc:
            t = asyncio.create_task(pool.echo())
            await wait_until(lambda: pool.waiting >= 1, DEADLINE, "the waiter queued")
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            assert pool.waiting == 0
        assert pool.idle == 1
        assert await pool.echo() == 0
        assert assoc.is_established


async def test_connect_failure_frees_slot(free_port_unused: int) -> None:
    pool = aiodicom.Pool("127.0.0.1", free_port_unused, max_associations=1, connect_timeout=2.0)
    for _ in range(2):
        with pytest.raises(OSError):
            await pool.echo()
    assert pool.size == 0
    await pool.close()


@pytest.fixture
def free_port_unused() -> int:
    from tests.conftest import free_port

    return free_port()
