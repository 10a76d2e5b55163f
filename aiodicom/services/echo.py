"""Verification service (PS3.4 Annex A): C-ECHO SCU and SCP."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..aio.errors import NoAcceptedContext
from ..dimse.commands import Command, echo_rq, echo_rsp
from ..dimse.fragments import Message
from ..uids import VERIFICATION_SOP_CLASS

if TYPE_CHECKING:
    from ..aio.association import Association

__all__ = ["echo", "echo_response", "handle_echo"]


async def echo(assoc: Association) -> int:
    """Send a C-ECHO-RQ and return the response status."""
    ctx = assoc.find_context(VERIFICATION_SOP_CLASS)
    if ctx is None:
        raise NoAcceptedContext("Verification SOP Class was not accepted")
    rsp = await assoc.send_request(ctx.context_id, echo_rq(assoc.next_message_id()))
    return rsp.command.status if rsp.command.status is not None else 0xFFFF


def echo_response(msg: Message, status: int = 0x0000) -> Command:
    """The C-ECHO-RSP to the C-ECHO-RQ ``msg``."""
    return echo_rsp(msg.command.message_id or 0, status, msg.command.affected_sop_class_uid)


async def handle_echo(assoc: Association, msg: Message, status: int = 0x0000) -> None:
    """Answer a C-ECHO-RQ with ``status`` (success by default)."""
    await assoc.send(msg.context_id, echo_response(msg, status))
