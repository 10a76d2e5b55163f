"""What every received DIMSE request shows its service handler.

:class:`RequestInfo` is mixed into the request objects of the C-STORE,
C-FIND, C-GET and C-MOVE services; the class using it provides ``assoc``
(the :class:`~aiodicom.aio.association.Association`) and ``message`` (the
received :class:`~aiodicom.dimse.fragments.Message`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..dimse.commands import PRIORITY_MEDIUM, Command

if TYPE_CHECKING:
    from ..aio.association import Association
    from ..dimse.fragments import Message

__all__ = ["RequestInfo"]


class RequestInfo:
    """Command fields and association facts of one received request."""

    __slots__ = ()

    if TYPE_CHECKING:
        assoc: Association
        message: Message

    @property
    def command(self) -> Command:
        """The request's command set."""
        return self.message.command

    @property
    def message_id(self) -> int:
        """The request's MessageID."""
        return self.message.command.message_id or 0

    @property
    def priority(self) -> int:
        """0 medium, 1 high, 2 low."""
        return self.message.command.priority or PRIORITY_MEDIUM

    @property
    def calling_ae(self) -> str:
        """The requestor's AE title (for C-MOVE, the move originator)."""
        return self.assoc.calling_ae.strip()

    @property
    def called_ae(self) -> str:
        """The AE title the requestor called."""
        return self.assoc.called_ae.strip()

    @property
    def peer_address(self) -> tuple[str, int] | None:
        """The peer's (host, port)."""
        return self.assoc.peer_address
