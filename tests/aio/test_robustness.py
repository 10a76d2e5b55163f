"""Hostile and broken peers against a running Server.

Each bad input must end its connection with an A-ABORT PDU (source 2, the
reason given below) or a plain close, without a logged traceback, and the
server must keep serving good associations afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator

import pytest

import aiodicom
from aiodicom.dimse.commands import echo_rq, encode_command
from aiodicom.ul import pdu as P

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"
DEADLINE = 10.0

# A-ABORT reasons (PS3.8 Table 9-26)
UNRECOGNIZED_PDU = 1
UNEXPECTED_PDU = 2
INVALID_PARAMETER = 6

CLOSE = None  # expectation: the server just closes, no PDU


def request_pdu(called: str = "AIODICOM", calling: str = "HOSTILE") -> bytes:
    return P.AAssociateRQ(
        called,
        calling,
        [P.PresentationContextRQ(1, VERIFICATION, [IMPLICIT])],
        P.UserInformation(max_length=16384, implementation_class_uid="1.2.3.4"),
    ).encode()


def p_data(pdvs: bytes) -> bytes:
    return struct.pack(">BBL", P.P_DATA_TF, 0, len(pdvs)) + pdvs


def pdv(context_id: int, control: int, fragment: bytes, length: int | None = None) -> bytes:
    item_length = len(fragment) + 2 if length is None else length
    return struct.pack(">LBB", item_length, context_id, control) + fragment


ECHO_COMMAND = encode_command(echo_rq(1))
GOOD_ECHO = p_data(pdv(1, 0x03, ECHO_COMMAND))


@pytest.fixture
async def server(caplog: pytest.LogCaptureFixture) -> AsyncIterator[aiodicom.Server]:
    caplog.set_level(logging.DEBUG)
    srv = aiodicom.Server("AIODICOM")
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.close(timeout=1.0)
    records = [r for when in ("setup", "call") for r in caplog.get_records(when)]  # type: ignore[arg-type]
    records += caplog.records  # teardown so far
    tracebacks = [r for r in records if r.exc_info is not None and r.levelno >= logging.WARNING]
    errors = [r for r in records if r.levelno >= logging.ERROR]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    assert not errors, [r.getMessage() for r in errors]


async def read_until_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (bounded by DEADLINE)."""
    chunks: list[bytes] = []
    try:
        async with asyncio.timeout(DEADLINE):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def split_pdus(data: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    off = 0
    while off < len(data):
        assert len(data) - off >= 6, f"truncated PDU from server: {data[off:]!r}"
        pdu_type, _res, length = struct.unpack_from(">BBL", data, off)
        out.append((pdu_type, data[off + 6 : off + 6 + length]))
        off += 6 + length
    return out


def assert_abort(pdus: list[tuple[int, bytes]], reason: int) -> None:
    assert pdus, "expected an A-ABORT, the server closed without one"
    pdu_type, body = pdus[-1]
    assert pdu_type == P.A_ABORT, pdus
    assert len(body) == 4
    assert body[2] == 2, f"abort source {body[2]}, expected 2 (service provider)"
    assert body[3] == reason, f"abort reason {body[3]}, expected {reason}"


async def hostile(port: int, payload: bytes, *, associate_first: bool = False, half_close: bool = False) -> list[tuple[int, bytes]]:
    """Send ``payload`` (after a valid association if asked) and collect the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        prefix: list[tuple[int, bytes]] = []
        if associate_first:
            writer.write(request_pdu())
            header = await asyncio.wait_for(reader.readexactly(6), DEADLINE)
            pdu_type, _res, length = struct.unpack(">BBL", header)
            body = await asyncio.wait_for(reader.readexactly(length), DEADLINE)
            assert pdu_type == P.A_ASSOCIATE_AC, (pdu_type, body)
            ac = P.decode_pdu(pdu_type, body)
            assert isinstance(ac, P.AAssociateAC)
            assert ac.presentation_contexts[0].result == 0
        writer.write(payload)
        if half_close:
            writer.write_eof()
        await writer.drain()
        data = await read_until_eof(reader)
        return prefix + split_pdus(data)
    finally:
        writer.close()


async def assert_still_serving(port: int) -> None:
    async with aiodicom.associate("127.0.0.1", port, called_ae="AIODICOM") as assoc:
        assert await assoc.echo() == 0


CASES: list[tuple[str, bytes, bool, bool, int | None]] = [
    # id, payload, associate first, half-close after sending, expected abort reason
    ("garbage", bytes(range(0xF0, 0x100)) * 8, False, False, UNRECOGNIZED_PDU),
    ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False, False, UNRECOGNIZED_PDU),
    ("tls-client-hello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32), False, False, UNRECOGNIZED_PDU),
    ("4gb-associate-rq", b"\x01\x00\xff\xff\xff\xff", False, False, INVALID_PARAMETER),
    ("truncated-associate-rq", request_pdu()[:40], False, True, CLOSE),
    ("bad-associate-rq-items", struct.pack(">BBL", 1, 0, 80) + b"\x00\x01\x00\x00" + b"A" * 64 + b"\x10\x00\x01\x00" + b"\x00" * 8, False, False, INVALID_PARAMETER),
    ("p-data-before-association", GOOD_ECHO, False, False, UNEXPECTED_PDU),
    ("release-rq-before-association", P.AReleaseRQ().encode(), False, False, UNEXPECTED_PDU),
    ("release-rq-wrong-length", b"\x05\x00\x00\x00\x00\x05" + bytes(5), False, False, INVALID_PARAMETER),
    ("pdv-length-past-pdu", p_data(pdv(1, 0x03, ECHO_COMMAND[:10], length=200)), True, False, INVALID_PARAMETER),
    ("pdv-unaccepted-context", p_data(pdv(3, 0x03, ECHO_COMMAND)), True, False, INVALID_PARAMETER),
    ("dataset-without-command", p_data(pdv(1, 0x02, b"\x00\x00")), True, False, INVALID_PARAMETER),
    ("garbage-command-set", p_data(pdv(1, 0x03, b"\xff" * 16)), True, False, INVALID_PARAMETER),
    ("second-associate-rq", request_pdu(), True, False, UNEXPECTED_PDU),
    ("unknown-pdu-after-association", b"\x09\x00\x00\x00\x00\x04" + bytes(4), True, False, UNRECOGNIZED_PDU),
    ("truncated-p-data-then-close", p_data(pdv(1, 0x03, ECHO_COMMAND))[:20], True, True, CLOSE),
]


@pytest.mark.parametrize(
    ("payload", "associate_first", "half_close", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_hostile_input(
    server: aiodicom.Server, payload: bytes, associate_first: bool, half_close: bool, reason: int | None
) -> None:
    pdus = await hostile(server.port, payload, associate_first=associate_first, half_close=half_close)
    if reason is CLOSE:
        # the peer went away first (Evt17): nothing to answer, just close
        assert pdus == [], pdus
    else:
        assert_abort(pdus, reason)
    # nothing but the abort (no AC/RJ/P-DATA answered to garbage)
    assert [t for t, _ in pdus] in ([], [P.A_ABORT])
    await assert_still_serving(server.port)
    # the hostile connection is gone from the server's books
    pending = [a.closed for a in list(server.associations)]
    if pending:
        await asyncio.wait_for(asyncio.gather(*(asyncio.shield(f) for f in pending)), DEADLINE)
    assert server.associations == set()


async def read_pdus_until(reader: asyncio.StreamReader, stop: set[int]) -> list[tuple[int, bytes]]:
    """PDUs from the server until EOF, an A-ABORT or a PDU type in ``stop``."""
    pdus: list[tuple[int, bytes]] = []
    async with asyncio.timeout(DEADLINE):
        while True:
            try:
                header = await reader.readexactly(6)
            except (asyncio.IncompleteReadError, ConnectionResetError):
                return pdus
            pdu_type, _res, length = struct.unpack(">BBL", header)
            pdus.append((pdu_type, await reader.readexactly(length)))
            if pdu_type == P.A_ABORT or pdu_type in stop:
                return pdus


async def test_raw_echo_and_release(server: aiodicom.Server) -> None:
    """Sanity check of the raw helpers: a well-formed exchange is answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request_pdu())
        assert [t for t, _ in await read_pdus_until(reader, {P.A_ASSOCIATE_AC})] == [P.A_ASSOCIATE_AC]
        writer.write(GOOD_ECHO)
        assert [t for t, _ in await read_pdus_until(reader, {P.P_DATA_TF})] == [P.P_DATA_TF]
        writer.write(P.AReleaseRQ().encode())
        assert [t for t, _ in await read_pdus_until(reader, {P.A_RELEASE_RP})] == [P.A_RELEASE_RP]
    finally:
        writer.close()
    await assert_still_serving(server.port)


async def test_p_data_pipelined_behind_the_request(server: aiodicom.Server) -> None:
    """P-DATA sent before the AC arrived (one write with the RQ): in Sta3 this
    is AA-8 when both arrive together; either way no traceback, no hang."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request_pdu() + GOOD_ECHO)
        pdus = await read_pdus_until(reader, {P.P_DATA_TF})
    finally:
        writer.close()
    types = [t for t, _ in pdus]
    if types == [P.A_ABORT]:
        assert_abort(pdus, UNEXPECTED_PDU)
    else:  # the two PDUs reached the server in separate reads
        assert types == [P.A_ASSOCIATE_AC, P.P_DATA_TF], types
    await assert_still_serving(server.port)


@pytest.mark.parametrize(
    "after",
    [GOOD_ECHO, P.AAbort(0, 0).encode(), request_pdu()],
    ids=["p-data", "a-abort", "associate-rq"],
)
async def test_pdu_pipelined_behind_release_request(server: aiodicom.Server, after: bytes) -> None:
    """A-RELEASE-RQ and another PDU in one write: no traceback, no hang."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request_pdu())
        assert [t for t, _ in await read_pdus_until(reader, {P.A_ASSOCIATE_AC})] == [P.A_ASSOCIATE_AC]
        writer.write(P.AReleaseRQ().encode() + after)
        pdus = await read_pdus_until(reader, {P.A_RELEASE_RP})
    finally:
        writer.close()
    types = [t for t, _ in pdus]
    assert types in ([], [P.A_ABORT], [P.A_RELEASE_RP]), types
    if types == [P.A_ABORT]:
        assert_abort(pdus, UNEXPECTED_PDU)
    pending = [a.closed for a in list(server.associations)]
    if pending:
        await asyncio.wait_for(asyncio.gather(*(asyncio.shield(f) for f in pending)), DEADLINE)
    await assert_still_serving(server.port)


@pytest.mark.parametrize(
    "after",
    [P.AAbort(0, 0).encode(), P.AReleaseRQ().encode()],
    ids=["a-abort", "release-rq"],
)
async def test_pdu_pipelined_behind_the_request(server: aiodicom.Server, after: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request_pdu() + after)
        pdus = await read_pdus_until(reader, {P.A_RELEASE_RP})
    finally:
        writer.close()
    types = [t for t, _ in pdus]
    assert types in ([], [P.A_ABORT], [P.A_ASSOCIATE_AC], [P.A_ASSOCIATE_AC, P.A_RELEASE_RP]), types
    pending = [a.closed for a in list(server.associations)]
    if pending:
        await asyncio.wait_for(asyncio.gather(*(asyncio.shield(f) for f in pending)), DEADLINE)
    await assert_still_serving(server.port)


async def test_hostile_and_good_in_parallel(server: aiodicom.Server) -> None:
    payloads = [c[1] for c in CASES if not c[2] and not c[3]]

    async def bad(i: int) -> list[tuple[int, bytes]]:
        return await hostile(server.port, payloads[i % len(payloads)])

    async def good(i: int) -> int:
        async with aiodicom.associate("127.0.0.1", server.port, calling_ae=f"GOOD{i:02d}") as assoc:
            return await assoc.echo()

    results = await asyncio.wait_for(
        asyncio.gather(*(bad(i) for i in range(20)), *(good(i) for i in range(20))), 60
    )
    bad_results, good_results = results[:20], results[20:]
    assert good_results == [0] * 20
    for pdus in bad_results:
        assert isinstance(pdus, list)
        assert [t for t, _ in pdus] == [P.A_ABORT]
    await assert_still_serving(server.port)
