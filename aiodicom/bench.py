"""``aiodicom bench``: a DICOM load generator for any SCP.

``N`` concurrent workers (tasks on one event loop) run operations
(C-ECHO, C-STORE, C-FIND or C-GET) back to back for ``--duration`` seconds
or until ``--count`` operations were done.  By default each worker keeps its
association open (``--per-association N`` re-associates after N
operations); ``--cycle`` opens, uses and releases an association for every
operation (the latency then covers the whole cycle).

What is counted:

* an *operation* is one C-ECHO / C-STORE / C-FIND / C-GET request with its
  final response; it succeeds when the final status is 0x0000 (C-STORE
  warnings B000-BFFF count as success);
* *items*: C-FIND pending responses (matches), C-GET instances received,
  C-STORE instances sent (successfully), C-ECHOs;
* *bytes*: encoded data set bytes sent (C-STORE) or received (C-GET);
  MB = 10^6 bytes;
* errors by kind: ``rejected`` (A-ASSOCIATE-RJ), ``aborted`` (A-ABORT or
  connection lost), ``status`` (final status not success; codes listed),
  ``timeout`` (connect, ACSE or DIMSE timeout), ``connect`` (connection
  refused etc.), ``context`` (no accepted presentation context), ``other``.

With ``warmup`` (duration mode only), operations, items and bytes are
counted only when they complete inside the window that starts after the
warm-up; rates are per window second.  In count mode the rate is counted
over the time from the start to the last completion.

C-STORE instances are synthetic CT images generated once in memory (zero
pixel data, ``--size`` KiB in all); every send gets its own SOP Instance UID,
patched into the pre-encoded data set (one small buffer per send, the pixel
data is shared), so the generator costs almost nothing per byte.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from .aio.client import associate
from .aio.errors import AssociationAborted, AssociationRejectedError, NoAcceptedContext
from .dimse.commands import PRIORITY_MEDIUM
from .dimse.status import Status

# imported here, not in the operations: an import statement costs a few
# microseconds each time it runs, and _op_store runs once per instance
from .services.store import (
    _exchange,
    _native_target,
    _no_context,
    _storage_contexts,
    _store_command,
)
from .uids import ExplicitVRLittleEndian, ImplicitVRLittleEndian

__all__ = [
    "OPERATIONS",
    "BenchConfig",
    "BenchError",
    "BenchResult",
    "format_result",
    "run",
    "synthetic_ct",
]

OPERATIONS = ("echo", "store", "find", "get")

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ERROR_KINDS = ("rejected", "aborted", "status", "timeout", "connect", "context", "other")


class BenchError(Exception):
    """A user-facing error (bad configuration, peer unusable before any operation)."""


@dataclass
class BenchConfig:
    operation: str
    host: str
    port: int
    called_ae: str = "ANY-SCP"
    calling_ae: str = "AIODICOM"
    concurrency: int = 1
    duration: float | None = None
    count: int | None = None
    warmup: float = 0.0
    size_kib: float = 512.0
    query: Dataset | None = None  # find / get identifier
    model: str = "patient"
    per_association: int = 0  # 0: keep the association open
    cycle: bool = False
    timeout: float = 30.0
    progress: bool = True
    #: called with "start" / "end" at the measurement window's edges (benchmarks sample CPU there)
    on_window: Callable[[str], None] | None = None

    def check(self) -> None:
        if self.operation not in OPERATIONS:
            raise BenchError(f"unknown operation {self.operation!r}; expected one of {', '.join(OPERATIONS)}")
        if self.concurrency < 1:
            raise BenchError("--concurrency must be at least 1")
        if self.duration is not None and self.count is not None:
            raise BenchError("give --duration or --count, not both")
        if self.duration is None and self.count is None:
            self.duration = 10.0
        if self.duration is not None and not self.duration > 0:
            raise BenchError("--duration must be positive")
        if self.count is not None and self.count < 1:
            raise BenchError("--count must be at least 1")
        if self.warmup < 0:
            raise BenchError("--warmup must not be negative")
        if self.per_association < 0:
            raise BenchError("--per-association must not be negative")
        if self.operation == "store" and not self.size_kib > 0:
            raise BenchError("--size must be positive")
        if self.operation in ("find", "get") and self.query is None:
            raise BenchError(f"{self.operation} needs a query")


@dataclass
class BenchResult:
    operation: str
    target: str
    concurrency: int
    mode: str
    loop: str
    window_s: float = 0.0
    elapsed_s: float = 0.0
    ops: int = 0
    ok: int = 0
    failed: int = 0
    items: int = 0
    bytes: int = 0
    ops_per_s: float = 0.0
    items_per_s: float = 0.0
    mb_per_s: float = 0.0
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    associations: int = 0
    association_ms: dict[str, float | None] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=lambda: {k: 0 for k in ERROR_KINDS})
    errors_total: int = 0
    status_codes: dict[str, int] = field(default_factory=dict)
    error_samples: dict[str, int] = field(default_factory=dict)
    instance_bytes: int | None = None
    ops_total: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0-100) of sorted values."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


def _summary(values: list[float]) -> dict[str, float | None]:
    s = sorted(values)
    out: dict[str, float | None] = {f"p{q}": (percentile(s, q) or 0.0) * 1e3 if s else None for q in (50, 90, 99)}
    out["max"] = s[-1] * 1e3 if s else None
    out["mean"] = sum(s) / len(s) * 1e3 if s else None
    return out


# ------------------------------------------------------------ synthetic data


def synthetic_ct(size_kib: float, sop_instance_uid: str = "1.2.3.4") -> Dataset:
    """A CT Image data set of about ``size_kib`` KiB (zero pixels, 16 bit)."""
    target = int(size_kib * 1024)
    pixel_bytes = max(2, target - 480)  # the header is about 480 bytes
    pixels = pixel_bytes // 2
    cols = 512 if pixels >= 512 else max(1, pixels)
    rows = max(1, pixels // cols)
    if rows > 65535:
        cols = 4096
        rows = max(1, pixels // cols)
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.9.7433.1.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.9.7433.1.2"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.9.7433.1.3"
    ds.PatientName = "BENCH^SYNTHETIC"
    ds.PatientID = "BENCH"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Modality = "CT"
    ds.Manufacturer = "aiodicom bench"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.SliceThickness = 1
    ds.KVP = 120
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(rows * cols * 2)
    ds["PixelData"].VR = "OW"
    return ds


class _StoreSource:
    """Pre-encoded synthetic instances; a fresh SOP Instance UID per send."""

    def __init__(self, size_kib: float) -> None:
        self.size_kib = size_kib
        # fixed-length UIDs: <root 25 chars>.<12-digit counter> (38 chars, even: no padding)
        self.root = "2.25." + str(uuid.uuid4().int)[:20]
        self.counter = 10**11
        self.placeholder = f"{self.root}.{'9' * 12}"
        self.ds = synthetic_ct(size_kib, self.placeholder)
        self._templates: dict[str, tuple[bytes, memoryview, int]] = {}
        self.instance_bytes = len(self.template(ExplicitVRLittleEndian)[0]) + len(
            self.template(ExplicitVRLittleEndian)[1]
        ) + len(self.placeholder)

    def template(self, ts: str) -> tuple[bytes, memoryview, int]:
        t = self._templates.get(ts)
        if t is None:
            from .dataset import EncodedDataset

            enc = EncodedDataset.from_dataset(self.ds, ts)
            data = b"".join(bytes(f) for f in enc.fragments)
            needle = self.placeholder.encode("ascii")
            off = data.index(needle)
            if data.find(needle, off + 1) != -1:  # pragma: no cover - placeholder is unique
                raise RuntimeError("placeholder UID found twice")
            t = (data[:off], memoryview(data)[off + len(needle) :], off)
            self._templates[ts] = t
        return t

    def next_uid(self) -> str:
        self.counter += 1
        return f"{self.root}.{self.counter}"


# ------------------------------------------------------------ operations


class _StatusError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"status 0x{status:04X}")
        self.status = status


def _contexts(cfg: BenchConfig) -> tuple[list[Any], dict[str, tuple[bool, bool]] | None]:
    if cfg.operation == "echo":
        from .uids import VERIFICATION_SOP_CLASS

        return [VERIFICATION_SOP_CLASS], None
    if cfg.operation == "store":
        return [(CT_IMAGE_STORAGE, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])], None
    if cfg.operation == "find":
        from .services.find import resolve_model

        return [resolve_model(cfg.model)], None
    from .services.get import COMMON_STORAGE_SOP_CLASSES, get_contexts

    contexts, roles = get_contexts(COMMON_STORAGE_SOP_CLASSES, models=(cfg.model,))
    return contexts, roles


async def _op_echo(assoc: Any, cfg: BenchConfig, src: _StoreSource | None, tally: Callable[[int, int], None]) -> None:
    status = await assoc.echo()
    if status != 0:
        raise _StatusError(status)
    tally(1, 0)


async def _op_store(assoc: Any, cfg: BenchConfig, src: _StoreSource | None, tally: Callable[[int, int], None]) -> None:
    assert src is not None
    contexts = _storage_contexts(assoc, CT_IMAGE_STORAGE)
    ctx = _native_target(contexts, ExplicitVRLittleEndian)
    if ctx is None:
        raise _no_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian, contexts)
    head, tail, _ = src.template(ctx.transfer_syntax)
    uid = src.next_uid()
    fragments: list[Any] = [head + uid.encode("ascii"), tail]
    cmd = _store_command(assoc, CT_IMAGE_STORAGE, uid, PRIORITY_MEDIUM, None)
    rsp = await _exchange(assoc, ctx, cmd, fragments)
    status = Status(rsp.status if rsp.status is not None else 0xFFFF)
    if not (status.is_success or status.is_warning):
        raise _StatusError(int(status))
    tally(1, len(fragments[0]) + len(tail))


async def _op_find(assoc: Any, cfg: BenchConfig, src: _StoreSource | None, tally: Callable[[int, int], None]) -> None:
    assert cfg.query is not None
    async with assoc.find(cfg.query, cfg.model) as results:
        async for _status, identifier in results:
            if identifier is not None:
                tally(1, 0)
    final = results.final_status
    if final is None or not final.is_success:
        raise _StatusError(int(final) if final is not None else 0xFFFF)


async def _op_get(assoc: Any, cfg: BenchConfig, src: _StoreSource | None, tally: Callable[[int, int], None]) -> None:
    from .services.get import GetResult, ReceivedInstance

    assert cfg.query is not None
    result: GetResult | None = None
    async with assoc.get(cfg.query, cfg.model) as items:
        async for item in items:
            if isinstance(item, ReceivedInstance):
                tally(1, sum(memoryview(f).nbytes for f in item.fragments))
            elif isinstance(item, GetResult):
                result = item
    if result is None or result.status != 0:
        raise _StatusError(int(result.status) if result is not None else 0xFFFF)


_OPS = {"echo": _op_echo, "store": _op_store, "find": _op_find, "get": _op_get}


def classify(exc: BaseException) -> str:
    """The error kind of an exception raised by an operation or an association."""
    if isinstance(exc, _StatusError):
        return "status"
    if isinstance(exc, AssociationRejectedError):
        return "rejected"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timeout"
    if isinstance(exc, NoAcceptedContext):
        return "context"
    if isinstance(exc, AssociationAborted):
        return "aborted"
    if isinstance(exc, (ConnectionRefusedError, OSError)) and not isinstance(
        exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
    ):
        return "connect"
    if isinstance(exc, ConnectionError):
        return "aborted"
    return "other"


# ------------------------------------------------------------ the engine


class _Bench:
    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self.src = _StoreSource(cfg.size_kib) if cfg.operation == "store" else None
        self.contexts, self.roles = _contexts(cfg)
        self.op = _OPS[cfg.operation]
        self.started = 0
        self.ops_total = 0
        self.perf = time.perf_counter
        self.t_start = 0.0
        self.win_start = 0.0
        self.win_end = math.inf
        self.stop_at = math.inf
        self.last_done = 0.0
        self.res = BenchResult(
            cfg.operation,
            f"{cfg.called_ae}@{cfg.host}:{cfg.port}",
            cfg.concurrency,
            "cycle" if cfg.cycle else (f"{cfg.per_association} per association" if cfg.per_association else "keep-open"),
            "",
        )
        self.latencies: list[float] = []
        self.assoc_latencies: list[float] = []
        # progress counters (everything, warm-up included)
        self.p_ops = 0
        self.p_items = 0
        self.p_bytes = 0
        self.p_errors = 0

    # ---------------------------------------------------------- recording

    def in_window(self, t: float) -> bool:
        return self.win_start <= t <= self.win_end

    def tally(self, items: int, nbytes: int) -> None:
        self.p_items += items
        self.p_bytes += nbytes
        if self.in_window(self.perf()):
            self.res.items += items
            self.res.bytes += nbytes

    def record_ok(self, t0: float, t1: float) -> None:
        self.ops_total += 1
        self.p_ops += 1
        self.last_done = t1
        if self.in_window(t1):
            self.res.ok += 1
            self.latencies.append(t1 - t0)

    def record_error(self, exc: BaseException) -> None:
        t1 = self.perf()
        self.ops_total += 1
        self.p_errors += 1
        self.last_done = t1
        kind = classify(exc)
        self.res.errors_total += 1
        if kind == "status":
            key = f"0x{getattr(exc, 'status', 0xFFFF):04X}"
            self.res.status_codes[key] = self.res.status_codes.get(key, 0) + 1
        if self.in_window(t1):
            self.res.failed += 1
            self.res.errors[kind] += 1
        text = f"{kind}: {type(exc).__name__}: {exc}"[:160]
        if len(self.res.error_samples) < 10 or text in self.res.error_samples:
            self.res.error_samples[text] = self.res.error_samples.get(text, 0) + 1

    # ---------------------------------------------------------- workers

    def claim(self) -> bool:
        cfg = self.cfg
        if cfg.count is not None:
            if self.started >= cfg.count:
                return False
            self.started += 1
            return True
        return self.perf() < self.stop_at

    def _associate(self) -> associate:
        cfg = self.cfg
        return associate(
            cfg.host,
            cfg.port,
            called_ae=cfg.called_ae,
            calling_ae=cfg.calling_ae,
            contexts=self.contexts,
            roles=self.roles,
            connect_timeout=cfg.timeout,
            acse_timeout=cfg.timeout,
            dimse_timeout=cfg.timeout,
        )

    async def _open(self) -> Any:
        t0 = self.perf()
        assoc = await self._associate()
        self.res.associations += 1
        self.assoc_latencies.append(self.perf() - t0)
        return assoc

    async def worker(self) -> None:
        cfg = self.cfg
        perf = self.perf
        assoc: Any = None
        used = 0
        try:
            while self.claim():
                t0 = perf()
                try:
                    if assoc is None or not assoc.is_established:
                        assoc = await self._open()
                        used = 0
                        if not cfg.cycle:
                            t0 = perf()  # keep-open: the latency is the operation's
                    await self.op(assoc, cfg, self.src, self.tally)
                    used += 1
                    if cfg.cycle or (cfg.per_association and used >= cfg.per_association):
                        a, assoc = assoc, None
                        await a.release()
                    self.record_ok(t0, perf())
                except Exception as exc:  # noqa: BLE001 - every failure is counted
                    self.record_error(exc)
                    if assoc is not None:
                        if not isinstance(exc, _StatusError) or not assoc.is_established:
                            assoc.abort()
                            assoc = None
                    await asyncio.sleep(0.01)  # no hot loop against a dead peer
        finally:
            if assoc is not None:
                try:
                    await asyncio.wait_for(assoc.release(), cfg.timeout)
                except Exception:  # noqa: BLE001
                    assoc.abort()

    async def preflight(self) -> None:
        """One association up front: a clear error when the peer is unusable."""
        from .services.find import resolve_model
        from .services.get import _model_uid

        cfg = self.cfg
        async with self._associate() as assoc:
            wanted = {
                "echo": "1.2.840.10008.1.1",
                "store": CT_IMAGE_STORAGE,
                "find": resolve_model(cfg.model),
                "get": _model_uid(cfg.model),
            }[cfg.operation]
            if not any(c.abstract_syntax == wanted for c in assoc.contexts.values()):
                raise BenchError(f"the peer accepted no presentation context for {wanted} ({cfg.operation})")
            if cfg.operation == "get" and not any(c.can_receive_requests(True) for c in assoc.contexts.values()):
                raise BenchError("the peer accepted no storage context with the SCP role for us (C-GET)")

    # ---------------------------------------------------------- progress

    async def progress(self) -> None:
        tty = sys.stderr.isatty()
        interval = 0.5 if tty else 5.0
        last = (self.perf(), 0, 0)
        try:
            while True:
                await asyncio.sleep(interval)
                now = self.perf()
                dt = max(1e-9, now - last[0])
                rate = (self.p_ops - last[1]) / dt
                mbps = (self.p_bytes - last[2]) / dt / 1e6
                last = (now, self.p_ops, self.p_bytes)
                phase = " (warm-up)" if now < self.win_start else ""
                extra = f"  {mbps:8.1f} MB/s" if self.cfg.operation in ("store", "get") else ""
                if self.cfg.operation == "find":
                    extra = f"  {self.p_items} responses"
                line = (
                    f"{now - self.t_start:6.1f}s  {self.p_ops} ops  {rate:9.1f} ops/s{extra}  "
                    f"errors {self.p_errors}{phase}"
                )
                if tty:
                    print(f"\r\x1b[K{line}", end="", file=sys.stderr, flush=True)
                else:
                    print(line, file=sys.stderr, flush=True)
        except asyncio.CancelledError:
            if tty:
                print("\r\x1b[K", end="", file=sys.stderr, flush=True)
            raise

    # ---------------------------------------------------------- run

    async def run(self) -> BenchResult:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        self.res.loop = type(loop).__module__.split(".")[0]
        if self.src is not None:
            self.res.instance_bytes = self.src.instance_bytes
        await self.preflight()
        self.t_start = self.perf()
        warm = cfg.warmup if cfg.duration is not None else 0.0
        self.win_start = self.t_start + warm
        if cfg.duration is not None:
            self.stop_at = self.win_start + cfg.duration
            self.win_end = self.stop_at
        prog = loop.create_task(self.progress()) if cfg.progress else None
        workers = [loop.create_task(self.worker()) for _ in range(cfg.concurrency)]
        try:
            if cfg.on_window is not None and cfg.duration is not None:
                await asyncio.sleep(max(0.0, self.win_start - self.perf()))
                cfg.on_window("start")
                await asyncio.sleep(max(0.0, self.win_end - self.perf()))
                cfg.on_window("end")
            elif cfg.on_window is not None:
                cfg.on_window("start")
            await asyncio.gather(*workers)
            if cfg.on_window is not None and cfg.duration is None:
                cfg.on_window("end")
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            if prog is not None:
                prog.cancel()
                await asyncio.gather(prog, return_exceptions=True)
        return self.finish()

    def finish(self) -> BenchResult:
        res, cfg = self.res, self.cfg
        res.ops = res.ok + res.failed
        res.ops_total = self.ops_total
        res.elapsed_s = self.perf() - self.t_start
        if cfg.duration is not None:
            window = cfg.duration
        else:
            window = max(1e-9, self.last_done - self.t_start)
        res.window_s = window
        res.ops_per_s = res.ok / window
        res.items_per_s = res.items / window
        res.mb_per_s = res.bytes / window / 1e6
        res.latency_ms = _summary(self.latencies)
        res.association_ms = _summary(self.assoc_latencies)
        res.latencies_ms = [round(x * 1e3, 4) for x in self.latencies]
        return res


async def run(cfg: BenchConfig) -> BenchResult:
    """Run the load described by ``cfg`` on the running loop."""
    cfg.check()
    return await _Bench(cfg).run()


def _f(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def format_result(res: BenchResult) -> str:
    """The final report as a small table."""
    unit = {"echo": "echo", "store": "instances sent", "find": "responses", "get": "instances received"}
    lat = res.latency_ms
    lines = [
        f"aiodicom bench {res.operation} -> {res.target}: concurrency {res.concurrency}, {res.mode}, "
        f"{res.loop} loop",
        f"  {'window':<16}{res.window_s:.2f} s" + (f" (total {res.elapsed_s:.2f} s)" if res.elapsed_s else ""),
        f"  {'operations':<16}{res.ops} ({res.ok} ok, {res.failed} failed)",
        f"  {'rate':<16}{res.ops_per_s:.1f} ops/s",
    ]
    if res.operation in ("find", "get", "store"):
        lines.append(f"  {unit[res.operation]:<16}{res.items} ({res.items_per_s:.1f}/s)")
    if res.operation in ("store", "get"):
        size = f", {res.instance_bytes / 1024:.1f} KiB per instance" if res.instance_bytes else ""
        lines.append(f"  {'throughput':<16}{res.mb_per_s:.1f} MB/s ({res.bytes / 1e6:.1f} MB{size})")
    lines += [
        f"  {'latency ms':<16}p50 {_f(lat.get('p50'))}  p90 {_f(lat.get('p90'))}  p99 {_f(lat.get('p99'))}  "
        f"max {_f(lat.get('max'))}",
        f"  {'associations':<16}{res.associations} opened (setup p50 {_f(res.association_ms.get('p50'))} ms)",
        f"  {'errors':<16}" + ", ".join(f"{k} {v}" for k, v in res.errors.items()),
    ]
    if res.status_codes:
        lines.append(f"  {'status codes':<16}" + ", ".join(f"{k} x{v}" for k, v in res.status_codes.items()))
    for text, n in list(res.error_samples.items())[:5]:
        lines.append(f"  {'':<16}{n} x {text}")
    return "\n".join(lines)


def save_json(res: BenchResult, cfg: BenchConfig, path: str | os.PathLike[str]) -> None:
    config = {
        k: v
        for k, v in asdict_config(cfg).items()
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"config": config, "result": res.to_json()}, f, indent=1)


def asdict_config(cfg: BenchConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in BenchConfig.__dataclass_fields__:
        if name in ("on_window",):
            continue
        value = getattr(cfg, name)
        if isinstance(value, Dataset):
            value = value.to_json_dict()
        out[name] = value
    return out
