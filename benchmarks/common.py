"""The timed measurement window shared by every load generator.

A load generator runs ``clients`` concurrent cycle loops.  The warm-up lasts
``warmup`` seconds *and* until every loop has finished at least one cycle
(so slow cycles, e.g. one process per cycle, start the window in a steady
state rather than in a synchronised first wave), at most
``MAX_WARMUP_EXTENSION`` seconds longer.  The measurement window
``[warm_end, end]`` then lasts ``duration`` seconds.  A cycle counts when it
*completes* inside the window; its latency (``time.perf_counter`` from just
before the connect to just after the transport closed) is kept.  Failed
cycles are counted as errors (during warm-up too: ``errors_total``).

CPU time is sampled at the window edges, for this process (``self``), its
reaped child processes (``children``, the DCMTK ``echoscu`` driver) and the
peer process (``--peer-pid``, read from ``/proc`` for it and all its
descendants, reaped or live, so a forking ``storescp`` or the workers of
``aiodicom serve --workers N`` are counted in full).

Each cell's result is printed to stdout as one line: ``BENCH_RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

__all__ = [
    "RESULT_PREFIX",
    "Window",
    "emit",
    "loadgen_parser",
    "parse_clients",
    "percentile",
    "proc_cpu_seconds",
    "run_cells",
    "run_on",
    "run_window",
]

RESULT_PREFIX = "BENCH_RESULT "

#: seconds given to in-flight cycles to finish after the window closed
STRAGGLER_GRACE = 15.0

#: the warm-up waits at most this much longer for every loop's first cycle
MAX_WARMUP_EXTENSION = 20.0

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0-100) of already sorted values."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, round(q / 100.0 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # the command name (field 2) may contain spaces: split after its ')'
    return data[data.rindex(")") + 2 :].split()


def _children(pid: int) -> dict[int, list[int]]:
    """Parent pid -> live child pids, for every process on the machine."""
    tree: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return tree
    for name in entries:
        if not name.isdigit():
            continue
        fields = _stat_fields(name)
        if fields is not None:
            tree.setdefault(int(fields[1]), []).append(int(name))  # fields[1] is field 4, ppid
    return tree


def proc_cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds of ``pid`` and all its descendants (Linux /proc).

    Reaped descendants are in the process's cutime/cstime; live ones (the
    workers of ``aiodicom serve --workers N``, the children of a forking
    ``storescp``) are read from their own ``/proc`` entries, so a
    multi-process server is counted whole whether or not its children have
    exited.
    """
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are 14..17
    ticks = sum(int(x) for x in fields[11:15])
    tree = _children(pid)
    todo = list(tree.get(pid, ()))
    while todo:
        child = todo.pop()
        cf = _stat_fields(child)
        if cf is not None:
            ticks += sum(int(x) for x in cf[11:15])
            todo.extend(tree.get(child, ()))
    return ticks / _CLK_TCK


def _rusage_seconds(who: int) -> float:
    ru = resource.getrusage(who)
    return ru.ru_utime + ru.ru_stime


class Window:
    """Counts cycles and errors for one cell (one client count)."""

    def __init__(self, clients: int, warmup: float, duration: float, peer_pid: int | None = None) -> None:
        self.clients = clients
        self.warmup = warmup
        self.duration = duration
        self.peer_pid = peer_pid
        self.start = self.warm_end = self.end = 0.0
        self.reset_clock()
        self.latencies: list[float] = []
        self.cycles_total = 0
        self.warmed = 0  # loops that finished their first cycle
        self.errors = 0
        self.errors_total = 0
        self.error_samples: dict[str, int] = {}
        self._lock = threading.Lock()
        self._cpu0: dict[str, float | None] = {}
        self._cpu1: dict[str, float | None] = {}
        self.sampled_at: list[float] = []

    def reset_clock(self) -> None:
        """(Re)start the warm-up now; :meth:`open_window` starts the window."""
        self.start = time.perf_counter()
        self.warmup_until = self.start + self.warmup
        # nothing is counted and every loop keeps going until the window opens
        self.warm_end = self.end = math.inf

    def first_cycle_done(self) -> None:
        """A loop finished its first cycle (successful or not)."""
        with self._lock:
            self.warmed += 1

    def _warm(self) -> bool:
        now = time.perf_counter()
        if now < self.warmup_until:
            return False
        return self.warmed >= self.clients or now >= self.warmup_until + MAX_WARMUP_EXTENSION

    def open_window(self) -> None:
        """Start the measurement window now (first CPU sample)."""
        self.mark_start()
        now = self.sampled_at[-1]
        self.warm_end = now
        self.end = now + self.duration

    async def measure_async(self) -> None:
        """Warm up, open the window, wait for its end (on the running loop)."""
        while not self._warm():
            await asyncio.sleep(max(0.005, min(0.05, self.warmup_until - time.perf_counter())))
        self.open_window()
        await asyncio.sleep(max(0.0, self.end - time.perf_counter()))
        self.mark_end()

    def measure_blocking(self) -> None:
        """:meth:`measure_async` for threads."""
        while not self._warm():
            time.sleep(max(0.005, min(0.05, self.warmup_until - time.perf_counter())))
        self.open_window()
        time.sleep(max(0.0, self.end - time.perf_counter()))
        self.mark_end()

    # ------------------------------------------------------------ recording

    def running(self) -> bool:
        """True while new cycles should be started."""
        return time.perf_counter() < self.end

    def ok(self, t0: float, t1: float) -> None:
        """A cycle that started at ``t0`` completed successfully at ``t1``."""
        with self._lock:
            self.cycles_total += 1
            if self.warm_end <= t1 <= self.end:
                self.latencies.append(t1 - t0)

    def error(self, t1: float, what: str) -> None:
        """A cycle failed at ``t1`` (``what`` describes the failure)."""
        with self._lock:
            self.errors_total += 1
            if self.warm_end <= t1 <= self.end:
                self.errors += 1
            if len(self.error_samples) < 8 or what in self.error_samples:
                self.error_samples[what] = self.error_samples.get(what, 0) + 1

    # ------------------------------------------------------------- CPU time

    def _sample(self) -> dict[str, float | None]:
        return {
            "self": _rusage_seconds(resource.RUSAGE_SELF),
            "children": _rusage_seconds(resource.RUSAGE_CHILDREN),
            "peer": proc_cpu_seconds(self.peer_pid) if self.peer_pid else None,
        }

    def mark_start(self) -> None:
        """First CPU sample (at the window's start)."""
        self._cpu0 = self._sample()
        self.sampled_at.append(time.perf_counter())

    def mark_end(self) -> None:
        """Second CPU sample (at the window's end)."""
        self._cpu1 = self._sample()
        self.sampled_at.append(time.perf_counter())

    # --------------------------------------------------------------- result

    def result(self, **extra: Any) -> dict[str, Any]:
        """The cell's result as a JSON-able dict."""
        lat = sorted(self.latencies)
        n = len(lat)
        cpu: dict[str, float | None] = {}
        for key in ("self", "children", "peer"):
            a, b = self._cpu0.get(key), self._cpu1.get(key)
            cpu[key] = (b - a) if a is not None and b is not None else None
        window = (self.sampled_at[1] - self.sampled_at[0]) if len(self.sampled_at) == 2 else self.duration
        out: dict[str, Any] = {
            "clients": self.clients,
            "warmup_s": self.warmup,
            "warmup_effective_s": (self.warm_end - self.start) if self.warm_end != math.inf else None,
            "duration_s": self.duration,
            "cycles": n,
            "rate": n / self.duration if self.duration > 0 else 0.0,
            "p50_ms": None if not n else percentile(lat, 50) * 1e3,  # type: ignore[operator]
            "p99_ms": None if not n else percentile(lat, 99) * 1e3,  # type: ignore[operator]
            "mean_ms": None if not n else sum(lat) / n * 1e3,
            "max_ms": None if not n else lat[-1] * 1e3,
            "errors": self.errors,
            "errors_total": self.errors_total,
            "error_samples": self.error_samples,
            "cycles_total": self.cycles_total,
            "cpu_s": cpu,
            "cpu_window_s": window,
            "latencies_ms": [round(x * 1e3, 4) for x in self.latencies],
        }
        out.update(extra)
        return out


def emit(result: dict[str, Any]) -> None:
    """Print one cell's result line for the runner."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


def parse_clients(text: str) -> list[int]:
    """``"1,64"`` -> ``[1, 64]``."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid client counts {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"client counts must be positive integers: {text!r}")
    return values


def loadgen_parser(description: str) -> argparse.ArgumentParser:
    """Arguments every load generator takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--called-ae", default="ANY-SCP")
    p.add_argument("--calling-ae", default="BENCH")
    p.add_argument("--clients", type=parse_clients, default=[1])
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--pause", type=float, default=0.3, help="pause between cells (s)")
    p.add_argument("--peer-pid", type=int, default=None, help="sample this process's CPU time")
    p.add_argument("--timeout", type=float, default=10.0, help="per-cycle connect/ACSE/DIMSE timeout")
    return p


async def run_window(w: Window, worker: Callable[[Window], Coroutine[Any, Any, None]], **extra: Any) -> dict[str, Any]:
    """Run ``w.clients`` copies of ``worker(w)`` on the running loop through the window; the cell's result.

    Loops still in a cycle when the window closes get :data:`STRAGGLER_GRACE`
    seconds to finish it, then are cancelled (counted in the result).
    """
    loop = asyncio.get_running_loop()
    workers = [loop.create_task(worker(w)) for _ in range(w.clients)]
    await w.measure_async()
    done, pending = await asyncio.wait(workers, timeout=STRAGGLER_GRACE)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=2.0)
    for task in done:
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover - workers catch
            w.error(time.perf_counter(), repr(task.exception()))
    return w.result(stragglers_cancelled=len(pending), loop=type(loop).__module__, **extra)


async def run_cells(
    args: argparse.Namespace, worker: Callable[[Window], Coroutine[Any, Any, None]], **extra: Any
) -> int:
    """One :func:`run_window` per client count of ``args`` (see :func:`loadgen_parser`), each emitted."""
    for i, n in enumerate(args.clients):
        if i:
            await asyncio.sleep(args.pause)
        emit(await run_window(Window(n, args.warmup, args.duration, args.peer_pid), worker, **extra))
    return 0


def run_on(loop_name: str, main: Coroutine[Any, Any, int]) -> int:
    """Run a load generator's ``main`` on uvloop or asyncio's own loop."""
    if loop_name == "uvloop":
        import uvloop

        return int(uvloop.run(main))
    return int(asyncio.run(main))
