"""Tests for the DIMSE command-set codec (aiodicom.dimse.commands)."""

from __future__ import annotations

import dataclasses
import struct
from io import BytesIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.multival import MultiValue

from aiodicom.dimse import commands as cmds
from aiodicom.dimse.commands import (
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_ECHO_RSP,
    C_FIND_RQ,
    C_FIND_RSP,
    C_GET_RQ,
    C_GET_RSP,
    C_MOVE_RQ,
    C_MOVE_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
    NO_DATASET,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_MEDIUM,
    Command,
    decode_command,
    encode_command,
)
from aiodicom.ul.errors import ProtocolError

CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
VERIFICATION = "1.2.840.10008.1.1"


# --- A raw element builder independent of the code under test -----------------


def el(elem: int, value: bytes, group: int = 0, length: int | None = None) -> bytes:
    """One implicit-VR LE element, raw."""
    return struct.pack("<HHI", group, elem, len(value) if length is None else length) + value


def us(elem: int, value: int) -> bytes:
    return el(elem, struct.pack("<H", value))


def ui(elem: int, text: str) -> bytes:
    raw = text.encode()
    return el(elem, raw + b"\x00" * (len(raw) & 1))


def build(*elements: bytes, group_length: int | None = None) -> bytes:
    body = b"".join(elements)
    gl = len(body) if group_length is None else group_length
    return el(0x0000, struct.pack("<I", gl)) + body


# --- Hand-computed byte vectors ------------------------------------------------


def test_encode_c_echo_rq_vector() -> None:
    expected = bytes.fromhex(
        # (0000,0000) UL length 4, value 56 (= 26 + 10 + 10 + 10)
        "00000000" "04000000" "38000000"
        # (0000,0002) UI length 18: "1.2.840.10008.1.1" + NUL pad
        "00000200" "12000000" + "312e322e3834302e31303030382e312e3100"
        # (0000,0100) US 0x0030
        + "00000001" "02000000" "3000"
        # (0000,0110) US 1
        + "00001001" "02000000" "0100"
        # (0000,0800) US 0x0101 (no data set)
        + "00000008" "02000000" "0101"
    )
    assert len(expected) == 68
    got = encode_command(Command(C_ECHO_RQ, message_id=1, affected_sop_class_uid=VERIFICATION))
    assert got == expected
    assert cmds.echo_rq(1) == Command(C_ECHO_RQ, message_id=1, affected_sop_class_uid=VERIFICATION)
    assert encode_command(cmds.echo_rq(1)) == expected


def test_encode_c_store_rq_vector() -> None:
    cmd = Command(
        C_STORE_RQ,
        message_id=7,
        affected_sop_class_uid=CT,
        affected_sop_instance_uid="1.2.3.4",
        priority=PRIORITY_MEDIUM,
        move_originator_aet="SCU",
        move_originator_message_id=3,
        has_dataset=True,
    )
    expected = bytes.fromhex(
        # group length 112 = 34 + 10 + 10 + 10 + 10 + 16 + 12 + 10
        "00000000" "04000000" "70000000"
        # (0000,0002) UI len 26: 25-char CT Image Storage UID + NUL
        "00000200" "1a000000" + CT.encode().hex() + "00"
        # (0000,0100) CommandField 0x0001
        + "00000001" "02000000" "0100"
        # (0000,0110) MessageID 7
        + "00001001" "02000000" "0700"
        # (0000,0700) Priority 0
        + "00000007" "02000000" "0000"
        # (0000,0800) CommandDataSetType 0x0001 (data set follows)
        + "00000008" "02000000" "0100"
        # (0000,1000) UI len 8: "1.2.3.4" + NUL
        + "00000010" "08000000" "312e322e332e3400"
        # (0000,1030) AE len 4: "SCU" + space
        + "00003010" "04000000" "53435520"
        # (0000,1031) US 3
        + "00003110" "02000000" "0300"
    )
    assert len(expected) == 12 + 112
    assert encode_command(cmd) == expected
    assert decode_command(expected) == cmd


def test_encode_offending_element_and_padding() -> None:
    cmd = Command(
        C_STORE_RSP,
        message_id_being_responded_to=2,
        status=0xA900,
        offending_element=[0x00100010, 0x7FE00010],
        error_comment="bad",
    )
    raw = encode_command(cmd)
    # AT: (0010,0010) (7FE0,0010) as u16 pairs, LE
    assert el(0x0901, bytes.fromhex("10001000" "e07f1000")) in raw
    # LO padded with a space to even length
    assert el(0x0902, b"bad ") in raw
    assert decode_command(raw) == cmd


# --- Round trips of every C-service message -------------------------------------

ALL_MESSAGES = [
    Command(C_ECHO_RQ, message_id=1, affected_sop_class_uid=VERIFICATION),
    Command(C_ECHO_RSP, message_id_being_responded_to=1, affected_sop_class_uid=VERIFICATION,
            status=0, error_comment="ok"),
    Command(C_STORE_RQ, message_id=65535, affected_sop_class_uid=CT,
            affected_sop_instance_uid="1.2.3.4.5", priority=PRIORITY_HIGH,
            move_originator_aet="MOVER", move_originator_message_id=9, has_dataset=True),
    Command(C_STORE_RSP, message_id_being_responded_to=65535, affected_sop_class_uid=CT,
            affected_sop_instance_uid="1.2.3.4.5", status=0xB000,
            offending_element=[0x00080018], error_comment="coerced"),
    Command(C_FIND_RQ, message_id=2, affected_sop_class_uid=STUDY_FIND,
            priority=PRIORITY_LOW, has_dataset=True),
    Command(C_FIND_RSP, message_id_being_responded_to=2, affected_sop_class_uid=STUDY_FIND,
            status=0xFF00, has_dataset=True),
    Command(C_GET_RQ, message_id=3, affected_sop_class_uid=STUDY_GET,
            priority=PRIORITY_MEDIUM, has_dataset=True),
    Command(C_GET_RSP, message_id_being_responded_to=3, affected_sop_class_uid=STUDY_GET,
            status=0xFF00, remaining=10, completed=5, failed=1, warning=2),
    Command(C_MOVE_RQ, message_id=4, affected_sop_class_uid=STUDY_MOVE,
            priority=PRIORITY_MEDIUM, move_destination="STORESCP", has_dataset=True),
    Command(C_MOVE_RSP, message_id_being_responded_to=4, affected_sop_class_uid=STUDY_MOVE,
            status=0xA801, remaining=0, completed=0, failed=0, warning=0,
            error_comment="move destination unknown", error_id=17, has_dataset=True),
    Command(C_CANCEL_RQ, message_id_being_responded_to=3),
]


def test_all_eleven_command_fields_covered() -> None:
    assert {c.command_field for c in ALL_MESSAGES} == {
        0x0001, 0x8001, 0x0010, 0x8010, 0x0020, 0x8020, 0x0021, 0x8021, 0x0030, 0x8030, 0x0FFF,
    }


@pytest.mark.parametrize("cmd", ALL_MESSAGES, ids=lambda c: f"{c.command_field:#06x}")
def test_round_trip(cmd: Command) -> None:
    raw = encode_command(cmd)
    assert len(raw) % 2 == 0
    assert decode_command(raw) == cmd
    assert decode_command(bytearray(raw)) == cmd
    assert decode_command(memoryview(raw)) == cmd
    assert cmd.is_request != cmd.is_response
    assert cmd.is_response == bool(cmd.command_field & 0x8000)


def test_requested_fields_and_extra_round_trip() -> None:
    # An N-GET-RQ style command: Requested SOP Class/Instance plus an unknown
    # element (0000,1005) AttributeIdentifierList kept raw in ``extra``.
    cmd = Command(
        0x0110,
        message_id=5,
        requested_sop_class_uid="1.2.840.10008.5.1.1.1",
        requested_sop_instance_uid="1.2.3",
        extra={0x1005: bytes.fromhex("10001000"), 0x0001: b"\x01\x02\x03\x04"},
    )
    raw = encode_command(cmd)
    # ascending order: (0000,0001) right after the group length
    assert raw[12:16] == bytes.fromhex("00000100")
    tags = _tags(raw)
    assert tags == sorted(tags)
    assert decode_command(raw) == cmd


def test_extra_odd_value_padded() -> None:
    cmd = Command(0x0110, message_id=1, extra={0x1008: b"abc"})
    assert decode_command(encode_command(cmd)).extra == {0x1008: b"abc\x00"}


@pytest.mark.parametrize(
    "bad",
    [
        Command(C_ECHO_RQ, message_id=70000, affected_sop_class_uid=VERIFICATION),
        Command(C_ECHO_RQ, message_id=-1, affected_sop_class_uid=VERIFICATION),
        Command(0x10000),
        Command(C_ECHO_RQ, message_id=1, affected_sop_class_uid="1.2.\u00e9"),
        Command(C_MOVE_RQ, message_id=1, move_destination="X" * 17),
        Command(C_STORE_RSP, status=0, offending_element=[1 << 32]),
        Command(C_ECHO_RQ, message_id=1, extra={0x0110: b"\x01\x00"}),
        Command(C_ECHO_RQ, message_id=1, extra={0x0800: b"\x01\x00"}),
        Command(C_ECHO_RQ, message_id=1, extra={0x0000: b"\x01\x00\x00\x00"}),
        Command(C_ECHO_RQ, message_id=1, extra={0x00080016: b"12"}),
    ],
)
def test_encode_rejects_bad_values(bad: Command) -> None:
    with pytest.raises(ValueError):
        encode_command(bad)


def test_long_error_comment_truncated_to_lo_limit() -> None:
    cmd = Command(C_STORE_RSP, message_id_being_responded_to=1, status=0xC000, error_comment="x" * 100)
    assert decode_command(encode_command(cmd)).error_comment == "x" * 64


def test_helpers() -> None:
    assert cmds.echo_rsp(4, 0) == Command(
        C_ECHO_RSP, message_id_being_responded_to=4, status=0, affected_sop_class_uid=VERIFICATION
    )
    assert cmds.cancel_rq(9) == Command(C_CANCEL_RQ, message_id_being_responded_to=9)
    store = ALL_MESSAGES[2]
    rsp = cmds.response_to(store, 0)
    assert rsp == Command(
        C_STORE_RSP,
        message_id_being_responded_to=65535,
        affected_sop_class_uid=CT,
        affected_sop_instance_uid="1.2.3.4.5",
        status=0,
    )
    find_rsp = cmds.response_to(ALL_MESSAGES[4], 0xFF00, has_dataset=True)
    assert find_rsp.command_field == C_FIND_RSP and find_rsp.has_dataset
    assert find_rsp.affected_sop_instance_uid is None
    with pytest.raises(ValueError):
        cmds.response_to(rsp, 0)
    with pytest.raises(ValueError):
        cmds.response_to(cmds.cancel_rq(1), 0)


# --- Liberal decoding -----------------------------------------------------------


def test_decode_strips_padding_and_accepts_any_dataset_type() -> None:
    raw = build(
        el(0x0002, b"1.2.840.10008.5.1.4.1.2.2.1 "),  # space-padded UID (wrong, but seen)
        us(0x0100, C_FIND_RQ),
        us(0x0110, 1),
        el(0x0600, b" DEST  \x00"),
        us(0x0700, 0),
        us(0x0800, 0x0102),  # DCMTK-style "data set present"
    )
    cmd = decode_command(raw)
    assert cmd.affected_sop_class_uid == STUDY_FIND
    assert cmd.move_destination == "DEST"
    assert cmd.has_dataset is True


def test_decode_missing_dataset_type_means_none() -> None:
    raw = build(ui(0x0002, VERIFICATION), us(0x0100, C_ECHO_RQ), us(0x0110, 1))
    assert decode_command(raw).has_dataset is False


def test_decode_odd_length_string_accepted() -> None:
    raw = build(el(0x0002, b"1.2.840.10008.1.1"), us(0x0100, C_ECHO_RQ), us(0x0110, 1))
    assert decode_command(raw).affected_sop_class_uid == VERIFICATION


def test_decode_unknown_command_field_passes() -> None:
    raw = build(us(0x0100, 0x0140), us(0x0110, 3), us(0x0800, NO_DATASET))  # N-CREATE-RQ
    cmd = decode_command(raw)
    assert cmd.command_field == 0x0140 and cmd.message_id == 3


def test_decode_empty_offending_element() -> None:
    raw = build(us(0x0100, C_STORE_RSP), us(0x0120, 1), us(0x0900, 0x0120), el(0x0901, b""))
    assert decode_command(raw).offending_element == []


# --- Malformed input -------------------------------------------------------------

ECHO_BODY = [ui(0x0002, VERIFICATION), us(0x0100, C_ECHO_RQ), us(0x0110, 1), us(0x0800, 0x0101)]


def _tags(raw: bytes) -> list[int]:
    tags, pos = [], 0
    while pos < len(raw):
        g, e, n = struct.unpack_from("<HHI", raw, pos)
        tags.append(g << 16 | e)
        pos += 8 + n
    return tags


MALFORMED = {
    "empty": b"",
    "short-header": b"\x00\x00\x00\x00\x04\x00",
    "short-group-length-value": b"\x00\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    "group-length-only-header": el(0x0000, b"\x00\x00\x00\x00")[:11],
    "no-group-length": b"".join(ECHO_BODY),
    "group-length-first-wrong-group": el(0x0000, b"\x38\x00\x00\x00", group=8) + b"".join(ECHO_BODY),
    "group-length-length-2": el(0x0000, b"\x38\x00") + b"".join(ECHO_BODY),
    "group-length-too-big": build(*ECHO_BODY, group_length=57),
    "group-length-too-small": build(*ECHO_BODY, group_length=55),
    "group-length-trailing-junk": build(*ECHO_BODY, group_length=56) + b"\x00\x00",
    "truncated-element-header": build(*ECHO_BODY, b"\x00\x00\x00\x09"),
    "truncated-value": build(*ECHO_BODY[:-1], us(0x0800, 0x0101)[:-1]),
    "length-past-end": build(*ECHO_BODY[:-1], el(0x0800, b"\x01\x01", length=4)),
    "length-huge": build(*ECHO_BODY[:-1], el(0x0800, b"\x01\x01", length=0x7FFFFFFF)),
    "undefined-length": build(*ECHO_BODY[:-1], el(0x0800, b"\x01\x01", length=0xFFFFFFFF)),
    "other-group": build(*ECHO_BODY, el(0x0016, b"1.2\x00", group=0x0008)),
    "other-group-odd-group": build(*ECHO_BODY[:1], el(0x0100, b"\x30\x00", group=0x0001), *ECHO_BODY[2:]),
    "not-ascending": build(ECHO_BODY[1], ECHO_BODY[0], *ECHO_BODY[2:]),
    "repeated": build(*ECHO_BODY[:2], ECHO_BODY[1], *ECHO_BODY[2:]),
    "repeated-group-length": build(el(0x0000, b"\x00\x00\x00\x00"), *ECHO_BODY),
    "no-command-field": build(ECHO_BODY[0], *ECHO_BODY[2:]),
    "command-field-length-4": build(ECHO_BODY[0], el(0x0100, b"\x30\x00\x00\x00"), *ECHO_BODY[2:]),
    "command-field-length-0": build(ECHO_BODY[0], el(0x0100, b""), *ECHO_BODY[2:]),
    "message-id-length-1": build(*ECHO_BODY[:2], el(0x0110, b"\x01"), ECHO_BODY[3]),
    "dataset-type-length-4": build(*ECHO_BODY[:3], el(0x0800, b"\x01\x01\x00\x00")),
    "status-length-4": build(us(0x0100, C_ECHO_RSP), us(0x0120, 1), us(0x0800, 0x0101),
                             el(0x0900, b"\x00\x00\x00\x00")),
    "at-length-6": build(us(0x0100, C_STORE_RSP), us(0x0120, 1), us(0x0800, 0x0101),
                         us(0x0900, 0xA900), el(0x0901, b"\x10\x00\x10\x00\x20\x00")),
    "non-ascii-uid": build(el(0x0002, b"1.2.\xe9\x00"), *ECHO_BODY[1:]),
}

_BASE_RQ = {
    C_STORE_RQ: {
        0x0002: ui(0x0002, CT), 0x0110: us(0x0110, 1), 0x0700: us(0x0700, 0),
        0x0800: us(0x0800, 1), 0x1000: ui(0x1000, "1.2.3"),
    },
    C_FIND_RQ: {0x0002: ui(0x0002, STUDY_FIND), 0x0110: us(0x0110, 1), 0x0700: us(0x0700, 0),
                0x0800: us(0x0800, 1)},
    C_GET_RQ: {0x0002: ui(0x0002, STUDY_GET), 0x0110: us(0x0110, 1), 0x0700: us(0x0700, 0),
               0x0800: us(0x0800, 1)},
    C_MOVE_RQ: {0x0002: ui(0x0002, STUDY_MOVE), 0x0110: us(0x0110, 1), 0x0600: el(0x0600, b"DEST"),
                0x0700: us(0x0700, 0), 0x0800: us(0x0800, 1)},
    C_ECHO_RQ: {0x0002: ui(0x0002, VERIFICATION), 0x0110: us(0x0110, 1), 0x0800: us(0x0800, 0x0101)},
    C_CANCEL_RQ: {0x0120: us(0x0120, 1), 0x0800: us(0x0800, 0x0101)},
}
for _rsp in (C_STORE_RSP, C_FIND_RSP, C_GET_RSP, C_MOVE_RSP, C_ECHO_RSP, 0x8120):
    _BASE_RQ[_rsp] = {0x0120: us(0x0120, 1), 0x0800: us(0x0800, 0x0101), 0x0900: us(0x0900, 0)}


def _assemble(field: int, elements: dict[int, bytes]) -> bytes:
    elements = {**elements, 0x0100: us(0x0100, field)}
    return build(*(elements[k] for k in sorted(elements)))


@pytest.mark.parametrize("field", sorted(_BASE_RQ), ids=hex)
def test_required_base_is_valid(field: int) -> None:
    cmd = decode_command(_assemble(field, _BASE_RQ[field]))
    assert cmd.command_field == field


_MISSING = [
    (field, tag)
    for field, elements in _BASE_RQ.items()
    for tag in elements
    # 0x0800 absent means "no data set": required only where a data set is.
    if not (tag == 0x0800 and elements[0x0800] == us(0x0800, 0x0101))
]


@pytest.mark.parametrize("field,tag", _MISSING, ids=lambda v: hex(v))
def test_missing_required_element(field: int, tag: int) -> None:
    elements = dict(_BASE_RQ[field])
    del elements[tag]
    with pytest.raises(ProtocolError) as info:
        decode_command(_assemble(field, elements))
    assert (info.value.source, info.value.reason) == (2, 6)


@pytest.mark.parametrize("field", [C_STORE_RQ, C_FIND_RQ, C_GET_RQ, C_MOVE_RQ])
def test_request_needing_dataset_with_no_dataset(field: int) -> None:
    elements = {**_BASE_RQ[field], 0x0800: us(0x0800, 0x0101)}
    with pytest.raises(ProtocolError):
        decode_command(_assemble(field, elements))


@pytest.mark.parametrize("tag", [0x0002, 0x1000])
def test_empty_required_uid(tag: int) -> None:
    elements = {**_BASE_RQ[C_STORE_RQ], tag: el(tag, b"")}
    with pytest.raises(ProtocolError):
        decode_command(_assemble(C_STORE_RQ, elements))


def test_n_request_needs_message_id() -> None:
    with pytest.raises(ProtocolError):
        decode_command(build(us(0x0100, 0x0140), us(0x0800, NO_DATASET)))


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed(name: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_command(MALFORMED[name])
    assert (info.value.source, info.value.reason) == (2, 6)


def test_valid_echo_built_by_hand_decodes() -> None:
    # Guards the malformed cases above: they derive from this valid one.
    assert decode_command(build(*ECHO_BODY)) == cmds.echo_rq(1)


def test_decode_does_not_allocate_from_untrusted_length() -> None:
    # A value length of ~2 GiB before 2 real bytes: must fail fast.
    with pytest.raises(ProtocolError, match="past the end"):
        decode_command(MALFORMED["length-huge"])


# --- Property tests -----------------------------------------------------------

VALID = [encode_command(c) for c in ALL_MESSAGES]


def _decode_or_protocol_error(data: bytes) -> None:
    try:
        decode_command(data)
    except ProtocolError:
        pass


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_only_protocol_error(data: bytes) -> None:
    _decode_or_protocol_error(data)


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_random_body_with_correct_group_length(body: bytes) -> None:
    # Gets past the group-length check so the element loop sees junk.
    _decode_or_protocol_error(build(body))


@settings(max_examples=1000)
@given(
    st.sampled_from(VALID),
    st.lists(
        st.tuples(st.sampled_from(["flip", "del", "ins", "trunc"]), st.integers(0, 1 << 16),
                  st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_valid_commands_only_protocol_error(
    valid: bytes, mutations: list[tuple[str, int, int]]
) -> None:
    data = bytearray(valid)
    for op, where, byte in mutations:
        i = where % (len(data) + 1)
        if op == "flip" and i < len(data):
            data[i] ^= byte or 1
        elif op == "del" and i < len(data):
            del data[i]
        elif op == "ins":
            data.insert(i, byte)
        elif op == "trunc":
            del data[i:]
    _decode_or_protocol_error(bytes(data))


_uid = st.lists(st.integers(0, 999999), min_size=1, max_size=9).map(
    lambda parts: ".".join(map(str, [parts[0] + 1, *parts[1:]]))
)


def _padded_text(alphabet: str, max_size: int) -> st.SearchStrategy[str]:
    # Leading/trailing spaces are insignificant in AE and LO, so generate
    # values without them.
    return st.text(alphabet, min_size=1, max_size=max_size).map(str.strip).filter(bool)


_ae = _padded_text("ABCXYZ019_ ", 16)
_lo = _padded_text("abcXYZ019 .:", 64)
_u16 = st.integers(0, 0xFFFF)


def _opt(s: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.none() | s


@st.composite
def commands(draw: st.DrawFn) -> Command:
    return Command(
        command_field=draw(st.sampled_from([c.command_field for c in ALL_MESSAGES])),
        message_id=draw(_u16),
        message_id_being_responded_to=draw(_u16),
        affected_sop_class_uid=draw(_uid),
        requested_sop_class_uid=draw(_opt(_uid)),  # type: ignore[arg-type]
        affected_sop_instance_uid=draw(_uid),
        requested_sop_instance_uid=draw(_opt(_uid)),  # type: ignore[arg-type]
        priority=draw(st.sampled_from([0, 1, 2])),
        status=draw(_u16),
        offending_element=draw(_opt(st.lists(st.integers(0, 0xFFFFFFFF), max_size=4))),  # type: ignore[arg-type]
        error_comment=draw(_opt(_lo)),  # type: ignore[arg-type]
        error_id=draw(_opt(_u16)),  # type: ignore[arg-type]
        move_destination=draw(_ae),
        remaining=draw(_opt(_u16)),  # type: ignore[arg-type]
        completed=draw(_opt(_u16)),  # type: ignore[arg-type]
        failed=draw(_opt(_u16)),  # type: ignore[arg-type]
        warning=draw(_opt(_u16)),  # type: ignore[arg-type]
        move_originator_aet=draw(_opt(_ae)),  # type: ignore[arg-type]
        move_originator_message_id=draw(_opt(_u16)),  # type: ignore[arg-type]
        has_dataset=True,
    )


@settings(max_examples=200, deadline=None)
@given(commands())
def test_round_trip_property(cmd: Command) -> None:
    raw = encode_command(cmd)
    assert decode_command(raw) == cmd
    tags = _tags(raw)
    assert tags == sorted(set(tags))
    assert struct.unpack_from("<I", raw, 8)[0] == len(raw) - 12


# --- Cross-checks with pydicom ---------------------------------------------------

_KEYWORDS = {
    "affected_sop_class_uid": "AffectedSOPClassUID",
    "requested_sop_class_uid": "RequestedSOPClassUID",
    "command_field": "CommandField",
    "message_id": "MessageID",
    "message_id_being_responded_to": "MessageIDBeingRespondedTo",
    "move_destination": "MoveDestination",
    "priority": "Priority",
    "status": "Status",
    "offending_element": "OffendingElement",
    "error_comment": "ErrorComment",
    "error_id": "ErrorID",
    "affected_sop_instance_uid": "AffectedSOPInstanceUID",
    "requested_sop_instance_uid": "RequestedSOPInstanceUID",
    "remaining": "NumberOfRemainingSuboperations",
    "completed": "NumberOfCompletedSuboperations",
    "failed": "NumberOfFailedSuboperations",
    "warning": "NumberOfWarningSuboperations",
    "move_originator_aet": "MoveOriginatorApplicationEntityTitle",
    "move_originator_message_id": "MoveOriginatorMessageID",
}


def test_keyword_table_covers_every_field() -> None:
    names = {f.name for f in dataclasses.fields(Command)} - {"has_dataset", "extra"}
    assert names == set(_KEYWORDS)


def _pydicom_value(ds: Dataset, keyword: str) -> object:
    value = ds[keyword].value
    if keyword == "OffendingElement":
        # pydicom gives a single BaseTag for VM 1, a MultiValue otherwise.
        return [int(t) for t in (value if isinstance(value, MultiValue) else [value])]
    return value


@pytest.mark.parametrize("cmd", ALL_MESSAGES, ids=lambda c: f"{c.command_field:#06x}")
def test_pydicom_reads_our_encoding(cmd: Command) -> None:
    raw = encode_command(cmd)
    ds = read_dataset(BytesIO(raw), is_implicit_VR=True, is_little_endian=True)
    assert ds.CommandGroupLength == len(raw) - 12
    assert ds.CommandDataSetType == (0x0001 if cmd.has_dataset else 0x0101)
    present = {k for k, v in dataclasses.asdict(cmd).items() if v is not None} - {"has_dataset", "extra"}
    assert {e.keyword for e in ds} == {_KEYWORDS[a] for a in present} | {
        "CommandGroupLength",
        "CommandDataSetType",
    }
    for attr in present:
        assert _pydicom_value(ds, _KEYWORDS[attr]) == getattr(cmd, attr), attr


def _pydicom_encode(cmd: Command, dataset_type: int = 0x0102) -> bytes:
    ds = Dataset()
    for attr, keyword in _KEYWORDS.items():
        value = getattr(cmd, attr)
        if value is not None:
            setattr(ds, keyword, value)
    ds.CommandDataSetType = dataset_type if cmd.has_dataset else 0x0101

    def write() -> bytes:
        fp = DicomBytesIO()
        fp.is_little_endian = True
        fp.is_implicit_VR = True
        write_dataset(fp, ds)
        return bytes(fp.getvalue())

    ds.CommandGroupLength = len(write())
    return write()


@pytest.mark.parametrize("cmd", ALL_MESSAGES, ids=lambda c: f"{c.command_field:#06x}")
def test_we_read_pydicom_encoding(cmd: Command) -> None:
    raw = _pydicom_encode(cmd)
    assert decode_command(raw) == cmd


@settings(max_examples=100, deadline=None)
@given(commands())
def test_we_read_pydicom_encoding_property(cmd: Command) -> None:
    assert decode_command(_pydicom_encode(cmd)) == cmd


@pytest.mark.parametrize("cmd", ALL_MESSAGES, ids=lambda c: f"{c.command_field:#06x}")
def test_pydicom_encoding_equals_ours(cmd: Command) -> None:
    # pydicom pads UI with NUL and AE/LO with space exactly as we do.
    assert _pydicom_encode(cmd, dataset_type=0x0001) == encode_command(cmd)


def test_codec_modules_import_neither_asyncio_nor_pydicom() -> None:
    # Checked on the source: importing ``aiodicom`` itself pulls in the
    # asyncio glue, so sys.modules cannot tell.
    import ast
    import pathlib

    import aiodicom.dimse.commands as mod

    banned = {"asyncio", "pydicom", "pynetdicom"}
    for name in ("commands.py", "status.py", "fragments.py"):
        tree = ast.parse((pathlib.Path(mod.__file__).parent / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & banned, (name, roots)
