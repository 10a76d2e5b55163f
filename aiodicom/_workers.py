"""Pre-fork worker supervisor for ``aiodicom serve --workers N`` (POSIX).

The supervisor forks N worker processes *before* any event loop or thread
exists in it.  Each worker runs its own event loop and archive server on the
same host and port with ``SO_REUSEPORT``, so the kernel spreads incoming
connections over them; all workers share the archive directory (SQLite in
WAL mode takes concurrent writers from several processes; same-UID writes
are serialised by lock files, see ``Storage.share_between_processes``).

SIGTERM or SIGINT to the supervisor is passed on to every worker, which
stops accepting and lets its associations finish (graceful close); the
supervisor returns once all have exited.  A worker that dies on its own is
restarted, up to ``max_restarts`` within ``restart_window`` seconds; past
that the supervisor stops the others and returns 1.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

__all__ = ["run_workers"]

log = logging.getLogger("aiodicom.serve")


def _exit_code(status: int) -> int:
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return 1  # pragma: no cover - stopped/continued are not waited for


def run_workers(
    n: int,
    worker: Callable[[int, int], int],
    *,
    ready_timeout: float = 60.0,
    on_ready: Callable[[], None] | None = None,
    max_restarts: int = 5,
    restart_window: float = 60.0,
) -> int:
    """Run ``worker(index, ready_fd)`` in *n* forked processes until told to stop.

    A worker writes one byte to ``ready_fd`` once it listens; when all *n*
    have, ``on_ready`` runs in the supervisor.  Returns 0 after a requested
    stop in which every worker exited 0, else 1.
    """
    if n < 1:
        raise ValueError("need at least one worker")
    sys.stdout.flush()
    sys.stderr.flush()
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False
    failed = False
    restarts: list[float] = []

    def spawn(index: int) -> int:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # worker
            code = 1
            try:
                os.close(read_fd)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = worker(index, write_fd)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - report, then leave the fork
                log.exception("worker %d failed", index)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(write_fd)
        children[pid] = index
        return read_fd

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        ready_fds = [spawn(i) for i in range(n)]
        deadline = time.monotonic() + ready_timeout
        ready = 0
        for fd in ready_fds:
            try:
                while not stopping and time.monotonic() < deadline:
                    r, _, _ = select.select([fd], [], [], 0.5)
                    if r:
                        if os.read(fd, 1):
                            ready += 1
                        break  # a byte, or EOF: the worker exited before listening
            finally:
                os.close(fd)
        if ready == n and not stopping and on_ready is not None:
            on_ready()
        elif ready < n and not stopping:
            log.error("%d of %d workers did not start; stopping", n - ready, n)
            failed = True
            forward(signal.SIGTERM, None)
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:  # pragma: no cover - nothing left
                break
            index = children.pop(pid, None)
            if index is None:
                continue
            code = _exit_code(status)
            if stopping:
                # killed by our SIGTERM before it set up its handler (still
                # starting) is a normal stop too
                if code not in (0, 128 + signal.SIGTERM):
                    failed = True
                continue
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < restart_window] + [now]
            if len(restarts) > max_restarts:
                log.error("worker %d exited (%d); too many restarts, stopping", index, code)
                failed = True
                forward(signal.SIGTERM, None)
                continue
            log.warning("worker %d exited (%d); restarting it", index, code)
            fd = spawn(index)
            os.close(fd)  # a restarted worker's readiness is not waited for
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return 1 if failed else 0
