"""What C-GET (:mod:`.get`) and C-MOVE (:mod:`.move`) have in common.

Both are Query/Retrieve retrieve services (PS3.4 C.4.2, C.4.3): the SCU
sends an identifier (QueryRetrieveLevel plus unique keys), the SCP performs
one C-STORE sub-operation per matching instance and answers with pending
responses carrying the four sub-operation counters and a final response
(0000 / B000 / A702 / FE00, FailedSOPInstanceUIDList when some failed).
They differ only in where the sub-operations go: a C-GET sends them back on
the same association, a C-MOVE on an association it opens to the move
destination.

SCU: :class:`RetrieveOperation` (sending the request, reading responses into
:class:`RetrieveProgress` / :class:`RetrieveResult`).
SCP: :func:`accept_request` (SOP class and identifier checks, A900),
:class:`RetrieveRequest` (what a handler sees) and :class:`SubOperations`
(counters, pending and final responses).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

from pydicom.dataset import Dataset

from ..aio.errors import NoAcceptedContext
from ..dataset import DatasetDecodeError, decode_identifier, encode_identifier
from ..dimse.commands import PRIORITY_MEDIUM, Command, response_to
from ..dimse.fragments import Message
from ..dimse.status import Category, Status, category
from ._request import RequestInfo
from ..uids import (
    CompositeInstanceRetrieveWithoutBulkDataGet,
    CompositeInstanceRootRetrieveGet,
    CompositeInstanceRootRetrieveMove,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    PatientStudyOnlyQueryRetrieveInformationModelGet,
    PatientStudyOnlyQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

if TYPE_CHECKING:
    from ..aio.association import Association
    from ..dataset import Buffer
    from ..ul.negotiation import AcceptedContext

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
SUBOPS_FAILED = 0xA702
IDENTIFIER_MISMATCH = 0xA900
SUBOPS_WARNING = 0xB000
UNABLE = 0xC000
SOP_CLASS_NOT_SUPPORTED = 0x0122

TAG_QR_LEVEL = 0x00080052
TAG_FAILED_UIDS = 0x00080058

#: Unique key of each Q/R level (facts sheet 4.2).
LEVEL_KEYS: dict[str, tuple[int, str]] = {
    "PATIENT": (0x00100020, "PatientID"),
    "STUDY": (0x0020000D, "StudyInstanceUID"),
    "SERIES": (0x0020000E, "SeriesInstanceUID"),
    "IMAGE": (0x00080018, "SOPInstanceUID"),
}
ALL_LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_STUDY_DOWN = ("STUDY", "SERIES", "IMAGE")
#: Levels of each GET and MOVE information model, top down (others: all four).
MODEL_LEVELS: dict[str, tuple[str, ...]] = {
    PatientRootQueryRetrieveInformationModelGet: ALL_LEVELS,
    StudyRootQueryRetrieveInformationModelGet: _STUDY_DOWN,
    PatientStudyOnlyQueryRetrieveInformationModelGet: ("PATIENT", "STUDY"),
    CompositeInstanceRootRetrieveGet: _STUDY_DOWN,
    CompositeInstanceRetrieveWithoutBulkDataGet: _STUDY_DOWN,
    PatientRootQueryRetrieveInformationModelMove: ALL_LEVELS,
    StudyRootQueryRetrieveInformationModelMove: _STUDY_DOWN,
    PatientStudyOnlyQueryRetrieveInformationModelMove: ("PATIENT", "STUDY"),
    CompositeInstanceRootRetrieveMove: _STUDY_DOWN,
}


def model_uid(model: str, models: Mapping[str, str], service: str) -> str:
    """The SOP class UID of ``model``: a short name of ``models`` or a UID."""
    uid = models.get(model.lower(), model)
    if not uid or not all(c.isdigit() or c == "." for c in uid):
        raise ValueError(f"unknown {service} information model {model!r}")
    return uid


def identifier_dataset(identifier: Dataset | Mapping[str, Any]) -> Dataset:
    """``identifier`` as a Dataset (a mapping is keywords to values)."""
    if isinstance(identifier, Dataset):
        return identifier
    ds = Dataset()
    for key, value in identifier.items():
        setattr(ds, key, value)
    return ds


#: Why a Dataset handed out by a handler cannot be sent.
NO_SOP_UIDS = "data set has no SOPClassUID/SOPInstanceUID"


def dataset_uids(ds: Dataset) -> tuple[str, str, str | None] | None:
    """(SOP Class UID, SOP Instance UID, File Meta transfer syntax or None) of ``ds``.

    None when a SOP UID is missing (see :data:`NO_SOP_UIDS`).
    """
    try:
        sop_class = str(ds.SOPClassUID).strip("\x00 ")
        sop_instance = str(ds.SOPInstanceUID).strip("\x00 ")
    except AttributeError:
        return None
    meta: Any = getattr(ds, "file_meta", None)
    ts = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else None
    return sop_class, sop_instance, ts


def values(ds: Dataset, tag: int) -> list[str]:
    """The values of ``tag`` as stripped strings (empty list when absent/empty)."""
    if tag not in ds:
        return []
    value = ds[tag].value
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        items: list[object] = [value]
    else:
        try:
            items = list(value)
        except TypeError:
            items = [value]
    out = []
    for item in items:
        text = item.decode("ascii", "replace") if isinstance(item, bytes) else str(item)
        text = text.strip("\x00 ")
        if text:
            out.append(text)
    return out


# ============================================================================
# SCU
# ============================================================================


@dataclass
class RetrieveProgress:
    """A pending response: the SCP's sub-operation counters so far."""

    status: Status
    remaining: int | None
    completed: int | None
    failed: int | None
    warning: int | None

    kind = "progress"


@dataclass
class RetrieveResult:
    """The final response (the fields C-GET and C-MOVE results share)."""

    status: Status
    remaining: int | None = None
    completed: int | None = None
    failed: int | None = None
    warning: int | None = None
    #: FailedSOPInstanceUIDList (0008,0058) of the response identifier.
    failed_sop_instance_uids: list[str] = field(default_factory=list)
    error_comment: str | None = None

    kind = "result"

    @property
    def category(self) -> Category:
        """The status class of :attr:`status`."""
        return category(self.status)

    @property
    def ok(self) -> bool:
        """True when every sub-operation succeeded (status 0x0000)."""
        return self.status == SUCCESS


#: Cleanup tasks of abandoned operations, referenced until they are done.
_CLEANUPS: set[asyncio.Future[None]] = set()


def keep_until_done(task: asyncio.Future[None]) -> None:
    """Hold a reference to a cleanup ``task`` (the loop keeps only weak ones)."""
    _CLEANUPS.add(task)
    task.add_done_callback(_CLEANUPS.discard)


P = TypeVar("P", bound=RetrieveProgress)
R = TypeVar("R", bound=RetrieveResult)


class RetrieveOperation(Generic[P, R]):
    """The request/response side of one C-GET or C-MOVE (SCU).

    Subclasses set the class attributes, start with :meth:`_accepted_context`
    and :meth:`_send_request`, turn responses into items with
    :meth:`_on_response` and detach with :meth:`_finish`.
    """

    #: ``"C-GET"`` / ``"C-MOVE"``, for messages.
    service: ClassVar[str]
    #: CommandField of the request.
    command_field: ClassVar[int]
    _log: ClassVar[logging.Logger]
    _progress_type: type[P]
    _result_type: type[R]

    def __init__(
        self,
        assoc: Association,
        identifier: Dataset | Mapping[str, Any],
        sop_class_uid: str,
        priority: int,
        timeout: float | None,
    ) -> None:
        self.assoc = assoc
        self.identifier = identifier_dataset(identifier)
        self.sop_class_uid = sop_class_uid
        self.priority = priority
        #: Seconds to wait for each message from the peer (-1: the
        #: association's DIMSE timeout); sub-operations can be slow, so this
        #: applies per message, not to the whole operation.
        self.timeout = assoc.dimse_timeout if timeout == -1.0 else timeout
        #: The final result, once received.
        self.result: R | None = None
        self.message_id: int | None = None
        self.context_id: int | None = None
        self._op: Any = None  # the association's operation record
        self._started = False
        self._finished = False  # final response received or operation failed

    def __aiter__(self) -> Self:
        return self

    async def __aenter__(self) -> Self:
        return self

    def _accepted_context(self) -> AcceptedContext:
        ctx = self.assoc.find_context(self.sop_class_uid)
        if ctx is None:
            raise NoAcceptedContext(f"{self.service} SOP class {self.sop_class_uid} was not accepted")
        return ctx

    async def _send_request(self, ctx: AcceptedContext, payload: Buffer, **fields: Any) -> None:
        """Send the request (extra command ``fields``) on ``ctx``; start collecting responses."""
        assoc = self.assoc
        mid = assoc.next_message_id()
        cmd = Command(
            self.command_field,
            message_id=mid,
            affected_sop_class_uid=self.sop_class_uid,
            priority=self.priority,
            **fields,
        )
        self.message_id, self.context_id = mid, ctx.context_id
        self._op = assoc.open_operation(ctx.context_id, mid)
        self._attach()
        self._started = True
        try:
            await assoc.send(ctx.context_id, cmd, [payload])
        except BaseException:
            self._finish()
            raise

    def _abort_on_timeout(self, awaited: str) -> None:
        """Nothing came from the peer in time: the association is in an unknown state, abort it."""
        self._log.warning("%s: no %s within %s s, aborting", self.service, awaited, self.timeout)
        self._finish()
        self.assoc.abort()

    def _attach(self) -> None:
        """Hook: the operation record is open, the request not yet sent."""

    def _detach(self) -> None:
        """Hook: the operation is over (called once)."""

    def _result_details(self, cmd: Command, identifier: Dataset | None) -> dict[str, Any]:
        """The subclass's own fields of the result, with the response ``identifier``."""
        raise NotImplementedError

    def _on_response(self, msg: Message) -> P | R:
        cmd = msg.command
        status = Status(cmd.status if cmd.status is not None else UNABLE)
        if status.category == Category.PENDING:
            return self._progress_type(status, cmd.remaining, cmd.completed, cmd.failed, cmd.warning)
        identifier: Dataset | None = None
        failed_uids: list[str] = []
        if msg.dataset is not None and msg.dataset_length > 0 and self.context_id is not None:
            ctx = self.assoc.contexts.get(self.context_id)
            try:
                identifier = decode_identifier(msg.dataset, ctx.transfer_syntax if ctx else ExplicitVRLittleEndian)
                failed_uids = values(identifier, TAG_FAILED_UIDS)
            except (DatasetDecodeError, ValueError) as exc:
                self._log.warning("%s: cannot decode the final response identifier: %s", self.service, exc)
        self.result = self._result_type(
            status=status,
            remaining=cmd.remaining,
            completed=cmd.completed,
            failed=cmd.failed,
            warning=cmd.warning,
            failed_sop_instance_uids=failed_uids,
            error_comment=cmd.error_comment,
            **self._result_details(cmd, identifier),
        )
        self._finish()
        return self.result

    def _finish(self) -> None:
        """Detach from the association (idempotent)."""
        if self._finished:
            return
        self._finished = True
        if self.message_id is not None:
            self.assoc.close_operation(self.message_id)
        self._detach()


# ============================================================================
# SCP
# ============================================================================


class IdentifierError(Exception):
    """The request identifier is unusable: answered A900 with ``tag`` as OffendingElement."""

    def __init__(self, comment: str, tag: int | None = None) -> None:
        super().__init__(comment)
        self.tag = tag


def check_identifier(ds: Dataset, sop_class_uid: str, strict: bool, service: str) -> tuple[str, dict[str, list[str]]]:
    """(level, unique key values by level) or :class:`IdentifierError`."""
    try:
        levels = values(ds, TAG_QR_LEVEL)
    except Exception:  # noqa: BLE001 - any failure to read the identifier is A900
        raise IdentifierError("QueryRetrieveLevel (0008,0052) cannot be read", TAG_QR_LEVEL) from None
    if not levels:
        raise IdentifierError("QueryRetrieveLevel (0008,0052) is missing", TAG_QR_LEVEL)
    level = levels[0].upper()
    model_levels = MODEL_LEVELS.get(sop_class_uid, ALL_LEVELS)
    if len(levels) != 1 or level not in model_levels:
        raise IdentifierError(f"QueryRetrieveLevel {levels[0]!r} is not valid for this model", TAG_QR_LEVEL)
    keys: dict[str, list[str]] = {}
    below = model_levels.index(level)
    for i, lvl in enumerate(model_levels[: below + 1]):
        tag, keyword = LEVEL_KEYS[lvl]
        try:
            found = values(ds, tag)
        except Exception:  # noqa: BLE001 - idem
            raise IdentifierError(f"{keyword} cannot be read", tag) from None
        if not found:
            if strict or i == below:
                raise IdentifierError(f"unique key {keyword} is missing for a {level} level {service}", tag)
            continue
        if len(found) > 1 and (i < below or lvl == "PATIENT") and strict:
            raise IdentifierError(f"{keyword} must have a single value above the retrieve level", tag)
        keys[lvl] = found
    return level, keys


H = TypeVar("H")


async def accept_request(
    assoc: Association, msg: Message, handlers: Mapping[str, H], strict: bool, service: str
) -> tuple[H, Dataset, str, str, dict[str, list[str]]] | None:
    """Check a C-GET/C-MOVE-RQ: ``(handler, identifier, SOP class, level, keys)``.

    None when it was answered with a failure: 0122 for a SOP class without a
    handler or not matching its context, A900 for an unusable identifier.
    """
    cmd = msg.command
    ctx = assoc.contexts.get(msg.context_id)
    sop_class = cmd.affected_sop_class_uid or ""
    handler = handlers.get(sop_class)
    if ctx is None or ctx.abstract_syntax != sop_class or handler is None:
        rsp = response_to(cmd, SOP_CLASS_NOT_SUPPORTED)
        rsp.error_comment = f"{service} SOP class not supported on this presentation context"
        await assoc.send(msg.context_id, rsp)
        return None
    try:
        identifier = decode_identifier(msg.dataset or [], ctx.transfer_syntax)
        level, keys = check_identifier(identifier, sop_class, strict, service)
    except (IdentifierError, DatasetDecodeError) as exc:
        rsp = response_to(cmd, IDENTIFIER_MISMATCH)
        rsp.error_comment = str(exc)[:64]
        if isinstance(exc, IdentifierError) and exc.tag is not None:
            rsp.offending_element = [exc.tag]
        await assoc.send(msg.context_id, rsp)
        return None
    return handler, identifier, sop_class, level, keys


@dataclass
class RetrieveRequest(RequestInfo):
    """A validated retrieve request, as a handler sees it."""

    assoc: Association
    message: Message
    identifier: Dataset
    #: The GET/MOVE SOP class (information model) UID.
    sop_class_uid: str
    #: QueryRetrieveLevel, upper case.
    level: str
    #: Unique key values by level (``{"PATIENT": [...], "STUDY": [...]}``).
    keys: dict[str, list[str]]

    @property
    def patient_id(self) -> str | None:
        """PatientID, if given."""
        found = self.keys.get("PATIENT")
        return found[0] if found else None

    @property
    def study_instance_uids(self) -> list[str]:
        """StudyInstanceUID values (a list at STUDY level)."""
        return self.keys.get("STUDY", [])

    @property
    def series_instance_uids(self) -> list[str]:
        """SeriesInstanceUID values."""
        return self.keys.get("SERIES", [])

    @property
    def sop_instance_uids(self) -> list[str]:
        """SOPInstanceUID values (IMAGE level)."""
        return self.keys.get("IMAGE", [])

    @property
    def is_cancelled(self) -> bool:
        """Whether the requestor sent C-CANCEL for this request."""
        return self.message_id in self.assoc.cancelled_requests


class SubOperations:
    """The sub-operation counters of one retrieve (SCP) and the responses built from them."""

    __slots__ = ("completed", "failed", "warning", "failed_uids")

    def __init__(self) -> None:
        self.completed = 0
        self.failed = 0
        self.warning = 0
        #: SOP Instance UIDs of the failed sub-operations.
        self.failed_uids: list[str] = []

    def count(self, status: int, sop_instance_uid: str | None) -> None:
        """Count one sub-operation answered with C-STORE-RSP ``status``."""
        cat = category(status)
        if cat == Category.SUCCESS:
            self.completed += 1
        elif cat == Category.WARNING:
            self.warning += 1
        else:
            self.failed += 1
            if sop_instance_uid is not None:
                self.failed_uids.append(sop_instance_uid)

    def fail(self, sop_instance_uid: str | None) -> None:
        """Count one failed sub-operation (listed when its UID is known)."""
        self.failed += 1
        if sop_instance_uid is not None:
            self.failed_uids.append(sop_instance_uid)

    def fail_all(self, sop_instance_uids: list[str]) -> None:
        """Count a failed sub-operation for each UID."""
        self.failed += len(sop_instance_uids)
        self.failed_uids.extend(sop_instance_uids)

    def remaining(self, total: int | None) -> int | None:
        """Sub-operations not performed yet out of ``total`` (None: unknown)."""
        if total is None:
            return None
        return max(total - self.completed - self.failed - self.warning, 0)

    def pending(self, request: Command, remaining: int | None) -> Command:
        """A pending (FF00) response to ``request`` with the counters."""
        rsp = response_to(request, PENDING)
        rsp.remaining, rsp.completed = remaining, self.completed
        rsp.failed, rsp.warning = self.failed, self.warning
        return rsp

    def final_status(self, cancelled: bool) -> int:
        """FE00 when cancelled, else 0000, B000 (some failed or warned) or A702 (all failed)."""
        if cancelled:
            return CANCEL
        if self.failed or self.warning:
            return SUBOPS_FAILED if self.completed == 0 and self.warning == 0 else SUBOPS_WARNING
        return SUCCESS

    async def send_final(
        self,
        assoc: Association,
        msg: Message,
        status: int,
        *,
        remaining: int | None = None,
        comment: str | None = None,
    ) -> None:
        """Answer the request ``msg`` with its final response.

        The counters, ``remaining`` (given for a cancelled retrieve) and, unless
        ``status`` is success, ``comment`` and a FailedSOPInstanceUIDList identifier.
        """
        rsp = response_to(msg.command, status)
        rsp.completed, rsp.failed, rsp.warning = self.completed, self.failed, self.warning
        rsp.remaining = remaining
        payload: list[Buffer] | None = None
        if status != SUCCESS:
            rsp.error_comment = comment[:64] if comment else None
            failed_uids = self.failed_uids
            if failed_uids:
                ident = Dataset()
                ident.FailedSOPInstanceUIDList = failed_uids if len(failed_uids) > 1 else failed_uids[0]
                ctx = assoc.contexts.get(msg.context_id)
                payload = [encode_identifier(ident, ctx.transfer_syntax if ctx else ImplicitVRLittleEndian)]
        await assoc.send(msg.context_id, rsp, payload)
