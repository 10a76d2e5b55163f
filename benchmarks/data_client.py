"""Fixed load generator of the data benchmarks: :mod:`aiodicom.bench` on uvloop.

``python -m benchmarks.data_client --op store --port P --concurrency 1,16 --size 512 ...``

Runs one cell per concurrency (new associations for each cell, kept open
inside it) and prints one ``BENCH_RESULT {json}`` line per cell, with the
CPU time of this process and of ``--peer-pid`` sampled at the measurement
window's edges.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
from typing import Any

from pydicom.dataset import Dataset

from aiodicom import bench

from .common import emit, parse_clients, proc_cpu_seconds


def _cpu(peer: int | None) -> dict[str, float | None]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"self": ru.ru_utime + ru.ru_stime, "peer": proc_cpu_seconds(peer) if peer else None}


async def _main(args: argparse.Namespace) -> int:
    query = None
    if args.query:
        query = Dataset.from_json(json.loads(args.query))
    for i, n in enumerate(args.concurrency):
        if i:
            await asyncio.sleep(args.pause)
        samples: dict[str, Any] = {}
        cfg = bench.BenchConfig(
            args.op,
            args.host,
            args.port,
            called_ae=args.called_ae,
            concurrency=n,
            duration=args.duration if args.count is None else None,
            count=args.count,
            warmup=args.warmup if args.count is None else 0.0,
            size_kib=args.size,
            query=query,
            model=args.model,
            timeout=args.timeout,
            progress=False,
            on_window=lambda edge: samples.__setitem__(edge, _cpu(args.peer_pid)),
        )
        try:
            res = await bench.run(cfg)
        except Exception as exc:  # noqa: BLE001 - reported as a failed cell
            emit({"clients": n, "failure": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        out = res.to_json()
        cpu = {}
        for key in ("self", "peer"):
            a, b = samples.get("start", {}).get(key), samples.get("end", {}).get(key)
            cpu[key] = (b - a) if a is not None and b is not None else None
        out.update(clients=n, cpu_s=cpu)
        emit(out)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--op", choices=bench.OPERATIONS, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--called-ae", default="ANY-SCP")
    p.add_argument("--concurrency", type=parse_clients, default=[1])
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--count", type=int, default=None)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--pause", type=float, default=0.3)
    p.add_argument("--size", type=float, default=512.0)
    p.add_argument("--model", default="patient")
    p.add_argument("--query", default=None, help="the find/get query as DICOM JSON")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--peer-pid", type=int, default=None)
    args = p.parse_args()
    import uvloop

    return int(uvloop.run(_main(args)))


if __name__ == "__main__":
    raise SystemExit(main())
