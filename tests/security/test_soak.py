"""Soak: bounded mixed echo/store/find load with random connects and aborts.

A fixed number of operations (not a duration) against one in-process
server, so the run is reproducible and CI-friendly.  Afterwards: no errors
but the injected ones, no leaked tasks, file descriptors or associations,
and bounded RSS growth.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

import aiodicom
from aiodicom.aio.errors import AssociationAborted
from aiodicom.services.find import FindRequest, serve_find
from aiodicom.services.store import serve_store, store_to_directory
from aiodicom.uids import PatientRootQueryRetrieveInformationModelFind as PATIENT_FIND
from tests._sync import tasks_settle, wait_no_associations

pytestmark = pytest.mark.soak

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
OPERATIONS = 1000  # per event loop implementation
#: ``AIODICOM_SOAK_SECONDS=180 pytest -m soak`` runs by duration instead (a
#: few minutes of load; the operation count then only sets the minimum).
SOAK_SECONDS = float(os.environ.get("AIODICOM_SOAK_SECONDS", "0") or 0)
WORKERS = 8
SEED = 20240601
RSS_BOUND = 50 * 1024 * 1024


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def fd_table() -> dict[str, str]:
    out = {}
    for f in os.listdir("/proc/self/fd"):
        try:
            out[f] = os.readlink(f"/proc/self/fd/{f}")
        except OSError:
            pass
    return out


def rss_bytes() -> int:
    with open("/proc/self/status") as fp:
        for line in fp:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0  # pragma: no cover


def make_instance(i: int) -> Dataset:
    from pydicom import dcmread

    path = get_testdata_file("CT_small.dcm")
    if path is None:  # pragma: no cover
        pytest.skip("pydicom test file CT_small.dcm unavailable")
    ds = dcmread(path)
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.999.{i}"
    return ds


async def find_handler(req: FindRequest) -> AsyncIterator[Dataset]:
    for n in range(3):
        ds = Dataset()
        ds.QueryRetrieveLevel = "PATIENT"
        ds.PatientID = f"P{n}"
        yield ds


async def test_soak(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "aiodicom")
    template = make_instance(0)
    # libuv reserves one spare fd (/dev/null, for EMFILE handling) per loop on
    # its first listen(): make that part of the baseline.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    probe.close()
    await probe.wait_closed()
    gc.collect()
    tasks_before = {t for t in asyncio.all_tasks() if not t.done()}
    fds_before = fd_count()
    fd_table_before = fd_table()

    server = aiodicom.Server("SOAK", max_associations=64, artim_timeout=2.0)
    serve_store(server, store_to_directory(tmp_path / "in", fsync=False))
    serve_find(server, find_handler, models=("patient",))
    get_items = [make_instance(10_000 + n) for n in range(3)]

    async def get_handler(req: aiodicom.GetRequest) -> AsyncIterator[Dataset]:
        for ds in get_items:
            yield ds

    aiodicom.serve_get(server, get_handler, models=("patient",), storage_classes=[CT], strict=False)
    # C-GET runs on associations of its own (CT proposed with the SCP role)
    get_contexts, get_roles = aiodicom.get_contexts([CT], models=["patient"], extra=[VERIFICATION])
    await server.start("127.0.0.1", 0)
    port = server.port

    # warm up (first-use allocations, imports) before measuring memory
    async with aiodicom.associate("127.0.0.1", port, contexts=[VERIFICATION, CT, PATIENT_FIND]) as assoc:
        await assoc.echo()
        await assoc.store(template)
        async for _ in assoc.find(Dataset(), "patient"):
            pass
    gc.collect()
    rss_before = rss_bytes()

    rng = random.Random(SEED)
    budget = OPERATIONS
    counts: Counter[str] = Counter()
    errors: list[BaseException] = []

    loop = asyncio.get_running_loop()
    until = loop.time() + SOAK_SECONDS

    def take() -> bool:
        nonlocal budget
        if budget <= 0 and loop.time() >= until:
            return False
        budget -= 1
        return True

    async def raw_connect_and_drop() -> None:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if rng.random() < 0.5:
            writer.write(b"\x01\x00\x00\x00")  # half a PDU header, then gone
        writer.close()
        await writer.wait_closed()
        counts["raw-drop"] += 1

    async def retrieve() -> None:
        """One C-GET on an association of its own; sometimes left after the first instance."""
        q = Dataset()
        q.QueryRetrieveLevel = "PATIENT"
        q.PatientID = "P1"
        async with aiodicom.associate(
            "127.0.0.1", port, contexts=get_contexts, roles=get_roles, dimse_timeout=10
        ) as gassoc:
            if rng.random() < 0.2:
                # injected: leave the retrieve after the first instance (C-CANCEL)
                async with gassoc.get(q, "patient") as op:
                    async for item in op:
                        if isinstance(item, aiodicom.ReceivedInstance):
                            break
                counts["get-cancel"] += 1
                assert await gassoc.echo() == 0  # still usable
                return
            result = None
            received = 0
            async for item in gassoc.get(q, "patient"):
                if isinstance(item, aiodicom.ReceivedInstance):
                    received += 1
                elif isinstance(item, aiodicom.GetResult):
                    result = item
            assert result is not None and result.status == 0 and received == 3, result

    async def session(wid: int) -> None:
        assoc = await aiodicom.associate(
            "127.0.0.1", port, calling_ae=f"W{wid}", contexts=[VERIFICATION, CT, PATIENT_FIND], dimse_timeout=10
        )
        try:
            for _ in range(rng.randint(1, 8)):
                if not take():
                    break
                kind = rng.choice(("echo", "store", "store", "find", "get"))
                if kind == "echo":
                    assert await assoc.echo() == 0
                elif kind == "store":
                    template.SOPInstanceUID = f"1.2.826.0.1.3680043.10.999.{rng.randrange(10**9)}"
                    assert (await assoc.store(template)).is_success
                elif kind == "find":
                    found = [i async for _s, i in assoc.find(Dataset(), "patient") if i is not None]
                    assert len(found) == 3
                else:
                    await retrieve()
                counts[kind] += 1
            if rng.random() < 0.25:
                assoc.abort()  # injected: abort instead of release
                await assoc.wait_closed()
                counts["abort"] += 1
            else:
                await assoc.release()
        except BaseException:
            assoc.abort()
            raise

    async def worker(wid: int) -> None:
        while budget > 0 or loop.time() < until:
            try:
                r = rng.random()
                if r < 0.1:
                    await raw_connect_and_drop()
                elif r < 0.15 and take():
                    # injected: abort in the middle of a C-STORE
                    assoc = await aiodicom.associate("127.0.0.1", port, contexts=[CT])
                    store = asyncio.ensure_future(assoc.store(template))
                    await asyncio.sleep(0)
                    assoc.abort()
                    try:
                        await store
                    except AssociationAborted:
                        pass
                    await assoc.wait_closed()
                    counts["store-abort"] += 1
                else:
                    await session(wid)
            except BaseException as exc:  # noqa: BLE001 - collected, reported below
                errors.append(exc)
                return

    async with asyncio.timeout(60 + SOAK_SECONDS * 1.5):
        await asyncio.gather(*(worker(w) for w in range(WORKERS)))
    assert not errors, errors
    done = sum(counts[k] for k in ("echo", "store", "find", "get", "store-abort"))
    assert done == OPERATIONS - budget and done >= OPERATIONS, counts
    assert counts["abort"] and counts["raw-drop"] and counts["store"] and counts["find"] and counts["get"], counts

    await wait_no_associations(server, 10)
    assert server.total_associations > 50
    gc.collect()
    rss_growth = rss_bytes() - rss_before
    await server.close(timeout=1.0)
    # Handlers cancelled by their association's close finish on a later loop
    # iteration: wait on those tasks (a task that never ends fails here).
    await tasks_settle(tasks_before | {asyncio.current_task()}, 10)
    gc.collect()

    leaked = {t for t in asyncio.all_tasks() if not t.done()} - tasks_before - {asyncio.current_task()}
    assert not leaked, leaked
    new_fds = {k: v for k, v in fd_table().items() if fd_table_before.get(k) != v}
    assert fd_count() <= fds_before, new_fds
    assert rss_growth < RSS_BOUND, rss_growth
    tracebacks = [r for r in caplog.records if r.exc_info is not None or r.levelno >= logging.ERROR]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
