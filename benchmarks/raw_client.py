"""A lean association-cycle load generator: pre-encoded PDUs, checked replies.

``python -m benchmarks.raw_client --port 11112 --clients 1,64``

The fixed load generator of the SCP-side cycle benchmark.  It plays the SCU
of exactly the cycle that ``benchmarks.aio_client`` plays, on the wire byte
for byte (the same A-ASSOCIATE-RQ, encoded once by aiodicom's encoder at
start-up; a C-ECHO-RQ; an A-RELEASE-RQ), but without a general association
machine behind it, so that it costs the shared CPU as little as a Python
client can (``wrk`` / ``h2load`` play this part for HTTP servers).  What
the server sends is still framed by PDU length and checked in full:

* the reply to the A-ASSOCIATE-RQ must be an A-ASSOCIATE-AC whose
  presentation context 1 (Verification) is accepted (PS3.8 9.3.3.2);
* the P-DATA-TF PDU(s) that follow must carry one complete command set
  (PDV message control header bit 0 set, the last fragment with bit 1 set,
  PS3.8 E.2) that is a C-ECHO-RSP (0000,0100) = 0x8030 answering message
  ID 1 (0000,0120) with Status (0000,0900) = 0x0000 (PS3.7 9.3.5.2);
* the reply to the A-RELEASE-RQ must be an A-RELEASE-RP, after which the
  generator closes the connection (PS3.8 7.2, the requestor closes).

Anything else (an A-ASSOCIATE-RJ, an A-ABORT, a wrong PDU, a failure
status, a close before the A-RELEASE-RP) is a failed cycle and counted as an
error with its reason.  A cycle's latency runs from just before the connect
to the transport's close, as in the other generators.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import time

from aiodicom.aio.client import build_contexts
from aiodicom.dimse.commands import echo_rq, encode_command
from aiodicom.uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    VERIFICATION_SOP_CLASS,
)
from aiodicom.ul import pdu as P
from aiodicom.ul.negotiation import DEFAULT_MAX_PDU

from .common import Window, loadgen_parser, run_cells, run_on

__all__ = ["CycleError", "EchoCycle", "cycle", "encode_cycle", "main"]

_HDR = struct.Struct(">BBL")
_PDV = struct.Struct(">LBB")
_ELEM = struct.Struct("<HHL")
_U16 = struct.Struct("<H")

_STATUS = 0x0900
_COMMAND_FIELD = 0x0100
_RESPONDED_TO = 0x0120
_C_ECHO_RSP = 0x8030


class CycleError(Exception):
    """The server's reply broke the cycle (the message says how)."""


def encode_cycle(called_ae: str, calling_ae: str, max_pdu: int = DEFAULT_MAX_PDU) -> tuple[bytes, bytes, bytes]:
    """The three PDUs an echo cycle sends: A-ASSOCIATE-RQ, C-ECHO-RQ, A-RELEASE-RQ.

    The request is the one ``aiodicom.associate()`` sends for a plain echo
    (Verification with aiodicom's default transfer syntaxes and user
    information), so both generators put the same bytes on the wire.
    """
    ui = P.UserInformation(
        max_length=max_pdu,
        implementation_class_uid=IMPLEMENTATION_CLASS_UID,
        implementation_version_name=IMPLEMENTATION_VERSION_NAME,
    )
    rq = P.AAssociateRQ(called_ae, calling_ae, build_contexts([VERIFICATION_SOP_CLASS]), ui)
    ctx_id = rq.presentation_contexts[0].context_id
    assert ctx_id == 1, "EchoCycle expects Verification on presentation context 1"
    # one PDV: the whole command set, message control header 0x03
    # (command, last fragment; PS3.8 E.2)
    echo = P.PDataTF([(ctx_id, 0x03, memoryview(encode_command(echo_rq(1))))]).encode()
    return rq.encode(), echo, P.AReleaseRQ().encode()


def _accepted_context(body: bytes, ctx_id: int) -> int:
    """The result/reason of presentation context ``ctx_id`` in an A-ASSOCIATE-AC body."""
    off = 68  # version, reserved, 2 x AE, 32 reserved (PS3.8 Table 9-17)
    end = len(body)
    while off + 4 <= end:
        itype = body[off]
        ilen = (body[off + 2] << 8) | body[off + 3]
        if itype == 0x21 and ilen >= 4 and body[off + 4] == ctx_id:
            return body[off + 6]
        off += 4 + ilen
    raise CycleError(f"A-ASSOCIATE-AC without presentation context {ctx_id}")


def _check_echo_rsp(command: bytes) -> None:
    """Check a complete command set (Implicit VR Little Endian) is a successful C-ECHO-RSP to ID 1."""
    values: dict[int, int] = {}
    off = 0
    end = len(command)
    while off + 8 <= end:
        group, elem, length = _ELEM.unpack_from(command, off)
        off += 8
        if off + length > end:
            raise CycleError("truncated command set")
        if group != 0:
            raise CycleError(f"command set element ({group:04X},{elem:04X})")
        if elem in (_STATUS, _COMMAND_FIELD, _RESPONDED_TO) and length == 2:
            values[elem] = _U16.unpack_from(command, off)[0]
        off += length
    if off != end:
        raise CycleError("truncated command set")
    if values.get(_COMMAND_FIELD) != _C_ECHO_RSP:
        raise CycleError(f"expected C-ECHO-RSP, got command field {values.get(_COMMAND_FIELD)!r}")
    if values.get(_RESPONDED_TO) != 1:
        raise CycleError(f"C-ECHO-RSP answers message ID {values.get(_RESPONDED_TO)!r}, not 1")
    status = values.get(_STATUS)
    if status != 0:
        raise CycleError(f"C-ECHO status {status!r}")


class EchoCycle(asyncio.Protocol):
    """One association cycle on one connection; ``done`` resolves when it is over."""

    __slots__ = ("_buf", "_cmd", "_ctx", "_state", "_t", "done", "echo", "release", "rq")

    def __init__(self, done: asyncio.Future[None], rq: bytes, echo: bytes, release: bytes, ctx_id: int = 1) -> None:
        self.done = done
        self.rq, self.echo, self.release = rq, echo, release
        self._ctx = ctx_id
        self._buf = bytearray()
        self._cmd = bytearray()
        self._state = 0  # 0 await AC, 1 await RSP, 2 await RP, 3 released
        self._t: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._t = transport  # type: ignore[assignment]
        transport.write(self.rq)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= 6:
            ptype, _r, length = _HDR.unpack_from(buf, 0)
            if len(buf) < 6 + length:
                return
            body = bytes(buf[6 : 6 + length])
            del buf[: 6 + length]
            try:
                self._pdu(ptype, body)
            except (CycleError, struct.error) as exc:
                self._fail(exc if isinstance(exc, CycleError) else CycleError(f"malformed PDU: {exc}"))
                return

    def _pdu(self, ptype: int, body: bytes) -> None:
        t = self._t
        assert t is not None
        state = self._state
        if ptype == 0x07:
            raise CycleError(f"A-ABORT source {body[2]} reason {body[3]}" if len(body) >= 4 else "A-ABORT")
        if state == 0:
            if ptype == 0x03:
                raise CycleError(f"A-ASSOCIATE-RJ {tuple(body[1:4])}")
            if ptype != 0x02:
                raise CycleError(f"PDU type {ptype} instead of A-ASSOCIATE-AC")
            result = _accepted_context(body, self._ctx)
            if result != 0:
                raise CycleError(f"Verification context not accepted (result {result})")
            self._state = 1
            t.write(self.echo)
        elif state == 1:
            if ptype != 0x04:
                raise CycleError(f"PDU type {ptype} instead of P-DATA-TF")
            off = 0
            while off < len(body):
                length, ctx, ctrl = _PDV.unpack_from(body, off)
                if length < 2 or off + 4 + length > len(body):
                    raise CycleError(f"PDV length {length} does not fit its PDU")
                if ctx != self._ctx or not ctrl & 1:
                    raise CycleError(f"unexpected PDV (context {ctx}, control 0x{ctrl:02X})")
                self._cmd += body[off + 6 : off + 4 + length]
                off += 4 + length
                if ctrl & 2:
                    _check_echo_rsp(bytes(self._cmd))
                    self._state = 2
                    t.write(self.release)
        elif state == 2:
            if ptype != 0x06:
                raise CycleError(f"PDU type {ptype} instead of A-RELEASE-RP")
            self._state = 3
            t.close()
        else:
            raise CycleError(f"PDU type {ptype} after A-RELEASE-RP")

    def _fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)
        if self._t is not None:
            self._t.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if self._state == 3:
            self.done.set_result(None)
        else:
            self.done.set_exception(CycleError(f"connection closed in state {self._state}: {exc or 'EOF'}"))


async def _connect(loop: asyncio.AbstractEventLoop, addr: tuple[str, int]) -> socket.socket:
    """A connected non-blocking TCP socket to the numeric IPv4 or IPv6 ``addr``.

    ``loop.sock_connect`` / ``create_connection(host, port)`` resolve the
    address through getaddrinfo in a worker thread on every call (uvloop);
    the address here is numeric, so the connect is done directly.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(addr)
        if err == errno.EINPROGRESS:
            ready: asyncio.Future[None] = loop.create_future()
            fd = sock.fileno()
            loop.add_writer(fd, ready.set_result, None)
            try:
                await ready
            finally:
                loop.remove_writer(fd)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, f"connect to {addr[0]}:{addr[1]}: {os.strerror(err)}")
    except BaseException:
        sock.close()
        raise
    return sock


async def cycle(addr: tuple[str, int], pdus: tuple[bytes, bytes, bytes]) -> None:
    """One association cycle against ``addr``; raises :class:`CycleError` (or OSError) on failure."""
    loop = asyncio.get_running_loop()
    rq, echo, release = pdus
    done: asyncio.Future[None] = loop.create_future()
    sock = await _connect(loop, addr)
    transport, _ = await loop.create_connection(lambda: EchoCycle(done, rq, echo, release), sock=sock)
    try:
        await done
    finally:
        transport.abort()  # no-op once closed; a failed or cancelled cycle leaves nothing open


async def _worker(w: Window, host: str, port: int, pdus: tuple[bytes, bytes, bytes], timeout: float) -> None:
    perf = time.perf_counter
    first = True
    addr = (host, port)
    while w.running():
        t0 = perf()
        try:
            async with asyncio.timeout(timeout):
                await cycle(addr, pdus)
        except Exception as exc:  # noqa: BLE001 - every failure is an error
            w.error(perf(), f"{type(exc).__name__}: {exc}"[:200])
            await asyncio.sleep(0.01)  # no hot loop against a dead peer
        else:
            w.ok(t0, perf())
        if first:
            first = False
            w.first_cycle_done()


def main() -> int:
    p = loadgen_parser(__doc__ or "")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    args = p.parse_args()
    pdus = encode_cycle(args.called_ae, args.calling_ae)

    async def worker(w: Window) -> None:
        await _worker(w, args.host, args.port, pdus, args.timeout)

    return run_on(args.loop, run_cells(args, worker, loadgen="raw"))


if __name__ == "__main__":
    raise SystemExit(main())
