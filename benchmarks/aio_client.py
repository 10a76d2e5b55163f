"""aiodicom SCU load generator: N concurrent cycle loops in one event loop.

Used both as the *fixed* load generator of the SCP-side benchmarks (uvloop)
and as the SCU under test (asyncio or uvloop)::

    python -m benchmarks.aio_client --port 11112 --clients 1,64 --loop uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiodicom

from .common import STRAGGLER_GRACE, Window, emit, loadgen_parser


async def _cycle(host: str, port: int, called: str, calling: str, timeout: float) -> int:
    async with aiodicom.associate(
        host,
        port,
        called_ae=called,
        calling_ae=calling,
        connect_timeout=timeout,
        acse_timeout=timeout,
        dimse_timeout=timeout,
    ) as assoc:
        return await assoc.echo()


async def _worker(w: Window, host: str, port: int, called: str, calling: str, timeout: float) -> None:
    perf = time.perf_counter
    first = True
    while w.running():
        t0 = perf()
        try:
            status = await _cycle(host, port, called, calling, timeout)
        except Exception as exc:  # noqa: BLE001 - every failure is an error
            w.error(perf(), f"{type(exc).__name__}: {exc}"[:200])
            await asyncio.sleep(0.01)  # no hot loop against a dead peer
        else:
            t1 = perf()
            if status == 0:
                w.ok(t0, t1)
            else:
                w.error(t1, f"C-ECHO status 0x{status:04X}")
        if first:
            first = False
            w.first_cycle_done()


async def run_cell(
    clients: int,
    warmup: float,
    duration: float,
    host: str,
    port: int,
    called: str = "ANY-SCP",
    calling: str = "BENCH",
    timeout: float = 10.0,
    peer_pid: int | None = None,
) -> dict[str, object]:
    """Run one cell on the running loop; returns its result dict."""
    w = Window(clients, warmup, duration, peer_pid)
    loop = asyncio.get_running_loop()
    workers = [loop.create_task(_worker(w, host, port, called, calling, timeout)) for _ in range(clients)]
    await w.measure_async()
    done, pending = await asyncio.wait(workers, timeout=STRAGGLER_GRACE)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending, timeout=2.0)
    for t in done:
        if not t.cancelled() and t.exception() is not None:  # pragma: no cover - workers catch
            w.error(time.perf_counter(), repr(t.exception()))
    return w.result(stragglers_cancelled=len(pending), loop=type(loop).__module__)


async def _main_async(args: argparse.Namespace) -> int:
    for i, n in enumerate(args.clients):
        if i:
            await asyncio.sleep(args.pause)
        res = await run_cell(
            n,
            args.warmup,
            args.duration,
            args.host,
            args.port,
            args.called_ae,
            args.calling_ae,
            args.timeout,
            args.peer_pid,
        )
        emit(res)
    return 0


def main() -> int:
    p = loadgen_parser(__doc__ or "")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    args = p.parse_args()
    if args.loop == "uvloop":
        import uvloop

        return int(uvloop.run(_main_async(args)))
    return asyncio.run(_main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
