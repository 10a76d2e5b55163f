"""DCMTK ``echoscu`` driver: N concurrent loops, each spawning one echoscu per cycle.

``python -m benchmarks.echoscu_client --port P --clients 1,64 --echoscu /usr/bin/echoscu``

echoscu opens exactly one association per process.  Its ``--repeat n``
repeats the C-ECHO *inside* that association, so it cannot run association
cycles back to back: every cycle here is a fork+exec of echoscu (dynamic
loading, DCMTK start-up, dictionary load) plus the association itself.
The latency and rate of this row therefore include the process start cost
and are labelled so; the CPU figure is that of the reaped echoscu processes.
Spawning uses uvloop's subprocess support from one driver process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time

from .common import Window, loadgen_parser, run_cells, run_on


async def _worker(w: Window, argv: list[str], env: dict[str, str]) -> None:
    perf = time.perf_counter
    first = True
    if w.clients > 1:
        # stagger the first spawns over the warm-up: no synchronised waves
        await asyncio.sleep(w.warmup * random.random() * 0.5)
    while w.running():
        t0 = perf()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            _, err = await proc.communicate()
        except Exception as exc:  # noqa: BLE001
            w.error(perf(), f"{type(exc).__name__}: {exc}"[:200])
            await asyncio.sleep(0.01)
        else:
            t1 = perf()
            if proc.returncode == 0:
                w.ok(t0, t1)
            else:
                w.error(t1, f"echoscu rc={proc.returncode}: {err.decode(errors='replace').strip()[-150:]}")
                await asyncio.sleep(0.01)
        if first:
            first = False
            w.first_cycle_done()


async def _main_async(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    t = str(max(1, round(args.timeout)))
    argv = [
        args.echoscu,
        "-q",
        "-aet",
        args.calling_ae,
        "-aec",
        args.called_ae,
        "-to",
        t,
        "-ta",
        t,
        "-td",
        t,
        args.host,
        str(args.port),
    ]

    async def worker(w: Window) -> None:
        await _worker(w, argv, env)

    return await run_cells(args, worker, process_per_cycle=True)


def main() -> int:
    p = loadgen_parser(__doc__ or "")
    p.add_argument("--echoscu", default="/usr/bin/echoscu", help="path of DCMTK's echoscu")
    args = p.parse_args()
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover
        return run_on("asyncio", _main_async(args))
    return run_on("uvloop", _main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
