"""Access control: AE allow-lists, strict called AE, per-AE permissions, user identity."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

import aiodicom
from aiodicom.aio.errors import AssociationRejectedError
from aiodicom.cli import _serve_security, build_parser
from aiodicom.security import (
    NOT_AUTHORIZED,
    AccessPolicy,
    any_identity,
    password_identity,
    token_identity,
    username_identity,
)
from aiodicom.services.find import FindRequest, serve_find
from aiodicom.services.store import serve_store, store_to_directory
from aiodicom.uids import (
    PatientRootQueryRetrieveInformationModelFind as PATIENT_FIND,
)
from aiodicom.uids import (
    PatientRootQueryRetrieveInformationModelGet as PATIENT_GET,
)
from aiodicom.uids import (
    PatientRootQueryRetrieveInformationModelMove as PATIENT_MOVE,
)
from aiodicom.ul import pdu as P
from tests._sync import wait_no_associations

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
DEADLINE = 20.0


def ct_file() -> str:
    path = get_testdata_file("CT_small.dcm")
    if path is None:  # pragma: no cover
        pytest.skip("pydicom test file CT_small.dcm unavailable")
    return str(path)


def patient_query() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "PATIENT"
    ds.PatientID = ""
    return ds


# ------------------------------------------------------------ AccessPolicy


def test_policy_parse_and_defaults(tmp_path: Path) -> None:
    p = AccessPolicy()
    assert all(p.allows("ANY", op) for op in ("echo", "store", "find", "get", "move", "other"))
    p = AccessPolicy.parse(["MOD1=store", "WS=find, get,move", "*=none"])
    assert p.allows("MOD1", "store") and not p.allows("MOD1", "find")
    assert p.allows("MOD1  ", "store")  # AE titles are space padded on the wire
    assert p.allows("WS", "move") and not p.allows("WS", "store")
    assert not p.allows("OTHER", "store") and p.allows("OTHER", "echo")  # echo is always allowed
    assert p.operations_for("ADMIN") == frozenset({"echo"})
    p = AccessPolicy.parse(["ADMIN=all"], p)
    assert p.allows("ADMIN", "other")
    for bad in ("MOD1", "=store", "MOD1=delete", "WAY-TOO-LONG-AE-TITLE=store"):
        with pytest.raises(ValueError):
            AccessPolicy.parse([bad])
    f = tmp_path / "perm.toml"
    f.write_text('[permissions]\nMOD1 = ["store"]\nWS = "find,get"\n"*" = []\n')
    p = AccessPolicy.from_toml(f)
    assert p.allows("MOD1", "store") and p.allows("WS", "get") and not p.allows("X", "find")
    f.write_text('[permissions]\nMOD1 = 3\n')
    with pytest.raises(ValueError):
        AccessPolicy.from_toml(f)


# ------------------------------------------------------------ enforcement


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[aiodicom.Server]:
    policy = AccessPolicy.parse(["MODALITY=store", "VIEWER=find,get", "*=none"])
    srv = aiodicom.Server("ARCHIVE", access_policy=policy)
    serve_store(srv, store_to_directory(tmp_path / "in", fsync=False))

    async def find_handler(req: FindRequest) -> AsyncIterator[Dataset]:
        ds = Dataset()
        ds.QueryRetrieveLevel = "PATIENT"
        ds.PatientID = "P1"
        yield ds

    serve_find(srv, find_handler, models=("patient",))
    srv.add_context(PATIENT_GET)
    srv.add_context(PATIENT_MOVE)
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.close(timeout=1.0)


def stored(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "in").rglob("*") if p.is_file()]


async def find_status(assoc: aiodicom.Association) -> tuple[int, int]:
    async with assoc.find(patient_query(), "patient") as results:
        matches = [i async for _s, i in results if i is not None]
    assert results.final_status is not None
    return int(results.final_status), len(matches)


async def test_permissions_enforced(guarded: aiodicom.Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "aiodicom")
    contexts = [VERIFICATION, CT, PATIENT_FIND, PATIENT_GET, PATIENT_MOVE]
    # MODALITY: store yes, find no
    async with aiodicom.associate("127.0.0.1", guarded.port, calling_ae="MODALITY", contexts=contexts) as assoc:
        assert await assoc.echo() == 0
        assert int(await assoc.store(ct_file())) == 0
        assert await find_status(assoc) == (NOT_AUTHORIZED, 0)
        assert await assoc.echo() == 0  # the association stays usable
    assert len(stored(tmp_path)) == 1
    # VIEWER: find yes, store no (nothing written: the data set is not streamed to disk)
    async with aiodicom.associate("127.0.0.1", guarded.port, calling_ae="VIEWER", contexts=contexts) as assoc:
        assert int(await assoc.store(ct_file())) == NOT_AUTHORIZED
        assert await find_status(assoc) == (0, 1)
        move = await assoc.move(patient_query(), "ELSEWHERE", "patient").wait()
        assert int(move.status) == NOT_AUTHORIZED
    assert len(stored(tmp_path)) == 1
    # Anybody else: only echo
    async with aiodicom.associate("127.0.0.1", guarded.port, calling_ae="STRANGER", contexts=contexts) as assoc:
        assert await assoc.echo() == 0
        assert int(await assoc.store(ct_file())) == NOT_AUTHORIZED
        async with assoc.get(patient_query(), "patient") as op:
            async for _item in op:
                pass
        assert op.result is not None and int(op.result.status) == NOT_AUTHORIZED
    assert len(stored(tmp_path)) == 1
    refused = [r.getMessage() for r in caplog.records if "not authorized" in r.getMessage()]
    assert any("store from STRANGER" in m for m in refused), refused


async def test_calling_ae_allow_list_and_strict_called_ae() -> None:
    srv = aiodicom.Server("ARCHIVE", allowed_calling_aes=["GOOD"], strict_called_ae=True)
    await srv.start("127.0.0.1", 0)
    try:
        async with aiodicom.associate("127.0.0.1", srv.port, calling_ae="GOOD", called_ae="ARCHIVE") as a:
            assert await a.echo() == 0
        with pytest.raises(AssociationRejectedError) as err:
            await aiodicom.associate("127.0.0.1", srv.port, calling_ae="BAD", called_ae="ARCHIVE")
        assert (err.value.result, err.value.source, err.value.reject.reason) == (1, 1, 3)
        with pytest.raises(AssociationRejectedError) as err:
            await aiodicom.associate("127.0.0.1", srv.port, calling_ae="GOOD", called_ae="OTHER")
        assert (err.value.result, err.value.source, err.value.reject.reason) == (1, 1, 7)
    finally:
        await srv.close(timeout=1.0)


# ------------------------------------------------------------ user identity


def uid(kind: int, primary: bytes, secondary: bytes = b"", positive: bool = True) -> P.UserIdentityRQ:
    return P.UserIdentityRQ(kind, primary, secondary, positive)


def test_identity_helpers() -> None:
    u = username_identity(["alice"])
    assert u(uid(1, b"alice"))[0] and not u(uid(1, b"bob"))[0] and not u(uid(2, b"alice", b"x"))[0]
    pw = password_identity({"alice": "s3cret", "bob": b"\x00pw"})
    assert pw(uid(2, b"alice", b"s3cret"))[0]
    assert pw(uid(2, b"bob", b"\x00pw"))[0]
    assert not pw(uid(2, b"alice", b"wrong"))[0]
    assert not pw(uid(2, b"mallory", b"\x00" * 32))[0]  # unknown user, even with the dummy passcode
    assert not pw(uid(1, b"alice"))[0]
    assert password_identity({"alice": "x"}, accept_username_only=True)(uid(1, b"alice"))[0]
    seen: list[bytes] = []

    def verify(raw: bytes) -> bool | bytes:
        seen.append(raw)
        if raw == b"boom":
            raise RuntimeError("verifier crashed")
        return b"welcome" if raw.startswith(b"eyJ") else False

    t = token_identity(verify)
    assert t(uid(5, b"eyJhbGciOi.x.y")) == (True, b"welcome")
    assert t(uid(4, b"<saml/>")) == (False, None)
    assert t(uid(5, b"boom")) == (False, None)
    assert t(uid(2, b"eyJ", b"pw")) == (False, None)  # wrong type: verifier not called
    assert seen == [b"eyJhbGciOi.x.y", b"<saml/>", b"boom"]
    both = any_identity(pw, t)
    assert both(uid(2, b"alice", b"s3cret"))[0] and both(uid(5, b"eyJz"))[0] and not both(uid(1, b"alice"))[0]


@pytest.fixture
async def id_server() -> AsyncIterator[aiodicom.Server]:
    check = any_identity(
        password_identity({"alice": "s3cret"}),
        token_identity(lambda raw: b"token-ok" if raw == b"eyJ.valid.sig" else False),
    )
    srv = aiodicom.Server("IDSCP", identity_check=check, require_user_identity=True)
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.close(timeout=1.0)


async def test_identity_negotiation(id_server: aiodicom.Server) -> None:
    port = id_server.port
    async with aiodicom.associate("127.0.0.1", port, user_identity=uid(2, b"alice", b"s3cret", False)) as a:
        assert await a.echo() == 0
        assert a.accept is not None and a.accept.user_info.user_identity_ac is None  # none requested
    async with aiodicom.associate("127.0.0.1", port, user_identity=uid(5, b"eyJ.valid.sig")) as a:
        assert a.accept is not None and a.accept.user_info.user_identity_ac is not None
        assert a.accept.user_info.user_identity_ac.server_response == b"token-ok"
    bad = [uid(2, b"alice", b"S3CRET"), uid(2, b"eve", b"s3cret"), uid(1, b"alice"), uid(5, b"eyJ.forged.sig"), None]
    for identity in bad:
        with pytest.raises(AssociationRejectedError) as err:
            await aiodicom.associate("127.0.0.1", port, user_identity=identity)
        assert (err.value.result, err.value.source) == (1, 1), identity
    await wait_no_associations(id_server, 5)  # the rejected connections close (Sta13 -> Sta1)


@pytest.fixture
def quiet_pynetdicom() -> Iterator[None]:
    logger = logging.getLogger("pynetdicom")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(old)


async def test_pynetdicom_username_passcode(id_server: aiodicom.Server, quiet_pynetdicom: None) -> None:
    pynetdicom = pytest.importorskip("pynetdicom")
    from pynetdicom.pdu_primitives import UserIdentityNegotiation

    def run(passcode: bytes) -> tuple[bool, bool, int | None, bytes | None]:
        ae = pynetdicom.AE(ae_title="PYSCU")
        ae.add_requested_context(VERIFICATION)
        item = UserIdentityNegotiation()
        item.user_identity_type = 2
        item.primary_field = b"alice"
        item.secondary_field = passcode
        item.positive_response_requested = True
        assoc = ae.associate("127.0.0.1", id_server.port, ae_title="IDSCP", ext_neg=[item])
        try:
            status = None
            response = None
            if assoc.is_established:
                rsp = assoc.send_c_echo()
                status = int(rsp.Status) if rsp else None
                for sub in assoc.acceptor.user_information:
                    if isinstance(sub, UserIdentityNegotiation):
                        response = sub.server_response
            return assoc.is_established, assoc.is_rejected, status, response
        finally:
            if assoc.is_established:
                assoc.release()
            ae.shutdown()

    established, rejected, status, response = await asyncio.wait_for(asyncio.to_thread(run, b"s3cret"), DEADLINE)
    assert established and status == 0 and response == b""
    established, rejected, status, _ = await asyncio.wait_for(asyncio.to_thread(run, b"guess"), DEADLINE)
    assert not established and rejected


# ------------------------------------------------------------------- CLI


def test_serve_security_flags(tmp_path: Path) -> None:
    perm = tmp_path / "perm.toml"
    perm.write_text('[permissions]\nMOD1 = "store"\n')
    users = tmp_path / "users.toml"
    users.write_text('[users]\nalice = "s3cret"\n')
    args = build_parser().parse_args(
        ["serve", "--permissions", str(perm), "--permit", "WS=find,get", "--permit", "*=none", "--users", str(users),
         "--strict-aet", "--allow-calling", "MOD1", "--allow-calling", "WS"]
    )
    kw = _serve_security(args)
    policy = kw["access_policy"]
    assert policy.allows("MOD1", "store") and policy.allows("WS", "get") and not policy.allows("X", "store")
    assert kw["require_user_identity"] is True
    assert kw["identity_check"](uid(2, b"alice", b"s3cret"))[0]
    assert "ssl" not in kw
    assert args.strict_aet and args.allow_calling == ["MOD1", "WS"]
    from aiodicom.cli import CLIError

    for bad in (["--permit", "WS=delete"], ["--permissions", str(tmp_path / "missing.toml")]):
        with pytest.raises(CLIError):
            _serve_security(build_parser().parse_args(["serve", *bad]))


async def test_cli_echo_username_password(id_server: aiodicom.Server) -> None:
    async def run(*extra: str) -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aiodicom", "echo", "127.0.0.1", str(id_server.port), "--timeout", "5", *extra,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        return await asyncio.wait_for(proc.wait(), DEADLINE)

    ok, bad = await asyncio.gather(
        run("--username", "alice", "--password", "s3cret"), run("--username", "alice", "--password", "nope")
    )
    assert ok == 0 and bad != 0
