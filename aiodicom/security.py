"""Security helpers: TLS contexts, per-AE access control, user identity checks.

* :func:`server_ssl_context` / :func:`client_ssl_context` build
  :class:`ssl.SSLContext` objects for :class:`~aiodicom.Server` (``ssl=``) and
  :func:`~aiodicom.associate` (``ssl=``): TLS 1.2 or newer, forward-secret
  AEAD cipher suites only (BCP 195), optional mutual TLS.
* :class:`AccessPolicy` maps calling AE titles to the operations (``store``,
  ``find``, ``get``, ``move``, ...) they may invoke; give it to
  ``Server(access_policy=...)``.  A denied request is answered with status
  0x0124 (Refused: not authorized) and the association stays usable.
* :func:`username_identity`, :func:`password_identity`,
  :func:`token_identity` and :func:`any_identity` build ``identity_check``
  callables for ``Server(identity_check=...)`` (PS3.7 D.3.3.7 User Identity
  Negotiation); a failed check rejects the association (A-ASSOCIATE-RJ,
  permanent, service-user, no reason given).

See ``docs/security.md`` for the threat model and the ``aiodicom serve`` flags.
"""

from __future__ import annotations

import hmac
import os
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .dimse import commands as C
from .ul import pdu as P

__all__ = [
    "JWT",
    "KERBEROS",
    "NOT_AUTHORIZED",
    "OPERATIONS",
    "SAML",
    "USERNAME",
    "USERNAME_PASSCODE",
    "AccessPolicy",
    "IdentityCheck",
    "any_identity",
    "client_ssl_context",
    "load_users",
    "operation_name",
    "password_identity",
    "server_ssl_context",
    "token_identity",
    "username_identity",
]

# --------------------------------------------------------------------- TLS

#: OpenSSL cipher string for TLS 1.2: ECDHE/DHE key exchange with AEAD only
#: (BCP 195 / DICOM PS3.15 B.9).  TLS 1.3 suites are always AEAD.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS:!RC4:!3DES"


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION
    if hasattr(ssl, "OP_NO_RENEGOTIATION"):
        ctx.options |= ssl.OP_NO_RENEGOTIATION


def server_ssl_context(
    cert: str | os.PathLike[str],
    key: str | os.PathLike[str] | None = None,
    ca: str | os.PathLike[str] | None = None,
    require_client_cert: bool = False,
    *,
    key_password: str | None = None,
) -> ssl.SSLContext:
    """An SSL context for an acceptor (``Server(ssl=...)``).

    :param cert: our certificate (PEM; may also hold the key and chain).
    :param key: our private key (PEM), if not in ``cert``.
    :param ca: CA certificates (PEM file or directory) to verify client
        certificates with.
    :param require_client_cert: mutual TLS: refuse clients without a
        certificate signed by ``ca``.  With ``ca`` but without this flag a
        client certificate is requested and verified when sent.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    ctx.load_cert_chain(os.fspath(cert), os.fspath(key) if key is not None else None, password=key_password)
    if ca is not None:
        _load_ca(ctx, ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise ValueError("require_client_cert needs ca= to verify client certificates with")
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_ssl_context(
    ca: str | os.PathLike[str] | None = None,
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
    *,
    check_hostname: bool | None = None,
    verify: bool = True,
    key_password: str | None = None,
) -> ssl.SSLContext:
    """An SSL context for a requestor (``associate(..., ssl=...)``).

    :param ca: CA certificates to verify the server with; None uses the
        system trust store.
    :param cert: our certificate for mutual TLS (PEM), with ``key``.
    :param check_hostname: match the server certificate against the host
        name; default: True when ``ca`` is None (public PKI), False with a
        private ``ca`` (DICOM nodes are commonly addressed by IP and
        identified by their certificate, PS3.15 B.1).
    :param verify: False disables server certificate verification entirely
        (testing only).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        if ca is not None:
            _load_ca(ctx, ca)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        ctx.check_hostname = (ca is None) if check_hostname is None else check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
    if cert is not None:
        ctx.load_cert_chain(os.fspath(cert), os.fspath(key) if key is not None else None, password=key_password)
    elif key is not None:
        raise ValueError("key= given without cert=")
    return ctx


def _load_ca(ctx: ssl.SSLContext, ca: str | os.PathLike[str]) -> None:
    path = os.fspath(ca)
    if os.path.isdir(path):
        ctx.load_verify_locations(capath=path)
    else:
        ctx.load_verify_locations(cafile=path)


# ------------------------------------------------------------ access control

#: Status "Refused: Not authorized" (PS3.7 C.5.x, 0x0124).
NOT_AUTHORIZED = 0x0124

#: Operation names used by :class:`AccessPolicy`.
OPERATIONS: frozenset[str] = frozenset({"echo", "store", "find", "get", "move", "other"})

_OPERATION_OF: dict[int, str] = {
    C.C_ECHO_RQ: "echo",
    C.C_STORE_RQ: "store",
    C.C_FIND_RQ: "find",
    C.C_GET_RQ: "get",
    C.C_MOVE_RQ: "move",
}


def operation_name(command_field: int) -> str:
    """The :class:`AccessPolicy` operation name of a request command field."""
    return _OPERATION_OF.get(command_field, "other")


def _parse_operations(value: Any, where: str) -> frozenset[str]:
    if isinstance(value, str):
        items = [v.strip().lower() for v in value.split(",") if v.strip()]
    elif isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        items = [v.strip().lower() for v in value if v.strip()]
    else:
        raise ValueError(f"{where}: operations must be a string or a list of strings, not {value!r}")
    ops: set[str] = set()
    for item in items:
        if item in ("all", "*"):
            ops |= OPERATIONS
        elif item == "none":
            continue
        elif item in OPERATIONS:
            ops.add(item)
        else:
            raise ValueError(f"{where}: unknown operation {item!r} (use {', '.join(sorted(OPERATIONS))}, all, none)")
    return frozenset(ops)


@dataclass
class AccessPolicy:
    """Which operations each calling AE title may invoke.

    :param rules: calling AE title (as sent, trailing spaces ignored) ->
        allowed operations (names from :data:`OPERATIONS`).
    :param default: operations for AE titles not in ``rules`` (default: all).
    :param always: operations nobody is denied (default: ``echo``).

    ``AccessPolicy.parse(["MODALITY=store", "WS=find,get,move", "*=none"])``
    or :meth:`from_toml` build one from text.
    """

    rules: dict[str, frozenset[str]] = field(default_factory=dict)
    default: frozenset[str] = OPERATIONS
    always: frozenset[str] = frozenset({"echo"})

    def __post_init__(self) -> None:
        self.rules = {k.strip(): frozenset(v) for k, v in self.rules.items()}

    def operations_for(self, calling_ae: str) -> frozenset[str]:
        """The operations ``calling_ae`` may invoke."""
        return self.rules.get(calling_ae.strip(), self.default) | self.always

    def allows(self, calling_ae: str, operation: str) -> bool:
        """Whether ``calling_ae`` may invoke ``operation``."""
        return operation in self.operations_for(calling_ae)

    def allows_command(self, calling_ae: str, command_field: int) -> bool:
        """Whether ``calling_ae`` may send a request with ``command_field``."""
        return self.allows(calling_ae, operation_name(command_field))

    def update(self, entries: Mapping[str, Any], where: str = "permissions") -> None:
        """Add ``AET -> operations`` entries (``"*"`` sets the default)."""
        for aet, value in entries.items():
            ops = _parse_operations(value, f"{where}: {aet}")
            name = str(aet).strip()
            if name == "*":
                self.default = ops
            else:
                P.encode_ae_title(name)  # validate
                self.rules[name] = ops

    @classmethod
    def parse(cls, specs: Iterable[str], base: AccessPolicy | None = None) -> AccessPolicy:
        """From ``AET=op,op`` strings (``*=...`` for everybody else)."""
        policy = base if base is not None else cls()
        for spec in specs:
            aet, sep, ops = spec.partition("=")
            if not sep or not aet.strip():
                raise ValueError(f"invalid permission {spec!r}: use AET=store,find,get,move")
            policy.update({aet: ops}, "--permit")
        return policy

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "permissions") -> AccessPolicy:
        """From a mapping like the TOML file's (see :meth:`from_toml`)."""
        table = data.get("permissions", data)
        if not isinstance(table, Mapping):
            raise ValueError(f"{where}: [permissions] must be a table")  # noqa: TRY004 - a config error
        policy = cls()
        policy.update(table, where)
        return policy

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> AccessPolicy:
        """Read a TOML permissions file::

            [permissions]
            MODALITY1 = ["store"]
            WORKSTATION = "find,get,move"
            "*" = "none"          # everybody else (default: all)

        Operation names: echo (always allowed), store, find, get, move,
        other (N-services and anything else), all, none.
        """
        import tomllib

        with open(path, "rb") as fp:
            data = tomllib.load(fp)
        return cls.from_mapping(data, f"permissions file {os.fspath(path)}")


# ------------------------------------------------------------ user identity

USERNAME = 1
USERNAME_PASSCODE = 2
KERBEROS = 3
SAML = 4
JWT = 5

#: ``Server(identity_check=...)``: user identity item -> (accepted, server response or None).
IdentityCheck = Callable[[P.UserIdentityRQ], "tuple[bool, bytes | None]"]


def _decode_user(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def username_identity(users: Iterable[str]) -> IdentityCheck:
    """Accept user identity type 1 (username) for one of ``users``.

    Only an assertion of who the user is, no proof: combine with TLS client
    certificates or use :func:`password_identity`.
    """
    allowed = [u.encode("utf-8") for u in users]

    def check(rq: P.UserIdentityRQ) -> tuple[bool, bytes | None]:
        if rq.identity_type != USERNAME:
            return False, None
        ok = False
        for name in allowed:
            ok |= hmac.compare_digest(rq.primary, name)
        return ok, None

    return check


def password_identity(users: Mapping[str, str | bytes], *, accept_username_only: bool = False) -> IdentityCheck:
    """Accept user identity type 2 (username + passcode) against ``users``.

    Passcodes are compared with :func:`hmac.compare_digest` (constant time);
    an unknown user costs the same comparison as a wrong passcode.
    """
    table = {k.encode("utf-8"): (v.encode("utf-8") if isinstance(v, str) else bytes(v)) for k, v in users.items()}
    dummy = b"\x00" * 32

    def check(rq: P.UserIdentityRQ) -> tuple[bool, bytes | None]:
        if rq.identity_type == USERNAME and accept_username_only:
            return rq.primary in table, None
        if rq.identity_type != USERNAME_PASSCODE:
            return False, None
        expected = table.get(rq.primary)
        ok = hmac.compare_digest(rq.secondary, expected if expected is not None else dummy)
        return ok and expected is not None, None

    return check


def token_identity(
    verify: Callable[[bytes], bool | bytes | None],
    types: Iterable[int] = (KERBEROS, SAML, JWT),
) -> IdentityCheck:
    """Pass a Kerberos ticket, SAML assertion or JWT (types 3, 4, 5) to ``verify``.

    ``verify`` receives the raw primary field bytes and returns True/False,
    or the server response bytes (accepted; sent back when the requestor
    asked for a positive response), or None (rejected).  An exception in
    ``verify`` rejects.
    """
    accepted_types = frozenset(types)

    def check(rq: P.UserIdentityRQ) -> tuple[bool, bytes | None]:
        if rq.identity_type not in accepted_types:
            return False, None
        try:
            result = verify(bytes(rq.primary))
        except Exception:  # noqa: BLE001 - a crashing verifier rejects
            return False, None
        if isinstance(result, (bytes, bytearray)):
            return True, bytes(result)
        return bool(result), None

    return check


def any_identity(*checks: IdentityCheck) -> IdentityCheck:
    """Accept when one of ``checks`` accepts (tried in order)."""

    def check(rq: P.UserIdentityRQ) -> tuple[bool, bytes | None]:
        for c in checks:
            ok, response = c(rq)
            if ok:
                return ok, response
        return False, None

    return check


def load_users(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read ``username = "passcode"`` pairs from a TOML file's ``[users]`` table.

    Keep the file readable by the server account only.
    """
    import tomllib

    with open(path, "rb") as fp:
        data = tomllib.load(fp)
    table = data.get("users", data)
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise ValueError(f"{os.fspath(path)}: [users] must map user names to passcode strings")
    return {str(k): v for k, v in table.items()}
