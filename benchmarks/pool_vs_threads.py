"""1,000 concurrent short C-FINDs from one process: aiodicom.Pool vs pynetdicom in threads.

    python -m benchmarks.pool_vs_threads [--requests 1000] [--pool 8] [--threads 32]

The SCP is an aiodicom server in a subprocess (this module with ``--serve``)
answering every C-FIND with one match.  Clients, all in this process:

* ``aiodicom-pool``: N concurrent tasks doing ``pool.find(...)`` through one
  :class:`aiodicom.Pool` (``--pool`` associations, reused).
* ``pynetdicom-pooled``: ``asyncio.to_thread`` calls sharing ``--pool``
  pre-established pynetdicom associations (a queue of associations, one per
  call at a time) -- the fair comparison to the Pool.
* ``pynetdicom-per-call``: ``asyncio.to_thread`` calls that each associate,
  find and release (what naive code does).

``asyncio.to_thread`` uses a ``--threads``-worker executor.  Prints
requests/s, p50 and p99 latency (from submission to final response, so
queueing is included) and the ratio to aiodicom.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import queue
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .procs import free_port, python_env, python_module, start_server

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


# ------------------------------------------------------------------- server


async def _serve(port: int) -> None:
    from pydicom.dataset import Dataset

    import aiodicom

    match = Dataset()
    match.QueryRetrieveLevel = "STUDY"
    match.PatientID = "PID1"
    match.StudyInstanceUID = "1.2.3.4"

    async def handler(req: aiodicom.FindRequest) -> Any:
        yield match

    server = aiodicom.Server("BENCH", max_pdu_length=0)
    aiodicom.serve_find(server, handler, models=("study",))
    await server.start("127.0.0.1", port)
    await server.serve_forever()


# ------------------------------------------------------------------ clients


def _query() -> Any:
    from pydicom.dataset import Dataset

    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.PatientID = "PID1"
    q.StudyInstanceUID = ""
    return q


async def _timed(n: int, one: Callable[[], Awaitable[None]]) -> tuple[float, list[float]]:
    lat: list[float] = []

    async def run() -> None:
        t0 = time.perf_counter()
        await one()
        lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(run() for _ in range(n)))
    return time.perf_counter() - t0, lat


async def bench_aiodicom(port: int, n: int, pool_size: int) -> tuple[float, list[float]]:
    import aiodicom

    q = _query()
    async with aiodicom.Pool("127.0.0.1", port, called_ae="BENCH", contexts=[STUDY_ROOT_FIND],
                             max_associations=pool_size) as pool:

        async def one() -> None:
            matches = 0
            async for _status, ds in pool.find(q, "study"):
                matches += ds is not None
            assert matches == 1

        await one()  # warm: one association open
        return await _timed(n, one)


def _pynd_ae() -> Any:
    from pynetdicom import AE

    ae = AE(ae_title="PYND")
    ae.add_requested_context(STUDY_ROOT_FIND)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae


def _pynd_find(assoc: Any, q: Any) -> None:
    matches = 0
    for status, ds in assoc.send_c_find(q, STUDY_ROOT_FIND):
        if status is None:
            raise RuntimeError("C-FIND failed")
        if status.Status in (0xFF00, 0xFF01):
            matches += 1
    assert matches == 1


async def bench_pynd_per_call(port: int, n: int) -> tuple[float, list[float]]:
    ae, q = _pynd_ae(), _query()

    def call() -> None:
        assoc = ae.associate("127.0.0.1", port, ae_title="BENCH")
        if not assoc.is_established:
            raise RuntimeError("association failed")
        try:
            _pynd_find(assoc, q)
        finally:
            assoc.release()

    return await _timed(n, lambda: asyncio.to_thread(call))


async def bench_pynd_pooled(port: int, n: int, pool_size: int) -> tuple[float, list[float]]:
    ae, q = _pynd_ae(), _query()
    assocs: queue.Queue[Any] = queue.Queue()
    for _ in range(pool_size):
        a = ae.associate("127.0.0.1", port, ae_title="BENCH")
        if not a.is_established:
            raise RuntimeError("association failed")
        assocs.put(a)

    def call() -> None:
        a = assocs.get()
        try:
            _pynd_find(a, q)
        finally:
            assocs.put(a)

    try:
        return await _timed(n, lambda: asyncio.to_thread(call))
    finally:
        while not assocs.empty():
            assocs.get().release()


# -------------------------------------------------------------------- main


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--pool", type=int, default=8, help="associations (aiodicom Pool and pynetdicom pooled)")
    ap.add_argument("--threads", type=int, default=32, help="asyncio.to_thread workers")
    ap.add_argument("--skip-per-call", action="store_true", help="skip pynetdicom associate-per-call")
    ap.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.serve))
        return 0

    port = free_port()
    server = start_server("aiodicom-scp", python_module("benchmarks.pool_vs_threads", "--serve", str(port)), port,
                          env=python_env())
    try:
        async def run_all() -> dict[str, tuple[float, list[float]]]:
            asyncio.get_running_loop().set_default_executor(
                concurrent.futures.ThreadPoolExecutor(max_workers=args.threads))
            out = {f"aiodicom-pool ({args.pool} assoc)": await bench_aiodicom(port, args.requests, args.pool)}
            try:
                import pynetdicom  # noqa: F401
            except ImportError:
                print("pynetdicom is not installed: skipping the thread variants")
                return out
            out[f"pynetdicom-pooled ({args.pool} assoc, {args.threads} threads)"] = await bench_pynd_pooled(
                port, args.requests, args.pool)
            if not args.skip_per_call:
                out[f"pynetdicom-per-call ({args.threads} threads)"] = await bench_pynd_per_call(port, args.requests)
            return out

        results = asyncio.run(run_all())
    finally:
        server.stop()

    base = None
    print(f"{args.requests} concurrent C-FINDs (1 match each) against an aiodicom SCP subprocess")
    print(f"{'client':<48} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs aiodicom':>12}")
    for name, (wall, lat) in results.items():
        rps = len(lat) / wall
        if base is None:
            base = rps
        print(f"{name:<48} {rps:>9.0f} {statistics.median(lat) * 1e3:>8.1f} {_pct(lat, 99) * 1e3:>8.1f} "
              f"{base / rps:>11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
