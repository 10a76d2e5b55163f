"""Byte-level vectors for every PDU, item and sub-item (PS3.8 9.3, PS3.7 D.3.3).

Every vector below is written out by hand from the layouts in PS3.8 (item
header ``type:u8 | reserved:u8 | length:u16``, PDU header ``type:u8 |
reserved:u8 | length:u32``, all big-endian); the length fields were counted
by hand, never produced by our encoder.  Each vector is checked both ways:
``encode() == vector`` and ``decode(vector) == object``.

UIDs are spelled as ASCII byte literals next to their hand-counted length;
:func:`test_hand_counted_lengths` double-checks those counts.
"""

from __future__ import annotations

import pytest

from aiodicom.ul.errors import ProtocolError
from aiodicom.ul.pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PresentationContextAC,
    PresentationContextRQ,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
    decode_pdu,
    decode_pdvs,
    encode_ae_title,
)


def h(text: str) -> bytes:
    """Hex literal with spaces allowed."""
    return bytes.fromhex(text)


# --- UIDs (ASCII) and their hand-counted lengths ---------------------------
APP = b"1.2.840.10008.3.1.1.1"  # 21 = 0x15
VERIFICATION = b"1.2.840.10008.1.1"  # 17 = 0x11
CT = b"1.2.840.10008.5.1.4.1.1.2"  # 25 = 0x19
IVLE = b"1.2.840.10008.1.2"  # 17 = 0x11
EVLE = b"1.2.840.10008.1.2.1"  # 19 = 0x13
IMPL_UID = b"1.2.3.4"  # 7
IMPL_VERSION = b"AIODICOM_010"  # 12 = 0x0c
FIND = b"1.2.840.10008.5.1.4.1.2.1.1"  # 27 = 0x1b
SR_ENHANCED = b"1.2.840.10008.5.1.4.1.1.88.22"  # 29 = 0x1d
SR_BASIC = b"1.2.840.10008.5.1.4.1.1.88.11"  # 29 = 0x1d
SR_COMPREHENSIVE = b"1.2.840.10008.5.1.4.1.1.88.33"  # 29 = 0x1d
STORAGE_SERVICE = b"1.2.840.10008.4.2"  # 17 = 0x11
JWT = b"eyJhbGciOiJub25lIn0.e30."  # 24 = 0x18


def test_hand_counted_lengths() -> None:
    assert len(APP) == 0x15
    assert len(VERIFICATION) == 0x11
    assert len(CT) == 0x19
    assert len(IVLE) == 0x11
    assert len(EVLE) == 0x13
    assert len(IMPL_UID) == 7
    assert len(IMPL_VERSION) == 0x0C
    assert len(FIND) == 0x1B
    assert len(SR_ENHANCED) == len(SR_BASIC) == len(SR_COMPREHENSIVE) == 0x1D
    assert len(STORAGE_SERVICE) == 0x11
    assert len(JWT) == 0x18


# --- items ------------------------------------------------------------------

# Application context item (0x10): 4 + 21 = 25 bytes
APP_CTX_ITEM = h("10 00 0015") + APP

# Presentation context RQ, id 1, Verification, [IVLE, EVLE]:
#   body = 4 (id, 3 reserved) + (4+17) + (4+17) + (4+19) = 69 = 0x45
PCTX_RQ_1 = h("20 00 0045  01 00 00 00") + h("30 00 0011") + VERIFICATION + h("40 00 0011") + IVLE + h("40 00 0013") + EVLE
# Presentation context RQ, id 3, CT, [IVLE]: body = 4 + (4+25) + (4+17) = 54 = 0x36
PCTX_RQ_3 = h("20 00 0036  03 00 00 00") + h("30 00 0019") + CT + h("40 00 0011") + IVLE

# Presentation context AC (0x21): id, reserved, result, reserved, one 0x40 sub-item.
PCTX_AC_1_ACCEPT = h("21 00 001b  01 00 00 00  40 00 0013") + EVLE  # 4 + 4 + 19 = 27
PCTX_AC_3_ABSTRACT_REJECTED = h("21 00 0008  03 00 03 00  40 00 0000")  # empty TS sub-item

# User information sub-items
MAX_LENGTH_ITEM = h("51 00 0004  00 00 40 00")  # 16384
IMPL_UID_ITEM = h("52 00 0007") + IMPL_UID
IMPL_VERSION_ITEM = h("55 00 000c") + IMPL_VERSION
ASYNC_ITEM = h("53 00 0004  00 05  00 03")  # invoked 5, performed 3
# Role selection: uid-len u16 + uid + scu + scp = 2 + 25 + 2 = 29 = 0x1d
ROLE_CT_SCP_ITEM = h("54 00 001d  00 19") + CT + h("00 01")
# Extended negotiation: 2 + 27 + 3 = 32 = 0x20
EXT_NEG_ITEM = h("56 00 0020  00 1b") + FIND + h("01 00 01")
# Common extended negotiation: (2+29) + (2+17) + 2 + (2+29) = 83 = 0x53
COMMON_EXT_NEG_ITEM = (
    h("57 00 0053  00 1d") + SR_ENHANCED + h("00 11") + STORAGE_SERVICE + h("00 1f  00 1d") + SR_BASIC
)
# ... with two related general SOP classes: (2+29) + (2+17) + 2 + 2*(2+29) = 114 = 0x72
COMMON_EXT_NEG_2_ITEM = (
    h("57 00 0072  00 1d")
    + SR_ENHANCED
    + h("00 11")
    + STORAGE_SERVICE
    + h("00 3e  00 1d")
    + SR_BASIC
    + h("00 1d")
    + SR_COMPREHENSIVE
)
# ... with none: (2+29) + (2+17) + 2 = 52 = 0x34
COMMON_EXT_NEG_0_ITEM = h("57 00 0034  00 1d") + SR_ENHANCED + h("00 11") + STORAGE_SERVICE + h("00 00")
# User identity RQ, type 1 (username), positive response requested:
#   1 + 1 + (2+5) + (2+0) = 11
USER_ID_1_ITEM = h("58 00 000b  01 01  00 05") + b"alice" + h("00 00")
# type 2 (username + passcode), positive response requested: 2 + (2+4) + (2+4) = 14
USER_ID_2_ITEM = h("58 00 000e  02 01  00 04") + b"user" + h("00 04") + b"pass"
# type 5 (JWT), no response requested: 2 + (2+24) + 2 = 30 = 0x1e
USER_ID_5_ITEM = h("58 00 001e  05 00  00 18") + JWT + h("00 00")
# User identity AC: 2 + 8 = 10
USER_ID_AC_ITEM = h("59 00 000a  00 08") + b"OK-TOKEN"
UNKNOWN_SUB_ITEM = h("7f 00 0004  de ad be ef")

# Full RQ user information (encoder order: 51, 52, 53, 54, 55, 56, 57, 58):
#   8 + 11 + 8 + 33 + 16 + 36 + 87 + 18 = 217 = 0xd9
USER_INFO_RQ_ITEM = (
    h("50 00 00d9")
    + MAX_LENGTH_ITEM
    + IMPL_UID_ITEM
    + ASYNC_ITEM
    + ROLE_CT_SCP_ITEM
    + IMPL_VERSION_ITEM
    + EXT_NEG_ITEM
    + COMMON_EXT_NEG_ITEM
    + USER_ID_2_ITEM
)
# AC user information: 51, 52, 54, 55, 59 = 8 + 11 + 33 + 16 + 14 = 82 = 0x52
USER_INFO_AC_ITEM = (
    h("50 00 0052") + MAX_LENGTH_ITEM + IMPL_UID_ITEM + ROLE_CT_SCP_ITEM + IMPL_VERSION_ITEM + USER_ID_AC_ITEM
)

CALLED = b"ANY-SCP         "
CALLING = b"ECHOSCU         "

# A-ASSOCIATE-RQ: 68 fixed + 25 + 73 + 58 + 221 = 445 = 0x1bd
ASSOCIATE_RQ = (
    h("01 00 000001bd")
    + h("0001 0000")
    + CALLED
    + CALLING
    + bytes(32)
    + APP_CTX_ITEM
    + PCTX_RQ_1
    + PCTX_RQ_3
    + USER_INFO_RQ_ITEM
)
# A-ASSOCIATE-AC: 68 + 25 + 31 + 12 + 86 = 222 = 0xde
ASSOCIATE_AC = (
    h("02 00 000000de")
    + h("0001 0000")
    + CALLED
    + CALLING
    + bytes(32)
    + APP_CTX_ITEM
    + PCTX_AC_1_ACCEPT
    + PCTX_AC_3_ABSTRACT_REJECTED
    + USER_INFO_AC_ITEM
)
ASSOCIATE_RJ = h("03 00 00000004  00 01 01 07")  # permanent, service user, called AE unknown
# P-DATA-TF, two PDVs of context 1: command last (4 bytes), data last (8 bytes)
#   PDV = item-length u32 (= 2 + fragment) | ctx | msg-ctrl | fragment
P_DATA = h("04 00 00000018") + h("00000006 01 03") + b"CMD!" + h("0000000a 01 02") + b"DATASET!"
RELEASE_RQ = h("05 00 00000004  00000000")
RELEASE_RP = h("06 00 00000004  00000000")
ABORT_PROVIDER = h("07 00 00000004  00 00 02 06")
ABORT_USER = h("07 00 00000004  00 00 00 00")


def _mv(b: bytes) -> memoryview:
    return memoryview(b)


def _body(item: bytes) -> memoryview:
    """Item body after the 4-byte item header."""
    return memoryview(item)[4:]


def _ctx_rq_1() -> PresentationContextRQ:
    return PresentationContextRQ(1, VERIFICATION.decode(), [IVLE.decode(), EVLE.decode()])


def _ctx_rq_3() -> PresentationContextRQ:
    return PresentationContextRQ(3, CT.decode(), [IVLE.decode()])


def _role() -> RoleSelection:
    return RoleSelection(CT.decode(), scu_role=False, scp_role=True)


def _user_info_rq() -> UserInformation:
    return UserInformation(
        max_length=16384,
        implementation_class_uid="1.2.3.4",
        implementation_version_name="AIODICOM_010",
        async_ops_window=(5, 3),
        role_selections=[_role()],
        extended_negotiation=[SOPClassExtendedNegotiation(FIND.decode(), b"\x01\x00\x01")],
        common_extended_negotiation=[
            SOPClassCommonExtendedNegotiation(SR_ENHANCED.decode(), STORAGE_SERVICE.decode(), [SR_BASIC.decode()])
        ],
        user_identity_rq=UserIdentityRQ(2, b"user", b"pass", positive_response_requested=True),
    )


def _user_info_ac() -> UserInformation:
    return UserInformation(
        max_length=16384,
        implementation_class_uid="1.2.3.4",
        implementation_version_name="AIODICOM_010",
        role_selections=[_role()],
        user_identity_ac=UserIdentityAC(b"OK-TOKEN"),
    )


def _associate_rq() -> AAssociateRQ:
    return AAssociateRQ("ANY-SCP", "ECHOSCU", [_ctx_rq_1(), _ctx_rq_3()], _user_info_rq())


def _associate_ac() -> AAssociateAC:
    return AAssociateAC(
        "ANY-SCP",
        "ECHOSCU",
        [PresentationContextAC(1, 0, EVLE.decode()), PresentationContextAC(3, 3, None)],
        _user_info_ac(),
    )


# --- items, one by one -----------------------------------------------------

ITEM_VECTORS = [
    pytest.param(PresentationContextRQ, _ctx_rq_1(), PCTX_RQ_1, id="pctx-rq-two-ts"),
    pytest.param(PresentationContextRQ, _ctx_rq_3(), PCTX_RQ_3, id="pctx-rq-one-ts"),
    pytest.param(PresentationContextAC, PresentationContextAC(1, 0, EVLE.decode()), PCTX_AC_1_ACCEPT, id="pctx-ac-0"),
    pytest.param(RoleSelection, _role(), ROLE_CT_SCP_ITEM, id="role-selection-scp"),
    pytest.param(
        RoleSelection,
        RoleSelection(CT.decode(), scu_role=True, scp_role=True),
        h("54 00 001d  00 19") + CT + h("01 01"),
        id="role-selection-both",
    ),
    pytest.param(
        RoleSelection,
        RoleSelection(CT.decode(), scu_role=True, scp_role=False),
        h("54 00 001d  00 19") + CT + h("01 00"),
        id="role-selection-scu",
    ),
    pytest.param(
        SOPClassExtendedNegotiation,
        SOPClassExtendedNegotiation(FIND.decode(), b"\x01\x00\x01"),
        EXT_NEG_ITEM,
        id="extended-negotiation",
    ),
    pytest.param(
        SOPClassExtendedNegotiation,
        SOPClassExtendedNegotiation(FIND.decode(), b""),
        h("56 00 001d  00 1b") + FIND,
        id="extended-negotiation-empty-info",
    ),
    pytest.param(
        SOPClassCommonExtendedNegotiation,
        SOPClassCommonExtendedNegotiation(SR_ENHANCED.decode(), STORAGE_SERVICE.decode(), [SR_BASIC.decode()]),
        COMMON_EXT_NEG_ITEM,
        id="common-extended-negotiation-1",
    ),
    pytest.param(
        SOPClassCommonExtendedNegotiation,
        SOPClassCommonExtendedNegotiation(
            SR_ENHANCED.decode(), STORAGE_SERVICE.decode(), [SR_BASIC.decode(), SR_COMPREHENSIVE.decode()]
        ),
        COMMON_EXT_NEG_2_ITEM,
        id="common-extended-negotiation-2",
    ),
    pytest.param(
        SOPClassCommonExtendedNegotiation,
        SOPClassCommonExtendedNegotiation(SR_ENHANCED.decode(), STORAGE_SERVICE.decode(), []),
        COMMON_EXT_NEG_0_ITEM,
        id="common-extended-negotiation-0",
    ),
    pytest.param(
        UserIdentityRQ, UserIdentityRQ(1, b"alice", b"", positive_response_requested=True), USER_ID_1_ITEM, id="uid-rq-1"
    ),
    pytest.param(
        UserIdentityRQ, UserIdentityRQ(2, b"user", b"pass", positive_response_requested=True), USER_ID_2_ITEM, id="uid-rq-2"
    ),
    pytest.param(UserIdentityRQ, UserIdentityRQ(5, JWT, b"", positive_response_requested=False), USER_ID_5_ITEM, id="uid-rq-5"),
    pytest.param(UserIdentityAC, UserIdentityAC(b"OK-TOKEN"), USER_ID_AC_ITEM, id="uid-ac"),
    pytest.param(UserIdentityAC, UserIdentityAC(b""), h("59 00 0002  00 00"), id="uid-ac-empty"),
    pytest.param(UserInformation, _user_info_rq(), USER_INFO_RQ_ITEM, id="user-info-rq-full"),
    pytest.param(UserInformation, _user_info_ac(), USER_INFO_AC_ITEM, id="user-info-ac"),
    pytest.param(UserInformation, UserInformation(), h("50 00 0000"), id="user-info-empty"),
]


@pytest.mark.parametrize(("cls", "obj", "vector"), ITEM_VECTORS)
def test_item_vectors(cls: type, obj: object, vector: bytes) -> None:
    assert obj.encode() == vector  # type: ignore[attr-defined]
    assert cls.decode(_body(vector)) == obj  # type: ignore[attr-defined]


# Single user information sub-items, wrapped in a 0x50 item by hand.
USER_INFO_SINGLE = [
    pytest.param(UserInformation(max_length=16384), MAX_LENGTH_ITEM, id="max-length"),
    pytest.param(UserInformation(max_length=0), h("51 00 0004 00000000"), id="max-length-unlimited"),
    pytest.param(UserInformation(max_length=0xFFFFFFFF), h("51 00 0004 ffffffff"), id="max-length-u32-max"),
    pytest.param(UserInformation(implementation_class_uid="1.2.3.4"), IMPL_UID_ITEM, id="implementation-class-uid"),
    pytest.param(
        UserInformation(implementation_version_name="AIODICOM_010"), IMPL_VERSION_ITEM, id="implementation-version"
    ),
    pytest.param(UserInformation(async_ops_window=(5, 3)), ASYNC_ITEM, id="async-ops-window"),
    pytest.param(UserInformation(async_ops_window=(0, 0)), h("53 00 0004 0000 0000"), id="async-ops-unlimited"),
    pytest.param(UserInformation(role_selections=[_role()]), ROLE_CT_SCP_ITEM, id="role"),
    pytest.param(
        UserInformation(user_identity_rq=UserIdentityRQ(1, b"alice", b"", True)), USER_ID_1_ITEM, id="user-id-1"
    ),
    pytest.param(
        UserInformation(user_identity_rq=UserIdentityRQ(5, JWT, b"", False)), USER_ID_5_ITEM, id="user-id-5"
    ),
    pytest.param(UserInformation(user_identity_ac=UserIdentityAC(b"OK-TOKEN")), USER_ID_AC_ITEM, id="user-id-ac"),
]


@pytest.mark.parametrize(("obj", "sub_item"), USER_INFO_SINGLE)
def test_user_info_single_sub_item(obj: UserInformation, sub_item: bytes) -> None:
    vector = bytes([0x50, 0]) + len(sub_item).to_bytes(2, "big") + sub_item
    assert obj.encode() == vector
    assert UserInformation.decode(_body(vector)) == obj


def test_unknown_user_info_sub_item_is_kept_and_ignored() -> None:
    # max length (8) + unknown 0x7f (8) + implementation UID (11) = 27 = 0x1b
    vector = h("50 00 001b") + MAX_LENGTH_ITEM + UNKNOWN_SUB_ITEM + IMPL_UID_ITEM
    ui = UserInformation.decode(_body(vector))
    assert ui.max_length == 16384
    assert ui.implementation_class_uid == "1.2.3.4"
    assert ui.unknown == [(0x7F, b"\xde\xad\xbe\xef")]
    # it is not echoed back when we encode
    assert ui.encode() == h("50 00 0013") + MAX_LENGTH_ITEM + IMPL_UID_ITEM


def test_unknown_sub_item_inside_a_full_rq_is_ignored() -> None:
    ui_item = h("50 00 00e1") + USER_INFO_RQ_ITEM[4:] + UNKNOWN_SUB_ITEM  # 0xd9 + 8 = 0xe1
    body = h("0001 0000") + CALLED + CALLING + bytes(32) + APP_CTX_ITEM + PCTX_RQ_1 + PCTX_RQ_3 + ui_item
    rq = decode_pdu(0x01, body)
    assert isinstance(rq, AAssociateRQ)
    expected_ui = _user_info_rq()
    expected_ui.unknown = [(0x7F, b"\xde\xad\xbe\xef")]
    assert rq.user_info == expected_ui


@pytest.mark.parametrize(
    ("result", "vector", "obj"),
    [
        (0, PCTX_AC_1_ACCEPT, PresentationContextAC(1, 0, EVLE.decode())),
        # Rejections: the TS sub-item is present but not significant.
        (1, h("21 00 0008  01 00 01 00  40 00 0000"), PresentationContextAC(1, 1, None)),
        (2, h("21 00 0008  01 00 02 00  40 00 0000"), PresentationContextAC(1, 2, None)),
        (3, h("21 00 0008  01 00 03 00  40 00 0000"), PresentationContextAC(1, 3, None)),
        (4, h("21 00 0008  01 00 04 00  40 00 0000"), PresentationContextAC(1, 4, None)),
    ],
    ids=["acceptance", "user-rejection", "no-reason", "abstract-syntax-not-supported", "transfer-syntaxes-not-supported"],
)
def test_presentation_context_ac_result_codes(result: int, vector: bytes, obj: PresentationContextAC) -> None:
    assert obj.encode() == vector
    decoded = PresentationContextAC.decode(_body(vector))
    assert decoded == obj
    assert decoded.result == result


@pytest.mark.parametrize("result", [1, 2, 3, 4])
def test_rejected_context_keeps_transfer_syntax_a_peer_echoed(result: int) -> None:
    vector = h(f"21 00 0019  05 00 {result:02x} 00  40 00 0011") + IVLE
    assert PresentationContextAC.decode(_body(vector)) == PresentationContextAC(5, result, IVLE.decode())
    assert PresentationContextAC(5, result, IVLE.decode()).encode() == vector


def test_presentation_context_ac_reserved_bytes_not_checked() -> None:
    vector = h("21 00 001b  01 ff 00 ff  40 00 0013") + EVLE
    assert PresentationContextAC.decode(_body(vector)) == PresentationContextAC(1, 0, EVLE.decode())


def test_presentation_context_rq_reserved_bytes_not_checked() -> None:
    vector = h("20 00 0036  03 aa bb cc") + PCTX_RQ_3[8:]
    assert PresentationContextRQ.decode(_body(vector)) == _ctx_rq_3()


def test_common_extended_negotiation_header_byte1_is_version_zero() -> None:
    assert COMMON_EXT_NEG_ITEM[1] == 0
    assert SOPClassCommonExtendedNegotiation(SR_ENHANCED.decode(), STORAGE_SERVICE.decode(), [SR_BASIC.decode()]).encode()[1] == 0


# --- whole PDUs -------------------------------------------------------------

PDU_VECTORS = [
    pytest.param(_associate_rq(), ASSOCIATE_RQ, id="a-associate-rq"),
    pytest.param(_associate_ac(), ASSOCIATE_AC, id="a-associate-ac"),
    pytest.param(AAssociateRJ(1, 1, 7), ASSOCIATE_RJ, id="a-associate-rj"),
    pytest.param(AAssociateRJ(2, 3, 1), h("03 00 00000004  00 02 03 01"), id="a-associate-rj-transient"),
    pytest.param(AAssociateRJ(1, 2, 2), h("03 00 00000004  00 01 02 02"), id="a-associate-rj-version"),
    pytest.param(PDataTF([(1, 0x03, b"CMD!"), (1, 0x02, b"DATASET!")]), P_DATA, id="p-data-tf-two-pdvs"),
    pytest.param(
        PDataTF([(7, 0x00, b"ab")]), h("04 00 00000008  00000004 07 00") + b"ab", id="p-data-tf-one-pdv"
    ),
    pytest.param(PDataTF([(9, 0x01, b"")]), h("04 00 00000006  00000002 09 01"), id="p-data-tf-empty-fragment"),
    pytest.param(AReleaseRQ(), RELEASE_RQ, id="a-release-rq"),
    pytest.param(AReleaseRP(), RELEASE_RP, id="a-release-rp"),
    pytest.param(AAbort(2, 6), ABORT_PROVIDER, id="a-abort-provider"),
    pytest.param(AAbort(0, 0), ABORT_USER, id="a-abort-user"),
]


@pytest.mark.parametrize(("obj", "vector"), PDU_VECTORS)
def test_pdu_vectors(obj: object, vector: bytes) -> None:
    assert obj.encode() == vector  # type: ignore[attr-defined]
    # header length field == bytes after the header
    assert int.from_bytes(vector[2:6], "big") == len(vector) - 6
    decoded = decode_pdu(vector[0], vector[6:])
    assert decoded == obj
    assert type(decoded).pdu_type == vector[0]  # type: ignore[union-attr]


def test_associate_rq_fields() -> None:
    rq = decode_pdu(0x01, ASSOCIATE_RQ[6:])
    assert isinstance(rq, AAssociateRQ)
    assert rq.called_ae == "ANY-SCP"
    assert rq.calling_ae == "ECHOSCU"
    assert rq.protocol_version == 1
    assert rq.application_context == "1.2.840.10008.3.1.1.1"
    assert [c.context_id for c in rq.presentation_contexts] == [1, 3]
    assert rq.presentation_contexts[0].transfer_syntaxes == ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]
    assert rq.user_info.max_length == 16384
    assert rq.user_info.user_identity_rq == UserIdentityRQ(2, b"user", b"pass", True)


def test_associate_absolute_offsets() -> None:
    # facts sheet 1.1: version 6-7, called 10-25, calling 26-41, reserved 42-73, items from 74
    v = _associate_rq().encode()
    assert v[6:8] == b"\x00\x01"
    assert v[10:26] == CALLED
    assert v[26:42] == CALLING
    assert v[42:74] == bytes(32)
    assert v[74] == 0x10


def test_associate_ac_echoes_reserved_fields() -> None:
    reserved = bytes(range(32))
    ac = AAssociateAC("CALLED", "CALLING", [PresentationContextAC(1, 0, IVLE.decode())], UserInformation(), reserved=reserved)
    v = ac.encode()
    assert v[42:74] == reserved
    back = decode_pdu(0x02, v[6:])
    assert isinstance(back, AAssociateAC)
    assert back.reserved == reserved
    assert (back.called_ae, back.calling_ae) == ("CALLED", "CALLING")


def test_associate_ac_blank_ae_fields_are_not_checked() -> None:
    # The AE title slots of an AC are reserved: blanks must decode without error.
    body = bytearray(ASSOCIATE_AC[6:])
    body[4:36] = bytes(32)  # NULs in both AE slots
    ac = decode_pdu(0x02, bytes(body))
    assert isinstance(ac, AAssociateAC)
    assert ac.presentation_contexts == _associate_ac().presentation_contexts


def test_associate_rq_protocol_version_other_bits_decoded() -> None:
    body = bytearray(ASSOCIATE_RQ[6:])
    body[0:2] = b"\x00\x03"
    rq = decode_pdu(0x01, bytes(body))
    assert isinstance(rq, AAssociateRQ)
    assert rq.protocol_version == 3


def test_pdvs_are_views_into_the_body() -> None:
    body = P_DATA[6:]
    pdvs = decode_pdvs(memoryview(body))
    assert [(c, m, bytes(f)) for c, m, f in pdvs] == [(1, 3, b"CMD!"), (1, 2, b"DATASET!")]
    assert all(isinstance(f, memoryview) and f.obj is body for _c, _m, f in pdvs)


def test_rj_and_abort_reserved_bytes_not_checked() -> None:
    assert decode_pdu(0x03, h("ff 02 02 02")) == AAssociateRJ(2, 2, 2)
    assert decode_pdu(0x07, h("ff ff 02 01")) == AAbort(2, 1)
    assert decode_pdu(0x05, h("ffffffff")) == AReleaseRQ()
    assert decode_pdu(0x06, h("01020304")) == AReleaseRP()


def test_describe_texts() -> None:
    assert AAssociateRJ(1, 1, 7).describe() == "permanent, service user: called AE title not recognized"
    assert "protocol version not supported" in AAssociateRJ(1, 2, 2).describe()
    assert AAbort(0, 0).describe() == "aborted by the service user"
    assert AAbort(2, 1).describe().endswith("unrecognized PDU")


# --- AE titles --------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "encoded"),
    [
        ("ECHOSCU", b"ECHOSCU         "),
        ("  ECHO ", b"ECHO            "),
        ("A", b"A               "),
        ("SIXTEEN_CHARS_AE", b"SIXTEEN_CHARS_AE"),
        ("MY AE", b"MY AE           "),
    ],
)
def test_encode_ae_title(title: str, encoded: bytes) -> None:
    assert encode_ae_title(title) == encoded


@pytest.mark.parametrize("title", ["", "   ", "SEVENTEEN_CHARS_X", "BACK\\SLASH", "TAB\tAE", "caf\u00e9"])
def test_encode_ae_title_rejects(title: str) -> None:
    with pytest.raises((ValueError, UnicodeEncodeError)):
        encode_ae_title(title)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (b"ANY-SCP         ", "ANY-SCP"),
        (b"   LEADING      ", "LEADING"),
        (b"NULPAD\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", "NULPAD"),
        (b"SIXTEEN_CHARS_AE", "SIXTEEN_CHARS_AE"),
    ],
)
def test_ae_titles_stripped_on_decode(field: bytes, expected: str) -> None:
    body = bytearray(ASSOCIATE_RQ[6:])
    body[4:20] = field
    body[20:36] = field
    rq = decode_pdu(0x01, bytes(body))
    assert isinstance(rq, AAssociateRQ)
    assert rq.called_ae == expected
    assert rq.calling_ae == expected


# --- UIDs padded by a peer --------------------------------------------------


def test_uids_padded_with_trailing_nul_are_accepted() -> None:
    app = h("10 00 0016") + APP + b"\x00"
    # body = 4 + (4+18) + (4+18) = 48 = 0x30
    pctx = h("20 00 0030  01 00 00 00") + h("30 00 0012") + VERIFICATION + b"\x00" + h("40 00 0012") + IVLE + b"\x00"
    ui = h("50 00 000c") + h("52 00 0008") + IMPL_UID + b"\x00"  # 12 bytes
    body = h("0001 0000") + CALLED + CALLING + bytes(32) + app + pctx + ui
    rq = decode_pdu(0x01, body)
    assert isinstance(rq, AAssociateRQ)
    assert rq.application_context == "1.2.840.10008.3.1.1.1"
    assert rq.presentation_contexts == [PresentationContextRQ(1, "1.2.840.10008.1.1", ["1.2.840.10008.1.2"])]
    assert rq.user_info.implementation_class_uid == "1.2.3.4"


def test_uid_padded_with_space_is_accepted() -> None:
    vector = h("21 00 0018  01 00 00 00  40 00 0012") + IVLE + b" "
    assert PresentationContextAC.decode(_body(vector)).transfer_syntax == "1.2.840.10008.1.2"


def test_uids_are_sent_without_padding() -> None:
    # 17-character UID: no trailing NUL added (PS3.8 Annex F)
    assert PresentationContextRQ(1, VERIFICATION.decode(), [IVLE.decode()]).encode() == (
        h("20 00 002e  01 00 00 00  30 00 0011") + VERIFICATION + h("40 00 0011") + IVLE
    )


def test_role_selection_uid_with_nul_pad() -> None:
    vector = h("54 00 001e  00 1a") + CT + b"\x00" + h("01 01")
    assert RoleSelection.decode(_body(vector)) == RoleSelection(CT.decode(), True, True)


# --- decode errors are ProtocolError ----------------------------------------


def test_unknown_pdu_type_is_unrecognized_pdu() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_pdu(0x08, b"\x00\x00\x00\x00")
    assert info.value.reason == 1
    assert info.value.source == 2


@pytest.mark.parametrize("pdu_type", [0x03, 0x05, 0x06, 0x07])
@pytest.mark.parametrize("length", [0, 3, 5])
def test_fixed_length_pdus_wrong_length(pdu_type: int, length: int) -> None:
    with pytest.raises(ProtocolError):
        decode_pdu(pdu_type, bytes(length))


# --- pynetdicom as an independent implementation ----------------------------


def _pynetdicom_rq_primitive():  # type: ignore[no-untyped-def]
    from pynetdicom.pdu_primitives import (
        A_ASSOCIATE,
        AsynchronousOperationsWindowNegotiation,
        ImplementationClassUIDNotification,
        ImplementationVersionNameNotification,
        MaximumLengthNotification,
        SCP_SCU_RoleSelectionNegotiation,
        UserIdentityNegotiation,
    )
    from pynetdicom.pdu_primitives import SOPClassCommonExtendedNegotiation as PynCommon
    from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation as PynExt
    from pynetdicom.presentation import PresentationContext

    prim = A_ASSOCIATE()
    prim.calling_ae_title = "PYN-SCU"
    prim.called_ae_title = "AIO-SCP"
    prim.application_context_name = APP.decode()
    contexts = []
    for cid, abstract, tss in [
        (1, VERIFICATION.decode(), [IVLE.decode(), EVLE.decode()]),
        (3, CT.decode(), [EVLE.decode()]),
        (5, FIND.decode(), [IVLE.decode()]),
    ]:
        cx = PresentationContext()
        cx.context_id = cid
        cx.abstract_syntax = abstract
        cx.transfer_syntax = tss
        contexts.append(cx)
    prim.presentation_context_definition_list = contexts
    ml = MaximumLengthNotification()
    ml.maximum_length_received = 16382
    ic = ImplementationClassUIDNotification()
    ic.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.2"
    iv = ImplementationVersionNameNotification()
    iv.implementation_version_name = "PYNETDICOM_X"
    aw = AsynchronousOperationsWindowNegotiation()
    aw.maximum_number_operations_invoked = 4
    aw.maximum_number_operations_performed = 2
    rs = SCP_SCU_RoleSelectionNegotiation()
    rs.sop_class_uid = CT.decode()
    rs.scu_role = False
    rs.scp_role = True
    en = PynExt()
    en.sop_class_uid = FIND.decode()
    en.service_class_application_information = b"\x01\x01\x00\x01"
    ce = PynCommon()
    ce.sop_class_uid = SR_ENHANCED.decode()
    ce.service_class_uid = STORAGE_SERVICE.decode()
    ce.related_general_sop_class_identification = [SR_BASIC.decode(), SR_COMPREHENSIVE.decode()]
    ui = UserIdentityNegotiation()
    ui.user_identity_type = 2
    ui.primary_field = b"user"
    ui.secondary_field = b"secret"
    ui.positive_response_requested = True
    prim.user_information = [ml, ic, iv, aw, rs, en, ce, ui]
    return prim


def test_pynetdicom_encoded_rq_decodes_with_ours() -> None:
    from pynetdicom.pdu import A_ASSOCIATE_RQ

    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(_pynetdicom_rq_primitive())
    raw = pdu.encode()
    assert raw[0] == 0x01
    rq = decode_pdu(raw[0], raw[6:])
    assert isinstance(rq, AAssociateRQ)
    assert rq.called_ae == "AIO-SCP"
    assert rq.calling_ae == "PYN-SCU"
    assert rq.protocol_version == 1
    assert rq.application_context == APP.decode()
    assert rq.presentation_contexts == [
        PresentationContextRQ(1, VERIFICATION.decode(), [IVLE.decode(), EVLE.decode()]),
        PresentationContextRQ(3, CT.decode(), [EVLE.decode()]),
        PresentationContextRQ(5, FIND.decode(), [IVLE.decode()]),
    ]
    ui = rq.user_info
    assert ui.max_length == 16382
    assert ui.implementation_class_uid == "1.2.826.0.1.3680043.9.3811.2"
    assert ui.implementation_version_name == "PYNETDICOM_X"
    assert ui.async_ops_window == (4, 2)
    assert ui.role_selections == [RoleSelection(CT.decode(), False, True)]
    assert ui.extended_negotiation == [SOPClassExtendedNegotiation(FIND.decode(), b"\x01\x01\x00\x01")]
    assert ui.common_extended_negotiation == [
        SOPClassCommonExtendedNegotiation(
            SR_ENHANCED.decode(), STORAGE_SERVICE.decode(), [SR_BASIC.decode(), SR_COMPREHENSIVE.decode()]
        )
    ]
    assert ui.user_identity_rq == UserIdentityRQ(2, b"user", b"secret", True)
    assert ui.unknown == []
    # And our encoder gives the same length for the same content.
    assert len(rq.encode()) == len(raw)


def test_our_rq_decodes_with_pynetdicom() -> None:
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import (
        AsynchronousOperationsWindowNegotiation,
        ImplementationClassUIDNotification,
        ImplementationVersionNameNotification,
        MaximumLengthNotification,
        SCP_SCU_RoleSelectionNegotiation,
        UserIdentityNegotiation,
    )
    from pynetdicom.pdu_primitives import SOPClassCommonExtendedNegotiation as PynCommon
    from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation as PynExt

    raw = _associate_rq().encode()
    pdu = A_ASSOCIATE_RQ()
    pdu.decode(raw)
    assert pdu.called_ae_title == "ANY-SCP"
    assert pdu.calling_ae_title == "ECHOSCU"
    assert pdu.protocol_version == 1
    assert pdu.application_context_name == APP.decode()
    prim = pdu.to_primitive()
    ctxs = prim.presentation_context_definition_list
    assert [(c.context_id, c.abstract_syntax, list(c.transfer_syntax)) for c in ctxs] == [
        (1, VERIFICATION.decode(), [IVLE.decode(), EVLE.decode()]),
        (3, CT.decode(), [IVLE.decode()]),
    ]
    by_type = {type(i): i for i in prim.user_information}
    assert by_type[MaximumLengthNotification].maximum_length_received == 16384
    assert by_type[ImplementationClassUIDNotification].implementation_class_uid == "1.2.3.4"
    assert by_type[ImplementationVersionNameNotification].implementation_version_name == "AIODICOM_010"
    aw = by_type[AsynchronousOperationsWindowNegotiation]
    assert (aw.maximum_number_operations_invoked, aw.maximum_number_operations_performed) == (5, 3)
    rs = by_type[SCP_SCU_RoleSelectionNegotiation]
    assert (rs.sop_class_uid, rs.scu_role, rs.scp_role) == (CT.decode(), False, True)
    en = by_type[PynExt]
    assert (en.sop_class_uid, en.service_class_application_information) == (FIND.decode(), b"\x01\x00\x01")
    ce = by_type[PynCommon]
    assert ce.sop_class_uid == SR_ENHANCED.decode()
    assert ce.service_class_uid == STORAGE_SERVICE.decode()
    assert list(ce.related_general_sop_class_identification) == [SR_BASIC.decode()]
    uid = by_type[UserIdentityNegotiation]
    assert (uid.user_identity_type, uid.primary_field, uid.secondary_field) == (2, b"user", b"pass")
    assert uid.positive_response_requested is True
    # pynetdicom re-encodes it to the same bytes
    assert pdu.encode() == raw


def test_our_ac_decodes_with_pynetdicom() -> None:
    from pynetdicom.pdu import A_ASSOCIATE_AC
    from pynetdicom.pdu_primitives import (
        ImplementationClassUIDNotification,
        MaximumLengthNotification,
        SCP_SCU_RoleSelectionNegotiation,
        UserIdentityNegotiation,
    )

    raw = _associate_ac().encode()
    pdu = A_ASSOCIATE_AC()
    pdu.decode(raw)
    assert pdu.application_context_name == APP.decode()
    prim = pdu.to_primitive()
    results = prim.presentation_context_definition_results_list
    assert [(c.context_id, c.result) for c in results] == [(1, 0), (3, 3)]
    assert list(results[0].transfer_syntax) == [EVLE.decode()]
    by_type = {type(i): i for i in prim.user_information}
    assert by_type[MaximumLengthNotification].maximum_length_received == 16384
    assert by_type[ImplementationClassUIDNotification].implementation_class_uid == "1.2.3.4"
    rs = by_type[SCP_SCU_RoleSelectionNegotiation]
    assert (rs.scu_role, rs.scp_role) == (False, True)
    assert by_type[UserIdentityNegotiation].server_response == b"OK-TOKEN"


def test_pynetdicom_encoded_ac_decodes_with_ours() -> None:
    from pynetdicom.pdu import A_ASSOCIATE_AC
    from pynetdicom.pdu_primitives import (
        A_ASSOCIATE,
        ImplementationClassUIDNotification,
        MaximumLengthNotification,
    )
    from pynetdicom.presentation import PresentationContext

    prim = A_ASSOCIATE()
    prim.called_ae_title = "AIO-SCP"
    prim.calling_ae_title = "PYN-SCU"
    prim.application_context_name = APP.decode()
    prim.result = 0
    results = []
    for cid, res, ts in [(1, 0, EVLE.decode()), (3, 4, IVLE.decode()), (5, 1, IVLE.decode())]:
        cx = PresentationContext()
        cx.context_id = cid
        cx.abstract_syntax = VERIFICATION.decode()
        cx.transfer_syntax = [ts]
        cx.result = res
        results.append(cx)
    prim.presentation_context_definition_results_list = results
    ml = MaximumLengthNotification()
    ml.maximum_length_received = 0
    ic = ImplementationClassUIDNotification()
    ic.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.2"
    prim.user_information = [ml, ic]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(prim)
    raw = pdu.encode()
    ac = decode_pdu(raw[0], raw[6:])
    assert isinstance(ac, AAssociateAC)
    assert ac.application_context == APP.decode()
    assert ac.presentation_contexts == [
        PresentationContextAC(1, 0, EVLE.decode()),
        PresentationContextAC(3, 4, IVLE.decode()),
        PresentationContextAC(5, 1, IVLE.decode()),
    ]
    assert ac.user_info.max_length == 0
    assert ac.user_info.implementation_class_uid == "1.2.826.0.1.3680043.9.3811.2"
    # the reserved AE slots echo the request's titles
    assert (ac.called_ae, ac.calling_ae) == ("AIO-SCP", "PYN-SCU")
