"""``python -m benchmarks``: association cycles per second, side by side.

One *cycle* = TCP connect + A-ASSOCIATE-RQ/AC + C-ECHO-RQ/RSP +
A-RELEASE-RQ/RP + close.  Two tables:

(a) SCP side -- the server is under test; the load comes from a fixed fast
    client in its own process, pre-encoded PDUs, every reply checked:
    ``benchmarks.c_client`` (``cycle_client.c``, epoll; the default where a
    C compiler is found) or ``benchmarks.raw_client`` (Python on uvloop,
    ``--generator python``).  Both play the same bytes with the same checks.
(b) SCU side -- the client is under test; it cycles against a fixed fast
    server (aiodicom's server on uvloop in its own process).

Every implementation runs in its own process; see ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .common import STRAGGLER_GRACE, parse_clients
from .procs import (
    ServerProcess,
    dcmtk_tool,
    dcmtk_version,
    free_port,
    python_env,
    python_module,
    run_loadgen,
    start_server,
)

__all__ = ["GENERATORS", "SIDES", "Config", "Impl", "Report", "Row", "format_report", "main", "run", "side_title"]

HOST = "127.0.0.1"
SIDES = ("scp", "scu")

GENERATORS = ("c", "python")

#: the SCP side's load generator, in the table's title
GENERATOR_LABELS = {
    "c": "benchmarks/cycle_client.c, C on epoll",
    "python": "benchmarks.raw_client, Python on uvloop",
}

SIDE_TITLES = {
    "scp": (
        "(a) SCP side - the SERVER is under test; fixed load generator: {generator} "
        "(pre-encoded PDUs, replies checked; separate process)"
    ),
    "scu": "(b) SCU side - the CLIENT is under test; fixed peer: aiodicom server on uvloop (separate process)",
}


def default_generator() -> str:
    """The SCP side's load generator: ``c`` where a C compiler builds it, else ``python``."""
    from . import null_scp

    return "c" if null_scp.compiler() else "python"


def side_title(side: str, generator: str) -> str:
    """The title of ``side``'s table (the SCP one names its load generator)."""
    return SIDE_TITLES[side].format(generator=GENERATOR_LABELS[generator])


# --------------------------------------------------------------- configuration


@dataclass
class Config:
    """What to run."""

    clients: list[int] = field(default_factory=lambda: [1, 64, 512])
    duration: float = 3.0
    warmup: float = 1.0
    sides: Sequence[str] = SIDES
    #: implementation keys to run (None: all available); see :func:`implementations`
    impls: set[str] | None = None
    repeat: int = 1
    pause: float = 0.3
    timeout: float = 10.0
    json_path: str | None = None
    progress: Callable[[str], None] | None = None
    #: the SCP side's load generator: "c" (benchmarks.c_client) or "python" (benchmarks.raw_client)
    generator: str = field(default_factory=default_generator)


@dataclass
class Impl:
    """One implementation under test on one side."""

    side: str
    key: str
    label: str
    family: str  # aiodicom | pynetdicom | dcmtk | ceiling
    note: str = ""
    unavailable: str | None = None
    #: scp side: (port, tmpdir) -> (argv, env)
    server_cmd: Callable[[int, str], tuple[list[str], dict[str, str]]] | None = None
    #: scu side: (port, peer_pid) -> argv of the load generator
    client_cmd: Callable[[int, int], list[str]] | None = None
    cpu_key: str = "self"


@dataclass
class Row:
    """One measured cell (median run when repeated)."""

    side: str
    key: str
    label: str
    family: str
    clients: int
    rate: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    errors_total: int = 0
    cycles: int = 0
    cpu_us_tested: float | None = None
    cpu_us_peer: float | None = None
    cpu_pct_tested: float | None = None
    cpu_pct_peer: float | None = None
    failure: str | None = None
    note: str = ""
    error_samples: dict[str, int] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    vs_pynetdicom: float | None = None
    vs_dcmtk: float | None = None
    #: rate / the best ``ceiling`` row's rate (same side and client count)
    of_ceiling: float | None = None


@dataclass
class Report:
    config: Config
    meta: dict[str, Any]
    rows: list[Row]

    def row(self, side: str, key: str, clients: int) -> Row | None:
        for r in self.rows:
            if (r.side, r.key, r.clients) == (side, key, clients):
                return r
        return None


def _loadgen_common(port: int, cfg: Config, peer_pid: int | None) -> list[str]:
    args = [
        "--host",
        HOST,
        "--port",
        str(port),
        "--clients",
        ",".join(str(c) for c in cfg.clients),
        "--warmup",
        str(cfg.warmup),
        "--duration",
        str(cfg.duration),
        "--pause",
        str(cfg.pause),
        "--timeout",
        str(cfg.timeout),
    ]
    if peer_pid:
        args += ["--peer-pid", str(peer_pid)]
    return args


def implementations(cfg: Config) -> list[Impl]:
    """Every implementation on every side, marked unavailable where it is."""
    from . import null_scp  # imports aiodicom (to encode the canned replies)

    have_pynd = importlib.util.find_spec("pynetdicom") is not None
    no_pynd = None if have_pynd else "pynetdicom is not installed"
    storescp = dcmtk_tool("storescp")
    echoscu = dcmtk_tool("echoscu")
    dcmtk_env = python_env({"TCP_NODELAY": "1"})

    def aiodicom_server(uv: bool, workers: int = 1) -> Callable[[int, str], tuple[list[str], dict[str, str]]]:
        def cmd(port: int, tmp: str) -> tuple[list[str], dict[str, str]]:
            argv = python_module(
                "aiodicom", "serve", "--quiet", "--host", HOST, "--port", str(port),
                "--storage", os.path.join(tmp, "store"),
            )
            if not uv:
                argv.append("--no-uvloop")
            if workers > 1:
                argv += ["--workers", str(workers)]
            return argv, python_env()

        return cmd

    workers = worker_count()

    def pynd_server(nodelay: bool) -> Callable[[int, str], tuple[list[str], dict[str, str]]]:
        def cmd(port: int, tmp: str) -> tuple[list[str], dict[str, str]]:
            argv = python_module("benchmarks.pynd_server", "--host", HOST, "--port", str(port))
            if nodelay:
                argv.append("--nodelay")
            return argv, python_env()

        return cmd

    def storescp_cmd(fork: bool) -> Callable[[int, str], tuple[list[str], dict[str, str]]]:
        def cmd(port: int, tmp: str) -> tuple[list[str], dict[str, str]]:
            assert storescp is not None
            argv = [storescp, "-q", "--ignore", "-od", tmp, "--fork" if fork else "--single-process", str(port)]
            return argv, dcmtk_env

        return cmd

    def aio_client(loop: str) -> Callable[[int, int], list[str]]:
        return lambda port, pid: python_module(
            "benchmarks.aio_client", "--loop", loop, *_loadgen_common(port, cfg, pid)
        )

    def pynd_client(nodelay: bool) -> Callable[[int, int], list[str]]:
        return lambda port, pid: python_module(
            "benchmarks.pynd_client", *(["--nodelay"] if nodelay else []), *_loadgen_common(port, cfg, pid)
        )

    def echoscu_client(port: int, pid: int) -> list[str]:
        assert echoscu is not None
        return python_module("benchmarks.echoscu_client", "--echoscu", echoscu, *_loadgen_common(port, cfg, pid))

    def ceiling_cmd(processes: int) -> Callable[[int, str], tuple[list[str], dict[str, str]]]:
        def cmd(port: int, tmp: str) -> tuple[list[str], dict[str, str]]:
            return null_scp.command(tmp, port, processes), python_env()

        return cmd

    no_cc = None if null_scp.compiler() else "no C compiler to build benchmarks/null_scp.c"
    no_storescp = None if storescp else "DCMTK storescp is not installed"
    no_echoscu = None if echoscu else "DCMTK echoscu is not installed"
    return [
        Impl("scp", "aiodicom-asyncio", "aiodicom server, asyncio loop", "aiodicom",
             server_cmd=aiodicom_server(False)),
        Impl("scp", "aiodicom-uvloop", "aiodicom server, uvloop", "aiodicom", server_cmd=aiodicom_server(True)),
        Impl("scp", "aiodicom-workers", f"aiodicom serve --workers {workers}, uvloop", "aiodicom",
             server_cmd=aiodicom_server(True, workers),
             note=f"{workers} processes sharing the port (SO_REUSEPORT), one per CPU"),
        Impl("scp", "pynetdicom", "pynetdicom SCP (threads)", "pynetdicom", unavailable=no_pynd,
             server_cmd=pynd_server(False)),
        Impl("scp", "pynetdicom-nodelay", "pynetdicom SCP + TCP_NODELAY", "pynetdicom", unavailable=no_pynd,
             server_cmd=pynd_server(True)),
        Impl("scp", "dcmtk", "DCMTK storescp (single process)", "dcmtk", unavailable=no_storescp,
             server_cmd=storescp_cmd(False)),
        Impl("scp", "dcmtk-fork", "DCMTK storescp --fork", "dcmtk", unavailable=no_storescp,
             server_cmd=storescp_cmd(True), note="one forked process per association"),
        Impl("scp", "ceiling", "ceiling: canned replies (C)", "ceiling", unavailable=no_cc,
             server_cmd=ceiling_cmd(1), note="benchmarks/null_scp.c: no DICOM work, the floor of any server"),
        Impl("scp", "ceiling-workers", f"ceiling: canned replies, {workers} procs", "ceiling", unavailable=no_cc,
             server_cmd=ceiling_cmd(workers), note=f"null_scp.c in {workers} processes sharing the socket"),
        Impl("scp", "ceiling-python", "ceiling: canned replies, Python", "ceiling",
             server_cmd=lambda port, tmp: (python_module("benchmarks.null_scp", "--python", "--port", str(port)),
                                           python_env()),
             note="the same canned replies from an asyncio Protocol: a Python server's cost before DICOM work"),
        Impl("scu", "aiodicom-asyncio", "aiodicom SCU, asyncio loop", "aiodicom", client_cmd=aio_client("asyncio")),
        Impl("scu", "aiodicom-uvloop", "aiodicom SCU, uvloop", "aiodicom", client_cmd=aio_client("uvloop")),
        Impl("scu", "pynetdicom", "pynetdicom SCU (N threads)", "pynetdicom", unavailable=no_pynd,
             client_cmd=pynd_client(False)),
        Impl("scu", "pynetdicom-nodelay", "pynetdicom SCU + TCP_NODELAY", "pynetdicom", unavailable=no_pynd,
             client_cmd=pynd_client(True)),
        Impl("scu", "dcmtk", "DCMTK echoscu, 1 process/cycle*", "dcmtk", unavailable=no_echoscu,
             client_cmd=echoscu_client, cpu_key="children",
             note="includes fork+exec and DCMTK start-up per cycle"),
    ]  # fmt: skip


def worker_count() -> int:
    """Workers for the multi-process row: one per CPU this process may use, at least 2."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(2, cpus)


# ------------------------------------------------------------------- running


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def _meta(cfg: Config) -> dict[str, Any]:
    versions: dict[str, str] = {"python": platform.python_version()}
    for mod in ("aiodicom", "uvloop", "pynetdicom", "pydicom"):
        try:  # metadata, not an import: importing pynetdicom/pydicom takes a second
            versions[mod] = importlib.metadata.version(mod)
        except importlib.metadata.PackageNotFoundError:
            versions[mod] = "not installed"
    tool = dcmtk_tool("storescp") or dcmtk_tool("echoscu")
    versions["dcmtk"] = dcmtk_version(tool) if tool else "not installed"
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        affinity = os.cpu_count() or 0
    return {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpus": affinity,
        "versions": versions,
        "loadavg_start": _loadavg(),
        "config": {
            "clients": cfg.clients,
            "duration_s": cfg.duration,
            "warmup_s": cfg.warmup,
            "repeat": cfg.repeat,
            "sides": list(cfg.sides),
            "generator": cfg.generator,
        },
    }


def _loadgen_timeout(cfg: Config) -> float:
    return len(cfg.clients) * (cfg.warmup + cfg.duration + STRAGGLER_GRACE + cfg.pause + 10.0) + 30.0


def _per_cycle_us(cpu: dict[str, Any], key: str, cycles: int) -> float | None:
    value = cpu.get(key)
    if value is None or cycles <= 0:
        return None
    return float(value) / cycles * 1e6


def _row_from_runs(impl: Impl, clients: int, runs: list[dict[str, Any]]) -> Row:
    row = Row(impl.side, impl.key, impl.label, impl.family, clients, note=impl.note, runs=runs)
    if not runs:
        row.failure = "no result"
        return row
    # the run with the median rate represents the cell
    ordered = sorted(runs, key=lambda r: r["rate"])
    rep = ordered[(len(ordered) - 1) // 2]
    row.rate = rep["rate"]
    row.p50_ms = rep["p50_ms"]
    row.p99_ms = rep["p99_ms"]
    row.cycles = rep["cycles"]
    row.errors = sum(r["errors"] for r in runs)
    row.errors_total = sum(r["errors_total"] for r in runs)
    for r in runs:
        for k, v in r.get("error_samples", {}).items():
            row.error_samples[k] = row.error_samples.get(k, 0) + v
    cpu = rep.get("cpu_s", {})
    tested_key, peer_key = ("peer", "self") if impl.side == "scp" else (impl.cpu_key, "peer")
    row.cpu_us_tested = _per_cycle_us(cpu, tested_key, row.cycles)
    row.cpu_us_peer = _per_cycle_us(cpu, peer_key, row.cycles)
    window = rep.get("cpu_window_s") or 0.0
    if window > 0:
        if cpu.get(tested_key) is not None:
            row.cpu_pct_tested = 100.0 * cpu[tested_key] / window
        if cpu.get(peer_key) is not None:
            row.cpu_pct_peer = 100.0 * cpu[peer_key] / window
    if rep.get("server_died"):
        row.failure = "server died"
    return row


def _start(name: str, cmd: Callable[[int, str], tuple[list[str], dict[str, str]]]) -> ServerProcess:
    tmp = tempfile.mkdtemp(prefix="aiodicom-bench-")
    port = free_port()
    argv, env = cmd(port, tmp)
    return start_server(name, argv, port, env=env, tmpdir=tmp, host=HOST)


def _aiodicom_uvloop_server(port: int, tmp: str) -> tuple[list[str], dict[str, str]]:
    argv = python_module(
        "aiodicom", "serve", "--host", HOST, "--port", str(port), "--storage", os.path.join(tmp, "store")
    )
    return argv, python_env()


def _run_once(
    impl: Impl, cfg: Config, fixed: ServerProcess | None, runs: dict[int, list[dict[str, Any]]]
) -> str | None:
    """One run of all client counts of ``impl``; results go to ``runs``; returns a failure or None."""
    server: ServerProcess | None = None
    failure: str | None = None
    try:
        if impl.side == "scp":
            assert impl.server_cmd is not None
            server = _start(impl.key, impl.server_cmd)
            common = _loadgen_common(server.port, cfg, server.pid)
            if cfg.generator == "c":
                argv = python_module("benchmarks.c_client", *common)
            else:
                argv = python_module("benchmarks.raw_client", "--loop", "uvloop", *common)
            watched = server
        else:
            assert impl.client_cmd is not None and fixed is not None
            argv = impl.client_cmd(fixed.port, fixed.pid)
            watched = fixed
        results = run_loadgen(argv, _loadgen_timeout(cfg))
        died = not watched.alive()
        for res in results:
            res["server_died"] = died
            if res["clients"] in runs:
                runs[res["clients"]].append(res)
        if died:
            failure = f"{watched.name} exited: {watched.log_tail().strip()[-300:]}"
    except Exception as exc:  # noqa: BLE001 - report, go on with the next implementation
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        if server is not None:
            server.stop()
    return failure


def _rows(impl: Impl, cfg: Config, runs: dict[int, list[dict[str, Any]]], failure: str | None) -> list[Row]:
    rows = []
    for c in cfg.clients:
        row = _row_from_runs(impl, c, runs[c])
        if failure and (row.failure or not runs[c]):
            row.failure = failure
        rows.append(row)
    return rows


def _progress_line(row: Row, rep: int = 0, repeat: int = 1) -> str:
    run = f" run {rep + 1}/{repeat}" if repeat > 1 else ""
    return (
        f"  {row.side} {row.key:<20} c={row.clients:<3}{run} {row.rate:8.1f} cycles/s  "
        f"p50 {_fmt(row.p50_ms)} ms  p99 {_fmt(row.p99_ms)} ms  errors {row.errors_total}"
    )


def _ratios(rows: list[Row]) -> None:
    for r in rows:
        for fam, attr in (("pynetdicom", "vs_pynetdicom"), ("dcmtk", "vs_dcmtk")):
            base = [
                b.rate
                for b in rows
                if b.side == r.side and b.clients == r.clients and b.family == fam and b.rate > 0 and not b.failure
            ]
            if base and r.rate > 0:
                setattr(r, attr, r.rate / max(base))
        ceiling = [b.rate for b in rows if b.side == r.side and b.clients == r.clients
                   and b.family == "ceiling" and b.rate > 0 and not b.failure]  # fmt: skip
        if ceiling and r.rate > 0 and r.family != "ceiling":
            r.of_ceiling = r.rate / max(ceiling)


def run(cfg: Config) -> Report:
    """Run the selected benchmarks and return the report (also saved as JSON when asked)."""
    say = cfg.progress or (lambda s: None)
    meta = _meta(cfg)
    rows: list[Row] = []
    impls = [i for i in implementations(cfg) if i.side in cfg.sides and (cfg.impls is None or i.key in cfg.impls)]
    for side in SIDES:
        side_impls = [i for i in impls if i.side == side]
        if not side_impls:
            continue
        say(side_title(side, cfg.generator))
        fixed: ServerProcess | None = None
        try:
            if side == "scu":
                fixed = _start("fixed aiodicom server (uvloop)", _aiodicom_uvloop_server)
            runnable = []
            for impl in side_impls:
                if impl.unavailable:
                    for c in cfg.clients:
                        rows.append(
                            Row(side, impl.key, impl.label, impl.family, c, failure=f"skipped: {impl.unavailable}")
                        )
                    say(f"  {side} {impl.key:<20} skipped: {impl.unavailable}")
                else:
                    runnable.append(impl)
            runs: dict[str, dict[int, list[dict[str, Any]]]] = {i.key: {c: [] for c in cfg.clients} for i in runnable}
            failures: dict[str, str | None] = {i.key: None for i in runnable}
            # repeats go round-robin, so slow drifts in machine load hit every implementation alike
            for rep in range(cfg.repeat):
                for impl in runnable:
                    failure = _run_once(impl, cfg, fixed, runs[impl.key])
                    failures[impl.key] = failures[impl.key] or failure
                    for c in cfg.clients:
                        if runs[impl.key][c]:
                            say(_progress_line(_row_from_runs(impl, c, runs[impl.key][c][-1:]), rep, cfg.repeat))
                        elif failure:
                            say(f"  {side} {impl.key:<20} c={c:<3} FAILED: {failure}")
            for impl in runnable:
                rows.extend(_rows(impl, cfg, runs[impl.key], failures[impl.key]))
        except Exception as exc:  # noqa: BLE001 - e.g. the fixed server did not start
            for impl in side_impls:
                for c in cfg.clients:
                    if not any((r.side, r.key, r.clients) == (side, impl.key, c) for r in rows):
                        rows.append(Row(side, impl.key, impl.label, impl.family, c, failure=str(exc)))
            say(f"  {side}: {exc}")
        finally:
            if fixed is not None:
                fixed.stop()
    _ratios(rows)
    meta["loadavg_end"] = _loadavg()
    meta["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    report = Report(cfg, meta, rows)
    if cfg.json_path:
        save_json(report, cfg.json_path)
    return report


def save_json(report: Report, path: str) -> None:
    """Raw results: metadata, every row and every run (latencies in ms included)."""
    data = {
        "meta": report.meta,
        "rows": [dict(row.__dict__) for row in report.rows],
    }
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


# ------------------------------------------------------------------ printing


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_report(report: Report) -> str:
    """The human-readable tables."""
    cfg, meta = report.config, report.meta
    generator = meta.get("config", {}).get("generator", cfg.generator)
    v = meta["versions"]
    out = [
        "aiodicom association-cycle benchmark: TCP connect + A-ASSOCIATE + C-ECHO + A-RELEASE + close per cycle",
        f"{meta['started']}  {meta['platform']}  {meta['cpus']} CPUs  Python {v['python']}",
        (
            f"aiodicom {v['aiodicom']}  uvloop {v['uvloop']}  pynetdicom {v['pynetdicom']}  "
            f"pydicom {v['pydicom']}  DCMTK: {v['dcmtk']}"
        ),
        (
            f"{cfg.warmup:g} s warm-up (and until every client finished a cycle) + {cfg.duration:g} s measured "
            f"per cell, x{cfg.repeat} (median-rate run shown); load average at start {meta['loadavg_start']}, "
            f"at end {meta.get('loadavg_end')}"
        ),
    ]
    header = (
        f"{'implementation under test':<34}{'clients':>8}{'cycles/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'errors':>7}{'CPU us/cyc':>11}{'CPU %':>7}{'peer CPU %':>11}{'vs pynetdicom':>14}{'vs DCMTK':>10}"
        f"{'ceiling':>9}"
    )
    for side in SIDES:
        rows = [r for r in report.rows if r.side == side]
        if not rows:
            continue
        out += ["", side_title(side, generator), header, "-" * len(header)]
        for c in cfg.clients:
            for r in rows:
                if r.clients != c:
                    continue
                if r.failure and not r.cycles:
                    out.append(f"{r.label:<34}{r.clients:>8}  {r.failure[:110]}")
                    continue
                out.append(
                    f"{r.label:<34}{r.clients:>8}{r.rate:>10.1f}{_fmt(r.p50_ms):>9}{_fmt(r.p99_ms):>9}"
                    f"{r.errors_total:>7}{_fmt(r.cpu_us_tested, '.0f'):>11}{_fmt(r.cpu_pct_tested, '.0f'):>7}"
                    f"{_fmt(r.cpu_pct_peer, '.0f'):>11}{_ratio(r.vs_pynetdicom):>14}{_ratio(r.vs_dcmtk) + ('*' if side == 'scu' and r.vs_dcmtk else ''):>10}"
                    f"{_pct(r.of_ceiling):>9}"
                    + (f"  [{r.failure[:60]}]" if r.failure else "")
                )
    out += [
        "",
        "cycles/s: cycles completed inside the measured window / window length (all clients together).",
        "p50/p99: latency of one whole cycle (connect to close) as seen by the client, monotonic clock.",
        "errors: failed cycles (warm-up included).  CPU us/cyc: user+sys CPU of the side under test per",
        "  completed cycle in the window; CPU %: the same over the window (100 = one core busy); peer CPU %:",
        "  the fixed peer's (load generator on side (a), fixed server on side (b)).  Both share the CPUs:",
        "  a peer near 100 % (one event loop) caps the rate whatever the side under test does.",
        "side (a) load generator (--generator): 'c' = benchmarks/cycle_client.c, one epoll thread;",
        "  'python' = benchmarks.raw_client on uvloop.  The same PDUs and the same reply checks; the C one",
        "  takes less of the shared CPU, so rates measured with the two are not comparable.",
        "vs pynetdicom / vs DCMTK: rate / the best rate of that project's rows on the same side and",
        "  client count (pynetdicom: default or TCP_NODELAY; DCMTK: single-process or --fork storescp).",
        "ceiling: rate / the best 'ceiling' row's rate.  The ceiling rows are benchmarks/null_scp.c, a C",
        "  epoll server that frames PDUs and writes replies encoded once (no DICOM work): the most any",
        "  server can do against this load generator on this machine.  A target above it is out of reach.",
        "  'canned replies, Python' answers the same way from an asyncio Protocol on uvloop: what a Python",
        "  server costs per cycle before any DICOM work.  The best of the ceiling rows is the base.",
        "pynetdicom SCP: maximum_associations and listen backlog raised to 4096 (defaults 10 and 5).",
        "aiodicom serve runs with --quiet (no INFO line per association; storescp and pynetdicom's",
        "  silenced loggers print none either); the INFO line costs about 60 us per association.",
        "DCMTK storescp listens with a fixed backlog of 50: beyond 50 waiting clients the kernel drops",
        "  handshakes, and those connections stall in retransmission back-off (timeouts, see README).",
        "* echoscu opens one association per process (--repeat repeats C-ECHO inside it), so each cycle",
        "  includes fork+exec and DCMTK start-up; its CPU figure is that of the echoscu processes.",
    ]
    errs = [r for r in report.rows if r.error_samples]
    if errs:
        out.append("")
        out.append("error samples:")
        for r in errs:
            for msg, n in list(r.error_samples.items())[:3]:
                out.append(f"  {r.side} {r.key} c={r.clients}: {n} x {msg[:120]}")
    la = meta.get("loadavg_start")
    if la and la[0] > 0.5:
        out.append("")
        out.append(
            f"NOTE: load average was {la[0]} when the run started: other processes were using the CPUs, "
            "so absolute figures are noisy."
        )
    return "\n".join(out)


# ---------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Association cycles per second (associate + C-ECHO + release) of aiodicom, "
        "pynetdicom and DCMTK, SCP side and SCU side.",
    )
    p.add_argument("--clients", type=parse_clients, default=None, help="concurrent clients per cell [1,64,512]")
    p.add_argument("--duration", type=float, default=None, help="measured seconds per cell [3]")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per cell [1]")
    p.add_argument("--repeat", type=int, default=1, help="runs per cell; the median-rate run is shown [1]")
    p.add_argument("--side", default="scp,scu", help="scp, scu or scp,scu [both]")
    p.add_argument(
        "--generator",
        choices=GENERATORS,
        default=None,
        help="SCP side's load generator: c (benchmarks/cycle_client.c, needs a C compiler) or python "
        "(benchmarks.raw_client on uvloop) [c where a C compiler is found, else python]",
    )
    p.add_argument(
        "--impl",
        default=None,
        help="comma-separated implementation keys: aiodicom-asyncio, aiodicom-uvloop, aiodicom-workers (SCP), "
        "pynetdicom, pynetdicom-nodelay, dcmtk, dcmtk-fork, ceiling, ceiling-workers, ceiling-python (SCP) [all]",
    )
    p.add_argument("--quick", action="store_true", help="tiny smoke run (0.5 s cells, clients 1,4)")
    p.add_argument("--json", dest="json_path", metavar="PATH", help="save raw results (with latencies) here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument(
        "--suite",
        default="cycles",
        help="comma-separated: cycles (association cycles, the default), store, find, get (data benchmarks, "
        "see benchmarks/data_suite.py), hold (associations held open by one process, RSS per association), "
        "scaling (C-ECHO/s vs concurrent associations, JSON + PNG), archive (C-STORE to disk+index, C-FIND over "
        "a large index; benchmarks/archive_suite.py); 'data' = store,find,get; 'all' = everything",
    )
    p.add_argument(
        "--archive-instances", type=int, default=None,
        help="archive suite: instances in the aiodicom archive for C-FIND [100000; --quick 200]",
    )
    p.add_argument(
        "--archive-peer-instances", type=int, default=None,
        help="archive suite: instances sent to pynetdicom qrscp / dcmqrscp for C-FIND [2000; --quick 100]",
    )
    p.add_argument("--hold-count", type=int, default=None, help="hold suite: associations on aiodicom [10000]")
    p.add_argument("--hold-pynd-count", type=int, default=None, help="hold suite: associations on pynetdicom [1000]")
    p.add_argument(
        "--scaling-assocs", default=None, help="scaling suite: concurrent associations [1,4,16,64,256,1000]"
    )
    p.add_argument("--png", dest="png_path", metavar="PATH", help="scaling suite: save the plot here [scaling.png]")
    p.add_argument(
        "--store-sizes", default=None, help="data suite: C-STORE sizes in KiB [40,512,65536]"
    )
    p.add_argument("--store-clients", type=parse_clients, default=None, help="data suite: C-STORE associations [1,16]")
    p.add_argument("--get-clients", type=parse_clients, default=None, help="data suite: C-GET associations [1,8]")
    p.add_argument("--get-instances", type=int, default=None, help="data suite: instances per C-GET [200]")
    p.add_argument("--find-matches", type=int, default=None, help="data suite: C-FIND matches per query [10000]")
    return p


def _suites(text: str) -> list[str]:
    out: list[str] = []
    for part in (x.strip() for x in text.split(",") if x.strip()):
        names = {
            "data": ["store", "find", "get"],
            "all": ["cycles", "store", "find", "get", "hold", "scaling", "archive"],
        }.get(part, [part])
        for n in names:
            if n not in ("cycles", "store", "find", "get", "hold", "scaling", "archive"):
                raise SystemExit(
                    f"--suite: unknown suite {n!r} (cycles, store, find, get, hold, scaling, archive, data, all)"
                )
            if n not in out:
                out.append(n)
    return out or ["cycles"]


def _data_main(args: argparse.Namespace, suites: list[str]) -> int:
    from .data_suite import DataConfig, format_data_report, run_data

    dcfg = DataConfig(suites=suites, json_path=args.json_path if "cycles" not in _suites(args.suite) else None)
    if args.quick:
        dcfg.duration, dcfg.warmup = 0.5, 0.2
        dcfg.store_sizes_kib, dcfg.store_clients, dcfg.get_clients = [40, 512], [1, 4], [1, 2]
        dcfg.find_matches, dcfg.get_instances = 1000, 20
    if args.duration is not None:
        dcfg.duration = args.duration
    if args.warmup is not None:
        dcfg.warmup = args.warmup
    if args.store_sizes:
        dcfg.store_sizes_kib = [float(x) for x in args.store_sizes.split(",") if x.strip()]
    if args.store_clients:
        dcfg.store_clients = args.store_clients
    if args.get_clients:
        dcfg.get_clients = args.get_clients
    if args.get_instances:
        dcfg.get_instances = args.get_instances
    dcfg.repeat = max(1, args.repeat)
    if args.find_matches:
        dcfg.find_matches = args.find_matches
    if args.impl:
        dcfg.impls = {k.strip() for k in args.impl.split(",") if k.strip()}
    if not args.quiet:
        dcfg.progress = lambda s: print(s, file=sys.stderr, flush=True)
    report = run_data(dcfg)
    print(format_data_report(report))
    print(f"\n(data benchmarks run time {report['meta']['total_s']:.0f} s)")
    if dcfg.json_path:
        print(f"raw results saved to {dcfg.json_path}")
    measured = [r for r in report["rows"] if not (r["failure"] or "").startswith("skipped")]
    return 0 if measured and all(not r["failure"] and (r["ops"] > 0 or r["items"] > 0) for r in measured) else 1


def config_from_args(args: argparse.Namespace) -> Config:
    sides = [s.strip() for s in args.side.split(",") if s.strip()]
    bad = [s for s in sides if s not in SIDES]
    if bad or not sides:
        raise SystemExit(f"--side: expected scp and/or scu, got {args.side!r}")
    cfg = Config(
        sides=sides,
        repeat=max(1, args.repeat),
        json_path=args.json_path,
        impls={k.strip() for k in args.impl.split(",") if k.strip()} if args.impl else None,
    )
    if args.quick:
        cfg.clients, cfg.duration, cfg.warmup, cfg.pause = [1, 4], 0.5, 0.2, 0.1
    if args.clients is not None:
        cfg.clients = args.clients
    if args.duration is not None:
        cfg.duration = args.duration
    if args.warmup is not None:
        cfg.warmup = args.warmup
    if args.generator is not None:
        if args.generator == "c" and default_generator() != "c":
            raise SystemExit("--generator c: no C compiler (cc, gcc or $CC) to build benchmarks/cycle_client.c")
        cfg.generator = args.generator
    if not args.quiet:
        cfg.progress = lambda s: print(s, file=sys.stderr, flush=True)
    return cfg


def _hold_scaling_main(args: argparse.Namespace, suites: list[str]) -> int:
    """The ``hold``, ``scaling`` and ``archive`` suites (benchmarks/hold.py, scaling.py, archive_suite.py)."""
    import json as _json

    progress = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    rc = 0
    extra: dict[str, object] = {}
    if "hold" in suites:
        from .hold import format_hold, run_hold

        count = args.hold_count or (200 if args.quick else 10000)
        pynd = args.hold_pynd_count or (50 if args.quick else 1000)
        impls = {"aiodicom", "pynetdicom"}
        if args.impl:
            wanted = {k.strip() for k in args.impl.split(",")}
            impls = {i for i in impls if any(w.startswith(i) for w in wanted)}
        hold_rows = run_hold(count, pynd, impls, 256, progress)
        print(format_hold(hold_rows))
        extra["hold"] = hold_rows
        if not any(r.get("held") for r in hold_rows if r["server"].startswith("aiodicom")):
            rc = 1
    if "archive" in suites:
        from .archive_suite import ArchiveConfig, format_archive_report, run_archive

        acfg = ArchiveConfig(progress=progress)
        if args.quick:
            acfg.duration, acfg.warmup = 0.5, 0.2
            acfg.store_clients, acfg.instances, acfg.peer_instances = [1, 2], 200, 100
        if args.duration is not None:
            acfg.duration = args.duration
        if args.warmup is not None:
            acfg.warmup = args.warmup
        if args.store_sizes:
            acfg.store_sizes_kib = [float(x) for x in args.store_sizes.split(",") if x.strip()]
        if args.store_clients:
            acfg.store_clients = args.store_clients
        if args.archive_instances:
            acfg.instances = args.archive_instances
        if args.archive_peer_instances:
            acfg.peer_instances = args.archive_peer_instances
        if args.impl:
            acfg.impls = {k.strip() for k in args.impl.split(",") if k.strip()}
        archive = run_archive(acfg)
        print(format_archive_report(archive))
        print(f"\n(archive benchmarks run time {archive['meta']['total_s']:.0f} s)")
        extra["archive"] = archive
        measured = [r for r in archive["store"] + archive["find"] if not (r["failure"] or "").startswith("skipped")]
        if not measured or any(r["failure"] for r in measured):
            rc = 1
    if "scaling" in suites:
        from .scaling import IMPLS, format_scaling, run_scaling, save_plot

        text = args.scaling_assocs or ("1,4" if args.quick else "1,4,16,64,256,1000")
        assocs = sorted({int(x) for x in text.split(",") if x.strip()})
        impls_s = [i for i in IMPLS if not args.impl or i in {k.strip() for k in args.impl.split(",")}]
        duration = args.duration if args.duration is not None else (0.5 if args.quick else 3.0)
        warmup = args.warmup if args.warmup is not None else (0.2 if args.quick else 1.0)
        scaling_rows = run_scaling(impls_s, assocs, warmup, duration, progress)
        print(format_scaling(scaling_rows))
        extra["scaling"] = scaling_rows
        png = args.png_path or "scaling.png"
        print(f"plot saved to {png}" if save_plot(scaling_rows, png) else "no plot: matplotlib is not installed")
        if not any(r.get("echoes") for r in scaling_rows):
            rc = 1
    if args.json_path and extra:
        path = args.json_path if getattr(args, "only_later", False) else args.json_path + ".extra.json"
        with open(path, "w") as f:
            _json.dump(extra, f, indent=2)
        print(f"{'/'.join(extra)} rows saved to {path}")
    return rc


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    suites = _suites(args.suite)
    later = [s for s in suites if s in ("hold", "scaling", "archive")]
    suites = [s for s in suites if s not in later]
    args.only_later = not suites
    if not suites:
        return _hold_scaling_main(args, later)
    data = [s for s in suites if s != "cycles"]
    if "cycles" not in suites:
        rc = _data_main(args, data)
        return max(rc, _hold_scaling_main(args, later)) if later else rc
    cfg = config_from_args(args)
    t0 = time.monotonic()
    report = run(cfg)
    print(format_report(report))
    print(f"\n(total run time {time.monotonic() - t0:.0f} s)")
    if cfg.json_path:
        print(f"raw results saved to {cfg.json_path}")
    measured = [r for r in report.rows if not (r.failure or "").startswith("skipped")]
    rc = 0 if measured and all(r.cycles > 0 and not r.failure for r in measured) else 1
    if data:
        rc = max(rc, _data_main(args, data))
    if later:
        rc = max(rc, _hold_scaling_main(args, later))
    return rc
