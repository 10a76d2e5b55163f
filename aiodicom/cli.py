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
    _add_rpq_parser(sub)
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
    from .uids import NATIVE_TRANSFER_SYNTAXES, ExplicitVRLittleEndian, ImplicitVRLittleEndian

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


async def _get(args: argparse.Namespace) -> int:
    from .aio.client import associate
    from .dimse.status import describe
    from .services.get import COMMON_STORAGE_SOP_CLASSES, GetProgress, GetResult, ReceivedInstance, get_contexts

    identifier = _get_identifier(args)
    os.makedirs(args.out, exist_ok=True)
    contexts, roles = get_contexts(COMMON_STORAGE_SOP_CLASSES, models=(args.model,))
    result: GetResult | None = None
    received = 0
    async with associate(
        args.host,
        args.port,
        called_ae=args.aec,
        calling_ae=args.aet,
        contexts=contexts,
        roles=roles,
        acse_timeout=args.timeout,
        dimse_timeout=args.timeout,
        connect_timeout=args.timeout,
    ) as assoc:
        if not any(c.can_receive_requests(True) for c in assoc.contexts.values()):
            print("warning: the peer accepted no storage context with the SCP role for us", file=sys.stderr)
        async with assoc.get(identifier, args.model, write_to=args.out, fsync=not args.no_fsync) as items:
            async for item in items:
                if isinstance(item, ReceivedInstance):
                    received += 1
                    if not args.quiet:
                        print(f"received {received}: {item.path}", file=sys.stderr)
                elif isinstance(item, GetProgress):
                    if not args.quiet:
                        print(
                            f"pending: {item.remaining if item.remaining is not None else '?'} remaining, "
                            f"{item.completed} completed, {item.failed} failed, {item.warning} warning",
                            file=sys.stderr,
                        )
                else:
                    result = item
    if result is None:  # pragma: no cover - the iterator always ends with a result
        raise CLIError("no final C-GET response")
    print(
        f"C-GET from {args.aec}@{args.host}:{args.port}: status 0x{int(result.status):04X} "
        f"({describe(result.status)}), {received} instance(s) written to {args.out}, "
        f"completed {result.completed or 0}, failed {result.failed or 0}, warning {result.warning or 0}"
    )
    if result.status != 0:
        detail = f"; failed: {' '.join(result.failed_sop_instance_uids)}" if result.failed_sop_instance_uids else ""
        comment = f" ({result.error_comment})" if result.error_comment else ""
        raise CLIError(f"C-GET finished with status 0x{int(result.status):04X}{comment}{detail}")
    return 0


def _cmd_get(args: argparse.Namespace) -> int:
    return run_loop(_get(args))


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

    from .aio.client import associate
    from .services.rpq import relevant_patient_info, sop_class_for_template

    sop_class = sop_class_for_template(args.template)
    async with associate(
        args.host,
        args.port,
        called_ae=args.aec,
        calling_ae=args.aet,
        contexts=[sop_class],
        acse_timeout=args.timeout,
        dimse_timeout=args.timeout,
        connect_timeout=args.timeout,
    ) as assoc:
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
