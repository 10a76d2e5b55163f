"""How many associations can one server process hold open, and at what memory cost?

    python -m benchmarks.hold [--count 10000] [--pynd-count 1000] [--impl aiodicom,pynetdicom]

For each server (``aiodicom serve`` on uvloop, the archive with its defaults;
pynetdicom's Verification SCP, one thread per association), this process
opens ``count`` associations (at most ``--connect-concurrency`` handshakes in
flight), keeps them all open, reads the server's RSS from
``/proc/PID/status``, then has *every* association send a C-ECHO and checks
it is answered, and finally releases them all.

Reported per server: associations held, C-ECHOs answered, RSS before (after
one warm-up association) and with all held, and RSS per idle association
(the difference divided by the number held).  DCMTK is not in this table: its
``storescp`` serves one association at a time per process (``--fork`` makes a
process per association), so "associations held by one process" does not
apply to it.

The client side runs here on uvloop when installed; its own memory is not
counted.  The file descriptor limit is raised to the hard limit in this
process and (by inheritance) in the servers; with a hard limit below
``count`` + a margin, the count is reduced and a note says so.
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

from .procs import free_port, python_env, python_module, start_server

__all__ = ["hold_once", "main", "raise_fd_limit"]


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards *wanted*; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def rss_kib(pid: int) -> int | None:
    """Resident set size of *pid* in KiB (``VmRSS``), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


async def _open_all(port: int, count: int, concurrency: int, timeout: float) -> tuple[list[Any], list[str]]:
    import aiodicom

    sem = asyncio.Semaphore(concurrency)
    held: list[Any] = []
    errors: list[str] = []

    async def one() -> None:
        async with sem:
            try:
                assoc = await aiodicom.associate(
                    "127.0.0.1", port, connect_timeout=timeout, acse_timeout=timeout, dimse_timeout=timeout
                )
            except Exception as exc:  # noqa: BLE001 - counted, reported
                errors.append(f"{type(exc).__name__}: {exc}"[:160])
            else:
                held.append(assoc)

    await asyncio.gather(*(one() for _ in range(count)))
    return held, errors


async def hold_once(port: int, pid: int, count: int, concurrency: int = 256, timeout: float = 60.0) -> dict[str, Any]:
    """Open *count* associations to ``127.0.0.1:port``, measure server *pid*, echo on each, release."""
    import aiodicom

    # warm-up: imports, first-association allocations
    async with aiodicom.associate("127.0.0.1", port, acse_timeout=timeout) as a:
        await a.echo()
    base = rss_kib(pid)
    t0 = time.perf_counter()
    held, errors = await _open_all(port, count, concurrency, timeout)
    open_s = time.perf_counter() - t0
    full = rss_kib(pid)
    sem = asyncio.Semaphore(concurrency)

    async def echo(a: Any) -> bool:
        async with sem:
            try:
                return int(await a.echo()) == 0
            except Exception as exc:  # noqa: BLE001
                errors.append(f"echo: {type(exc).__name__}: {exc}"[:160])
                return False

    answered = sum(await asyncio.gather(*(echo(a) for a in held)))

    async def release(a: Any) -> None:
        async with sem:
            try:
                await a.release()
            except Exception:  # noqa: BLE001 - the figure is the held count
                a.abort()

    await asyncio.gather(*(release(a) for a in held))
    per = None
    if base is not None and full is not None and held:
        per = (full - base) / len(held)
    return {
        "requested": count,
        "held": len(held),
        "answered": answered,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "rss_base_kib": base,
        "rss_full_kib": full,
        "rss_per_assoc_kib": per,
        "open_s": open_s,
    }


def _servers(impls: set[str]) -> list[tuple[str, list[str], str]]:
    out = []
    if "aiodicom" in impls:
        out.append(("aiodicom serve (uvloop)", ["aiodicom"], "aiodicom"))
    if "pynetdicom" in impls:
        out.append(("pynetdicom SCP (threads)", ["pynetdicom"], "pynetdicom"))
    return out


def _start(kind: str, port: int, count: int, tmp: str) -> Any:
    if kind == "aiodicom":
        argv = python_module(
            "aiodicom", "serve", "--quiet", "--host", "127.0.0.1", "--port", str(port), "--storage", tmp,
            "--max-associations", str(count + 16),
        )
    else:
        argv = python_module("benchmarks.pynd_server", "--port", str(port), "--max-associations", str(count + 16))
    return start_server(kind, argv, port, env=python_env())


def run_hold(count: int, pynd_count: int, impls: set[str], concurrency: int, progress: Any = None) -> list[dict[str, Any]]:
    """Run the hold benchmark for each implementation; return one row per server."""
    limit = raise_fd_limit(max(count, pynd_count) + 512)
    rows: list[dict[str, Any]] = []
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    for name, _, kind in _servers(impls):
        n = count if kind == "aiodicom" else pynd_count
        note = ""
        if n + 256 > limit:  # this process and the server each need n sockets
            n = max(1, limit - 256)
            note = f"fd limit {limit}: count reduced to {n}"
        if progress:
            progress(f"hold: {name}, {n} associations ...")
        port = free_port()
        with tempfile.TemporaryDirectory(prefix="aiodicom-hold-") as tmp:
            try:
                sp = _start(kind, port, n, tmp)
            except RuntimeError as exc:
                if kind == "pynetdicom" and "No module named" in str(exc):
                    rows.append({"server": name, "failure": "skipped: pynetdicom not installed"})
                    continue
                rows.append({"server": name, "failure": str(exc)[:200]})
                continue
            try:
                row = runner(hold_once(port, sp.pid, n, concurrency))
            except Exception as exc:  # noqa: BLE001
                row = {"failure": f"{type(exc).__name__}: {exc}"[:200]}
            finally:
                sp.stop()
        row.update(server=name, note=note)
        rows.append(row)
    return rows


def format_hold(rows: list[dict[str, Any]]) -> str:
    """The hold table as text."""
    head = f"{'server':<28}{'held':>8}{'answered':>10}{'errors':>8}{'RSS base MiB':>14}{'RSS held MiB':>14}{'KiB/assoc':>11}"
    lines = ["Associations held open by one server process (each answers a C-ECHO at the end)", head]
    for r in rows:
        if r.get("failure"):
            lines.append(f"{r['server']:<28}  {r['failure']}")
            continue
        per = r["rss_per_assoc_kib"]
        lines.append(
            f"{r['server']:<28}{r['held']:>8}{r['answered']:>10}{r['errors']:>8}"
            f"{(r['rss_base_kib'] or 0) / 1024:>14.1f}{(r['rss_full_kib'] or 0) / 1024:>14.1f}"
            f"{per if per is not None else float('nan'):>11.1f}"
        )
        if r.get("note"):
            lines.append(f"  note: {r['note']}")
        if r.get("first_error"):
            lines.append(f"  first error: {r['first_error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=10000, help="associations to hold on aiodicom [10000]")
    p.add_argument("--pynd-count", type=int, default=1000, help="associations to hold on pynetdicom [1000]")
    p.add_argument("--impl", default="aiodicom,pynetdicom", help="servers to measure [aiodicom,pynetdicom]")
    p.add_argument("--connect-concurrency", type=int, default=256, help="handshakes in flight at once [256]")
    p.add_argument("--json", dest="json_path", help="save the rows here")
    args = p.parse_args(argv)
    impls = {x.strip() for x in args.impl.split(",") if x.strip()}
    rows = run_hold(args.count, args.pynd_count, impls, args.connect_concurrency, lambda s: print(s, file=sys.stderr, flush=True))
    print(format_hold(rows))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(rows, f, indent=2)
    ok = [r for r in rows if not str(r.get("failure", "")).startswith("skipped")]
    return 0 if ok and all(not r.get("failure") and r["answered"] == r["requested"] for r in ok) else 1


if __name__ == "__main__":
    raise SystemExit(main())
