"""TLS on both sides: our SCU/SCP, mutual TLS, DCMTK and pynetdicom peers, CLI flags.

Certificates (a CA, a server certificate for localhost/127.0.0.1 and a client
certificate) are generated at test time with ``cryptography``.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

import aiodicom
from aiodicom.security import client_ssl_context, server_ssl_context
from aiodicom.services.store import serve_store, store_to_directory
from tests.conftest import dcmtk_env, free_port, require_dcmtk

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
DEADLINE = 20.0


@dataclass
class PKI:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str  # a CA that signed nothing we use
    rogue_cert: str  # a client certificate signed by other_ca
    rogue_key: str


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> str:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(path)


def _write_cert(path: Path, cert: x509.Certificate) -> str:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def _make_ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_leaf(
    cn: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = _make_ca("aiodicom test CA")
    srv, srv_key = _make_leaf("localhost", ca, ca_key, server=True)
    cli, cli_key = _make_leaf("TESTSCU", ca, ca_key, server=False)
    other, other_key = _make_ca("rogue CA")
    rogue, rogue_key = _make_leaf("ROGUE", other, other_key, server=False)
    return PKI(
        ca=_write_cert(d / "ca.pem", ca),
        server_cert=_write_cert(d / "server.crt", srv),
        server_key=_write_key(d / "server.key", srv_key),
        client_cert=_write_cert(d / "client.crt", cli),
        client_key=_write_key(d / "client.key", cli_key),
        other_ca=_write_cert(d / "other-ca.pem", other),
        rogue_cert=_write_cert(d / "rogue.crt", rogue),
        rogue_key=_write_key(d / "rogue.key", rogue_key),
    )


def ct_file() -> str:
    path = get_testdata_file("CT_small.dcm")
    if path is None:  # pragma: no cover
        pytest.skip("pydicom test file CT_small.dcm unavailable")
    return str(path)


@pytest.fixture
async def tls_server(pki: PKI, tmp_path: Path) -> AsyncIterator[aiodicom.Server]:
    """Echo + storage SCP over TLS, no client certificate required."""
    srv = aiodicom.Server("TLSSCP", ssl=server_ssl_context(pki.server_cert, pki.server_key))
    serve_store(srv, store_to_directory(tmp_path / "in", fsync=False))
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.close(timeout=1.0)


@pytest.fixture
async def mtls_server(pki: PKI, tmp_path: Path) -> AsyncIterator[aiodicom.Server]:
    """Echo + storage SCP over mutual TLS (client certificates signed by our CA required)."""
    ctx = server_ssl_context(pki.server_cert, pki.server_key, ca=pki.ca, require_client_cert=True)
    srv = aiodicom.Server("TLSSCP", ssl=ctx)
    serve_store(srv, store_to_directory(tmp_path / "in", fsync=False))
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.close(timeout=1.0)


def stored_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "in").rglob("*") if p.is_file() and not p.name.startswith("."))


# ------------------------------------------------------------------ helpers


def test_context_defaults(pki: PKI) -> None:
    s = server_ssl_context(pki.server_cert, pki.server_key)
    assert s.minimum_version == ssl.TLSVersion.TLSv1_2
    assert s.verify_mode == ssl.CERT_NONE
    m = server_ssl_context(pki.server_cert, pki.server_key, ca=pki.ca, require_client_cert=True)
    assert m.verify_mode == ssl.CERT_REQUIRED
    o = server_ssl_context(pki.server_cert, pki.server_key, ca=pki.ca)
    assert o.verify_mode == ssl.CERT_OPTIONAL
    c = client_ssl_context(pki.ca)
    assert c.minimum_version == ssl.TLSVersion.TLSv1_2
    assert c.verify_mode == ssl.CERT_REQUIRED and not c.check_hostname
    assert client_ssl_context(pki.ca, check_hostname=True).check_hostname
    assert client_ssl_context().check_hostname  # system trust store: check names
    assert client_ssl_context(verify=False).verify_mode == ssl.CERT_NONE
    for ctx in (s, c):
        names = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
        assert names and all("GCM" in n or "CHACHA20" in n for n in names), names
    with pytest.raises(ValueError):
        server_ssl_context(pki.server_cert, pki.server_key, require_client_cert=True)
    with pytest.raises(ValueError):
        client_ssl_context(pki.ca, key=pki.client_key)


# --------------------------------------------------------- aiodicom <-> aiodicom


async def test_echo_and_store_over_tls(tls_server: aiodicom.Server, pki: PKI, tmp_path: Path) -> None:
    ctx = client_ssl_context(pki.ca, check_hostname=True)
    async with aiodicom.associate(
        "127.0.0.1", tls_server.port, called_ae="TLSSCP", contexts=[VERIFICATION, CT], ssl=ctx,
        server_hostname="localhost",
    ) as assoc:
        assert assoc.transport is not None
        assert assoc.transport.get_extra_info("ssl_object") is not None
        assert await assoc.echo() == 0
        status = await assoc.store(ct_file())
        assert status.is_success
    assert len(stored_files(tmp_path)) == 1


async def test_get_over_tls_sends_files_through_the_tls_stream(pki: PKI, tmp_path: Path) -> None:
    # A cached file is sent with sendfile on plain TCP; over TLS it must go
    # through the TLS transport (raw bytes on the socket would corrupt it).
    from aiodicom.part10 import read_part10_dataset
    from aiodicom.services.get import GetResult, ReceivedInstance, get_contexts, serve_get

    path = ct_file()
    srv = aiodicom.Server("TLSSCP", ssl=server_ssl_context(pki.server_cert, pki.server_key))
    serve_get(srv, lambda req: [path, path], models=("study",), strict=False)
    await srv.start("127.0.0.1", 0)
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = "1.2.3"
    try:
        contexts, roles = get_contexts([CT], models=("study",), extra=[VERIFICATION])
        async with aiodicom.associate(
            "127.0.0.1", srv.port, called_ae="TLSSCP", contexts=contexts, roles=roles,
            ssl=client_ssl_context(pki.ca), server_hostname="localhost",
        ) as assoc:
            got: list[bytes] = []
            result = None
            async with asyncio.timeout(DEADLINE):
                async for item in assoc.get(ds, "study"):
                    if isinstance(item, ReceivedInstance):
                        got.append(item.encoded.tobytes())
                    elif isinstance(item, GetResult):
                        result = item
            assert await assoc.echo() == 0
    finally:
        await srv.close(timeout=1.0)
    assert result is not None and result.status == 0 and result.completed == 2
    assert got == [read_part10_dataset(path)[1].tobytes()] * 2


async def test_large_store_over_tls_is_byte_identical(tls_server: aiodicom.Server, pki: PKI, tmp_path: Path) -> None:
    # Several 256 KiB P-DATA-TF PDUs through TLS: the buffered receive reads
    # large bodies in place behind the TLS layer too.
    from aiodicom.bench import synthetic_ct
    from aiodicom.dataset import EncodedDataset
    from aiodicom.part10 import read_part10_dataset

    ds = synthetic_ct(1536, "1.2.826.0.1.3680043.9.7433.99.1")
    expected = EncodedDataset.from_dataset(ds, "1.2.840.10008.1.2.1").tobytes()
    async with aiodicom.associate(
        "127.0.0.1", tls_server.port, called_ae="TLSSCP", contexts=[(CT, ["1.2.840.10008.1.2.1"])],
        ssl=client_ssl_context(pki.ca), server_hostname="localhost",
    ) as assoc:
        assert (await assoc.store(ds)).is_success
    (stored,) = stored_files(tmp_path)
    assert read_part10_dataset(stored)[1].tobytes() == expected
    assert len(expected) > 3 * 262144


async def test_plain_client_against_tls_server_fails(tls_server: aiodicom.Server) -> None:
    with pytest.raises((aiodicom.AssociationAborted, ConnectionError, TimeoutError, OSError)):
        async with aiodicom.associate("127.0.0.1", tls_server.port, acse_timeout=3.0) as assoc:
            await assoc.echo()


async def test_client_rejects_untrusted_server(tls_server: aiodicom.Server, pki: PKI) -> None:
    with pytest.raises(ssl.SSLError):
        await aiodicom.associate("127.0.0.1", tls_server.port, ssl=client_ssl_context(pki.other_ca))
    # hostname mismatch
    with pytest.raises(ssl.SSLCertVerificationError):
        await aiodicom.associate(
            "127.0.0.1", tls_server.port, ssl=client_ssl_context(pki.ca, check_hostname=True),
            server_hostname="not-the-server.example",
        )
    async with aiodicom.associate("127.0.0.1", tls_server.port, ssl=client_ssl_context(pki.ca)) as assoc:
        assert await assoc.echo() == 0


async def test_mutual_tls(mtls_server: aiodicom.Server, pki: PKI) -> None:
    good = client_ssl_context(pki.ca, pki.client_cert, pki.client_key)
    async with aiodicom.associate("127.0.0.1", mtls_server.port, ssl=good) as assoc:
        assert await assoc.echo() == 0
        peer = assoc.transport.get_extra_info("peercert") if assoc.transport else None
        assert peer is not None
    server_peers = []

    # No client certificate: the handshake (or, with TLS 1.3, the first read) fails.
    for ctx in (client_ssl_context(pki.ca), client_ssl_context(pki.ca, pki.rogue_cert, pki.rogue_key)):
        with pytest.raises((aiodicom.AssociationAborted, ssl.SSLError, ConnectionError, TimeoutError)):
            async with aiodicom.associate("127.0.0.1", mtls_server.port, ssl=ctx, acse_timeout=5.0) as assoc:
                await assoc.echo()
    # Nothing got past the TLS layer and the server still serves.
    assert mtls_server.total_associations == 1
    async with aiodicom.associate("127.0.0.1", mtls_server.port, ssl=good) as assoc:
        assert await assoc.echo() == 0
        server_peers = [a.transport.get_extra_info("peercert") for a in mtls_server.associations if a.transport]
    assert server_peers and server_peers[0]["subject"] == ((("commonName", "TESTSCU"),),)


# ------------------------------------------------------------------- DCMTK


async def run_tool(*argv: str, timeout: float = DEADLINE) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=dcmtk_env()
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


def dcmtk_with_tls(name: str) -> str:
    path = require_dcmtk(name)
    import subprocess

    helptext = subprocess.run([path, "--help"], check=False, capture_output=True, text=True, env=dcmtk_env()).stdout
    if "--enable-tls" not in helptext:
        pytest.skip(f"DCMTK {name} was built without OpenSSL (no +tls option)")
    return path


async def test_dcmtk_echoscu_mutual_tls(mtls_server: aiodicom.Server, pki: PKI) -> None:
    echoscu = dcmtk_with_tls("echoscu")
    # +tls KEY CERT: our client key/certificate; +cf: trust our CA; -aec: called AE.
    rc, out = await run_tool(
        echoscu, "-aec", "TLSSCP", "+tls", pki.client_key, pki.client_cert, "+cf", pki.ca,
        "127.0.0.1", str(mtls_server.port),
    )
    assert rc == 0, out
    # Without a client certificate (anonymous TLS) mutual TLS refuses.
    rc, out = await run_tool(echoscu, "+tla", "+cf", pki.ca, "127.0.0.1", str(mtls_server.port))
    assert rc != 0, out


async def test_dcmtk_storescu_tls(tls_server: aiodicom.Server, pki: PKI, tmp_path: Path) -> None:
    storescu = dcmtk_with_tls("storescu")
    rc, out = await run_tool(
        storescu, "-aec", "TLSSCP", "+tls", pki.client_key, pki.client_cert, "+cf", pki.ca,
        "127.0.0.1", str(tls_server.port), ct_file(),
    )
    assert rc == 0, out
    assert len(stored_files(tmp_path)) == 1
    # A server certificate our CA did not sign is refused by storescu (+cf other CA).
    rc, out = await run_tool(
        storescu, "+tls", pki.client_key, pki.client_cert, "+cf", pki.other_ca,
        "127.0.0.1", str(tls_server.port), ct_file(),
    )
    assert rc != 0, out


# -------------------------------------------------------------- pynetdicom


@pytest.fixture
def quiet_pynetdicom() -> Iterator[None]:
    logger = logging.getLogger("pynetdicom")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(old)


async def test_pynetdicom_scu_mutual_tls(mtls_server: aiodicom.Server, pki: PKI, quiet_pynetdicom: None) -> None:
    pynetdicom = pytest.importorskip("pynetdicom")

    def run() -> tuple[bool, int | None]:
        ae = pynetdicom.AE(ae_title="PYNETDICOM")
        ae.add_requested_context(VERIFICATION)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki.ca)
        ctx.load_cert_chain(pki.client_cert, pki.client_key)
        assoc = ae.associate("127.0.0.1", mtls_server.port, ae_title="TLSSCP", tls_args=(ctx, "localhost"))
        try:
            if not assoc.is_established:
                return False, None
            status = assoc.send_c_echo()
            return True, int(status.Status) if status else None
        finally:
            if assoc.is_established:
                assoc.release()
            ae.shutdown()

    established, status = await asyncio.wait_for(asyncio.to_thread(run), DEADLINE)
    assert established and status == 0


async def test_our_scu_against_pynetdicom_tls_scp(pki: PKI, quiet_pynetdicom: None) -> None:
    pynetdicom = pytest.importorskip("pynetdicom")
    ae = pynetdicom.AE(ae_title="PYSCP")
    ae.add_supported_context(VERIFICATION)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki.ca)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    port = free_port()
    scp = ae.start_server(("127.0.0.1", port), block=False, ssl_context=ctx)
    try:
        client = client_ssl_context(pki.ca, pki.client_cert, pki.client_key, check_hostname=True)
        async with aiodicom.associate(
            "127.0.0.1", port, called_ae="PYSCP", ssl=client, server_hostname="localhost"
        ) as assoc:
            assert await assoc.echo() == 0
    finally:
        await asyncio.to_thread(scp.shutdown)


# ---------------------------------------------------------------------- CLI


async def test_cli_echo_and_store_tls(mtls_server: aiodicom.Server, pki: PKI, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "aiodicom"]
    tls = ["--tls", "--tls-ca", pki.ca, "--tls-cert", pki.client_cert, "--tls-key", pki.client_key]
    rc, out = await run_tool(*base, "echo", "127.0.0.1", str(mtls_server.port), "--aec", "TLSSCP", *tls)
    assert rc == 0, out
    rc, out = await run_tool(*base, "store", "127.0.0.1", str(mtls_server.port), ct_file(), *tls)
    assert rc == 0, out
    assert len(stored_files(tmp_path)) == 1
    # --tls without a client certificate: refused by mutual TLS.
    rc, out = await run_tool(*base, "echo", "127.0.0.1", str(mtls_server.port), "--tls", "--tls-ca", pki.ca,
                             "--timeout", "5")
    assert rc != 0, out


async def test_cli_serve_tls(pki: PKI, tmp_path: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiodicom", "serve", "--port", str(port), "--storage", str(tmp_path / "archive"),
        "--tls-cert", pki.server_cert, "--tls-key", pki.server_key, "--tls-ca", pki.ca, "--no-uvloop",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(DEADLINE):
            line = await proc.stdout.readline()
            assert b"serving" in line, line
        good = client_ssl_context(pki.ca, pki.client_cert, pki.client_key)
        async with aiodicom.associate("127.0.0.1", port, contexts=[VERIFICATION, CT], ssl=good) as assoc:
            assert await assoc.echo() == 0
            assert (await assoc.store(ct_file())).is_success
        with pytest.raises((aiodicom.AssociationAborted, ssl.SSLError, ConnectionError, TimeoutError)):
            async with aiodicom.associate("127.0.0.1", port, ssl=client_ssl_context(pki.ca), acse_timeout=5) as a:
                await a.echo()
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def test_cli_serve_tls_needs_key(pki: PKI, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from aiodicom.cli import main

    rc = main(["serve", "--port", "0", "--storage", str(tmp_path / "a"), "--tls-cert", pki.server_cert])
    assert rc != 0
    assert "--tls-key" in capsys.readouterr().err

