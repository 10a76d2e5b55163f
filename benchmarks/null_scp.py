"""The floor of the SCP cycle benchmark: ``null_scp.c``, built and fed here.

``null_scp`` answers the load generator's cycle with replies encoded once,
doing no DICOM work (see the C file's header).  Its cycles/s on a machine is
the ceiling for any server there, with the same generator: the ``ceiling``
row of the SCP table.  It needs a C compiler (``cc``, or ``$CC``); without
one the row is skipped, as the DCMTK rows are without DCMTK.

The same canned-reply server in Python on uvloop (:func:`serve_python`,
``--python``) is the ``ceiling-python`` row: what an asyncio server costs
per cycle before it does any DICOM work.

``python -m benchmarks.null_scp --port 11112 [--processes N] [--python]`` runs it by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile

from aiodicom.dimse.commands import echo_rq, encode_command, response_to
from aiodicom.ul import pdu as P
from aiodicom.ul.negotiation import negotiate

from .raw_client import encode_cycle

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "null_scp.c")


def canned_replies(called_ae: str = "ANY-SCP", calling_ae: str = "BENCH") -> tuple[bytes, bytes, bytes]:
    """The A-ASSOCIATE-AC, C-ECHO-RSP and A-RELEASE-RP for the generator's cycle.

    The AC is what aiodicom's acceptor negotiates for the generator's
    A-ASSOCIATE-RQ (Verification accepted on context 1); the C-ECHO-RSP
    answers message ID 1 with status 0x0000 in one PDV (PS3.8 E.2).
    """
    rq_pdu, _echo, _release = encode_cycle(called_ae, calling_ae)
    rq = P.AAssociateRQ.decode(memoryview(rq_pdu)[6:])
    from aiodicom import Server  # its acceptor policy, as `aiodicom serve` negotiates

    answer, contexts = negotiate(rq, Server(called_ae).policy)
    if not isinstance(answer, P.AAssociateAC) or 1 not in contexts:
        raise RuntimeError(f"the generator's request is not accepted: {answer!r}")
    rsp = P.PDataTF([(1, 0x03, memoryview(encode_command(response_to(echo_rq(1), 0))))]).encode()
    return answer.encode(), rsp, P.AReleaseRP().encode()


def compiler() -> str | None:
    """The C compiler to build with: ``$CC``, else ``cc`` or ``gcc`` on PATH."""
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    return shutil.which("cc") or shutil.which("gcc")


class BuildError(RuntimeError):
    """No C compiler, or the C instrument did not compile (the message is one line)."""


def build_c(source: str, directory: str, name: str) -> str:
    """Compile the C file ``source`` into ``directory/name`` (``cc -O2``); returns the binary's path.

    Raises :class:`BuildError` with a one-line reason: no compiler, or the
    compiler's first error line.
    """
    cc = compiler()
    if cc is None:
        raise BuildError(f"no C compiler (cc, gcc or $CC) to build {os.path.basename(source)}")
    out = os.path.join(directory, name)
    try:
        proc = subprocess.run(
            [cc, "-O2", "-o", out, source], check=False, capture_output=True, text=True, errors="replace"
        )
    except OSError as exc:
        raise BuildError(f"cannot run the C compiler {cc}: {exc}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        first = next((ln for ln in lines if "error" in ln), lines[0] if lines else "no message")
        raise BuildError(f"building {os.path.basename(source)} with {cc} failed (status {proc.returncode}): {first}")
    return out


def build(directory: str) -> str:
    """Compile ``null_scp.c`` into ``directory``; returns the binary's path."""
    return build_c(SOURCE, directory, "null_scp")


def write_pdus(directory: str, pdus: dict[str, bytes]) -> list[str]:
    """Write each PDU to ``directory/NAME.pdu`` (for the C instruments to read); the paths, in order."""
    paths = []
    for name, data in pdus.items():
        path = os.path.join(directory, f"{name}.pdu")
        with open(path, "wb") as fh:
            fh.write(data)
        paths.append(path)
    return paths


def prepare(directory: str, called_ae: str = "ANY-SCP", calling_ae: str = "BENCH") -> list[str]:
    """Build the binary and write the replies into ``directory``; returns argv less port and processes."""
    binary = build(directory)
    return [binary, *write_pdus(directory, dict(zip(("ac", "rsp", "rp"), canned_replies(called_ae, calling_ae))))]


def command(directory: str, port: int, processes: int = 1) -> list[str]:
    """The argv that runs ``null_scp`` on ``port`` (built into ``directory``)."""
    binary, ac, rsp, rp = prepare(directory)
    return [binary, str(port), ac, rsp, rp, str(processes)]


class _CannedProtocol(asyncio.Protocol):
    """Frames PDUs by their headers; answers each whole one with a canned reply (as null_scp.c)."""

    def __init__(self, replies: dict[int, bytes]) -> None:
        self.replies = replies
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        buf = self.buf + data if self.buf else data
        while len(buf) >= 6:
            end = 6 + int.from_bytes(buf[2:6], "big")
            if len(buf) < end:
                break
            reply = self.replies.get(buf[0])
            if reply is None:  # A-ABORT or anything unexpected
                self.transport.close()
                return
            self.transport.write(reply)
            buf = buf[end:]
        self.buf = buf


async def serve_python(port: int, host: str = "127.0.0.1", listening: asyncio.Future[int] | None = None) -> None:
    """Serve the canned replies with an asyncio Protocol until cancelled.

    ``port`` 0 picks a free port; ``listening`` gets the port once bound.
    """
    ac, rsp, rp = canned_replies()
    replies = {0x01: ac, 0x04: rsp, 0x05: rp}
    server = await asyncio.get_running_loop().create_server(
        lambda: _CannedProtocol(replies), host, port, backlog=4096, reuse_address=True
    )
    if listening is not None:
        listening.set_result(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--python", action="store_true", help="the Python (uvloop) canned-reply server instead")
    args = p.parse_args()
    if args.python:
        import uvloop

        uvloop.run(serve_python(args.port))
        return 0
    with tempfile.TemporaryDirectory(prefix="aiodicom-null-scp-") as tmp:
        argv = command(tmp, args.port, args.processes)
        return subprocess.call(argv)


if __name__ == "__main__":
    raise SystemExit(main())
