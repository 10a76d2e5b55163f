"""Hypothesis fuzzing of the receive path.

Random bytes and mutations (bit flips, truncations, length-field tweaks,
insertions) of valid encoded PDUs are fed to :func:`decode_pdu` and to a
Connection in Sta2 and Sta6.  Only :class:`ProtocolError` may escape
``decode_pdu``; nothing at all may escape ``Connection.receive_data``, and
whatever the connection sends back must be well-formed PDUs.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiodicom.ul.connection import Connection
from aiodicom.ul.errors import ProtocolError
from aiodicom.ul.fsm import State
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
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CT = "1.2.840.10008.5.1.4.1.1.2"
IVLE = "1.2.840.10008.1.2"
EVLE = "1.2.840.10008.1.2.1"

RQ = AAssociateRQ(
    "ACCEPTOR",
    "REQUESTOR",
    [
        PresentationContextRQ(1, "1.2.840.10008.1.1", [IVLE, EVLE]),
        PresentationContextRQ(3, CT, [EVLE]),
    ],
    UserInformation(
        max_length=16384,
        implementation_class_uid="1.2.3.4",
        implementation_version_name="FUZZ",
        async_ops_window=(2, 2),
        role_selections=[RoleSelection(CT, False, True)],
        extended_negotiation=[SOPClassExtendedNegotiation("1.2.840.10008.5.1.4.1.2.1.1", b"\x01\x01")],
        common_extended_negotiation=[SOPClassCommonExtendedNegotiation(CT, "1.2.840.10008.4.2", [CT + ".1"])],
        user_identity_rq=UserIdentityRQ(2, b"user", b"pass", True),
    ),
)
AC = AAssociateAC(
    "ACCEPTOR",
    "REQUESTOR",
    [PresentationContextAC(1, 0, IVLE), PresentationContextAC(3, 4, None)],
    UserInformation(max_length=16384, implementation_class_uid="1.2.3.4", user_identity_ac=UserIdentityAC(b"ok")),
)
VALID_PDUS = [
    RQ.encode(),
    AC.encode(),
    AAssociateRJ(1, 1, 7).encode(),
    PDataTF([(1, 0x03, b"\x00" * 10), (1, 0x02, b"\x01\x02\x03\x04")]).encode(),
    AReleaseRQ().encode(),
    AReleaseRP().encode(),
    AAbort(2, 6).encode(),
]


@st.composite
def mutated_pdu(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID_PDUS)))
    n_mutations = draw(st.integers(1, 4))
    for _ in range(n_mutations):
        op = draw(st.sampled_from(["flip", "truncate", "length16", "length32", "byte", "insert", "delete"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif op == "length16":
            # overwrite two bytes: hits item and sub-item length fields
            value = draw(st.sampled_from([0, 1, 2, 3, 4, 0x7FFF, 0xFFFF]) | st.integers(0, 0xFFFF))
            data[pos : pos + 2] = value.to_bytes(2, "big")
        elif op == "length32":
            value = draw(st.sampled_from([0, 1, 2, 4, 0xFFFFFFFF]) | st.integers(0, 0xFFFFFFFF))
            target = draw(st.sampled_from([2, pos]))  # the PDU length, or anywhere (PDV lengths)
            data[target : target + 4] = value.to_bytes(4, "big")
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


def pdu_stream(pdus: list[bytes]) -> bytes:
    return b"".join(pdus)


# --- decode_pdu -------------------------------------------------------------


def _decode_only_protocol_error(pdu_type: int, body: bytes) -> None:
    try:
        decode_pdu(pdu_type, body)
    except ProtocolError as exc:
        assert exc.source == 2
        assert exc.reason in (1, 2, 4, 5, 6)


@FUZZ
@given(st.integers(0, 255), st.binary(max_size=512))
def test_decode_random_bytes(pdu_type: int, body: bytes) -> None:
    _decode_only_protocol_error(pdu_type, body)


@FUZZ
@given(st.integers(1, 7), st.binary(max_size=512))
def test_decode_random_bodies_of_known_types(pdu_type: int, body: bytes) -> None:
    _decode_only_protocol_error(pdu_type, body)


@FUZZ
@given(mutated_pdu())
def test_decode_mutated_pdus(data: bytes) -> None:
    if len(data) < 1:
        return
    _decode_only_protocol_error(data[0], data[6:])
    # also as a memoryview into a larger buffer, as the reader hands it over
    buf = b"\xaa" * 3 + data + b"\xbb" * 3
    _decode_only_protocol_error(data[0], memoryview(buf)[9 : 3 + len(data)])
    # whatever decodes has the fields the upper layers rely on
    try:
        pdu = decode_pdu(data[0], data[6:])
    except ProtocolError:
        return
    if isinstance(pdu, AAssociateRQ):
        assert pdu.presentation_contexts
        assert all(c.abstract_syntax and c.transfer_syntaxes for c in pdu.presentation_contexts)
        assert all(all(ts) for c in pdu.presentation_contexts for ts in c.transfer_syntaxes)
        assert len({c.context_id for c in pdu.presentation_contexts}) == len(pdu.presentation_contexts)
        assert pdu.application_context
    elif isinstance(pdu, AAssociateAC):
        assert all(c.transfer_syntax for c in pdu.presentation_contexts if c.result == 0)
        assert all(0 <= c.result <= 4 for c in pdu.presentation_contexts)
    elif isinstance(pdu, PDataTF):
        assert pdu.pdvs
        assert sum(6 + len(f) for _c, _m, f in pdu.pdvs) == len(data) - 6


# --- Connection ---------------------------------------------------------------


def acceptor_sta2() -> Connection:
    c = Connection(requestor=False, artim_timeout=30.0, max_pdu_length=16384)
    c.connection_made(0.0)
    return c


RQ_BYTES = RQ.encode()


def acceptor_sta6() -> Connection:
    c = acceptor_sta2()
    c.receive_data(RQ_BYTES, 0.0)
    c.accept(AC)
    assert c.state is State.STA6
    c.take_output()
    c.take_events()
    return c


def check_output_well_formed(c: Connection) -> None:
    data = b"".join(bytes(b) for b in c.take_output())
    off = 0
    while off < len(data):
        assert len(data) - off >= 6
        assert data[off] in range(1, 8)
        length = int.from_bytes(data[off + 2 : off + 6], "big")
        off += 6 + length
    assert off == len(data)


def feed(c: Connection, data: bytes, cuts: list[int]) -> None:
    bounds = [0, *sorted(min(x, len(data)) for x in cuts), len(data)]
    fed = 0
    for a, b in itertools.pairwise(bounds):
        c.receive_data(data[a:b], 1.0)  # nothing may escape
        fed += b - a
        assert c._reader.buffered <= fed  # white-box: bounded buffering
        c.take_events()
    assert isinstance(c.state, State)
    if c.close_transport:
        assert c.state in (State.STA1, State.STA13)
    check_output_well_formed(c)


CUTS = st.lists(st.integers(0, 2048), max_size=6)


@pytest.mark.parametrize("make", [acceptor_sta2, acceptor_sta6], ids=["sta2", "sta6"])
@FUZZ
@given(data=st.binary(max_size=1024), cuts=CUTS)
def test_connection_random_bytes(make, data: bytes, cuts: list[int]) -> None:  # type: ignore[no-untyped-def]
    feed(make(), data, cuts)


@pytest.mark.parametrize("make", [acceptor_sta2, acceptor_sta6], ids=["sta2", "sta6"])
@FUZZ
@given(pdus=st.lists(mutated_pdu() | st.sampled_from(VALID_PDUS), min_size=1, max_size=4), cuts=CUTS)
def test_connection_mutated_pdus(make, pdus: list[bytes], cuts: list[int]) -> None:  # type: ignore[no-untyped-def]
    feed(make(), pdu_stream(pdus), cuts)


@FUZZ
@given(pdus=st.lists(st.sampled_from(VALID_PDUS), min_size=1, max_size=6), cuts=CUTS)
def test_connection_valid_pdus_in_any_order(pdus: list[bytes], cuts: list[int]) -> None:
    # Valid PDUs in any order: always handled by the table, never an exception.
    c = acceptor_sta6()
    feed(c, pdu_stream(pdus), cuts)
    c.handle_timer(1e9)
    c.connection_lost(1e9)
    assert c.state is State.STA1
