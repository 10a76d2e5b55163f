"""C-GET with interleaved C-STORE: our SCU against our SCP.

Every test runs on asyncio and on uvloop (tests/conftest.py).  The archive is
a handful of small CT (and MR) Part 10 files under tmp_path; the SCP's
handler matches them on the unique keys of the request.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate

import aiodicom
from aiodicom.dataset import EncodedDataset
from aiodicom.dimse.commands import C_STORE_RQ, C_STORE_RSP
from aiodicom.dimse.fragments import Message
from aiodicom.part10 import read_part10_dataset, read_part10_info, write_part10
from aiodicom.services.get import (
    COMMON_STORAGE_SOP_CLASSES,
    GetProgress,
    GetRequest,
    GetResult,
    ReceivedInstance,
    get_contexts,
    get_identifier,
    retrieve_series,
    serve_get,
)

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
ROOT = "1.2.826.0.1.3680043.8.498"
DEADLINE = 20.0


# --------------------------------------------------------------------------
# the archive


@dataclass
class Record:
    path: Path
    patient_id: str
    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str

    def level_value(self, level: str) -> str:
        return {
            "PATIENT": self.patient_id,
            "STUDY": self.study_uid,
            "SERIES": self.series_uid,
            "IMAGE": self.sop_instance_uid,
        }[level]


def make_instance(
    patient_id: str, study_uid: str, series_uid: str, index: int, sop_class: str = CT, ts: str = EXPLICIT
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = f"{series_uid}.{index}"
    ds.PatientName = "Get^Test"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT" if sop_class == CT else "MR"
    ds.InstanceNumber = index
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 8
    ds.Columns = 8
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if ts == JPEG_BASELINE:
        ds.BitsAllocated = 8
        ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelData = encapsulate([b"\xff\xd8fake-jpeg\xff\xd9" + bytes([index])])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = bytes((index * 7 + i) % 256 for i in range(128))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


class Archive:
    """Part 10 files plus an index on the four unique keys."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.records: list[Record] = []
        root.mkdir(parents=True, exist_ok=True)

    def add(self, ds: Dataset) -> Record:
        ts = str(ds.file_meta.TransferSyntaxUID)
        path = self.root / f"{ds.SOPInstanceUID}.dcm"
        write_part10(
            path, ds.SOPClassUID, ds.SOPInstanceUID, ts, EncodedDataset.from_dataset(ds, ts).fragments, fsync=False
        )
        rec = Record(path, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPClassUID, ds.SOPInstanceUID)
        self.records.append(rec)
        return rec

    def add_series(
        self, n: int, *, patient: str = "PAT1", study: int = 1, series: int = 1, sop_class: str = CT, ts: str = EXPLICIT
    ) -> list[Record]:
        study_uid = f"{ROOT}.{study}"
        series_uid = f"{study_uid}.{series}"
        return [self.add(make_instance(patient, study_uid, series_uid, i + 1, sop_class, ts)) for i in range(n)]

    def match(self, req: GetRequest) -> list[Record]:
        return [r for r in self.records if all(r.level_value(lvl) in vals for lvl, vals in req.keys.items())]


def dataset_bytes(path: Path) -> bytes:
    return read_part10_dataset(path)[1].tobytes()


# --------------------------------------------------------------------------
# fixtures


@dataclass
class Env:
    archive: Archive
    server: aiodicom.Server
    requests: list[GetRequest]
    stats: dict[str, int]
    out: Path
    handler: Callable[[GetRequest], Any] | None = None

    @property
    def port(self) -> int:
        return self.server.port


def instrument(assoc: aiodicom.Association, stats: dict[str, int]) -> None:
    """Count C-STORE sub-operations the SCP has outstanding on ``assoc``."""
    if getattr(assoc, "_get_test_instrumented", False):
        return
    assoc._get_test_instrumented = True  # type: ignore[attr-defined]
    orig_send = assoc.send
    orig_dispatch = assoc._dispatch

    async def send(ctx: int, cmd: Any, ds: Any = None) -> None:
        if cmd.command_field == C_STORE_RQ:
            stats["sent"] += 1
            stats["outstanding"] += 1
            stats["max_outstanding"] = max(stats["max_outstanding"], stats["outstanding"])
            assert cmd.move_originator_aet is None and cmd.move_originator_message_id is None
        await orig_send(ctx, cmd, ds)

    orig_send_file = assoc.send_file

    async def send_file(ctx: int, cmd: Any, fd: int, offset: int, length: int) -> None:
        if cmd.command_field == C_STORE_RQ:  # a cached file, sent with sendfile
            stats["sent"] += 1
            stats["outstanding"] += 1
            stats["max_outstanding"] = max(stats["max_outstanding"], stats["outstanding"])
            stats["sendfile"] = stats.get("sendfile", 0) + 1
        await orig_send_file(ctx, cmd, fd, offset, length)

    def dispatch(msg: Message) -> None:
        if msg.command.command_field == C_STORE_RSP:
            stats["outstanding"] -= 1
        orig_dispatch(msg)

    assoc.send = send  # type: ignore[method-assign]
    assoc.send_file = send_file  # type: ignore[method-assign]
    assoc._dispatch = dispatch  # type: ignore[method-assign]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    archive = Archive(tmp_path / "archive")
    server = aiodicom.Server("GETSCP")
    e = Env(archive, server, [], {"sent": 0, "outstanding": 0, "max_outstanding": 0}, tmp_path / "out")

    async def handler(req: GetRequest) -> AsyncIterator[Any]:
        e.requests.append(req)
        instrument(req.assoc, e.stats)
        if e.handler is not None:
            async for item in e.handler(req):
                yield item
            return
        matches = archive.match(req)
        yield len(matches)
        for rec in matches:
            yield rec.path

    serve_get(server, handler)
    await server.start("127.0.0.1", 0)
    try:
        yield e
    finally:
        await server.close(timeout=1.0)


def client(
    port: int,
    sop_classes: Iterable[str] = (CT, MR),
    transfer_syntaxes: Iterable[str] = (EXPLICIT, IMPLICIT),
    extra: Iterable[Any] = (),
    **kwargs: Any,
) -> aiodicom.associate:
    contexts, roles = get_contexts(
        sop_classes, list(transfer_syntaxes), extra=[VERIFICATION, *extra]
    )
    return aiodicom.associate("127.0.0.1", port, called_ae="GETSCP", contexts=contexts, roles=roles, **kwargs)


async def collect(op: Any) -> tuple[list[Any], GetResult]:
    items = []
    async with asyncio.timeout(DEADLINE):
        async for item in op:
            items.append(item)
    result = items[-1]
    assert isinstance(result, GetResult)
    assert all(not isinstance(i, GetResult) for i in items[:-1])
    return items, result


def identifier(level: str, model: str = "patient", **keys: Any) -> Dataset:
    return get_identifier(level, model=model, **keys)


STUDY1 = f"{ROOT}.1"
SERIES1 = f"{ROOT}.1.1"


# --------------------------------------------------------------------------
# retrieving


@pytest.mark.parametrize(
    "model,level",
    [
        ("patient", "PATIENT"),
        ("patient", "STUDY"),
        ("patient", "SERIES"),
        ("patient", "IMAGE"),
        ("study", "STUDY"),
        ("study", "SERIES"),
        ("study", "IMAGE"),
    ],
)
async def test_retrieve_each_level_writes_identical_files(env: Env, model: str, level: str) -> None:
    series = env.archive.add_series(5)
    env.archive.add_series(2, patient="PAT2", study=2)  # must not be retrieved
    wanted = series[1:4] if level == "IMAGE" else series
    ident = identifier(
        level,
        model,
        patient_id="PAT1",
        study_uid=STUDY1,
        series_uid=SERIES1,
        sop_instance_uids=[r.sop_instance_uid for r in wanted],
    )
    async with client(env.port) as assoc:
        items, result = await collect(assoc.get(ident, model, write_to=env.out, fsync=False))
    instances = [i for i in items if isinstance(i, ReceivedInstance)]
    progress = [i for i in items if isinstance(i, GetProgress)]
    assert result.status == 0 and result.ok
    assert (result.completed, result.failed, result.warning) == (len(wanted), 0, 0)
    assert result.failed_sop_instance_uids == [] and result.identifier is None
    assert sorted(i.sop_instance_uid for i in instances) == sorted(r.sop_instance_uid for r in wanted)
    assert result.received == len(wanted) and len(result.files) == len(wanted)
    # pending responses carry Remaining (the handler yielded the count first)
    assert [p.remaining for p in progress] == list(range(len(wanted) - 1, 0, -1))
    assert all(p.status == 0xFF00 for p in progress)
    for rec in wanted:
        written = env.out / f"{rec.sop_instance_uid}.dcm"
        assert dataset_bytes(written) == dataset_bytes(rec.path)
        info = read_part10_info(written)
        assert (info.sop_class_uid, info.sop_instance_uid, info.transfer_syntax) == (CT, rec.sop_instance_uid, EXPLICIT)
    req = env.requests[-1]
    assert req.level == level
    assert req.sop_class_uid == (PATIENT_ROOT_GET if model == "patient" else STUDY_ROOT_GET)


async def test_items_interleave_and_instances_are_lazy(env: Env) -> None:
    recs = env.archive.add_series(3)
    async with client(env.port) as assoc:
        items, result = await collect(assoc.get(identifier("SERIES", patient_id="PAT1", study_uid=STUDY1, series_uid=SERIES1)))
    kinds = [i.kind for i in items]
    assert kinds == ["instance", "progress", "instance", "progress", "instance", "result"]
    first = items[0]
    assert isinstance(first, ReceivedInstance)
    assert first.path is None and first.transfer_syntax == EXPLICIT
    assert not first.encoded.is_decoded
    assert b"".join(bytes(f) for f in first.fragments) == dataset_bytes(recs[0].path)
    assert first.dataset.SOPInstanceUID == recs[0].sop_instance_uid
    assert first.dataset.PixelData == make_instance("PAT1", STUDY1, SERIES1, 1).PixelData
    assert result.completed == 3


async def test_identifier_as_mapping_and_datasets_from_handler(env: Env) -> None:
    datasets = [make_instance("PAT9", STUDY1, SERIES1, i) for i in range(1, 4)]
    for ds in datasets[1:]:
        del ds.file_meta  # a plain data set: any native context will do

    async def handler(req: GetRequest) -> AsyncIterator[Any]:
        for ds in datasets:
            yield ds  # no count: pending responses omit Remaining

    env.handler = handler
    ident = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": STUDY1}
    async with client(env.port) as assoc:
        items, result = await collect(assoc.get(ident, "study"))
    instances = [i for i in items if isinstance(i, ReceivedInstance)]
    assert [i.dataset.SOPInstanceUID for i in instances] == [d.SOPInstanceUID for d in datasets]
    assert all(p.remaining is None for p in items if isinstance(p, GetProgress))
    assert result.status == 0 and result.completed == 3


async def test_handler_variants_list_coroutine_and_encoded(env: Env) -> None:
    recs = env.archive.add_series(2)
    encoded = [read_part10_dataset(r.path)[1] for r in recs]

    async def coroutine_handler(req: GetRequest) -> list[Any]:
        return [*encoded, recs[0].path]  # sized: Remaining is known

    service = serve_get(env.server, coroutine_handler, models=("study",))
    assert env.server.handlers[0x0010] is service
    async with client(env.port) as assoc:
        items, result = await collect(assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study"))
    progress = [i for i in items if isinstance(i, GetProgress)]
    assert [p.remaining for p in progress] == [2, 1]
    assert result.status == 0 and result.completed == 3


async def test_relay_received_instances(env: Env) -> None:
    """A ReceivedInstance from one retrieve can be served by another SCP."""
    env.archive.add_series(2)
    async with client(env.port) as assoc:
        items, _ = await collect(assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study"))
    received = [i for i in items if isinstance(i, ReceivedInstance)]

    async def relay(req: GetRequest) -> list[Any]:
        return received

    proxy = aiodicom.Server("PROXY")
    serve_get(proxy, relay)
    await proxy.start("127.0.0.1", 0)
    try:
        async with client(proxy.port) as assoc:
            async with assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study", write_to=env.out) as op:
                _, result = await collect(op)
        assert result.completed == 2
        for inst in received:
            assert (env.out / f"{inst.sop_instance_uid}.dcm").exists()
    finally:
        await proxy.close(timeout=1.0)


async def test_retrieve_series_helper_each_level(env: Env, tmp_path: Path) -> None:
    recs = env.archive.add_series(3)
    for level in ("PATIENT", "STUDY", "SERIES", "IMAGE"):
        out = tmp_path / level
        result = await retrieve_series(
            "127.0.0.1",
            env.port,
            "PAT1",
            STUDY1,
            SERIES1,
            out,
            level=level,
            sop_instance_uids=[r.sop_instance_uid for r in recs] if level == "IMAGE" else None,
            sop_classes=[CT],
            called_ae="GETSCP",
            fsync=False,
        )
        assert result.status == 0, level
        assert sorted(p.name for p in result.files) == sorted(f"{r.sop_instance_uid}.dcm" for r in recs)
        assert sorted(os.listdir(out)) == sorted(f"{r.sop_instance_uid}.dcm" for r in recs)
    with pytest.raises(ValueError, match="SOPInstanceUID is required"):
        get_identifier("IMAGE", patient_id="P", study_uid="1.2", series_uid="1.2.3")
    with pytest.raises(ValueError, match="not one of"):
        get_identifier("PATIENT", model="study", patient_id="P")


# --------------------------------------------------------------------------
# transfer syntaxes and contexts


async def test_transfer_syntax_conversion_and_compressed_without_context(env: Env) -> None:
    implicit = env.archive.add_series(2, ts=IMPLICIT)
    jpeg = env.archive.add_series(1, series=2, ts=JPEG_BASELINE)
    # We propose Explicit VR only: the implicit files are re-encoded, the JPEG
    # one cannot be sent (compressed -> uncompressed is not done).
    async with client(env.port, transfer_syntaxes=[EXPLICIT]) as assoc:
        _, result = await collect(
            assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study", write_to=env.out, fsync=False)
        )
    assert result.status == 0xB000
    assert (result.completed, result.failed) == (2, 1)
    assert result.failed_sop_instance_uids == [jpeg[0].sop_instance_uid]
    for rec in implicit:
        written = env.out / f"{rec.sop_instance_uid}.dcm"
        assert read_part10_info(written).transfer_syntax == EXPLICIT
        got = read_part10_dataset(written)[1].decode()
        want = read_part10_dataset(rec.path)[1].decode()
        assert got.PixelData == want.PixelData and got.SOPInstanceUID == want.SOPInstanceUID


async def test_compressed_file_sent_as_is_on_matching_context(env: Env) -> None:
    jpeg = env.archive.add_series(2, ts=JPEG_BASELINE)
    async with client(env.port, extra=[(CT, [JPEG_BASELINE])]) as assoc:
        _, result = await collect(
            assoc.get(identifier("SERIES", "study", study_uid=STUDY1, series_uid=SERIES1), "study", write_to=env.out)
        )
    assert result.status == 0 and result.completed == 2
    for rec in jpeg:
        written = env.out / f"{rec.sop_instance_uid}.dcm"
        assert read_part10_info(written).transfer_syntax == JPEG_BASELINE
        assert dataset_bytes(written) == dataset_bytes(rec.path)


async def test_sop_class_not_proposed_is_a_failed_suboperation(env: Env) -> None:
    env.archive.add_series(2)
    mr = env.archive.add_series(1, series=2, sop_class=MR)
    async with client(env.port, sop_classes=[CT]) as assoc:
        items, result = await collect(assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study"))
        assert sum(isinstance(i, ReceivedInstance) for i in items) == 2
        assert await assoc.echo() == 0
    assert result.status == 0xB000
    assert (result.completed, result.failed, result.warning) == (2, 1, 0)
    assert result.failed_sop_instance_uids == [mr[0].sop_instance_uid]
    assert env.stats["sent"] == 2  # never sent on a wrong context


async def test_no_storage_context_at_all_is_a702(env: Env) -> None:
    recs = env.archive.add_series(2)
    contexts = [STUDY_ROOT_GET, VERIFICATION]
    async with aiodicom.associate("127.0.0.1", env.port, contexts=contexts) as assoc:
        _, result = await collect(assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study"))
        assert await assoc.echo() == 0
    assert result.status == 0xA702
    assert result.failed == 2 and result.completed == 0
    assert result.failed_sop_instance_uids == [r.sop_instance_uid for r in recs]


async def test_model_not_accepted_raises(env: Env) -> None:
    async with aiodicom.associate("127.0.0.1", env.port, contexts=[VERIFICATION]) as assoc:
        with pytest.raises(aiodicom.NoAcceptedContext):
            async for _ in assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study"):
                pass
        assert await assoc.echo() == 0


def test_get_contexts_limits() -> None:
    contexts, roles = get_contexts()
    assert len(contexts) <= 128
    assert len(COMMON_STORAGE_SOP_CLASSES) >= 95
    assert set(COMMON_STORAGE_SOP_CLASSES) <= set(aiodicom.uids.STORAGE_SOP_CLASSES)
    assert contexts[:2] == [PATIENT_ROOT_GET, STUDY_ROOT_GET]
    assert all(v == (False, True) for v in roles.values()) and CT in roles
    aiodicom.build_contexts(contexts)  # fits
    with pytest.raises(ValueError, match="at most 128"):
        get_contexts(list(aiodicom.uids.STORAGE_SOP_CLASSES))
    with pytest.raises(ValueError, match="unknown C-GET information model"):
        get_contexts(models=("bogus",))


# --------------------------------------------------------------------------
# what the consumer did


async def test_consumer_failing_one_suboperation_gives_b000(env: Env) -> None:
    recs = env.archive.add_series(4)
    bad = recs[2].sop_instance_uid

    async def on_instance(inst: ReceivedInstance) -> None:
        await asyncio.sleep(0)
        if inst.sop_instance_uid == bad:
            raise RuntimeError("cannot take this one")

    async with client(env.port) as assoc:
        items, result = await collect(
            assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study", write_to=env.out, on_instance=on_instance)
        )
    assert result.status == 0xB000
    assert (result.completed, result.failed) == (3, 1)
    assert result.failed_sop_instance_uids == [bad]
    assert result.refused == {bad: 0xC000}
    assert bad not in {i.sop_instance_uid for i in items if isinstance(i, ReceivedInstance)}
    assert not (env.out / f"{bad}.dcm").exists()  # a refused instance is not kept
    assert sorted(os.listdir(env.out)) == sorted(f"{r.sop_instance_uid}.dcm" for r in recs if r.sop_instance_uid != bad)


async def test_all_failing_gives_a702(env: Env) -> None:
    recs = env.archive.add_series(3)

    def on_instance(inst: ReceivedInstance) -> int:
        return 0xA900  # a failure status returned by a sync callback

    async with client(env.port) as assoc:
        items, result = await collect(assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study", on_instance=on_instance))
        assert await assoc.echo() == 0
    assert not any(isinstance(i, ReceivedInstance) for i in items)
    assert result.status == 0xA702
    assert (result.completed, result.failed, result.warning) == (0, 3, 0)
    assert result.failed_sop_instance_uids == [r.sop_instance_uid for r in recs]
    assert result.identifier is not None and result.identifier.FailedSOPInstanceUIDList


async def test_out_of_space_answers_a700_and_warning_counts(env: Env) -> None:
    recs = env.archive.add_series(3)
    statuses: dict[str, int] = {}

    def on_instance(inst: ReceivedInstance) -> int | None:
        if inst.sop_instance_uid == recs[0].sop_instance_uid:
            raise OSError(errno.ENOSPC, "No space left on device")
        if inst.sop_instance_uid == recs[1].sop_instance_uid:
            return 0xB000  # coercion warning
        return None

    async with client(env.port) as assoc:
        async with assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study", on_instance=on_instance) as op:
            async for item in op:
                if isinstance(item, ReceivedInstance):
                    statuses[item.sop_instance_uid] = item.status
    result = op.result
    assert result is not None
    assert result.refused == {recs[0].sop_instance_uid: 0xA700}
    assert statuses == {recs[1].sop_instance_uid: 0xB000, recs[2].sop_instance_uid: 0}
    assert (result.completed, result.failed, result.warning) == (1, 1, 1)
    assert result.status == 0xB000
    assert result.failed_sop_instance_uids == [recs[0].sop_instance_uid]


async def test_consumer_reject_and_write_failure(env: Env, tmp_path: Path) -> None:
    recs = env.archive.add_series(3)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the output directory should be")
    async with client(env.port) as assoc:
        # writing fails for every instance: all refused with C000
        _, result = await collect(assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study", write_to=blocked))
        assert result.status == 0xA702 and set(result.refused.values()) == {0xC000}
        # the consumer rejects one after taking it
        async with assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study") as op:
            async for item in op:
                if isinstance(item, ReceivedInstance) and item.sop_instance_uid == recs[1].sop_instance_uid:
                    item.reject(0xA700, "quota exceeded")
        assert op.result is not None and op.result.status == 0xB000
        assert op.result.failed_sop_instance_uids == [recs[1].sop_instance_uid]
        assert op.result.refused == {recs[1].sop_instance_uid: 0xA700}


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
async def test_hostile_uid_is_refused_never_used_as_path(env: Env, tmp_path: Path) -> None:
    good = make_instance("PAT1", STUDY1, SERIES1, 1)
    evil = make_instance("PAT1", STUDY1, SERIES1, 2)
    evil.SOPInstanceUID = "../../evil"
    del evil.file_meta

    async def handler(req: GetRequest) -> AsyncIterator[Any]:
        yield 2
        yield good
        yield evil

    env.handler = handler
    out = tmp_path / "deep" / "out"
    async with client(env.port) as assoc:
        _, result = await collect(assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study", write_to=out))
    assert result.status == 0xB000
    assert result.refused == {"../../evil": 0xC000}
    assert os.listdir(out) == [f"{good.SOPInstanceUID}.dcm"]
    assert not (tmp_path / "evil").exists() and not (tmp_path / "evil.dcm").exists()


# --------------------------------------------------------------------------
# cancel and early exit


async def test_cancel_mid_retrieve_with_async_with(env: Env) -> None:
    env.archive.add_series(10)
    async with client(env.port) as assoc:
        taken = 0
        async with assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study", write_to=env.out) as op:
            async for item in op:
                if isinstance(item, ReceivedInstance):
                    taken += 1
                    if taken == 3:
                        break
        result = op.result
        assert result is not None and result.cancelled
        assert result.status == 0xFE00
        # The C-CANCEL follows the C-STORE-RSP of the instance we held, so the
        # SCP may have started one more sub-operation; we refused it.
        extra = env.stats["sent"] - 3
        assert extra in (0, 1)
        assert result.completed == 3 and result.failed == extra
        assert result.remaining == 7 - extra  # the handler told the total
        assert assoc.store_sink is None
        # the association is still usable
        assert await assoc.echo() == 0
        _, again = await collect(assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study"))
        assert again.status == 0 and again.completed == 10
    assert len(os.listdir(env.out)) == 3


async def test_cancel_on_consumer_exception_fails_held_instance(env: Env) -> None:
    recs = env.archive.add_series(5)
    async with client(env.port) as assoc:
        with pytest.raises(KeyError):
            async with assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study") as op:
                async for item in op:
                    if isinstance(item, ReceivedInstance) and item.sop_instance_uid == recs[1].sop_instance_uid:
                        raise KeyError("consumer bug")
        assert op.result is not None and op.result.status == 0xFE00
        assert op.result.completed == 1 and op.result.failed in (1, 2)
        assert op.result.failed_sop_instance_uids[0] == recs[1].sop_instance_uid
        assert await assoc.echo() == 0


async def test_bare_break_cleans_up_and_next_get_works(env: Env) -> None:
    env.archive.add_series(6)
    async with client(env.port) as assoc:
        async for item in assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study"):
            if isinstance(item, ReceivedInstance):
                break
        gc.collect()  # CPython finalised the dropped iterator already
        assert await assoc.echo() == 0
        first_run = env.stats["sent"]
        assert first_run <= 2  # cancelled after the first instance
        # the next retrieve waits for the abandoned one's cleanup
        _, result = await collect(assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study"))
        assert result.status == 0 and result.completed == 6
        assert assoc.store_sink is None
    assert env.stats["sent"] == first_run + 6


async def test_aclose_before_start_and_after_end(env: Env) -> None:
    env.archive.add_series(1)
    async with client(env.port) as assoc:
        op = assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study")
        await op.aclose()
        assert [i async for i in op] == []
        op2 = assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study")
        _, result = await collect(op2)
        await op2.aclose()
        assert result.status == 0 and op2.result is result


async def test_second_concurrent_get_is_refused(env: Env) -> None:
    env.archive.add_series(3)
    async with client(env.port) as assoc:
        async with assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study") as first:
            item = await first.__anext__()
            assert isinstance(item, ReceivedInstance)
            with pytest.raises(RuntimeError, match="another C-GET"):
                await assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study").__anext__()
            rest = [i async for i in first]
        assert rest[-1].status == 0


# --------------------------------------------------------------------------
# backpressure


async def test_slow_consumer_keeps_at_most_one_suboperation_outstanding(env: Env) -> None:
    env.archive.add_series(6)
    seen = 0
    async with client(env.port) as assoc:
        async with assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study") as op:
            async for item in op:
                if not isinstance(item, ReceivedInstance):
                    continue
                seen += 1
                # Deliberate slowness, the thing under test (not
                # synchronisation): a slow consumer gives the SCP every chance
                # to run ahead.  It must not, because the C-STORE-RSP is only
                # sent when we ask for the next item.
                for _ in range(5):
                    await asyncio.sleep(0.005)
                assert env.stats["sent"] == seen
                assert env.stats["outstanding"] == 1
    assert op.result is not None and op.result.completed == 6
    assert env.stats["max_outstanding"] == 1
    assert env.stats["outstanding"] == 0


# --------------------------------------------------------------------------
# identifier validation and handler failures


@pytest.mark.parametrize(
    "keys,model,comment",
    [
        ({"StudyInstanceUID": STUDY1}, "study", "QueryRetrieveLevel"),
        ({"QueryRetrieveLevel": "", "StudyInstanceUID": STUDY1}, "study", "QueryRetrieveLevel"),
        ({"QueryRetrieveLevel": "PATIENT", "PatientID": "PAT1"}, "study", "not valid"),
        ({"QueryRetrieveLevel": "FRAME", "PatientID": "PAT1"}, "patient", "not valid"),
        ({"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": SERIES1}, "study", "StudyInstanceUID"),
        ({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": STUDY1}, "patient", "PatientID"),
        ({"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": STUDY1}, "study", "SeriesInstanceUID"),
        ({"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": f"{STUDY1}\\1.2.3", "SeriesInstanceUID": SERIES1},
         "study", "single value"),
    ],
)
async def test_bad_identifier_is_a900(env: Env, keys: dict[str, str], model: str, comment: str) -> None:
    env.archive.add_series(1)
    ds = Dataset()
    for k, v in keys.items():
        setattr(ds, k, v)
    async with client(env.port) as assoc:
        items, result = await collect(assoc.get(ds, model))
        assert await assoc.echo() == 0
    assert items == [result]
    assert result.status == 0xA900
    assert comment in (result.error_comment or "")
    assert env.requests == []  # the handler never saw it


async def test_non_strict_accepts_missing_upper_keys(env: Env) -> None:
    env.archive.add_series(2)
    serve_get(env.server, env.server.handlers[0x0010].handlers[STUDY_ROOT_GET], models=("study",), strict=False)
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.SeriesInstanceUID = SERIES1
    async with client(env.port) as assoc:
        _, result = await collect(assoc.get(ds, "study"))
    assert result.status == 0 and result.completed == 2


@pytest.mark.parametrize("where", ["call", "iteration", "bad item"])
async def test_handler_error_is_c000_and_association_survives(
    env: Env, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    recs = env.archive.add_series(2)

    def handler(req: GetRequest) -> Any:
        if where == "call":
            raise LookupError("database down")

        async def gen() -> AsyncIterator[Any]:
            yield 3
            yield recs[0].path
            if where == "bad item":
                yield 12345
            raise LookupError("database down")

        return gen()

    serve_get(env.server, handler, models=("study",))
    with caplog.at_level("ERROR", logger="aiodicom.get"):
        async with client(env.port) as assoc:
            _, result = await collect(assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study"))
            assert await assoc.echo() == 0
            serve_get(env.server, lambda req: [r.path for r in recs], models=("study",))
            _, ok = await collect(assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study"))
    assert 0xC000 <= result.status <= 0xCFFF
    assert "handler error" in (result.error_comment or "")
    assert result.completed == (0 if where == "call" else 1)
    assert ok.status == 0 and ok.completed == 2
    assert len([r for r in caplog.records if r.name == "aiodicom.get" and r.levelname == "ERROR"]) == 1


@pytest.mark.parametrize("read", ["sendfile", "nowait", "thread"])
async def test_files_are_sent_byte_identical_whichever_way_they_are_read(
    env: Env, monkeypatch: pytest.MonkeyPatch, read: str
) -> None:
    # A file in the page cache goes with sendfile; otherwise it is read on
    # the loop without blocking, or else in a worker thread.
    from aiodicom.services import get as get_mod

    if read != "sendfile":
        monkeypatch.setattr(get_mod, "open_part10_cached", lambda path: None)
    if read == "thread":
        monkeypatch.setattr(get_mod, "read_part10_dataset_nowait", lambda path: None)
    recs = env.archive.add_series(3)
    probe = get_mod.open_part10_cached(recs[0].path)  # None where the file system has no RWF_NOWAIT reads
    if probe is not None:
        os.close(probe[1])
    async with client(env.port) as assoc:
        items, result = await collect(assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study"))
    assert result.status == 0 and result.completed == 3
    got = {i.sop_instance_uid: i.encoded.tobytes() for i in items if isinstance(i, ReceivedInstance)}
    assert got == {r.sop_instance_uid: read_part10_dataset(r.path)[1].tobytes() for r in recs}
    assert env.stats.get("sendfile", 0) == (3 if probe is not None else 0)


async def test_a_pending_response_leaves_with_the_next_sub_operation(env: Env, sendfile_heads: list[bytes]) -> None:
    # Performance with an observable shape: with the next instance already
    # prepared, the pending C-GET-RSP is written together with the next
    # C-STORE-RQ and that instance's first data header (one send), and the
    # SCU still sees every pending response, in order.
    from aiodicom.services import get as get_mod

    recs = env.archive.add_series(3)
    probe = get_mod.open_part10_cached(recs[0].path)
    if probe is None:
        pytest.skip("no RWF_NOWAIT reads here: the files are not sent with sendfile")
    os.close(probe[1])
    heads = sendfile_heads
    async with client(env.port) as assoc:
        items, result = await collect(assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study"))
    assert result.status == 0 and result.completed == 3
    assert [p.remaining for p in items if isinstance(p, GetProgress)] == [2, 1]

    def command_fields(head: bytes) -> list[int]:
        """The CommandField of each whole command PDU at the start of ``head``."""
        out, pos = [], 0
        while pos + 12 <= len(head) and head[pos + 11] == 0x03:  # PDV: command, last fragment
            length = int.from_bytes(head[pos + 2 : pos + 6], "big")
            body = head[pos + 12 : pos + 6 + length]
            at = body.index(bytes.fromhex("0000 0001 0200 0000"))  # (0000,0100) US, length 2
            out.append(int.from_bytes(body[at + 8 : at + 10], "little"))
            pos += 6 + length
        return out

    firsts = [command_fields(h) for h in heads if len(h) > 12]
    assert firsts == [[C_STORE_RQ], [0x8010, C_STORE_RQ], [0x8010, C_STORE_RQ]]


async def test_next_instance_is_prepared_while_the_peer_answers(env: Env) -> None:
    # Pipelining (a performance property with an observable order): the SCP
    # takes sub-operation n+1 from the handler while the SCU is still
    # receiving sub-operation n, so reading is off the round trip; the
    # order of sub-operations and the counts are unchanged.
    recs = env.archive.add_series(4)
    log: list[str] = []

    async def handler(req: GetRequest) -> AsyncIterator[Any]:
        yield len(recs)
        for i, rec in enumerate(recs):
            log.append(f"handler {i}")
            yield rec.path

    def on_instance(inst: ReceivedInstance) -> None:
        log.append(f"scu {[r.sop_instance_uid for r in recs].index(inst.sop_instance_uid)}")

    env.handler = handler
    async with client(env.port) as assoc:
        items, result = await collect(
            assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study", on_instance=on_instance)
        )
    assert result.status == 0 and result.completed == 4
    got = [i.sop_instance_uid for i in items if isinstance(i, ReceivedInstance)]
    assert got == [r.sop_instance_uid for r in recs]
    # instance n+1 was taken before the SCU got instance n
    assert log.index("handler 1") < log.index("scu 0")
    assert log.index("handler 3") < log.index("scu 2")
    assert log.count("handler 3") == 1 and log.count("scu 3") == 1


async def test_handler_checks_is_cancelled(env: Env) -> None:
    recs = env.archive.add_series(20)
    flags: list[bool] = []

    async def handler(req: GetRequest) -> AsyncIterator[Any]:
        for rec in recs:
            flags.append(req.is_cancelled)
            yield rec.path

    env.handler = handler
    async with client(env.port) as assoc:
        async with assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study") as op:
            async for item in op:
                if isinstance(item, ReceivedInstance):
                    break
        assert op.result is not None and op.result.status == 0xFE00
        assert op.result.remaining is None  # no count was given
        assert await assoc.echo() == 0
    assert len(flags) < len(recs)


# --------------------------------------------------------------------------
# the command line against our SCP


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiodicom", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_get(env: Env, tmp_path: Path) -> None:
    recs = env.archive.add_series(3)
    env.archive.add_series(1, series=2, sop_class=MR)
    out = tmp_path / "cli"
    rc, stdout, stderr = await run_cli(
        "get", "127.0.0.1", str(env.port), "--aec", "GETSCP", "--model", "study", "--level", "series",
        "-k", f"StudyInstanceUID={STUDY1}", "-k", f"(0020,000E)={SERIES1}", "--out", str(out), "--no-fsync",
    )
    assert rc == 0, stderr
    assert "status 0x0000" in stdout and "3 instance(s)" in stdout
    assert "received 3" in stderr
    assert sorted(os.listdir(out)) == sorted(f"{r.sop_instance_uid}.dcm" for r in recs)
    for rec in recs:
        assert dataset_bytes(out / f"{rec.sop_instance_uid}.dcm") == dataset_bytes(rec.path)

    # a retrieve with a failed sub-operation exits non-zero
    env.archive.add_series(1, series=3, ts=JPEG_BASELINE)
    rc, stdout, stderr = await run_cli(
        "get", "127.0.0.1", str(env.port), "--aec", "GETSCP", "--level", "PATIENT", "-k", "0010,0020=PAT1",
        "--out", str(tmp_path / "cli2"), "-q",
    )
    assert rc == 1
    assert "status 0xB000" in stdout
    assert "0xB000" in stderr and "received" not in stderr

    rc, _, stderr = await run_cli("get", "127.0.0.1", str(env.port), "--level", "STUDY", "-k", "NoSuchKeyword=1")
    assert rc == 1 and "invalid key" in stderr


# --------------------------------------------------------------------------
# a peer that goes away or stops answering


async def test_scp_aborting_mid_retrieve_raises_on_the_scu(env: Env) -> None:
    recs = env.archive.add_series(3)

    async def handler(req: GetRequest) -> AsyncIterator[Any]:
        yield recs[0].path
        req.assoc.abort()
        yield recs[1].path

    env.handler = handler
    async with client(env.port) as assoc:
        got = []
        with pytest.raises(aiodicom.AssociationAborted):
            async with asyncio.timeout(DEADLINE):
                async for item in assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study"):
                    got.append(item)
        assert [i.sop_instance_uid for i in got if isinstance(i, ReceivedInstance)] == [recs[0].sop_instance_uid]
        assert assoc.store_sink is None


async def test_scu_timeout_aborts(env: Env) -> None:
    recs = env.archive.add_series(2)

    async def handler(req: GetRequest) -> AsyncIterator[Any]:
        yield recs[0].path
        await asyncio.Event().wait()  # stalls for good; cancelled when the SCU aborts
        yield recs[1].path

    env.handler = handler
    with pytest.raises(aiodicom.DIMSETimeout):
        async with client(env.port) as assoc:
            async with asyncio.timeout(DEADLINE):
                async for _ in assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study", timeout=0.3):
                    pass
    await asyncio.wait_for(assoc.wait_closed(), DEADLINE)
    assert assoc.store_sink is None


async def test_scp_gives_up_on_a_consumer_slower_than_its_dimse_timeout(env: Env) -> None:
    env.archive.add_series(2)
    env.server.dimse_timeout = 0.3
    async with client(env.port) as assoc:
        with pytest.raises(aiodicom.AssociationAborted):
            async with asyncio.timeout(DEADLINE):
                async for item in assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study"):
                    if isinstance(item, ReceivedInstance):
                        # Slower than any dimse_timeout: hold our C-STORE-RSP
                        # until the SCP gives up and aborts.
                        await assoc.wait_closed()


async def test_consumer_cancelled_inside_on_instance_is_drained(env: Env) -> None:
    recs = env.archive.add_series(4)

    async def on_instance(inst: ReceivedInstance) -> None:
        if inst.sop_instance_uid == recs[1].sop_instance_uid:
            await asyncio.Event().wait()  # never set: interrupted by the timeout below

    async with client(env.port) as assoc:
        with pytest.raises(TimeoutError):
            async with assoc.get(identifier("STUDY", "study", study_uid=STUDY1), "study", on_instance=on_instance) as op:
                async with asyncio.timeout(0.5):
                    async for _ in op:
                        pass
        assert op.result is not None and op.result.status == 0xFE00
        assert op.result.refused.get(recs[1].sop_instance_uid) == 0xC000
        assert await assoc.echo() == 0
