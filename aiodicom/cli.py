"""The ``aiodicom`` command line.

Every subcommand exits 0 on success and prints a one-line error (no
traceback) with a non-zero exit status otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any, Callable, Coroutine, Sequence

from .aio.errors import AssociationAborted, AssociationRejectedError, DICOMError

__all__ = ["main", "build_parser", "run_loop"]

log = logging.getLogger("aiodicom.cli")


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} out of range 0-65535")
    return value


def _ae(text: str) -> str:
    from .ul.pdu import encode_ae_title

    try:
        encode_ae_title(text)
    except (ValueError, UnicodeEncodeError):
        raise argparse.ArgumentTypeError(f"invalid AE title {text!r} (1-16 ASCII characters)") from None
    return text.strip()


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def _add_scu_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("host", help="peer host name or address")
    p.add_argument("port", type=_port, help="peer TCP port")
    p.add_argument("--aet", type=_ae, default="AIODICOM", help="our (calling) AE title [AIODICOM]")
    p.add_argument("--aec", type=_ae, default="ANY-SCP", help="peer (called) AE title [ANY-SCP]")
    p.add_argument("--timeout", type=_positive, default=30.0, help="connect/ACSE/DIMSE timeout in seconds [30]")
    p.add_argument("-v", "--verbose", action="store_true", help="log the protocol exchange")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``aiodicom`` command."""
    parser = argparse.ArgumentParser(prog="aiodicom", description="Pure-asyncio DICOM networking tools.")
    parser.add_argument("--version", action="version", version="aiodicom 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("echo", help="verify a peer with C-ECHO", description="Send a C-ECHO to HOST PORT.")
    _add_scu_args(p)
    p.add_argument("--repeat", type=int, default=1, help="number of C-ECHO requests on the association [1]")
    p.set_defaults(func=_cmd_echo)

    p = sub.add_parser(
        "serve",
        help="run the DICOM server",
        description="Run an aiodicom server. It answers C-ECHO and stores received instances under --storage.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    p.add_argument("--port", type=_port, default=11112, help="TCP port to listen on [11112]")
    p.add_argument("--aet", type=_ae, default="AIODICOM", help="our AE title [AIODICOM]")
    p.add_argument("--storage", default="./aiodicom-data", help="where received instances go [./aiodicom-data]")
    p.add_argument(
        "--strict-aet", action="store_true", help="reject associations that call an AE title other than --aet"
    )
    p.add_argument(
        "--allow-calling",
        action="append",
        type=_ae,
        metavar="AET",
        help="accept only these calling AE titles (repeatable)",
    )
    p.add_argument("--max-associations", type=int, default=10000, help="open associations at most [10000]")
    p.add_argument("--max-pdu", type=int, default=262144, help="maximum PDU length we receive [262144]")
    p.add_argument("--artim-timeout", type=_positive, default=30.0, help="ARTIM timeout in seconds [30]")
    p.add_argument("--dimse-timeout", type=_positive, default=60.0, help="DIMSE timeout in seconds [60]")
    p.add_argument("--idle-timeout", type=_positive, default=None, help="abort associations idle this long")
    p.add_argument("--no-uvloop", action="store_true", help="use the default asyncio event loop")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=_cmd_serve)
    return parser


def run_loop(coro: Coroutine[Any, Any, int], use_uvloop: bool = True) -> int:
    """Run ``coro`` on uvloop when installed (and wanted), else asyncio."""
    if use_uvloop:
        try:
            import uvloop

            return uvloop.run(coro)
        except ImportError:
            pass
    return asyncio.run(coro)


# ---------------------------------------------------------------- commands


async def _echo(args: argparse.Namespace) -> int:
    from .aio.client import associate

    async with associate(
        args.host,
        args.port,
        called_ae=args.aec,
        calling_ae=args.aet,
        acse_timeout=args.timeout,
        dimse_timeout=args.timeout,
        connect_timeout=args.timeout,
    ) as assoc:
        for _ in range(max(1, args.repeat)):
            status = await assoc.echo()
            if status != 0:
                raise CLIError(f"C-ECHO failed with status 0x{status:04X}")
    print(f"C-ECHO to {args.aec}@{args.host}:{args.port}: success")
    return 0


def _cmd_echo(args: argparse.Namespace) -> int:
    return run_loop(_echo(args))


async def _serve(args: argparse.Namespace) -> int:
    from .aio.server import Server

    os.makedirs(args.storage, exist_ok=True)
    server = Server(
        args.aet,
        strict_called_ae=args.strict_aet,
        allowed_calling_aes=args.allow_calling,
        max_associations=args.max_associations,
        max_pdu_length=args.max_pdu,
        artim_timeout=args.artim_timeout,
        dimse_timeout=args.dimse_timeout,
        network_timeout=args.idle_timeout,
    )
    try:
        await server.start(args.host, args.port)
    except OSError as exc:
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    print(
        f"aiodicom serving {args.aet} on {args.host}:{server.port} (storage {os.path.abspath(args.storage)})",
        flush=True,
    )
    await stop.wait()
    print("shutting down", flush=True)
    await server.close(timeout=10.0)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    return run_loop(_serve(args), use_uvloop=not args.no_uvloop)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aiodicom`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CLIError as exc:
        print(f"aiodicom {args.command}: {exc}", file=sys.stderr)
        return 1
    except AssociationRejectedError as exc:
        print(f"aiodicom {args.command}: {exc}", file=sys.stderr)
        return 2
    except AssociationAborted as exc:
        print(f"aiodicom {args.command}: association aborted: {exc}", file=sys.stderr)
        return 3
    except (TimeoutError, asyncio.TimeoutError) as exc:
        print(f"aiodicom {args.command}: timed out{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 4
    except ConnectionRefusedError:
        print(f"aiodicom {args.command}: connection refused by {args.host}:{args.port}", file=sys.stderr)
        return 5
    except OSError as exc:
        print(f"aiodicom {args.command}: {exc.strerror or exc}", file=sys.stderr)
        return 5
    except DICOMError as exc:
        print(f"aiodicom {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
