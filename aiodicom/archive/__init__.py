"""The embedded query/retrieve archive behind ``aiodicom serve``.

* :mod:`aiodicom.archive.storage` -- :class:`Storage`: Part 10 files under a
  root directory, written atomically and indexed, with crash recovery.
* :mod:`aiodicom.archive.index` -- :class:`Index` / :class:`AsyncIndex`: the
  SQLite attribute index (patient / study / series / instance).
* :mod:`aiodicom.archive.matching` -- PS3.4 C.2.2.2 matching compiled to
  parameterised SQL; :class:`MatchingError` carries the DIMSE status.
"""

from __future__ import annotations

from aiodicom.archive.index import (
    AsyncIndex,
    Index,
    IndexCounts,
    InstanceLocation,
    InstanceRecord,
    InvalidInstanceError,
    QueryResult,
    RelevantPatientCandidate,
    RetrieveItem,
    record_from_dataset,
)
from aiodicom.archive.matching import MatchingError, plan_query, plan_retrieve
from aiodicom.archive.storage import RecoveryReport, Storage, StoreResult

__all__ = [
    "AsyncIndex",
    "Index",
    "IndexCounts",
    "InstanceLocation",
    "InstanceRecord",
    "InvalidInstanceError",
    "MatchingError",
    "QueryResult",
    "RecoveryReport",
    "RelevantPatientCandidate",
    "RetrieveItem",
    "Storage",
    "StoreResult",
    "plan_query",
    "plan_retrieve",
    "record_from_dataset",
]
