"""Tests for aiodicom.archive.index: schema, inserts/replacements, async facade, scale."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from aiodicom.archive.index import (
    MIGRATIONS,
    SCHEMA_VERSION,
    AsyncIndex,
    Index,
    IndexCounts,
    InstanceEntry,
    InvalidInstanceError,
    record_from_dataset,
)
from aiodicom.archive.matching import MatchingError
from aiodicom.uids import ExplicitVRLittleEndian, ImplicitVRLittleEndian

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

CT = "1.2.840.10008.5.1.4.1.1.2"
SR = "1.2.840.10008.5.1.4.1.1.88.33"
ROOT = "1.2.826.0.1.3680043.10.98"
TS = ExplicitVRLittleEndian


def U(*parts: int) -> str:
    return ROOT + "." + ".".join(str(p) for p in parts)


def ds_of(**kw: Any) -> Dataset:
    ds = Dataset()
    for key, value in kw.items():
        setattr(ds, key, value)
    return ds


def inst(n: int, *, study: int = 1, series: int = 1, patient_id: str = "P1", **kw: Any) -> Dataset:
    base: dict[str, Any] = dict(
        PatientID=patient_id,
        PatientName="Doe^John",
        StudyInstanceUID=U(1, study),
        SeriesInstanceUID=U(2, series),
        SOPInstanceUID=U(3, n),
        SOPClassUID=CT,
        Modality="CT",
    )
    base.update(kw)
    return ds_of(**{k: v for k, v in base.items() if v is not None})


def rel(n: int) -> str:
    return f"instances/x/{n}.dcm"


def study_query(**kw: Any) -> Dataset:
    return ds_of(QueryRetrieveLevel="STUDY", **kw)


@pytest.fixture
def index() -> Iterator[Index]:
    ix = Index(":memory:")
    yield ix
    ix.close()


# ---------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------


def test_schema_version_wal_and_durability(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    with Index(path) as ix:
        assert ix.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
        c = ix.connection
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert c.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"patient", "study", "series", "instance"} <= tables
        indexes = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        for name in ("patient_name_ci_idx", "study_date_idx", "study_accession_idx",
                     "series_modality_idx", "study_patient_idx", "series_study_idx",
                     "instance_series_idx"):
            assert name in indexes
        ix.add_instance(inst(1), rel(1), TS, 10)
    # Reopening keeps the data and does not re-run migrations.
    with Index(path) as ix:
        assert ix.count() == IndexCounts(1, 1, 1, 1)
        assert ix.schema_version == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    Index(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        Index(path)


def test_migration_from_empty_database(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    sqlite3.connect(path).close()  # an empty database with user_version 0
    with Index(path) as ix:
        assert ix.schema_version == SCHEMA_VERSION


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


def test_record_from_dataset_normalises() -> None:
    ds = inst(1, PatientName="Doe^John^^", StudyDate="2024.01.02", StudyTime="10:30:00",
               SeriesNumber="007", IssuerOfPatientID=None,
               ContentTemplateSequence=Sequence([ds_of(MappingResource="DCMR", TemplateIdentifier="9007")]))
    r = record_from_dataset(ds)
    assert r.patient["patient_name"] == "Doe^John"
    assert r.patient["patient_name_ci"] == "doe^john"
    assert r.patient["issuer"] == ""
    assert r.study["study_date"] == "20240102" and r.study["study_time"] == "103000"
    assert r.series["series_number"] == "7"
    assert r.instance["template_id"] == "9007" and r.instance["mapping_resource"] == "DCMR"
    assert r.study["study_description"] is None


@pytest.mark.parametrize("missing", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"])
def test_record_requires_uids(missing: str) -> None:
    ds = inst(1)
    delattr(ds, missing)
    with pytest.raises(InvalidInstanceError, match=missing):
        record_from_dataset(ds)


# ---------------------------------------------------------------------------
# Inserting, replacing, removing
# ---------------------------------------------------------------------------


def test_add_and_replace(index: Index) -> None:
    assert index.add_instance(inst(1, InstanceNumber="1"), rel(1), TS, 100, "SCU1") is False
    assert index.add_instance(inst(1, InstanceNumber="5"), rel(1), ImplicitVRLittleEndian, 200, "SCU2") is True
    assert index.count() == IndexCounts(1, 1, 1, 1)
    loc = index.get_instance(U(3, 1))
    assert loc is not None and loc.size == 200 and loc.transfer_syntax == ImplicitVRLittleEndian
    res = index.query(None, ds_of(QueryRetrieveLevel="IMAGE", StudyInstanceUID=U(1, 1),
                                  SeriesInstanceUID=U(2, 1), InstanceNumber=""), "study").datasets()
    assert [r.InstanceNumber for r in res] == [5]
    row = index.connection.execute("SELECT calling_ae FROM instance").fetchone()
    assert row[0] == "SCU2"


def test_replacement_moving_to_another_series_prunes_empty_parents(index: Index) -> None:
    index.add_instance(inst(1, study=1, series=1), rel(1), TS, 1)
    index.add_instance(inst(2, study=1, series=1), rel(2), TS, 1)
    # Instance 2 re-sent with a corrected series and study and patient.
    assert index.add_instance(inst(2, study=2, series=2, patient_id="P2"), rel(2), TS, 1) is True
    assert index.count() == IndexCounts(2, 2, 2, 2)
    # Instance 1 moves too: study 1, series 1 and patient P1 become empty and are deleted.
    assert index.add_instance(inst(1, study=2, series=2, patient_id="P2"), rel(1), TS, 1) is True
    assert index.count() == IndexCounts(1, 1, 1, 2)
    res = index.query(None, study_query(StudyInstanceUID="", PatientID="",
                                        NumberOfStudyRelatedInstances=""), "study").datasets()
    assert [(r.StudyInstanceUID, r.PatientID, r.NumberOfStudyRelatedInstances) for r in res] == [
        (U(1, 2), "P2", 2)
    ]


def test_study_moves_to_the_patient_of_its_newest_instance(index: Index) -> None:
    index.add_instance(inst(1, patient_id="OLD"), rel(1), TS, 1)
    index.add_instance(inst(2, patient_id="NEW"), rel(2), TS, 1)  # same study, other patient
    assert index.count() == IndexCounts(1, 1, 1, 2)
    res = index.query(None, study_query(StudyInstanceUID="", PatientID=""), "study").datasets()
    assert [r.PatientID for r in res] == ["NEW"]


def test_entity_attributes_refresh_but_are_not_erased(index: Index) -> None:
    index.add_instance(inst(1, StudyDescription="First", AccessionNumber="A1", PatientBirthDate="19800101"),
                       rel(1), TS, 1)
    index.add_instance(inst(2, StudyDescription="Second"), rel(2), TS, 1)
    r = index.query(None, study_query(StudyDescription="", AccessionNumber="", PatientBirthDate=""),
                    "study").datasets()[0]
    assert (r.StudyDescription, r.AccessionNumber, r.PatientBirthDate) == ("Second", "A1", "19800101")


def test_two_patients_same_id_different_issuers_are_both_kept(index: Index) -> None:
    index.add_instance(inst(1, study=1, series=1, IssuerOfPatientID="A", PatientName="Alpha^A"), rel(1), TS, 1)
    index.add_instance(inst(2, study=2, series=2, IssuerOfPatientID="B", PatientName="Beta^B"), rel(2), TS, 1)
    index.add_instance(inst(3, study=3, series=3), rel(3), TS, 1)  # no issuer: a third patient
    assert index.count().patients == 3
    res = index.query(None, ds_of(QueryRetrieveLevel="PATIENT", PatientID="P1", IssuerOfPatientID="",
                                  PatientName=""), "patient").datasets()
    assert sorted((r.IssuerOfPatientID, str(r.PatientName)) for r in res) == [
        ("", "Doe^John"), ("A", "Alpha^A"), ("B", "Beta^B")
    ]
    res = index.query(None, ds_of(QueryRetrieveLevel="STUDY", PatientID="P1", IssuerOfPatientID="B",
                                  StudyInstanceUID=""), "patient").datasets()
    assert [r.StudyInstanceUID for r in res] == [U(1, 2)]


def test_remove_instance_prunes(index: Index) -> None:
    index.add_instance(inst(1), rel(1), TS, 1)
    index.add_instance(inst(2), rel(2), TS, 1)
    loc = index.remove_instance(U(3, 1))
    assert loc is not None and loc.rel_path == rel(1)
    assert index.count() == IndexCounts(1, 1, 1, 1)
    assert index.remove_instance(U(3, 1)) is None
    index.remove_instance(U(3, 2))
    assert index.count() == IndexCounts(0, 0, 0, 0)


def test_add_instances_is_atomic(index: Index) -> None:
    entries = [InstanceEntry(inst(1), rel(1), TS, 1), InstanceEntry(inst(2), rel(1), TS, 1)]  # same rel_path
    with pytest.raises(sqlite3.IntegrityError):
        index.add_instances(entries)
    assert index.count() == IndexCounts(0, 0, 0, 0)
    assert not index.connection.in_transaction


def test_file_states(index: Index) -> None:
    index.add_instance(inst(1), rel(1), TS, 123, file_mtime_ns=42)
    assert [tuple(s) for s in index.file_states()] == [(U(3, 1), rel(1), 123, 42)]


# ---------------------------------------------------------------------------
# Relevant Patient Information Query support
# ---------------------------------------------------------------------------


def _sr(n: int, tid: str, obs: str, **kw: Any) -> Dataset:
    return inst(n, SOPClassUID=SR, Modality="SR", ObservationDateTime=obs,
                ContentTemplateSequence=Sequence([ds_of(MappingResource="DCMR", TemplateIdentifier=tid)]), **kw)


def test_latest_sr_for_patient(index: Index) -> None:
    index.add_instance(_sr(1, "9007", "20230101000000", IssuerOfPatientID="A"), rel(1), TS, 1)
    index.add_instance(_sr(2, "9007", "20240101000000", IssuerOfPatientID="A"), rel(2), TS, 1)
    index.add_instance(_sr(3, "3802", "20250101000000", IssuerOfPatientID="A"), rel(3), TS, 1)
    (cand,) = index.latest_sr_for_patient("P1", "A", "9007")
    assert cand.sop_instance_uid == U(3, 2) and cand.rel_path == rel(2) and cand.sop_class_uid == SR
    assert cand.patient_id == "P1" and cand.issuer == "A" and cand.patient_name == "Doe^John"
    (cand,) = index.latest_sr_for_patient("P1", None, "3802")
    assert cand.sop_instance_uid == U(3, 3)
    (cand,) = index.latest_sr_for_patient("P1", "A", "9000")
    assert cand.sop_instance_uid is None  # the patient exists, no such SR
    assert index.latest_sr_for_patient("NOBODY", None, "9007") == []

    # A second patient with the same ID under another issuer: ambiguous without an issuer.
    index.add_instance(_sr(4, "9007", "20200101000000", IssuerOfPatientID="B", StudyInstanceUID=U(1, 9),
                           SeriesInstanceUID=U(2, 9)), rel(4), TS, 1)
    cands = index.latest_sr_for_patient("P1", None, "9007")
    assert len({c.patient_pk for c in cands}) == 2
    (cand,) = index.latest_sr_for_patient("P1", "B", "9007")
    assert cand.sop_instance_uid == U(3, 4)


# ---------------------------------------------------------------------------
# Async facade
# ---------------------------------------------------------------------------


async def test_async_facade_basic(tmp_path: Path) -> None:
    aix = await AsyncIndex.open(tmp_path / "a.sqlite3")
    try:
        assert await aix.add_instance(inst(1), rel(1), TS, 1, "AE") is False
        assert await aix.add_instance(inst(1), rel(1), TS, 2, "AE") is True
        res = await aix.query(None, study_query(StudyInstanceUID=""), "study")
        assert [r.StudyInstanceUID for r in res] == [U(1, 1)]
        items = await aix.instances_for_retrieve(None, ds_of(QueryRetrieveLevel="STUDY",
                                                             StudyInstanceUID=U(1, 1)))
        assert [i.sop_instance_uid for i in items] == [U(3, 1)]
        assert (await aix.count()) == IndexCounts(1, 1, 1, 1)
        assert (await aix.get_instance(U(3, 1))) is not None
        assert (await aix.latest_sr_for_patient("P1")) != []
        assert len(await aix.file_states()) == 1
        assert (await aix.remove_instance(U(3, 1))) is not None
        with pytest.raises(MatchingError):  # raised on the caller's thread, before any SQL
            await aix.query(None, ds_of(QueryRetrieveLevel="BOGUS"), "study")
        # the connection lives on the worker thread
        thread = await aix.call(lambda ix: threading.current_thread().name)
        assert thread.startswith("aiodicom-index")
    finally:
        await aix.close()
    with pytest.raises(RuntimeError):
        await aix.count()


async def test_concurrent_adds_are_group_committed(tmp_path: Path) -> None:
    aix = await AsyncIndex.open(tmp_path / "a.sqlite3")
    commits = 0
    try:
        def count_commits(ix: Index) -> None:
            def trace(sql: str) -> None:
                nonlocal commits
                if sql.strip().upper() == "COMMIT":
                    commits += 1
            ix.connection.set_trace_callback(trace)

        await aix.call(count_commits)
        results = await asyncio.gather(
            *(aix.add_instance(inst(n % 150, series=n % 7), rel(n % 150), TS, n) for n in range(300))
        )
        assert results.count(True) == 150 and results.count(False) == 150
        # the first add of each UID is the one reporting False
        assert all(r is False for r in results[:150]) and all(r is True for r in results[150:])
        assert (await aix.count()).instances == 150
        assert commits < 300  # batched (typically 2 transactions)
    finally:
        await aix.close()


async def test_failed_batch_member_does_not_fail_the_others(tmp_path: Path) -> None:
    aix = await AsyncIndex.open(tmp_path / "a.sqlite3")
    try:
        results = await asyncio.gather(
            aix.add_instance(inst(1), rel(1), TS, 1),
            aix.add_instance(inst(2), rel(1), TS, 1),  # rel_path clash -> IntegrityError
            aix.add_instance(inst(3), rel(3), TS, 1),
            return_exceptions=True,
        )
        assert results[0] is False and results[2] is False
        assert isinstance(results[1], sqlite3.IntegrityError)
        assert (await aix.count()).instances == 2
        with pytest.raises(InvalidInstanceError):  # checked before queueing
            await aix.add_instance(ds_of(PatientID="X"), rel(9), TS, 1)
    finally:
        await aix.close()


async def test_async_query_does_not_block_the_loop(tmp_path: Path) -> None:
    """While the index thread is busy the loop keeps running other tasks."""
    aix = await AsyncIndex.open(tmp_path / "a.sqlite3")
    try:
        for n in range(50):
            await aix.add_instance(inst(n, study=n % 5, series=n % 5), rel(n), TS, 1)
        counter = 0
        release = threading.Event()

        async def tick() -> None:
            nonlocal counter
            while True:
                counter += 1
                if counter == 5:
                    release.set()
                await asyncio.sleep(0)

        def busy(ix: Index) -> bool:
            # Occupies the worker thread until the loop has made progress; if
            # the loop were blocked this would time out and return False.
            return release.wait(30)

        ticker = asyncio.create_task(tick())
        blocker = asyncio.ensure_future(aix.call(busy))
        result = await aix.query(None, study_query(StudyInstanceUID="",
                                                   NumberOfStudyRelatedInstances=""), "study")
        assert await blocker is True
        ticker.cancel()
        assert counter >= 5
        assert sorted(int(r.NumberOfStudyRelatedInstances) for r in result) == [10] * 5
    finally:
        await aix.close()


# ---------------------------------------------------------------------------
# 100,000 instances
# ---------------------------------------------------------------------------

FAMILIES = ["SMITH", "JONES", "TAYLOR", "BROWN", "WILLIAMS", "WILSON", "JOHNSON", "DAVIES",
            "ROBINSON", "WRIGHT", "THOMPSON", "EVANS", "WALKER", "WHITE", "ROBERTS", "GREEN",
            "HALL", "WOOD", "JACKSON", "CLARKE", "Smithers", "smithson"]
MODALITIES = ["CT", "MR", "US", "CR", "DX"]


def _bulk_load(ix: Index, n_patients: int, studies_per: int, series_per: int, inst_per: int,
               ) -> tuple[list[tuple[str, str, str]], int]:
    """Insert synthetic rows straight into the tables (one transaction).

    Returns [(study_uid, patient_name, study_date)] and the instance count.
    """
    rng = random.Random(1234)
    patients, studies, series, instances = [], [], [], []
    expected: list[tuple[str, str, str]] = []
    spk = sepk = ipk = 0
    for p in range(1, n_patients + 1):
        name = f"{FAMILIES[p % len(FAMILIES)]}^Given{p}"
        patients.append((p, f"PID{p:06d}", "", name, name.lower(), f"19{p % 100:02d}0101", "O"))
        for _ in range(studies_per):
            spk += 1
            date = f"20{rng.randrange(18, 25):02d}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
            study_uid = f"{ROOT}.10.{1000000 + spk}"  # fixed width: B-tree appends
            studies.append((spk, p, study_uid, date, "120000", f"ACC{spk}", str(spk), None, None, "Study"))
            expected.append((study_uid, name, date))
            for s in range(series_per):
                sepk += 1
                series.append((sepk, spk, f"{ROOT}.20.{1000000 + sepk}", MODALITIES[sepk % len(MODALITIES)], str(s + 1)))
                for k in range(inst_per):
                    ipk += 1
                    uid = f"{ROOT}.30.{1000000 + ipk}"
                    instances.append((ipk, sepk, uid, CT, str(k + 1), f"instances/{uid}.dcm",
                                      TS, 1000, 1.0))
    c = ix.connection
    c.execute("BEGIN")
    c.executemany("INSERT INTO patient (pk, patient_id, issuer, patient_name, patient_name_ci, birth_date, sex) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?)", patients)
    c.executemany("INSERT INTO study (pk, patient_pk, study_uid, study_date, study_time, accession_number, "
                  "study_id, referring_physician_name, referring_physician_name_ci, study_description) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", studies)
    c.executemany("INSERT INTO series (pk, study_pk, series_uid, modality, series_number) VALUES (?, ?, ?, ?, ?)",
                  series)
    c.executemany("INSERT INTO instance (pk, series_pk, sop_instance_uid, sop_class_uid, instance_number, "
                  "rel_path, transfer_syntax, size, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", instances)
    c.execute("COMMIT")
    return expected, ipk


def test_query_over_100000_instances(tmp_path: Path) -> None:
    with Index(tmp_path / "big.sqlite3") as ix:
        t0 = time.perf_counter()
        expected, n_instances = _bulk_load(ix, n_patients=5000, studies_per=2, series_per=2, inst_per=5)
        build = time.perf_counter() - t0
        assert n_instances == 100_000
        assert ix.count() == IndexCounts(5000, 10000, 20000, 100000)

        ident = study_query(PatientName="smith*", StudyDate="20200101-20211231", StudyInstanceUID="",
                            PatientID="", NumberOfStudyRelatedInstances="", ModalitiesInStudy="")
        t0 = time.perf_counter()
        result = ix.query(None, ident, "study")
        datasets = result.datasets()
        elapsed = time.perf_counter() - t0
        want = sorted(uid for uid, name, date in expected
                      if name.lower().startswith("smith") and "20200101" <= date <= "20211231")
        assert sorted(r.StudyInstanceUID for r in datasets) == want
        assert len(want) > 50
        assert all(int(r.NumberOfStudyRelatedInstances) == 10 for r in datasets)
        assert all(len(r.ModalitiesInStudy) == 2 for r in datasets)
        plan = " / ".join(r[3] for r in ix.connection.execute("EXPLAIN QUERY PLAN " + result.plan.sql,
                                                              result.plan.params))
        print(f"\nbulk load of 100,000 instances: {build:.2f} s; C-FIND (PatientName wildcard + "
              f"StudyDate range) -> {len(datasets)} studies in {elapsed * 1000:.1f} ms\n  plan: {plan}")

        # Name-only wildcard query: must use the case-folded name index, not a scan.
        name_only = study_query(PatientName="SMITH^GIVEN1*", StudyInstanceUID="")
        plan_name = ix.query(None, name_only, "study").plan
        qp = " / ".join(r[3] for r in ix.connection.execute("EXPLAIN QUERY PLAN " + plan_name.sql,
                                                            plan_name.params))
        assert "patient_name_ci_idx" in qp, qp
        t0 = time.perf_counter()
        got = ix.query(None, name_only, "study").datasets()
        elapsed = time.perf_counter() - t0
        want_names = {name for _, name, _ in expected if name.lower().startswith("smith^given1")}
        assert {str(r.PatientName) for r in got} == want_names
        print(f"  PatientName='SMITH^GIVEN1*' -> {len(got)} studies in {elapsed * 1000:.1f} ms; plan: {qp}")

        # IMAGE level within one series, and a retrieve of a whole study.
        t0 = time.perf_counter()
        images = ix.query(None, ds_of(QueryRetrieveLevel="IMAGE", StudyInstanceUID=U(10, 1000777),
                                      SeriesInstanceUID=U(20, 1001553), SOPInstanceUID=""), "study")
        retrieve = ix.instances_for_retrieve(None, ds_of(QueryRetrieveLevel="STUDY",
                                                         StudyInstanceUID=U(10, 1000777)), "study")
        elapsed = time.perf_counter() - t0
        assert len(images) == 5 and len(retrieve) == 10
        print(f"  IMAGE-level query + STUDY retrieve in {elapsed * 1000:.1f} ms")
