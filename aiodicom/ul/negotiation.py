"""Association negotiation (PS3.8 9.3.2-9.3.3, PS3.7 D.3.3), sans-I/O.

Acceptor side: :func:`negotiate` turns an A-ASSOCIATE-RQ and an
:class:`AcceptorPolicy` into an A-ASSOCIATE-AC or -RJ.  Requestor side:
:func:`accepted_contexts` reads the outcome of an A-ASSOCIATE-AC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from . import pdu as P

__all__ = ["AcceptedContext", "AcceptorPolicy", "negotiate", "accepted_contexts", "DEFAULT_MAX_PDU"]

DEFAULT_MAX_PDU = 262144


@dataclass(slots=True)
class AcceptedContext:
    """An accepted presentation context, with the roles negotiated for it.

    ``requestor_scu``/``requestor_scp`` are the roles of the association
    requestor (PS3.7 D.3.3.4); without role selection the requestor is SCU
    only and the acceptor SCP only.
    """

    context_id: int
    abstract_syntax: str
    transfer_syntax: str
    requestor_scu: bool = True
    requestor_scp: bool = False

    def can_send_requests(self, local_is_requestor: bool) -> bool:
        """Whether the local side may invoke operations (act as SCU) here."""
        return self.requestor_scu if local_is_requestor else self.requestor_scp

    def can_receive_requests(self, local_is_requestor: bool) -> bool:
        """Whether the local side may perform operations (act as SCP) here."""
        return self.requestor_scp if local_is_requestor else self.requestor_scu


@dataclass
class AcceptorPolicy:
    """What an acceptor accepts.

    :param ae_title: our AE title.
    :param supported: abstract syntax -> transfer syntaxes in our order of
        preference.
    :param scu_role_classes: abstract syntaxes for which we may act as SCU when
        the requestor asks for the SCP role (e.g. storage classes for C-GET).
    :param strict_called_ae: reject a called AE title other than ours.
    :param allowed_calling_aes: if set, only these calling AE titles are
        accepted.
    """

    ae_title: str = "AIODICOM"
    supported: Mapping[str, Sequence[str]] = field(default_factory=dict)
    scu_role_classes: frozenset[str] | set[str] = frozenset()
    strict_called_ae: bool = False
    allowed_calling_aes: frozenset[str] | set[str] | None = None
    max_pdu_length: int = DEFAULT_MAX_PDU
    implementation_class_uid: str = ""
    implementation_version_name: str | None = None
    # Number of operations we perform asynchronously (1 = no pipelining).
    max_operations_performed: int = 1
    # Decides the user identity; returns (accepted, server response or None).
    identity_check: Callable[[P.UserIdentityRQ], tuple[bool, bytes | None]] | None = None


def _reject(result: int, source: int, reason: int) -> P.AAssociateRJ:
    return P.AAssociateRJ(result, source, reason)


def negotiate(
    rq: P.AAssociateRQ,
    policy: AcceptorPolicy,
    identity: tuple[bool, bytes | None] | None = None,
) -> tuple[P.AAssociateAC | P.AAssociateRJ, dict[int, AcceptedContext]]:
    """Answer ``rq`` under ``policy``.

    ``identity`` is the outcome of user identity verification done by the
    caller (possibly asynchronously); when None, ``policy.identity_check`` is
    used if the request carries a user identity item.
    Returns the AC or RJ PDU and, for an AC, the accepted contexts by ID.
    """
    if rq.application_context != P.APPLICATION_CONTEXT_NAME:
        return _reject(P.RJ_RESULT_PERMANENT, P.RJ_SOURCE_USER, P.RJ_REASON_APP_CONTEXT_NOT_SUPPORTED), {}
    if policy.strict_called_ae and rq.called_ae.strip() != policy.ae_title.strip():
        return _reject(P.RJ_RESULT_PERMANENT, P.RJ_SOURCE_USER, P.RJ_REASON_CALLED_AE_NOT_RECOGNIZED), {}
    if policy.allowed_calling_aes is not None and rq.calling_ae.strip() not in policy.allowed_calling_aes:
        return _reject(P.RJ_RESULT_PERMANENT, P.RJ_SOURCE_USER, P.RJ_REASON_CALLING_AE_NOT_RECOGNIZED), {}

    user_identity_ac: P.UserIdentityAC | None = None
    uid_rq = rq.user_info.user_identity_rq
    if uid_rq is not None:
        if identity is None and policy.identity_check is not None:
            identity = policy.identity_check(uid_rq)
        if identity is not None:
            ok, response = identity
            if not ok:
                return _reject(P.RJ_RESULT_PERMANENT, P.RJ_SOURCE_USER, P.RJ_REASON_NO_REASON), {}
            if uid_rq.positive_response_requested:
                user_identity_ac = P.UserIdentityAC(response or b"")

    proposed_roles = {r.sop_class_uid: r for r in rq.user_info.role_selections}
    answered_roles: dict[str, P.RoleSelection] = {}
    results: list[P.PresentationContextAC] = []
    accepted: dict[int, AcceptedContext] = {}
    seen_ids: set[int] = set()
    for ctx in rq.presentation_contexts:
        cid = ctx.context_id
        if cid in seen_ids or not cid & 1:
            # PS3.8 9.3.2.2: IDs are odd and unique; refuse duplicates/evens.
            results.append(P.PresentationContextAC(cid, P.PCTX_NO_REASON, ctx.transfer_syntaxes[0]))
            continue
        seen_ids.add(cid)
        ours = policy.supported.get(ctx.abstract_syntax)
        if ours is None:
            results.append(P.PresentationContextAC(cid, P.PCTX_ABSTRACT_SYNTAX_NOT_SUPPORTED, ctx.transfer_syntaxes[0]))
            continue
        chosen = None
        offered = ctx.transfer_syntaxes
        for ts in ours:  # our order of preference
            if ts in offered:
                chosen = ts
                break
        if chosen is None:
            results.append(P.PresentationContextAC(cid, P.PCTX_TRANSFER_SYNTAXES_NOT_SUPPORTED, ctx.transfer_syntaxes[0]))
            continue
        scu, scp = True, False
        proposal = proposed_roles.get(ctx.abstract_syntax)
        if proposal is not None:
            # PS3.7 D.3.3.4: accept a proposed role only if we can play the
            # opposite one; never accept a role that was not proposed.
            scu = proposal.scu_role
            scp = proposal.scp_role and ctx.abstract_syntax in policy.scu_role_classes
            answered_roles[ctx.abstract_syntax] = P.RoleSelection(ctx.abstract_syntax, scu, scp)
            if not scu and not scp:
                results.append(P.PresentationContextAC(cid, P.PCTX_USER_REJECTION, ctx.transfer_syntaxes[0]))
                continue
        results.append(P.PresentationContextAC(cid, P.PCTX_ACCEPTANCE, chosen))
        accepted[cid] = AcceptedContext(cid, ctx.abstract_syntax, chosen, scu, scp)

    async_ops: tuple[int, int] | None = None
    if rq.user_info.async_ops_window is not None:
        invoked, _performed = rq.user_info.async_ops_window
        # The acceptor answers with what it will do (PS3.7 D.3.3.3).
        ours_performed = policy.max_operations_performed
        perf = ours_performed if invoked == 0 else min(invoked, ours_performed) if ours_performed else invoked
        async_ops = (1, perf)

    ui = P.UserInformation(
        max_length=policy.max_pdu_length,
        implementation_class_uid=policy.implementation_class_uid or None,
        implementation_version_name=policy.implementation_version_name,
        async_ops_window=async_ops,
        role_selections=list(answered_roles.values()),
        user_identity_ac=user_identity_ac,
    )
    ac = P.AAssociateAC(
        rq.called_ae,
        rq.calling_ae,
        results,
        ui,
        P.APPLICATION_CONTEXT_NAME,
        1,
        rq.reserved,
    )
    if not accepted:
        # PS3.8 allows an AC with every context rejected; the requestor then
        # has nothing to do, so it usually releases.  We answer AC so the
        # requestor learns the per-context reasons.
        pass
    return ac, accepted


def accepted_contexts(rq: P.AAssociateRQ, ac: P.AAssociateAC) -> dict[int, AcceptedContext]:
    """Requestor side: the usable contexts from an A-ASSOCIATE-AC."""
    proposed = {c.context_id: c for c in rq.presentation_contexts}
    rq_roles = {r.sop_class_uid: r for r in rq.user_info.role_selections}
    ac_roles = {r.sop_class_uid: r for r in ac.user_info.role_selections}
    out: dict[int, AcceptedContext] = {}
    for ctx in ac.presentation_contexts:
        if ctx.result != P.PCTX_ACCEPTANCE:
            continue
        prop = proposed.get(ctx.context_id)
        if prop is None or ctx.transfer_syntax not in prop.transfer_syntaxes:
            continue  # the peer answered something we did not propose
        scu, scp = True, False
        mine = rq_roles.get(prop.abstract_syntax)
        theirs = ac_roles.get(prop.abstract_syntax)
        if mine is not None and theirs is not None:
            scu = mine.scu_role and theirs.scu_role
            scp = mine.scp_role and theirs.scp_role
            if not scu and not scp:
                continue
        assert ctx.transfer_syntax is not None
        out[ctx.context_id] = AcceptedContext(ctx.context_id, prop.abstract_syntax, ctx.transfer_syntax, scu, scp)
    return out
