"""aiodicom.events: subscribe, counters, TRACE logging, zero cost when off."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

import aiodicom
from aiodicom import events


@pytest.fixture(autouse=True)
def clean_events() -> Iterator[None]:
    yield
    events.disable_counters()
    events.reset_counters()


async def test_disabled_by_default_and_after_unsubscribe(echo_server: aiodicom.Server) -> None:
    assert events.enabled is False
    unsub = events.subscribe(lambda e: None)
    assert events.enabled is True
    unsub()
    assert events.enabled is False
    async with aiodicom.associate("127.0.0.1", echo_server.port) as assoc:
        await assoc.echo()
    assert events.enabled is False


async def test_association_and_message_events(echo_server: aiodicom.Server) -> None:
    seen: list[events.Event] = []
    unsub = events.subscribe(seen.append)
    try:
        async with aiodicom.associate("127.0.0.1", echo_server.port) as assoc:
            assert await assoc.echo() == 0
        await echo_server.close(timeout=1.0)
    finally:
        unsub()
    client = [e for e in seen if e.assoc is assoc]
    kinds = [e.kind for e in client]
    assert kinds == [
        events.ASSOCIATION_REQUESTED,
        events.ASSOCIATION_ACCEPTED,
        events.MESSAGE_SENT,
        events.MESSAGE_RECEIVED,
        events.ASSOCIATION_RELEASED,
        events.ASSOCIATION_CLOSED,
    ]
    sent, received = client[2].data, client[3].data
    assert sent["command"] == "C-ECHO-RQ" and sent["message_id"] == 1 and sent["context_id"] == 1
    assert received["command"] == "C-ECHO-RSP" and received["status"] == 0
    assert received["message_id_being_responded_to"] == 1
    server_side = [e.kind for e in seen if e.assoc is not None and not e.assoc.requestor]
    assert server_side[:2] == [events.ASSOCIATION_REQUESTED, events.ASSOCIATION_ACCEPTED]
    assert events.MESSAGE_RECEIVED in server_side and events.MESSAGE_SENT in server_side


async def test_kinds_filter_and_failing_subscriber(echo_server: aiodicom.Server,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def boom(e: events.Event) -> None:
        raise RuntimeError("subscriber bug")

    u1 = events.subscribe(lambda e: seen.append(e.kind), kinds={events.ASSOCIATION_REJECTED})
    u2 = events.subscribe(boom, kinds={events.MESSAGE_SENT})
    try:
        async with aiodicom.Server("STRICT", strict_called_ae=True) as strict:
            await strict.start("127.0.0.1", 0)
            with pytest.raises(aiodicom.AssociationRejectedError):
                await aiodicom.associate("127.0.0.1", strict.port, called_ae="OTHER")
        async with aiodicom.associate("127.0.0.1", echo_server.port) as assoc:
            assert await assoc.echo() == 0  # a failing subscriber does not break the protocol
    finally:
        u1()
        u2()
    assert seen.count(events.ASSOCIATION_REJECTED) >= 1
    assert any("subscriber" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError):
        events.subscribe(print, kinds={"nope"})


async def test_counters(echo_server: aiodicom.Server) -> None:
    events.reset_counters()
    events.enable_counters()
    async with aiodicom.associate("127.0.0.1", echo_server.port) as assoc:
        for _ in range(3):
            await assoc.echo()
        c = events.counters()
        assert c["associations_open"] == 2  # both ends are in this process
        assert c["bytes_in"] > 0 and c["bytes_out"] > 0
    await echo_server.close(timeout=1.0)
    c = events.counters()
    assert c["associations_open"] == 0
    assert c["associations_total"] == 2
    # final responses counted on both sides: 3 sent by the SCP, 3 received by the SCU
    assert c["operations"]["C-ECHO"]["Success"] == 6
    assert c["bytes_in"] == c["bytes_out"]  # everything stayed in this process


async def test_suboperation_progress_from_pending_get_responses() -> None:
    from aiodicom.dimse.commands import Command

    seen: list[events.Event] = []
    unsub = events.subscribe(seen.append, kinds={events.SUBOPERATION_PROGRESS})
    try:
        cmd = Command(0x8010, message_id_being_responded_to=7, status=0xFF00)
        cmd.remaining, cmd.completed, cmd.failed, cmd.warning = 2, 1, 0, 0
        events.message(None, "received", 1, cmd, 0)  # type: ignore[arg-type]
    finally:
        unsub()
    assert len(seen) == 1 and seen[0].data["remaining"] == 2 and seen[0].data["completed"] == 1


async def test_trace_logging(echo_server: aiodicom.Server, caplog: pytest.LogCaptureFixture) -> None:
    assert aiodicom.TRACE == 5 and logging.getLevelName(5) == "TRACE"
    caplog.set_level(aiodicom.TRACE, logger="aiodicom.trace")
    try:
        async with aiodicom.associate("127.0.0.1", echo_server.port) as assoc:
            await assoc.echo()
    finally:
        caplog.set_level(logging.WARNING, logger="aiodicom.trace")
    lines = [r.getMessage() for r in caplog.records if r.name == "aiodicom.trace"]
    assert any("C-ECHO-RQ" in line for line in lines)
    assert any("C-ECHO-RSP" in line and "status=0x0000" in line for line in lines)
    # the next association notices TRACE is off again
    async with aiodicom.associate("127.0.0.1", echo_server.port):
        pass
    assert events.enabled is False
