"""Tests for PDV reassembly and message fragmentation (aiodicom.dimse.fragments)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.dimse.commands import (
    C_ECHO_RQ,
    C_STORE_RQ,
    Command,
    cancel_rq,
    echo_rq,
    echo_rsp,
    encode_command,
)
from aiodicom.dimse.fragments import (
    MIN_MAX_PDU_LENGTH,
    UNLIMITED_PDU_CAP,
    Message,
    Reassembler,
    fragment_message,
)
from aiodicom.ul.errors import ProtocolError

CT = "1.2.840.10008.5.1.4.1.1.2"
ECHO = encode_command(echo_rq(1))
STORE_CMD = Command(
    C_STORE_RQ,
    message_id=1,
    affected_sop_class_uid=CT,
    affected_sop_instance_uid="1.2.3.4",
    priority=0,
    has_dataset=True,
)
STORE = encode_command(STORE_CMD)

PDVList = list[tuple[int, int, memoryview]]


def parse_pdus(buffers: Sequence[bytes | bytearray | memoryview]) -> list[tuple[int, PDVList]]:
    """An independent P-DATA-TF parser: [(pdu length, [pdv, ...]), ...]."""
    data = b"".join(buffers)
    view = memoryview(data)
    pdus: list[tuple[int, PDVList]] = []
    pos = 0
    while pos < len(data):
        pdu_type, reserved, length = struct.unpack_from(">BBI", data, pos)
        assert (pdu_type, reserved) == (0x04, 0)
        pos += 6
        end = pos + length
        assert end <= len(data)
        pdvs: PDVList = []
        while pos < end:
            item_length, ctx, ctrl = struct.unpack_from(">IBB", data, pos)
            assert item_length >= 2
            assert pos + 4 + item_length <= end
            pdvs.append((ctx, ctrl, view[pos + 6 : pos + 4 + item_length]))
            pos += 4 + item_length
        assert pos == end
        assert pdvs, "a P-DATA-TF carries at least one PDV"
        pdus.append((length, pdvs))
    return pdus


def all_pdvs(pdus: list[tuple[int, PDVList]]) -> PDVList:
    return [pdv for _, pdvs in pdus for pdv in pdvs]


# --- Byte vectors -----------------------------------------------------------------


def test_echo_single_pdu_vector() -> None:
    out = fragment_message(1, ECHO, None, 16382)
    assert out == [bytes.fromhex("04 00 0000004a 00000046 01 03") + ECHO]
    assert len(ECHO) == 68  # 0x46 = 68 + 2, 0x4A = 0x46 + 4


def test_command_and_small_dataset_share_a_pdu() -> None:
    ds = b"\x08\x00\x18\x00\x04\x00\x00\x00" + b"1.2\x00"
    out = fragment_message(3, STORE, [ds], 16382)
    expected = (
        struct.pack(">BBI", 4, 0, 4 + 2 + len(STORE) + 4 + 2 + len(ds))
        + struct.pack(">IBB", len(STORE) + 2, 3, 0x03)
        + STORE
        + struct.pack(">IBB", len(ds) + 2, 3, 0x02)
        + ds
    )
    assert b"".join(out) == expected
    assert len(out) == 1  # small pieces are coalesced into one write


def test_exact_split_at_max_8() -> None:
    # max 8: each PDU holds one PDV with a 2-byte fragment.
    out = fragment_message(1, b"ABCD", [b"xyz!"], 8)
    assert b"".join(out) == b"".join(
        [
            bytes.fromhex("0400 00000008 00000004 0101") + b"AB",
            bytes.fromhex("0400 00000008 00000004 0103") + b"CD",
            bytes.fromhex("0400 00000008 00000004 0100") + b"xy",
            bytes.fromhex("0400 00000008 00000004 0102") + b"z!",
        ]
    )


def test_empty_dataset_sends_one_empty_last_pdv() -> None:
    datasets: list[list[bytes | memoryview]] = [[], [b""], [b"", memoryview(b"")]]
    for dataset in datasets:
        pdus = parse_pdus(fragment_message(1, ECHO, dataset, 16382))
        pdvs = all_pdvs(pdus)
        assert [(c, bytes(f)) for _, c, f in pdvs] == [(0x03, ECHO), (0x02, b"")]
    # When the command fills the PDU exactly, the empty PDV goes in a new PDU.
    pdus = parse_pdus(fragment_message(1, ECHO, [], len(ECHO) + 6))
    assert [len(p) for _, p in pdus] == [1, 1]
    assert [length for length, _ in pdus] == [len(ECHO) + 6, 6]


# --- Odd maximum sizes and round trips ---------------------------------------------

MAX_SIZES = [8, 9, 16, 17, 100, 16382, 0]
DATASET_SIZES = [0, 2, 10, 1000, 40000]


def _check_fragmentation(
    ctx: int, command: bytes, dataset: list[bytes] | None, max_pdu: int
) -> list[tuple[int, PDVList]]:
    out = fragment_message(ctx, command, dataset, max_pdu)
    pdus = parse_pdus(out)
    limit = max_pdu or UNLIMITED_PDU_CAP
    for length, pdvs in pdus:
        assert length <= limit
    pdvs = all_pdvs(pdus)
    assert all(c == ctx for c, _, _ in pdvs)
    cmd_pdvs = [p for p in pdvs if p[1] & 1]
    ds_pdvs = [p for p in pdvs if not p[1] & 1]
    # command first, then data set; control bytes exactly 0x01.../0x03, 0x00.../0x02
    assert pdvs[: len(cmd_pdvs)] == cmd_pdvs
    assert [c for _, c, _ in cmd_pdvs] == [0x01] * (len(cmd_pdvs) - 1) + [0x03]
    if dataset is None:
        assert ds_pdvs == []
    else:
        assert [c for _, c, _ in ds_pdvs] == [0x00] * (len(ds_pdvs) - 1) + [0x02]
        assert b"".join(bytes(f) for _, _, f in ds_pdvs) == b"".join(dataset)
    assert b"".join(bytes(f) for _, _, f in cmd_pdvs) == command
    # every fragment but a stream's last one is even (PS3.8 E.2)
    for stream in (cmd_pdvs, ds_pdvs):
        for _, _, frag in stream[:-1]:
            assert len(frag) % 2 == 0 and len(frag) > 0
    # PDUs are filled: no PDU but the last could have taken 2 more bytes of payload
    for length, pdvs_in in pdus[:-1]:
        assert length + 6 + 2 > limit or length == limit
    return pdus


def _reassemble_both_ways(ctx: int, pdus: list[tuple[int, PDVList]]) -> Message:
    whole = Reassembler({ctx})
    msgs_whole: list[Message] = []
    for _, pdvs in pdus:
        msgs_whole += whole.feed(pdvs)
    one = Reassembler({ctx})
    msgs_one: list[Message] = []
    for pdv in all_pdvs(pdus):
        assert not msgs_one
        msgs_one += one.feed([pdv])
    assert len(msgs_whole) == len(msgs_one) == 1
    assert not whole.in_progress and not one.in_progress
    assert msgs_whole[0] == msgs_one[0]
    return msgs_whole[0]


@pytest.mark.parametrize("max_pdu", MAX_SIZES)
@pytest.mark.parametrize("ds_size", DATASET_SIZES)
def test_fragment_and_reassemble(max_pdu: int, ds_size: int) -> None:
    if max_pdu == 8 and ds_size > 1000:
        ds_size = 4000  # keep the 2-byte-fragment case quick
    dataset = bytes((i * 7) & 0xFF for i in range(ds_size))
    pdus = _check_fragmentation(5, STORE, [dataset], max_pdu)
    msg = _reassemble_both_ways(5, pdus)
    assert msg.context_id == 5
    assert msg.command == STORE_CMD
    assert msg.dataset is not None
    assert msg.dataset_bytes() == dataset
    assert msg.dataset_length == ds_size


@pytest.mark.parametrize("max_pdu", MAX_SIZES)
def test_fragment_no_dataset(max_pdu: int) -> None:
    pdus = _check_fragmentation(7, ECHO, None, max_pdu)
    msg = _reassemble_both_ways(7, pdus)
    assert msg.command == echo_rq(1)
    assert msg.dataset is None
    assert msg.dataset_bytes() == b""


def test_several_pdvs_in_one_pdu() -> None:
    # 100-byte PDUs: the 80-byte command leaves room for a dataset fragment.
    cmd = encode_command(Command(C_STORE_RQ, message_id=1, affected_sop_class_uid="1.2",
                                 affected_sop_instance_uid="1.2", priority=0, has_dataset=True))
    pdus = _check_fragmentation(1, cmd, [b"\x00" * 300], 100)
    assert any(len(pdvs) >= 2 for _, pdvs in pdus)
    first_length, first_pdvs = pdus[0]
    assert first_length == 100 and len(first_pdvs) >= 2


@settings(max_examples=200, deadline=None)
@given(
    max_pdu=st.sampled_from([8, 9, 10, 11, 16, 17, 31, 64, 100, 101, 1000]) | st.integers(8, 400),
    pieces=st.lists(st.binary(max_size=300), max_size=6),
    with_dataset=st.booleans(),
    ctx=st.integers(1, 255).filter(lambda c: c % 2 == 1),
)
def test_fragmentation_property(
    max_pdu: int, pieces: list[bytes], with_dataset: bool, ctx: int
) -> None:
    # Input buffers of any (odd) sizes; the total is made even as DICOM
    # data sets are.  Fragments may span input buffers.
    if sum(map(len, pieces)) % 2:
        pieces.append(b"!")
    dataset = pieces if with_dataset else None
    pdus = _check_fragmentation(ctx, STORE if with_dataset else ECHO, dataset, max_pdu)
    msg = _reassemble_both_ways(ctx, pdus)
    if with_dataset:
        assert msg.dataset_bytes() == b"".join(pieces)
    else:
        assert msg.dataset is None


def test_large_dataset_is_not_copied() -> None:
    big = bytes(range(256)) * 4096  # 1 MiB
    out = fragment_message(1, STORE, [big], 16382)
    big_slices = [b for b in out if len(b) > 1000]
    assert big_slices and all(isinstance(b, memoryview) and b.obj is big for b in big_slices)
    # Only the small tail fragment (< 2 KiB) may be joined with headers.
    assert sum(len(b) for b in big_slices) >= len(big) - 2048
    assert len(out) < 2 * len(parse_pdus(out)) + 2
    pdus = parse_pdus(out)
    assert all(length <= 16382 for length, _ in pdus)
    assert b"".join(bytes(f) for _, c, f in all_pdvs(pdus) if not c & 1) == big


def test_memoryview_and_bytearray_inputs() -> None:
    ds = bytearray(b"abcdefgh" * 10)
    out = fragment_message(1, memoryview(STORE), [memoryview(ds)[:40], ds[40:]], 30)
    pdvs = all_pdvs(parse_pdus(out))
    assert b"".join(bytes(f) for _, c, f in pdvs if not c & 1) == bytes(ds)


def test_unlimited_uses_cap() -> None:
    big = b"\x01\x02" * (UNLIMITED_PDU_CAP // 2 + 10)
    pdus = parse_pdus(fragment_message(1, STORE, [big], 0))
    assert len(pdus) == 2
    assert pdus[0][0] == UNLIMITED_PDU_CAP


def test_huge_max_is_clamped_to_u32() -> None:
    pdus = parse_pdus(fragment_message(1, ECHO, [b"ab"], 1 << 40))
    assert len(pdus) == 1


@pytest.mark.parametrize("max_pdu", [1, 6, 7, -1])
def test_too_small_max_rejected(max_pdu: int) -> None:
    assert MIN_MAX_PDU_LENGTH == 8
    with pytest.raises(ValueError):
        fragment_message(1, ECHO, None, max_pdu)


@pytest.mark.parametrize("ctx", [0, 256, -1])
def test_bad_context_id_rejected(ctx: int) -> None:
    with pytest.raises(ValueError):
        fragment_message(ctx, ECHO, None, 16382)


def test_empty_command_rejected() -> None:
    with pytest.raises(ValueError):
        fragment_message(1, b"", None, 16382)


# --- Reassembler -------------------------------------------------------------------


def mv(b: bytes) -> memoryview:
    return memoryview(b)


def test_message_per_dimse_message_not_per_pdu() -> None:
    r = Reassembler({1, 3})
    rsp = encode_command(echo_rsp(1))
    msgs = r.feed([(1, 0x03, mv(ECHO)), (3, 0x03, mv(rsp)), (1, 0x03, mv(STORE)),
                   (1, 0x00, mv(b"ab")), (1, 0x02, mv(b"cd"))])
    assert [m.command.command_field for m in msgs] == [C_ECHO_RQ, 0x8030, C_STORE_RQ]
    assert [m.context_id for m in msgs] == [1, 3, 1]
    assert msgs[0].dataset is None and msgs[1].dataset is None
    assert msgs[2].dataset_bytes() == b"abcd"


def test_dataset_fragments_kept_without_copy() -> None:
    r = Reassembler([1])
    a, b = mv(b"0123"), mv(b"4567")
    assert r.feed([(1, 0x03, mv(STORE))]) == []
    assert r.in_progress and r.context_id == 1 and r.pending_command == STORE_CMD
    assert r.feed([(1, 0x00, a)]) == []
    [msg] = r.feed([(1, 0x02, b)])
    assert msg.dataset is not None
    assert msg.dataset[0] is a and msg.dataset[1] is b
    assert not r.in_progress and r.context_id is None and r.pending_command is None


def test_in_progress_during_command() -> None:
    r = Reassembler({1})
    assert not r.in_progress
    r.feed([(1, 0x01, mv(ECHO[:10]))])
    assert r.in_progress and r.context_id == 1 and r.pending_command is None
    [msg] = r.feed([(1, 0x03, mv(ECHO[10:]))])
    assert msg.command == echo_rq(1)
    assert not r.in_progress


def test_one_byte_and_odd_pdvs_accepted() -> None:
    r = Reassembler({1})
    pdvs = [(1, 0x01, mv(STORE[i : i + 1])) for i in range(len(STORE) - 1)]
    pdvs.append((1, 0x03, mv(STORE[-1:])))
    ds = b"abcdefg"  # odd pieces from a sloppy peer
    pdvs += [(1, 0x00, mv(ds[:3])), (1, 0x00, mv(ds[3:4])), (1, 0x02, mv(ds[4:]))]
    [msg] = r.feed(pdvs)
    assert msg.command == STORE_CMD
    assert msg.dataset_bytes() == ds


def test_zero_length_pdvs() -> None:
    r = Reassembler({1})
    msgs = r.feed([(1, 0x01, mv(b"")), (1, 0x01, mv(STORE)), (1, 0x03, mv(b"")),
                   (1, 0x00, mv(b"")), (1, 0x02, mv(b""))])
    assert len(msgs) == 1
    assert msgs[0].dataset is not None and msgs[0].dataset_bytes() == b""


def test_control_bits_2_to_7_ignored() -> None:
    r = Reassembler({1})
    [msg] = r.feed([(1, 0xFF, mv(ECHO))])
    assert msg.command == echo_rq(1)


def test_bytes_fragments_accepted() -> None:
    r = Reassembler({1})
    [msg] = r.feed([(1, 0x03, STORE), (1, 0x02, b"xy")])
    assert msg.dataset == [b"xy"]


# Each case: the PDVs to feed; the last one must raise.
ERROR_CASES: dict[str, list[tuple[int, int, bytes]]] = {
    "context-not-accepted": [(5, 0x03, ECHO)],
    "context-not-accepted-mid-message": [(1, 0x03, STORE), (5, 0x02, b"ab")],
    "command-fragments-on-two-contexts": [(1, 0x01, ECHO[:20]), (3, 0x03, ECHO[20:])],
    "dataset-on-other-context": [(1, 0x03, STORE), (1, 0x00, b"ab"), (3, 0x02, b"cd")],
    "dataset-first": [(1, 0x02, b"ab")],
    "dataset-before-command-complete": [(1, 0x01, STORE[:20]), (1, 0x00, b"ab")],
    "last-dataset-before-command-complete": [(1, 0x01, STORE[:20]), (1, 0x02, b"ab")],
    "command-while-dataset-expected": [(1, 0x03, STORE), (1, 0x03, ECHO)],
    "command-interleaved-in-dataset": [(1, 0x03, STORE), (1, 0x00, b"ab"), (1, 0x01, ECHO)],
    "dataset-after-no-dataset-command": [(1, 0x03, ECHO), (1, 0x02, b"ab")],
    "dataset-after-cancel": [(1, 0x03, encode_command(cancel_rq(1))), (1, 0x00, b"ab")],
    "malformed-command": [(1, 0x03, ECHO[:-2])],
    "malformed-command-fragmented": [(1, 0x01, b"\x00" * 8), (1, 0x03, b"\x01" * 8)],
    "command-too-long": [(1, 0x01, b"\x00" * 40000), (1, 0x01, b"\x00" * 40000)],
}


@pytest.mark.parametrize("name", sorted(ERROR_CASES))
def test_reassembler_protocol_errors(name: str) -> None:
    r = Reassembler({1, 3})
    *good, bad = ERROR_CASES[name]
    for pdv in good:
        r.feed([(pdv[0], pdv[1], mv(pdv[2]))])
    with pytest.raises(ProtocolError) as info:
        r.feed([(bad[0], bad[1], mv(bad[2]))])
    assert (info.value.source, info.value.reason) == (2, 6)
    assert not r.in_progress  # partial state dropped
    # ... and all at once fails the same way
    with pytest.raises(ProtocolError):
        Reassembler({1, 3}).feed([(c, f, mv(d)) for c, f, d in ERROR_CASES[name]])


def test_max_command_length_configurable() -> None:
    r = Reassembler({1}, max_command_length=len(ECHO) - 1)
    with pytest.raises(ProtocolError):
        r.feed([(1, 0x03, mv(ECHO))])
    [msg] = Reassembler({1}, max_command_length=len(ECHO)).feed([(1, 0x03, mv(ECHO))])
    assert msg.command == echo_rq(1)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 255), st.sampled_from([b"", b"ab", ECHO, STORE])),
        max_size=12,
    )
)
def test_random_pdv_sequences_only_protocol_error(pdvs: list[tuple[int, int, bytes]]) -> None:
    r = Reassembler({1, 3})
    try:
        for ctx, ctrl, data in pdvs:
            for msg in r.feed([(ctx, ctrl, mv(data))]):
                assert msg.context_id in (1, 3)
                assert (msg.dataset is None) == (not msg.command.has_dataset)
    except ProtocolError:
        pass


# --- Dataset sink -------------------------------------------------------------------


class ListSink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: memoryview) -> None:
        assert isinstance(data, memoryview)
        self.chunks.append(bytes(data))

    def close(self) -> object:
        self.closed = True
        return ("stored", b"".join(self.chunks))

    def abort(self) -> None:
        self.aborted = True


def test_dataset_sink_receives_fragments() -> None:
    sinks: list[ListSink] = []
    seen: list[tuple[int, Command]] = []

    def factory(ctx: int, command: Command) -> ListSink | None:
        seen.append((ctx, command))
        if command.command_field != C_STORE_RQ:
            return None
        sinks.append(ListSink())
        return sinks[-1]

    r = Reassembler({1}, dataset_sink=factory)
    msgs = r.feed([(1, 0x03, mv(STORE)), (1, 0x00, mv(b"ab")), (1, 0x00, b"cd"),
                   (1, 0x02, mv(b"ef"))])
    [msg] = msgs
    assert seen == [(1, STORE_CMD)]
    assert sinks[0].chunks == [b"ab", b"cd", b"ef"] and sinks[0].closed
    assert msg.dataset == [] and msg.sink_result == ("stored", b"abcdef")
    # A factory returning None keeps the data set in memory; no-dataset
    # messages never reach the factory.
    find = encode_command(Command(0x0020, message_id=2, affected_sop_class_uid="1.2", priority=0,
                                  has_dataset=True))
    [m1, m2] = r.feed([(1, 0x03, mv(ECHO)), (1, 0x03, mv(find)), (1, 0x02, mv(b"xy"))])
    assert m1.dataset is None
    assert m2.dataset_bytes() == b"xy" and m2.sink_result is None
    assert len(seen) == 2 and len(sinks) == 1


def test_dataset_sink_aborted_on_protocol_error_and_reset() -> None:
    sink = ListSink()
    r = Reassembler({1}, dataset_sink=lambda ctx, cmd: sink)
    r.feed([(1, 0x03, mv(STORE)), (1, 0x00, mv(b"ab"))])
    with pytest.raises(ProtocolError):
        r.feed([(1, 0x03, mv(ECHO))])
    assert sink.aborted and not sink.closed

    sink2 = ListSink()
    r2 = Reassembler({1}, dataset_sink=lambda ctx, cmd: sink2)
    r2.feed([(1, 0x03, mv(STORE))])
    assert r2.in_progress
    r2.reset()
    assert sink2.aborted and not r2.in_progress
    # usable again after reset
    [msg] = r2.feed([(1, 0x03, mv(ECHO))])
    assert msg.command == echo_rq(1)


# --- Spooling large data sets to disk --------------------------------------------


def test_large_dataset_is_spooled_to_a_file_and_delivered_intact() -> None:
    payload = bytes(range(256)) * 40  # 10240 bytes
    r = Reassembler({1}, max_dataset_in_memory=4096)
    msgs = r.feed([(1, 0x03, memoryview(STORE))])
    assert msgs == []
    chunks = [payload[i : i + 1000] for i in range(0, len(payload), 1000)]
    for chunk in chunks[:-1]:
        assert r.feed([(1, 0x00, memoryview(chunk))]) == []
    assert r._dataset == [], "fragments past the limit are not held in memory"
    (msg,) = r.feed([(1, 0x02, memoryview(chunks[-1]))])
    assert msg.sink_result is None
    assert msg.dataset is not None and len(msg.dataset) == 1
    view = msg.dataset[0]
    assert isinstance(view, memoryview) and view.readonly
    assert msg.dataset_length == len(payload)
    assert msg.dataset_bytes() == payload


def test_dataset_under_the_limit_stays_in_memory_as_received() -> None:
    r = Reassembler({1}, max_dataset_in_memory=4096)
    r.feed([(1, 0x03, memoryview(STORE))])
    part = memoryview(b"\x01" * 4096)
    (msg,) = r.feed([(1, 0x02, part)])
    assert msg.dataset == [part]


def test_spooled_partial_message_is_dropped_on_reset() -> None:
    r = Reassembler({1}, max_dataset_in_memory=10)
    r.feed([(1, 0x03, memoryview(STORE))])
    r.feed([(1, 0x00, memoryview(b"x" * 100))])
    spool = r._sink
    assert spool is not None
    r.reset()
    assert r._sink is None and not r.in_progress
    assert spool._file.closed  # type: ignore[attr-defined]
    # the next message reassembles normally
    (msg,) = r.feed([(1, 0x03, memoryview(ECHO))])
    assert msg.command.command_field == C_ECHO_RQ
