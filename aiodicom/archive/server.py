"""The archive application behind ``aiodicom serve``.

:func:`create_archive_server` wires an :class:`ArchiveServer` (a
:class:`~aiodicom.aio.server.Server`) to a :class:`~aiodicom.archive.storage.Storage`:

* **Verification** (C-ECHO).
* **Storage SCP** for every standard storage SOP class
  (:data:`~aiodicom.uids.STORAGE_SOP_CLASSES`) with the native transfer
  syntaxes and every compressed one (JPEG baseline/extended/lossless, JPEG-LS,
  JPEG 2000, HTJ2K, RLE, MPEG, ...); instances are **stored as received**, never
  transcoded.  The data set is streamed into the final file's temporary file
  while it arrives; success is answered only once the file is renamed,
  fsynced and its index row committed.  A duplicate SOP Instance UID replaces
  the stored instance (the index keeps one row; "replaced" is logged).
* **Query/Retrieve** Patient Root and Study Root: C-FIND answered from the
  SQLite index (FF01 when some requested keys are not supported; an invalid
  identifier gets the :class:`~aiodicom.archive.matching.MatchingError`
  status, usually A900, with its comment), C-GET (files sent as stored; the
  storage classes are accepted with the SCU role for us) and C-MOVE to the
  configured ``peers`` (:mod:`aiodicom.services.move`: unknown destination
  A801, unreachable destination A702 with every UID failed).
* **Relevant Patient Information Query** (general, breast, cardiac): the
  answer is the content tree of the *most recent* stored SR of that patient
  whose ContentTemplateSequence names the requested template (TID 9007, 9000
  or 3802), read from that one file.  More than one patient with the
  PatientID (different issuers, none in the request) -> **C100**; a template
  the archive cannot produce (anything but 9007/9000/3802) -> **C200**; a
  patient that is unknown, or known but without such an SR -> **Success
  with zero matches** (the archive has nothing relevant to say, which is not
  an error).

Startup runs :meth:`Storage.recover`.  On every association close one INFO
line is logged on ``aiodicom.archive`` with the calling AE title, peer
address, operation counts by type, bytes in/out and duration -- no patient
data.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.dataset import Dataset

from ..aio.server import DEFAULT_TRANSFER_SYNTAXES, Server
from ..dataset import DatasetDecodeError
from ..dimse.commands import C_CANCEL_RQ
from ..part10 import InvalidPart10Error, Part10Writer
from ..services.find import FindRequest, serve_find
from ..services.get import GetRequest, serve_get
from ..services.move import MoveInstance, MoveRequest, PeerResolver, serve_move
from ..services.rpq import RelevantPatientRequest, serve_relevant_patient_info
from ..services.store import (
    STORAGE_TRANSFER_SYNTAXES,
    ServiceError,
    StoreRequest,
    _Spool,
    _spool_limit,
    serve_store,
)
from ..uids import (
    STORAGE_SOP_CLASSES,
    VERIFICATION_SOP_CLASS,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from .index import InvalidInstanceError
from .matching import MatchingError
from .storage import Storage, StoreResult

if TYPE_CHECKING:
    from ..aio.association import Association
    from ..dimse.commands import Command
    from ..dimse.fragments import Message

__all__ = ["COMMAND_NAMES", "RPQ_TEMPLATES", "ArchiveServer", "create_archive_server"]

log = logging.getLogger("aiodicom.archive")

#: Templates the archive answers Relevant Patient Information Queries for.
RPQ_TEMPLATES: tuple[str, ...] = ("9007", "9000", "3802")

#: Command field -> name, for the per-association log line.
COMMAND_NAMES: dict[int, str] = {
    0x0001: "C-STORE",
    0x0010: "C-GET",
    0x0020: "C-FIND",
    0x0021: "C-MOVE",
    0x0030: "C-ECHO",
    C_CANCEL_RQ: "C-CANCEL",
}

_PATIENT_MODELS = frozenset(
    {
        PatientRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelGet,
        PatientRootQueryRetrieveInformationModelMove,
    }
)
_INVALID_INSTANCE = 0xA900  # storage: data set does not match SOP class
_CANNOT_UNDERSTAND = 0xC000
_DEMOGRAPHICS = ("SpecificCharacterSet", "PatientName", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")


def _model(sop_class_uid: str) -> str:
    return "patient" if sop_class_uid in _PATIENT_MODELS else "study"


class _AssocStats:
    __slots__ = ("opened", "ops")

    def __init__(self) -> None:
        self.opened = time.monotonic()
        self.ops: collections.Counter[str] = collections.Counter()


class ArchiveServer(Server):
    """A :class:`Server` that owns a :class:`Storage` and logs each association.

    Create with :func:`create_archive_server`; :meth:`close` also closes the
    storage.
    """

    storage: Storage

    def __init__(self, ae_title: str = "AIODICOM", **kwargs: Any) -> None:
        super().__init__(ae_title, **kwargs)
        self._stats: dict[int, _AssocStats] = {}

    # -- per-association accounting ------------------------------------------

    def _association_opened(self, assoc: Association) -> None:
        super()._association_opened(assoc)
        # The counts only feed the INFO line at close: with INFO off
        # (`aiodicom serve --quiet`), nothing is kept or counted.
        if log.isEnabledFor(logging.INFO):
            self._stats[id(assoc)] = _AssocStats()

    def _association_closed(self, assoc: Association) -> None:
        super()._association_closed(assoc)
        stats = self._stats.pop(id(assoc), None)
        if stats is None or not log.isEnabledFor(logging.INFO):
            return
        peer = f"{assoc.peer_address[0]}:{assoc.peer_address[1]}" if assoc.peer_address else "-"
        ops = ",".join(f"{k}={v}" for k, v in sorted(stats.ops.items())) or "none"
        log.info(
            "association closed calling_ae=%s peer=%s ops=%s bytes_in=%d bytes_out=%d duration_s=%.3f",
            (assoc.calling_ae or "-").strip() or "-",
            peer,
            ops,
            assoc.bytes_received,
            assoc.bytes_sent,
            time.monotonic() - stats.opened,
        )

    def _count(self, assoc: Association, msg: Message) -> None:
        stats = self._stats.get(id(assoc))
        if stats is not None:
            cf = msg.command.command_field
            stats.ops[COMMAND_NAMES.get(cf, f"0x{cf:04X}")] += 1

    def answer_inline(self, assoc: Association, msg: Message) -> bool:
        """Count the request for the per-association log line when answered on the spot."""
        if super().answer_inline(assoc, msg):
            self._count(assoc, msg)
            return True
        return False

    async def handle_request(self, assoc: Association, msg: Message) -> None:
        """Count the request for the per-association log line, then dispatch it."""
        self._count(assoc, msg)
        await super().handle_request(assoc, msg)

    async def close(self, timeout: float = 10.0) -> None:
        """Stop serving, then close the storage (index)."""
        try:
            await super().close(timeout)
        finally:
            storage = getattr(self, "storage", None)
            if storage is not None:
                await storage.close()


# ---------------------------------------------------------------------------
# C-STORE -> Storage
# ---------------------------------------------------------------------------


class ArchiveStore:
    """Storage handler: streams each data set into the archive, then indexes it."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def dataset_sink(self, assoc: Association, context_id: int, command: Command) -> _Spool:
        """The sink for the incoming data set: the archive's writer once it passes the memory limit (never raises)."""
        ctx = assoc.contexts.get(context_id)
        try:
            if ctx is None or ctx.abstract_syntax != command.affected_sop_class_uid:
                return _Spool(None, None, None)  # answered 0x0122 by the service
            self.storage.rel_path(command.affected_sop_instance_uid or "")  # validates the UID
        except Exception as exc:  # noqa: BLE001 - kept and answered as a failure
            return _Spool(None, exc, None)
        # Kept in memory up to SPOOL_MEMORY_LIMIT and then stored with
        # Storage.store (one worker-thread hop); only a larger data set opens
        # the streaming writer, on the loop, once the limit is passed.
        return _Spool(
            None,
            None,
            None,
            limit=_spool_limit(assoc),
            opener=functools.partial(
                self.storage.open_writer,
                command.affected_sop_class_uid or "",
                command.affected_sop_instance_uid or "",
                ctx.transfer_syntax,
                source_ae=assoc.calling_ae.strip() or None,
            ),
        )

    async def _commit_and_index(
        self, writer: Part10Writer, sop_instance_uid: str, source_ae: str | None
    ) -> StoreResult:
        loop = asyncio.get_running_loop()
        try:
            return await self.storage.commit_and_index(writer, source_ae)
        except BaseException:
            # Never leave a file the index does not know about (a failed
            # commit has already removed its temporary file).
            if writer.committed and await self.storage.index.get_instance(sop_instance_uid) is None:
                await loop.run_in_executor(None, _unlink, writer.path)
            raise

    async def __call__(self, req: StoreRequest) -> int:
        storage = self.storage
        spool = req._spool
        source_ae = req.calling_ae or None
        try:
            if spool is not None:
                if spool.error is not None:
                    raise spool.error
                writer = spool.writer
                if writer is None:  # pragma: no cover - discarded spool
                    raise ServiceError(_CANNOT_UNDERSTAND, "data set was discarded")
                # The commit (rename onto the final path) and the index row
                # belong together: once the commit starts, both run to
                # completion even if this request is cancelled because the
                # peer vanished, as in Storage.store.  Awaiting the commit
                # directly left a renamed but unindexed file when the
                # cancellation came during the commit's directory fsync.
                # The writer is taken off the spool so the service's clean-up
                # (spool.abort) cannot race the worker thread doing the commit.
                spool.writer = None
                task = asyncio.ensure_future(self._commit_and_index(writer, req.sop_instance_uid, source_ae))
                storage._tasks.add(task)  # Storage.close waits for it
                task.add_done_callback(storage._tasks.discard)
                result = await asyncio.shield(task)
            else:
                result = await storage.store(
                    req.sop_class_uid, req.sop_instance_uid, req.transfer_syntax, req.fragments, source_ae
                )
        except ServiceError:
            raise
        except InvalidInstanceError as exc:
            raise ServiceError(_INVALID_INSTANCE, str(exc)[:64]) from None
        except (DatasetDecodeError, InvalidPart10Error) as exc:
            raise ServiceError(_CANNOT_UNDERSTAND, f"cannot decode the data set: {exc}"[:64]) from None
        except ValueError as exc:  # invalid SOP Instance UID
            raise ServiceError(0x0117, str(exc)[:64]) from None
        if result.replaced:
            log.info("replaced instance %s (%d bytes)", result.sop_instance_uid, result.size)
        return 0x0000


def _unlink(path: os.PathLike[str] | str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------------------
# Q/R handlers
# ---------------------------------------------------------------------------


def _find_handler(server: ArchiveServer) -> Any:
    async def handle_find(req: FindRequest) -> Any:
        try:
            result = await server.storage.index.query(
                None, req.identifier, _model(req.model), retrieve_ae=server.ae_title
            )
        except MatchingError as exc:
            raise ServiceError(exc.status, exc.comment[:64]) from None
        status = result.pending_status
        for ds in result:
            yield (status, ds)

    return handle_find


def _get_handler(server: ArchiveServer) -> Any:
    async def handle_get(req: GetRequest) -> list[str]:
        storage = server.storage
        items = await storage.index.instances_for_retrieve(req.level, req.identifier, _model(req.sop_class_uid))
        return [os.fspath(storage.absolute_path(item.rel_path)) for item in items]

    return handle_get


def _move_handler(server: ArchiveServer) -> Any:
    async def handle_move(req: MoveRequest) -> list[MoveInstance]:
        storage = server.storage
        items = await storage.index.instances_for_retrieve(req.level, req.identifier, _model(req.sop_class_uid))
        return [
            MoveInstance(i.sop_class_uid, i.sop_instance_uid, i.transfer_syntax,
                         os.fspath(storage.absolute_path(i.rel_path)))
            for i in items
        ]

    return handle_move


def _read_sr(path: Path) -> Dataset:
    return dcmread(path, force=True)


def _rpq_handler(server: ArchiveServer) -> Any:
    async def handle_rpq(req: RelevantPatientRequest) -> list[Dataset] | None:
        storage = server.storage
        candidates = await storage.index.latest_sr_for_patient(
            req.patient_id, req.issuer_of_patient_id, req.template
        )
        if not candidates:
            return None
        if len(candidates) > 1:
            # Several patients share the PatientID: the library answers C100.
            out = []
            for c in candidates:
                ds = Dataset()
                ds.PatientID = c.patient_id
                ds.IssuerOfPatientID = c.issuer
                out.append(ds)
            return out
        cand = candidates[0]
        if cand.rel_path is None:
            return None  # patient known, no SR with this template: zero matches
        path = storage.absolute_path(cand.rel_path)
        sr = await asyncio.get_running_loop().run_in_executor(None, _read_sr, path)
        answer = Dataset()
        for keyword in _DEMOGRAPHICS:
            if keyword in sr:
                setattr(answer, keyword, sr.data_element(keyword).value)  # type: ignore[union-attr]
        answer.PatientID = cand.patient_id
        obs = sr.get("ObservationDateTime") or (
            f"{sr.get('ContentDate', '')}{sr.get('ContentTime', '')}".strip() or None
        )
        if obs:
            answer.ObservationDateTime = obs
        answer.ValueType = sr.get("ValueType", "CONTAINER")
        if "ConceptNameCodeSequence" in sr:
            answer.ConceptNameCodeSequence = sr.ConceptNameCodeSequence
        if "ContentTemplateSequence" in sr:
            answer.ContentTemplateSequence = sr.ContentTemplateSequence
        answer.ContentSequence = sr.get("ContentSequence", [])
        return [answer]

    return handle_rpq


# ---------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------


async def create_archive_server(
    storage_dir: str | os.PathLike[str],
    ae_title: str = "AIODICOM",
    peers: Mapping[str, tuple[str, int]] | PeerResolver | None = None,
    *,
    fsync: bool = True,
    move_connect_timeout: float = 10.0,
    recover: bool = True,
    shared: bool = False,
    **server_kwargs: Any,
) -> ArchiveServer:
    """Open (creating if needed) the archive at ``storage_dir`` and build its server.

    ``peers`` maps C-MOVE destination AE titles to ``(host, port)`` (or is a
    resolver).  ``server_kwargs`` go to :class:`~aiodicom.aio.server.Server`
    (``strict_called_ae``, ``allowed_calling_aes``, ``max_associations``,
    ``max_pdu_length``, timeouts, ...).  ``fsync=False`` skips fsync (tests
    and scratch data only).  ``recover=False`` skips the start-up recovery
    scan (a worker of ``serve --workers``: the supervisor ran it once, and
    a scan must never run while another process is writing).  ``shared``
    makes same-UID writes exclusive across processes
    (:meth:`Storage.share_between_processes`).  The server is not started: ``await
    server.start(host, port)``; ``await server.close()`` also closes the
    storage.
    """
    storage = await Storage.open(storage_dir, fsync=fsync, recover=False)
    try:
        if shared:
            storage.share_between_processes()
        if recover:
            report = await storage.recover()
            if report.temp_files_removed or report.rows_removed or report.rows_refreshed or report.orphans_indexed:
                log.info("recovery: %s", report)
            for rel in report.unreadable:
                log.warning("recovery: cannot read %s (left alone)", rel)
        server = ArchiveServer(ae_title, contexts={VERIFICATION_SOP_CLASS: DEFAULT_TRANSFER_SYNTAXES}, **server_kwargs)
        server.storage = storage
        serve_store(server, ArchiveStore(storage), sop_classes=STORAGE_SOP_CLASSES,
                    transfer_syntaxes=STORAGE_TRANSFER_SYNTAXES)
        serve_find(server, _find_handler(server), models=("patient", "study"))
        serve_get(
            server,
            _get_handler(server),
            models=(PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet),
            storage_classes=STORAGE_SOP_CLASSES,
        )
        serve_move(
            server,
            _move_handler(server),
            peers if peers is not None else {},
            models=(PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove),
            connect_timeout=move_connect_timeout,
        )
        serve_relevant_patient_info(server, _rpq_handler(server), templates=RPQ_TEMPLATES)
    except BaseException:
        await storage.close()
        raise
    return server
