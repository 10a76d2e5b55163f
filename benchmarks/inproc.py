"""aiodicom's own cost per association cycle, without the kernel.

``python -m benchmarks.inproc [--cycles 3000] [--loop asyncio|uvloop] [--side both|scp] [--profile]``

Client and server run in this process, joined by in-memory transports:
``writelines`` hands the bytes to the peer's ``data_received`` with
``loop.call_soon`` and ``close`` delivers ``connection_lost`` to both ends.
The public API is used unchanged -- ``aiodicom.associate(...)`` with
``echo()`` and the release of ``async with``, served by
``aiodicom.Server`` -- only the event loop's ``create_connection`` is
replaced.  What is measured is therefore the Python work of *both* sides
(PDU coding, state machine, DIMSE, negotiation, futures, tasks, timers) per
cycle, with no socket calls and no cross-process scheduling, so it is
stable enough to compare commits and to profile (``--profile``).

``--side scp`` measures the server alone: each cycle feeds an
``aiodicom.Server`` association the bytes the SCP benchmark's load
generator sends (``benchmarks.raw_client.encode_cycle``: A-ASSOCIATE-RQ,
C-ECHO-RQ, A-RELEASE-RQ) through a transport that only records what the
server writes, checks that the replies are an A-ASSOCIATE-AC, a P-DATA-TF
and an A-RELEASE-RP, and closes.  That is the Python cost per cycle of the
side the SCP cycle targets are about, with less noise than the two-sided
figure.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Callable
from typing import Any


class MemoryTransport(asyncio.Transport):
    """One end of an in-memory stream; the other end is ``peer``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol, peername: tuple[str, int]):
        super().__init__()
        self._loop = loop
        self._protocol = protocol
        self._peername = peername
        self.peer: MemoryTransport | None = None
        self._closing = False
        self._lost = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peername
        return default

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writelines([data])

    def writelines(self, list_of_data: Any) -> None:
        if self._closing:
            return
        peer = self.peer
        if peer is not None and not peer._lost:
            self._loop.call_soon(peer._deliver, b"".join(list_of_data))

    def _deliver(self, data: bytes) -> None:
        if not self._lost:
            self._protocol.data_received(data)

    def _lose(self) -> None:
        if not self._lost:
            self._lost = True
            self._closing = True
            self._protocol.connection_lost(None)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.call_soon(self._lose)
        if self.peer is not None:
            self._loop.call_soon(self.peer._lose)

    def abort(self) -> None:
        self.close()

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:  # pragma: no cover - never needed here
        pass

    def resume_reading(self) -> None:  # pragma: no cover
        pass


def install(loop: asyncio.AbstractEventLoop, server: Any) -> None:
    """Make ``loop.create_connection`` connect to ``server`` in memory."""
    counter = [40000]

    async def create_connection(factory: Callable[[], asyncio.Protocol], host: Any = None, port: Any = None,
                                **kw: Any) -> tuple[asyncio.Transport, asyncio.Protocol]:  # fmt: skip
        counter[0] += 1
        client = factory()
        srv = server._make_protocol()
        tc = MemoryTransport(loop, client, ("127.0.0.1", 11112))
        ts = MemoryTransport(loop, srv, ("127.0.0.1", counter[0]))
        tc.peer, ts.peer = ts, tc
        srv.connection_made(ts)
        client.connection_made(tc)
        return tc, client

    loop.create_connection = create_connection  # type: ignore[method-assign, assignment]


async def cycles(n: int, clients: int = 1) -> dict[str, float]:
    """Run ``n`` cycles (``clients`` loops at once); returns timings."""
    import aiodicom

    loop = asyncio.get_running_loop()
    server = aiodicom.Server("AIODICOM")
    install(loop, server)
    done = 0
    errors = 0

    async def worker(k: int) -> None:
        nonlocal done, errors
        for _ in range(k):
            async with aiodicom.associate("127.0.0.1", 11112, called_ae="AIODICOM", calling_ae="BENCH") as assoc:
                if await assoc.echo() != 0:
                    errors += 1
            done += 1

    per = max(1, n // clients)
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(per) for _ in range(clients)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if server.associations:
        errors += len(server.associations)
    return {"cycles": done, "errors": errors, "wall_s": wall, "cpu_s": cpu}


class _SinkTransport(asyncio.Transport):
    """Records what the server writes; resolves ``replied`` at each P-DATA-TF it writes."""

    def __init__(self) -> None:
        super().__init__()
        self.types: list[int] = []
        self.closed = False
        self.replied: asyncio.Future[None] | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writelines([data])

    def writelines(self, list_of_data: Any) -> None:
        first = list_of_data[0]
        self.types.append(first[0])
        if first[0] == 0x04 and self.replied is not None and not self.replied.done():
            self.replied.set_result(None)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


def _feed(protocol: Any, data: bytes) -> None:
    view, off = memoryview(data), 0
    while off < len(view):
        buf = protocol.get_buffer(-1)
        n = min(len(buf), len(view) - off)
        buf[:n] = view[off : off + n]
        protocol.buffer_updated(n)
        off += n


async def server_cycles(n: int, server: Any = None) -> dict[str, float]:
    """Run ``n`` server-side cycles fed with the load generator's bytes; returns timings.

    A cycle whose replies are not A-ASSOCIATE-AC, P-DATA-TF, A-RELEASE-RP
    counts as an error.
    """
    import aiodicom

    from .raw_client import encode_cycle

    loop = asyncio.get_running_loop()
    if server is None:
        server = aiodicom.Server("ANY-SCP")
    rq, echo, release = encode_cycle("ANY-SCP", "BENCH")
    errors = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        assoc = server._make_protocol()
        transport = _SinkTransport()
        transport.replied = loop.create_future()
        assoc.connection_made(transport)
        _feed(assoc, rq)
        if transport.types == [0x02]:
            _feed(assoc, echo)
            try:
                await asyncio.wait_for(transport.replied, 10)  # the C-ECHO handler runs as a task
            except TimeoutError:
                pass
            else:
                _feed(assoc, release)
        assoc.connection_lost(None)  # the requestor closes after the RP
        if transport.types != [0x02, 0x04, 0x06]:
            errors += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    await asyncio.sleep(0)  # let connection_lost's callbacks run
    errors += len(server.associations)
    return {"cycles": n, "errors": errors, "wall_s": wall, "cpu_s": cpu}


def _run(coro: Any, loop_name: str) -> Any:
    if loop_name == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cycles", type=int, default=3000)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    p.add_argument("--side", choices=("both", "scp"), default="both",
                   help="both: client and server; scp: the server alone, fed the generator's bytes")
    p.add_argument("--profile", action="store_true", help="cProfile the measured cycles")
    p.add_argument("--sort", default="tottime")
    p.add_argument("--limit", type=int, default=35)
    args = p.parse_args()

    def job(k: int) -> Any:
        return server_cycles(k) if args.side == "scp" else cycles(k, args.clients)

    _run(job(max(50, args.cycles // 10)), args.loop)  # warm-up
    prof = cProfile.Profile() if args.profile else None
    if prof:
        prof.enable()
    res = _run(job(args.cycles), args.loop)
    if prof:
        prof.disable()
    n = max(1, res["cycles"])
    who = "server only, fed the load generator's bytes" if args.side == "scp" else "client + server"
    clients = "" if args.side == "scp" else f", {args.clients} client(s)"
    print(
        f"in-memory cycles on {args.loop}{clients}: {res['cycles']} cycles, "
        f"{res['errors']} errors, {res['wall_s'] / n * 1e6:.0f} us wall / {res['cpu_s'] / n * 1e6:.0f} us CPU "
        f"per cycle ({who}){' (profiled)' if prof else ''}"
    )
    if prof:
        s = io.StringIO()
        st = pstats.Stats(prof, stream=s)
        st.sort_stats(args.sort).print_stats(args.limit)
        print(s.getvalue())
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
