"""pynetdicom SCU load generator: N threads, each cycling associate/C-ECHO/release.

``python -m benchmarks.pynd_client --port P --clients 1,64 [--nodelay]``

Each thread has its own ``AE`` (Verification requested).  pynetdicom has no
TCP_NODELAY option; ``--nodelay`` sets it on the requestor socket by
wrapping ``AssociationSocket._create_socket``.  pynetdicom's loggers are
silenced (handlers cleared, level WARNING).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable

from .common import STRAGGLER_GRACE, Window, emit, loadgen_parser


def _worker(w: Window, args: argparse.Namespace, start: threading.Event) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=args.calling_ae)
    ae.add_requested_context(Verification)
    ae.acse_timeout = args.timeout
    ae.dimse_timeout = args.timeout
    ae.network_timeout = args.timeout
    ae.connection_timeout = args.timeout
    host, port, called = args.host, args.port, args.called_ae
    perf = time.perf_counter
    start.wait()
    first = True
    while w.running():
        _cycle(w, ae, host, port, called, perf)
        if first:
            first = False
            w.first_cycle_done()


def _cycle(w: Window, ae: object, host: str, port: int, called: str, perf: Callable[[], float]) -> None:
    t0 = perf()
    try:
        assoc = ae.associate(host, port, ae_title=called)  # type: ignore[attr-defined]
        if not assoc.is_established:
            what = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
            w.error(perf(), f"association {what}")
            time.sleep(0.01)
            return
        status = assoc.send_c_echo()
        code = getattr(status, "Status", None) if status else None
        assoc.release()
    except Exception as exc:  # noqa: BLE001 - every failure is an error
        w.error(perf(), f"{type(exc).__name__}: {exc}"[:200])
        time.sleep(0.01)
        return
    t1 = perf()
    if code == 0:
        w.ok(t0, t1)
    else:
        w.error(t1, f"C-ECHO status {code!r}")


def main() -> int:
    p = loadgen_parser(__doc__ or "")
    p.add_argument("--nodelay", action="store_true", help="set TCP_NODELAY on requestor sockets")
    args = p.parse_args()

    import pynetdicom  # noqa: F401 - import before the clock starts
    from pynetdicom import transport

    for name in ("pynetdicom", "pydicom"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.setLevel(logging.WARNING)

    if args.nodelay:
        orig = transport.AssociationSocket._create_socket

        def _create_socket(self: transport.AssociationSocket, address: object) -> socket.socket:
            sock = orig(self, address)  # type: ignore[arg-type]
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock

        transport.AssociationSocket._create_socket = _create_socket  # type: ignore[method-assign]

    for i, n in enumerate(args.clients):
        if i:
            time.sleep(args.pause)
        start = threading.Event()
        # create the window only once every thread exists: thread start-up is not measured
        w = Window(n, args.warmup, args.duration, args.peer_pid)
        threads = [threading.Thread(target=_worker, args=(w, args, start), daemon=True) for _ in range(n)]
        for t in threads:
            t.start()
        w.reset_clock()
        start.set()
        w.measure_blocking()
        deadline = time.perf_counter() + STRAGGLER_GRACE
        for t in threads:
            t.join(max(0.0, deadline - time.perf_counter()))
        alive = sum(t.is_alive() for t in threads)
        emit(w.result(stragglers_cancelled=alive, nodelay=args.nodelay, threads=n))
    sys.stdout.flush()
    os._exit(0)  # do not wait for pynetdicom's lingering association threads


if __name__ == "__main__":
    raise SystemExit(main())
