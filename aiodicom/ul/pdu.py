"""PDU codec for the DICOM upper layer (PS3.8 section 9.3).

Every PDU and item is a plain ``dataclass`` with an ``encode()`` method.
:func:`decode_pdu` turns the body of a received PDU (the bytes after the
6-byte header) into one of these objects.  Decoding malformed bytes raises
:class:`~aiodicom.ul.errors.ProtocolError` and nothing else; no length field
is trusted before the bytes it announces are present.

All multi-byte fields in PDUs and items are big-endian (PS3.8 9.3.1).
"""

from __future__ import annotations

import functools
import struct
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable, Union

from .errors import (
    REASON_INVALID_PDU_PARAMETER_VALUE,
    REASON_UNEXPECTED_PDU_PARAMETER,
    REASON_UNRECOGNIZED_PDU,
    REASON_UNRECOGNIZED_PDU_PARAMETER,
    ProtocolError,
)

__all__ = [
    "APPLICATION_CONTEXT_NAME",
    "A_ASSOCIATE_RQ",
    "A_ASSOCIATE_AC",
    "A_ASSOCIATE_RJ",
    "P_DATA_TF",
    "A_RELEASE_RQ",
    "A_RELEASE_RP",
    "A_ABORT",
    "PresentationContextRQ",
    "PresentationContextAC",
    "RoleSelection",
    "SOPClassExtendedNegotiation",
    "SOPClassCommonExtendedNegotiation",
    "UserIdentityRQ",
    "UserIdentityAC",
    "UserInformation",
    "AAssociateRQ",
    "AAssociateAC",
    "AAssociateRJ",
    "PDataTF",
    "AReleaseRQ",
    "AReleaseRP",
    "AAbort",
    "PDU",
    "PDV",
    "decode_pdu",
    "decode_pdvs",
    "encode_ae_title",
    "PDUReader",
]

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"

# PDU types (PS3.8 Table 9-11 .. 9-26)
A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

# Item types
_ITEM_APP_CONTEXT = 0x10
_ITEM_PCTX_RQ = 0x20
_ITEM_PCTX_AC = 0x21
_ITEM_ABSTRACT = 0x30
_ITEM_TRANSFER = 0x40
_ITEM_USER_INFO = 0x50
_SUB_MAX_LENGTH = 0x51
_SUB_IMPL_UID = 0x52
_SUB_ASYNC_OPS = 0x53
_SUB_ROLE = 0x54
_SUB_IMPL_VERSION = 0x55
_SUB_EXT_NEG = 0x56
_SUB_COMMON_EXT_NEG = 0x57
_SUB_USER_ID_RQ = 0x58
_SUB_USER_ID_AC = 0x59

_PDU_HDR = struct.Struct(">BBL")
_ITEM_HDR = struct.Struct(">BBH")
_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">L")
_U16U16 = struct.Struct(">HH")
_ASSOC_FIXED = struct.Struct(">HH16s16s32s")
_FOUR_BYTES = struct.Struct(">BBBB")
_PDV_HDR = struct.Struct(">LBB")

Buffer = Union[bytes, bytearray, memoryview]

# A PDV as handed up the stack: (context id, message control header, fragment)
PDV = tuple[int, int, memoryview]


# ---------------------------------------------------------------------------
# helpers


def _err(msg: str, reason: int = REASON_INVALID_PDU_PARAMETER_VALUE) -> ProtocolError:
    return ProtocolError(msg, reason=reason)


def _item(item_type: int, body: bytes, byte1: int = 0) -> bytes:
    if len(body) > 0xFFFF:
        raise ValueError(f"item 0x{item_type:02X} too long ({len(body)} bytes)")
    return _ITEM_HDR.pack(item_type, byte1, len(body)) + body


def _uid_bytes(uid: str) -> bytes:
    # PS3.8 Annex F: UIDs in items are not padded.
    return uid.encode("ascii")


def _decode_uid(raw: memoryview | bytes, what: str) -> str:
    try:
        text = bytes(raw).decode("ascii")
    except UnicodeDecodeError:
        raise _err(f"{what} is not ASCII") from None
    # Be liberal: some peers pad UIDs with NUL or space.
    return text.rstrip("\x00 ")


@functools.lru_cache(maxsize=4096)
def encode_ae_title(title: str) -> bytes:
    """Encode an AE title as 16 bytes of ASCII padded with spaces (PS3.8 9.3.2)."""
    raw = title.strip().encode("ascii")
    if not raw or len(raw) > 16:
        raise ValueError(f"invalid AE title {title!r}: 1 to 16 ASCII characters")
    if any(c < 0x20 or c == 0x5C or c > 0x7E for c in raw):
        raise ValueError(f"invalid AE title {title!r}: control character or backslash")
    return raw.ljust(16, b" ")


def _decode_ae(raw: bytes) -> str:
    return raw.decode("ascii", "replace").strip(" \x00")


def _iter_items(buf: memoryview, start: int, end: int, where: str) -> list[tuple[int, int, memoryview]]:
    """Split ``buf[start:end]`` into (type, byte1, body) items, checking lengths."""
    items: list[tuple[int, int, memoryview]] = []
    off = start
    while off < end:
        if end - off < 4:
            raise _err(f"truncated item header in {where}")
        itype, byte1, ilen = _ITEM_HDR.unpack_from(buf, off)
        off += 4
        if ilen > end - off:
            raise _err(f"item 0x{itype:02X} length {ilen} overruns {where}")
        items.append((itype, byte1, buf[off : off + ilen]))
        off += ilen
    return items


# Item types PS3.8 defines at the PDU and presentation-context levels.
_KNOWN_ITEM_TYPES = frozenset((0x10, 0x20, 0x21, 0x30, 0x40, 0x50))


def _misplaced_item(itype: int, where: str) -> ProtocolError:
    """Error for an item not allowed here: a known item type in the wrong
    place is an unexpected PDU parameter (5), an unknown type an
    unrecognized PDU parameter (4) (PS3.8 Table 9-26)."""
    if itype in _KNOWN_ITEM_TYPES:
        return _err(f"item 0x{itype:02X} not allowed in {where}", REASON_UNEXPECTED_PDU_PARAMETER)
    return _err(f"unrecognised item 0x{itype:02X} in {where}", REASON_UNRECOGNIZED_PDU_PARAMETER)


def _read_u16_prefixed(body: memoryview, off: int, what: str) -> tuple[memoryview, int]:
    if len(body) - off < 2:
        raise _err(f"truncated {what} length")
    (n,) = _U16.unpack_from(body, off)
    off += 2
    if n > len(body) - off:
        raise _err(f"{what} length {n} overruns its item")
    return body[off : off + n], off + n


# ---------------------------------------------------------------------------
# items


@dataclass(slots=True)
class PresentationContextRQ:
    """A proposed presentation context (item 0x20, PS3.8 9.3.2.2)."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: list[str]

    def encode(self) -> bytes:
        """The encoded item, its 4-byte header included."""
        parts = [_item(_ITEM_ABSTRACT, _uid_bytes(self.abstract_syntax))]
        parts.extend(_item(_ITEM_TRANSFER, _uid_bytes(ts)) for ts in self.transfer_syntaxes)
        body = _FOUR_BYTES.pack(self.context_id, 0, 0, 0) + b"".join(parts)
        return _item(_ITEM_PCTX_RQ, body)

    @classmethod
    def decode(cls, body: memoryview) -> PresentationContextRQ:
        """Parse the item from its body (the bytes after the 4-byte item header)."""
        if len(body) < 4:
            raise _err("presentation context item too short")
        ctx_id = body[0]
        abstract: str | None = None
        transfer: list[str] = []
        for itype, _b1, sub in _iter_items(body, 4, len(body), "presentation context"):
            if itype == _ITEM_ABSTRACT:
                if abstract is not None:
                    raise _err("more than one abstract syntax", REASON_UNEXPECTED_PDU_PARAMETER)
                abstract = _decode_uid(sub, "abstract syntax")
            elif itype == _ITEM_TRANSFER:
                ts = _decode_uid(sub, "transfer syntax")
                if not ts:
                    raise _err("empty transfer syntax name")
                transfer.append(ts)
            else:
                raise _misplaced_item(itype, "presentation context")
        if abstract is None or not abstract:
            raise _err("presentation context without abstract syntax")
        if not transfer:
            raise _err("presentation context without transfer syntax")
        return cls(ctx_id, abstract, transfer)


# Presentation context results (PS3.8 Table 9-18)
PCTX_ACCEPTANCE = 0
PCTX_USER_REJECTION = 1
PCTX_NO_REASON = 2
PCTX_ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
PCTX_TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


@dataclass(slots=True)
class PresentationContextAC:
    """An answered presentation context (item 0x21, PS3.8 9.3.3.2)."""

    context_id: int
    result: int
    transfer_syntax: str | None

    def encode(self) -> bytes:
        """The encoded item, its 4-byte header included."""
        # The transfer syntax sub-item is always present; its value is
        # not significant unless the context was accepted.
        ts = self.transfer_syntax or ""
        body = _FOUR_BYTES.pack(self.context_id, 0, self.result, 0) + _item(_ITEM_TRANSFER, _uid_bytes(ts))
        return _item(_ITEM_PCTX_AC, body)

    @classmethod
    def decode(cls, body: memoryview) -> PresentationContextAC:
        """Parse the item from its body (the bytes after the 4-byte item header)."""
        if len(body) < 4:
            raise _err("presentation context item too short")
        ctx_id, _r, result, _r2 = _FOUR_BYTES.unpack_from(body, 0)
        if result > 4:
            raise _err(f"invalid presentation context result {result}")
        ts: str | None = None
        for itype, _b1, sub in _iter_items(body, 4, len(body), "presentation context"):
            if itype == _ITEM_TRANSFER:
                if ts is not None:
                    raise _err("more than one transfer syntax in answer", REASON_UNEXPECTED_PDU_PARAMETER)
                ts = _decode_uid(sub, "transfer syntax")
            else:
                raise _misplaced_item(itype, "presentation context")
        if result == PCTX_ACCEPTANCE and not ts:
            raise _err("accepted presentation context without transfer syntax")
        return cls(ctx_id, result, ts if result == PCTX_ACCEPTANCE else (ts or None))


@dataclass(slots=True)
class RoleSelection:
    """SCP/SCU Role Selection sub-item (0x54, PS3.7 D.3.3.4).

    ``scu_role``/``scp_role`` describe the *association requestor's* roles.
    """

    sop_class_uid: str
    scu_role: bool
    scp_role: bool

    def encode(self) -> bytes:
        """The encoded item, its 4-byte header included."""
        uid = _uid_bytes(self.sop_class_uid)
        body = _U16.pack(len(uid)) + uid + bytes((int(self.scu_role), int(self.scp_role)))
        return _item(_SUB_ROLE, body)

    @classmethod
    def decode(cls, body: memoryview) -> RoleSelection:
        """Parse the item from its body (the bytes after the 4-byte item header)."""
        uid, off = _read_u16_prefixed(body, 0, "role selection UID")
        if len(body) - off < 2:
            raise _err("truncated role selection item")
        return cls(_decode_uid(uid, "role selection UID"), bool(body[off]), bool(body[off + 1]))


@dataclass(slots=True)
class SOPClassExtendedNegotiation:
    """SOP Class Extended Negotiation sub-item (0x56, PS3.7 D.3.3.5)."""

    sop_class_uid: str
    application_info: bytes

    def encode(self) -> bytes:
        """The encoded item, its 4-byte header included."""
        uid = _uid_bytes(self.sop_class_uid)
        return _item(_SUB_EXT_NEG, _U16.pack(len(uid)) + uid + self.application_info)

    @classmethod
    def decode(cls, body: memoryview) -> SOPClassExtendedNegotiation:
        """Parse the item from its body (the bytes after the 4-byte item header)."""
        uid, off = _read_u16_prefixed(body, 0, "extended negotiation UID")
        return cls(_decode_uid(uid, "extended negotiation UID"), bytes(body[off:]))


@dataclass(slots=True)
class SOPClassCommonExtendedNegotiation:
    """SOP Class Common Extended Negotiation sub-item (0x57, PS3.7 D.3.3.6)."""

    sop_class_uid: str
    service_class_uid: str
    related_general_sop_classes: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        """The encoded item, its 4-byte header included."""
        uid = _uid_bytes(self.sop_class_uid)
        svc = _uid_bytes(self.service_class_uid)
        related = b"".join(
            _U16.pack(len(u)) + u for u in (_uid_bytes(r) for r in self.related_general_sop_classes)
        )
        body = _U16.pack(len(uid)) + uid + _U16.pack(len(svc)) + svc + _U16.pack(len(related)) + related
        # byte 1 of the header is the sub-item version, 0 (PS3.7 Table D.3-12)
        return _item(_SUB_COMMON_EXT_NEG, body, 0)

    @classmethod
    def decode(cls, body: memoryview) -> SOPClassCommonExtendedNegotiation:
        """Parse the item from its body (the bytes after the 4-byte item header)."""
        uid, off = _read_u16_prefixed(body, 0, "common extended negotiation UID")
        svc, off = _read_u16_prefixed(body, off, "service class UID")
        rel, off = _read_u16_prefixed(body, off, "related general SOP classes")
        related: list[str] = []
        roff = 0
        while roff < len(rel):
            r, roff = _read_u16_prefixed(rel, roff, "related general SOP class UID")
            related.append(_decode_uid(r, "related general SOP class UID"))
        return cls(
            _decode_uid(uid, "common extended negotiation UID"),
            _decode_uid(svc, "service class UID"),
            related,
        )


# User identity types (PS3.7 Table D.3-14)
USER_IDENTITY_USERNAME = 1
USER_IDENTITY_USERNAME_PASSCODE = 2
USER_IDENTITY_KERBEROS = 3
USER_IDENTITY_SAML = 4
USER_IDENTITY_JWT = 5


@dataclass(slots=True)
class UserIdentityRQ:
    """User Identity Negotiation request sub-item (0x58, PS3.7 D.3.3.7)."""

    identity_type: int
    primary: bytes
    secondary: bytes = b""
    positive_response_requested: bool = False

    def encode(self) -> bytes:
        """The encoded item, its 4-byte header included."""
        body = (
            bytes((self.identity_type, int(self.positive_response_requested)))
            + _U16.pack(len(self.primary))
            + self.primary
            + _U16.pack(len(self.secondary))
            + self.secondary
        )
        return _item(_SUB_USER_ID_RQ, body)

    @classmethod
    def decode(cls, body: memoryview) -> UserIdentityRQ:
        """Parse the item from its body (the bytes after the 4-byte item header)."""
        if len(body) < 2:
            raise _err("truncated user identity item")
        itype, positive = body[0], body[1]
        if not 1 <= itype <= 5:
            raise _err(f"invalid user identity type {itype}")
        primary, off = _read_u16_prefixed(body, 2, "user identity primary field")
        secondary, off = _read_u16_prefixed(body, off, "user identity secondary field")
        return cls(itype, bytes(primary), bytes(secondary), bool(positive))


@dataclass(slots=True)
class UserIdentityAC:
    """User Identity Negotiation response sub-item (0x59)."""

    server_response: bytes = b""

    def encode(self) -> bytes:
        """The encoded item, its 4-byte header included."""
        return _item(_SUB_USER_ID_AC, _U16.pack(len(self.server_response)) + self.server_response)

    @classmethod
    def decode(cls, body: memoryview) -> UserIdentityAC:
        """Parse the item from its body (the bytes after the 4-byte item header)."""
        resp, _off = _read_u16_prefixed(body, 0, "user identity server response")
        return cls(bytes(resp))


@dataclass(slots=True)
class UserInformation:
    """User Information item (0x50) and its sub-items (PS3.8 9.3.2.3, PS3.7 D.3.3)."""

    max_length: int | None = None
    implementation_class_uid: str | None = None
    implementation_version_name: str | None = None
    # (max operations invoked, max operations performed); None = absent (1, 1)
    async_ops_window: tuple[int, int] | None = None
    role_selections: list[RoleSelection] = field(default_factory=list)
    extended_negotiation: list[SOPClassExtendedNegotiation] = field(default_factory=list)
    common_extended_negotiation: list[SOPClassCommonExtendedNegotiation] = field(default_factory=list)
    user_identity_rq: UserIdentityRQ | None = None
    user_identity_ac: UserIdentityAC | None = None
    # Sub-items we do not know: kept (type, body) and ignored (PS3.8 D.2).
    unknown: list[tuple[int, bytes]] = field(default_factory=list)

    def encode(self) -> bytes:
        """The encoded item, its 4-byte header included."""
        parts: list[bytes] = []
        if self.max_length is not None:
            parts.append(_item(_SUB_MAX_LENGTH, _U32.pack(self.max_length)))
        if self.implementation_class_uid is not None:
            parts.append(_item(_SUB_IMPL_UID, _uid_bytes(self.implementation_class_uid)))
        if self.async_ops_window is not None:
            parts.append(_item(_SUB_ASYNC_OPS, _U16U16.pack(*self.async_ops_window)))
        parts.extend(r.encode() for r in self.role_selections)
        if self.implementation_version_name is not None:
            parts.append(_item(_SUB_IMPL_VERSION, self.implementation_version_name.encode("ascii")))
        parts.extend(e.encode() for e in self.extended_negotiation)
        parts.extend(e.encode() for e in self.common_extended_negotiation)
        if self.user_identity_rq is not None:
            parts.append(self.user_identity_rq.encode())
        if self.user_identity_ac is not None:
            parts.append(self.user_identity_ac.encode())
        return _item(_ITEM_USER_INFO, b"".join(parts))

    @classmethod
    def decode(cls, body: memoryview) -> UserInformation:
        """Parse the item from its body (the bytes after the 4-byte item header)."""
        ui = cls()
        seen_roles: set[str] = set()
        for itype, _b1, sub in _iter_items(body, 0, len(body), "user information"):
            if itype == _SUB_MAX_LENGTH:
                if len(sub) != 4:
                    raise _err("maximum length sub-item must be 4 bytes")
                (ui.max_length,) = _U32.unpack_from(sub, 0)
            elif itype == _SUB_IMPL_UID:
                ui.implementation_class_uid = _decode_uid(sub, "implementation class UID")
            elif itype == _SUB_IMPL_VERSION:
                ui.implementation_version_name = bytes(sub).decode("ascii", "replace").strip(" \x00")
            elif itype == _SUB_ASYNC_OPS:
                if len(sub) != 4:
                    raise _err("asynchronous operations window sub-item must be 4 bytes")
                ui.async_ops_window = _U16U16.unpack_from(sub, 0)
            elif itype == _SUB_ROLE:
                role = RoleSelection.decode(sub)
                # PS3.7 D.3.3.4: at most one item per SOP class
                if role.sop_class_uid in seen_roles:
                    raise _err("duplicate role selection item", REASON_UNEXPECTED_PDU_PARAMETER)
                seen_roles.add(role.sop_class_uid)
                ui.role_selections.append(role)
            elif itype == _SUB_EXT_NEG:
                ui.extended_negotiation.append(SOPClassExtendedNegotiation.decode(sub))
            elif itype == _SUB_COMMON_EXT_NEG:
                ui.common_extended_negotiation.append(SOPClassCommonExtendedNegotiation.decode(sub))
            elif itype == _SUB_USER_ID_RQ:
                ui.user_identity_rq = UserIdentityRQ.decode(sub)
            elif itype == _SUB_USER_ID_AC:
                ui.user_identity_ac = UserIdentityAC.decode(sub)
            else:
                ui.unknown.append((itype, bytes(sub)))
        return ui


# ---------------------------------------------------------------------------
# PDUs


def _encode_associate(
    pdu_type: int,
    called: str,
    calling: str,
    version: int,
    reserved: bytes,
    app_context: str,
    contexts: list[PresentationContextRQ] | list[PresentationContextAC],
    user_info: UserInformation,
) -> bytes:
    body = b"".join(
        [
            _ASSOC_FIXED.pack(version, 0, encode_ae_title(called), encode_ae_title(calling), reserved),
            _item(_ITEM_APP_CONTEXT, _uid_bytes(app_context)),
            *(c.encode() for c in contexts),
            user_info.encode(),
        ]
    )
    return _PDU_HDR.pack(pdu_type, 0, len(body)) + body


def _decode_associate_common(
    body: memoryview, ctx_type: int
) -> tuple[int, str, str, bytes, str, list[memoryview], UserInformation]:
    if len(body) < _ASSOC_FIXED.size:
        raise _err("A-ASSOCIATE PDU shorter than its fixed fields")
    version, _res, called, calling, reserved = _ASSOC_FIXED.unpack_from(body, 0)
    app_ctx: str | None = None
    ctx_bodies: list[memoryview] = []
    user_info: UserInformation | None = None
    for itype, _b1, item in _iter_items(body, _ASSOC_FIXED.size, len(body), "A-ASSOCIATE PDU"):
        if itype == _ITEM_APP_CONTEXT:
            if app_ctx is not None:
                raise _err("more than one application context item", REASON_UNEXPECTED_PDU_PARAMETER)
            app_ctx = _decode_uid(item, "application context name")
        elif itype == ctx_type:
            ctx_bodies.append(item)
        elif itype == _ITEM_USER_INFO:
            if user_info is not None:
                raise _err("more than one user information item", REASON_UNEXPECTED_PDU_PARAMETER)
            user_info = UserInformation.decode(item)
        else:
            raise _misplaced_item(itype, "A-ASSOCIATE PDU")
    if not app_ctx:
        raise _err("missing or empty application context item")
    if user_info is None:
        raise _err("missing user information item")
    return version, _decode_ae(called), _decode_ae(calling), bytes(reserved), app_ctx, ctx_bodies, user_info


def _check_unique_context_ids(contexts: list[PresentationContextRQ] | list[PresentationContextAC]) -> None:
    # PS3.8 9.3.2.2: each presentation context ID identifies one context.
    ids = [c.context_id for c in contexts]
    if len(set(ids)) != len(ids):
        raise _err("duplicate presentation context ID", REASON_UNEXPECTED_PDU_PARAMETER)


@dataclass(slots=True)
class AAssociateRQ:
    """A-ASSOCIATE-RQ PDU (type 0x01, PS3.8 9.3.2)."""

    called_ae: str
    calling_ae: str
    presentation_contexts: list[PresentationContextRQ]
    user_info: UserInformation
    application_context: str = APPLICATION_CONTEXT_NAME
    protocol_version: int = 1
    reserved: bytes = bytes(32)

    pdu_type = A_ASSOCIATE_RQ

    def encode(self) -> bytes:
        """The encoded PDU, its 6-byte header included."""
        return _encode_associate(
            A_ASSOCIATE_RQ,
            self.called_ae,
            self.calling_ae,
            self.protocol_version,
            self.reserved,
            self.application_context,
            self.presentation_contexts,
            self.user_info,
        )

    @classmethod
    def decode(cls, body: memoryview) -> AAssociateRQ:
        """Parse the PDU from its body (the bytes after the 6-byte PDU header)."""
        version, called, calling, reserved, app, ctxs, ui = _decode_associate_common(body, _ITEM_PCTX_RQ)
        contexts = [PresentationContextRQ.decode(c) for c in ctxs]
        if not contexts:
            raise _err("A-ASSOCIATE-RQ without presentation contexts")
        _check_unique_context_ids(contexts)
        return cls(called, calling, contexts, ui, app, version, reserved)


@dataclass(slots=True)
class AAssociateAC:
    """A-ASSOCIATE-AC PDU (type 0x02, PS3.8 9.3.3).

    The AE title fields and the 32 reserved bytes echo the request's values.
    """

    called_ae: str
    calling_ae: str
    presentation_contexts: list[PresentationContextAC]
    user_info: UserInformation
    application_context: str = APPLICATION_CONTEXT_NAME
    protocol_version: int = 1
    reserved: bytes = bytes(32)

    pdu_type = A_ASSOCIATE_AC

    def encode(self) -> bytes:
        """The encoded PDU, its 6-byte header included."""
        return _encode_associate(
            A_ASSOCIATE_AC,
            self.called_ae,
            self.calling_ae,
            self.protocol_version,
            self.reserved,
            self.application_context,
            self.presentation_contexts,
            self.user_info,
        )

    @classmethod
    def decode(cls, body: memoryview) -> AAssociateAC:
        """Parse the PDU from its body (the bytes after the 6-byte PDU header)."""
        version, called, calling, reserved, app, ctxs, ui = _decode_associate_common(body, _ITEM_PCTX_AC)
        contexts = [PresentationContextAC.decode(c) for c in ctxs]
        _check_unique_context_ids(contexts)
        return cls(called or "ANY", calling or "ANY", contexts, ui, app, version, reserved)


# A-ASSOCIATE-RJ result / source / reason (PS3.8 Table 9-21)
RJ_RESULT_PERMANENT = 1
RJ_RESULT_TRANSIENT = 2
RJ_SOURCE_USER = 1
RJ_SOURCE_ACSE = 2
RJ_SOURCE_PRESENTATION = 3
RJ_REASON_NO_REASON = 1
RJ_REASON_APP_CONTEXT_NOT_SUPPORTED = 2
RJ_REASON_CALLING_AE_NOT_RECOGNIZED = 3
RJ_REASON_CALLED_AE_NOT_RECOGNIZED = 7
RJ_REASON_PROTOCOL_VERSION_NOT_SUPPORTED = 2  # source ACSE
RJ_REASON_TEMPORARY_CONGESTION = 1  # source presentation
RJ_REASON_LOCAL_LIMIT_EXCEEDED = 2  # source presentation

_RJ_TEXT = {
    (RJ_SOURCE_USER, 1): "no reason given",
    (RJ_SOURCE_USER, 2): "application context name not supported",
    (RJ_SOURCE_USER, 3): "calling AE title not recognized",
    (RJ_SOURCE_USER, 7): "called AE title not recognized",
    (RJ_SOURCE_ACSE, 1): "no reason given",
    (RJ_SOURCE_ACSE, 2): "protocol version not supported",
    (RJ_SOURCE_PRESENTATION, 1): "temporary congestion",
    (RJ_SOURCE_PRESENTATION, 2): "local limit exceeded",
}


@dataclass(slots=True)
class AAssociateRJ:
    """A-ASSOCIATE-RJ PDU (type 0x03, PS3.8 9.3.4)."""

    result: int
    source: int
    reason: int

    pdu_type = A_ASSOCIATE_RJ

    def encode(self) -> bytes:
        """The encoded PDU, its 6-byte header included."""
        return _PDU_HDR.pack(A_ASSOCIATE_RJ, 0, 4) + _FOUR_BYTES.pack(0, self.result, self.source, self.reason)

    @classmethod
    def decode(cls, body: memoryview) -> AAssociateRJ:
        """Parse the PDU from its body (the bytes after the 6-byte PDU header)."""
        if len(body) != 4:
            raise _err("A-ASSOCIATE-RJ must have length 4")
        _r, result, source, reason = _FOUR_BYTES.unpack_from(body, 0)
        return cls(result, source, reason)

    def describe(self) -> str:
        """The rejection spelled out, e.g. ``permanent, service user: called AE title not recognized``."""
        kind = {1: "permanent", 2: "transient"}.get(self.result, f"result {self.result}")
        src = {1: "service user", 2: "service provider (ACSE)", 3: "service provider (presentation)"}.get(
            self.source, f"source {self.source}"
        )
        why = _RJ_TEXT.get((self.source, self.reason), f"reason {self.reason}")
        return f"{kind}, {src}: {why}"


@dataclass(slots=True)
class PDataTF:
    """P-DATA-TF PDU (type 0x04, PS3.8 9.3.5): a list of PDVs."""

    pdvs: list[PDV]

    pdu_type = P_DATA_TF

    def encode(self) -> bytes:
        """The encoded PDU, its 6-byte header included."""
        parts: list[bytes] = []
        for ctx, ctrl, data in self.pdvs:
            parts.append(_PDV_HDR.pack(len(data) + 2, ctx, ctrl))
            parts.append(bytes(data))
        body = b"".join(parts)
        return _PDU_HDR.pack(P_DATA_TF, 0, len(body)) + body

    @classmethod
    def decode(cls, body: memoryview) -> PDataTF:
        """Parse the PDU from its body (the bytes after the 6-byte PDU header)."""
        return cls(decode_pdvs(body))


def decode_pdvs(body: memoryview) -> list[PDV]:
    """Split a P-DATA-TF body into PDVs (PS3.8 9.3.5.1)."""
    pdvs: list[PDV] = []
    off = 0
    end = len(body)
    unpack = _PDV_HDR.unpack_from
    while off < end:
        if end - off < 6:
            raise _err("truncated PDV item header")
        length, ctx, ctrl = unpack(body, off)
        if length < 2 or length > end - off - 4:
            raise _err(f"PDV item length {length} invalid for a P-DATA-TF of {end} bytes")
        pdvs.append((ctx, ctrl, body[off + 6 : off + 4 + length]))
        off += 4 + length
    if not pdvs:
        raise _err("P-DATA-TF without PDV items")
    return pdvs


@dataclass(slots=True)
class AReleaseRQ:
    """A-RELEASE-RQ PDU (type 0x05)."""

    pdu_type = A_RELEASE_RQ

    def encode(self) -> bytes:
        """The encoded PDU, its 6-byte header included."""
        return _RELEASE_RQ_BYTES

    @classmethod
    def decode(cls, body: memoryview) -> AReleaseRQ:
        """Parse the PDU from its body (the bytes after the 6-byte PDU header)."""
        if len(body) != 4:
            raise _err("A-RELEASE-RQ must have length 4")
        return cls()


@dataclass(slots=True)
class AReleaseRP:
    """A-RELEASE-RP PDU (type 0x06)."""

    pdu_type = A_RELEASE_RP

    def encode(self) -> bytes:
        """The encoded PDU, its 6-byte header included."""
        return _RELEASE_RP_BYTES

    @classmethod
    def decode(cls, body: memoryview) -> AReleaseRP:
        """Parse the PDU from its body (the bytes after the 6-byte PDU header)."""
        if len(body) != 4:
            raise _err("A-RELEASE-RP must have length 4")
        return cls()


@dataclass(slots=True)
class AAbort:
    """A-ABORT PDU (type 0x07, PS3.8 9.3.8)."""

    source: int = 0
    reason: int = 0

    pdu_type = A_ABORT

    def encode(self) -> bytes:
        """The encoded PDU, its 6-byte header included."""
        return _PDU_HDR.pack(A_ABORT, 0, 4) + _FOUR_BYTES.pack(0, 0, self.source, self.reason)

    @classmethod
    def decode(cls, body: memoryview) -> AAbort:
        """Parse the PDU from its body (the bytes after the 6-byte PDU header)."""
        if len(body) != 4:
            raise _err("A-ABORT must have length 4")
        _r1, _r2, source, reason = _FOUR_BYTES.unpack_from(body, 0)
        return cls(source, reason)

    def describe(self) -> str:
        """The abort source and reason spelled out."""
        if self.source == 0:
            return "aborted by the service user"
        why = {
            0: "reason not specified",
            1: "unrecognized PDU",
            2: "unexpected PDU",
            4: "unrecognized PDU parameter",
            5: "unexpected PDU parameter",
            6: "invalid PDU parameter value",
        }.get(self.reason, f"reason {self.reason}")
        return f"aborted by the service provider: {why}"


_RELEASE_RQ_BYTES = _PDU_HDR.pack(A_RELEASE_RQ, 0, 4) + bytes(4)
_RELEASE_RP_BYTES = _PDU_HDR.pack(A_RELEASE_RP, 0, 4) + bytes(4)

PDU = Union[AAssociateRQ, AAssociateAC, AAssociateRJ, PDataTF, AReleaseRQ, AReleaseRP, AAbort]

_DECODERS: dict[int, Callable[[memoryview], PDU]] = {
    A_ASSOCIATE_RQ: AAssociateRQ.decode,
    A_ASSOCIATE_AC: AAssociateAC.decode,
    A_ASSOCIATE_RJ: AAssociateRJ.decode,
    P_DATA_TF: PDataTF.decode,
    A_RELEASE_RQ: AReleaseRQ.decode,
    A_RELEASE_RP: AReleaseRP.decode,
    A_ABORT: AAbort.decode,
}


def decode_pdu(pdu_type: int, body: Buffer) -> PDU:
    """Decode the body of a PDU of ``pdu_type``; raises only ProtocolError."""
    decoder = _DECODERS.get(pdu_type)
    if decoder is None:
        raise ProtocolError(f"unrecognised PDU type 0x{pdu_type:02X}", reason=REASON_UNRECOGNIZED_PDU)
    mv = body if isinstance(body, memoryview) else memoryview(body)
    try:
        return decoder(mv)
    except ProtocolError:
        raise
    except (ValueError, IndexError, struct.error) as exc:  # defensive: never leak other types
        raise _err(f"malformed PDU 0x{pdu_type:02X}: {exc}") from None


# ---------------------------------------------------------------------------
# receive buffer

# Bodies of non-data PDUs are small; anything larger is hostile.
MAX_ASSOCIATE_PDU_LENGTH = 1 << 20
_FIXED_LENGTH_PDUS = {A_ASSOCIATE_RJ: 4, A_RELEASE_RQ: 4, A_RELEASE_RP: 4, A_ABORT: 4}


# Buffered receive (PDUReader.get_buffer / buffer_updated): a P-DATA-TF
# body at least this long is read by the transport straight into its own
# buffer, with no copy in user space; longer than _DIRECT_MAX it is
# gathered from chunks as before (an announced length is not trusted with
# an up-front allocation that large).
_DIRECT_MIN = 16384
_DIRECT_MAX = 4 << 20
# Everything else is read into one scratch buffer per thread and copied
# out at once: the transport fills it and calls buffer_updated() right
# after, so one buffer serves every connection of an event loop.
_SCRATCH_SIZE = 65536
_scratch_local = threading.local()
# Bodies read in place, kept for reuse once nothing refers to them: a few
# per thread (not per reader, so idle associations hold none).  A consumer
# that keeps a whole data set until it is complete (a C-GET SCU, a store
# handler writing it to disk) releases several bodies at once; the next
# data set reuses them all instead of allocating and zeroing new ones.
_spare_local = threading.local()
_SPARES = 4
_SPARE_BYTES = 8 << 20
# After this many small PDUs in a row the reader stops expecting large ones.
_SMALL_RUN = 8
_getrefcount = getattr(sys, "getrefcount", None)


def _spares() -> list[bytearray]:
    try:
        return _spare_local.bufs  # type: ignore[no-any-return]
    except AttributeError:
        bufs: list[bytearray] = []
        _spare_local.bufs = bufs
        return bufs


def _reuse_spare(length: int) -> bytearray | None:
    """A kept body buffer of at least ``length`` bytes that nothing refers to, or None."""
    if _getrefcount is None:
        return None
    bufs = _spares()
    for i in range(len(bufs)):  # not enumerate(): its cached tuple holds a reference
        buf = bufs[i]
        # free when only the list, this name and getrefcount's argument
        # refer to it (a live view adds its managed buffer).  A data set's
        # last PDU is usually shorter than the others, so any buffer at
        # least as long will do.
        if len(buf) >= length and _getrefcount(buf) <= 3:
            del bufs[i]
            return buf
    return None


def _keep_spare(buf: bytearray | None) -> None:
    """Keep a finished body's buffer for reuse (the oldest go past the limits)."""
    if buf is None or _getrefcount is None:
        return
    bufs = _spares()
    bufs.append(buf)
    total = sum(len(b) for b in bufs)
    while len(bufs) > _SPARES or (total > _SPARE_BYTES and len(bufs) > 1):
        total -= len(bufs.pop(0))


def _scratch() -> memoryview:
    try:
        return _scratch_local.view  # type: ignore[no-any-return]
    except AttributeError:
        view = _scratch_local.view = memoryview(bytearray(_SCRATCH_SIZE))
        return view


class PDUReader:
    """Cuts whole PDUs out of a byte stream.

    Two ways in, which may be mixed:

    * :meth:`feed` takes received chunks as they are; a PDU that lies within
      one chunk is returned as a memoryview into it (no copy).
    * :meth:`get_buffer` / :meth:`buffer_updated` (for
      :class:`asyncio.BufferedProtocol`): the transport reads into a buffer
      the reader hands out.  A large P-DATA-TF body is read straight into
      a buffer of its own length, so its bytes are copied once, by the
      kernel; while large PDUs are arriving, reads are sized to end at PDU
      boundaries (a 6-byte header read, then the body) so that no body
      lands in the scratch buffer to be copied again.

    The header of a partially received PDU is parsed once and cached.
    Lengths are checked as soon as the 6-byte header is in: an unknown PDU
    type, a P-DATA-TF longer than ``max_pdata_length`` (our announced
    maximum; 0 = unlimited) or an association PDU longer than 1 MiB raise
    ProtocolError before a single byte of the body is awaited or stored.
    """

    __slots__ = ("_chunks", "_offset", "_size", "_header", "max_pdata_length",
                 "_body", "_body_buf", "_body_pos", "_into_body", "_large", "_small_run")

    def __init__(self, max_pdata_length: int = 0) -> None:
        self._chunks: list[bytes | memoryview] = []
        self._offset = 0  # read offset into self._chunks[0]
        self._size = 0  # unread bytes in self._chunks
        self._header: tuple[int, int] | None = None
        self.max_pdata_length = max_pdata_length
        self._body: memoryview | None = None  # the current PDU's body, read in place
        self._body_buf: bytearray | None = None  # the buffer _body is a prefix of
        self._body_pos = 0  # bytes of _body received
        self._into_body = False  # whether the last get_buffer() was into _body
        self._large = False  # large P-DATA-TF PDUs are arriving
        self._small_run = 0

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a PDU."""
        return self._size + (self._body_pos if self._body is not None else 0)

    def feed(self, data: bytes | memoryview) -> None:
        """Append received bytes."""
        if not data:
            return
        body = self._body
        if body is not None:
            # a body is being read in place (buffered receive): fill it first
            room = len(body) - self._body_pos
            if room > 0:
                k = min(room, len(data))
                body[self._body_pos : self._body_pos + k] = memoryview(data)[:k]
                self._body_pos += k
                if k == len(data):
                    return
                data = memoryview(data)[k:]
        self._chunks.append(data)
        self._size += len(data)

    def get_buffer(self) -> memoryview:
        """A writable buffer for the next received bytes (never empty).

        Call :meth:`buffer_updated` with the number of bytes written before
        anything else touches the reader.
        """
        header = self._header
        if header is not None and not self._chunks_hold_more(header[1]):
            length = header[1]
            body = self._body
            if body is None and _DIRECT_MIN <= length <= _DIRECT_MAX and header[0] == P_DATA_TF:
                body = self._new_body(length)
            if body is not None and self._body_pos < length:
                self._into_body = True
                return body[self._body_pos :]
            self._into_body = False
            rest = length - self._size
            if self._large and rest > 0:
                # a small PDU among large ones: read exactly its end, so that
                # the next large body is not read into the scratch buffer
                return _scratch()[: min(rest, _SCRATCH_SIZE)]
            return _scratch()
        self._into_body = False
        if self._large and header is None and self._size < 6:
            return _scratch()[: 6 - self._size]  # the header alone
        return _scratch()

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were written into the buffer :meth:`get_buffer` returned."""
        if self._into_body:
            self._into_body = False
            self._body_pos += nbytes
        elif nbytes:
            self.feed(bytes(_scratch()[:nbytes]))

    def _chunks_hold_more(self, length: int) -> bool:
        # Chunks already hold the whole body (processing was paused, e.g. in
        # Sta3): anything read now belongs after it.
        return self._body is None and self._size >= length

    def _new_body(self, length: int) -> memoryview:
        buf = _reuse_spare(length)
        if buf is None:
            buf = bytearray(length)
        body = memoryview(buf)[:length]
        n = self._size  # a prefix of this body, received into the scratch buffer
        if n:
            body[:n] = self._take(n)
        self._body = body
        self._body_buf = buf
        self._body_pos = n
        return body

    def _take(self, n: int) -> memoryview:
        """Remove and return the next ``n`` bytes (n <= self._size)."""
        if n == 0:  # a zero-length body may come with no chunk left
            return memoryview(b"")
        first = self._chunks[0]
        off = self._offset
        avail = len(first) - off
        if n < avail:
            self._offset = off + n
            self._size -= n
            return memoryview(first)[off : off + n]
        if n == avail:
            self._chunks.pop(0)
            self._offset = 0
            self._size -= n
            return memoryview(first)[off:] if off else memoryview(first)
        # spans several chunks: one copy
        out = bytearray(n)
        pos = 0
        while pos < n:
            chunk = self._chunks[0]
            take = min(len(chunk) - self._offset, n - pos)
            out[pos : pos + take] = memoryview(chunk)[self._offset : self._offset + take]
            pos += take
            if self._offset + take == len(chunk):
                self._chunks.pop(0)
                self._offset = 0
            else:
                self._offset += take
        self._size -= n
        return memoryview(out)

    def next_pdu(self) -> tuple[int, memoryview] | None:
        """Return the next whole ``(pdu_type, body)`` or None if incomplete."""
        header = self._header
        if header is None:
            if self._size < 6:
                return None
            pdu_type, _res, length = _PDU_HDR.unpack(self._take(6))
            if pdu_type == P_DATA_TF:
                limit = self.max_pdata_length
                if limit and length > limit:
                    raise _err(f"P-DATA-TF of {length} bytes exceeds the negotiated maximum {limit}")
            elif pdu_type in _FIXED_LENGTH_PDUS:
                if length != 4:
                    raise _err(f"PDU type 0x{pdu_type:02X} must have length 4, not {length}")
            elif pdu_type in (A_ASSOCIATE_RQ, A_ASSOCIATE_AC):
                if length > MAX_ASSOCIATE_PDU_LENGTH:
                    raise _err(f"A-ASSOCIATE PDU of {length} bytes is too long")
            else:
                raise ProtocolError(f"unrecognised PDU type 0x{pdu_type:02X}", reason=REASON_UNRECOGNIZED_PDU)
            header = self._header = (pdu_type, length)
        length = header[1]
        body = self._body
        if body is not None:
            if self._body_pos < length:
                return None
            self._body = None
            self._header = None
            _keep_spare(self._body_buf)
            self._body_buf = None
            self._large = True
            self._small_run = 0
            return header[0], body
        if self._size < length:
            return None
        self._header = None
        if length >= _DIRECT_MIN and header[0] == P_DATA_TF:
            self._large = True
            self._small_run = 0
        elif self._large:
            self._small_run += 1
            if self._small_run > _SMALL_RUN:
                self._large = False
        return header[0], self._take(length)
