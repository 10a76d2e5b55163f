"""The SCP-side cycle load generator in C: ``cycle_client.c``, built and fed here.

``python -m benchmarks.c_client --port 11112 --clients 1,64``

The same cycle and the same checks as :mod:`benchmarks.raw_client` (the
same bytes on the wire: the three PDUs come from
:func:`benchmarks.raw_client.encode_cycle`; every reply checked as
``EchoCycle`` checks it), played by a single-threaded epoll program instead
of a Python event loop, so the generator costs the shared CPU a fraction of
what the Python one costs and the server under test gets the rest.  The
window is that of :mod:`benchmarks.common` (warm-up until every client
finished a cycle, straggler grace), kept by the C program, which prints
``OPEN`` and ``CLOSE`` at the window's edges; the CPU time of the C process
(``self``) and of ``--peer-pid`` is read from ``/proc`` at those lines.
Each cell is one run of the binary; its result is the ``BENCH_RESULT`` line
of the other generators (the keys of :meth:`benchmarks.common.Window.result`,
``stragglers_cancelled`` and ``loadgen="c"``).

It needs a C compiler (``cc``, or ``$CC``), as the ``ceiling`` rows do; the
runner falls back to ``benchmarks.raw_client`` without one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import IO, Any

from .common import emit, loadgen_parser, percentile, proc_cpu_seconds
from .null_scp import BuildError, build_c, write_pdus
from .raw_client import encode_cycle

__all__ = ["SOURCE", "CellError", "main", "parse_output", "prepare", "run_cell"]

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cycle_client.c")


class CellError(RuntimeError):
    """The C program failed or said something unexpected (the message says what)."""


def prepare(directory: str, called_ae: str = "ANY-SCP", calling_ae: str = "BENCH") -> list[str]:
    """Build the binary and write the cycle's PDUs into ``directory``: ``[binary, rq, echo, release]``.

    Raises :class:`benchmarks.null_scp.BuildError` without a compiler or when the build fails.
    """
    binary = build_c(SOURCE, directory, "cycle_client")
    return [binary, *write_pdus(directory, dict(zip(("rq", "echo", "release"), encode_cycle(called_ae, calling_ae))))]


def command(
    prepared: list[str], host: str, port: int, clients: int, warmup: float, duration: float, timeout: float
) -> list[str]:
    """The argv of one cell (``prepared`` from :func:`prepare`)."""
    binary, rq, echo, release = prepared
    return [binary, host, str(port), str(clients), repr(warmup), repr(duration), repr(timeout), rq, echo, release]


def parse_output(lines: list[str]) -> dict[str, Any]:
    """The C program's result lines (after ``CLOSE``) -> stats, error samples and latencies (ms)."""
    stats: dict[str, float] = {}
    samples: dict[str, int] = {}
    latencies: list[float] = []
    ended = False
    for line in lines:
        tag, _, rest = line.partition(" ")
        if tag == "LAT":
            latencies.append(float(rest))
        elif tag == "ERR":
            count, _, message = rest.partition(" ")
            samples[message] = int(count)
        elif tag == "STATS":
            for item in rest.split():
                key, _, value = item.partition("=")
                stats[key] = float(value)
        elif tag == "END":
            ended = True
        elif line:
            raise CellError(f"unexpected line from cycle_client: {line[:200]!r}")
    missing = {"cycles_total", "errors", "errors_total", "stragglers", "warmup_effective_s"} - stats.keys()
    if not ended or missing:
        raise CellError(f"cycle_client's output is incomplete (END seen: {ended}, missing: {sorted(missing)})")
    return {"stats": stats, "error_samples": samples, "latencies_ms": latencies}


def _sample(pid: int, peer_pid: int | None) -> dict[str, float | None]:
    return {
        "self": proc_cpu_seconds(pid),
        "children": 0.0,  # the C program starts no processes
        "peer": proc_cpu_seconds(peer_pid) if peer_pid else None,
    }


def _stderr(errfile: IO[bytes]) -> str:
    errfile.seek(0)
    return errfile.read().decode(errors="replace").strip()[-500:]


def _expect(proc: subprocess.Popen[bytes], word: str, errfile: IO[bytes]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().decode(errors="replace").strip()
    if line != word:
        if line:  # still running, saying something else: stop it
            proc.kill()
        proc.wait()
        raise CellError(f"cycle_client: expected {word}, got {line!r} (status {proc.returncode}): {_stderr(errfile)}")


def run_cell(prepared: list[str], args: argparse.Namespace, clients: int) -> dict[str, Any]:
    """Run one cell (``clients`` loops) and return its result dict (see the module docstring)."""
    argv = command(prepared, args.host, args.port, clients, args.warmup, args.duration, args.timeout)
    # stderr (a line at most) goes to a file: only stdout is read while it runs
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errfile)
        try:
            assert proc.stdout is not None
            _expect(proc, "OPEN", errfile)
            cpu0 = _sample(proc.pid, args.peer_pid)
            t_open = time.perf_counter()
            _expect(proc, "CLOSE", errfile)
            cpu1 = _sample(proc.pid, args.peer_pid)
            t_close = time.perf_counter()
            # (through the same buffered reader: readline may hold some of it already)
            out = proc.stdout.read()
            proc.wait()
        finally:
            if proc.poll() is None:  # interrupted: the program goes with us
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if proc.returncode != 0:
            raise CellError(f"cycle_client failed (status {proc.returncode}): {_stderr(errfile)}")
    parsed = parse_output(out.decode(errors="replace").splitlines())
    stats = parsed["stats"]
    lat = parsed["latencies_ms"]
    ordered = sorted(lat)
    n = len(lat)
    cpu: dict[str, float | None] = {}
    for key in ("self", "children", "peer"):
        a, b = cpu0[key], cpu1[key]
        cpu[key] = (b - a) if a is not None and b is not None else None
    duration = args.duration
    return {
        "clients": clients,
        "warmup_s": args.warmup,
        "warmup_effective_s": stats["warmup_effective_s"],
        "duration_s": duration,
        "cycles": n,
        "rate": n / duration if duration > 0 else 0.0,
        "p50_ms": percentile(ordered, 50),
        "p99_ms": percentile(ordered, 99),
        "mean_ms": sum(lat) / n if n else None,
        "max_ms": ordered[-1] if n else None,
        "errors": int(stats["errors"]),
        "errors_total": int(stats["errors_total"]),
        "error_samples": parsed["error_samples"],
        "cycles_total": int(stats["cycles_total"]),
        "cpu_s": cpu,
        "cpu_window_s": t_close - t_open,
        "latencies_ms": [round(x, 4) for x in lat],
        "stragglers_cancelled": int(stats["stragglers"]),
        "loadgen": "c",
    }


def main() -> int:
    args = loadgen_parser(__doc__ or "").parse_args()
    with tempfile.TemporaryDirectory(prefix="aiodicom-cycle-client-") as tmp:
        try:
            prepared = prepare(tmp, args.called_ae, args.calling_ae)
        except BuildError as exc:
            print(f"c_client: {exc}", file=sys.stderr)
            return 2
        for i, clients in enumerate(args.clients):
            if i:
                time.sleep(args.pause)
            try:
                emit(run_cell(prepared, args, clients))
            except CellError as exc:
                print(f"c_client: {exc}", file=sys.stderr)
                return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
