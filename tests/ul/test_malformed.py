"""A corpus of hand-made malformed and unexpected inputs.

Each input is fed to an acceptor Connection waiting for an A-ASSOCIATE-RQ
(Sta2), to a requestor waiting for the answer (Sta5) or to an established
association (Sta6).  For each one:

* nothing escapes ``receive_data``;
* the output is exactly one A-ABORT PDU with source 2 (service provider)
  and the PS3.8 Table 9-26 reason we consider right: 1 unrecognized PDU
  (unknown PDU type), 2 unexpected PDU (a well-formed PDU in the wrong
  state), 4 unrecognized PDU parameter (unknown item type), 5 unexpected
  PDU parameter (an item repeated or in the wrong PDU), 6 invalid PDU
  parameter value (bad lengths, missing or empty fields, bad values);
* the user gets an ``Aborted`` indication with the same source and reason;
* for an invalid byte stream (Evt19) the transport is closed at once, since
  the stream cannot be framed any more; for a well-formed but unexpected PDU
  (AA-1 in Sta2, AA-8 in Sta5/Sta6) the connection goes to Sta13 and waits
  for the peer to close, with ARTIM running (PS3.8 9.2.3), and closes when
  ARTIM expires;
* the receive buffer never holds more than the bytes fed, and feeding the
  same bytes one at a time gives the same result.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from aiodicom.ul.connection import Aborted, Connection
from aiodicom.ul.fsm import State
from aiodicom.ul.pdu import AAssociateAC, PresentationContextAC, UserInformation

ARTIM = 30.0
T0 = 10.0
MAX_PDU = 16384


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def item(item_type: int, body: bytes, length: int | None = None, byte1: int = 0) -> bytes:
    """A hand-built item; ``length`` overrides the true length."""
    n = len(body) if length is None else length
    return bytes([item_type, byte1]) + n.to_bytes(2, "big") + body


def pdu(pdu_type: int, body: bytes, length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return bytes([pdu_type, 0]) + n.to_bytes(4, "big") + body


APP_UID = b"1.2.840.10008.3.1.1.1"
VERIFICATION = b"1.2.840.10008.1.1"
CT = b"1.2.840.10008.5.1.4.1.1.2"
IVLE = b"1.2.840.10008.1.2"

FIXED = h("0001 0000") + b"ACCEPTOR".ljust(16) + b"REQUESTOR".ljust(16) + bytes(32)
APP = item(0x10, APP_UID)
AS = item(0x30, VERIFICATION)
TS = item(0x40, IVLE)
PCTX = item(0x20, h("01 000000") + AS + TS)
PCTX3 = item(0x20, h("03 000000") + item(0x30, CT) + TS)
MAXLEN = item(0x51, h("00004000"))
IMPL = item(0x52, b"1.2.3.4")
UI = item(0x50, MAXLEN + IMPL)


def ui(*subs: bytes) -> bytes:
    return item(0x50, MAXLEN + IMPL + b"".join(subs))


def rq(*items: bytes) -> bytes:
    return pdu(0x01, FIXED + b"".join(items))


def rq_with_ctx(ctx_body: bytes) -> bytes:
    return rq(APP, item(0x20, ctx_body), UI)


def ac(*items: bytes) -> bytes:
    return pdu(0x02, FIXED + b"".join(items))


PCTX_AC = item(0x21, h("01 00 00 00") + TS)
VALID_RQ = rq(APP, PCTX, UI)
VALID_AC = ac(APP, PCTX_AC, UI)
P_DATA = pdu(0x04, h("00000006 01 03") + b"ABCD")
RELEASE_RQ = pdu(0x05, bytes(4))
RELEASE_RP = pdu(0x06, bytes(4))
RJ = pdu(0x03, h("00 01 01 07"))

TLS_CLIENT_HELLO = h(
    "16 03 01 00 c4 01 00 00 c0 03 03 6b 29 87 4e 65 27 b0 f5 1a 27 af 4b 2d a8 c0 3e"
    "84 c8 a5 ae 2e 7b 29 ba 1f 7c 9b 48 b5 25 20 f0 00 00 1c 13 01 13 02 13 03 c0 2b"
)
HTTP_GET = b"GET / HTTP/1.1\r\nHost: pacs.example\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n\r\n"

INVALID = "invalid"  # Evt19: abort and close at once
UNEXPECTED = "unexpected"  # well-formed PDU, wrong state: abort, Sta13, ARTIM


@dataclass(frozen=True)
class Case:
    id: str
    state: int  # 2, 5 or 6
    data: bytes
    reason: int
    kind: str = INVALID


CORPUS = [
    # --- not DICOM at all ---------------------------------------------------
    Case("http-get-sta2", 2, HTTP_GET, 1),
    Case("http-get-sta6", 6, HTTP_GET, 1),
    Case("tls-client-hello-sta2", 2, TLS_CLIENT_HELLO, 1),
    Case("garbage-zeros", 2, bytes(32), 1),
    Case("garbage-ff", 2, b"\xff" * 32, 1),
    Case("garbage-random", 2, h("9c 3e 11 f0 5d 2a 88 01 77 c4 e2 0b 39 5f a6 d1"), 1),
    Case("garbage-sta6", 6, h("de ad be ef 00 00 00 04 01 02 03 04"), 1),
    Case("unknown-pdu-type-08", 2, pdu(0x08, bytes(4)), 1),
    Case("unknown-pdu-type-00-sta6", 6, pdu(0x00, bytes(4)), 1),
    Case("unknown-pdu-type-ff-sta5", 5, pdu(0xFF, bytes(4)), 1),
    # --- lengths of the PDU itself ---------------------------------------------
    Case("associate-rq-length-4gb", 2, h("01 00 ffffffff") + FIXED, 6),
    Case("associate-ac-length-4gb-sta5", 5, h("02 00 ffffffff"), 6),
    Case("associate-rq-length-zero", 2, pdu(0x01, b""), 6),
    Case("associate-rq-fixed-part-truncated", 2, pdu(0x01, FIXED[:40]), 6),
    Case("p-data-length-4gb-sta6", 6, h("04 00 ffffffff") + h("00000006 01 03"), 6),
    Case("p-data-over-max-length-sta6", 6, h("04 00 00004001"), 6),
    Case("release-rq-length-zero", 2, pdu(0x05, b""), 6),
    Case("release-rp-length-8-sta6", 6, pdu(0x06, bytes(8)), 6),
    Case("abort-length-2-sta6", 6, pdu(0x07, bytes(2)), 6),
    Case("rj-length-5-sta5", 5, pdu(0x03, bytes(5)), 6),
    # --- A-ASSOCIATE-RQ items --------------------------------------------------
    Case("rq-only-fixed-part", 2, rq(), 6),
    Case("rq-missing-application-context", 2, rq(PCTX, UI), 6),
    Case("rq-missing-user-information", 2, rq(APP, PCTX), 6),
    Case("rq-missing-presentation-context", 2, rq(APP, UI), 6),
    Case("rq-duplicate-application-context", 2, rq(APP, APP, PCTX, UI), 5),
    Case("rq-duplicate-user-information", 2, rq(APP, PCTX, UI, UI), 5),
    Case("rq-duplicate-context-id", 2, rq(APP, PCTX, PCTX, UI), 5),
    Case("rq-unknown-item-type", 2, rq(APP, item(0x99, b"xx"), PCTX, UI), 4),
    Case("rq-ac-context-item-in-rq", 2, rq(APP, PCTX_AC, UI), 5),
    Case("rq-truncated-item-header", 2, rq(APP, PCTX, UI, h("50 00 00")), 6),
    Case("rq-item-length-past-pdu-end", 2, rq(APP, PCTX, item(0x50, MAXLEN, length=0x0100)), 6),
    Case("rq-app-context-length-past-pdu-end", 2, rq(item(0x10, APP_UID, length=0xFFFF)), 6),
    Case("rq-zero-length-app-context", 2, rq(item(0x10, b""), PCTX, UI), 6),
    Case("rq-zero-length-presentation-context", 2, rq(APP, item(0x20, b""), UI), 6),
    Case("rq-presentation-context-3-bytes", 2, rq(APP, item(0x20, h("010000")), UI), 6),
    Case("rq-ctx-without-abstract-syntax", 2, rq_with_ctx(h("01 000000") + TS), 6),
    Case("rq-ctx-without-transfer-syntax", 2, rq_with_ctx(h("01 000000") + AS), 6),
    Case("rq-ctx-zero-length-abstract-syntax", 2, rq_with_ctx(h("01 000000") + item(0x30, b"") + TS), 6),
    Case("rq-ctx-zero-length-transfer-syntax", 2, rq_with_ctx(h("01 000000") + AS + item(0x40, b"")), 6),
    Case("rq-ctx-two-abstract-syntaxes", 2, rq_with_ctx(h("01 000000") + AS + AS + TS), 5),
    Case("rq-ctx-unknown-sub-item", 2, rq_with_ctx(h("01 000000") + AS + TS + item(0x55, b"x")), 4),
    Case("rq-ctx-nested-context-item", 2, rq_with_ctx(h("01 000000") + AS + TS + PCTX), 5),
    Case("rq-abstract-syntax-at-pdu-level", 2, rq(APP, AS, PCTX, UI), 5),
    # sub-item length inside the context overruns the context item (but not the PDU)
    Case("rq-ctx-sub-item-overflows-parent", 2, rq(APP, item(0x20, h("01 000000") + AS + item(0x40, IVLE, length=40)), UI), 6),
    Case("rq-ctx-uid-not-ascii", 2, rq_with_ctx(h("01 000000") + item(0x30, b"1.2.\xff") + TS), 6),
    # --- user information sub-items -------------------------------------------
    Case("ui-sub-item-overflows-parent", 2, rq(APP, PCTX, item(0x50, item(0x51, h("00004000"), length=8)), PCTX3), 6),
    Case("ui-truncated-sub-item-header", 2, rq(APP, PCTX, item(0x50, MAXLEN + h("52 00"))), 6),
    Case("ui-max-length-3-bytes", 2, rq(APP, PCTX, item(0x50, item(0x51, h("004000")))), 6),
    Case("ui-max-length-zero-length", 2, rq(APP, PCTX, item(0x50, item(0x51, b""))), 6),
    Case("ui-async-window-2-bytes", 2, rq(APP, PCTX, ui(item(0x53, h("0001")))), 6),
    Case("ui-role-uid-length-overflow", 2, rq(APP, PCTX, ui(item(0x54, h("00ff") + CT + h("0001")))), 6),
    Case("ui-role-missing-role-bytes", 2, rq(APP, PCTX, ui(item(0x54, h("0019") + CT))), 6),
    Case("ui-role-zero-length", 2, rq(APP, PCTX, ui(item(0x54, b""))), 6),
    Case(
        "ui-duplicate-role-selection",
        2,
        rq(APP, PCTX, ui(item(0x54, h("0019") + CT + h("0001")), item(0x54, h("0019") + CT + h("0100")))),
        5,
    ),
    Case("ui-ext-neg-uid-length-overflow", 2, rq(APP, PCTX, ui(item(0x56, h("0040") + CT))), 6),
    Case(
        "ui-common-ext-neg-related-overflow",
        2,
        rq(APP, PCTX, ui(item(0x57, h("0019") + CT + h("0011") + IVLE + h("0030") + h("0019") + CT))),
        6,
    ),
    Case(
        "ui-common-ext-neg-related-uid-overflow",
        2,
        rq(APP, PCTX, ui(item(0x57, h("0019") + CT + h("0011") + IVLE + h("001b") + h("0030") + CT))),
        6,
    ),
    Case("ui-user-identity-type-0", 2, rq(APP, PCTX, ui(item(0x58, h("00 00 0001") + b"u" + h("0000")))), 6),
    Case("ui-user-identity-type-6", 2, rq(APP, PCTX, ui(item(0x58, h("06 00 0001") + b"u" + h("0000")))), 6),
    Case("ui-user-identity-primary-overflow", 2, rq(APP, PCTX, ui(item(0x58, h("01 00 0100") + b"user"))), 6),
    Case("ui-user-identity-missing-secondary", 2, rq(APP, PCTX, ui(item(0x58, h("02 01 0004") + b"user"))), 6),
    Case("ui-user-identity-one-byte", 2, rq(APP, PCTX, ui(item(0x58, h("01")))), 6),
    Case("ui-user-identity-ac-overflow-sta5", 5, ac(APP, PCTX_AC, ui(item(0x59, h("0010") + b"tok"))), 6),
    # --- A-ASSOCIATE-AC (requestor in Sta5) ------------------------------------
    Case("ac-context-result-5", 5, ac(APP, item(0x21, h("01 00 05 00") + TS), UI), 6),
    Case("ac-accepted-without-transfer-syntax", 5, ac(APP, item(0x21, h("01 00 00 00")), UI), 6),
    Case("ac-accepted-empty-transfer-syntax", 5, ac(APP, item(0x21, h("01 00 00 00") + item(0x40, b"")), UI), 6),
    Case("ac-two-transfer-syntaxes", 5, ac(APP, item(0x21, h("01 00 00 00") + TS + TS), UI), 5),
    Case("ac-rq-context-item-in-ac", 5, ac(APP, PCTX, UI), 5),
    Case("ac-context-abstract-sub-item", 5, ac(APP, item(0x21, h("01 00 00 00") + AS + TS), UI), 5),
    Case("ac-context-unknown-sub-item", 5, ac(APP, item(0x21, h("01 00 00 00") + TS + item(0x77, b"")), UI), 4),
    Case("ac-missing-user-information", 5, ac(APP, PCTX_AC), 6),
    Case("ac-duplicate-context-id", 5, ac(APP, PCTX_AC, PCTX_AC, UI), 5),
    # --- P-DATA-TF / PDV items (Sta6) ------------------------------------------
    Case("p-data-zero-length", 6, pdu(0x04, b""), 6),
    Case("pdv-item-length-0", 6, pdu(0x04, h("00000000 01 03")), 6),
    Case("pdv-item-length-1", 6, pdu(0x04, h("00000001 01 03")), 6),
    Case("pdv-length-past-pdu", 6, pdu(0x04, h("00000010 01 03") + b"ABCD"), 6),
    Case("pdv-length-4gb", 6, pdu(0x04, h("ffffffff 01 03") + b"ABCD"), 6),
    Case("pdv-truncated-header", 6, pdu(0x04, h("000000")), 6),
    Case("pdv-second-item-truncated", 6, pdu(0x04, h("00000004 01 02") + b"AB" + h("00000004 01")), 6),
    Case("malformed-rq-sta6", 6, rq(APP, UI), 6),
    # --- well-formed PDUs in the wrong state -----------------------------------
    Case("p-data-before-association", 2, P_DATA, 2, UNEXPECTED),
    Case("release-rq-before-association", 2, RELEASE_RQ, 2, UNEXPECTED),
    Case("release-rp-before-association", 2, RELEASE_RP, 2, UNEXPECTED),
    Case("associate-ac-at-acceptor", 2, VALID_AC, 2, UNEXPECTED),
    Case("associate-rj-at-acceptor", 2, RJ, 2, UNEXPECTED),
    Case("associate-rq-while-established", 6, VALID_RQ, 2, UNEXPECTED),
    Case("associate-ac-while-established", 6, VALID_AC, 2, UNEXPECTED),
    Case("associate-rj-while-established", 6, RJ, 2, UNEXPECTED),
    Case("release-rp-while-established", 6, RELEASE_RP, 2, UNEXPECTED),
    Case("associate-rq-at-requestor", 5, VALID_RQ, 2, UNEXPECTED),
    Case("p-data-before-ac", 5, P_DATA, 2, UNEXPECTED),
    Case("release-rq-before-ac", 5, RELEASE_RQ, 2, UNEXPECTED),
]


def test_corpus_is_large_and_distinct() -> None:
    assert len(CORPUS) >= 40
    assert len({c.id for c in CORPUS}) == len(CORPUS)
    assert len({(c.state, c.data) for c in CORPUS}) == len(CORPUS)


def test_valid_inputs_are_valid() -> None:
    # The bases the corpus is derived from are accepted.
    acc = connection(2)
    acc.receive_data(VALID_RQ, T0)
    assert acc.state is State.STA3 and acc.take_output() == []
    req = connection(5)
    req.receive_data(VALID_AC, T0)
    assert req.state is State.STA6 and req.take_output() == []
    est = connection(6)
    est.receive_data(P_DATA, T0)
    assert est.state is State.STA6 and est.take_output() == []


def connection(state: int) -> Connection:
    if state == 2:
        c = Connection(requestor=False, artim_timeout=ARTIM, max_pdu_length=MAX_PDU)
        c.connection_made(0.0)
    elif state == 5:
        from aiodicom.ul.pdu import AAssociateRQ, PresentationContextRQ

        c = Connection(requestor=True, artim_timeout=ARTIM, max_pdu_length=MAX_PDU)
        c.request_association(
            AAssociateRQ(
                "ACCEPTOR",
                "REQUESTOR",
                [PresentationContextRQ(1, VERIFICATION.decode(), [IVLE.decode()])],
                UserInformation(max_length=MAX_PDU),
            )
        )
        c.connection_made(0.0)
    elif state == 6:
        c = Connection(requestor=False, artim_timeout=ARTIM, max_pdu_length=MAX_PDU)
        c.connection_made(0.0)
        c.receive_data(VALID_RQ, 0.0)
        c.accept(
            AAssociateAC("ACCEPTOR", "REQUESTOR", [PresentationContextAC(1, 0, IVLE.decode())], UserInformation(max_length=MAX_PDU))
        )
    else:  # pragma: no cover
        raise AssertionError(state)
    assert c.state is State(state)
    c.take_output()
    c.take_events()
    return c


def abort_pdus(out: list) -> list[tuple[int, int]]:  # type: ignore[type-arg]
    data = b"".join(bytes(b) for b in out)
    assert len(data) == 10 * (len(data) // 10)
    result = []
    for off in range(0, len(data), 10):
        assert data[off : off + 6] == h("07 00 00000004"), data
        result.append((data[off + 8], data[off + 9]))
    return result


def check_outcome(c: Connection, case: Case) -> None:
    out = c.take_output()
    assert abort_pdus(out) == [(2, case.reason)]
    events = c.take_events()
    aborted = [e for e in events if isinstance(e, Aborted)]
    assert len(aborted) == 1
    assert (aborted[0].source, aborted[0].reason, aborted[0].by_peer) == (2, case.reason, False)
    assert c.state is State.STA13
    if case.kind == INVALID:
        assert c.close_transport
    else:
        # PS3.8: AA-1 / AA-8 -> Sta13, ARTIM started, the peer closes
        assert not c.close_transport
        deadline = c.next_deadline()
        assert deadline == T0 + ARTIM
        c.handle_timer(deadline)
        assert c.close_transport
        assert c.state is State.STA1


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_malformed_whole(case: Case) -> None:
    c = connection(case.state)
    c.receive_data(case.data, T0)  # must not raise
    assert c._reader.buffered <= len(case.data)  # white-box: bounded buffering
    check_outcome(c, case)
    # the transport is (to be) closed: anything fed afterwards is ignored
    c.receive_data(VALID_RQ if case.state != 2 else P_DATA, T0)
    assert c.take_output() == []
    assert c.take_events() == []


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_malformed_byte_by_byte(case: Case) -> None:
    c = connection(case.state)
    for i in range(len(case.data)):
        c.receive_data(case.data[i : i + 1], T0)
        assert c._reader.buffered <= i + 1
        if c.has_output:
            break
    check_outcome(c, case)


@pytest.mark.parametrize(
    "case",
    [c for c in CORPUS if c.id in ("associate-rq-length-4gb", "p-data-length-4gb-sta6", "p-data-over-max-length-sta6", "associate-ac-length-4gb-sta5", "http-get-sta2")],
    ids=lambda c: c.id,
)
def test_oversized_or_foreign_header_rejected_after_six_bytes(case: Case) -> None:
    c = connection(case.state)
    c.receive_data(case.data[:5], T0)
    assert not c.has_output
    c.receive_data(case.data[5:6], T0)
    check_outcome(c, case)


def test_truncated_pdu_header_then_close() -> None:
    # A truncated header cannot be told apart from a slow peer: it waits,
    # and the transport closing (Evt17) ends it.
    c = connection(2)
    c.receive_data(h("01 00 00"), T0)
    assert c.take_output() == [] and c.state is State.STA2
    c.connection_lost(T0 + 1)
    assert c.state is State.STA1
    assert c.closed
    assert c.next_deadline() is None


def test_truncated_pdu_body_then_close_when_established() -> None:
    c = connection(6)
    c.receive_data(P_DATA[:-1], T0)
    assert c.take_output() == [] and c.take_events() == []
    c.connection_lost(T0)
    assert [type(e).__name__ for e in c.take_events()] == ["Aborted", "ConnectionClosed"]


def test_truncated_rq_in_sta2_then_artim() -> None:
    c = connection(2)
    c.receive_data(VALID_RQ[:50], 0.0)
    c.handle_timer(ARTIM)
    assert c.state is State.STA1
    assert c.close_transport


def test_unknown_user_info_sub_item_is_not_malformed() -> None:
    c = connection(2)
    c.receive_data(rq(APP, PCTX, ui(item(0x7E, b"whatever"))), T0)
    assert c.state is State.STA3
    assert c.take_output() == []
