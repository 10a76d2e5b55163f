"""The acceptor's ARTIM timer (PS3.8 9.1.5), driven on a controlled clock.

The association arms its ARTIM timer lazily: a timer that is due no later
than the core's deadline is left armed when ARTIM stops or restarts, and an
early expiry is ignored by the core and followed by the real timer.  With a
real clock the steps of one association are too close together to tell
this apart, so here the loop's clock and timers are stand-ins and every
expiry is fired by hand.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from aiodicom import Server
from aiodicom.uids import VERIFICATION_SOP_CLASS
from aiodicom.ul import pdu as P
from benchmarks.inproc import _feed  # feeds bytes the way a buffered transport does

ARTIM = 30.0


class _Handle:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class _Clock:
    """The parts of an event loop the association uses, on a clock we move."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.now = 1000.0
        self.timers: list[_Handle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Handle:
        handle = _Handle(when, callback)
        self.timers.append(handle)
        return handle

    def live(self) -> list[_Handle]:
        return [t for t in self.timers if not t.cancelled]

    def __getattr__(self, name: str) -> Any:  # create_future, create_task, ...
        return getattr(self.loop, name)


class _Transport:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def writelines(self, bufs: list[Any]) -> None:
        self.out.extend(bytes(b) for b in bufs)

    def write(self, data: Any) -> None:
        self.out.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def _request() -> bytes:
    return P.AAssociateRQ(
        "ANY-SCP", "PEER",
        [P.PresentationContextRQ(1, VERIFICATION_SOP_CLASS, ["1.2.840.10008.1.2"])],
        P.UserInformation(max_length=16384, implementation_class_uid="1.2.3.4"),
    ).encode()  # fmt: skip


async def test_an_early_artim_expiry_is_ignored_and_the_real_one_closes() -> None:
    clock = _Clock(asyncio.get_running_loop())
    server = Server("ANY-SCP", artim_timeout=ARTIM)
    assoc = server._make_protocol()
    assoc._loop = clock  # type: ignore[assignment]
    transport = _Transport()

    assoc.connection_made(transport)  # Sta2: ARTIM runs until the request
    (first,) = clock.live()
    assert first.when == 1000.0 + ARTIM

    clock.now = 1001.0
    _feed(assoc, _request())
    assert transport.out[-1][0] == P.A_ASSOCIATE_AC
    assert clock.live() == [first]  # ARTIM stopped; the timer is left armed

    clock.now = 1010.0
    _feed(assoc, P.AReleaseRQ().encode())  # Sta13 after the RP: ARTIM restarts
    assert transport.out[-1][0] == P.A_RELEASE_RP
    assert clock.live() == [first]  # due earlier than the new deadline: kept

    clock.now = first.when
    first.callback()  # the early expiry: the core's deadline is 1040
    assert not transport.closed
    (second,) = [t for t in clock.live() if t is not first]
    assert second.when == 1010.0 + ARTIM

    clock.now = second.when
    second.callback()
    assert transport.closed  # the requestor never closed: ARTIM did
    assoc.connection_lost(None)
    assert not server.associations


async def test_a_later_timer_is_replaced_by_an_earlier_deadline() -> None:
    # A deadline earlier than the armed timer (here: the artim timeout made
    # shorter between two associations' worth of state) re-arms at once.
    clock = _Clock(asyncio.get_running_loop())
    server = Server("ANY-SCP", artim_timeout=ARTIM)
    assoc = server._make_protocol()
    assoc._loop = clock  # type: ignore[assignment]
    assoc.connection_made(_Transport())
    (first,) = clock.live()
    assoc.conn.artim_timeout = 1.0
    clock.now = 1001.0
    _feed(assoc, _request())
    _feed(assoc, P.AReleaseRQ().encode())
    live = clock.live()
    assert first.cancelled and len(live) == 1 and live[0].when == 1002.0
    assoc.connection_lost(None)
    assert not clock.live()
