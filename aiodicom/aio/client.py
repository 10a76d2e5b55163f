"""Association requestor: ``async with aiodicom.associate(host, port) as assoc``."""

from __future__ import annotations

import asyncio
import ssl as _ssl
from typing import Any, Generator, Iterable, Sequence, Union

from ..uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, VERIFICATION_SOP_CLASS
from ..ul import pdu as P
from ..ul.negotiation import DEFAULT_MAX_PDU
from .association import Association

__all__ = ["associate", "ContextSpec", "build_contexts", "DEFAULT_SCU_TRANSFER_SYNTAXES"]

#: Transfer syntaxes proposed by default for each context.
DEFAULT_SCU_TRANSFER_SYNTAXES: tuple[str, ...] = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")

#: An abstract syntax alone (default transfer syntaxes) or with its transfer syntaxes.
ContextSpec = Union[str, tuple[str, Sequence[str]], P.PresentationContextRQ]


def build_contexts(specs: Iterable[ContextSpec]) -> list[P.PresentationContextRQ]:
    """Turn context specifications into presentation context items with odd IDs."""
    out: list[P.PresentationContextRQ] = []
    cid = 1
    for spec in specs:
        if cid > 255:
            raise ValueError("at most 128 presentation contexts can be proposed")
        if isinstance(spec, P.PresentationContextRQ):
            out.append(P.PresentationContextRQ(cid, spec.abstract_syntax, list(spec.transfer_syntaxes)))
        elif isinstance(spec, str):
            out.append(P.PresentationContextRQ(cid, spec, list(DEFAULT_SCU_TRANSFER_SYNTAXES)))
        else:
            out.append(P.PresentationContextRQ(cid, spec[0], list(spec[1])))
        cid += 2
    if not out:
        raise ValueError("at least one presentation context is required")
    return out


class associate:
    """Open an association; use as ``async with`` or ``await``.

    ``async with associate(...) as assoc`` releases the association on normal
    exit and aborts it when the block raises.

    :param contexts: what to propose (default: Verification).
    :param roles: SOP class -> (scu, scp) role selection proposals (PS3.7
        D.3.3.4), e.g. ``{CTImageStorage: (False, True)}`` for C-GET.
    :param user_identity: a :class:`~aiodicom.ul.pdu.UserIdentityRQ` to send.
    :param acse_timeout: seconds to wait for the A-ASSOCIATE answer.
    :param ssl: connect over TLS (see :func:`aiodicom.security.client_ssl_context`).
    :param server_hostname: the name to check the server certificate
        against (default: ``host``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        called_ae: str = "ANY-SCP",
        calling_ae: str = "AIODICOM",
        contexts: Iterable[ContextSpec] | None = None,
        roles: dict[str, tuple[bool, bool]] | None = None,
        max_pdu_length: int = DEFAULT_MAX_PDU,
        acse_timeout: float = 30.0,
        dimse_timeout: float | None = 60.0,
        network_timeout: float | None = None,
        connect_timeout: float = 30.0,
        user_identity: P.UserIdentityRQ | None = None,
        async_ops_window: tuple[int, int] | None = None,
        extended_negotiation: Sequence[P.SOPClassExtendedNegotiation] = (),
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        ui = P.UserInformation(
            max_length=max_pdu_length,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version_name=IMPLEMENTATION_VERSION_NAME,
            async_ops_window=async_ops_window,
            role_selections=[P.RoleSelection(uid, scu, scp) for uid, (scu, scp) in (roles or {}).items()],
            extended_negotiation=list(extended_negotiation),
            user_identity_rq=user_identity,
        )
        self.request = P.AAssociateRQ(
            called_ae,
            calling_ae,
            build_contexts(contexts if contexts is not None else [VERIFICATION_SOP_CLASS]),
            ui,
        )
        P.encode_ae_title(called_ae)
        P.encode_ae_title(calling_ae)
        self.max_pdu_length = max_pdu_length
        self.acse_timeout = acse_timeout
        self.dimse_timeout = dimse_timeout
        self.network_timeout = network_timeout
        self.connect_timeout = connect_timeout
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.assoc: Association | None = None

    async def _open(self) -> Association:
        loop = asyncio.get_running_loop()
        assoc = Association(
            requestor=True,
            request=self.request,
            max_pdu_length=self.max_pdu_length,
            dimse_timeout=self.dimse_timeout,
            network_timeout=self.network_timeout,
        )
        connected = False
        try:
            # One timeout context for both phases: connect, then the ACSE answer.
            async with asyncio.timeout(self.connect_timeout) as deadline:
                await loop.create_connection(
                    lambda: assoc,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.server_hostname if self.ssl is not None else None,
                )
                connected = True
                deadline.reschedule(loop.time() + self.acse_timeout)
                await asyncio.shield(assoc.established)
        except TimeoutError:
            assoc.abort()
            if connected:
                raise TimeoutError(f"no A-ASSOCIATE answer within {self.acse_timeout} s") from None
            raise TimeoutError(f"could not connect within {self.connect_timeout} s") from None
        except BaseException:
            if assoc.transport is not None:
                assoc.transport.close()
            raise
        self.assoc = assoc
        return assoc

    def __await__(self) -> Generator[Any, None, Association]:
        return self._open().__await__()

    async def __aenter__(self) -> Association:
        return await self._open()

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        assoc = self.assoc
        if assoc is None:
            return
        if exc_type is None:
            await assoc.release()
        else:
            assoc.abort()
            await assoc.wait_closed()
