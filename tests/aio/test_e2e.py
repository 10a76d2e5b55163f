"""End to end over loopback: aiodicom requestor against aiodicom Server (and
against small raw-socket peers for the cases the public API cannot provoke).

Every test runs on asyncio and on uvloop (see tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import aiodicom
from aiodicom.dimse.commands import C_ECHO_RQ
from aiodicom.dimse.fragments import Message
from aiodicom.ul import pdu as P
from aiodicom.ul.negotiation import AcceptorPolicy, negotiate

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"

# Generous upper bounds for waiting on events; never reached when things work.
DEADLINE = 10.0

RELEASE_RQ = P.AReleaseRQ().encode()
RELEASE_RP = P.AReleaseRP().encode()


# --------------------------------------------------------------------------
# helpers


@pytest.fixture(autouse=True)
def _no_asyncio_errors(caplog: pytest.LogCaptureFixture) -> object:
    """No 'Task was destroyed' / 'Future exception was never retrieved' / tracebacks."""
    caplog.set_level(logging.INFO)
    yield
    gc.collect()
    bad = [
        r
        for when in ("setup", "call", "teardown")
        for r in caplog.get_records(when)  # type: ignore[arg-type]
        if r.levelno >= logging.ERROR or (r.exc_info and r.levelno >= logging.WARNING)
    ]
    assert not bad, [r.getMessage() for r in bad]


@pytest.fixture
async def server() -> AsyncIterator[aiodicom.Server]:
    srv = aiodicom.Server("AIODICOM")
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.close(timeout=1.0)


async def started(srv: aiodicom.Server) -> aiodicom.Server:
    await srv.start("127.0.0.1", 0)
    return srv


async def wait(aw: Awaitable[object], timeout: float = DEADLINE) -> object:
    return await asyncio.wait_for(aw, timeout)


async def wait_all_closed(srv: aiodicom.Server) -> None:
    """Wait until every server-side association is closed."""
    pending = [a.closed for a in list(srv.associations)]
    if pending:
        await wait(asyncio.gather(*(asyncio.shield(f) for f in pending)))
    assert srv.associations == set()


def only_association(srv: aiodicom.Server) -> aiodicom.Association:
    assert len(srv.associations) == 1, srv.associations
    return next(iter(srv.associations))


async def read_pdu(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    header = await wait(reader.readexactly(6))
    assert isinstance(header, bytes)
    pdu_type, _res, length = struct.unpack(">BBL", header)
    body = await wait(reader.readexactly(length))
    assert isinstance(body, bytes)
    return pdu_type, body


def request_pdu(called: str = "AIODICOM", calling: str = "RAW") -> P.AAssociateRQ:
    return P.AAssociateRQ(
        called,
        calling,
        [P.PresentationContextRQ(1, VERIFICATION, [IMPLICIT])],
        P.UserInformation(max_length=16384, implementation_class_uid="1.2.3.4"),
    )


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, P.AAssociateRQ], Awaitable[None]]


async def raw_acceptor(scenario: RawHandler, *, accept: bool = True) -> tuple[asyncio.Server, asyncio.Future[None]]:
    """A hand-driven acceptor: reads the A-ASSOCIATE-RQ, answers AC (if
    ``accept``), then runs ``scenario``.  The returned future holds the
    scenario's outcome (its assertion errors included)."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[None] = loop.create_future()
    policy = AcceptorPolicy(ae_title="RAWSCP", supported={VERIFICATION: [EXPLICIT, IMPLICIT]})

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            pdu_type, body = await read_pdu(reader)
            assert pdu_type == P.A_ASSOCIATE_RQ
            rq = P.decode_pdu(pdu_type, body)
            assert isinstance(rq, P.AAssociateRQ)
            if accept:
                ac, _ = negotiate(rq, policy)
                writer.write(ac.encode())
                await writer.drain()
            await scenario(reader, writer, rq)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            if not outcome.done():
                outcome.set_exception(exc)
        else:
            if not outcome.done():
                outcome.set_result(None)
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, outcome


def port_of(srv: asyncio.Server) -> int:
    return int(srv.sockets[0].getsockname()[1])


# --------------------------------------------------------------------------
# happy paths


async def test_echo_over_loopback(server: aiodicom.Server) -> None:
    async with aiodicom.associate("127.0.0.1", server.port, called_ae="AIODICOM") as assoc:
        assert assoc.is_established
        assert await assoc.echo() == 0x0000
        ctx = assoc.find_context(VERIFICATION)
        assert ctx is not None and ctx.transfer_syntax == EXPLICIT
    assert assoc.closed.done()
    assert not assoc.is_established


async def test_await_form_and_explicit_release(server: aiodicom.Server) -> None:
    assoc = await aiodicom.associate("127.0.0.1", server.port)
    try:
        assert await assoc.echo() == 0
        server_side = only_association(server)
        assert server_side.calling_ae == "AIODICOM"
    finally:
        await wait(assoc.release())
    assert assoc.closed.done()
    assert assoc.abort_info is None
    await wait(asyncio.shield(server_side.closed))
    # a normal release: nobody aborted
    assert server_side.abort_info is None
    assert server.associations == set()


async def test_many_echoes_on_one_association(server: aiodicom.Server) -> None:
    async with aiodicom.associate("127.0.0.1", server.port) as assoc:
        statuses = [await assoc.echo() for _ in range(200)]
    assert statuses == [0] * 200


async def test_fifty_concurrent_associations(server: aiodicom.Server) -> None:
    async def one(i: int) -> int:
        async with aiodicom.associate("127.0.0.1", server.port, calling_ae=f"SCU{i:03d}") as assoc:
            return await assoc.echo()

    statuses = await wait(asyncio.gather(*(one(i) for i in range(50))), 60)
    assert statuses == [0] * 50
    await wait_all_closed(server)
    assert server.total_associations == 50


async def test_release_by_requestor_ends_both_sides(server: aiodicom.Server) -> None:
    assoc = await aiodicom.associate("127.0.0.1", server.port)
    server_side = only_association(server)
    await wait(assoc.release())
    assert assoc.closed.done() and assoc.abort_info is None
    await wait(asyncio.shield(server_side.closed))
    assert server_side.abort_info is None
    assert server.associations == set()
    # released twice: a no-op
    await wait(assoc.release())


async def test_abort_by_requestor_seen_by_server(server: aiodicom.Server) -> None:
    assoc = await aiodicom.associate("127.0.0.1", server.port)
    assert await assoc.echo() == 0
    server_side = only_association(server)
    assoc.abort()
    await wait(assoc.wait_closed())
    await wait(asyncio.shield(server_side.closed))
    assert server.associations == set()
    info = server_side.abort_info
    assert info is not None
    assert info.by_peer and info.source == 0
    with pytest.raises(aiodicom.AssociationAborted):
        await assoc.echo()


async def test_exception_in_async_with_aborts(server: aiodicom.Server) -> None:
    with pytest.raises(ValueError, match="boom"):
        async with aiodicom.associate("127.0.0.1", server.port) as assoc:
            server_side = only_association(server)
            raise ValueError("boom")
    assert assoc.closed.done()
    await wait(asyncio.shield(server_side.closed))
    assert server_side.abort_info is not None and server_side.abort_info.by_peer


# --------------------------------------------------------------------------
# rejections


async def test_strict_called_ae_rejects() -> None:
    srv = await started(aiodicom.Server("ARCHIVE", strict_called_ae=True))
    try:
        with pytest.raises(aiodicom.AssociationRejectedError) as info:
            await aiodicom.associate("127.0.0.1", srv.port, called_ae="NOTME")
        assert (info.value.result, info.value.source, info.value.reason) == (1, 1, 7)
        async with aiodicom.associate("127.0.0.1", srv.port, called_ae="ARCHIVE") as assoc:
            assert await assoc.echo() == 0
    finally:
        await srv.close(timeout=1.0)


async def test_calling_ae_allow_list() -> None:
    srv = await started(aiodicom.Server("ARCHIVE", allowed_calling_aes=["CT01"]))
    try:
        with pytest.raises(aiodicom.AssociationRejectedError) as info:
            await aiodicom.associate("127.0.0.1", srv.port, calling_ae="INTRUDER")
        assert (info.value.result, info.value.source, info.value.reason) == (1, 1, 3)
        async with aiodicom.associate("127.0.0.1", srv.port, calling_ae="CT01") as assoc:
            assert await assoc.echo() == 0
    finally:
        await srv.close(timeout=1.0)


async def test_max_associations_exceeded_is_transient() -> None:
    srv = await started(aiodicom.Server("ARCHIVE", max_associations=1))
    try:
        first = await aiodicom.associate("127.0.0.1", srv.port)
        first_server_side = only_association(srv)
        with pytest.raises(aiodicom.AssociationRejectedError) as info:
            await aiodicom.associate("127.0.0.1", srv.port)
        assert (info.value.result, info.value.source, info.value.reason) == (2, 3, 2)
        assert "local limit exceeded" in str(info.value)
        # the held association is unaffected
        assert await first.echo() == 0
        await wait(first.release())
        await wait(asyncio.shield(first_server_side.closed))
        await wait_all_closed(srv)
        # the slot is free again
        async with aiodicom.associate("127.0.0.1", srv.port) as again:
            assert await again.echo() == 0
    finally:
        await srv.close(timeout=1.0)


async def test_no_accepted_context_for_echo(server: aiodicom.Server) -> None:
    # CT storage is not offered by the server: the AC rejects it.
    async with aiodicom.associate("127.0.0.1", server.port, contexts=[CT]) as assoc:
        assert assoc.contexts == {}
        with pytest.raises(aiodicom.NoAcceptedContext):
            await assoc.echo()
        assert assoc.is_established


async def test_transfer_syntax_not_accepted_gives_no_context(server: aiodicom.Server) -> None:
    async with aiodicom.associate(
        "127.0.0.1", server.port, contexts=[(VERIFICATION, [JPEG_BASELINE])]
    ) as assoc:
        assert assoc.accept is not None
        assert [c.result for c in assoc.accept.presentation_contexts] == [P.PCTX_TRANSFER_SYNTAXES_NOT_SUPPORTED]
        with pytest.raises(aiodicom.NoAcceptedContext):
            await assoc.echo()


async def test_scp_role_refused_for_verification(server: aiodicom.Server) -> None:
    # asking to be SCP only for Verification: the server cannot be SCU -> unusable
    async with aiodicom.associate(
        "127.0.0.1", server.port, roles={VERIFICATION: (False, True)}
    ) as assoc:
        assert assoc.find_context(VERIFICATION) is None
        with pytest.raises(aiodicom.NoAcceptedContext):
            await assoc.echo()


# --------------------------------------------------------------------------
# the peer goes away


async def test_server_handler_closes_connection_mid_association(caplog: pytest.LogCaptureFixture) -> None:
    async def slam(assoc: aiodicom.Association, msg: Message) -> None:
        assert assoc.transport is not None
        assoc.transport.close()

    srv = await started(aiodicom.Server("ARCHIVE", handlers={C_ECHO_RQ: slam}))
    try:
        async with aiodicom.associate("127.0.0.1", srv.port) as assoc:
            with pytest.raises(aiodicom.AssociationAborted):
                await wait(assoc.echo())
            await wait(assoc.wait_closed())
            assert not assoc.is_established
            # a further request fails the same way, it does not hang
            with pytest.raises(aiodicom.AssociationAborted):
                await wait(assoc.echo())
        await wait_all_closed(srv)
    finally:
        await srv.close(timeout=1.0)
    del assoc
    gc.collect()
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]


async def test_peer_closes_right_after_accepting(caplog: pytest.LogCaptureFixture) -> None:
    async def close_now(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rq: P.AAssociateRQ) -> None:
        writer.close()

    raw, outcome = await raw_acceptor(close_now)
    try:
        async with aiodicom.associate("127.0.0.1", port_of(raw), called_ae="RAWSCP") as assoc:
            with pytest.raises(aiodicom.AssociationAborted):
                await wait(assoc.echo())
            assert assoc.closed.done()
        await wait(outcome)
    finally:
        raw.close()
        await raw.wait_closed()
    del assoc
    gc.collect()
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]


async def test_peer_closes_before_answering_association() -> None:
    async def nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rq: P.AAssociateRQ) -> None:
        writer.close()

    raw, outcome = await raw_acceptor(nothing, accept=False)
    try:
        with pytest.raises(aiodicom.AssociationAborted):
            await wait(aiodicom.associate("127.0.0.1", port_of(raw)))
        await wait(outcome)
    finally:
        raw.close()
        await raw.wait_closed()


async def test_peer_aborts_outstanding_request() -> None:
    async def abort_on_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rq: P.AAssociateRQ) -> None:
        pdu_type, _ = await read_pdu(reader)
        assert pdu_type == P.P_DATA_TF
        writer.write(P.AAbort(0, 0).encode())
        await writer.drain()
        assert await wait(reader.read()) == b""  # the requestor closes

    raw, outcome = await raw_acceptor(abort_on_request)
    try:
        assoc = await aiodicom.associate("127.0.0.1", port_of(raw))
        with pytest.raises(aiodicom.AssociationAborted) as info:
            await wait(assoc.echo())
        assert info.value.by_peer
        assert info.value.source == 0
        await wait(assoc.wait_closed())
        await wait(outcome)
    finally:
        raw.close()
        await raw.wait_closed()


async def test_connect_refused() -> None:
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = port_of(srv)
    srv.close()
    await srv.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await wait(aiodicom.associate("127.0.0.1", port))


# --------------------------------------------------------------------------
# timers


async def test_artim_closes_silent_connection() -> None:
    srv = await started(aiodicom.Server("ARCHIVE", artim_timeout=0.2))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        try:
            # Waiting for the server's EOF: the event under test.
            data = await wait(reader.read())
            assert data == b""
        finally:
            writer.close()
        await wait_all_closed(srv)
        # the server still serves others
        async with aiodicom.associate("127.0.0.1", srv.port) as assoc:
            assert await assoc.echo() == 0
    finally:
        await srv.close(timeout=1.0)


# --------------------------------------------------------------------------
# release collision (PS3.8 9.2.2, facts sheet 2.5)


async def test_release_collision_requestor_side() -> None:
    seen: list[object] = []

    async def collide(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rq: P.AAssociateRQ) -> None:
        pdu_type, _ = await read_pdu(reader)
        seen.append(pdu_type)  # the requestor's A-RELEASE-RQ
        writer.write(RELEASE_RQ)  # ours crosses it: collision (acceptor -> Sta10)
        await writer.drain()
        pdu_type, _ = await read_pdu(reader)
        seen.append(pdu_type)  # requestor in Sta9 answers RP (AR-9) -> Sta11
        writer.write(RELEASE_RP)  # acceptor Sta12 -> AR-4
        await writer.drain()
        seen.append(await wait(reader.read()))  # requestor closes (AR-3)

    raw, outcome = await raw_acceptor(collide)
    try:
        assoc = await aiodicom.associate("127.0.0.1", port_of(raw))
        await wait(assoc.release())
        assert assoc.closed.done()
        assert assoc.abort_info is None
        await wait(outcome)
        assert seen == [P.A_RELEASE_RQ, P.A_RELEASE_RP, b""]
    finally:
        raw.close()
        await raw.wait_closed()


async def test_release_collision_acceptor_side(server: aiodicom.Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request_pdu().encode())
        pdu_type, _ = await read_pdu(reader)
        assert pdu_type == P.A_ASSOCIATE_AC
        server_side = only_association(server)
        releasing = asyncio.ensure_future(server_side.release())
        pdu_type, _ = await read_pdu(reader)
        assert pdu_type == P.A_RELEASE_RQ  # server (acceptor) asked first: Sta7
        writer.write(RELEASE_RQ)  # ours crosses it -> server Sta10
        writer.write(RELEASE_RP)  # we are the requestor: Sta9 -> AR-9 -> Sta11
        await writer.drain()
        pdu_type, _ = await read_pdu(reader)
        assert pdu_type == P.A_RELEASE_RP  # server Sta12 -> AR-4
        writer.close()  # AR-3 on our side
        await wait(releasing)
        assert server_side.closed.done()
        assert server_side.abort_info is None
        assert server.associations == set()
    finally:
        writer.close()
