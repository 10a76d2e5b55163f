"""Raw loopback TCP throughput: the ceiling for the 64 MiB C-STORE figure.

``python -m benchmarks.rawtcp --duration 2`` starts a receiver process
(``recv_into`` a 4 MiB buffer, discarding) and sends 64 MiB blocks with
``sendall`` from this process for ``--duration`` seconds; prints one
``BENCH_RESULT`` line with MB/s (10^6 bytes) and the receiver's CPU.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time

from .common import emit, proc_cpu_seconds


def receiver(port: int) -> int:
    with socket.create_server(("127.0.0.1", port)) as srv:
        print("ready", flush=True)
        conn, _ = srv.accept()
        buf = bytearray(4 << 20)
        view = memoryview(buf)
        total = 0
        with conn:
            while True:
                n = conn.recv_into(view)
                if not n:
                    break
                total += n
            conn.sendall(str(total).encode())
    return 0


def measure(duration: float, block: int = 64 << 20, warmup: float = 0.3) -> dict[str, float | int | None]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.rawtcp", "--recv", str(port)], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        data = memoryview(bytes(block))
        with socket.create_connection(("127.0.0.1", port)) as c:
            t_end_warm = time.perf_counter() + warmup
            while time.perf_counter() < t_end_warm:
                c.sendall(data)
            cpu0 = proc_cpu_seconds(proc.pid)
            t0 = time.perf_counter()
            sent = 0
            while time.perf_counter() - t0 < duration:
                c.sendall(data)
                sent += block
            t1 = time.perf_counter()
            cpu1 = proc_cpu_seconds(proc.pid)
            c.shutdown(socket.SHUT_WR)
            c.recv(64)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    window = t1 - t0
    return {
        "bytes": sent,
        "window_s": window,
        "mb_per_s": sent / window / 1e6,
        "receiver_cpu_pct": None if cpu0 is None or cpu1 is None else 100 * (cpu1 - cpu0) / window,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--recv", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--duration", type=float, default=2.0)
    args = p.parse_args()
    if args.recv is not None:
        return receiver(args.recv)
    emit(measure(args.duration))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
