"""Archive benchmarks: C-STORE into an archive (disk + index) and C-FIND over a large index.

``python -m benchmarks --suite archive [--quick] [--archive-instances N] [--archive-peer-instances M]``

Servers under test (each in its own process; the fixed load generator is
``benchmarks.data_client``, the :mod:`aiodicom.bench` engine on uvloop):

* ``aiodicom serve --quiet`` (uvloop; durable: file, directory and index
  fsync before success is answered -- the default);
* the same archive (:func:`aiodicom.archive.create_archive_server`) with
  ``fsync=False`` (``python -m benchmarks.archive_suite --serve --no-fsync``);
* pynetdicom's ``qrscp`` application (SQLAlchemy + SQLite, files written by
  pydicom), config file and database in a temp dir;
* DCMTK ``dcmqrscp`` (its own index file), ``TCP_NODELAY=1``.

C-FIND: the aiodicom archive is populated in-process (files written with the
layout of :class:`aiodicom.archive.storage.Storage`, index rows inserted in
batches, no fsync) before its server starts; the peers can only be filled over
the network, so they get a smaller population (``--archive-peer-instances``),
sent by an aiodicom SCU.  Each row reports its population size N.
See ``benchmarks/README.md`` ("Archive benchmarks").
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .data_suite import DataConfig, DataImpl, DataRow, _run_cells
from .procs import ServerProcess, dcmtk_tool, free_port, python_env, python_module, run_loadgen, start_server

HOST = "127.0.0.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
ROOT_UID = "1.2.826.0.1.3680043.9.7433.5"
#: hierarchy of the C-FIND population: studies per patient, series per study, images per series
STUDIES_PER_PATIENT, SERIES_PER_STUDY, IMAGES_PER_SERIES = 2, 5, 10
PER_PATIENT = STUDIES_PER_PATIENT * SERIES_PER_STUDY * IMAGES_PER_SERIES
DATE_DAYS = 200  # study dates spread uniformly over this many days; the range query takes 2 of them


@dataclass
class ArchiveConfig:
    parts: list[str] = field(default_factory=lambda: ["store", "find"])
    store_sizes_kib: list[float] = field(default_factory=lambda: [40, 512])
    store_clients: list[int] = field(default_factory=lambda: [1, 8])
    instances: int = 100_000
    peer_instances: int = 2000
    duration: float = 2.0
    warmup: float = 0.5
    impls: set[str] | None = None
    json_path: str | None = None
    progress: Callable[[str], None] | None = None


# --------------------------------------------------------------- population


def _uid(*parts: int) -> str:
    return ".".join([ROOT_UID, *(str(p) for p in parts)])


def _date(study_no: int, n_studies: int) -> str:
    import datetime

    day = study_no * DATE_DAYS // max(1, n_studies)
    return (datetime.date(2024, 1, 1) + datetime.timedelta(days=day)).strftime("%Y%m%d")


def population(n: int) -> Any:
    """Yield one header-only CT Dataset per *series* of a population of ``n`` instances.

    Its SOPInstanceUID is the series' first; the images of a series differ only
    in that UID (``<series UID>.<100 + image>``, fixed width), so callers encode
    the series once and patch the UID per image (see :func:`instances`).
    """
    from pydicom.dataset import Dataset

    n_patients = max(1, -(-n // PER_PATIENT))
    n_studies = n_patients * STUDIES_PER_PATIENT
    left = n
    for p in range(n_patients):
        for s in range(STUDIES_PER_PATIENT):
            study_no = p * STUDIES_PER_PATIENT + s
            for se in range(SERIES_PER_STUDY):
                if left <= 0:
                    return
                images = min(IMAGES_PER_SERIES, left)
                left -= images
                ds = Dataset()
                ds.SpecificCharacterSet = "ISO_IR 100"
                ds.SOPClassUID = CT
                ds.StudyInstanceUID = _uid(1, p + 1, s + 1)
                ds.SeriesInstanceUID = _uid(1, p + 1, s + 1, se + 1)
                ds.SOPInstanceUID = f"{ds.SeriesInstanceUID}.100"
                ds.PatientName = f"BENCH^P{p:06d}"
                ds.PatientID = f"PAT{p:06d}"
                ds.PatientBirthDate = "19700101"
                ds.PatientSex = "O"
                ds.StudyDate = _date(study_no, n_studies)
                ds.StudyTime = "120000"
                ds.AccessionNumber = f"ACC{study_no:07d}"
                ds.StudyID = str(s + 1)
                ds.StudyDescription = "BENCH STUDY"
                ds.ReferringPhysicianName = ""
                ds.Modality = "CT"
                ds.SeriesNumber = se + 1
                yield ds, images


def instances(n: int) -> Any:
    """Yield ``(sop_instance_uid, encoded data set bytes, InstanceRecord)`` for ``n`` instances."""
    from aiodicom.archive.index import InstanceRecord, record_from_dataset
    from aiodicom.dataset import EncodedDataset
    from aiodicom.uids import ExplicitVRLittleEndian as TS

    for ds, images in population(n):
        template = b"".join(bytes(f) for f in EncodedDataset.from_dataset(ds, TS).fragments)
        first = ds.SOPInstanceUID.encode("ascii")
        assert template.count(first) == 1
        head, tail = template.split(first)
        rec = record_from_dataset(ds)
        for im in range(images):
            uid = f"{ds.SeriesInstanceUID}.{100 + im}"
            inst = dict(rec.instance, sop_instance_uid=uid)
            yield uid, head + uid.encode("ascii") + tail, InstanceRecord(rec.patient, rec.study, rec.series, inst)


def populate_aiodicom(root: str, n: int) -> float:
    """Write ``n`` instances with Storage's layout and index them in batches (no fsync); seconds taken."""
    from aiodicom.archive.index import Index, InstanceEntry
    from aiodicom.archive.storage import INDEX_NAME, Storage
    from aiodicom.part10 import write_part10
    from aiodicom.uids import ExplicitVRLittleEndian as TS

    t0 = time.monotonic()
    os.makedirs(root, exist_ok=True)
    index = Index(os.path.join(root, INDEX_NAME), synchronous="OFF")
    made: set[str] = set()
    batch: list[InstanceEntry] = []
    try:
        for uid, data, record in instances(n):
            rel = Storage.relative_path(uid)
            path = os.path.join(root, rel)
            parent = os.path.dirname(path)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            write_part10(path, CT, uid, TS, [data], fsync=False)
            st = os.stat(path)
            batch.append(InstanceEntry(record, rel, TS, st.st_size, None, time.time(), st.st_mtime_ns))
            if len(batch) >= 5000:
                index.add_instances(batch)
                batch = []
        if batch:
            index.add_instances(batch)
    finally:
        index.close()
    return time.monotonic() - t0


def write_population_files(directory: str, n: int) -> None:
    """The same population as Part 10 files (to send to the peers)."""
    from aiodicom.part10 import write_part10
    from aiodicom.uids import ExplicitVRLittleEndian as TS

    os.makedirs(directory, exist_ok=True)
    for uid, data, _ in instances(n):
        write_part10(os.path.join(directory, f"{uid}.dcm"), CT, uid, TS, [data], fsync=False)


async def _send_files(port: int, called_ae: str, files: list[str]) -> int:
    from aiodicom import associate
    from aiodicom.uids import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    failed = 0
    async with associate(HOST, port, called_ae=called_ae,
                         contexts=[(CT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])],
                         dimse_timeout=120) as assoc:
        for path in files:
            status = await assoc.store(path)
            if not (status.is_success or status.is_warning):
                failed += 1
    return failed


def populate_peer(server: ServerProcess, called_ae: str, files_dir: str) -> None:
    files = sorted(os.path.join(files_dir, f) for f in os.listdir(files_dir))
    t0 = time.monotonic()
    failed = asyncio.run(_send_files(server.port, called_ae, files))
    if failed:
        raise RuntimeError(f"populating {server.name}: {failed} of {len(files)} C-STOREs failed")
    server.extra["populate_s"] = time.monotonic() - t0
    server.extra["populated"] = len(files)


# --------------------------------------------------------------- queries


def queries(n: int) -> list[tuple[str, str, str]]:
    """``(key, description, DICOM JSON)`` of the three C-FIND queries (Study Root) for a population of ``n``."""
    from pydicom.dataset import Dataset

    n_patients = max(1, -(-n // PER_PATIENT))
    n_studies = n_patients * STUDIES_PER_PATIENT
    p = n_patients // 2
    q1 = Dataset()
    q1.QueryRetrieveLevel = "STUDY"
    q1.PatientID = f"PAT{p:06d}"
    q1.StudyInstanceUID = ""
    q1.StudyDate = ""
    q1.PatientName = ""
    q1.AccessionNumber = ""
    import datetime

    lo = _date(n_studies // 2, n_studies)
    hi = (datetime.datetime.strptime(lo, "%Y%m%d") + datetime.timedelta(days=1)).strftime("%Y%m%d")
    # a 2-day range: 1 % of the studies when there are at least DATE_DAYS studies
    q2 = Dataset()
    q2.QueryRetrieveLevel = "STUDY"
    q2.StudyDate = f"{lo}-{hi}"
    q2.PatientName = "BENCH^P*"
    q2.StudyInstanceUID = ""
    q2.PatientID = ""
    q2.AccessionNumber = ""
    q3 = Dataset()
    q3.QueryRetrieveLevel = "IMAGE"
    q3.StudyInstanceUID = _uid(1, p + 1, 1)
    q3.SeriesInstanceUID = _uid(1, p + 1, 1, 1)
    q3.SOPInstanceUID = ""
    q3.SOPClassUID = ""
    return [
        ("study-by-pid", "STUDY, PatientID=<one patient>", json.dumps(q1.to_json_dict())),
        ("study-date-range", f"STUDY, StudyDate range + PatientName={q2.PatientName}", json.dumps(q2.to_json_dict())),
        ("image-one-series", "IMAGE, one series (Study+Series UID)", json.dumps(q3.to_json_dict())),
    ]


# --------------------------------------------------------------- servers


ServerCmd = Callable[[int, str], tuple[list[str], dict[str, str]]]


def _aio_serve(storage: str | None = None) -> ServerCmd:
    def cmd(port: int, tmp: str) -> tuple[list[str], dict[str, str]]:
        return python_module(
            "aiodicom", "serve", "--quiet", "--host", HOST, "--port", str(port),
            "--storage", storage or os.path.join(tmp, "archive"),
        ), python_env()

    return cmd


def _aio_nofsync(port: int, tmp: str) -> tuple[list[str], dict[str, str]]:
    return python_module(
        "benchmarks.archive_suite", "--serve", "--no-fsync", "--port", str(port), "--dir", os.path.join(tmp, "archive")
    ), python_env()


def _qrscp(port: int, tmp: str) -> tuple[list[str], dict[str, str]]:
    conf = os.path.join(tmp, "qrscp.ini")
    with open(conf, "w") as f:
        f.write(
            "[DEFAULT]\nae_title: QRSCP\n"
            f"port: {port}\nmax_pdu: 131072\nacse_timeout: 30\ndimse_timeout: 60\nnetwork_timeout: 60\n"
            f"bind_address: {HOST}\ninstance_location: {os.path.join(tmp, 'instances')}\n"
            f"database_location: {os.path.join(tmp, 'instances.sqlite')}\nlog_identifier: False\n"
        )
    return python_module("pynetdicom", "qrscp", "-q", "-c", conf), python_env()


def _dcmqrscp(tool: str) -> ServerCmd:
    def cmd(port: int, tmp: str) -> tuple[list[str], dict[str, str]]:
        db = os.path.join(tmp, "db")
        os.makedirs(db, exist_ok=True)
        conf = os.path.join(tmp, "dcmqrscp.cfg")
        with open(conf, "w") as f:
            f.write(
                f"NetworkTCPPort = {port}\nMaxPDUSize = 131072\nMaxAssociations = 64\n\n"
                "HostTable BEGIN\nHostTable END\n\nVendorTable BEGIN\nVendorTable END\n\n"
                f"AETable BEGIN\nBENCHQR {db} RW (1000000, 65536mb) ANY\nAETable END\n"
            )
        return [tool, "-c", conf, str(port)], python_env({"TCP_NODELAY": "1"})

    return cmd


def _peers() -> list[tuple[str, str, str, ServerCmd | None, str, str | None]]:
    """(key, label, family, cmd, called AE, unavailable) of the peers."""
    no_pynd = None
    if importlib.util.find_spec("pynetdicom") is None:
        no_pynd = "pynetdicom is not installed"
    elif importlib.util.find_spec("sqlalchemy") is None:
        no_pynd = "sqlalchemy is not installed (pynetdicom qrscp needs it: pip install sqlalchemy)"
    dcmqrscp = dcmtk_tool("dcmqrscp")
    return [
        ("pynetdicom-qrscp", "pynetdicom qrscp app", "pynetdicom", _qrscp, "QRSCP", no_pynd),
        ("dcmqrscp", "DCMTK dcmqrscp", "dcmtk", _dcmqrscp(dcmqrscp) if dcmqrscp else None, "BENCHQR",
         None if dcmqrscp else "DCMTK dcmqrscp is not installed"),
    ]


def _wanted(cfg: ArchiveConfig, key: str) -> bool:
    return cfg.impls is None or key in cfg.impls


# --------------------------------------------------------------- C-STORE


def run_store(cfg: ArchiveConfig, say: Callable[[str], None]) -> list[DataRow]:
    dcfg = DataConfig(suites=["store"], duration=cfg.duration, warmup=cfg.warmup)
    impls = [
        DataImpl("store", "aiodicom", "aiodicom serve (uvloop, fsync on)", "aiodicom", _aio_serve(),
                 called_ae="AIODICOM"),
        DataImpl("store", "aiodicom-nofsync", "aiodicom archive, fsync off", "aiodicom", _aio_nofsync,
                 called_ae="AIODICOM"),
    ]
    for key, label, family, cmd, ae, unavailable in _peers():
        impls.append(DataImpl("store", key, label, family, cmd or _aio_serve(), unavailable, called_ae=ae))
    rows: list[DataRow] = []
    for impl in impls:
        if not _wanted(cfg, impl.key):
            continue
        for size in cfg.store_sizes_kib:
            for row in _run_cells(impl, dcfg, size, cfg.store_clients, None):
                rows.append(row)
                say(
                    f"  archive store {row.key:<17} {size:g} KiB c={row.clients:<2} {row.ops_per_s:8.1f} inst/s "
                    f"{row.mb_per_s:7.1f} MB/s errors {row.errors}" + (f" [{row.failure[:80]}]" if row.failure else "")
                )
    for r in rows:
        for fam, attr in (("pynetdicom", "vs_pynetdicom"), ("dcmtk", "vs_dcmtk")):
            base = [b.ops_per_s for b in rows if (b.size_kib, b.clients) == (r.size_kib, r.clients)
                    and b.family == fam and not b.failure and b.ops_per_s > 0]
            if base and r.ops_per_s > 0 and not r.failure:
                setattr(r, attr, r.ops_per_s / max(base))
    return rows


# --------------------------------------------------------------- C-FIND


def _find_cells(
    key: str, label: str, family: str, server: ServerProcess, called_ae: str, n: int, cfg: ArchiveConfig,
    populate_s: float,
) -> list[dict[str, Any]]:
    rows = []
    for qkey, qdesc, query in queries(n):
        row: dict[str, Any] = {
            "key": key, "label": label, "family": family, "query": qkey, "query_desc": qdesc, "instances": n,
            "populate_s": populate_s, "queries_per_s": 0.0, "matches": None, "p50_ms": None, "p99_ms": None,
            "errors": 0, "ops": 0, "cpu_pct_tested": None, "failure": None, "error_samples": {},
            "vs_pynetdicom": None, "vs_dcmtk": None,
        }
        try:
            args = [
                "--op", "find", "--port", str(server.port), "--called-ae", called_ae, "--concurrency", "1",
                "--duration", str(cfg.duration), "--warmup", str(cfg.warmup), "--model", "study",
                "--query", query, "--peer-pid", str(server.pid),
            ]
            res = run_loadgen(python_module("benchmarks.data_client", *args), cfg.warmup + cfg.duration + 180)
            r = res[0] if res else {"failure": "no result"}
            if r.get("failure"):
                row["failure"] = r["failure"]
            else:
                row.update(
                    queries_per_s=r["ops_per_s"], ops=r["ops"], errors=r["errors_total"],
                    p50_ms=r["latency_ms"].get("p50"), p99_ms=r["latency_ms"].get("p99"),
                    matches=round(r["items"] / r["ok"]) if r.get("ok") else None,  # items count on arrival: nearest
                    error_samples=r.get("error_samples", {}),
                )
                cpu = r.get("cpu_s", {})
                if cpu.get("peer") is not None:
                    row["cpu_pct_tested"] = 100 * cpu["peer"] / (r.get("window_s") or cfg.duration)
        except Exception as exc:  # noqa: BLE001 - reported in the row
            row["failure"] = f"{type(exc).__name__}: {exc}"[:300]
        if not server.alive():
            row["failure"] = row["failure"] or f"server exited: {server.log_tail()[-200:]}"
        rows.append(row)
    return rows


def _skipped(key: str, label: str, family: str, n: int, reason: str) -> list[dict[str, Any]]:
    return [
        {"key": key, "label": label, "family": family, "query": q, "query_desc": d, "instances": n,
         "populate_s": None, "failure": reason}
        for q, d, _ in queries(n)
    ]


def run_find(cfg: ArchiveConfig, say: Callable[[str], None]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if _wanted(cfg, "aiodicom"):
        tmp = tempfile.mkdtemp(prefix="aiodicom-bench-archive-")
        server: ServerProcess | None = None
        try:
            root = os.path.join(tmp, "archive")
            say(f"  populating the aiodicom archive with {cfg.instances} instances ...")
            took = populate_aiodicom(root, cfg.instances)
            say(f"  populated in {took:.1f} s ({cfg.instances / took:.0f} instances/s)")
            port = free_port()
            argv, env = _aio_serve(root)(port, tmp)
            # start-up runs the recovery scan over every file: give it time
            server = start_server("aiodicom", argv, port, env=env, host=HOST, startup_timeout=120 + cfg.instances / 500)
            rows += _find_cells("aiodicom", "aiodicom serve (uvloop)", "aiodicom", server, "AIODICOM",
                                cfg.instances, cfg, took)
        except Exception as exc:  # noqa: BLE001
            rows += _skipped("aiodicom", "aiodicom serve (uvloop)", "aiodicom", cfg.instances,
                             f"{type(exc).__name__}: {exc}"[:300])
        finally:
            if server is not None:
                server.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    peers = [p for p in _peers() if _wanted(cfg, p[0])]
    if peers:
        files_dir = tempfile.mkdtemp(prefix="aiodicom-bench-archive-files-")
        try:
            write_population_files(files_dir, cfg.peer_instances)
            for key, label, family, cmd, ae, unavailable in peers:
                if unavailable or cmd is None:
                    rows += _skipped(key, label, family, cfg.peer_instances, f"skipped: {unavailable}")
                    continue
                tmp = tempfile.mkdtemp(prefix="aiodicom-bench-archive-")
                server = None
                try:
                    port = free_port()
                    argv, env = cmd(port, tmp)
                    server = start_server(key, argv, port, env=env, tmpdir=tmp, host=HOST)
                    say(f"  populating {key} with {cfg.peer_instances} instances over the network ...")
                    populate_peer(server, ae, files_dir)
                    took = server.extra["populate_s"]
                    say(f"  populated in {took:.1f} s")
                    rows += _find_cells(key, label, family, server, ae, cfg.peer_instances, cfg, took)
                except Exception as exc:  # noqa: BLE001
                    rows += _skipped(key, label, family, cfg.peer_instances, f"{type(exc).__name__}: {exc}"[:300])
                finally:
                    if server is not None:
                        server.stop()
                    shutil.rmtree(tmp, ignore_errors=True)
        finally:
            shutil.rmtree(files_dir, ignore_errors=True)
    for r in rows:
        say(
            f"  archive find {r['key']:<17} {r['query']:<17} N={r['instances']:<7} "
            f"{r.get('queries_per_s') or 0:8.1f} q/s  matches {r.get('matches')}"
            + (f" [{r['failure'][:80]}]" if r.get("failure") else "")
        )
        for fam, attr in (("pynetdicom", "vs_pynetdicom"), ("dcmtk", "vs_dcmtk")):
            base = [b["queries_per_s"] for b in rows if b["query"] == r["query"] and b["family"] == fam
                    and not b.get("failure") and b.get("queries_per_s")]
            if base and r.get("queries_per_s") and not r.get("failure"):
                r[attr] = r["queries_per_s"] / max(base)
    return rows


# --------------------------------------------------------------- report


def run_archive(cfg: ArchiveConfig) -> dict[str, Any]:
    say = cfg.progress or (lambda s: None)
    t0 = time.monotonic()
    la0 = os.getloadavg()
    store = run_store(cfg, say) if "store" in cfg.parts else []
    find = run_find(cfg, say) if "find" in cfg.parts else []
    report = {
        "meta": {
            "loadavg_start": la0,
            "loadavg_end": os.getloadavg(),
            "cpus": os.cpu_count(),
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress", "impls")},
            "total_s": time.monotonic() - t0,
        },
        "store": [asdict(r) for r in store],
        "find": find,
    }
    return report


def _f(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_archive_report(report: dict[str, Any]) -> str:
    meta = report["meta"]
    cfg = meta["config"]
    out = [
        "",
        f"Archive benchmarks - SCP side (the ARCHIVE is under test); load generator: aiodicom bench engine on uvloop, "
        f"separate process.  {meta['cpus']} CPUs, load average {meta['loadavg_start'][0]:.2f} at start, "
        f"{meta['loadavg_end'][0]:.2f} at end; window {cfg['duration']} s after {cfg['warmup']} s warm-up.",
    ]
    if report["store"]:
        out += ["", "C-STORE into the archive (synthetic CT, every instance a new SOP Instance UID, associations kept open)"]
        head = (f"  {'server':<36}{'size':>8}{'assocs':>7}{'inst/s':>9}{'MB/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
                f"{'errors':>7}{'srv CPU%':>9}{'vs pynd qr':>11}{'vs dcmqrscp':>12}")
        out.append(head)
        for r in report["store"]:
            line = f"  {r['label']:<36}{r['size_kib']:>5g} KiB{r['clients']:>7}"
            if r["failure"]:
                out.append(line + f"  {r['failure'][:100]}")
                continue
            out.append(
                line + f"{r['ops_per_s']:>9.1f}{r['mb_per_s']:>8.1f}{_f(r['p50_ms'], '.2f'):>9}"
                f"{_f(r['p99_ms'], '.2f'):>9}{r['errors']:>7}{_f(r['cpu_pct_tested'], '.0f'):>9}"
                f"{_f(r['vs_pynetdicom'], '.2f'):>11}{_f(r['vs_dcmtk'], '.2f'):>12}"
            )
    if report["find"]:
        out += ["", "C-FIND over an indexed archive (Study Root, 1 association; N = instances in the archive, "
                f"{STUDIES_PER_PATIENT} studies x {SERIES_PER_STUDY} series x {IMAGES_PER_SERIES} images per patient)"]
        head = (f"  {'server':<26}{'query':<18}{'N':>8}{'fill s':>8}{'q/s':>9}{'matches':>8}{'p50 ms':>9}"
                f"{'p99 ms':>9}{'errors':>7}{'srv CPU%':>9}{'vs pynd qr':>11}{'vs dcmqrscp':>12}")
        out.append(head)
        for r in report["find"]:
            line = f"  {r['label']:<26}{r['query']:<18}{r['instances']:>8}{_f(r.get('populate_s'), '.1f'):>8}"
            if r.get("failure"):
                out.append(line + f"  {r['failure'][:100]}")
                continue
            out.append(
                line + f"{r['queries_per_s']:>9.1f}{_f(r['matches'], '.0f'):>8}{_f(r['p50_ms'], '.2f'):>9}"
                f"{_f(r['p99_ms'], '.2f'):>9}{r['errors']:>7}{_f(r['cpu_pct_tested'], '.0f'):>9}"
                f"{_f(r['vs_pynetdicom'], '.2f'):>11}{_f(r['vs_dcmtk'], '.2f'):>12}"
            )
        out.append("  queries: " + "; ".join(f"{k} = {d}" for k, d, _ in queries(cfg["instances"])))
    out += [
        "",
        "inst/s, q/s: operations completed in the window / window length; MB = 10^6 bytes of data set.",
        "p50/p99: one C-STORE / one whole C-FIND (all responses), seen by the client.  srv CPU%: server (100 = one core).",
        "aiodicom serve answers success only after file, directory and index are fsynced (durable); the 'fsync off'",
        "  row is the same archive without fsync.  pynetdicom qrscp and dcmqrscp do not fsync: compare them with",
        "  the fsync-off row for the cost of the protocol stack + index, with the fsync-on row for durability.",
        "vs pynd qr / vs dcmqrscp: the row's rate / the pynetdicom qrscp / DCMTK dcmqrscp row of the same cell.",
        "C-FIND: the aiodicom archive is populated in-process (fill s = writing files + batched index inserts);",
        "  the peers are filled over the network by an aiodicom SCU (fill s = that transfer), hence their smaller N.",
        "  Rates over different N are not directly comparable: a linear-scan index (dcmqrscp) slows with N.",
    ]
    la = meta["loadavg_start"][0]
    if la > 0.5:
        out.append(f"NOTE: load average {la:.2f} at start: other processes were using the CPUs; figures are noisy.")
    return "\n".join(out)


# --------------------------------------------------------------- server entry point


def serve(args: argparse.Namespace) -> int:
    from aiodicom.archive.server import create_archive_server
    from aiodicom.cli import run_loop

    async def main() -> int:
        server = await create_archive_server(args.dir, "AIODICOM", fsync=not args.no_fsync, max_associations=4096)
        await server.start(args.host, args.port)
        print(f"aiodicom archive (fsync {'off' if args.no_fsync else 'on'}) on {args.host}:{args.port}", flush=True)
        try:
            await server.serve_forever()
        finally:
            await server.close()
        return 0

    return run_loop(main(), use_uvloop=True)


def main() -> int:
    p = argparse.ArgumentParser(description="aiodicom archive server for the archive benchmarks")
    p.add_argument("--serve", action="store_true", required=True)
    p.add_argument("--host", default=HOST)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--no-fsync", action="store_true")
    return serve(p.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
