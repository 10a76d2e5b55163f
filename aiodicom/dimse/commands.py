"""DIMSE command-set codec (group 0000, always Implicit VR Little Endian).

PS3.7 6.3 / 9.3 / E.1: a command set is a run of group-0000 data elements in
ascending tag order, each ``tag group u16 | tag element u16 | length u32 |
value`` (little-endian, implicit VR), led by CommandGroupLength (0000,0000)
whose UL value is the number of bytes that follow it.  The command set is
Implicit VR Little Endian whatever transfer syntax the presentation context
negotiated.

This module is on the per-message hot path, so it is hand-written with
module-level :class:`struct.Struct` objects and does not use pydicom.

Decoding untrusted bytes raises only :class:`aiodicom.ul.errors.ProtocolError`
(A-ABORT source 2, reason 6).  Encoding a bad local :class:`Command` raises
:class:`ValueError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from aiodicom.ul.errors import ProtocolError

__all__ = [
    "C_STORE_RQ",
    "C_STORE_RSP",
    "C_GET_RQ",
    "C_GET_RSP",
    "C_FIND_RQ",
    "C_FIND_RSP",
    "C_MOVE_RQ",
    "C_MOVE_RSP",
    "C_ECHO_RQ",
    "C_ECHO_RSP",
    "C_CANCEL_RQ",
    "PRIORITY_MEDIUM",
    "PRIORITY_HIGH",
    "PRIORITY_LOW",
    "NO_DATASET",
    "DATASET_PRESENT",
    "VERIFICATION_SOP_CLASS",
    "Command",
    "encode_command",
    "decode_command",
    "echo_rq",
    "echo_rsp",
    "cancel_rq",
    "response_to",
]

# --- Command Field values (PS3.7 Table E.1-1; facts sheet 3.2) -------------
C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_GET_RQ = 0x0010
C_GET_RSP = 0x8010
C_FIND_RQ = 0x0020
C_FIND_RSP = 0x8020
C_MOVE_RQ = 0x0021
C_MOVE_RSP = 0x8021
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
C_CANCEL_RQ = 0x0FFF

# --- Priority (0000,0700) ----------------------------------------------------
PRIORITY_MEDIUM = 0x0000
PRIORITY_HIGH = 0x0001
PRIORITY_LOW = 0x0002

# --- CommandDataSetType (0000,0800) -----------------------------------------
#: "No data set".  Any other value means a data set follows (PS3.7 E.1-1);
#: receivers must test only for ``!= NO_DATASET``.
NO_DATASET = 0x0101
#: The value we send when a data set follows (as pynetdicom does).
DATASET_PRESENT = 0x0001

#: Verification SOP Class, the default for :func:`echo_rq`.
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"

_RESPONSE_BIT = 0x8000

# --- Element layout ----------------------------------------------------------
_HDR = struct.Struct("<HHI")  # group, element, value length
_US_EL = struct.Struct("<HHIH")  # a whole US element (length 2)
_UL_EL = struct.Struct("<HHII")  # a whole UL element (length 4)
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_AT_ITEM = struct.Struct("<HH")  # one AT value: group, element

_UNDEFINED_LENGTH = 0xFFFFFFFF

# Element numbers (group 0000) of everything we model.
_GROUP_LENGTH = 0x0000
_AFFECTED_SOP_CLASS = 0x0002
_REQUESTED_SOP_CLASS = 0x0003
_COMMAND_FIELD = 0x0100
_MESSAGE_ID = 0x0110
_MESSAGE_ID_RESPONDED = 0x0120
_MOVE_DESTINATION = 0x0600
_PRIORITY = 0x0700
_DATASET_TYPE = 0x0800
_STATUS = 0x0900
_OFFENDING_ELEMENT = 0x0901
_ERROR_COMMENT = 0x0902
_ERROR_ID = 0x0903
_AFFECTED_SOP_INSTANCE = 0x1000
_REQUESTED_SOP_INSTANCE = 0x1001
_REMAINING = 0x1020
_COMPLETED = 0x1021
_FAILED = 0x1022
_WARNING = 0x1023
_MOVE_ORIGINATOR_AET = 0x1030
_MOVE_ORIGINATOR_MSG_ID = 0x1031

# Value kinds.
_K_UI = 0
_K_US = 1
_K_AE = 2
_K_LO = 3
_K_AT = 4

# (element, attribute, kind) in ascending element order.  CommandField and
# CommandDataSetType are handled specially (always present).
_FIELDS: tuple[tuple[int, str, int], ...] = (
    (_AFFECTED_SOP_CLASS, "affected_sop_class_uid", _K_UI),
    (_REQUESTED_SOP_CLASS, "requested_sop_class_uid", _K_UI),
    (_COMMAND_FIELD, "command_field", _K_US),
    (_MESSAGE_ID, "message_id", _K_US),
    (_MESSAGE_ID_RESPONDED, "message_id_being_responded_to", _K_US),
    (_MOVE_DESTINATION, "move_destination", _K_AE),
    (_PRIORITY, "priority", _K_US),
    (_DATASET_TYPE, "", _K_US),  # placeholder: derived from has_dataset
    (_STATUS, "status", _K_US),
    (_OFFENDING_ELEMENT, "offending_element", _K_AT),
    (_ERROR_COMMENT, "error_comment", _K_LO),
    (_ERROR_ID, "error_id", _K_US),
    (_AFFECTED_SOP_INSTANCE, "affected_sop_instance_uid", _K_UI),
    (_REQUESTED_SOP_INSTANCE, "requested_sop_instance_uid", _K_UI),
    (_REMAINING, "remaining", _K_US),
    (_COMPLETED, "completed", _K_US),
    (_FAILED, "failed", _K_US),
    (_WARNING, "warning", _K_US),
    (_MOVE_ORIGINATOR_AET, "move_originator_aet", _K_AE),
    (_MOVE_ORIGINATOR_MSG_ID, "move_originator_message_id", _K_US),
)

# element -> (attribute, kind) for the decoder.
_BY_ELEMENT: dict[int, tuple[str, int]] = {
    elem: (attr, kind) for elem, attr, kind in _FIELDS if attr
}
_RESERVED_ELEMENTS = frozenset(_BY_ELEMENT) | {_GROUP_LENGTH, _DATASET_TYPE}

_AE_MAX = 16  # PS3.5 Table 6.2-1: AE is at most 16 characters
_LO_MAX = 64  # ... and LO at most 64


@dataclass(slots=True)
class Command:
    """One DIMSE command set (group 0000), decoded.

    Field names follow the PS3.7 keywords.  ``None`` means "element absent".
    ``offending_element`` holds tags as 32-bit ints (``group << 16 | elem``).
    ``remaining``/``completed``/``failed``/``warning`` are the four Number of
    ... Suboperations elements (0000,1020-1023).  ``has_dataset`` mirrors
    CommandDataSetType (0000,0800): ``False`` iff it is 0x0101.

    ``extra`` keeps the raw value bytes of any other group-0000 element
    (N-service fields such as EventTypeID, retired elements), keyed by tag,
    so that they round-trip through :func:`decode_command` and
    :func:`encode_command`.
    """

    command_field: int
    message_id: int | None = None
    message_id_being_responded_to: int | None = None
    affected_sop_class_uid: str | None = None
    requested_sop_class_uid: str | None = None
    affected_sop_instance_uid: str | None = None
    requested_sop_instance_uid: str | None = None
    priority: int | None = None
    status: int | None = None
    offending_element: list[int] | None = None
    error_comment: str | None = None
    error_id: int | None = None
    move_destination: str | None = None
    remaining: int | None = None
    completed: int | None = None
    failed: int | None = None
    warning: int | None = None
    move_originator_aet: str | None = None
    move_originator_message_id: int | None = None
    has_dataset: bool = False
    extra: dict[int, bytes] = field(default_factory=dict)

    @property
    def is_response(self) -> bool:
        """True for a response command field (bit 15 set, PS3.7 E.1-1)."""
        return bool(self.command_field & _RESPONSE_BIT)

    @property
    def is_request(self) -> bool:
        """True for a request command field (including C-CANCEL-RQ)."""
        return not self.command_field & _RESPONSE_BIT


# --- Encoding ----------------------------------------------------------------


def _enc_string(elem: int, value: str, kind: int) -> bytes:
    if kind == _K_UI:
        try:
            raw = value.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"(0000,{elem:04X}) UID is not ASCII: {value!r}") from None
        if len(raw) & 1:
            raw += b"\x00"  # PS3.5 6.2: UI is padded with a single NUL
    else:
        # AE and LO use the default character repertoire; the command set
        # has no Specific Character Set.  Characters outside Latin-1 are
        # replaced rather than failing a response over an error comment.
        raw = value.encode("latin-1", "replace")
        if kind == _K_AE:
            if len(raw) > _AE_MAX:
                raise ValueError(f"(0000,{elem:04X}) AE title longer than 16: {value!r}")
        elif len(raw) > _LO_MAX:
            raw = raw[:_LO_MAX]  # LO is at most 64 characters
        if len(raw) & 1:
            raw += b" "
    return _HDR.pack(0, elem, len(raw)) + raw


def _enc_at(elem: int, tags: list[int]) -> bytes:
    parts = [_HDR.pack(0, elem, 4 * len(tags))]
    for tag in tags:
        if not 0 <= tag <= 0xFFFFFFFF:
            raise ValueError(f"(0000,{elem:04X}) tag out of range: {tag!r}")
        parts.append(_AT_ITEM.pack(tag >> 16, tag & 0xFFFF))
    return b"".join(parts)


def encode_command(cmd: Command) -> bytes:
    """Encode *cmd* as an Implicit VR Little Endian group-0000 command set.

    Elements come out in ascending tag order, led by a correct
    CommandGroupLength.  CommandDataSetType is 0x0101 when
    ``cmd.has_dataset`` is false, else 0x0001.  UI values are padded to even
    length with NUL, AE/LO with a space; LO values longer than 64 characters
    are truncated.  ``cmd.extra`` values are written as given (padded with a
    NUL to even length when odd).

    Raises :class:`ValueError` when a value does not fit its VR (a US out of
    0..65535, a non-ASCII UID, an AE title longer than 16 characters, an
    ``extra`` tag outside group 0000 or clashing with a modelled element).
    """
    parts: list[bytes] = []
    append = parts.append
    us_pack = _US_EL.pack
    try:
        for elem, attr, kind in _FIELDS:
            if kind == _K_US:
                if elem == _DATASET_TYPE:
                    append(us_pack(0, elem, 2, DATASET_PRESENT if cmd.has_dataset else NO_DATASET))
                    continue
                value = getattr(cmd, attr)
                if value is not None:
                    append(us_pack(0, elem, 2, value))
            else:
                value = getattr(cmd, attr)
                if value is not None:
                    if kind == _K_AT:
                        append(_enc_at(elem, value))
                    else:
                        append(_enc_string(elem, value, kind))
    except struct.error as exc:
        raise ValueError(f"command value out of range: {exc}") from None

    if cmd.extra:
        parts = _merge_extra(parts, cmd.extra)

    body_length = sum(map(len, parts))
    return b"".join([_UL_EL.pack(0, _GROUP_LENGTH, 4, body_length), *parts])


def _merge_extra(parts: list[bytes], extra: dict[int, bytes]) -> list[bytes]:
    """Slow path: interleave raw ``extra`` elements in tag order."""
    keyed: list[tuple[int, bytes]] = [(_U16.unpack_from(p, 2)[0], p) for p in parts]
    for tag, raw in extra.items():
        if not 0 <= tag <= 0xFFFF:
            raise ValueError(f"extra tag {tag:#x} is not in group 0000")
        if tag in _RESERVED_ELEMENTS:
            raise ValueError(f"extra tag (0000,{tag:04X}) is a modelled element; use the field")
        value = bytes(raw)
        if len(value) & 1:
            value += b"\x00"
        keyed.append((tag, _HDR.pack(0, tag, len(value)) + value))
    keyed.sort(key=lambda kv: kv[0])
    return [p for _, p in keyed]


# --- Decoding ----------------------------------------------------------------


def _fail(message: str) -> ProtocolError:
    return ProtocolError(f"malformed DIMSE command set: {message}")


def _dec_string(elem: int, raw: bytes, kind: int) -> str:
    if kind == _K_UI:
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise _fail(f"(0000,{elem:04X}) UID is not ASCII") from None
        # Liberal: peers pad with NUL or (wrongly) with space.
        return text.rstrip("\x00 ")
    # AE/LO: leading and trailing spaces are not significant (PS3.5 6.2).
    # Latin-1 never fails, so odd peers don't abort the association.
    return raw.decode("latin-1").strip("\x00 ")


def decode_command(buf: bytes | bytearray | memoryview) -> Command:
    """Decode a complete command set (the joined command fragments).

    Raises :class:`~aiodicom.ul.errors.ProtocolError` (and nothing else) for
    malformed input: truncation, elements outside group 0000, tags out of
    order or repeated, a missing or wrong CommandGroupLength, undefined
    lengths, bad US/UL/AT value lengths, non-ASCII UIDs, a missing
    CommandField, and missing required elements for the C-services.

    Liberal on receipt: strings lose trailing NUL/space padding, any
    CommandDataSetType other than 0x0101 means a data set, an absent
    CommandDataSetType means none, unknown group-0000 elements are kept in
    :attr:`Command.extra`.
    """
    # Command sets are small: one copy to bytes makes every later slice and
    # unpack cheaper than going through memoryview objects.
    data = buf if type(buf) is bytes else bytes(buf)
    end = len(data)
    if end < 12:
        raise _fail(f"{end} bytes is too short for CommandGroupLength")
    group, elem, length = _HDR.unpack_from(data, 0)
    if group != 0 or elem != _GROUP_LENGTH:
        raise _fail(f"first element ({group:04X},{elem:04X}) is not CommandGroupLength")
    if length != 4:
        raise _fail(f"CommandGroupLength has length {length}, expected 4")
    (group_length,) = _U32.unpack_from(data, 8)
    if group_length != end - 12:
        raise _fail(f"CommandGroupLength is {group_length} but {end - 12} bytes follow it")

    values: dict[str, object] = {}
    extra: dict[int, bytes] = {}
    has_dataset = False
    by_element = _BY_ELEMENT
    hdr_unpack = _HDR.unpack_from
    u16_unpack = _U16.unpack_from
    pos = 12
    previous = _GROUP_LENGTH
    while pos < end:
        if end - pos < 8:
            raise _fail(f"truncated element header at offset {pos}")
        group, elem, length = hdr_unpack(data, pos)
        pos += 8
        if group:
            raise _fail(f"element ({group:04X},{elem:04X}) outside group 0000")
        if elem <= previous:
            raise _fail(f"(0000,{elem:04X}) out of ascending order or repeated")
        previous = elem
        if length > end - pos:  # also catches undefined length 0xFFFFFFFF
            if length == _UNDEFINED_LENGTH:
                raise _fail(f"(0000,{elem:04X}) has undefined length")
            raise _fail(f"(0000,{elem:04X}) length {length} runs past the end")
        start = pos
        pos += length

        known = by_element.get(elem)
        if known is None:
            if elem == _DATASET_TYPE:
                if length != 2:
                    raise _fail(f"CommandDataSetType has length {length}, expected 2")
                has_dataset = u16_unpack(data, start)[0] != NO_DATASET
            else:
                extra[elem] = data[start:pos]
            continue
        attr, kind = known
        if kind == _K_US:
            if length != 2:
                raise _fail(f"(0000,{elem:04X}) US has length {length}, expected 2")
            values[attr] = u16_unpack(data, start)[0]
        elif kind == _K_UI:
            values[attr] = _dec_string(elem, data[start:pos], kind)
        elif kind == _K_AT:
            if length & 3:
                raise _fail(f"(0000,{elem:04X}) AT length {length} is not a multiple of 4")
            values[attr] = [(g << 16) | e for g, e in _AT_ITEM.iter_unpack(data[start:pos])]
        else:
            values[attr] = _dec_string(elem, data[start:pos], kind)

    command_field = values.pop("command_field", None)
    if command_field is None:
        raise _fail("CommandField (0000,0100) is missing")
    cmd = Command(command_field, has_dataset=has_dataset, extra=extra, **values)  # type: ignore[arg-type]
    _check_required(cmd)
    return cmd


# Requests other than C-CANCEL: what each needs beyond MessageID
# (PS3.7 9.3, facts sheet 3.3).  (attrs, needs data set)
_REQUIRED: dict[int, tuple[tuple[str, ...], bool]] = {
    C_STORE_RQ: (("affected_sop_class_uid", "affected_sop_instance_uid", "priority"), True),
    C_FIND_RQ: (("affected_sop_class_uid", "priority"), True),
    C_GET_RQ: (("affected_sop_class_uid", "priority"), True),
    C_MOVE_RQ: (("affected_sop_class_uid", "priority", "move_destination"), True),
    C_ECHO_RQ: (("affected_sop_class_uid",), False),
}


def _check_required(cmd: Command) -> None:
    cf = cmd.command_field
    if cf & _RESPONSE_BIT:
        if cmd.message_id_being_responded_to is None:
            raise _fail(f"response {cf:#06x} lacks MessageIDBeingRespondedTo")
        if cmd.status is None:
            raise _fail(f"response {cf:#06x} lacks Status")
        return
    if cf == C_CANCEL_RQ:
        # PS3.7 9.3.2.3: C-CANCEL-RQ carries MessageIDBeingRespondedTo only.
        if cmd.message_id_being_responded_to is None:
            raise _fail("C-CANCEL-RQ lacks MessageIDBeingRespondedTo")
        return
    if cmd.message_id is None:
        raise _fail(f"request {cf:#06x} lacks MessageID")
    required = _REQUIRED.get(cf)
    if required is None:
        return  # N-services and unknown requests: the service layer decides
    attrs, needs_dataset = required
    for attr in attrs:
        value = getattr(cmd, attr)
        if value is None or value == "":
            raise _fail(f"request {cf:#06x} lacks {attr}")
    if needs_dataset and not cmd.has_dataset:
        raise _fail(f"request {cf:#06x} announces no data set")


# --- Small constructors ----------------------------------------------------


def echo_rq(message_id: int, sop_class_uid: str = VERIFICATION_SOP_CLASS) -> Command:
    """A C-ECHO-RQ."""
    return Command(C_ECHO_RQ, message_id=message_id, affected_sop_class_uid=sop_class_uid)


def echo_rsp(
    message_id_being_responded_to: int,
    status: int = 0x0000,
    sop_class_uid: str | None = VERIFICATION_SOP_CLASS,
) -> Command:
    """A C-ECHO-RSP."""
    return Command(
        C_ECHO_RSP,
        message_id_being_responded_to=message_id_being_responded_to,
        affected_sop_class_uid=sop_class_uid,
        status=status,
    )


def cancel_rq(message_id_being_responded_to: int) -> Command:
    """A C-CANCEL-RQ for the operation with that MessageID (no response)."""
    return Command(C_CANCEL_RQ, message_id_being_responded_to=message_id_being_responded_to)


def response_to(request: Command, status: int, *, has_dataset: bool = False) -> Command:
    """The skeleton response to a C-service *request*.

    Sets the response CommandField, MessageIDBeingRespondedTo, Status and
    copies AffectedSOPClassUID (and AffectedSOPInstanceUID for C-STORE).
    Callers fill in counters, OffendingElement, ErrorComment as needed.
    """
    if request.command_field & _RESPONSE_BIT or request.command_field == C_CANCEL_RQ:
        raise ValueError(f"command {request.command_field:#06x} has no response")
    rsp = Command(
        request.command_field | _RESPONSE_BIT,
        message_id_being_responded_to=request.message_id,
        affected_sop_class_uid=request.affected_sop_class_uid,
        status=status,
        has_dataset=has_dataset,
    )
    if request.command_field == C_STORE_RQ:
        rsp.affected_sop_instance_uid = request.affected_sop_instance_uid
    return rsp
