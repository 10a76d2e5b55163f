"""Data benchmarks, SCP side: C-STORE, C-FIND and C-GET servers under load.

``python -m benchmarks --suite store,find,get [--duration S] [--json PATH]``

The fixed load generator is ``benchmarks.data_client`` (aiodicom's
:mod:`aiodicom.bench` engine on uvloop, its own process); each server runs in
its own process.  See ``benchmarks/README.md`` ("Data benchmarks").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .procs import (
    ServerProcess,
    dcmtk_tool,
    free_port,
    python_env,
    python_module,
    run_loadgen,
    start_server,
)

HOST = "127.0.0.1"
DATA_SUITES = ("store", "find", "get")
STUDY_UID = "1.2.826.0.1.3680043.9.7433.1.1"


@dataclass
class DataConfig:
    suites: list[str] = field(default_factory=lambda: list(DATA_SUITES))
    store_sizes_kib: list[float] = field(default_factory=lambda: [40, 512, 65536])
    store_clients: list[int] = field(default_factory=lambda: [1, 16])
    find_matches: int = 10000
    find_clients: list[int] = field(default_factory=lambda: [1])
    get_instances: int = 200
    get_size_kib: float = 512
    get_clients: list[int] = field(default_factory=lambda: [1, 8])
    duration: float = 2.0
    warmup: float = 0.5
    raw_tcp: bool = True
    #: runs per cell, round-robin over the implementations; the median run is shown
    repeat: int = 1
    impls: set[str] | None = None
    json_path: str | None = None
    progress: Callable[[str], None] | None = None


@dataclass
class DataRow:
    suite: str
    key: str
    label: str
    family: str
    size_kib: float
    clients: int
    ops_per_s: float = 0.0
    items_per_s: float = 0.0
    mb_per_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    ops: int = 0
    items: int = 0
    errors: int = 0
    cpu_pct_tested: float | None = None
    cpu_pct_peer: float | None = None
    failure: str | None = None
    vs_pynetdicom: float | None = None
    vs_dcmtk: float | None = None
    pct_raw_tcp: float | None = None
    error_samples: dict[str, int] = field(default_factory=dict)
    #: the MB/s (C-FIND: responses/s) of every run of this cell, in run order
    runs: list[float] = field(default_factory=list)


ServerCmd = Callable[[int, str], tuple[list[str], dict[str, str]]]


@dataclass
class DataImpl:
    suite: str
    key: str
    label: str
    family: str
    cmd: ServerCmd
    unavailable: str | None = None
    called_ae: str = "ANY-SCP"
    #: prepare(port, tmpdir, files_dir) after the server started (dcmqrscp: populate)
    prepare: Callable[[ServerProcess, str], None] | None = None


def _aio(mode: str, loop: str) -> ServerCmd:
    def cmd(port: int, tmp: str) -> tuple[list[str], dict[str, str]]:
        return python_module(
            "benchmarks.data_servers", "--impl", "aiodicom", "--mode", mode, "--port", str(port),
            "--dir", tmp, "--loop", loop,
        ), python_env()

    return cmd


def _pynd(mode: str) -> ServerCmd:
    def cmd(port: int, tmp: str) -> tuple[list[str], dict[str, str]]:
        return python_module(
            "benchmarks.data_servers", "--impl", "pynetdicom", "--mode", mode, "--port", str(port), "--dir", tmp
        ), python_env()

    return cmd


def implementations(cfg: DataConfig, get_dir: str | None, matches: int) -> list[DataImpl]:
    import importlib.util

    no_pynd = None if importlib.util.find_spec("pynetdicom") else "pynetdicom is not installed"
    storescp = dcmtk_tool("storescp")
    dcmqrscp = dcmtk_tool("dcmqrscp")
    storescu = dcmtk_tool("storescu")
    dcmtk_env = python_env({"TCP_NODELAY": "1"})

    def storescp_cmd(ignore: bool) -> ServerCmd:
        def cmd(port: int, tmp: str) -> tuple[list[str], dict[str, str]]:
            assert storescp is not None
            return [storescp, "-q", *(["--ignore"] if ignore else []), "-od", tmp, "--fork", str(port)], dcmtk_env

        return cmd

    def dcmqrscp_cmd(port: int, tmp: str) -> tuple[list[str], dict[str, str]]:
        assert dcmqrscp is not None
        db = os.path.join(tmp, "db")
        os.makedirs(db, exist_ok=True)
        conf = os.path.join(tmp, "dcmqrscp.cfg")
        with open(conf, "w") as f:
            f.write(
                f"NetworkTCPPort = {port}\nMaxPDUSize = 131072\nMaxAssociations = 64\n\n"
                "HostTable BEGIN\nHostTable END\n\nVendorTable BEGIN\nVendorTable END\n\n"
                f"AETable BEGIN\nBENCHQR {db} RW (100000, 4096mb) ANY\nAETable END\n"
            )
        return [dcmqrscp, "-c", conf, str(port)], dcmtk_env

    def populate(server: ServerProcess, files_dir: str) -> None:
        assert storescu is not None
        files = sorted(os.path.join(files_dir, n) for n in os.listdir(files_dir))
        subprocess.run(
            [storescu, "-q", "-aec", "BENCHQR", "+sd", HOST, str(server.port), files_dir],
            check=True, env=dcmtk_env, capture_output=True, timeout=300,
        )
        server.extra["populated"] = len(files)

    no_storescp = None if storescp else "DCMTK storescp is not installed"
    no_qr = None if dcmqrscp and storescu else "DCMTK dcmqrscp/storescu is not installed"
    impls = [
        DataImpl("store", "aiodicom-asyncio", "aiodicom, asyncio, discard", "aiodicom", _aio("store", "asyncio")),
        DataImpl("store", "aiodicom-uvloop", "aiodicom, uvloop, discard", "aiodicom", _aio("store", "uvloop")),
        DataImpl("store", "aiodicom-disk", "aiodicom, uvloop, store_to_directory", "aiodicom-disk",
                 _aio("store-disk", "uvloop")),
        DataImpl("store", "pynetdicom", "pynetdicom, discard", "pynetdicom", _pynd("store"), no_pynd),
        DataImpl("store", "dcmtk-ignore", "DCMTK storescp --fork --ignore", "dcmtk", storescp_cmd(True), no_storescp),
        DataImpl("store", "dcmtk-disk", "DCMTK storescp --fork (to disk)", "dcmtk-disk", storescp_cmd(False),
                 no_storescp),
        DataImpl("find", "aiodicom-asyncio", "aiodicom serve_find, asyncio", "aiodicom", _aio("find", "asyncio")),
        DataImpl("find", "aiodicom-uvloop", "aiodicom serve_find, uvloop", "aiodicom", _aio("find", "uvloop")),
        DataImpl("find", "pynetdicom", "pynetdicom EVT_C_FIND", "pynetdicom", _pynd("find"), no_pynd),
        DataImpl("get", "aiodicom-uvloop", "aiodicom serve_get (files), uvloop", "aiodicom", _aio("get", "uvloop")),
        DataImpl("get", "pynetdicom", "pynetdicom EVT_C_GET (files)", "pynetdicom", _pynd("get"), no_pynd),
        DataImpl("get", "dcmtk", "DCMTK dcmqrscp", "dcmtk", dcmqrscp_cmd, no_qr, called_ae="BENCHQR",
                 prepare=populate),
    ]
    return [i for i in impls if i.suite in cfg.suites and (cfg.impls is None or i.key in cfg.impls)]


def write_get_files(directory: str, n: int, size_kib: float) -> None:
    from aiodicom.bench import synthetic_ct
    from aiodicom.dataset import EncodedDataset
    from aiodicom.part10 import write_part10
    from aiodicom.uids import ExplicitVRLittleEndian

    os.makedirs(directory, exist_ok=True)
    for i in range(n):
        uid = f"1.2.826.0.1.3680043.9.7433.2.{i + 1}"
        ds = synthetic_ct(size_kib, uid)
        ds.InstanceNumber = i + 1
        enc = EncodedDataset.from_dataset(ds, ExplicitVRLittleEndian)
        write_part10(os.path.join(directory, f"{uid}.dcm"), ds.SOPClassUID, uid, ExplicitVRLittleEndian,
                     enc.fragments, fsync=False)


def _query(suite: str) -> tuple[str, str]:
    from pydicom.dataset import Dataset

    ds = Dataset()
    if suite == "find":
        ds.QueryRetrieveLevel = "PATIENT"
        ds.PatientID = ""
        ds.PatientName = ""
        return "patient", json.dumps(ds.to_json_dict())
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = STUDY_UID
    return "study", json.dumps(ds.to_json_dict())


def _run_cells(impl: DataImpl, cfg: DataConfig, size: float, clients: list[int], files_dir: str | None) -> list[DataRow]:
    rows = [DataRow(impl.suite, impl.key, impl.label, impl.family, size, c) for c in clients]
    if impl.unavailable:
        for r in rows:
            r.failure = f"skipped: {impl.unavailable}"
        return rows
    tmp = tempfile.mkdtemp(prefix="aiodicom-bench-data-")
    server: ServerProcess | None = None
    try:
        if impl.suite == "get" and files_dir and impl.family != "dcmtk":
            for n in os.listdir(files_dir):
                os.link(os.path.join(files_dir, n), os.path.join(tmp, n))
        port = free_port()
        argv, env = impl.cmd(port, tmp)
        server = start_server(impl.key, argv, port, env=env, tmpdir=tmp, host=HOST)
        if impl.prepare is not None and files_dir:
            impl.prepare(server, files_dir)
        args = [
            "--op", impl.suite if impl.suite != "find" else "find", "--port", str(port), "--called-ae", impl.called_ae,
            "--concurrency", ",".join(map(str, clients)), "--duration", str(cfg.duration),
            "--warmup", str(cfg.warmup), "--size", str(size), "--peer-pid", str(server.pid),
        ]
        if impl.suite in ("find", "get"):
            model, query = _query(impl.suite)
            args += ["--model", model, "--query", query]
        timeout = len(clients) * (cfg.warmup + cfg.duration + 120) + 60
        results = run_loadgen(python_module("benchmarks.data_client", *args), timeout)
        by_clients = {r["clients"]: r for r in results}
        for row in rows:
            res = by_clients.get(row.clients)
            if res is None:
                row.failure = "no result"
                continue
            if res.get("failure"):
                row.failure = res["failure"]
                continue
            row.ops_per_s, row.items_per_s, row.mb_per_s = res["ops_per_s"], res["items_per_s"], res["mb_per_s"]
            row.p50_ms, row.p99_ms = res["latency_ms"].get("p50"), res["latency_ms"].get("p99")
            row.ops, row.items, row.errors = res["ops"], res["items"], res["errors_total"]
            row.error_samples = res.get("error_samples", {})
            window = res.get("window_s") or cfg.duration
            cpu = res.get("cpu_s", {})
            if cpu.get("peer") is not None:
                row.cpu_pct_tested = 100 * cpu["peer"] / window
            if cpu.get("self") is not None:
                row.cpu_pct_peer = 100 * cpu["self"] / window
        if not server.alive():
            for row in rows:
                row.failure = row.failure or f"server exited: {server.log_tail()[-200:]}"
    except Exception as exc:  # noqa: BLE001 - reported in the row
        for row in rows:
            row.failure = row.failure or f"{type(exc).__name__}: {exc}"[:300]
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def _metric(row: DataRow) -> float:
    return row.mb_per_s if row.suite in ("store", "get") else row.items_per_s


def median_row(runs: list[DataRow]) -> DataRow:
    """The run of a cell with the median rate (the lower middle one of an even count).

    Failed runs count as rate 0; the row keeps every run's rate in ``runs``.
    """
    ranked = sorted(runs, key=lambda r: 0.0 if r.failure else _metric(r))
    row = ranked[(len(ranked) - 1) // 2]
    row.runs = [0.0 if r.failure else _metric(r) for r in runs]
    return row


def _ratios(rows: list[DataRow], raw_mb: float | None) -> None:
    for r in rows:
        for fam, attr in (("pynetdicom", "vs_pynetdicom"), ("dcmtk", "vs_dcmtk")):
            base = [
                _metric(b) for b in rows
                if (b.suite, b.size_kib, b.clients) == (r.suite, r.size_kib, r.clients)
                and b.family == fam and not b.failure and _metric(b) > 0
            ]
            if base and _metric(r) > 0 and not r.failure:
                setattr(r, attr, _metric(r) / max(base))
        if raw_mb and r.suite == "store" and r.size_kib >= 65536 and not r.failure:
            r.pct_raw_tcp = 100 * r.mb_per_s / raw_mb


def run_data(cfg: DataConfig) -> dict[str, Any]:
    say = cfg.progress or (lambda s: None)
    t0 = time.monotonic()
    rows: list[DataRow] = []
    raw: dict[str, Any] | None = None
    files_dir: str | None = None
    la0 = os.getloadavg()
    try:
        if "store" in cfg.suites and cfg.raw_tcp and any(s >= 65536 for s in cfg.store_sizes_kib):
            from .rawtcp import measure

            raw = measure(cfg.duration)
            say(f"raw loopback TCP: {raw['mb_per_s']:.0f} MB/s")
        if "get" in cfg.suites:
            files_dir = tempfile.mkdtemp(prefix="aiodicom-bench-getfiles-")
            write_get_files(files_dir, cfg.get_instances, cfg.get_size_kib)
        impls = implementations(cfg, files_dir, cfg.find_matches)
        cells: dict[tuple[str, str, float, int], list[DataRow]] = {}
        repeat = max(1, cfg.repeat)
        # round-robin: a slow drift in the machine's load hits every implementation alike
        for rep in range(repeat):
            for impl in impls:
                if impl.suite == "store":
                    plan = [(s, cfg.store_clients) for s in cfg.store_sizes_kib]
                elif impl.suite == "find":
                    plan = [(0.0, cfg.find_clients)]
                else:
                    plan = [(cfg.get_size_kib, cfg.get_clients)]
                for size, clients in plan:
                    if rep and impl.unavailable:
                        continue
                    for row in _run_cells(impl, cfg, size, clients, files_dir):
                        cells.setdefault((row.suite, row.key, row.size_kib, row.clients), []).append(row)
                        say(
                            f"  {row.suite} {row.key:<17} size {_size(row)} c={row.clients:<3} "
                            f"{row.ops_per_s:8.1f} ops/s {row.items_per_s:9.1f} items/s {row.mb_per_s:8.1f} MB/s "
                            f"errors {row.errors}" + (f" [{row.failure[:80]}]" if row.failure else "")
                            + (f"  (run {rep + 1}/{repeat})" if repeat > 1 else "")
                        )
        rows.extend(median_row(runs) for runs in cells.values())
    finally:
        if files_dir:
            shutil.rmtree(files_dir, ignore_errors=True)
    _ratios(rows, raw["mb_per_s"] if raw else None)
    report = {
        "meta": {
            "loadavg_start": la0,
            "loadavg_end": os.getloadavg(),
            "cpus": os.cpu_count(),
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress", "impls")},
            "total_s": time.monotonic() - t0,
        },
        "raw_tcp": raw,
        "rows": [asdict(r) for r in rows],
    }
    if cfg.json_path:
        with open(cfg.json_path, "w") as f:
            json.dump(report, f, indent=1)
    return report


def _size(row: DataRow | dict[str, Any]) -> str:
    kib = row["size_kib"] if isinstance(row, dict) else row.size_kib
    if not kib:
        return "-"
    return f"{kib / 1024:g} MiB" if kib >= 1024 else f"{kib:g} KiB"


def _f(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_data_report(report: dict[str, Any]) -> str:
    rows = report["rows"]
    meta = report["meta"]
    repeated = meta["config"].get("repeat", 1) if meta["config"].get("repeat", 1) > 1 else 0
    out = [
        "",
        f"Data benchmarks - SCP side (the SERVER is under test); fixed load generator: aiodicom bench engine on "
        f"uvloop, separate process.  {meta['cpus']} CPUs, load average {meta['loadavg_start'][0]:.2f} at start, "
        f"{meta['loadavg_end'][0]:.2f} at end; window {meta['config']['duration']} s after "
        f"{meta['config']['warmup']} s warm-up."
        + (f"  {repeated} runs per cell, round-robin; the median run is shown." if repeated else ""),
    ]
    titles = {
        "store": "C-STORE: instances/s and MB/s (synthetic CT, new association set per cell, kept open)",
        "find": f"C-FIND: responses/s, one query matching {meta['config']['find_matches']} identifiers per operation",
        "get": f"C-GET: MB/s, one C-GET = {meta['config']['get_instances']} x "
               f"{meta['config']['get_size_kib']:g} KiB instances (Study Root, STUDY level)",
    }
    for suite in DATA_SUITES:
        srows = [r for r in rows if r["suite"] == suite]
        if not srows:
            continue
        out += ["", titles[suite]]
        head = f"  {'server':<38}{'size':>9}{'assocs':>7}{'ops/s':>9}"
        head += f"{'resp/s':>10}" if suite == "find" else f"{'MB/s':>9}"
        head += f"{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}{'srv CPU%':>9}{'gen CPU%':>9}{'vs pynd':>8}{'vs DCMTK':>9}"
        if suite == "store":
            head += f"{'% raw':>7}"
        if repeated:
            head += f"  {'range of ' + str(repeated) + ' runs':>18}"
        out.append(head)
        for r in srows:
            line = f"  {r['label']:<38}{_size(r):>9}{r['clients']:>7}"
            if r["failure"]:
                out.append(line + f"  {r['failure'][:90]}")
                continue
            line += f"{r['ops_per_s']:>9.1f}"
            line += f"{r['items_per_s']:>10.0f}" if suite == "find" else f"{r['mb_per_s']:>9.1f}"
            line += (
                f"{_f(r['p50_ms'], '.2f'):>9}{_f(r['p99_ms'], '.2f'):>9}{r['errors']:>7}"
                f"{_f(r['cpu_pct_tested'], '.0f'):>9}{_f(r['cpu_pct_peer'], '.0f'):>9}"
                f"{_f(r['vs_pynetdicom'], '.2f'):>8}{_f(r['vs_dcmtk'], '.2f'):>9}"
            )
            if suite == "store":
                line += f"{_f(r['pct_raw_tcp'], '.0f'):>7}"
            if repeated and r.get("runs"):
                line += f"  {min(r['runs']):>8.0f}-{max(r['runs']):<9.0f}"
            out.append(line)
    raw = report.get("raw_tcp")
    out.append("")
    if raw:
        out.append(
            f"raw loopback TCP (python sendall 64 MiB blocks -> recv_into, two processes): {raw['mb_per_s']:.0f} MB/s; "
            "'% raw' = 64 MiB C-STORE MB/s as % of it."
        )
    out += [
        "MB = 10^6 bytes of encoded data set.  ops/s: operations completed in the window (C-STORE: instances;",
        "  C-FIND/C-GET: whole queries/retrieves, long ones may straddle the window); resp/s and MB/s count",
        "  responses/bytes as they arrive inside the window.  p50/p99: one operation, seen by the client.",
        "srv CPU%: server under test, user+sys over the window, its child processes (storescp --fork,",
        "  dcmqrscp) included, live or reaped; gen CPU%: the load generator (100 = one core).",
        "vs pynd / vs DCMTK: the row's MB/s (C-FIND: resp/s) / the pynetdicom / DCMTK row of the same size",
        "  and association count (DCMTK: storescp --ignore for store; disk rows are compared only by eye).",
        "aiodicom store_to_directory runs with fsync=False (storescp does not fsync).  DCMTK runs with",
        "  TCP_NODELAY=1; storescp with --fork so that 16 associations are served concurrently.",
        "pynetdicom SCPs: loggers silenced, TCP_NODELAY set on accepted sockets (it has no option for it).",
        "aiodicom 'discard': a C-STORE data set sink that drops each fragment as it arrives (what storescp",
        "  --ignore does); pynetdicom 'discard' returns 0x0000 from its handler after buffering.",
    ]
    la = meta["loadavg_start"][0]
    if la > 0.5:
        out.append(f"NOTE: load average {la:.2f} at start: other processes were using the CPUs; figures are noisy.")
    return "\n".join(out)
