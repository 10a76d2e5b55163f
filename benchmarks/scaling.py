"""Throughput against the number of concurrent associations (SCP side).

    python -m benchmarks.scaling [--assocs 1,4,16,64,256,1000] [--duration 3]
                                 [--impl aiodicom-uvloop,aiodicom-asyncio,pynetdicom]
                                 [--json scaling.json] [--png scaling.png]

For every server under test and every N, a separate load-generator process
(aiodicom's SCU on uvloop; the fixed fast peer) opens N associations to it,
keeps them open, and runs one C-ECHO loop per association: a request is
sent as soon as the previous response arrived, so N requests are always in
flight.  After ``--warmup`` seconds the echoes completed during
``--duration`` seconds are counted.

Printed per cell: C-ECHO/s, p50/p99 latency of one C-ECHO, errors, the
server's CPU % over the window, and the rate relative to N=1 of the same
server (a flat curve stays near 1.0x; a collapse falls towards 0).  The
figures go to ``--json`` and, with matplotlib installed (``pip install
'.[bench]'``), to a PNG plot.

On a 2-core machine the load generator and the server share the cores, so
the absolute rates are bounded by the generator too (it is one event loop);
what this benchmark shows is the *shape*: whether the server keeps its rate
as the number of associations grows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from typing import Any

from .common import emit, percentile, proc_cpu_seconds
from .hold import raise_fd_limit
from .procs import free_port, python_env, python_module, run_loadgen, start_server

__all__ = ["IMPLS", "format_scaling", "main", "run_scaling", "save_plot"]

#: server implementations: name -> argv factory (port, max associations, storage dir)
IMPLS: dict[str, Any] = {
    "aiodicom-uvloop": lambda port, n, tmp: python_module(
        "aiodicom", "serve", "--quiet", "--port", str(port), "--storage", tmp, "--max-associations", str(n)
    ),
    "aiodicom-asyncio": lambda port, n, tmp: python_module(
        "aiodicom", "serve", "--quiet", "--no-uvloop", "--port", str(port), "--storage", tmp, "--max-associations", str(n)
    ),
    "pynetdicom": lambda port, n, tmp: python_module(
        "benchmarks.pynd_server", "--port", str(port), "--nodelay", "--max-associations", str(n)
    ),
}


# ------------------------------------------------------------- load generator


async def _client(port: int, n: int, warmup: float, duration: float, peer_pid: int) -> dict[str, Any]:
    import aiodicom

    sem = asyncio.Semaphore(256)
    assocs: list[Any] = []
    errors: list[str] = []

    async def connect() -> None:
        async with sem:
            try:
                assocs.append(await aiodicom.associate("127.0.0.1", port, acse_timeout=60, dimse_timeout=60))
            except Exception as exc:  # noqa: BLE001
                errors.append(f"associate: {type(exc).__name__}: {exc}"[:160])

    await asyncio.gather(*(connect() for _ in range(n)))
    perf = time.perf_counter
    t_start = perf()
    w0 = t_start + warmup
    w1 = w0 + duration
    lat: list[float] = []
    done = 0

    async def loop(a: Any) -> None:
        nonlocal done
        while True:
            t0 = perf()
            if t0 >= w1:
                return
            try:
                status = int(await a.echo())
            except Exception as exc:  # noqa: BLE001
                errors.append(f"echo: {type(exc).__name__}: {exc}"[:160])
                return
            t1 = perf()
            if status != 0:
                errors.append(f"status 0x{status:04X}")
            elif t0 >= w0 and t1 <= w1:
                done += 1
                lat.append(t1 - t0)

    cpu: dict[str, float | None] = {}

    async def sampler() -> None:
        await asyncio.sleep(max(0.0, w0 - perf()))
        cpu["c0"] = proc_cpu_seconds(peer_pid)
        cpu["g0"] = _own_cpu()
        await asyncio.sleep(max(0.0, w1 - perf()))
        cpu["c1"] = proc_cpu_seconds(peer_pid)
        cpu["g1"] = _own_cpu()

    await asyncio.gather(sampler(), *(loop(a) for a in assocs))
    for a in assocs:
        try:
            await a.release()
        except Exception:  # noqa: BLE001
            a.abort()
    lat.sort()
    c0, c1 = cpu.get("c0"), cpu.get("c1")
    return {
        "assocs": n,
        "opened": len(assocs),
        "echoes": done,
        "rate": done / duration,
        "p50_ms": (percentile(lat, 50) or 0) * 1000,
        "p99_ms": (percentile(lat, 99) or 0) * 1000,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "server_cpu_pct": (c1 - c0) / duration * 100 if c0 is not None and c1 is not None else None,
        "loadgen_cpu_pct": ((cpu["g1"] or 0) - (cpu["g0"] or 0)) / duration * 100,
    }


def _own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _client_main(args: argparse.Namespace) -> int:
    raise_fd_limit(args.n + 512)
    try:
        import uvloop

        result = uvloop.run(_client(args.port, args.n, args.warmup, args.duration, args.peer_pid))
    except ImportError:  # pragma: no cover
        result = asyncio.run(_client(args.port, args.n, args.warmup, args.duration, args.peer_pid))
    emit(result)
    return 0


# ------------------------------------------------------------------ runner


def run_scaling(
    impls: list[str], assocs: list[int], warmup: float, duration: float, progress: Any = None
) -> list[dict[str, Any]]:
    """Measure every (server, N) cell; return the rows."""
    raise_fd_limit(max(assocs) + 512)
    rows: list[dict[str, Any]] = []
    for impl in impls:
        port = free_port()
        with tempfile.TemporaryDirectory(prefix="aiodicom-scaling-") as tmp:
            try:
                sp = start_server(impl, IMPLS[impl](port, max(assocs) + 16, tmp), port, env=python_env())
            except RuntimeError as exc:
                why = "skipped: pynetdicom not installed" if "No module named" in str(exc) else str(exc)[:200]
                rows.append({"impl": impl, "failure": why})
                continue
            try:
                for n in assocs:
                    if progress:
                        progress(f"scaling: {impl}, {n} associations ...")
                    argv = python_module(
                        "benchmarks.scaling", "--client", "--port", str(port), "--n", str(n),
                        "--warmup", str(warmup), "--duration", str(duration), "--peer-pid", str(sp.pid),
                    )
                    try:
                        (res,) = run_loadgen(argv, timeout=120 + warmup + duration + n * 0.05)
                    except (RuntimeError, ValueError) as exc:
                        rows.append({"impl": impl, "assocs": n, "failure": str(exc)[:200]})
                        continue
                    res["impl"] = impl
                    rows.append(res)
            finally:
                sp.stop()
    return rows


def format_scaling(rows: list[dict[str, Any]]) -> str:
    """The scaling table as text."""
    base: dict[str, float] = {}
    for r in rows:
        if not r.get("failure") and r["impl"] not in base and r["rate"] > 0:
            base[r["impl"]] = r["rate"]
    head = f"{'server':<18}{'assocs':>7}{'C-ECHO/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'srv CPU%':>10}{'gen CPU%':>10}{'vs N=1':>8}"
    lines = ["C-ECHO throughput vs concurrent associations (SCP side; aiodicom uvloop load generator)", head]
    for r in rows:
        if r.get("failure"):
            lines.append(f"{r['impl']:<18}{r.get('assocs', ''):>7}  {r['failure']}")
            continue
        cpu = r["server_cpu_pct"]
        rel = r["rate"] / base[r["impl"]] if r["impl"] in base else float("nan")
        lines.append(
            f"{r['impl']:<18}{r['assocs']:>7}{r['rate']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{r['errors']:>8}{cpu if cpu is not None else float('nan'):>10.0f}{r['loadgen_cpu_pct']:>10.0f}{rel:>7.2f}x"
        )
        if r.get("first_error"):
            lines.append(f"  first error: {r['first_error']}")
    return "\n".join(lines)


def save_plot(rows: list[dict[str, Any]], path: str) -> bool:
    """Write a log-x plot of rate against associations; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for impl in dict.fromkeys(r["impl"] for r in rows):
        pts = [(r["assocs"], r["rate"]) for r in rows if r["impl"] == impl and not r.get("failure")]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=impl)
    ax.set_xscale("log")
    ax.set_xlabel("concurrent associations")
    ax.set_ylabel("C-ECHO responses / s")
    ax.set_title("SCP throughput vs concurrent associations")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--assocs", default="1,4,16,64,256,1000", help="concurrent associations [1,4,16,64,256,1000]")
    p.add_argument("--impl", default="aiodicom-uvloop,aiodicom-asyncio,pynetdicom", help="servers [all]")
    p.add_argument("--duration", type=float, default=3.0, help="measured seconds per cell [3]")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell [1]")
    p.add_argument("--json", dest="json_path", help="save rows as JSON")
    p.add_argument("--png", dest="png_path", help="save a plot (needs matplotlib)")
    # load-generator mode (internal)
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--peer-pid", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client:
        return _client_main(args)
    impls = [x.strip() for x in args.impl.split(",") if x.strip()]
    unknown = [i for i in impls if i not in IMPLS]
    if unknown:
        raise SystemExit(f"--impl: unknown {', '.join(unknown)} (choose from {', '.join(IMPLS)})")
    try:
        assocs = sorted({int(x) for x in args.assocs.split(",") if x.strip()})
    except ValueError:
        raise SystemExit(f"--assocs: expected comma-separated integers, got {args.assocs!r}") from None
    if not assocs or assocs[0] < 1:
        raise SystemExit("--assocs: need at least one positive count")
    rows = run_scaling(impls, assocs, args.warmup, args.duration, lambda s: print(s, file=sys.stderr, flush=True))
    print(format_scaling(rows))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(rows, f, indent=2)
        print(f"rows saved to {args.json_path}")
    if args.png_path:
        print(f"plot saved to {args.png_path}" if save_plot(rows, args.png_path) else "no plot: matplotlib is not installed")
    measured = [r for r in rows if not str(r.get("failure", "")).startswith("skipped")]
    return 0 if measured and all(not r.get("failure") and r["echoes"] > 0 for r in measured) else 1


if __name__ == "__main__":
    raise SystemExit(main())
