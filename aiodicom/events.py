"""Observability: a tiny publish/subscribe for association and DIMSE events.

::

    import aiodicom.events as events

    unsubscribe = events.subscribe(print, kinds={events.ASSOCIATION_ACCEPTED})
    events.enable_counters()
    ...
    events.counters()   # {"associations_open": 1, "associations_total": 3, ...}

Zero cost when nobody listens: the hook points in
:mod:`aiodicom.aio.association` are ``if events.enabled:`` -- one module
attribute test -- and everything else happens only when it is true.
``enabled`` is true while there is a subscriber, while counters are enabled,
or while the ``aiodicom.trace`` logger is enabled for :data:`TRACE` (checked
once per association), which then logs one line per DIMSE message.

Callbacks run synchronously on the event loop inside the protocol code: keep
them short and non-blocking; an exception in one is logged and ignored.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from .aio.association import Association
    from .dimse.commands import Command

__all__ = [
    "TRACE",
    "Event",
    "ASSOCIATION_REQUESTED",
    "ASSOCIATION_ACCEPTED",
    "ASSOCIATION_REJECTED",
    "ASSOCIATION_RELEASED",
    "ASSOCIATION_ABORTED",
    "ASSOCIATION_CLOSED",
    "MESSAGE_SENT",
    "MESSAGE_RECEIVED",
    "SUBOPERATION_PROGRESS",
    "ALL_KINDS",
    "subscribe",
    "enable_counters",
    "disable_counters",
    "counters",
    "reset_counters",
]

#: Protocol-trace logging level (below DEBUG): one line per DIMSE message.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

log = logging.getLogger("aiodicom.events")
trace_log = logging.getLogger("aiodicom.trace")

ASSOCIATION_REQUESTED = "association.requested"
ASSOCIATION_ACCEPTED = "association.accepted"
ASSOCIATION_REJECTED = "association.rejected"
ASSOCIATION_RELEASED = "association.released"
ASSOCIATION_ABORTED = "association.aborted"
ASSOCIATION_CLOSED = "association.closed"
MESSAGE_SENT = "dimse.sent"
MESSAGE_RECEIVED = "dimse.received"
SUBOPERATION_PROGRESS = "suboperation.progress"

ALL_KINDS = frozenset(
    {
        ASSOCIATION_REQUESTED,
        ASSOCIATION_ACCEPTED,
        ASSOCIATION_REJECTED,
        ASSOCIATION_RELEASED,
        ASSOCIATION_ABORTED,
        ASSOCIATION_CLOSED,
        MESSAGE_SENT,
        MESSAGE_RECEIVED,
        SUBOPERATION_PROGRESS,
    }
)

_COMMAND_NAMES = {
    0x0001: "C-STORE",
    0x0010: "C-GET",
    0x0020: "C-FIND",
    0x0021: "C-MOVE",
    0x0030: "C-ECHO",
    0x0FFF: "C-CANCEL",
    0x0100: "N-EVENT-REPORT",
    0x0110: "N-GET",
    0x0120: "N-SET",
    0x0130: "N-ACTION",
    0x0140: "N-CREATE",
    0x0150: "N-DELETE",
}


def command_name(command_field: int) -> str:
    """``"C-FIND-RQ"``, ``"C-FIND-RSP"``, ... for a command field."""
    base = _COMMAND_NAMES.get(command_field & 0x7FFF, f"0x{command_field & 0x7FFF:04X}")
    return base + ("-RSP" if command_field & 0x8000 else "-RQ")


@dataclass(slots=True)
class Event:
    """One event.

    ``assoc`` is the association it happened on.  ``data`` holds the details:
    for messages ``direction`` ("sent"/"received"), ``command`` (e.g.
    "C-FIND-RSP"), ``command_field``, ``message_id``,
    ``message_id_being_responded_to``, ``status``, ``context_id``, ``bytes``;
    for sub-operation progress ``remaining``, ``completed``, ``failed``,
    ``warning``; for rejections/aborts ``result``/``source``/``reason``.
    """

    kind: str
    assoc: Association | None
    data: dict[str, Any] = field(default_factory=dict)


Callback = Callable[[Event], Any]

#: The hot-path flag: true when anything listens.
enabled = False
_subscribers: tuple[tuple[Callback, frozenset[str] | None], ...] = ()
_counting = False
_trace = False


def _refresh() -> None:
    global enabled
    enabled = bool(_subscribers) or _counting or _trace


def check_trace() -> None:
    """Re-read whether TRACE logging is on (called once per new association)."""
    global _trace
    on = trace_log.isEnabledFor(TRACE)
    if on != _trace:
        _trace = on
        _refresh()


def subscribe(callback: Callback, kinds: Iterable[str] | None = None) -> Callable[[], None]:
    """Call ``callback(event)`` for events of ``kinds`` (default all); returns ``unsubscribe``."""
    global _subscribers
    wanted = frozenset(kinds) if kinds is not None else None
    if wanted is not None and not wanted <= ALL_KINDS:
        raise ValueError(f"unknown event kinds: {sorted(wanted - ALL_KINDS)}")
    entry = (callback, wanted)
    _subscribers = _subscribers + (entry,)
    _refresh()

    def unsubscribe() -> None:
        global _subscribers
        _subscribers = tuple(e for e in _subscribers if e is not entry)
        _refresh()

    return unsubscribe


def _publish(kind: str, assoc: Association | None, data: dict[str, Any]) -> None:
    if _counting:
        _count(kind, assoc, data)
    if not _subscribers:
        return
    ev: Event | None = None
    for cb, kinds in _subscribers:
        if kinds is not None and kind not in kinds:
            continue
        if ev is None:
            ev = Event(kind, assoc, data)
        try:
            cb(ev)
        except Exception:
            log.exception("event subscriber %r failed", cb)


# ------------------------------------------------------- called by the hooks


def association(assoc: Association, kind: str, **data: Any) -> None:
    """An association-level event (only called when :data:`enabled`)."""
    if kind == ASSOCIATION_CLOSED:
        if assoc.abort_info is None and assoc.accept is not None:
            _publish(ASSOCIATION_RELEASED, assoc, {})
        data.setdefault("aborted", assoc.abort_info is not None)
        data.setdefault("bytes_in", assoc.bytes_received)
        data.setdefault("bytes_out", assoc.bytes_sent)
    if _trace:
        trace_log.log(TRACE, "%s %s->%s %s", kind, assoc.calling_ae, assoc.called_ae, data or "")
    _publish(kind, assoc, data)


def message(assoc: Association, direction: str, context_id: int, command: Command, nbytes: int) -> None:
    """A DIMSE message sent or received (only called when :data:`enabled`)."""
    cf = command.command_field
    data = {
        "direction": direction,
        "command": command_name(cf),
        "command_field": cf,
        "message_id": command.message_id,
        "message_id_being_responded_to": command.message_id_being_responded_to,
        "status": command.status,
        "context_id": context_id,
        "bytes": nbytes,
    }
    if _trace:
        trace_log.log(
            TRACE,
            "%s %s ctx=%d mid=%s rsp_to=%s status=%s %d bytes",
            direction,
            data["command"],
            context_id,
            command.message_id,
            command.message_id_being_responded_to,
            f"0x{command.status:04X}" if command.status is not None else None,
            nbytes,
        )
    _publish(MESSAGE_SENT if direction == "sent" else MESSAGE_RECEIVED, assoc, data)
    if (
        cf & 0x8000
        and command.status in (0xFF00, 0xFF01)
        and (command.remaining is not None or command.completed is not None)
    ):
        _publish(
            SUBOPERATION_PROGRESS,
            assoc,
            {
                "direction": direction,
                "command": data["command"],
                "message_id_being_responded_to": command.message_id_being_responded_to,
                "remaining": command.remaining,
                "completed": command.completed,
                "failed": command.failed,
                "warning": command.warning,
            },
        )


# ------------------------------------------------------------------ counters

_open: weakref.WeakSet[Association] = weakref.WeakSet()
_totals: dict[str, Any] = {}
_baseline: dict[int, tuple[int, int]] = {}


def reset_counters() -> None:
    """Set every counter to zero (open associations stay counted as open)."""
    _totals.clear()
    _totals.update(associations_total=0, bytes_in=0, bytes_out=0, operations={}, rejected=0, aborted=0)
    _baseline.clear()  # bytes of open associations count from now on
    _baseline.update({id(a): (a.bytes_received, a.bytes_sent) for a in _open})


reset_counters()


def enable_counters() -> None:
    """Start maintaining :func:`counters` (adds the cost of one call per message)."""
    global _counting
    _counting = True
    _refresh()


def disable_counters() -> None:
    """Stop maintaining counters (their values are kept)."""
    global _counting
    _counting = False
    _refresh()


def _count(kind: str, assoc: Association | None, data: dict[str, Any]) -> None:
    if assoc is None:
        return
    if kind == ASSOCIATION_ACCEPTED:
        _open.add(assoc)
        _totals["associations_total"] += 1
    elif kind == ASSOCIATION_REJECTED:
        _totals["rejected"] += 1
    elif kind == ASSOCIATION_ABORTED:
        _totals["aborted"] += 1
    elif kind == ASSOCIATION_CLOSED:
        if assoc in _open:
            _open.discard(assoc)
        base_in, base_out = _baseline.pop(id(assoc), (0, 0))
        _totals["bytes_in"] += assoc.bytes_received - base_in
        _totals["bytes_out"] += assoc.bytes_sent - base_out
    elif kind == MESSAGE_RECEIVED or kind == MESSAGE_SENT:
        cf = data["command_field"]
        status = data["status"]
        if cf & 0x8000 and status is not None and status not in (0xFF00, 0xFF01):
            from .dimse.status import category

            ops = _totals["operations"]
            key = f"{_COMMAND_NAMES.get(cf & 0x7FFF, hex(cf & 0x7FFF))}"
            per = ops.setdefault(key, {})
            cat = category(status).value
            per[cat] = per.get(cat, 0) + 1


def counters() -> dict[str, Any]:
    """A snapshot: associations_open, associations_total, rejected, aborted,
    operations ({"C-FIND": {"Success": n, "Cancel": m, ...}} counted from
    final responses sent or received), bytes_in, bytes_out (including
    open associations).  Maintained only while :func:`enable_counters` is on.
    """
    live_in = live_out = 0
    for a in list(_open):
        base_in, base_out = _baseline.get(id(a), (0, 0))
        live_in += a.bytes_received - base_in
        live_out += a.bytes_sent - base_out
    return {
        "associations_open": len(_open),
        "associations_total": _totals["associations_total"],
        "rejected": _totals["rejected"],
        "aborted": _totals["aborted"],
        "operations": {k: dict(v) for k, v in _totals["operations"].items()},
        "bytes_in": _totals["bytes_in"] + live_in,
        "bytes_out": _totals["bytes_out"] + live_out,
    }
