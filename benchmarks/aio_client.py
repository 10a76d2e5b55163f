"""aiodicom SCU load generator: N concurrent cycle loops in one event loop.

Used both as the *fixed* load generator of the SCP-side benchmarks (uvloop)
and as the SCU under test (asyncio or uvloop)::

    python -m benchmarks.aio_client --port 11112 --clients 1,64 --loop uvloop
"""

from __future__ import annotations

import asyncio
import time

import aiodicom

from .common import Window, loadgen_parser, run_cells, run_on, run_window


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

    async def worker(w: Window) -> None:
        await _worker(w, host, port, called, calling, timeout)

    return await run_window(Window(clients, warmup, duration, peer_pid), worker)


def main() -> int:
    p = loadgen_parser(__doc__ or "")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    args = p.parse_args()

    async def worker(w: Window) -> None:
        await _worker(w, args.host, args.port, args.called_ae, args.calling_ae, args.timeout)

    return run_on(args.loop, run_cells(args, worker))


if __name__ == "__main__":
    raise SystemExit(main())
