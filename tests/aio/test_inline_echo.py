"""The built-in C-ECHO SCP answers from the receive callback (Server.answer_inline).

Everything else, and a C-ECHO the user handles, still runs as a task
through Server.handle_request; these tests pin where that line is.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydicom.dataset import Dataset

import aiodicom
from aiodicom.aio.association import Association
from aiodicom.dimse.commands import C_ECHO_RQ, C_FIND_RQ
from aiodicom.dimse.fragments import Message
from aiodicom.security import NOT_AUTHORIZED
from aiodicom.uids import VERIFICATION_SOP_CLASS

FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Q/R Find


class Recording(aiodicom.Server):
    """Records the requests that reach handle_request (the task path)."""

    def __init__(self, *args: Any, inline: bool = True, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.inline = inline
        self.tasks: list[tuple[int, bool]] = []

    def answer_inline(self, assoc: Association, msg: Message) -> bool:
        return self.inline and super().answer_inline(assoc, msg)

    async def handle_request(self, assoc: Association, msg: Message) -> None:
        self.tasks.append((msg.command.command_field, asyncio.current_task() is not None))
        await super().handle_request(assoc, msg)


async def _echo_twice(server: aiodicom.Server, **kw: Any) -> list[int]:
    await server.start("127.0.0.1", 0)
    try:
        async with aiodicom.associate("127.0.0.1", server.port, called_ae="ECHOSCP", **kw) as assoc:
            return [await assoc.echo(), await assoc.echo()]
    finally:
        await server.close(timeout=1.0)


async def test_default_echo_is_answered_without_a_task() -> None:
    server = Recording("ECHOSCP", contexts={VERIFICATION_SOP_CLASS: ["1.2.840.10008.1.2"], FIND: ["1.2.840.10008.1.2"]})
    await server.start("127.0.0.1", 0)
    try:
        async with aiodicom.associate(
            "127.0.0.1", server.port, called_ae="ECHOSCP", contexts=[VERIFICATION_SOP_CLASS, FIND]
        ) as assoc:
            assert await assoc.echo() == 0
            assert server.tasks == []
            # a request without an inline answer still goes to handle_request, in a task
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            statuses = [s async for s, _ in assoc.find(query, model=FIND)]
            assert statuses == [0x0211]  # no C-FIND handler here: refused (PS3.7 C.4.2)
            assert server.tasks == [(C_FIND_RQ, True)]
    finally:
        await server.close(timeout=1.0)


async def test_echo_goes_to_handle_request_when_answer_inline_declines() -> None:
    server = Recording("ECHOSCP", inline=False)
    assert await _echo_twice(server) == [0, 0]
    assert server.tasks == [(C_ECHO_RQ, True), (C_ECHO_RQ, True)]


async def test_a_users_echo_handler_is_still_called() -> None:
    calls: list[int] = []

    async def busy(assoc: Association, msg: Message) -> None:
        calls.append(msg.command.message_id or 0)
        from aiodicom.dimse.commands import echo_rsp

        await assoc.send(msg.context_id, echo_rsp(msg.command.message_id or 0, 0x0110))  # processing failure

    server = Recording("ECHOSCP", handlers={C_ECHO_RQ: busy})
    assert await _echo_twice(server) == [0x0110, 0x0110]
    assert calls == [1, 2] and len(server.tasks) == 2


class _NoEcho:
    """An access policy (duck-typed) that refuses C-ECHO to everybody."""

    def allows_command(self, calling_ae: str, command_field: int) -> bool:
        return command_field != C_ECHO_RQ


async def test_echo_refused_by_the_access_policy_is_not_answered_inline() -> None:
    server = Recording("ECHOSCP", access_policy=_NoEcho())  # type: ignore[arg-type]
    assert await _echo_twice(server) == [NOT_AUTHORIZED, NOT_AUTHORIZED]
    assert [cf for cf, _ in server.tasks] == [C_ECHO_RQ, C_ECHO_RQ]
