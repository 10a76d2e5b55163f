"""PDUReader: framing of a byte stream into whole PDUs.

Each input is fed whole, byte by byte, in random splits and with trailing
data (the h11 ``test_io`` pattern).  Vectors are hand-written.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.ul.errors import ProtocolError
from aiodicom.ul.pdu import PDUReader


def h(text: str) -> bytes:
    return bytes.fromhex(text)


RELEASE_RQ = h("05 00 00000004 00000000")
RELEASE_RP = h("06 00 00000004 00000000")
ABORT = h("07 00 00000004 0000 0206")
RJ = h("03 00 00000004 00 01 01 07")
P_DATA = h("04 00 00000018") + h("00000006 01 03") + b"CMD!" + h("0000000a 01 02") + b"DATASET!"
# A-ASSOCIATE-RQ with only its 68 fixed bytes: the reader does not look inside.
ASSOCIATE_RQ = h("01 00 00000044 0001 0000") + b"CALLED".ljust(16) + b"CALLING".ljust(16) + bytes(32)
EMPTY_PDATA_HEADER_ONLY = h("04 00 00000000")

STREAM_PDUS = [ASSOCIATE_RQ, P_DATA, RELEASE_RQ, P_DATA, RELEASE_RP, RJ, ABORT]
STREAM = b"".join(STREAM_PDUS)
EXPECTED = [(p[0], p[6:]) for p in STREAM_PDUS]


def drain(reader: PDUReader) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    while (item := reader.next_pdu()) is not None:
        out.append((item[0], bytes(item[1])))
    return out


def feed_in_pieces(pieces: list[bytes], max_pdata_length: int = 0) -> list[tuple[int, bytes]]:
    reader = PDUReader(max_pdata_length)
    out: list[tuple[int, bytes]] = []
    fed = 0
    for piece in pieces:
        reader.feed(piece)
        fed += len(piece)
        out.extend(drain(reader))
        assert reader.buffered <= fed
    assert reader.buffered == 0
    return out


def test_whole_stream_in_one_chunk() -> None:
    assert feed_in_pieces([STREAM]) == EXPECTED


def test_byte_by_byte() -> None:
    pieces = [STREAM[i : i + 1] for i in range(len(STREAM))]
    assert feed_in_pieces(pieces) == EXPECTED


def test_byte_by_byte_returns_each_pdu_exactly_when_complete() -> None:
    reader = PDUReader()
    ends = set()
    pos = 0
    for pdu in STREAM_PDUS:
        pos += len(pdu)
        ends.add(pos)
    for i in range(len(STREAM)):
        reader.feed(STREAM[i : i + 1])
        item = reader.next_pdu()
        if i + 1 in ends:
            assert item is not None
        else:
            assert item is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30))
def test_random_splits(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    pieces = [STREAM[a:b] for a, b in itertools.pairwise(bounds)]
    assert feed_in_pieces(pieces) == EXPECTED


def test_trailing_partial_data_is_kept() -> None:
    reader = PDUReader()
    reader.feed(RELEASE_RQ + P_DATA[:9])
    assert drain(reader) == [(0x05, bytes(4))]
    # the next header (6 bytes) has been parsed and cached; 3 body bytes wait
    assert reader.buffered == 3
    reader.feed(P_DATA[9:])
    assert drain(reader) == [(0x04, P_DATA[6:])]
    assert reader.buffered == 0


def test_header_only_partial() -> None:
    reader = PDUReader()
    reader.feed(P_DATA[:5])
    assert reader.next_pdu() is None
    assert reader.buffered == 5
    reader.feed(P_DATA[5:6])
    assert reader.next_pdu() is None  # header parsed, body not here yet
    assert reader.buffered == 0  # the header was consumed and cached
    reader.feed(P_DATA[6:])
    assert drain(reader) == [(0x04, P_DATA[6:])]


def test_empty_feed_is_harmless() -> None:
    reader = PDUReader()
    reader.feed(b"")
    assert reader.next_pdu() is None
    reader.feed(RELEASE_RP)
    reader.feed(b"")
    assert drain(reader) == [(0x06, bytes(4))]


def test_zero_length_body_is_framed() -> None:
    # A P-DATA-TF with length 0 is framed (decoding it is another layer's job).
    reader = PDUReader()
    reader.feed(EMPTY_PDATA_HEADER_ONLY + RELEASE_RQ)
    assert drain(reader) == [(0x04, b""), (0x05, bytes(4))]


def test_zero_length_body_as_the_last_bytes_fed() -> None:
    # regression: a zero-length PDU body with no chunk left after its header
    reader = PDUReader()
    reader.feed(EMPTY_PDATA_HEADER_ONLY)
    item = reader.next_pdu()
    assert item is not None
    assert item[0] == 0x04 and bytes(item[1]) == b""
    assert reader.next_pdu() is None


# --- zero copy --------------------------------------------------------------


def test_pdu_within_one_chunk_is_not_copied() -> None:
    chunk = RELEASE_RQ + P_DATA + ABORT
    reader = PDUReader()
    reader.feed(chunk)
    bodies = []
    while (item := reader.next_pdu()) is not None:
        bodies.append(item[1])
    assert [bytes(b) for b in bodies] == [bytes(4), P_DATA[6:], ABORT[6:]]
    for body in bodies:
        assert body.obj is chunk


def test_body_arriving_in_its_own_chunk_is_not_copied() -> None:
    reader = PDUReader()
    reader.feed(P_DATA[:6])
    assert reader.next_pdu() is None
    body_chunk = P_DATA[6:]
    reader.feed(body_chunk)
    item = reader.next_pdu()
    assert item is not None
    assert item[1].obj is body_chunk


def test_body_spanning_chunks_is_assembled() -> None:
    reader = PDUReader()
    reader.feed(P_DATA[:10])
    reader.feed(P_DATA[10:20])
    reader.feed(P_DATA[20:] + RELEASE_RQ)
    item = reader.next_pdu()
    assert item is not None
    assert item[0] == 0x04
    assert bytes(item[1]) == P_DATA[6:]
    assert drain(reader) == [(0x05, bytes(4))]


# --- early rejection on the header -----------------------------------------


def test_pdata_longer_than_max_raises_on_header() -> None:
    reader = PDUReader(max_pdata_length=16384)
    header = h("04 00 00004001")  # 16385
    for i in range(5):
        reader.feed(header[i : i + 1])
        assert reader.next_pdu() is None
    reader.feed(header[5:6])
    with pytest.raises(ProtocolError) as info:
        reader.next_pdu()
    assert info.value.source == 2
    assert info.value.reason == 6


def test_pdata_exactly_max_is_accepted() -> None:
    reader = PDUReader(max_pdata_length=16384)
    pdv_len = 16384 - 4
    body = pdv_len.to_bytes(4, "big") + b"\x01\x02" + bytes(pdv_len - 2)
    reader.feed(h("04 00 00004000") + body)
    item = reader.next_pdu()
    assert item is not None
    assert len(item[1]) == 16384


def test_pdata_unlimited_when_max_is_zero() -> None:
    reader = PDUReader(max_pdata_length=0)
    reader.feed(h("04 00 ffffffff"))
    assert reader.next_pdu() is None  # waits for the body; does not raise


def test_max_pdata_length_can_change() -> None:
    reader = PDUReader()
    reader.max_pdata_length = 8
    reader.feed(h("04 00 00000009"))
    with pytest.raises(ProtocolError):
        reader.next_pdu()


def test_4gb_associate_rq_raises_immediately() -> None:
    reader = PDUReader()
    reader.feed(h("01 00 ffffffff"))
    with pytest.raises(ProtocolError) as info:
        reader.next_pdu()
    assert info.value.reason == 6
    assert reader.buffered == 0


def test_4gb_associate_ac_raises_immediately() -> None:
    reader = PDUReader()
    reader.feed(h("02 00 ffffffff") + bytes(100))
    with pytest.raises(ProtocolError):
        reader.next_pdu()
    assert reader.buffered == 100  # nothing beyond what was fed


def test_associate_rq_at_one_mib_is_framed() -> None:
    reader = PDUReader()
    reader.feed(h("01 00 00100000"))
    assert reader.next_pdu() is None
    reader2 = PDUReader()
    reader2.feed(h("01 00 00100001"))
    with pytest.raises(ProtocolError):
        reader2.next_pdu()


@pytest.mark.parametrize("pdu_type", [0x00, 0x08, 0x09, 0x10, 0x47, 0x16, 0x80, 0xFF])
def test_unknown_pdu_type_is_unrecognized_pdu(pdu_type: int) -> None:
    reader = PDUReader()
    reader.feed(bytes([pdu_type, 0, 0, 0, 0, 4]))
    with pytest.raises(ProtocolError) as info:
        reader.next_pdu()
    assert info.value.source == 2
    assert info.value.reason == 1


@pytest.mark.parametrize("pdu_type", [0x03, 0x05, 0x06, 0x07])
@pytest.mark.parametrize("length", [0, 3, 5, 0xFFFFFFFF])
def test_fixed_length_pdu_with_wrong_length_raises(pdu_type: int, length: int) -> None:
    reader = PDUReader()
    reader.feed(bytes([pdu_type, 0]) + length.to_bytes(4, "big"))
    with pytest.raises(ProtocolError) as info:
        reader.next_pdu()
    assert info.value.reason == 6


def test_reserved_header_byte_not_checked() -> None:
    reader = PDUReader()
    reader.feed(h("05 ff 00000004 00000000"))
    assert drain(reader) == [(0x05, bytes(4))]
