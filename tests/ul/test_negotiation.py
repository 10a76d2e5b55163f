"""Association negotiation, acceptor side (``negotiate``) and requestor side
(``accepted_contexts``); pure, no I/O.

Expected values come from the facts sheet: presentation context results
(section 1.2), A-ASSOCIATE-RJ codes (1.3) and role selection outcomes (6).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from aiodicom.ul import pdu as P
from aiodicom.ul.negotiation import (
    AcceptedContext,
    AcceptorPolicy,
    accepted_contexts,
    negotiate,
)

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"

IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
BIG = "1.2.840.10008.1.2.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
J2K = "1.2.840.10008.1.2.4.91"

IMPL_UID = "1.2.826.0.1.3680043.9.9999.1"


def policy(**kw: object) -> AcceptorPolicy:
    base: dict[str, object] = {
        "ae_title": "ARCHIVE",
        "supported": {
            VERIFICATION: [EXPLICIT, IMPLICIT],
            CT: [IMPLICIT, EXPLICIT],  # note: implicit preferred here
            MR: [EXPLICIT, IMPLICIT],
            SC: [JPEG_BASELINE, EXPLICIT],
        },
        "scu_role_classes": {CT},
        "max_pdu_length": 32768,
        "implementation_class_uid": IMPL_UID,
        "implementation_version_name": "TEST_01",
    }
    base.update(kw)
    return AcceptorPolicy(**base)  # type: ignore[arg-type]


def rq(
    contexts: Sequence[tuple[str, Sequence[str]]] = ((VERIFICATION, (IMPLICIT,)),),
    *,
    roles: Sequence[tuple[str, bool, bool]] = (),
    called: str = "ARCHIVE",
    calling: str = "MODALITY",
    identity: P.UserIdentityRQ | None = None,
    async_ops: tuple[int, int] | None = None,
    app_context: str = P.APPLICATION_CONTEXT_NAME,
) -> P.AAssociateRQ:
    pcs = [P.PresentationContextRQ(1 + 2 * i, a, list(ts)) for i, (a, ts) in enumerate(contexts)]
    ui = P.UserInformation(
        max_length=16382,
        implementation_class_uid="1.2.3.4",
        async_ops_window=async_ops,
        role_selections=[P.RoleSelection(uid, scu, scp) for uid, scu, scp in roles],
        user_identity_rq=identity,
    )
    return P.AAssociateRQ(called, calling, pcs, ui, app_context, 1, bytes(range(32)))


def roundtrip_ac(ac: P.AAssociateAC) -> P.AAssociateAC:
    """Encode and decode the AC, so the tests check what goes on the wire."""
    raw = ac.encode()
    assert raw[0] == P.A_ASSOCIATE_AC
    decoded = P.decode_pdu(raw[0], raw[6:])
    assert isinstance(decoded, P.AAssociateAC)
    return decoded


def accept(request: P.AAssociateRQ, pol: AcceptorPolicy | None = None) -> tuple[P.AAssociateAC, dict[int, AcceptedContext]]:
    answer, contexts = negotiate(request, pol or policy())
    assert isinstance(answer, P.AAssociateAC), f"expected an AC, got {answer!r}"
    return roundtrip_ac(answer), contexts


def reject(request: P.AAssociateRQ, pol: AcceptorPolicy | None = None) -> P.AAssociateRJ:
    answer, contexts = negotiate(request, pol or policy())
    assert isinstance(answer, P.AAssociateRJ), f"expected an RJ, got {answer!r}"
    assert contexts == {}
    return answer


def results(ac: P.AAssociateAC) -> dict[int, tuple[int, str | None]]:
    return {c.context_id: (c.result, c.transfer_syntax) for c in ac.presentation_contexts}


def role_items(ac: P.AAssociateAC) -> dict[str, tuple[bool, bool]]:
    return {r.sop_class_uid: (r.scu_role, r.scp_role) for r in ac.user_info.role_selections}


# --------------------------------------------------------------------------
# presentation contexts


def test_transfer_syntax_chosen_in_acceptor_order() -> None:
    # The requestor lists implicit first, we prefer explicit for Verification;
    # for CT the requestor lists explicit first and we prefer implicit.
    ac, ctxs = accept(
        rq([(VERIFICATION, (IMPLICIT, EXPLICIT)), (CT, (EXPLICIT, BIG, IMPLICIT)), (MR, (BIG, IMPLICIT))])
    )
    assert results(ac) == {1: (0, EXPLICIT), 3: (0, IMPLICIT), 5: (0, IMPLICIT)}
    assert {cid: (c.abstract_syntax, c.transfer_syntax) for cid, c in ctxs.items()} == {
        1: (VERIFICATION, EXPLICIT),
        3: (CT, IMPLICIT),
        5: (MR, IMPLICIT),
    }


def test_one_abstract_syntax_proposed_with_two_contexts_each_answered() -> None:
    ac, ctxs = accept(rq([(SC, (EXPLICIT,)), (SC, (JPEG_BASELINE,))]))
    assert results(ac) == {1: (0, EXPLICIT), 3: (0, JPEG_BASELINE)}
    assert set(ctxs) == {1, 3}


def test_abstract_syntax_not_supported() -> None:
    ac, ctxs = accept(rq([(FIND, (IMPLICIT,)), (VERIFICATION, (IMPLICIT,))]))
    assert results(ac)[1][0] == P.PCTX_ABSTRACT_SYNTAX_NOT_SUPPORTED == 3
    assert results(ac)[3] == (0, IMPLICIT)
    assert set(ctxs) == {3}


def test_transfer_syntaxes_not_supported() -> None:
    ac, ctxs = accept(rq([(VERIFICATION, (J2K, BIG)), (CT, (IMPLICIT,))]))
    assert results(ac)[1][0] == P.PCTX_TRANSFER_SYNTAXES_NOT_SUPPORTED == 4
    assert results(ac)[3] == (0, IMPLICIT)
    assert list(ctxs) == [3]


def test_nothing_accepted_is_still_an_ac_with_reasons() -> None:
    ac, ctxs = accept(rq([(FIND, (IMPLICIT,)), (VERIFICATION, (J2K,))]))
    assert ctxs == {}
    assert [c.result for c in ac.presentation_contexts] == [3, 4]


def test_duplicate_context_id_is_not_accepted_twice() -> None:
    request = rq([(VERIFICATION, (IMPLICIT,))])
    request.presentation_contexts.append(P.PresentationContextRQ(1, CT, [IMPLICIT]))
    answer, ctxs = negotiate(request, policy())
    assert isinstance(answer, P.AAssociateAC)
    assert list(ctxs) == [1]
    assert ctxs[1].abstract_syntax == VERIFICATION
    assert [c.result for c in answer.presentation_contexts] == [0, P.PCTX_NO_REASON]


def test_default_roles_without_role_selection() -> None:
    ac, ctxs = accept(rq([(CT, (IMPLICIT,))]))
    ctx = ctxs[1]
    assert (ctx.requestor_scu, ctx.requestor_scp) == (True, False)
    # no item in the RQ -> the AC must omit it (PS3.7 D.3.3.4)
    assert ac.user_info.role_selections == []
    assert ctx.can_send_requests(local_is_requestor=True)
    assert not ctx.can_receive_requests(local_is_requestor=True)
    assert ctx.can_receive_requests(local_is_requestor=False)
    assert not ctx.can_send_requests(local_is_requestor=False)


# --------------------------------------------------------------------------
# role selection (facts sheet section 6)


def test_role_scp_only_for_class_we_can_be_scu_for() -> None:
    ac, ctxs = accept(rq([(CT, (IMPLICIT,))], roles=[(CT, False, True)]))
    assert results(ac)[1] == (0, IMPLICIT)
    assert role_items(ac) == {CT: (False, True)}
    ctx = ctxs[1]
    assert (ctx.requestor_scu, ctx.requestor_scp) == (False, True)
    # the acceptor may now send C-STORE requests, the requestor may not
    assert ctx.can_send_requests(local_is_requestor=False)
    assert not ctx.can_send_requests(local_is_requestor=True)


def test_role_scp_only_for_class_we_cannot_be_scu_for_rejects_the_context() -> None:
    # (0,1) -> we may not accept SCP (we can't be SCU for MR) -> (0,0): unusable
    ac, ctxs = accept(rq([(MR, (IMPLICIT,)), (VERIFICATION, (IMPLICIT,))], roles=[(MR, False, True)]))
    assert results(ac)[1][0] != P.PCTX_ACCEPTANCE
    assert 1 not in ctxs
    assert results(ac)[3] == (0, IMPLICIT)
    # if an answer item is sent at all, it accepts no role
    assert role_items(ac).get(MR, (False, False)) == (False, False)


def test_role_both_proposed_reduced_to_scu_when_we_cannot_be_scu() -> None:
    ac, ctxs = accept(rq([(MR, (IMPLICIT,))], roles=[(MR, True, True)]))
    assert results(ac)[1] == (0, IMPLICIT)
    assert role_items(ac) == {MR: (True, False)}
    assert (ctxs[1].requestor_scu, ctxs[1].requestor_scp) == (True, False)


def test_role_both_proposed_both_accepted_when_we_can_be_scu() -> None:
    ac, ctxs = accept(rq([(CT, (IMPLICIT,))], roles=[(CT, True, True)]))
    assert role_items(ac) == {CT: (True, True)}
    assert (ctxs[1].requestor_scu, ctxs[1].requestor_scp) == (True, True)


def test_role_scu_only_proposed_never_answered_with_scp() -> None:
    # we could be SCU for CT, but the requestor did not offer SCP
    ac, ctxs = accept(rq([(CT, (IMPLICIT,))], roles=[(CT, True, False)]))
    assert role_items(ac) == {CT: (True, False)}
    assert (ctxs[1].requestor_scu, ctxs[1].requestor_scp) == (True, False)


def test_role_item_only_for_proposed_classes() -> None:
    ac, _ = accept(rq([(CT, (IMPLICIT,)), (MR, (IMPLICIT,))], roles=[(CT, False, True)]))
    assert set(role_items(ac)) == {CT}


# --------------------------------------------------------------------------
# rejections


def test_strict_called_ae_rejects_other_called_ae() -> None:
    rj = reject(rq(called="SOMEONE"), policy(strict_called_ae=True))
    assert (rj.result, rj.source, rj.reason) == (1, 1, 7)


def test_strict_called_ae_accepts_our_title() -> None:
    accept(rq(called="ARCHIVE"), policy(strict_called_ae=True))


def test_lenient_called_ae_accepts_any_title() -> None:
    accept(rq(called="SOMEONE"), policy(strict_called_ae=False))


def test_calling_ae_not_in_allow_list() -> None:
    pol = policy(allowed_calling_aes={"CT01", "MR01"})
    rj = reject(rq(calling="INTRUDER"), pol)
    assert (rj.result, rj.source, rj.reason) == (1, 1, 3)
    accept(rq(calling="MR01"), pol)


def test_wrong_application_context() -> None:
    rj = reject(rq(app_context="1.2.840.10008.3.1.1.2"))
    assert (rj.result, rj.source, rj.reason) == (1, 1, 2)


def test_rejection_encodes_as_rj_pdu() -> None:
    rj = reject(rq(called="X"), policy(strict_called_ae=True))
    assert rj.encode() == b"\x03\x00\x00\x00\x00\x04\x00\x01\x01\x07"


# --------------------------------------------------------------------------
# user identity


def test_identity_check_refusal_rejects() -> None:
    seen: list[P.UserIdentityRQ] = []

    def check(item: P.UserIdentityRQ) -> tuple[bool, bytes | None]:
        seen.append(item)
        return False, None

    identity = P.UserIdentityRQ(P.USER_IDENTITY_USERNAME_PASSCODE, b"alice", b"wrong", True)
    rj = reject(rq(identity=identity), policy(identity_check=check))
    assert rj.result == P.RJ_RESULT_PERMANENT
    assert seen == [identity]


def test_identity_accepted_with_positive_response() -> None:
    def check(item: P.UserIdentityRQ) -> tuple[bool, bytes | None]:
        assert (item.primary, item.secondary) == (b"alice", b"secret")
        return True, b"tok"

    identity = P.UserIdentityRQ(P.USER_IDENTITY_USERNAME_PASSCODE, b"alice", b"secret", True)
    ac, ctxs = accept(rq(identity=identity), policy(identity_check=check))
    assert ac.user_info.user_identity_ac == P.UserIdentityAC(b"tok")
    assert ac.user_info.user_identity_rq is None
    assert list(ctxs) == [1]


def test_identity_accepted_without_positive_response_requested() -> None:
    identity = P.UserIdentityRQ(P.USER_IDENTITY_USERNAME, b"alice", b"", False)
    ac, _ = accept(rq(identity=identity), policy(identity_check=lambda item: (True, b"tok")))
    assert ac.user_info.user_identity_ac is None


def test_identity_outcome_given_by_caller_overrides_policy() -> None:
    identity = P.UserIdentityRQ(P.USER_IDENTITY_JWT, b"jwt", b"", True)
    called: list[object] = []

    def check(item: P.UserIdentityRQ) -> tuple[bool, bytes | None]:
        called.append(item)
        return True, None

    answer, _ = negotiate(rq(identity=identity), policy(identity_check=check), identity=(False, None))
    assert isinstance(answer, P.AAssociateRJ)
    assert called == []


def test_identity_item_without_identity_check_is_ignored() -> None:
    identity = P.UserIdentityRQ(P.USER_IDENTITY_USERNAME, b"alice", b"", True)
    ac, ctxs = accept(rq(identity=identity), policy(identity_check=None))
    assert ac.user_info.user_identity_ac is None
    assert list(ctxs) == [1]


# --------------------------------------------------------------------------
# user information in the AC


def test_async_ops_window_answered() -> None:
    ac, _ = accept(rq(async_ops=(5, 5)), policy(max_operations_performed=3))
    assert ac.user_info.async_ops_window == (1, 3)
    ac, _ = accept(rq(async_ops=(2, 1)), policy(max_operations_performed=3))
    invoked, performed = ac.user_info.async_ops_window or (None, None)
    # never perform more than the requestor will invoke
    assert performed == 2
    assert invoked == 1


def test_async_ops_window_absent_when_not_proposed() -> None:
    ac, _ = accept(rq(async_ops=None), policy(max_operations_performed=3))
    assert ac.user_info.async_ops_window is None


def test_ac_carries_max_length_and_implementation_uid() -> None:
    ac, _ = accept(rq())
    assert ac.user_info.max_length == 32768
    assert ac.user_info.implementation_class_uid == IMPL_UID
    assert ac.user_info.implementation_version_name == "TEST_01"


def test_ac_echoes_titles_and_reserved_bytes() -> None:
    request = rq(called="ARCHIVE", calling="MODALITY")
    ac, _ = accept(request)
    assert (ac.called_ae, ac.calling_ae) == ("ARCHIVE", "MODALITY")
    assert ac.reserved == bytes(range(32))
    assert ac.application_context == P.APPLICATION_CONTEXT_NAME


# --------------------------------------------------------------------------
# requestor side


def ac_for(
    request: P.AAssociateRQ,
    answers: Sequence[tuple[int, int, str | None]],
    roles: Sequence[tuple[str, bool, bool]] = (),
) -> P.AAssociateAC:
    ui = P.UserInformation(
        max_length=16384,
        implementation_class_uid="1.2.3",
        role_selections=[P.RoleSelection(u, a, b) for u, a, b in roles],
    )
    ac = P.AAssociateAC(
        request.called_ae,
        request.calling_ae,
        [P.PresentationContextAC(cid, result, ts) for cid, result, ts in answers],
        ui,
    )
    return roundtrip_ac(ac)


def test_requestor_accepted_contexts_basic() -> None:
    request = rq([(VERIFICATION, (EXPLICIT, IMPLICIT)), (CT, (IMPLICIT,)), (MR, (IMPLICIT,))])
    out = accepted_contexts(request, ac_for(request, [(1, 0, IMPLICIT), (3, 3, None), (5, 4, None)]))
    assert list(out) == [1]
    assert (out[1].abstract_syntax, out[1].transfer_syntax) == (VERIFICATION, IMPLICIT)
    assert (out[1].requestor_scu, out[1].requestor_scp) == (True, False)


def test_requestor_ignores_transfer_syntax_it_did_not_propose() -> None:
    request = rq([(VERIFICATION, (EXPLICIT,)), (CT, (IMPLICIT,))])
    out = accepted_contexts(request, ac_for(request, [(1, 0, IMPLICIT), (3, 0, IMPLICIT)]))
    assert list(out) == [3]


def test_requestor_ignores_context_id_it_did_not_propose() -> None:
    request = rq([(VERIFICATION, (IMPLICIT,))])
    out = accepted_contexts(request, ac_for(request, [(1, 0, IMPLICIT), (7, 0, IMPLICIT)]))
    assert list(out) == [1]


@pytest.mark.parametrize(
    ("proposed", "answered", "expected"),
    [
        ((True, True), (True, True), (True, True)),
        ((True, True), (True, False), (True, False)),
        ((True, True), (False, True), (False, True)),
        ((False, True), (False, True), (False, True)),
        ((True, False), (True, False), (True, False)),
        # answers for roles we did not propose are ignored
        ((True, False), (True, True), (True, False)),
        ((False, True), (True, True), (False, True)),
        # (0,0): unusable
        ((True, True), (False, False), None),
        ((False, True), (False, False), None),
        # proposed SCP only, peer answered SCU only: nothing we both agree on
        ((False, True), (True, False), None),
    ],
)
def test_requestor_role_combination(
    proposed: tuple[bool, bool], answered: tuple[bool, bool], expected: tuple[bool, bool] | None
) -> None:
    request = rq([(CT, (IMPLICIT,))], roles=[(CT, *proposed)])
    out = accepted_contexts(request, ac_for(request, [(1, 0, IMPLICIT)], roles=[(CT, *answered)]))
    if expected is None:
        assert out == {}
    else:
        assert (out[1].requestor_scu, out[1].requestor_scp) == expected


def test_requestor_role_item_not_echoed_gives_defaults() -> None:
    request = rq([(CT, (IMPLICIT,))], roles=[(CT, False, True)])
    out = accepted_contexts(request, ac_for(request, [(1, 0, IMPLICIT)]))
    assert (out[1].requestor_scu, out[1].requestor_scp) == (True, False)


def test_requestor_unsolicited_role_item_ignored() -> None:
    request = rq([(CT, (IMPLICIT,))])
    out = accepted_contexts(request, ac_for(request, [(1, 0, IMPLICIT)], roles=[(CT, False, True)]))
    assert (out[1].requestor_scu, out[1].requestor_scp) == (True, False)


def test_negotiate_then_accepted_contexts_agree() -> None:
    request = rq(
        [(VERIFICATION, (IMPLICIT, EXPLICIT)), (CT, (EXPLICIT, IMPLICIT)), (MR, (IMPLICIT,)), (FIND, (IMPLICIT,))],
        roles=[(CT, False, True), (MR, True, True)],
    )
    ac, acceptor_view = accept(request)
    requestor_view = accepted_contexts(request, ac)
    assert requestor_view == acceptor_view
    assert set(requestor_view) == {1, 3, 5}
