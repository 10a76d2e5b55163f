"""PDUReader's buffered receive: get_buffer() / buffer_updated().

A simulated transport writes the stream into whatever buffer the reader
hands out, as a kernel ``recv_into`` would (at most the buffer's length,
at most what the peer has sent).  The PDUs that come out must be exactly
those of the plain ``feed`` path, and large P-DATA-TF bodies must be read
in place (the buffer handed out is the body's own).
"""

from __future__ import annotations

from collections.abc import Iterator

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.ul import pdu as P
from aiodicom.ul.connection import Connection
from aiodicom.ul.errors import ProtocolError
from aiodicom.ul.pdu import PDUReader


def pdata(body_len: int, fill: int = 0x41) -> bytes:
    """A P-DATA-TF PDU with one PDV item of ``body_len`` bytes in all."""
    value = bytes([fill]) * (body_len - 6)
    return struct.pack(">BBL", 0x04, 0, body_len) + struct.pack(">LBB", body_len - 4, 1, 0x00) + value


RELEASE_RQ = bytes.fromhex("05 00 00000004 00000000")
SMALL = pdata(64, 0x53)
BIG = pdata(100_000, 0x42)
HUGE = pdata(P._DIRECT_MAX + 1024, 0x48)


def read_buffered(stream: bytes, arrivals: list[int], reader: PDUReader | None = None) -> list[tuple[int, bytes]]:
    """Deliver ``stream`` as arrivals of the given sizes through get_buffer()."""
    reader = reader or PDUReader()
    out: list[tuple[int, bytes]] = []
    pos = 0
    sent = 0
    for size in arrivals + [len(stream)]:
        sent = min(len(stream), sent + size)
        while pos < sent:  # the kernel has sent - pos bytes queued
            buf = reader.get_buffer()
            assert len(buf) > 0
            n = min(len(buf), sent - pos)
            buf[:n] = stream[pos : pos + n]
            reader.buffer_updated(n)
            pos += n
            while (item := reader.next_pdu()) is not None:
                out.append((item[0], bytes(item[1])))
    assert reader.buffered == 0
    return out


def expected(pdus: list[bytes]) -> list[tuple[int, bytes]]:
    return [(p[0], p[6:]) for p in pdus]


_STREAMS = {
    "small": [SMALL, RELEASE_RQ],
    "big": [BIG],
    "mixed": [SMALL, BIG, BIG, SMALL, BIG, RELEASE_RQ],
    "large-then-small-run": [BIG] * 3 + [SMALL] * 12 + [BIG],
    "huge": [HUGE, SMALL],
}
# every stream in arrivals of 1 byte up to all at once, at most 50,000 arrivals each
_CASES = [
    (name, arrival)
    for name, pdus in _STREAMS.items()
    for arrival in (1, 7, 4096, 65536, 1 << 30)
    if sum(map(len, pdus)) // arrival <= 50_000
]


@pytest.mark.parametrize(("name", "arrival"), _CASES, ids=[f"{n}-{a}" for n, a in _CASES])
def test_buffered_equals_fed(name: str, arrival: int) -> None:
    pdus = _STREAMS[name]
    stream = b"".join(pdus)
    arrivals = [arrival] * (len(stream) // arrival + 1) if arrival < len(stream) else [len(stream)]
    assert read_buffered(stream, arrivals) == expected(pdus)


@settings(max_examples=60, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["small", "big", "release", "mid"]), min_size=1, max_size=8),
    seed=st.integers(0, 2**32 - 1),
)
def test_buffered_random_arrivals(kinds: list[str], seed: int) -> None:
    table = {"small": SMALL, "big": BIG, "release": RELEASE_RQ, "mid": pdata(P._DIRECT_MIN + 3, 0x4D)}
    pdus = [table[k] for k in kinds]
    stream = b"".join(pdus)
    rng = random.Random(seed)
    arrivals = [rng.choice([1, 5, 6, 300, 20000, 70000]) for _ in range(len(stream) // 200 + 2)]
    assert read_buffered(stream, arrivals) == expected(pdus)


def test_large_body_is_read_in_place() -> None:
    reader = PDUReader()
    header, body = BIG[:6], BIG[6:]
    buf = reader.get_buffer()
    buf[:6] = header
    reader.buffer_updated(6)
    assert reader.next_pdu() is None
    # Now the buffer handed out is the body's own, exactly as long as the body.
    into = reader.get_buffer()
    assert len(into) == len(body)
    into[:1000] = body[:1000]
    reader.buffer_updated(1000)
    assert reader.next_pdu() is None
    into = reader.get_buffer()
    assert len(into) == len(body) - 1000
    into[:] = body[1000:]
    reader.buffer_updated(len(body) - 1000)
    item = reader.next_pdu()
    assert item is not None
    assert item[0] == 0x04 and bytes(item[1]) == body
    # the PDU returned is a view of the buffer the data was written into
    # (a reused buffer may be longer than this body; the view is exact)
    assert isinstance(item[1].obj, bytearray) and len(item[1].obj) >= len(body)
    assert len(item[1]) == len(body)


def test_after_a_large_pdu_the_header_is_read_alone() -> None:
    reader = PDUReader()
    read_buffered(BIG, [len(BIG)], reader)
    # Large PDUs are arriving: the next read stops after the 6-byte header,
    # so the next body is not read into the scratch buffer and copied.
    assert len(reader.get_buffer()) == 6
    # ... and a small PDU among them is read to its end, not beyond.
    buf = reader.get_buffer()
    buf[:6] = SMALL[:6]
    reader.buffer_updated(6)
    assert reader.next_pdu() is None
    assert len(reader.get_buffer()) == len(SMALL) - 6


def test_small_traffic_reads_into_the_full_scratch_buffer() -> None:
    reader = PDUReader()
    assert read_buffered(SMALL * 3, [len(SMALL) * 3], reader) == expected([SMALL] * 3)
    assert len(reader.get_buffer()) == P._SCRATCH_SIZE
    # a long run of small PDUs after a large one returns to full reads
    read_buffered(BIG + SMALL * (P._SMALL_RUN + 1), [1 << 30], reader)
    assert len(reader.get_buffer()) == P._SCRATCH_SIZE


def test_announced_length_past_direct_max_is_not_allocated_up_front() -> None:
    reader = PDUReader()
    buf = reader.get_buffer()
    buf[:6] = HUGE[:6]
    reader.buffer_updated(6)
    assert reader.next_pdu() is None
    # no buffer of the announced length: reads go through the scratch buffer
    assert len(reader.get_buffer()) <= P._SCRATCH_SIZE


def test_oversize_pdata_raises_before_any_body_buffer() -> None:
    reader = PDUReader(max_pdata_length=16384)
    buf = reader.get_buffer()
    buf[:6] = BIG[:6]
    reader.buffer_updated(6)
    with pytest.raises(ProtocolError):
        reader.next_pdu()


@pytest.fixture
def no_spares() -> Iterator[None]:
    """Start with no kept body buffers in this thread (other tests leave some)."""
    P._spare_local.bufs = []
    yield
    P._spare_local.bufs = []


def _read_one(reader: PDUReader, pdu: bytes = BIG) -> memoryview:
    item = None
    for piece in (pdu[:6], pdu[6:]):
        buf = reader.get_buffer()
        buf[: len(piece)] = piece
        reader.buffer_updated(len(piece))
        item = reader.next_pdu()  # the core parses after every read
    assert item is not None
    return item[1]


def test_body_buffer_reused_only_when_released(no_spares: None) -> None:
    reader = PDUReader()
    first = _read_one(reader)
    first_obj = first.obj
    second = _read_one(reader)  # the first body is still referenced: a new buffer
    assert second.obj is not first_obj
    assert bytes(first) == bytes(second) == BIG[6:]
    second_id = id(second.obj)
    del second
    third = _read_one(reader)  # the second body was released: reused (CPython refcounts)
    if P._getrefcount is not None:
        assert id(third.obj) == second_id
    assert third.obj is not first_obj  # still referenced
    assert bytes(third) == BIG[6:] and bytes(first) == BIG[6:]


def test_a_held_data_sets_bodies_are_all_reused_once_released(no_spares: None) -> None:
    # A consumer that keeps every body of a data set until it is complete
    # (a C-GET SCU, a store handler writing to disk) releases several at
    # once: the next data set reuses every one of them.
    if P._getrefcount is None:
        pytest.skip("buffer reuse is detected by reference counts (CPython)")
    reader = PDUReader()
    held = [_read_one(reader) for _ in range(3)]
    ids = {id(v.obj) for v in held}
    assert len(ids) == 3
    del held
    again = [_read_one(reader) for _ in range(3)]
    assert {id(v.obj) for v in again} == ids
    assert all(bytes(v) == BIG[6:] for v in again)


def test_kept_buffers_are_bounded(no_spares: None) -> None:
    reader = PDUReader()
    held = [_read_one(reader) for _ in range(P._SPARES + 3)]
    assert len(P._spare_local.bufs) <= P._SPARES
    assert sum(len(b) for b in P._spare_local.bufs) <= max(P._SPARE_BYTES, len(BIG))
    del held


def _pdata(body_len: int) -> bytes:
    return bytes([0x04, 0]) + body_len.to_bytes(4, "big") + bytes(range(256)) * (body_len // 256) + bytes(body_len % 256)


def test_a_shorter_body_reuses_a_longer_released_buffer(no_spares: None) -> None:
    # A data set's last PDU is usually shorter than the ones before it; the
    # released buffer of a long body serves it, and the next long body too.
    if P._getrefcount is None:
        pytest.skip("buffer reuse is detected by reference counts (CPython)")
    reader = PDUReader()
    long_pdu, short_pdu = _pdata(40000), _pdata(20000)

    def one(pdu: bytes) -> tuple[int, bytes]:
        item = None
        for piece in (pdu[:6], pdu[6:]):
            buf = reader.get_buffer()
            buf[: len(piece)] = piece
            reader.buffer_updated(len(piece))
            item = reader.next_pdu()
        assert item is not None
        return id(item[1].obj), bytes(item[1])

    first_id, first = one(long_pdu)
    assert first == long_pdu[6:]
    short_id, short = one(short_pdu)
    assert short == short_pdu[6:]  # exactly the body, not the buffer's tail
    assert short_id == first_id
    again_id, again = one(long_pdu)
    assert again == long_pdu[6:] and again_id == first_id


def test_feed_and_buffered_can_be_mixed() -> None:
    reader = PDUReader()
    stream = BIG + SMALL + BIG
    # header via feed, part of the body buffered, the rest via feed again
    reader.feed(stream[:6])
    assert reader.next_pdu() is None
    buf = reader.get_buffer()
    buf[:5000] = stream[6:5006]
    reader.buffer_updated(5000)
    reader.feed(stream[5006:])
    out = []
    while (item := reader.next_pdu()) is not None:
        out.append((item[0], bytes(item[1])))
    assert out == expected([BIG, SMALL, BIG])
    assert reader.buffered == 0


def _rq() -> bytes:
    rq = P.AAssociateRQ(
        called_ae="SCP", calling_ae="SCU",
        presentation_contexts=[P.PresentationContextRQ(1, "1.2.840.10008.1.1", ["1.2.840.10008.1.2"])],
        user_info=P.UserInformation(max_length=16384, implementation_class_uid="1.2.3"),
    )
    return rq.encode()


def test_connection_buffered_waits_in_sta3_and_goes_on_after_accept() -> None:
    # A peer that sends a P-DATA-TF right behind its A-ASSOCIATE-RQ, in the
    # same read: in Sta3 the core stops at the request; the rest waits in
    # the reader and is processed after the local accept (as with
    # receive_data).
    from aiodicom.ul.connection import AssociationRequested, DataReceived
    from aiodicom.ul.fsm import State

    conn = Connection(requestor=False)
    conn.connection_made(0.0)
    stream = _rq() + SMALL
    buf = conn.get_buffer()
    assert len(buf) >= len(stream)
    buf[: len(stream)] = stream
    conn.buffer_updated(len(stream), 0.0)
    events = conn.take_events()
    assert [type(e) for e in events] == [AssociationRequested]
    assert conn.state == State.STA3
    ac = P.AAssociateAC(
        called_ae="SCP", calling_ae="SCU",
        presentation_contexts=[P.PresentationContextAC(1, 0, "1.2.840.10008.1.2")],
        user_info=P.UserInformation(max_length=16384, implementation_class_uid="1.2.3"),
    )
    conn.accept(ac)
    conn.receive_data(b"", 0.0)
    events = conn.take_events()
    data = [e for e in events if isinstance(e, DataReceived)]
    assert len(data) == 1
    ((ctx, ctrl, value),) = data[0].pdvs
    assert ctx == 1 and bytes(value) == SMALL[12:]


def test_an_idle_reader_keeps_no_body_buffer() -> None:
    # After a large PDU, an association waiting for its next PDU holds no
    # PDU-sized buffer (thousands of idle associations must stay small);
    # a finished body is kept for reuse once per thread, not per reader.
    readers = [PDUReader() for _ in range(3)]
    for reader in readers:
        assert read_buffered(BIG, [len(BIG)], reader) == expected([BIG])
    for reader in readers:
        held = [getattr(reader, name, None) for name in PDUReader.__slots__]
        assert not any(isinstance(v, (bytearray, memoryview)) and len(v) >= P._DIRECT_MIN for v in held)
        assert reader.buffered == 0
