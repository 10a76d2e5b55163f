"""Both ends of an association run with TCP_NODELAY (no Nagle delay on small PDUs).

aiodicom does not set the option itself: asyncio's and uvloop's TCP
transports set it on every socket they connect or accept.  This checks that
the loops keep doing so, on the server's accepted socket and the SCU's.
"""

from __future__ import annotations

import socket

import aiodicom


def _nodelay(assoc: aiodicom.Association) -> int:
    assert assoc.transport is not None
    sock = assoc.transport.get_extra_info("socket")
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


async def test_both_sides_have_tcp_nodelay() -> None:
    server = aiodicom.Server("ANY-SCP")
    await server.start("127.0.0.1", 0)
    try:
        async with aiodicom.associate("127.0.0.1", server.port) as assoc:
            assert await assoc.echo() == 0
            assert _nodelay(assoc) == 1
            (accepted,) = list(server.associations)
            assert _nodelay(accepted) == 1
    finally:
        await server.close()
