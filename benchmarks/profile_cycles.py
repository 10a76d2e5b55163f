"""Profile where aiodicom spends CPU per association cycle.

``python -m benchmarks.profile_cycles --side scp --loop uvloop --clients 8``

The side under test runs *in this process* under :mod:`cProfile` with a CPU
clock (``time.thread_time``), so time spent waiting or preempted by the peer
is not charged to Python functions; the peer runs in its own process:

* ``--side scp``: an aiodicom :class:`~aiodicom.Server` here, loaded by the
  benchmark's fixed client (``benchmarks.raw_client`` on uvloop, subprocess);
* ``--side scu``: the aiodicom SCU cycle loops here, against the fixed
  aiodicom server on uvloop (subprocess).

Prints cProfile's table (sorted by ``--sort``) and per-cycle figures.  The
profiler's own overhead inflates every figure (a clock read per call), so
compare proportions, not absolute values, with ``python -m benchmarks``.
On uvloop the event loop's C code (epoll, socket I/O, callbacks) is not
visible to cProfile and shows as ``tottime`` of ``run``; use ``--loop
asyncio`` to see the socket calls.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time

from .procs import free_port, python_env, python_module, run_loadgen, start_server


async def _scp(args: argparse.Namespace, prof: cProfile.Profile) -> dict[str, float]:
    import aiodicom

    server = aiodicom.Server("AIODICOM")
    await server.start("127.0.0.1", 0)
    port = server.port
    argv = python_module(
        "benchmarks.raw_client",
        "--loop",
        "uvloop",
        "--port",
        str(port),
        "--clients",
        str(args.clients),
        "--warmup",
        "0.5",
        "--duration",
        str(args.duration),
    )
    loop = asyncio.get_running_loop()
    before = server.total_associations
    prof.enable()
    c0 = time.process_time()
    results = await loop.run_in_executor(None, run_loadgen, argv, args.duration + 60)
    c1 = time.process_time()
    prof.disable()
    cycles = server.total_associations - before
    await server.close(timeout=2.0)
    return {"cycles": cycles, "cpu_s": c1 - c0, "rate_while_profiled": results[0]["rate"] if results else 0.0}


async def _scu(args: argparse.Namespace, prof: cProfile.Profile, port: int) -> dict[str, float]:
    from .aio_client import run_cell

    await run_cell(args.clients, 0.5, 0.5, "127.0.0.1", port)  # warm-up, unprofiled
    prof.enable()
    c0 = time.process_time()
    res = await run_cell(args.clients, 0.0, args.duration, "127.0.0.1", port)
    c1 = time.process_time()
    prof.disable()
    return {"cycles": float(res["cycles_total"]), "cpu_s": c1 - c0, "rate_while_profiled": float(res["rate"])}  # type: ignore[arg-type]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", choices=("scp", "scu"), default="scp")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--sort", default="tottime", help="pstats sort key [tottime]")
    p.add_argument("--limit", type=int, default=30, help="rows of the table [30]")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="profiler clock [cpu]")
    p.add_argument("-o", "--output", help="also dump the raw profile here (for snakeviz etc.)")
    args = p.parse_args()

    timer = time.thread_time if args.clock == "cpu" else time.perf_counter
    prof = cProfile.Profile(timer)
    fixed = None
    try:
        if args.side == "scp":
            coro = _scp(args, prof)
        else:
            tmp = tempfile.mkdtemp(prefix="aiodicom-bench-")
            port = free_port()
            fixed = start_server(
                "fixed aiodicom server",
                python_module("aiodicom", "serve", "--port", str(port), "--storage", os.path.join(tmp, "s")),
                port,
                env=python_env(),
                tmpdir=tmp,
            )
            coro = _scu(args, prof, port)
        if args.loop == "uvloop":
            import uvloop

            info = uvloop.run(coro)
        else:
            info = asyncio.run(coro)
    finally:
        if fixed is not None:
            fixed.stop()
    cycles = max(1, int(info["cycles"]))
    print(
        f"{args.side} side, {args.loop}, {args.clients} clients: {cycles} cycles profiled, "
        f"{info['rate_while_profiled']:.0f} cycles/s while profiled, "
        f"process CPU {info['cpu_s'] / cycles * 1e6:.0f} us/cycle (profiler overhead included)"
    )
    if args.output:
        prof.dump_stats(args.output)
    s = io.StringIO()
    st = pstats.Stats(prof, stream=s)
    st.sort_stats(args.sort).print_stats(args.limit)
    total = st.total_tt  # type: ignore[attr-defined]
    print(f"profiled CPU: {total / cycles * 1e6:.0f} us/cycle")
    print(s.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
