"""C-FIND SCU (async iterator) and SCP (async generator handlers): aiodicom
against aiodicom over loopback.  Every async test runs on asyncio and uvloop.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydicom.dataset import Dataset

import aiodicom
from aiodicom import cli
from aiodicom.dimse.commands import C_FIND_RQ, Command
from aiodicom.services.find import (
    FIND_MODELS,
    FindRequest,
    FindResults,
    resolve_model,
    serve_find,
)
from aiodicom.services.store import HANDLER_FAILED, ServiceError
from aiodicom.uids import (
    PatientRootQueryRetrieveInformationModelFind as PATIENT_FIND,
)
from aiodicom.uids import (
    StudyRootQueryRetrieveInformationModelFind as STUDY_FIND,
)

VERIFICATION = "1.2.840.10008.1.1"
DEADLINE = 10.0

PATIENTS = [("P1", "Doe^John"), ("P2", "Doe^Jane"), ("P3", "Roe^Richard")]


@pytest.fixture(autouse=True)
def _no_asyncio_errors(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.INFO)
    yield
    gc.collect()
    bad = [
        r
        for when in ("setup", "call", "teardown")
        for r in caplog.get_records(when)  # type: ignore[arg-type]
        if r.levelno >= logging.ERROR and r.name.startswith("asyncio")
    ]
    assert not bad, [r.getMessage() for r in bad]


def patient(pid: str, name: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "PATIENT"
    ds.PatientID = pid
    ds.PatientName = name
    return ds


def query(**keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = keys.pop("QueryRetrieveLevel", "PATIENT")
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


class Scp:
    """State shared between a test and its find handler."""

    def __init__(self) -> None:
        self.requests: list[FindRequest] = []
        self.closed = asyncio.Event()
        self.saw_cancel = False
        self.calls = 0


async def start(handler: Any, **kw: Any) -> aiodicom.Server:
    server = aiodicom.Server("FINDSCP", dimse_timeout=DEADLINE)
    serve_find(server, handler, **kw)
    await server.start("127.0.0.1", 0)
    return server


def connect(server: aiodicom.Server, contexts: Any = None, **kw: Any) -> aiodicom.associate:
    return aiodicom.associate(
        "127.0.0.1",
        server.port,
        called_ae="FINDSCP",
        calling_ae="FINDSCU",
        contexts=contexts or [PATIENT_FIND, STUDY_FIND, VERIFICATION],
        dimse_timeout=DEADLINE,
        **kw,
    )


def matching_handler(state: Scp) -> Any:
    async def handler(req: FindRequest) -> AsyncIterator[Any]:
        state.requests.append(req)
        wanted = str(req.identifier.get("PatientID", "") or "")
        try:
            for pid, name in PATIENTS:
                if wanted in ("", "*") or wanted == pid:
                    yield patient(pid, name)
        finally:
            state.closed.set()

    return handler


def slow_handler(state: Scp, *, cooperative: bool) -> Any:
    """Yields one match, then waits for the C-CANCEL (or forever)."""

    async def handler(req: FindRequest) -> AsyncIterator[Any]:
        state.requests.append(req)
        try:
            yield patient("P1", "Doe^John")
            yield patient("P2", "Doe^Jane")
            if cooperative:
                await asyncio.wait_for(req.wait_cancelled(), DEADLINE)
                yield patient("P3", "Roe^Richard")  # not sent: the driver stops
            else:
                await asyncio.Event().wait()  # blocked until the driver cancels us
        finally:
            # closed (GeneratorExit) or cancelled (CancelledError) because of the C-CANCEL
            state.saw_cancel = req.cancelled
            state.closed.set()

    return handler


# ---------------------------------------------------------------- basics


async def test_find_several_matches() -> None:
    state = Scp()
    server = await start(matching_handler(state))
    try:
        async with connect(server) as assoc:
            results = [(s, d) async for s, d in assoc.find(query(PatientID="", PatientName=""))]
    finally:
        await server.close(timeout=1.0)
    assert [int(s) for s, _ in results] == [0xFF00, 0xFF00, 0xFF00, 0x0000]
    assert all(isinstance(s, aiodicom.Status) for s, _ in results)
    assert [d.PatientID for _, d in results[:3]] == ["P1", "P2", "P3"]
    assert str(results[1][1].PatientName) == "Doe^Jane"
    assert results[-1][1] is None
    (req,) = state.requests
    assert req.model == PATIENT_FIND
    assert req.calling_ae == "FINDSCU" and req.called_ae == "FINDSCP"
    assert req.identifier.QueryRetrieveLevel == "PATIENT"
    assert "PatientName" in req.identifier
    assert not req.cancelled
    assert state.closed.is_set()


async def test_find_single_match_study_model_and_priority() -> None:
    state = Scp()
    server = await start(matching_handler(state))
    try:
        async with connect(server) as assoc:
            async with assoc.find(query(PatientID="P2"), model="study", priority=2) as results:
                got = [(s, d) async for s, d in results]
            assert results.final_status == 0 and results.matches == 1
            assert results.final_command is not None and results.final_command.status == 0
    finally:
        await server.close(timeout=1.0)
    assert [d.PatientID for s, d in got if d is not None] == ["P2"]
    assert state.requests[0].model == STUDY_FIND
    assert state.requests[0].priority == 2


async def test_find_no_matches() -> None:
    server = await start(matching_handler(Scp()))
    try:
        async with connect(server) as assoc:
            got = [(s, d) async for s, d in assoc.find(query(PatientID="nobody"))]
    finally:
        await server.close(timeout=1.0)
    assert got == [(0, None)]


async def test_find_pending_warning_and_custom_final_status() -> None:
    async def handler(req: FindRequest) -> AsyncIterator[Any]:
        yield (0xFF01, patient("P1", "A^B"))
        yield patient("P2", "C^D")
        yield (0xA700, None)  # out of resources: ends the operation
        raise AssertionError("not reached")  # pragma: no cover

    server = await start(handler)
    try:
        async with connect(server) as assoc:
            got = [(int(s), d is not None) async for s, d in assoc.find(query(PatientID=""))]
    finally:
        await server.close(timeout=1.0)
    assert got == [(0xFF01, True), (0xFF00, True), (0xA700, False)]


async def test_find_coroutine_handler_returning_list() -> None:
    async def handler(req: FindRequest) -> list[Dataset]:
        return [patient("P9", "X^Y")]

    server = await start(handler)
    try:
        async with connect(server) as assoc:
            got = [d.PatientID async for s, d in assoc.find(query(PatientID="")) if d is not None]
    finally:
        await server.close(timeout=1.0)
    assert got == ["P9"]


async def test_find_without_accepted_context() -> None:
    server = await start(matching_handler(Scp()), models=["patient"])
    try:
        async with connect(server) as assoc:
            with pytest.raises(aiodicom.NoAcceptedContext, match=STUDY_FIND):
                async for _ in assoc.find(query(), model="study"):
                    pass  # pragma: no cover
            assert await assoc.echo() == 0
    finally:
        await server.close(timeout=1.0)


def test_models() -> None:
    assert resolve_model("patient") == PATIENT_FIND
    assert resolve_model("STUDY") == STUDY_FIND
    assert resolve_model("1.2.840.10008.5.1.4.31") == FIND_MODELS["worklist"]
    with pytest.raises(ValueError, match="unknown query model"):
        resolve_model("bogus")


async def test_find_requires_dataset() -> None:
    server = await start(matching_handler(Scp()))
    try:
        async with connect(server) as assoc:
            with pytest.raises(TypeError):
                assoc.find({"PatientID": "1"})  # type: ignore[arg-type]
    finally:
        await server.close(timeout=1.0)


# ---------------------------------------------------------------- cancel


async def test_break_cancels_and_association_stays_usable() -> None:
    state = Scp()
    server = await start(slow_handler(state, cooperative=True))
    try:
        async with connect(server) as assoc:
            seen = []
            async for status, ds in assoc.find(query(PatientID="")):
                seen.append(ds.PatientID)
                break  # plain break: no aclose() from the user
            assert seen == ["P1"]
            # The C-CANCEL went out at once; the next operation works.
            assert await assoc.echo() == 0
            await asyncio.wait_for(state.closed.wait(), DEADLINE)
            assert state.saw_cancel
            # ... and a whole new C-FIND on the same association too.
            state2 = Scp()
            server.handlers[C_FIND_RQ].handlers[PATIENT_FIND] = matching_handler(state2)  # type: ignore[attr-defined]
            got = [d.PatientID async for s, d in assoc.find(query(PatientID="")) if d is not None]
            assert got == ["P1", "P2", "P3"]
    finally:
        await server.close(timeout=1.0)


async def test_async_with_break_waits_for_cancel_response() -> None:
    state = Scp()
    server = await start(slow_handler(state, cooperative=True))
    try:
        async with connect(server) as assoc:
            async with assoc.find(query(PatientID="")) as results:
                async for status, ds in results:
                    assert status == 0xFF00
                    break
            assert results.final_status == 0xFE00
            assert results.final_status is not None and results.final_status.is_cancel
            assert state.closed.is_set() and state.saw_cancel
            assert await assoc.echo() == 0
    finally:
        await server.close(timeout=1.0)


async def test_explicit_aclose_and_exception_in_loop_body() -> None:
    state = Scp()
    server = await start(slow_handler(state, cooperative=False))
    try:
        async with connect(server) as assoc:
            results = assoc.find(query(PatientID=""))
            status, ds = await results.__anext__()
            assert ds is not None and ds.PatientID == "P1"
            await results.aclose()
            assert results.final_status == 0xFE00
            assert state.saw_cancel and state.closed.is_set()
            with pytest.raises(StopAsyncIteration):
                await results.__anext__()
            await results.aclose()  # idempotent

            state.closed.clear()
            with pytest.raises(KeyError):
                async with assoc.find(query(PatientID="")) as results2:
                    async for _ in results2:
                        raise KeyError("boom")
            assert results2.final_status == 0xFE00
            assert await assoc.echo() == 0
    finally:
        await server.close(timeout=1.0)


async def test_cancel_interrupts_a_blocked_handler() -> None:
    """The SCP answers FE00 even when the handler is stuck awaiting something."""
    state = Scp()
    server = await start(slow_handler(state, cooperative=False))
    try:
        async with connect(server) as assoc:
            async with assoc.find(query(PatientID="")) as results:
                n = 0
                async for status, ds in results:
                    n += 1
                    if n == 2:
                        break
            assert results.final_status == 0xFE00
            assert state.saw_cancel  # CancelledError reached the handler with cancelled set
    finally:
        await server.close(timeout=1.0)


async def test_task_cancellation_while_waiting_cleans_up() -> None:
    state = Scp()
    server = await start(slow_handler(state, cooperative=False))
    try:
        async with connect(server) as assoc:
            got_two = asyncio.Event()

            async def consume() -> None:
                async for status, ds in assoc.find(query(PatientID="")):
                    if ds is not None and ds.PatientID == "P2":
                        got_two.set()

            task = asyncio.ensure_future(consume())
            await asyncio.wait_for(got_two.wait(), DEADLINE)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(state.closed.wait(), DEADLINE)
            assert state.saw_cancel
            assert await assoc.echo() == 0
            async with assoc.find(query(PatientID="")) as again:
                async for _ in again:
                    break
            assert again.final_status == 0xFE00
    finally:
        await server.close(timeout=1.0)


# ---------------------------------------------------------------- failures


async def test_handler_raising_answers_c001_and_next_find_works(caplog: pytest.LogCaptureFixture) -> None:
    state = Scp()

    async def handler(req: FindRequest) -> AsyncIterator[Any]:
        state.calls += 1
        yield patient("P1", "A^B")
        if state.calls == 1:
            raise RuntimeError("database exploded")
        yield patient("P2", "C^D")

    server = await start(handler)
    try:
        async with connect(server) as assoc:
            async with assoc.find(query(PatientID="")) as results:
                got = [(int(s), d) async for s, d in results]
            assert [s for s, _ in got] == [0xFF00, HANDLER_FAILED]
            assert results.final_status is not None and results.final_status.is_failure
            assert results.final_command is not None
            assert "database exploded" in (results.final_command.error_comment or "")
            got2 = [int(s) async for s, d in assoc.find(query(PatientID=""))]
            assert got2 == [0xFF00, 0xFF00, 0x0000]
    finally:
        await server.close(timeout=1.0)
    logged = [r for r in caplog.records if r.exc_info and "database exploded" in str(r.exc_info[1])]
    assert len(logged) == 1


async def test_handler_raising_before_first_match_and_service_error() -> None:
    async def handler(req: FindRequest) -> AsyncIterator[Any]:
        if req.identifier.PatientID == "deny":
            raise ServiceError(0xA900, "bad identifier")
        raise LookupError("nothing here")
        yield  # pragma: no cover

    server = await start(handler)
    try:
        async with connect(server) as assoc:
            r1 = assoc.find(query(PatientID="deny"))
            assert [int(s) async for s, _ in r1] == [0xA900]
            assert r1.final_command is not None and r1.final_command.error_comment == "bad identifier"
            r2 = assoc.find(query(PatientID="x"))
            assert [int(s) async for s, _ in r2] == [HANDLER_FAILED]
    finally:
        await server.close(timeout=1.0)


async def test_handler_yielding_garbage() -> None:
    async def handler(req: FindRequest) -> AsyncIterator[Any]:
        yield "not a dataset"

    server = await start(handler)
    try:
        async with connect(server) as assoc:
            assert [int(s) async for s, _ in assoc.find(query())] == [HANDLER_FAILED]
    finally:
        await server.close(timeout=1.0)


async def test_find_on_unregistered_model_context() -> None:
    """A C-FIND whose SOP class does not match its context is refused (0122)."""
    server = await start(matching_handler(Scp()))
    try:
        async with connect(server) as assoc:
            ctx = assoc.find_context(PATIENT_FIND)
            assert ctx is not None
            from aiodicom.dataset import encode_identifier

            cmd = Command(C_FIND_RQ, message_id=9, affected_sop_class_uid=STUDY_FIND, priority=0)
            rsp = await assoc.send_request(ctx.context_id, cmd, [encode_identifier(query(), ctx.transfer_syntax)])
            assert rsp.command.status == 0x0122
            assert [int(s) async for s, _ in assoc.find(query(PatientID="P1"))] == [0xFF00, 0]
    finally:
        await server.close(timeout=1.0)


async def test_serve_find_per_model_handlers() -> None:
    async def for_patient(req: FindRequest) -> AsyncIterator[Any]:
        yield patient("PAT", "P^P")

    async def for_study(req: FindRequest) -> AsyncIterator[Any]:
        yield patient("STU", "S^S")

    server = aiodicom.Server("FINDSCP")
    serve_find(server, for_patient, models=["patient"])
    serve_find(server, for_study, models=["study"])
    await server.start("127.0.0.1", 0)
    try:
        async with connect(server) as assoc:
            a = [d.PatientID async for s, d in assoc.find(query(), "patient") if d is not None]
            b = [d.PatientID async for s, d in assoc.find(query(), STUDY_FIND) if d is not None]
    finally:
        await server.close(timeout=1.0)
    assert (a, b) == (["PAT"], ["STU"])


async def test_find_results_repr_and_type() -> None:
    server = await start(matching_handler(Scp()))
    try:
        async with connect(server) as assoc:
            r = assoc.find(query())
            assert isinstance(r, FindResults) and "new" in repr(r)
            async for _ in r:
                pass
            assert "done" in repr(r) and r.matches == 3
    finally:
        await server.close(timeout=1.0)


# ---------------------------------------------------------------- CLI


def test_parse_keys() -> None:
    assert cli._parse_key("PatientID=123") == (0x00100020, "LO", "123")
    assert cli._parse_key("(0010,0020)=123") == (0x00100020, "LO", "123")
    assert cli._parse_key("0010,0010") == (0x00100010, "PN", "")
    with pytest.raises(cli.CLIError, match="unknown attribute"):
        cli._parse_key("NoSuchKeyword=1")


def test_build_query() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(
        ["find", "h", "1", "--model", "study", "-k", "PatientName=Doe*", "-k", "StudyDate", "-k",
         "NumberOfStudyRelatedSeries", "-k", "ReferencedStudySequence"]
    )
    ds = cli._build_query(args)
    assert ds.QueryRetrieveLevel == "STUDY"
    assert ds.PatientName == "Doe*"
    assert ds["StudyDate"].VR == "DA" and not ds.StudyDate
    assert ds["ReferencedStudySequence"].VR == "SQ" and len(ds.ReferencedStudySequence) == 0
    args = parser.parse_args(["find", "h", "1", "--model", "study", "--level", "patient"])
    with pytest.raises(cli.CLIError, match="no PATIENT level"):
        cli._build_query(args)


async def test_cli_find_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    state = Scp()
    server = await start(matching_handler(state))
    try:
        argv = ["find", "127.0.0.1", str(server.port), "--aec", "FINDSCP", "-k", "PatientID", "-k", "PatientName"]
        rc = await asyncio.to_thread(cli.main, argv)
        out, err = capsys.readouterr()
        assert rc == 0, err
        assert out.count("Match ") == 3
        assert "PatientName" in out and "Roe^Richard" in out
        assert "3 match(es)" in err
        rc = await asyncio.to_thread(cli.main, argv[:5] + ["-k", "PatientID=P2", "--json"])
        out, err = capsys.readouterr()
        assert rc == 0, err
        data = json.loads(out)
        assert len(data) == 1 and data[0]["00100020"]["Value"] == ["P2"]
        assert state.requests[-1].identifier.PatientID == "P2"
    finally:
        await server.close(timeout=1.0)


async def test_cli_find_failure_status(capsys: pytest.CaptureFixture[str]) -> None:
    async def handler(req: FindRequest) -> AsyncIterator[Any]:
        raise ServiceError(0xC123, "nope")
        yield  # pragma: no cover

    server = await start(handler)
    try:
        rc = await asyncio.to_thread(cli.main, ["find", "127.0.0.1", str(server.port), "-k", "PatientID"])
    finally:
        await server.close(timeout=1.0)
    assert rc == 1
    assert "0xC123" in capsys.readouterr().err
