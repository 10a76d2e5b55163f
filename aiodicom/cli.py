"""The ``aiodicom`` command line.

Every subcommand exits 0 on success and prints a one-line error (no
traceback) with a non-zero exit status otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from .aio.errors import AssociationAborted, AssociationRejectedError, DICOMError

__all__ = ["build_parser", "main", "run_loop"]

log = logging.getLogger("aiodicom.cli")

_T = TypeVar("_T")


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
    _add_scu_security_args(p)


def _add_scu_security_args(p: argparse.ArgumentParser) -> None:
    """TLS and user identity options shared by the SCU commands (see docs/security.md)."""
    g = p.add_argument_group("security")
    g.add_argument("--tls", action="store_true", help="connect over TLS (1.2 or newer)")
    g.add_argument("--tls-ca", metavar="PEM", help="CA certificate(s) to verify the peer with [system store]")
    g.add_argument("--tls-cert", metavar="PEM", help="our certificate, for mutual TLS")
    g.add_argument("--tls-key", metavar="PEM", help="our private key, for mutual TLS")
    g.add_argument("--tls-hostname", metavar="NAME", help="check the peer certificate against NAME [no check with --tls-ca]")
    g.add_argument("--tls-no-verify", action="store_true", help="do not verify the peer certificate (testing only)")
    g.add_argument("--username", help="send a User Identity (username, or username+passcode with --password)")
    g.add_argument("--password", help="passcode for --username (or env AIODICOM_PASSWORD)")


def _scu_security(args: argparse.Namespace) -> dict[str, Any]:
    """``associate()`` keyword arguments for the security options."""
    from .ul import pdu as P

    out: dict[str, Any] = {}
    if getattr(args, "tls", False) or getattr(args, "tls_ca", None) or getattr(args, "tls_cert", None):
        from .security import client_ssl_context

        if bool(args.tls_cert) != bool(args.tls_key):
            raise CLIError("--tls-cert and --tls-key go together")
        try:
            out["ssl"] = client_ssl_context(
                args.tls_ca, args.tls_cert, args.tls_key,
                check_hostname=True if args.tls_hostname else None,
                verify=not args.tls_no_verify,
            )
        except (OSError, ValueError) as exc:
            raise CLIError(f"cannot set up TLS: {exc}") from None
        if args.tls_hostname:
            out["server_hostname"] = args.tls_hostname
    username = getattr(args, "username", None)
    if username:
        password = args.password if args.password is not None else os.environ.get("AIODICOM_PASSWORD")
        if password is None:
            out["user_identity"] = P.UserIdentityRQ(1, username.encode("utf-8"), b"", True)
        else:
            out["user_identity"] = P.UserIdentityRQ(2, username.encode("utf-8"), password.encode("utf-8"), True)
    return out


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

    _add_serve_parser(sub)

    p = sub.add_parser(
        "store",
        help="send DICOM files with C-STORE",
        description="Send Part 10 files to HOST PORT with C-STORE; folders are searched recursively.",
    )
    _add_scu_args(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files or folders")
    p.set_defaults(func=_cmd_store)

    p = sub.add_parser(
        "find",
        help="query a peer with C-FIND",
        description=(
            "Send a C-FIND to HOST PORT. Keys as in DCMTK: -k PatientID=123, -k \"(0010,0020)=123\", "
            "-k PatientName (empty: return key)."
        ),
    )
    _add_scu_args(p)
    p.add_argument("--model", choices=["patient", "study"], default="patient", help="query model [patient]")
    p.add_argument(
        "--level",
        type=str.upper,
        choices=["PATIENT", "STUDY", "SERIES", "IMAGE"],
        help="query level [PATIENT for --model patient, STUDY for --model study]",
    )
    p.add_argument(
        "-k", "--key", action="append", default=[], metavar="KEY[=VALUE]", help="matching or return key (repeatable)"
    )
    p.add_argument("--json", action="store_true", help="print the matches as a DICOM JSON array")
    p.set_defaults(func=_cmd_find)
    _add_get_parser(sub)
    _add_move_parser(sub)
    _add_rpq_parser(sub)
    _add_bench_parser(sub)
    return parser


def run_loop(coro: Coroutine[Any, Any, _T], use_uvloop: bool = True) -> _T:
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
        **_scu_security(args),
    ) as assoc:
        for _ in range(max(1, args.repeat)):
            status = await assoc.echo()
            if status != 0:
                raise CLIError(f"C-ECHO failed with status 0x{status:04X}")
    print(f"C-ECHO to {args.aec}@{args.host}:{args.port}: success")
    return 0


def _cmd_echo(args: argparse.Namespace) -> int:
    return run_loop(_echo(args))


# ----------------------------------------------------------------- serve

_SERVE_DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 11112,
    "aet": "AIODICOM",
    "storage": "./aiodicom-data",
    "max_associations": 10000,
    "max_pdu": 262144,
    "artim_timeout": 30.0,
    "dimse_timeout": 60.0,
    "idle_timeout": None,
    "strict_aet": False,
    "allow_calling": None,
}


def _add_serve_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the DICOM archive server",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run the aiodicom archive: Verification, Storage (every standard storage SOP class, native and "
            "compressed transfer syntaxes, stored as received), Patient/Study Root C-FIND, C-GET and C-MOVE, "
            "and the Relevant Patient Information Query, all answered from --storage (Part 10 files plus a "
            "SQLite index). One INFO line is logged per association when it closes (calling AE, peer, "
            "operation counts, bytes in/out, duration; no patient data)."
        ),
        epilog=(
            "Settings come from, in order of precedence: flags, --config FILE.toml, defaults.\n"
            "Config file keys (all optional):\n"
            '  host = "0.0.0.0"            port = 11112          aet = "ARCHIVE"\n'
            '  storage = "/var/lib/dicom"  max_associations = 500  max_pdu = 262144\n'
            "  strict_aet = true           allow_calling = [\"MODALITY1\", \"WS2\"]\n"
            "  artim_timeout = 30          dimse_timeout = 60    idle_timeout = 300\n"
            "  [timeouts]                  # alternative spelling: artim, dimse, idle\n"
            "  [peers]                     # C-MOVE destinations\n"
            '  WORKSTATION = "10.0.0.5:104"\n'
            '  VIEWER = { host = "viewer.local", port = 11112 }'
        ),
    )
    p.add_argument("--host", help="address to listen on [127.0.0.1]")
    p.add_argument("--port", type=_port, help="TCP port to listen on; 0 picks a free one [11112]")
    p.add_argument("--aet", type=_ae, help="our AE title [AIODICOM]")
    p.add_argument("--storage", help="archive directory (created if missing) [./aiodicom-data]")
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="AET=HOST:PORT",
        help="a C-MOVE destination (repeatable; adds to the config file's [peers])",
    )
    p.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file (see below)")
    p.add_argument(
        "--strict-aet", action="store_true", default=None,
        help="reject associations that call an AE title other than --aet",
    )
    p.add_argument(
        "--allow-calling",
        action="append",
        type=_ae,
        metavar="AET",
        help="accept only these calling AE titles (repeatable)",
    )
    p.add_argument("--max-associations", type=int, help="open associations at most [10000]")
    p.add_argument("--max-pdu", type=int, help="maximum PDU length we receive, 0 = unlimited [262144]")
    p.add_argument("--artim-timeout", type=_positive, help="ARTIM timeout in seconds [30]")
    p.add_argument("--dimse-timeout", type=_positive, help="DIMSE timeout in seconds [60]")
    p.add_argument("--idle-timeout", type=_positive, help="abort associations idle this many seconds [never]")
    p.add_argument("--no-uvloop", action="store_true", help="use the default asyncio event loop")
    p.add_argument(
        "--workers", type=_workers_count, default=1, metavar="N",
        help="serve from N processes sharing the port (SO_REUSEPORT) and the archive; "
        "--max-associations applies to each [1]",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (default: INFO)")
    p.add_argument(
        "-q", "--quiet", action="store_true",
        help="log warnings and errors only (no INFO line per association)",
    )
    _add_serve_security_args(p)
    p.set_defaults(func=_cmd_serve)


def _workers_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes, got {text!r}") from None
    if not 1 <= n <= 256:
        raise argparse.ArgumentTypeError(f"must be 1..256, not {n}")
    return n


def _add_serve_security_args(p: argparse.ArgumentParser) -> None:
    """TLS, permissions and user identity options of ``serve`` (see docs/security.md)."""
    g = p.add_argument_group("security")
    g.add_argument("--tls-cert", metavar="PEM", help="serve over TLS with this certificate (needs --tls-key)")
    g.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    g.add_argument("--tls-ca", metavar="PEM", help="mutual TLS: require client certificates signed by this CA")
    g.add_argument("--permissions", metavar="FILE.toml", help="per calling AE operations ([permissions] table)")
    g.add_argument(
        "--permit", action="append", default=[], metavar="AET=OPS",
        help="allow AET only OPS (comma list of store,find,get,move,other,all,none; '*' = everybody else); "
        "repeatable, applied after --permissions",
    )
    g.add_argument(
        "--users", metavar="FILE.toml",
        help="require a User Identity: username+passcode pairs from the file's [users] table",
    )


def _serve_security(args: argparse.Namespace) -> dict[str, Any]:
    """``Server`` keyword arguments for the security options."""
    from . import security

    out: dict[str, Any] = {}
    cert, key, ca = getattr(args, "tls_cert", None), getattr(args, "tls_key", None), getattr(args, "tls_ca", None)
    if cert or key or ca:
        if not (cert and key):
            raise CLIError("--tls-cert and --tls-key are both required for TLS")
        try:
            out["ssl"] = security.server_ssl_context(cert, key, ca, require_client_cert=ca is not None)
        except (OSError, ValueError) as exc:
            raise CLIError(f"cannot set up TLS: {exc}") from None
    permissions, permits = getattr(args, "permissions", None), getattr(args, "permit", None) or []
    if permissions or permits:
        try:
            policy = security.AccessPolicy.from_toml(permissions) if permissions else security.AccessPolicy()
            out["access_policy"] = security.AccessPolicy.parse(permits, policy)
        except OSError as exc:
            raise CLIError(f"cannot read {permissions}: {exc.strerror or exc}") from None
        except Exception as exc:  # TOML or value errors
            raise CLIError(f"invalid permissions: {exc}") from None
    users = getattr(args, "users", None)
    if users:
        try:
            out["identity_check"] = security.password_identity(security.load_users(users))
        except OSError as exc:
            raise CLIError(f"cannot read {users}: {exc.strerror or exc}") from None
        except Exception as exc:
            raise CLIError(f"invalid users file: {exc}") from None
        out["require_user_identity"] = True
    return out


def _parse_peer(text: str, where: str) -> tuple[str, tuple[str, int]]:
    aet, sep, address = text.partition("=")
    host, sep2, port_text = address.rpartition(":")
    if not sep or not sep2 or not host.strip():
        raise CLIError(f"invalid peer {text!r} in {where}: use AET=HOST:PORT")
    return _peer_entry(aet, host, port_text, where)


def _peer_entry(aet: Any, host: Any, port: Any, where: str) -> tuple[str, tuple[str, int]]:
    try:
        aet = _ae(str(aet))
        value = int(port)
        if not 1 <= value <= 65535:
            raise ValueError
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        raise CLIError(f"invalid peer {aet}={host}:{port} in {where}") from None
    return aet, (str(host).strip(), value)


def _load_config(path: str) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as fp:
            raw = tomllib.load(fp)
    except OSError as exc:
        raise CLIError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CLIError(f"invalid TOML in {path}: {exc}") from None
    where = f"config {path}"
    out: dict[str, Any] = {}
    timeouts = raw.pop("timeouts", {})
    if not isinstance(timeouts, dict):
        raise CLIError(f"{where}: [timeouts] must be a table")
    for short, value in timeouts.items():
        key = f"{short}_timeout" if not short.endswith("_timeout") else short
        if key not in ("artim_timeout", "dimse_timeout", "idle_timeout"):
            raise CLIError(f"{where}: unknown timeout {short!r}")
        raw[key] = value
    peers = raw.pop("peers", {})
    if not isinstance(peers, dict):
        raise CLIError(f"{where}: [peers] must be a table of AET = \"host:port\"")
    out["peers"] = {}
    for aet, value in peers.items():
        if isinstance(value, str):
            name, addr = _parse_peer(f"{aet}={value}", where)
        elif isinstance(value, dict):
            name, addr = _peer_entry(aet, value.get("host"), value.get("port"), where)
        elif isinstance(value, list) and len(value) == 2:
            name, addr = _peer_entry(aet, value[0], value[1], where)
        else:
            raise CLIError(f"{where}: invalid peer {aet!r}")
        out["peers"][name] = addr
    for key, value in raw.items():
        if key not in _SERVE_DEFAULTS:
            raise CLIError(f"{where}: unknown key {key!r}")
        try:
            if key == "port":
                value = _port(str(value)) if isinstance(value, int) and not isinstance(value, bool) else None
            elif key == "aet":
                value = _ae(value) if isinstance(value, str) else None
            elif key in ("host", "storage"):
                value = value if isinstance(value, str) and value.strip() else None
            elif key in ("max_associations", "max_pdu"):
                value = value if isinstance(value, int) and not isinstance(value, bool) else None
            elif key.endswith("_timeout"):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
                value = float(value) if ok else None
            elif key == "strict_aet":
                value = value if isinstance(value, bool) else None
            elif key == "allow_calling":
                value = [_ae(v) for v in value] if isinstance(value, list) else None
        except (argparse.ArgumentTypeError, TypeError):
            value = None
        if value is None:
            raise CLIError(f"{where}: invalid value for {key!r}: {raw[key]!r}")
        out[key] = value
    return out


def _serve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Flags over config file over defaults; raises CLIError for bad values."""
    settings = dict(_SERVE_DEFAULTS)
    peers: dict[str, tuple[str, int]] = {}
    if args.config:
        config = _load_config(args.config)
        peers.update(config.pop("peers", {}))
        settings.update(config)
    for key in _SERVE_DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    for text in args.peer:
        name, addr = _parse_peer(text, "--peer")
        peers[name] = addr
    settings["peers"] = peers
    if settings["max_associations"] < 1:
        raise CLIError(f"--max-associations must be at least 1, not {settings['max_associations']}")
    if settings["max_pdu"] != 0 and not 4096 <= settings["max_pdu"] <= 0xFFFFFFFF:
        raise CLIError(f"--max-pdu must be 0 (unlimited) or 4096..4294967295, not {settings['max_pdu']}")
    return settings


async def _serve(
    args: argparse.Namespace, settings: dict[str, Any], worker: int | None = None, ready_fd: int | None = None
) -> int:
    """Run the archive until SIGINT/SIGTERM.

    As worker *worker* of ``--workers N`` it listens with SO_REUSEPORT, skips
    the start-up recovery (the supervisor ran it), locks same-UID writes
    across processes, and signals readiness on *ready_fd* instead of
    printing the banner.
    """
    from .archive.server import create_archive_server

    security_kwargs = _serve_security(args)

    storage = settings["storage"]
    try:
        os.makedirs(storage, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create storage {storage}: {exc.strerror or exc}") from None
    try:
        server = await create_archive_server(
            storage,
            settings["aet"],
            settings["peers"],
            strict_called_ae=settings["strict_aet"],
            allowed_calling_aes=settings["allow_calling"],
            max_associations=settings["max_associations"],
            max_pdu_length=settings["max_pdu"],
            artim_timeout=settings["artim_timeout"],
            dimse_timeout=settings["dimse_timeout"],
            network_timeout=settings["idle_timeout"],
            recover=worker is None,
            shared=worker is not None,
            **security_kwargs,
        )
    except OSError as exc:
        raise CLIError(f"cannot open storage {storage}: {exc.strerror or exc}") from None
    try:
        try:
            await server.start(settings["host"], settings["port"], reuse_port=worker is not None)
        except OSError as exc:
            raise CLIError(
                f"cannot listen on {settings['host']}:{settings['port']}: {exc.strerror or exc}"
            ) from None
        # The start-up heap (pydicom's dictionaries, the parsers, the index's
        # objects) lives as long as the process: take it out of the cyclic
        # GC's generations (gc.freeze), so that a full collection scans only
        # what was made since, not some 45,000 objects (about 25 ms each).
        gc.collect()
        gc.freeze()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        peers = ", ".join(f"{k}={h}:{p}" for k, (h, p) in sorted(settings["peers"].items()))
        if ready_fd is not None:
            try:
                os.write(ready_fd, b"r")
                os.close(ready_fd)
            except OSError:
                pass  # a restarted worker: nobody waits for it
        else:
            print(
                f"aiodicom serving {settings['aet']} on {settings['host']}:{server.port} "
                f"(storage {os.path.abspath(storage)}{'; peers ' + peers if peers else ''})",
                flush=True,
            )
        await stop.wait()
        if worker is None:
            print("shutting down", flush=True)
    finally:
        await server.close(timeout=10.0)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    settings = _serve_settings(args)
    if args.verbose and args.quiet:
        raise CLIError("--verbose and --quiet exclude each other")
    if not args.verbose:
        logging.getLogger("aiodicom").setLevel(logging.WARNING if args.quiet else logging.INFO)
    _raise_fd_limit(settings["max_associations"])
    workers = args.workers
    if workers == 1:
        return run_loop(_serve(args, settings), use_uvloop=not args.no_uvloop)
    return _serve_workers(args, settings, workers)


def _raise_fd_limit(max_associations: int) -> None:
    """Let the process hold ``max_associations`` sockets (soft limit up to the hard one)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_associations + 256
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if want > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass


def _serve_workers(args: argparse.Namespace, settings: dict[str, Any], workers: int) -> int:
    """``serve --workers N``: recover once here, then N forked servers on one port (SO_REUSEPORT)."""
    import socket

    from ._workers import run_workers
    from .archive.storage import Storage

    if not hasattr(os, "fork") or not hasattr(socket, "SO_REUSEPORT"):
        raise CLIError("--workers needs fork() and SO_REUSEPORT (Linux, macOS, BSD)")
    if settings["port"] == 0:
        raise CLIError("--workers needs a fixed --port (port 0 would give each worker its own)")
    _serve_security(args)  # validate TLS files etc. before forking
    storage = settings["storage"]
    try:
        os.makedirs(storage, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create storage {storage}: {exc.strerror or exc}") from None
    # fail early (and once) if the port is taken by a process not in our group
    probe = socket.socket(socket.AF_INET6 if ":" in settings["host"] else socket.AF_INET)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind((settings["host"], settings["port"]))
    except OSError as exc:
        raise CLIError(f"cannot listen on {settings['host']}:{settings['port']}: {exc.strerror or exc}") from None
    finally:
        probe.close()

    async def recover() -> None:
        async with await Storage.open(storage, recover=True):
            pass

    try:
        asyncio.run(recover())
    except OSError as exc:
        raise CLIError(f"cannot open storage {storage}: {exc.strerror or exc}") from None

    def worker(index: int, ready_fd: int) -> int:
        try:
            return run_loop(_serve(args, settings, worker=index, ready_fd=ready_fd), use_uvloop=not args.no_uvloop)
        except CLIError as exc:
            print(f"aiodicom serve (worker {index}): {exc}", file=sys.stderr, flush=True)
            return 2

    def ready() -> None:
        print(
            f"aiodicom serving {settings['aet']} on {settings['host']}:{settings['port']} with {workers} workers "
            f"(storage {os.path.abspath(storage)})",
            flush=True,
        )

    code = run_workers(workers, worker, on_ready=ready)
    print("shut down", flush=True)
    return code


def _collect_files(paths: Sequence[str]) -> tuple[list[Any], list[tuple[str, str]], int]:
    """Part 10 infos of the files under ``paths``, failures of named files, skipped count."""
    from .part10 import InvalidPart10Error, Part10Info, read_part10_info
    from .services.store import resolve_file_uids

    def info_of(path: str) -> Part10Info:
        info = read_part10_info(path)
        resolve_file_uids(info)  # propose the SOP class the data set really has
        return info

    infos: list[Any] = []
    failures: list[tuple[str, str]] = []
    skipped = 0
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    full = os.path.join(root, name)
                    try:
                        infos.append(info_of(full))
                    except (InvalidPart10Error, OSError) as exc:
                        log.info("skipping %s: %s", full, exc)
                        skipped += 1
        else:
            try:
                infos.append(info_of(path))
            except InvalidPart10Error as exc:
                failures.append((path, str(exc)))
            except OSError as exc:
                failures.append((path, exc.strerror or str(exc)))
    return infos, failures, skipped


def _store_batches(infos: Sequence[Any]) -> list[tuple[list[tuple[str, list[str]]], list[Any]]]:
    """Group files so that each association proposes at most 128 contexts.

    Per SOP class: one context per transfer syntax found, so that files go
    as stored whenever the peer accepts their syntax, plus one with
    Explicit/Implicit VR Little Endian (those not found) as a fallback for
    re-encoding native files.
    """
    from .uids import (
        NATIVE_TRANSFER_SYNTAXES,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
    )

    by_class: dict[str, list[Any]] = {}
    for info in infos:
        by_class.setdefault(info.sop_class_uid, []).append(info)
    batches: list[tuple[list[tuple[str, list[str]]], list[Any]]] = []
    specs: list[tuple[str, list[str]]] = []
    files: list[Any] = []
    for sop_class, members in by_class.items():
        found = list(dict.fromkeys(i.transfer_syntax for i in members))
        mine: list[tuple[str, list[str]]] = [(sop_class, [ts]) for ts in found]
        if any(ts in NATIVE_TRANSFER_SYNTAXES for ts in found):
            fallback = [ts for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if ts not in found]
            if fallback:
                mine.append((sop_class, fallback))
        if specs and len(specs) + len(mine) > 128:
            batches.append((specs, files))
            specs, files = [], []
        specs.extend(mine[:128])
        files.extend(members)
    if specs:
        batches.append((specs, files))
    return batches


async def _store(args: argparse.Namespace) -> int:
    from .aio.client import associate
    from .aio.errors import NoAcceptedContext
    from .dimse.status import Status
    from .part10 import InvalidPart10Error
    from .services.store import store_response

    infos, failures, skipped = _collect_files(args.paths)
    total = len(infos) + len(failures)
    if total == 0:
        raise CLIError("no DICOM files found")
    tty = sys.stderr.isatty()
    stored = 0
    done = 0

    def progress(path: str, problem: str | None) -> None:
        nonlocal done
        done += 1
        if problem is not None:
            print(f"{chr(13) if tty else ''}[{done}/{total}] FAILED {path}: {problem}", file=sys.stderr)
        elif tty:
            print(f"\r[{done}/{total}] stored {path}", end="", file=sys.stderr, flush=True)
        else:
            print(f"[{done}/{total}] stored {path}", file=sys.stderr)

    for path, problem in failures:
        progress(path, problem)

    def summary() -> None:
        if tty:
            print(file=sys.stderr)
        extra = f", {skipped} skipped (not DICOM)" if skipped else ""
        print(f"{stored} stored, {total - stored} failed{extra}")

    try:
        for specs, files in _store_batches(infos):
            async with associate(
                args.host,
                args.port,
                called_ae=args.aec,
                calling_ae=args.aet,
                contexts=specs,
                acse_timeout=args.timeout,
                dimse_timeout=args.timeout,
                connect_timeout=args.timeout,
                **_scu_security(args),
            ) as assoc:
                for info in files:
                    path = str(info.path)
                    try:
                        rsp = await store_response(assoc, info.path)
                    except (NoAcceptedContext, InvalidPart10Error, ValueError) as exc:
                        progress(path, str(exc))
                        continue
                    except OSError as exc:
                        if isinstance(exc, ConnectionError):
                            raise
                        progress(path, exc.strerror or str(exc))
                        continue
                    status = Status(rsp.status if rsp.status is not None else 0xFFFF)
                    if status.is_success or status.is_warning:
                        stored += 1
                        if status.is_warning:
                            log.warning("%s stored with warning %s", path, status)
                        progress(path, None)
                    else:
                        comment = f" ({rsp.error_comment})" if rsp.error_comment else ""
                        progress(path, f"status {status}{comment}")
    except BaseException:
        summary()
        raise
    summary()
    return 0 if stored == total else 1


def _cmd_store(args: argparse.Namespace) -> int:
    return run_loop(_store(args))


def _parse_key(text: str) -> tuple[int, str, str]:
    """``Keyword=Value``, ``(gggg,eeee)=Value`` or ``gggg,eeee`` -> (tag, VR, value)."""
    import re

    from pydicom.datadict import dictionary_VR, tag_for_keyword

    name, _, value = text.partition("=")
    name = name.strip()
    m = re.fullmatch(r"\(?\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)?", name)
    tag: int | None
    if m:
        tag = int(m.group(1), 16) << 16 | int(m.group(2), 16)
    else:
        tag = tag_for_keyword(name)
    if tag is None:
        raise CLIError(f"unknown attribute {name!r} in -k {text!r}")
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        raise CLIError(f"attribute {name!r} is not in the DICOM dictionary; its VR is unknown") from None
    return tag, vr.split(" or ")[0], value


def _build_query(args: argparse.Namespace) -> Any:
    from pydicom.dataset import Dataset

    level = args.level or ("PATIENT" if args.model == "patient" else "STUDY")
    if args.model == "study" and level == "PATIENT":
        raise CLIError("the study root model has no PATIENT level")
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for text in args.key:
        tag, vr, value = _parse_key(text)
        converted: Any
        if vr == "SQ":
            if value:
                raise CLIError(f"-k {text!r}: sequence keys take no value")
            converted = []
        elif not value:
            converted = None
        elif vr in ("US", "SS", "UL", "SL", "UV", "SV", "AT"):
            try:
                converted = [int(v) for v in value.split("\\")]
            except ValueError:
                raise CLIError(f"-k {text!r}: {vr} needs integer values") from None
        elif vr in ("FL", "FD"):
            try:
                converted = [float(v) for v in value.split("\\")]
            except ValueError:
                raise CLIError(f"-k {text!r}: {vr} needs numeric values") from None
        else:
            converted = value
        if isinstance(converted, list) and vr != "SQ" and len(converted) == 1:
            converted = converted[0]
        ds.add_new(tag, vr, converted)
    return ds


def _format_value(elem: Any) -> str:
    if elem.VR == "SQ":
        return f"<{len(elem.value)} item(s)>"
    value = elem.value
    if value is None or value == "":
        return ""
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return str(value)


async def _find(args: argparse.Namespace) -> int:
    import json

    from .aio.client import associate
    from .services.find import resolve_model

    query = _build_query(args)
    model = resolve_model(args.model)
    matches = []
    async with associate(
        args.host,
        args.port,
        called_ae=args.aec,
        calling_ae=args.aet,
        contexts=[model],
        acse_timeout=args.timeout,
        dimse_timeout=args.timeout,
        connect_timeout=args.timeout,
        **_scu_security(args),
    ) as assoc:
        async with assoc.find(query, model) as results:
            async for status, identifier in results:
                if identifier is None:
                    continue
                matches.append(identifier)
                if not args.json:
                    print(f"Match {len(matches)} (status 0x{int(status):04X}):")
                    for elem in identifier:
                        keyword = elem.keyword or "Unknown"
                        print(f"  {elem.tag} {elem.VR} {keyword:<32} {_format_value(elem)}")
        final = results.final_status
        comment = results.final_command.error_comment if results.final_command is not None else None
    if args.json:
        json.dump([m.to_json_dict() for m in matches], sys.stdout, indent=2)
        print()
    print(f"{len(matches)} match(es); final status {final}", file=sys.stderr)
    if final is None or not (final.is_success or final.is_warning):
        raise CLIError(f"C-FIND failed with status {final}{' (' + comment + ')' if comment else ''}")
    return 0


def _cmd_find(args: argparse.Namespace) -> int:
    return run_loop(_find(args))


# ------------------------------------------------------------------- get


def _add_retrieve_args(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--level`` and ``-k`` of the ``get`` and ``move`` commands."""
    p.add_argument("--model", choices=("patient", "study"), default="patient", help="information model [patient]")
    p.add_argument(
        "--level",
        required=True,
        type=str.upper,
        choices=("PATIENT", "STUDY", "SERIES", "IMAGE"),
        help="QueryRetrieveLevel",
    )
    p.add_argument(
        "-k", "--key", action="append", default=[], metavar="KEY=VALUE", help="identifier key (repeatable)"
    )


def _add_get_parser(sub: Any) -> None:
    p = sub.add_parser(
        "get",
        help="retrieve instances with C-GET",
        description=(
            "Retrieve instances from HOST PORT with C-GET and write them as Part 10 files "
            "(<SOPInstanceUID>.dcm) to --out. Keys as in DCMTK: -k PatientID=123, "
            '-k "(0020,000D)=1.2.3", -k 0020,000E=1.2.3.4. Progress goes to stderr, '
            "the summary to stdout; the exit status is non-zero unless every sub-operation succeeded."
        ),
    )
    _add_scu_args(p)
    _add_retrieve_args(p)
    p.add_argument("--out", "-od", default=".", help="directory for the received files [.]")
    p.add_argument("--no-fsync", action="store_true", help="do not fsync each written file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_get)


def _get_key(text: str) -> tuple[int, str, str]:
    """``KEY=VALUE`` (keyword, ``(gggg,eeee)`` or ``gggg,eeee``) -> (tag, VR, value)."""
    import re

    from pydicom.datadict import dictionary_VR, tag_for_keyword

    key, sep, value = text.partition("=")
    key = key.strip()
    m = re.fullmatch(r"\(?\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)?", key)
    tag = int(m[1] + m[2], 16) if m else tag_for_keyword(key)
    if not sep or tag is None:
        raise CLIError(f"invalid key {text!r}: use KEYWORD=VALUE or (gggg,eeee)=VALUE")
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        raise CLIError(f"unknown attribute in key {text!r}") from None
    if vr == "SQ":
        raise CLIError(f"sequence keys are not supported: {text!r}")
    return tag, vr, value


def _get_identifier(args: argparse.Namespace) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = args.level
    for text in args.key:
        tag, vr, value = _get_key(text)
        converted: Any = value if value != "" else None
        if converted is not None and vr in ("US", "UL", "SS", "SL", "UV", "SV"):
            try:
                converted = int(value)
            except ValueError:
                raise CLIError(f"key {text!r} needs an integer value") from None
        elif converted is not None and vr in ("FL", "FD"):
            try:
                converted = float(value)
            except ValueError:
                raise CLIError(f"key {text!r} needs a number") from None
        ds.add_new(tag, vr, converted)
    return ds


def _scu_association(args: argparse.Namespace, contexts: Sequence[Any], **kwargs: Any) -> Any:
    """``associate()`` to HOST PORT with the AE titles, timeout and security options of ``args``."""
    from .aio.client import associate

    return associate(
        args.host,
        args.port,
        called_ae=args.aec,
        calling_ae=args.aet,
        contexts=contexts,
        acse_timeout=args.timeout,
        dimse_timeout=args.timeout,
        connect_timeout=args.timeout,
        **kwargs,
        **_scu_security(args),
    )


async def _retrieve_result(op: Any, quiet: bool, on_instance: Callable[[Any], None] | None = None) -> Any:
    """Run a C-GET/C-MOVE operation to its end, progress on stderr; its final result."""
    from .services._retrieve import RetrieveProgress, RetrieveResult

    result = None
    async with op as items:
        async for item in items:
            if isinstance(item, RetrieveProgress):
                if not quiet:
                    print(
                        f"pending: {item.remaining if item.remaining is not None else '?'} remaining, "
                        f"{item.completed} completed, {item.failed} failed, {item.warning} warning",
                        file=sys.stderr,
                    )
            elif isinstance(item, RetrieveResult):
                result = item
            elif on_instance is not None:
                on_instance(item)
    return result


def _retrieve_summary(service: str, args: argparse.Namespace, result: Any, to: str = "", written: str = "") -> int:
    """Print the summary of a C-GET/C-MOVE; CLIError unless every sub-operation succeeded."""
    from .dimse.status import describe

    if result is None:  # pragma: no cover - the iterator always ends with a result
        raise CLIError(f"no final {service} response")
    print(
        f"{service} from {args.aec}@{args.host}:{args.port}{to}: status 0x{int(result.status):04X} "
        f"({describe(result.status)}), {written}"
        f"completed {result.completed or 0}, failed {result.failed or 0}, warning {result.warning or 0}"
    )
    if result.status != 0:
        detail = f"; failed: {' '.join(result.failed_sop_instance_uids)}" if result.failed_sop_instance_uids else ""
        comment = f" ({result.error_comment})" if result.error_comment else ""
        raise CLIError(f"{service} finished with status 0x{int(result.status):04X}{comment}{detail}")
    return 0


async def _get(args: argparse.Namespace) -> int:
    from .services.get import COMMON_STORAGE_SOP_CLASSES, get_contexts

    identifier = _get_identifier(args)
    os.makedirs(args.out, exist_ok=True)
    contexts, roles = get_contexts(COMMON_STORAGE_SOP_CLASSES, models=(args.model,))
    received = 0

    def on_instance(item: Any) -> None:
        nonlocal received
        received += 1
        if not args.quiet:
            print(f"received {received}: {item.path}", file=sys.stderr)

    async with _scu_association(args, contexts, roles=roles) as assoc:
        if not any(c.can_receive_requests(True) for c in assoc.contexts.values()):
            print("warning: the peer accepted no storage context with the SCP role for us", file=sys.stderr)
        op = assoc.get(identifier, args.model, write_to=args.out, fsync=not args.no_fsync)
        result = await _retrieve_result(op, args.quiet, on_instance)
    return _retrieve_summary("C-GET", args, result, written=f"{received} instance(s) written to {args.out}, ")


def _cmd_get(args: argparse.Namespace) -> int:
    return run_loop(_get(args))


# ------------------------------------------------------------------ move


def _add_move_parser(sub: Any) -> None:
    p = sub.add_parser(
        "move",
        help="send instances to a third AE with C-MOVE",
        description=(
            "Ask HOST PORT to send the identified instances to the AE title --dest (which HOST must know, "
            "e.g. `aiodicom serve --peer DEST=host:port`). Keys as for `get`. Progress goes to stderr, "
            "the summary to stdout; the exit status is non-zero unless every sub-operation succeeded."
        ),
    )
    _add_scu_args(p)
    p.add_argument("--dest", required=True, type=_ae, metavar="AET", help="move destination AE title")
    _add_retrieve_args(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_move)


async def _move(args: argparse.Namespace) -> int:
    from .services.move import MOVE_MODELS

    identifier = _get_identifier(args)
    async with _scu_association(args, [MOVE_MODELS[args.model]]) as assoc:
        result = await _retrieve_result(assoc.move(identifier, args.dest, args.model), args.quiet)
    return _retrieve_summary("C-MOVE", args, result, to=f" to {args.dest}")


def _cmd_move(args: argparse.Namespace) -> int:
    return run_loop(_move(args))


# ------------------------------------------------------------------- rpq


def _add_rpq_parser(sub: Any) -> None:
    p = sub.add_parser(
        "rpq",
        help="Relevant Patient Information Query (PS3.4 Annex Q)",
        description=(
            "Ask HOST PORT for one patient's relevant information: demographics and an SR content tree "
            "built to a PS3.16 template (9007 general, 9000 breast imaging, 3802 cardiovascular history). "
            "Exit 0 when found or when no patient matched; non-zero on failure (C100 more than one "
            "patient matched, C200 template not supported, ...)."
        ),
    )
    _add_scu_args(p)
    p.add_argument("patient_id", metavar="PATIENT_ID", help="the PatientID to match")
    p.add_argument(
        "--template", choices=("9007", "9000", "3802"), default="9007", help="root template (TID) [9007]"
    )
    p.add_argument("--issuer", metavar="ISSUER", help="IssuerOfPatientID narrowing the PatientID domain")
    p.add_argument("--json", action="store_true", help="print the answer as DICOM JSON")
    p.set_defaults(func=_cmd_rpq)


def _code_text(seq: Any) -> str:
    if not seq:
        return "?"
    item = seq[0]
    value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue") or "?"
    return f"{item.get('CodeMeaning') or '?'} ({value}, {item.get('CodingSchemeDesignator') or '?'})"


def _content_value(item: Any) -> str:
    vt = str(item.get("ValueType") or "")
    if vt == "TEXT":
        return repr(str(item.get("TextValue") or ""))
    if vt == "CODE":
        return _code_text(item.get("ConceptCodeSequence"))
    if vt == "NUM":
        seq = item.get("MeasuredValueSequence")
        if not seq:
            return "(no value)"
        units = seq[0].get("MeasurementUnitsCodeSequence")
        unit = str(units[0].get("CodeValue") or "") if units else ""
        return f"{seq[0].get('NumericValue')} {unit}".rstrip()
    attribute = {"DATE": "Date", "DATETIME": "DateTime", "TIME": "Time", "PNAME": "PersonName", "UIDREF": "UID"}
    if vt in attribute:
        return str(item.get(attribute[vt]) or "")
    if vt in ("COMPOSITE", "IMAGE", "WAVEFORM"):
        seq = item.get("ReferencedSOPSequence")
        return str(seq[0].get("ReferencedSOPInstanceUID")) if seq else ""
    return ""


def _print_content(items: Any, depth: int) -> None:
    for item in items or ():
        rel = str(item.get("RelationshipType") or "?")
        vt = str(item.get("ValueType") or "?")
        name = _code_text(item.get("ConceptNameCodeSequence"))
        value = _content_value(item)
        print(f"{'  ' * depth}{rel} {vt} {name}{': ' + value if value else ''}")
        if "ContentSequence" in item:
            _print_content(item.ContentSequence, depth + 1)


def _print_relevant_patient_info(ds: Any) -> None:
    print(f"Patient ID:   {ds.get('PatientID', '')}")
    labels = (
        ("IssuerOfPatientID", "Issuer:      "),
        ("PatientName", "Name:        "),
        ("PatientBirthDate", "Birth date:  "),
        ("PatientSex", "Sex:         "),
    )
    for keyword, label in labels:
        if keyword in ds:
            print(f"{label} {ds.get(keyword) or ''}")
    for elem in ds:
        if elem.tag.group == 0x0010 and elem.keyword not in ("PatientID",) + tuple(k for k, _ in labels):
            print(f"{(elem.keyword or str(elem.tag)) + ':':<13} {_format_value(elem)}")
    templates = ds.get("ContentTemplateSequence")
    if templates:
        print(f"Template:     {templates[0].get('MappingResource')} TID {templates[0].get('TemplateIdentifier')}")
    if ds.get("ObservationDateTime"):
        print(f"Observed:     {ds.ObservationDateTime}")
    print(f"{ds.get('ValueType') or 'CONTAINER'} {_code_text(ds.get('ConceptNameCodeSequence'))}")
    _print_content(ds.get("ContentSequence"), 1)


async def _rpq(args: argparse.Namespace) -> int:
    import json

    from .services.rpq import relevant_patient_info, sop_class_for_template

    sop_class = sop_class_for_template(args.template)
    async with _scu_association(args, [sop_class]) as assoc:
        try:
            ds = await relevant_patient_info(assoc, args.patient_id, args.template, issuer=args.issuer)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    if ds is None:
        if args.json:
            print("null")
            print(f"no match for PatientID {args.patient_id}", file=sys.stderr)
        else:
            print(f"no match for PatientID {args.patient_id}")
        return 0
    if args.json:
        json.dump(ds.to_json_dict(), sys.stdout, indent=2)
        print()
    else:
        _print_relevant_patient_info(ds)
    return 0


def _cmd_rpq(args: argparse.Namespace) -> int:
    return run_loop(_rpq(args))


# ------------------------------------------------------------------- bench


def _add_bench_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="load-test an SCP (C-ECHO, C-STORE, C-FIND, C-GET)",
        description=(
            "Run OPERATION against HOST PORT from --concurrency workers, back to back, for --duration "
            "seconds or --count operations; report ops/s, MB/s, latency percentiles and errors by kind. "
            "Workers keep their association open (--per-association N re-associates every N operations, "
            "--cycle associates and releases for every operation). store sends synthetic CT instances of "
            "--size KiB with a new SOP Instance UID each. Progress goes to stderr, the report to stdout."
        ),
    )
    p.add_argument("operation", choices=("echo", "store", "find", "get"), help="what to send")
    _add_scu_args(p)
    p.add_argument("-c", "--concurrency", type=int, default=1, help="concurrent workers/associations [1]")
    limit = p.add_mutually_exclusive_group()
    limit.add_argument("--duration", type=_positive, help="seconds to run [10 unless --count]")
    limit.add_argument("-n", "--count", type=int, help="total number of operations")
    p.add_argument("--warmup", type=float, default=0.0, help="seconds not counted before --duration [0]")
    p.add_argument("--size", type=_positive, default=512.0, metavar="KiB", help="store: instance size [512]")
    p.add_argument("--model", choices=("patient", "study"), default="patient", help="find/get: model [patient]")
    p.add_argument(
        "--level",
        type=str.upper,
        choices=("PATIENT", "STUDY", "SERIES", "IMAGE"),
        help="find/get: QueryRetrieveLevel [PATIENT, or STUDY with --model study]",
    )
    p.add_argument(
        "-k", "--key", action="append", default=[], metavar="KEY[=VALUE]", help="find/get: key (repeatable)"
    )
    p.add_argument("--per-association", type=int, default=0, metavar="N", help="operations per association [0: all]")
    p.add_argument("--cycle", action="store_true", help="associate + operation + release every time")
    p.add_argument("--json", metavar="FILE", help="save the report (with every latency) as JSON")
    p.add_argument("--no-uvloop", action="store_true", help="use the asyncio event loop even if uvloop is installed")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    query = None
    if args.operation in ("find", "get"):
        if args.level is None:
            args.level = "STUDY" if args.model == "study" else "PATIENT"
        query = _build_query(args) if args.operation == "find" else _get_identifier(args)
    elif args.key or args.level:
        raise CLIError("-k/--level apply to find and get only")
    if args.cycle and args.per_association:
        raise CLIError("--cycle and --per-association exclude each other")
    cfg = bench.BenchConfig(
        args.operation,
        args.host,
        args.port,
        called_ae=args.aec,
        calling_ae=args.aet,
        concurrency=args.concurrency,
        duration=args.duration,
        count=args.count,
        warmup=args.warmup,
        size_kib=args.size,
        query=query,
        model=args.model,
        per_association=args.per_association,
        cycle=args.cycle,
        timeout=args.timeout,
        progress=not args.quiet,
    )
    try:
        cfg.check()
        result = run_loop(bench.run(cfg), use_uvloop=not args.no_uvloop)
    except bench.BenchError as exc:
        raise CLIError(str(exc)) from None
    print(bench.format_result(result))
    if args.json:
        try:
            bench.save_json(result, cfg, args.json)
        except OSError as exc:
            raise CLIError(f"cannot write {args.json}: {exc.strerror or exc}") from None
    return 0 if result.ok > 0 and result.failed == 0 and result.errors_total == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aiodicom`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The format above uses none of these: skip collecting them for every
    # record (the caller's frame walk alone was ~25% of a server's CPU per
    # short association, one INFO line each).  See the logging HOWTO,
    # "Optimization".
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
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
    except TimeoutError as exc:
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
