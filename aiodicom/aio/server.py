"""Embeddable DICOM server (association acceptor)."""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl as _ssl
from typing import Awaitable, Callable, Iterable, Mapping, Sequence

from ..dimse import commands as C
from ..dimse.fragments import MAX_DATASET_IN_MEMORY, DatasetSink, Message
from ..security import NOT_AUTHORIZED, AccessPolicy, operation_name
from ..services.echo import echo_response, handle_echo
from ..uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, VERIFICATION_SOP_CLASS
from ..ul import pdu as P
from ..ul.negotiation import DEFAULT_MAX_PDU, AcceptedContext, AcceptorPolicy, negotiate
from .association import Association

__all__ = ["Server", "RequestHandler", "DEFAULT_TRANSFER_SYNTAXES"]

log = logging.getLogger("aiodicom.server")

#: A low-level request handler: answers one request message.
RequestHandler = Callable[[Association, Message], Awaitable[None]]

#: Uncompressed transfer syntaxes, in our order of preference.
DEFAULT_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
)


class Server:
    """An association acceptor serving DIMSE requests with pluggable handlers.

    :param ae_title: our AE title.
    :param contexts: abstract syntax -> transfer syntaxes we accept, in order
        of preference (default: Verification only).
    :param handlers: command field (e.g. ``C_ECHO_RQ``) -> handler.
    :param scu_role_classes: abstract syntaxes for which we accept the
        requestor acting as SCP (we act as SCU), e.g. storage classes for C-GET.
    :param strict_called_ae: reject associations that call another AE title.
    :param allowed_calling_aes: accept only these calling AE titles.
    :param max_associations: beyond this many open associations, new ones are
        rejected (transient, local limit exceeded).
    :param identity_check: decides User Identity Negotiation items (see
        :mod:`aiodicom.security`); a failure rejects the association.
    :param ssl: serve over TLS (see :func:`aiodicom.security.server_ssl_context`).
    :param access_policy: per calling AE operations
        (:class:`aiodicom.security.AccessPolicy`); denied requests are
        answered 0x0124 (Refused: not authorized).
    :param require_user_identity: reject associations without a User
        Identity item (with ``identity_check``).
    :param max_dataset_in_memory: a received data set that no service
        streams (e.g. a C-FIND identifier, a C-STORE to a plain handler) is
        spooled to an unlinked temporary file past this many bytes.
    """

    def __init__(
        self,
        ae_title: str = "AIODICOM",
        *,
        contexts: Mapping[str, Sequence[str]] | None = None,
        handlers: Mapping[int, RequestHandler] | None = None,
        scu_role_classes: Iterable[str] = (),
        strict_called_ae: bool = False,
        allowed_calling_aes: Iterable[str] | None = None,
        max_associations: int = 10000,
        max_pdu_length: int = DEFAULT_MAX_PDU,
        artim_timeout: float = 30.0,
        dimse_timeout: float | None = 60.0,
        network_timeout: float | None = None,
        identity_check: Callable[[P.UserIdentityRQ], tuple[bool, bytes | None]] | None = None,
        ssl: _ssl.SSLContext | None = None,
        access_policy: AccessPolicy | None = None,
        require_user_identity: bool = False,
        max_dataset_in_memory: int | None = MAX_DATASET_IN_MEMORY,
    ) -> None:
        P.encode_ae_title(ae_title)  # validate
        #: Received data sets (not streamed by a service) larger than this
        #: are spooled to a temporary file; ``None``: always in memory.
        self.max_dataset_in_memory = max_dataset_in_memory
        self.ae_title = ae_title
        self.contexts: dict[str, list[str]] = {
            k: list(v) for k, v in (contexts or {VERIFICATION_SOP_CLASS: DEFAULT_TRANSFER_SYNTAXES}).items()
        }
        self.handlers: dict[int, RequestHandler] = {C.C_ECHO_RQ: handle_echo}
        if handlers:
            self.handlers.update(handlers)
        #: Optional ``(assoc, context_id, command) -> DatasetSink | None``: lets a
        #: service stream incoming data sets (e.g. C-STORE to disk) instead of
        #: buffering them; see :func:`aiodicom.services.store.serve_store`.
        self._dataset_sink_factory: Callable[[Association, int, C.Command], DatasetSink | None] | None = None
        #: Per calling AE permissions (None: everything allowed).
        self.access_policy = access_policy
        self.require_user_identity = require_user_identity
        self.policy = AcceptorPolicy(
            ae_title=ae_title,
            supported=self.contexts,
            scu_role_classes=set(scu_role_classes),
            strict_called_ae=strict_called_ae,
            allowed_calling_aes=set(allowed_calling_aes) if allowed_calling_aes is not None else None,
            max_pdu_length=max_pdu_length,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version_name=IMPLEMENTATION_VERSION_NAME,
            identity_check=identity_check,
        )
        self.max_associations = max_associations
        self.max_pdu_length = max_pdu_length
        self.artim_timeout = artim_timeout
        self.dimse_timeout = dimse_timeout
        self.network_timeout = network_timeout
        self.ssl = ssl
        self.associations: set[Association] = set()
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start()
        self._idle: asyncio.Event | None = None
        self.total_associations = 0

    # ---------------------------------------------------------------- setup

    @property
    def dataset_sink_factory(self) -> Callable[[Association, int, C.Command], DatasetSink | None] | None:
        """Streams incoming data sets (set by e.g. ``serve_store``); with an
        access policy, requests the calling AE may not make are not streamed."""
        factory = self._dataset_sink_factory
        if factory is None or self.access_policy is None:
            return factory
        return functools.partial(self._guarded_sink, factory)

    @dataset_sink_factory.setter
    def dataset_sink_factory(
        self, factory: Callable[[Association, int, C.Command], DatasetSink | None] | None
    ) -> None:
        self._dataset_sink_factory = factory

    def _guarded_sink(
        self,
        factory: Callable[[Association, int, C.Command], DatasetSink | None],
        assoc: Association,
        context_id: int,
        command: C.Command,
    ) -> DatasetSink | None:
        policy = self.access_policy
        if policy is not None and not policy.allows_command(assoc.calling_ae, command.command_field):
            return None  # buffered, then refused by handle_request
        return factory(assoc, context_id, command)

    def add_context(self, abstract_syntax: str, transfer_syntaxes: Sequence[str] = DEFAULT_TRANSFER_SYNTAXES) -> None:
        """Accept ``abstract_syntax`` with ``transfer_syntaxes``."""
        self.contexts[abstract_syntax] = list(transfer_syntaxes)

    def on(self, command_field: int, handler: RequestHandler) -> None:
        """Serve requests with ``command_field`` (e.g. ``C_FIND_RQ``) with ``handler``."""
        self.handlers[command_field] = handler

    def _make_protocol(self) -> Association:
        return Association(
            requestor=False,
            server=self,
            max_pdu_length=self.max_pdu_length,
            artim_timeout=self.artim_timeout,
            dimse_timeout=self.dimse_timeout,
            network_timeout=self.network_timeout,
            loop=self._loop,  # asyncio.get_running_loop() is a getpid() syscall per call
        )

    async def start(self, host: str = "127.0.0.1", port: int = 11112, *, reuse_port: bool = False) -> None:
        """Start listening; returns once the socket is bound."""
        loop = self._loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._make_protocol,
            host,
            port,
            ssl=self.ssl,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=4096,
        )

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def sockets(self) -> tuple[object, ...]:
        """The listening sockets."""
        return tuple(self._server.sockets) if self._server else ()

    async def serve_forever(self) -> None:
        """Serve until cancelled or :meth:`close` is called."""
        assert self._server is not None
        try:
            await self._server.serve_forever()
        except asyncio.CancelledError:
            pass

    async def close(self, timeout: float = 10.0) -> None:
        """Stop accepting; let running associations finish within ``timeout``, then abort them."""
        if self._server is not None:
            self._server.close()
        if self.associations:
            waits = [asyncio.shield(a.closed) for a in self.associations]
            done, pending = await asyncio.wait(waits, timeout=timeout)
            for a in list(self.associations):
                a.abort()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(timeout=0.0 if exc[0] is not None else 10.0)

    # ---------------------------------------------------- association hooks

    def _association_opened(self, assoc: Association) -> None:
        self.associations.add(assoc)
        self.total_associations += 1

    def _association_closed(self, assoc: Association) -> None:
        self.associations.discard(assoc)

    def _negotiate(
        self, assoc: Association, rq: P.AAssociateRQ
    ) -> tuple[P.AAssociateAC, dict[int, AcceptedContext]] | P.AAssociateRJ:
        if len(self.associations) > self.max_associations:
            log.warning("association from %s rejected: limit of %d reached", rq.calling_ae, self.max_associations)
            return P.AAssociateRJ(P.RJ_RESULT_TRANSIENT, P.RJ_SOURCE_PRESENTATION, P.RJ_REASON_LOCAL_LIMIT_EXCEEDED)
        if self.require_user_identity and rq.user_info.user_identity_rq is None:
            log.info("association from %s rejected: no user identity", rq.calling_ae)
            return P.AAssociateRJ(P.RJ_RESULT_PERMANENT, P.RJ_SOURCE_USER, P.RJ_REASON_NO_REASON)
        answer, contexts = negotiate(rq, self.policy)
        if isinstance(answer, P.AAssociateRJ):
            log.info("association from %s (%s) rejected: %s", rq.calling_ae, assoc.peer_address, answer.describe())
            return answer
        log.debug("association from %s accepted with %d contexts", rq.calling_ae, len(contexts))
        return answer, contexts

    def answer_inline(self, assoc: Association, msg: Message) -> bool:
        """Answer ``msg`` on the spot when that needs no waiting; False: run :meth:`handle_request`.

        Only the built-in C-ECHO SCP (:func:`~aiodicom.services.echo.handle_echo`
        as the C-ECHO handler, the calling AE allowed to use it) is answered
        here: its response is written from the receive callback, without a
        task per request (a verification ping is the commonest request a
        server gets).  Any other request, or a C-ECHO handler of the user's,
        runs as a task through :meth:`handle_request`.  A subclass that
        overrides :meth:`handle_request` and must see every request should
        override this to return False.
        """
        cf = msg.command.command_field
        if cf != C.C_ECHO_RQ or self.handlers.get(cf) is not handle_echo:
            return False
        policy = self.access_policy
        if policy is not None and not policy.allows_command(assoc.calling_ae, cf):
            return False  # refused (and logged) by handle_request
        assoc.send_nowait(msg.context_id, echo_response(msg))
        return True

    async def handle_request(self, assoc: Association, msg: Message) -> None:
        """Dispatch one request to its handler (or refuse it)."""
        policy = self.access_policy
        if policy is not None and not policy.allows_command(assoc.calling_ae, msg.command.command_field):
            log.warning(
                "%s from %s refused: not authorized",
                operation_name(msg.command.command_field), assoc.calling_ae.strip(),
            )
            await assoc.send(msg.context_id, C.response_to(msg.command, NOT_AUTHORIZED))
            return
        handler = self.handlers.get(msg.command.command_field)
        if handler is None:
            # PS3.7 C.4.2: an operation we do not perform.
            await assoc.send(msg.context_id, C.response_to(msg.command, 0x0211))
            return
        await handler(assoc, msg)
