"""The archive's attribute index: SQLite tables patient / study / series / instance.

:class:`Index` is the synchronous core (one :mod:`sqlite3` connection, to be
used from one thread); :class:`AsyncIndex` is the asyncio facade that runs
every call on a single dedicated worker thread (a
``ThreadPoolExecutor(max_workers=1)`` owning the connection), so that the
event loop never blocks on SQLite.  Concurrent :meth:`AsyncIndex.add_instance`
calls are group-committed: whatever is queued when the worker gets to it is
written in one transaction (one WAL fsync for the lot).

Durability: WAL journal mode.  :class:`Index` defaults to
``synchronous=FULL`` (a transaction reported committed survives a power
cut).  The archive's :class:`~aiodicom.archive.storage.Storage` opens it
with ``NORMAL``: commits stay atomic but are synced at checkpoints, and the
rows a power cut loses are rebuilt from the fsynced files by the recovery
every open runs.

Schema (``PRAGMA user_version`` = number of :data:`MIGRATIONS` applied,
applied in order, each in one transaction)::

    patient (pk, patient_id NOT NULL, issuer NOT NULL, patient_name,
             patient_name_ci, birth_date, birth_time, sex, other_patient_ids,
             UNIQUE (patient_id, issuer))
    study   (pk, patient_pk -> patient, study_uid UNIQUE, study_date,
             study_time, accession_number, study_id, referring_physician_name,
             referring_physician_name_ci, study_description)
    series  (pk, study_pk -> study, series_uid UNIQUE, modality,
             series_number, series_description, body_part_examined,
             series_date, series_time)
    instance(pk, series_pk -> series, sop_instance_uid UNIQUE, sop_class_uid,
             instance_number, content_date, content_time,
             observation_datetime, completion_flag, verification_flag,
             value_type, template_id, mapping_resource, concept_code_value,
             concept_coding_scheme, concept_code_meaning,
             rel_path UNIQUE, transfer_syntax, size, file_mtime_ns,
             received_at, calling_ae)

Indexes: patient (patient_id, issuer) [unique], patient_name_ci, birth_date;
study study_uid [unique], patient_pk, study_date, accession_number, study_id,
referring_physician_name_ci; series series_uid [unique], study_pk, modality;
instance sop_instance_uid [unique], series_pk, sop_class_uid,
template_id (partial).

Decisions:

* Patients are keyed by (PatientID, IssuerOfPatientID); an absent value is
  stored as ``''`` so that instances without either still group together.
  Two patients with the same ID and different issuers are two rows.
* Entity attributes (patient, study, series) are refreshed from every newly
  stored instance, but an absent/empty value never erases a known one.  A
  study (series) whose newest instance names another patient (study) moves
  there (last writer wins); entities left without children are deleted.
* Storing an instance whose SOPInstanceUID is already indexed replaces the
  instance row entirely and :meth:`Index.add_instance` returns ``True``.
* Values are stored as decoded Python ``str`` in their canonical form (see
  :func:`~aiodicom.archive.matching.normalize_value`); empty values as NULL.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, NamedTuple, TypeVar

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from aiodicom.archive.matching import (
    ATTRIBUTES,
    SEQUENCES,
    Attr,
    QueryPlan,
    RetrievePlan,
    normalize_value,
    plan_query,
    plan_retrieve,
)

__all__ = [
    "AsyncIndex",
    "FileState",
    "Index",
    "IndexCounts",
    "InstanceEntry",
    "InstanceLocation",
    "InstanceRecord",
    "InvalidInstanceError",
    "MIGRATIONS",
    "QueryResult",
    "RelevantPatientCandidate",
    "RetrieveItem",
    "SCHEMA_VERSION",
    "record_from_dataset",
]

T = TypeVar("T")

# ---------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------

_SCHEMA_V1: Final = """
CREATE TABLE patient (
    pk                  INTEGER PRIMARY KEY,
    patient_id          TEXT NOT NULL,
    issuer              TEXT NOT NULL,
    patient_name        TEXT,
    patient_name_ci     TEXT,
    birth_date          TEXT,
    birth_time          TEXT,
    sex                 TEXT,
    other_patient_ids   TEXT,
    UNIQUE (patient_id, issuer)
);
CREATE INDEX patient_name_ci_idx ON patient (patient_name_ci);
CREATE INDEX patient_birth_date_idx ON patient (birth_date);

CREATE TABLE study (
    pk                          INTEGER PRIMARY KEY,
    patient_pk                  INTEGER NOT NULL REFERENCES patient (pk),
    study_uid                   TEXT NOT NULL UNIQUE,
    study_date                  TEXT,
    study_time                  TEXT,
    accession_number            TEXT,
    study_id                    TEXT,
    referring_physician_name    TEXT,
    referring_physician_name_ci TEXT,
    study_description           TEXT
);
CREATE INDEX study_patient_idx ON study (patient_pk);
CREATE INDEX study_date_idx ON study (study_date);
CREATE INDEX study_accession_idx ON study (accession_number);
CREATE INDEX study_id_idx ON study (study_id);
CREATE INDEX study_referring_ci_idx ON study (referring_physician_name_ci);

CREATE TABLE series (
    pk                  INTEGER PRIMARY KEY,
    study_pk            INTEGER NOT NULL REFERENCES study (pk),
    series_uid          TEXT NOT NULL UNIQUE,
    modality            TEXT,
    series_number       TEXT,
    series_description  TEXT,
    body_part_examined  TEXT,
    series_date         TEXT,
    series_time         TEXT
);
CREATE INDEX series_study_idx ON series (study_pk);
CREATE INDEX series_modality_idx ON series (modality);

CREATE TABLE instance (
    pk                      INTEGER PRIMARY KEY,
    series_pk               INTEGER NOT NULL REFERENCES series (pk),
    sop_instance_uid        TEXT NOT NULL UNIQUE,
    sop_class_uid           TEXT NOT NULL,
    instance_number         TEXT,
    content_date            TEXT,
    content_time            TEXT,
    observation_datetime    TEXT,
    completion_flag         TEXT,
    verification_flag       TEXT,
    value_type              TEXT,
    template_id             TEXT,
    mapping_resource        TEXT,
    concept_code_value      TEXT,
    concept_coding_scheme   TEXT,
    concept_code_meaning    TEXT,
    rel_path                TEXT NOT NULL UNIQUE,
    transfer_syntax         TEXT NOT NULL,
    size                    INTEGER NOT NULL,
    file_mtime_ns           INTEGER,
    received_at             REAL NOT NULL,
    calling_ae              TEXT
);
CREATE INDEX instance_series_idx ON instance (series_pk);
CREATE INDEX instance_sop_class_idx ON instance (sop_class_uid);
CREATE INDEX instance_template_idx ON instance (template_id) WHERE template_id IS NOT NULL;
"""

#: Schema migrations: ``MIGRATIONS[n]`` takes the database from
#: ``user_version`` *n* to *n + 1*.  Append, never edit.
MIGRATIONS: Final[tuple[str, ...]] = (_SCHEMA_V1,)
#: The schema version this code writes.
SCHEMA_VERSION: Final = len(MIGRATIONS)

#: Data columns per entity (besides pk / parent pk / bookkeeping), in order.
_KEY_COLUMN: Final = {
    "patient": ("patient_id", "issuer"),
    "study": ("study_uid",),
    "series": ("series_uid",),
    "instance": ("sop_instance_uid",),
}


def _columns(entity: str) -> tuple[str, ...]:
    cols: list[str] = []
    for a in ATTRIBUTES:
        if a.entity == entity and a.column is not None and a.extract:
            cols.append(a.column)
            if a.ci_column is not None:
                cols.append(a.ci_column)
    for s in SEQUENCES:
        if s.entity == entity:
            cols.extend(a.column for a in s.items if a.column is not None)
    return tuple(cols)


_COLUMNS: Final = {e: _columns(e) for e in ("patient", "study", "series", "instance")}
_UPDATABLE: Final = {e: tuple(c for c in _COLUMNS[e] if c not in _KEY_COLUMN[e]) for e in _COLUMNS}


class InvalidInstanceError(ValueError):
    """The data set lacks what the index needs (Study/Series/SOP UIDs)."""


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceRecord:
    """The indexed attributes of one instance, per entity, by column name."""

    patient: dict[str, str | None]
    study: dict[str, str | None]
    series: dict[str, str | None]
    instance: dict[str, str | None]

    @property
    def sop_instance_uid(self) -> str:
        """The SOP Instance UID."""
        return str(self.instance["sop_instance_uid"])

    @property
    def sop_class_uid(self) -> str:
        """The SOP Class UID."""
        return str(self.instance["sop_class_uid"])


def _value_text(ds: Dataset, attr: Attr) -> str | None:
    if attr.tag not in ds:
        return None
    try:
        value = ds[attr.tag].value
    except Exception:  # undecodable value: index it as absent
        return None
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        parts = [normalize_value(attr.vr, str(v)) for v in value]
        parts = [p for p in parts if p]
        if not parts:
            return None
        if attr.vr == "UI":
            return parts[0]
        return "\\".join(parts)
    text = normalize_value(attr.vr, str(value)).rstrip("\x00")
    return text or None


def record_from_dataset(ds: Dataset) -> InstanceRecord:
    """Extract the indexed attributes of *ds* (a header-only data set is enough).

    Raises :class:`InvalidInstanceError` if StudyInstanceUID,
    SeriesInstanceUID, SOPInstanceUID or SOPClassUID is missing.
    """
    rows: dict[str, dict[str, str | None]] = {e: {} for e in _COLUMNS}
    for attr in ATTRIBUTES:
        if attr.column is None or not attr.extract:
            continue
        text = _value_text(ds, attr)
        row = rows[attr.entity]
        row[attr.column] = text
        if attr.ci_column is not None:
            row[attr.ci_column] = text.lower() if text is not None else None
    for seq in SEQUENCES:
        item: Dataset | None = None
        if seq.tag in ds:
            try:
                value = ds[seq.tag].value
            except Exception:
                value = None
            if value:
                item = value[0]
        for a in seq.items:
            assert a.column is not None
            rows[seq.entity][a.column] = _value_text(item, a) if item is not None else None
    return record_from_rows(rows)


def record_from_rows(rows: dict[str, dict[str, str | None]]) -> InstanceRecord:
    """The record of extracted column values; raises :class:`InvalidInstanceError`
    if StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID or SOPClassUID is missing."""
    rows["patient"]["patient_id"] = rows["patient"].get("patient_id") or ""
    rows["patient"]["issuer"] = rows["patient"].get("issuer") or ""
    for entity, col, name in (
        ("study", "study_uid", "StudyInstanceUID"),
        ("series", "series_uid", "SeriesInstanceUID"),
        ("instance", "sop_instance_uid", "SOPInstanceUID"),
        ("instance", "sop_class_uid", "SOPClassUID"),
    ):
        if not rows[entity].get(col):
            raise InvalidInstanceError(f"data set has no {name}; it cannot be indexed")
    return InstanceRecord(rows["patient"], rows["study"], rows["series"], rows["instance"])


class InstanceEntry(NamedTuple):
    """Arguments of one :meth:`Index.add_instance` call (for batches)."""

    attrs: Dataset | InstanceRecord
    rel_path: str
    transfer_syntax: str
    size: int
    calling_ae: str | None = None
    received_at: float | None = None
    file_mtime_ns: int | None = None


class RetrieveItem(NamedTuple):
    """One instance to send for a C-GET/C-MOVE."""

    sop_class_uid: str
    sop_instance_uid: str
    rel_path: str
    transfer_syntax: str


class InstanceLocation(NamedTuple):
    """Where an indexed instance lives."""

    sop_class_uid: str
    sop_instance_uid: str
    rel_path: str
    transfer_syntax: str
    size: int


class FileState(NamedTuple):
    """What the index recorded about an instance's file (for recovery)."""

    sop_instance_uid: str
    rel_path: str
    size: int
    file_mtime_ns: int | None


class IndexCounts(NamedTuple):
    """Number of rows per entity."""

    patients: int
    studies: int
    series: int
    instances: int


class RelevantPatientCandidate(NamedTuple):
    """A patient matching a Relevant Patient Information Query.

    The instance fields name the patient's latest SR instance with the
    requested template (by ObservationDateTime, then ContentDate/Time, then
    arrival), or are ``None`` if the patient has none.
    """

    patient_pk: int
    patient_id: str
    issuer: str
    patient_name: str | None
    birth_date: str | None
    sex: str | None
    sop_class_uid: str | None
    sop_instance_uid: str | None
    rel_path: str | None
    transfer_syntax: str | None
    observation_datetime: str | None


class QueryResult:
    """Rows matched by a C-FIND; iterating yields the response identifiers.

    Datasets are built lazily from the stored rows, so a large result costs
    row tuples, not pydicom objects.  :attr:`unsupported` lists requested
    keys that were not matched (answer those matches with 0xFF01).
    """

    __slots__ = ("plan", "rows")

    def __init__(self, plan: QueryPlan, rows: list[tuple[object, ...]]) -> None:
        self.plan = plan
        self.rows = rows

    @property
    def unsupported(self) -> tuple[str, ...]:
        """Names of requested keys that were not supported."""
        return self.plan.unsupported

    @property
    def pending_status(self) -> int:
        """0xFF01 if some optional keys were not supported, else 0xFF00."""
        return 0xFF01 if self.plan.unsupported else 0xFF00

    @property
    def level(self) -> str:
        """The Query/Retrieve Level."""
        return self.plan.level

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Dataset]:
        build = self.plan.build
        for row in self.rows:
            yield build(row)

    def datasets(self) -> list[Dataset]:
        """All response identifiers as a list."""
        return list(self)


# ---------------------------------------------------------------------------
# The synchronous index
# ---------------------------------------------------------------------------


def _upsert_sql(entity: str, parent: str | None) -> tuple[str, str, str]:
    """(select-by-key, insert, update) statements for *entity*."""
    table = entity
    keys = _KEY_COLUMN[entity]
    cols = _COLUMNS[entity]
    parent_col = f"{parent}_pk" if parent else None
    select = f"SELECT pk{', ' + parent_col if parent_col else ''} FROM {table} WHERE " + " AND ".join(
        f"{k} = ?" for k in keys
    )
    insert_cols = ([parent_col] if parent_col else []) + list(cols)
    insert = f"INSERT INTO {table} ({', '.join(insert_cols)}) VALUES ({', '.join('?' * len(insert_cols))})"
    sets = [f"{parent_col} = ?"] if parent_col else []
    sets += [f"{c} = COALESCE(?, {c})" for c in _UPDATABLE[entity]]
    update = f"UPDATE {table} SET {', '.join(sets)} WHERE pk = ?"
    return select, insert, update


_PATIENT_SQL: Final = _upsert_sql("patient", None)
_STUDY_SQL: Final = _upsert_sql("study", "patient")
_SERIES_SQL: Final = _upsert_sql("series", "study")
_INSTANCE_FILE_COLS: Final = (
    "rel_path",
    "transfer_syntax",
    "size",
    "file_mtime_ns",
    "received_at",
    "calling_ae",
)
_INSTANCE_ALL_COLS: Final = ("series_pk",) + _COLUMNS["instance"] + _INSTANCE_FILE_COLS
_INSTANCE_SELECT: Final = "SELECT pk, series_pk FROM instance WHERE sop_instance_uid = ?"
_INSTANCE_INSERT: Final = (
    f"INSERT INTO instance ({', '.join(_INSTANCE_ALL_COLS)}) "
    f"VALUES ({', '.join('?' * len(_INSTANCE_ALL_COLS))})"
)
_INSTANCE_UPDATE: Final = (
    f"UPDATE instance SET {', '.join(f'{c} = ?' for c in _INSTANCE_ALL_COLS)} WHERE pk = ?"
)


class Index:
    """The SQLite attribute index (synchronous; use from one thread).

    *path* is the database file (``":memory:"`` for a throw-away index).
    Opening creates or migrates the schema.  Raises :class:`RuntimeError` if
    the database was written by a newer schema version.
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "OFF", "EXTRA"):
            raise ValueError(f"invalid synchronous mode {synchronous!r}")
        self.path = os.fspath(path)
        self._conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._configure(synchronous.upper())
            self._migrate()
        except BaseException:
            self._conn.close()
            raise
        self._closed = False

    # -- setup ---------------------------------------------------------------

    def _configure(self, synchronous: str) -> None:
        c = self._conn
        c.execute("PRAGMA journal_mode = WAL")
        c.execute(f"PRAGMA synchronous = {synchronous}")
        c.execute("PRAGMA foreign_keys = ON")
        c.execute("PRAGMA busy_timeout = 10000")
        c.execute("PRAGMA temp_store = MEMORY")
        c.execute("PRAGMA cache_size = -65536")  # 64 MiB

    def _migrate(self) -> None:
        c = self._conn
        version = int(c.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"index {self.path} has schema version {version}, newer than this "
                f"aiodicom understands ({SCHEMA_VERSION})"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            script = MIGRATIONS[target - 1]
            c.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(script):
                    c.execute(statement)
                c.execute(f"PRAGMA user_version = {int(target)}")
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    @property
    def connection(self) -> sqlite3.Connection:
        """The underlying connection (for bulk loads and tests)."""
        return self._conn

    @property
    def schema_version(self) -> int:
        """``PRAGMA user_version`` of the database."""
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    # -- transactions ----------------------------------------------------------

    def _begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self._conn.execute("COMMIT")

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    # -- writing ---------------------------------------------------------------

    def add_instance(
        self,
        attrs: Dataset | InstanceRecord,
        rel_path: str,
        transfer_syntax: str,
        size: int,
        calling_ae: str | None = None,
        *,
        received_at: float | None = None,
        file_mtime_ns: int | None = None,
    ) -> bool:
        """Insert or replace one instance; return ``True`` if it replaced one.

        *attrs* is the instance's data set (the header is enough) or an
        :class:`InstanceRecord`.  Patient, study and series rows are created
        or refreshed in the same transaction.  Raises
        :class:`InvalidInstanceError` if required UIDs are missing.
        """
        return self.add_instances(
            [
                InstanceEntry(
                    attrs, rel_path, transfer_syntax, size, calling_ae, received_at, file_mtime_ns
                )
            ]
        )[0]

    def add_instances(self, entries: Iterable[InstanceEntry]) -> list[bool]:
        """Add several instances in one transaction; all or nothing."""
        records = [
            (e, e.attrs if isinstance(e.attrs, InstanceRecord) else record_from_dataset(e.attrs))
            for e in entries
        ]
        self._begin()
        try:
            result = [self._add(entry, record) for entry, record in records]
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return result

    def _upsert(
        self,
        sqls: tuple[str, str, str],
        row: dict[str, str | None],
        entity: str,
        parent_pk: int | None,
    ) -> tuple[int, int | None]:
        """Insert or refresh one entity row; return (pk, previous parent pk)."""
        select, insert, update = sqls
        c = self._conn
        found = c.execute(select, [row[k] for k in _KEY_COLUMN[entity]]).fetchone()
        if found is None:
            values: list[object] = [] if parent_pk is None else [parent_pk]
            values += [row.get(col) for col in _COLUMNS[entity]]
            cur = c.execute(insert, values)
            assert cur.lastrowid is not None
            return int(cur.lastrowid), None
        pk = int(found[0])
        old_parent = int(found[1]) if parent_pk is not None else None
        upd: list[object] = [] if parent_pk is None else [parent_pk]
        upd += [row.get(col) for col in _UPDATABLE[entity]]
        upd.append(pk)
        c.execute(update, upd)
        return pk, old_parent

    def _add(self, entry: InstanceEntry, record: InstanceRecord) -> bool:
        c = self._conn
        patient_pk, _ = self._upsert(_PATIENT_SQL, record.patient, "patient", None)
        study_pk, old_patient = self._upsert(_STUDY_SQL, record.study, "study", patient_pk)
        series_pk, old_study = self._upsert(_SERIES_SQL, record.series, "series", study_pk)

        received_at = entry.received_at if entry.received_at is not None else time.time()
        values: list[object] = [series_pk]
        values += [record.instance.get(col) for col in _COLUMNS["instance"]]
        values += [
            entry.rel_path,
            entry.transfer_syntax.rstrip("\x00 "),
            int(entry.size),
            entry.file_mtime_ns,
            received_at,
            (entry.calling_ae or "").strip() or None,
        ]
        found = c.execute(_INSTANCE_SELECT, (record.sop_instance_uid,)).fetchone()
        if found is None:
            c.execute(_INSTANCE_INSERT, values)
            replaced = False
            old_series = None
        else:
            c.execute(_INSTANCE_UPDATE, values + [int(found[0])])
            replaced = True
            old_series = int(found[1])

        if old_series is not None and old_series != series_pk:
            self._prune_series(old_series)
        if old_study is not None and old_study != study_pk:
            self._prune_study(old_study)
        if old_patient is not None and old_patient != patient_pk:
            self._prune_patient(old_patient)
        return replaced

    def _prune_series(self, series_pk: int) -> None:
        c = self._conn
        row = c.execute("SELECT study_pk FROM series WHERE pk = ?", (series_pk,)).fetchone()
        if row is None:
            return
        cur = c.execute(
            "DELETE FROM series WHERE pk = ? AND NOT EXISTS "
            "(SELECT 1 FROM instance WHERE series_pk = ?)",
            (series_pk, series_pk),
        )
        if cur.rowcount:
            self._prune_study(int(row[0]))

    def _prune_study(self, study_pk: int) -> None:
        c = self._conn
        row = c.execute("SELECT patient_pk FROM study WHERE pk = ?", (study_pk,)).fetchone()
        if row is None:
            return
        cur = c.execute(
            "DELETE FROM study WHERE pk = ? AND NOT EXISTS "
            "(SELECT 1 FROM series WHERE study_pk = ?)",
            (study_pk, study_pk),
        )
        if cur.rowcount:
            self._prune_patient(int(row[0]))

    def _prune_patient(self, patient_pk: int) -> None:
        self._conn.execute(
            "DELETE FROM patient WHERE pk = ? AND NOT EXISTS "
            "(SELECT 1 FROM study WHERE patient_pk = ?)",
            (patient_pk, patient_pk),
        )

    def remove_instance(self, sop_instance_uid: str) -> InstanceLocation | None:
        """Delete an instance row (and parents left empty); return where it was."""
        c = self._conn
        self._begin()
        try:
            row = c.execute(
                "SELECT pk, series_pk, sop_class_uid, sop_instance_uid, rel_path, "
                "transfer_syntax, size FROM instance WHERE sop_instance_uid = ?",
                (sop_instance_uid,),
            ).fetchone()
            if row is None:
                self._commit()
                return None
            c.execute("DELETE FROM instance WHERE pk = ?", (row[0],))
            self._prune_series(int(row[1]))
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return InstanceLocation(row[2], row[3], row[4], row[5], int(row[6]))

    # -- reading ---------------------------------------------------------------

    def run_plan(self, plan: QueryPlan) -> list[tuple[object, ...]]:
        """Execute a compiled query; return its rows."""
        return self._conn.execute(plan.sql, plan.params).fetchall()

    def query(
        self,
        level: str | None,
        identifier: Dataset,
        model: str = "study",
        *,
        retrieve_ae: str | None = None,
        limit: int | None = None,
    ) -> QueryResult:
        """Run a C-FIND; see :mod:`aiodicom.archive.matching` for the rules.

        *level* may be ``None`` to take QueryRetrieveLevel from *identifier*.
        Raises :class:`~aiodicom.archive.matching.MatchingError` (0xA900) for
        invalid identifiers.
        """
        plan = plan_query(identifier, model, level, retrieve_ae=retrieve_ae, limit=limit)
        return QueryResult(plan, self.run_plan(plan))

    def run_retrieve_plan(self, plan: RetrievePlan) -> list[RetrieveItem]:
        """Execute a compiled retrieve; return the instances to send."""
        return [RetrieveItem(*row) for row in self._conn.execute(plan.sql, plan.params)]

    def instances_for_retrieve(
        self, level: str | None, identifier: Dataset, model: str = "study"
    ) -> list[RetrieveItem]:
        """The instances a C-GET/C-MOVE with *identifier* asks for.

        Raises :class:`~aiodicom.archive.matching.MatchingError` (0xA900)
        when the unique keys are missing or invalid.
        """
        return self.run_retrieve_plan(plan_retrieve(identifier, model, level))

    def latest_sr_for_patient(
        self,
        patient_id: str,
        issuer: str | None = None,
        template_id: str = "9007",
        mapping_resource: str | None = "DCMR",
    ) -> list[RelevantPatientCandidate]:
        """Candidates for a Relevant Patient Information Query (PS3.4 Annex Q).

        One entry per patient whose PatientID equals *patient_id* (and whose
        IssuerOfPatientID equals *issuer*, when given and not empty), each
        with that patient's latest instance whose ContentTemplateSequence
        names *template_id* (and *mapping_resource*, when given), or ``None``
        fields if it has none.  More than one entry means the SCP must answer
        0xC100 (more than one match).
        """
        c = self._conn
        sql = (
            "SELECT pk, patient_id, issuer, patient_name, birth_date, sex FROM patient "
            "WHERE patient_id = ?"
        )
        params: list[object] = [patient_id.strip()]
        if issuer is not None and issuer.strip():
            sql += " AND issuer = ?"
            params.append(issuer.strip())
        sql += " ORDER BY pk"
        inst_sql = (
            "SELECT i.sop_class_uid, i.sop_instance_uid, i.rel_path, i.transfer_syntax, "
            "i.observation_datetime FROM instance AS i "
            "JOIN series AS se ON i.series_pk = se.pk JOIN study AS st ON se.study_pk = st.pk "
            "WHERE st.patient_pk = ? AND i.template_id = ?"
        )
        if mapping_resource is not None:
            inst_sql += " AND (i.mapping_resource = ? OR i.mapping_resource IS NULL)"
        inst_sql += (
            " ORDER BY COALESCE(i.observation_datetime, '') DESC, "
            "COALESCE(i.content_date, '') DESC, COALESCE(i.content_time, '') DESC, "
            "i.received_at DESC, i.pk DESC LIMIT 1"
        )
        out: list[RelevantPatientCandidate] = []
        c.execute("BEGIN")
        try:
            for pk, pid, iss, name, birth, sex in c.execute(sql, params).fetchall():
                inst_params: list[object] = [pk, template_id.strip()]
                if mapping_resource is not None:
                    inst_params.append(mapping_resource.strip())
                inst = c.execute(inst_sql, inst_params).fetchone()
                fields: tuple[object, ...] = tuple(inst) if inst is not None else (None,) * 5
                out.append(RelevantPatientCandidate(int(pk), pid, iss, name, birth, sex, *fields))  # type: ignore[arg-type]
        finally:
            c.execute("COMMIT")
        return out

    def get_instance(self, sop_instance_uid: str) -> InstanceLocation | None:
        """Where the instance *sop_instance_uid* lives, or ``None``."""
        row = self._conn.execute(
            "SELECT sop_class_uid, sop_instance_uid, rel_path, transfer_syntax, size "
            "FROM instance WHERE sop_instance_uid = ?",
            (sop_instance_uid,),
        ).fetchone()
        return InstanceLocation(row[0], row[1], row[2], row[3], int(row[4])) if row else None

    def file_states(self) -> list[FileState]:
        """Every instance's recorded file path, size and mtime (for recovery)."""
        return [
            FileState(r[0], r[1], int(r[2]), None if r[3] is None else int(r[3]))
            for r in self._conn.execute(
                "SELECT sop_instance_uid, rel_path, size, file_mtime_ns FROM instance"
            )
        ]

    def count(self) -> IndexCounts:
        """Number of patients, studies, series and instances."""
        c = self._conn
        return IndexCounts(
            *(
                int(c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                for t in ("patient", "study", "series", "instance")
            )
        )

    def close(self) -> None:
        """Close the connection (checkpointing the WAL).  Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._conn.execute("PRAGMA optimize")
        except sqlite3.Error:
            pass
        self._conn.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _split_sql(script: str) -> list[str]:
    """Split a migration script (no semicolons inside literals) into statements."""
    return [s.strip() for s in script.split(";") if s.strip()]


# ---------------------------------------------------------------------------
# The asyncio facade
# ---------------------------------------------------------------------------


class AsyncIndex:
    """Asyncio facade over :class:`Index`.

    Every operation runs on one dedicated worker thread that owns the SQLite
    connection (``ThreadPoolExecutor(max_workers=1)`` and
    :meth:`~asyncio.loop.run_in_executor`), so the event loop never blocks on
    the database.  :meth:`add_instance` calls queued while the worker is busy
    are committed together in one transaction (group commit); if that
    transaction fails, each is retried on its own so one bad instance does
    not fail the others.  Create with ``await AsyncIndex.open(path)``.
    """

    def __init__(self, executor: ThreadPoolExecutor, index: Index) -> None:
        self._executor = executor
        self._index = index
        self._lock = threading.Lock()
        self._pending: list[tuple[InstanceEntry, asyncio.Future[bool]]] = []
        self._flush_scheduled = False
        self._closed = False

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, synchronous: str = "FULL") -> AsyncIndex:
        """Open (create, migrate) the index at *path* on a new worker thread."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiodicom-index")
        loop = asyncio.get_running_loop()
        try:
            index = await loop.run_in_executor(
                executor, lambda: Index(path, synchronous=synchronous)
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, index)

    @property
    def path(self) -> str:
        """The database file."""
        return self._index.path

    async def call(self, fn: Callable[[Index], T]) -> T:
        """Run ``fn(index)`` on the worker thread and return its result."""
        if self._closed:
            raise RuntimeError("index is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self._index)

    # -- writing ---------------------------------------------------------------

    async def add_instance(
        self,
        attrs: Dataset | InstanceRecord,
        rel_path: str,
        transfer_syntax: str,
        size: int,
        calling_ae: str | None = None,
        *,
        received_at: float | None = None,
        file_mtime_ns: int | None = None,
    ) -> bool:
        """See :meth:`Index.add_instance`; group-committed with concurrent calls."""
        if self._closed:
            raise RuntimeError("index is closed")
        loop = asyncio.get_running_loop()
        record = attrs if isinstance(attrs, InstanceRecord) else record_from_dataset(attrs)
        entry = InstanceEntry(
            record,
            rel_path,
            transfer_syntax,
            size,
            calling_ae,
            received_at if received_at is not None else time.time(),
            file_mtime_ns,
        )
        fut: asyncio.Future[bool] = loop.create_future()
        with self._lock:
            self._pending.append((entry, fut))
            schedule = not self._flush_scheduled
            self._flush_scheduled = True
        if schedule:
            loop.run_in_executor(self._executor, self._flush, loop)
        return await fut

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """Worker thread: commit every queued add_instance together."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._flush_scheduled = False
        if not batch:
            return
        results: list[tuple[asyncio.Future[bool], bool | BaseException]] = []
        try:
            replaced = self._index.add_instances([entry for entry, _ in batch])
            results = [(fut, r) for (_, fut), r in zip(batch, replaced)]
        except Exception:
            for entry, fut in batch:
                try:
                    results.append((fut, self._index.add_instances([entry])[0]))
                except Exception as exc:
                    results.append((fut, exc))
        try:
            loop.call_soon_threadsafe(_resolve, results)
        except RuntimeError:  # loop closed
            pass

    async def remove_instance(self, sop_instance_uid: str) -> InstanceLocation | None:
        """See :meth:`Index.remove_instance`."""
        return await self.call(lambda ix: ix.remove_instance(sop_instance_uid))

    # -- reading ---------------------------------------------------------------

    async def query(
        self,
        level: str | None,
        identifier: Dataset,
        model: str = "study",
        *,
        retrieve_ae: str | None = None,
        limit: int | None = None,
    ) -> QueryResult:
        """See :meth:`Index.query`.

        The identifier is compiled on the calling thread (so
        :class:`~aiodicom.archive.matching.MatchingError` is raised before
        any database work); the SQL runs on the worker thread.
        """
        plan = plan_query(identifier, model, level, retrieve_ae=retrieve_ae, limit=limit)
        rows = await self.call(lambda ix: ix.run_plan(plan))
        return QueryResult(plan, rows)

    async def instances_for_retrieve(
        self, level: str | None, identifier: Dataset, model: str = "study"
    ) -> list[RetrieveItem]:
        """See :meth:`Index.instances_for_retrieve`."""
        plan = plan_retrieve(identifier, model, level)
        return await self.call(lambda ix: ix.run_retrieve_plan(plan))

    async def latest_sr_for_patient(
        self,
        patient_id: str,
        issuer: str | None = None,
        template_id: str = "9007",
        mapping_resource: str | None = "DCMR",
    ) -> list[RelevantPatientCandidate]:
        """See :meth:`Index.latest_sr_for_patient`."""
        return await self.call(
            lambda ix: ix.latest_sr_for_patient(patient_id, issuer, template_id, mapping_resource)
        )

    async def get_instance(self, sop_instance_uid: str) -> InstanceLocation | None:
        """See :meth:`Index.get_instance`."""
        return await self.call(lambda ix: ix.get_instance(sop_instance_uid))

    async def file_states(self) -> list[FileState]:
        """See :meth:`Index.file_states`."""
        return await self.call(lambda ix: ix.file_states())

    async def count(self) -> IndexCounts:
        """See :meth:`Index.count`."""
        return await self.call(lambda ix: ix.count())

    async def close(self) -> None:
        """Wait for queued work, close the connection and stop the worker."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        self._closed = True
        try:
            await loop.run_in_executor(self._executor, self._index.close)
        finally:
            self._executor.shutdown(wait=True)


def _resolve(results: Sequence[tuple[asyncio.Future[bool], bool | BaseException]]) -> None:
    for fut, result in results:
        if fut.done():
            continue
        if isinstance(result, BaseException):
            fut.set_exception(result)
        else:
            fut.set_result(result)
