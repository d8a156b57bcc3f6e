"""Whole lifecycles on the registry with exact payouts (dev preset: bonds 0.1/0.05/0.05 ETH, stake 1 ETH,
minority slash 10%, silent slash 5%, verifier reward 20%, committee 3, quorum 2)."""

from __future__ import annotations

import pytest

from registry.core.params import preset
from tests.conftest import inference_claim, training_claim
from tests.registry_driver import (
    CH_EXPIRED,
    CH_INVALID,
    CH_UNAVAILABLE,
    CH_VALID,
    COMMITTED,
    FINALIZED,
    INVALID,
    V_INVALID,
    V_UNAVAILABLE,
    V_VALID,
    VALID,
    Driver,
)

P = preset("dev")
E = 10**18
PROVER, CHALLENGER, SECOND_PROVER = 1, 2, 7
VERIFIERS = (3, 4, 5, 6)


def locked(d: Driver) -> int:
    """Everything the contract must still hold besides pending withdrawals, from its own views."""
    total = 0
    for claim_id in range(1, d.call("claimCount") + 1):
        info = d.claim_info(claim_id)
        if info["status"] in (COMMITTED, VALID):
            total += P.training_bond if info["kind"] == 1 else P.inference_bond
    for ch in range(1, d.call("challengeCount") + 1):
        if d.challenge_info(ch)["status"] == 1:
            total += P.challenge_bond
    for vid in range(d.call("verifierCount")):
        info = d.verifier_info(d.call("verifierAt", vid))
        if info["status"] != 0 and info["id"] == vid:
            total += info["stake"]
    return total


def assert_conserved(d: Driver) -> None:
    pending = sum(d.pending(a) for a in d.accounts)
    assert d.w3.eth.get_balance(d.reg.address) == pending + locked(d)


def scenario(d: Driver) -> tuple[int, int, list[str]]:
    for i in VERIFIERS:
        d.register(d.accounts[i])
    claim_id = d.commit(training_claim(), d.accounts[PROVER])
    ch = d.challenge(claim_id, d.accounts[CHALLENGER])
    return claim_id, ch, d.draw(ch)


def test_valid_claim_pays_prover_and_majority(d: Driver) -> None:
    claim_id, ch, committee = scenario(d)
    d.attest(ch, committee[0], V_VALID)
    d.attest(ch, committee[1], V_VALID)
    receipt = d.settle(ch, d.accounts[9])  # anyone may settle, before the deadline once quorum exists
    assert d.events("ChallengeSettled", receipt)[0].args.outcome == CH_VALID
    assert d.events("ClaimValidated", receipt)[0].args.claimId == claim_id
    assert d.claim_info(claim_id)["status"] == VALID
    assert d.pending(d.accounts[PROVER]) == P.challenge_bond * 80 // 100
    assert d.pending(d.accounts[CHALLENGER]) == 0
    for v in committee[:2]:
        assert d.stake(v) == E + P.challenge_bond * 10 // 100
    assert d.stake(committee[2]) == E  # silent, but the deadline has not passed: no slash
    assert_conserved(d)
    # the claim stands and finalizes after its window; its bond comes back
    d.chain.mine(P.challenge_window)
    d.send(d.reg.functions.finalize(claim_id), d.accounts[0])
    assert d.claim_info(claim_id)["status"] == FINALIZED
    assert d.pending(d.accounts[PROVER]) == P.challenge_bond * 80 // 100 + P.training_bond
    assert_conserved(d)


@pytest.mark.parametrize(("verdict", "outcome"), [(V_INVALID, CH_INVALID), (V_UNAVAILABLE, CH_UNAVAILABLE)])
def test_rejected_claim_slashes_prover_bond(d: Driver, verdict: int, outcome: int) -> None:
    claim_id, ch, committee = scenario(d)
    d.attest(ch, committee[2], verdict)
    d.attest(ch, committee[0], verdict)
    receipt = d.settle(ch)
    assert d.events("ChallengeSettled", receipt)[0].args.outcome == outcome
    assert d.events("ClaimRejected", receipt)[0].args.claimId == claim_id
    assert d.claim_info(claim_id)["status"] == INVALID
    assert d.pending(d.accounts[CHALLENGER]) == P.challenge_bond + P.training_bond * 80 // 100
    assert d.pending(d.accounts[PROVER]) == 0
    assert d.stake(committee[0]) == d.stake(committee[2]) == E + P.training_bond * 10 // 100
    assert d.call("ownerOf", training_claim()[3]) == "0x" + "00" * 20
    assert_conserved(d)


def test_minority_verifier_is_slashed_for_the_majority(d: Driver) -> None:
    _, ch, committee = scenario(d)
    d.attest(ch, committee[0], V_VALID)
    d.attest(ch, committee[1], V_INVALID)
    d.attest(ch, committee[2], V_VALID)
    receipt = d.settle(ch)
    slashed = E * 10 // 100
    assert d.stake(committee[1]) == E - slashed
    ev = d.events("VerifierSlashed", receipt)[0].args
    assert (ev.verifier, ev.amount) == (committee[1], slashed)
    share = (P.challenge_bond * 20 // 100 + slashed) // 2
    assert d.stake(committee[0]) == d.stake(committee[2]) == E + share
    assert d.pending(d.accounts[PROVER]) == P.challenge_bond * 80 // 100
    assert_conserved(d)


def test_expired_without_attestations_returns_bonds_and_slashes_silence(d: Driver) -> None:
    claim_id, ch, committee = scenario(d)
    d.past_deadline(ch)
    receipt = d.settle(ch)
    assert d.events("ChallengeSettled", receipt)[0].args.outcome == CH_EXPIRED
    assert all(d.stake(v) == E * 95 // 100 for v in committee)
    # the challenger gets the bond back plus what silent members lost (nobody attested to share it)
    assert d.pending(d.accounts[CHALLENGER]) == P.challenge_bond + 3 * (E * 5 // 100)
    assert d.claim_info(claim_id)["status"] == COMMITTED and d.claim_info(claim_id)["openChallenges"] == 0
    assert_conserved(d)


def test_expired_on_a_tie_rewards_attesters(d: Driver) -> None:
    _, ch, committee = scenario(d)
    d.attest(ch, committee[0], V_VALID)
    d.attest(ch, committee[1], V_INVALID)
    d.past_deadline(ch)
    d.settle(ch)
    assert d.challenge_info(ch)["status"] == CH_EXPIRED
    silent_loss = E * 5 // 100
    assert d.stake(committee[2]) == E - silent_loss
    assert d.stake(committee[0]) == d.stake(committee[1]) == E + silent_loss // 2
    assert d.pending(d.accounts[CHALLENGER]) == P.challenge_bond
    assert_conserved(d)


def test_deadline_plurality_decides(d: Driver) -> None:
    claim_id, ch, committee = scenario(d)
    d.attest(ch, committee[1], V_INVALID)
    d.past_deadline(ch)
    d.settle(ch)
    assert d.challenge_info(ch)["status"] == CH_INVALID
    assert d.claim_info(claim_id)["status"] == INVALID
    silent_loss = E * 5 // 100
    assert d.stake(committee[0]) == d.stake(committee[2]) == E - silent_loss
    assert d.stake(committee[1]) == E + P.training_bond * 20 // 100 + 2 * silent_loss
    assert_conserved(d)


def test_reseed_after_256_blocks_then_settles(d: Driver) -> None:
    for i in VERIFIERS:
        d.register(d.accounts[i])
    claim_id = d.commit(training_claim(), d.accounts[PROVER])
    ch = d.challenge(claim_id, d.accounts[CHALLENGER])
    d.to_seed(ch)
    d.chain.mine(257)
    d.send(d.reg.functions.reseed(ch), d.accounts[9])
    committee = d.draw(ch)
    assert len(committee) == 3
    for v in committee[:2]:
        d.attest(ch, v, V_VALID)
    d.settle(ch)
    assert d.claim_info(claim_id)["status"] == VALID
    assert_conserved(d)


def test_verifier_exit_lifecycle(d: Driver) -> None:
    claim_id, ch, committee = scenario(d)
    leaver = committee[0]
    d.send(d.reg.functions.requestExit(), leaver)
    d.attest(ch, leaver, V_INVALID)  # outvoted while leaving: still slashable
    d.attest(ch, committee[1], V_VALID)
    d.attest(ch, committee[2], V_VALID)
    d.settle(ch)
    assert d.stake(leaver) == E * 90 // 100
    # not drawn for new challenges while exiting (2 rounds fit in the dev challenge window)
    for _ in range(2):
        ch2 = d.challenge(claim_id, d.accounts[CHALLENGER])
        assert leaver not in d.draw(ch2)
        d.past_deadline(ch2)
        d.settle(ch2)
    d.chain.mine(P.exit_delay)
    d.send(d.reg.functions.completeExit(), leaver)
    assert d.pending(leaver) == E * 90 // 100
    d.send(d.reg.functions.withdraw(), leaver)
    assert d.pending(leaver) == 0
    assert_conserved(d)


def test_second_challenge_after_rejection_only_refunds(d: Driver) -> None:
    claim_id, ch1, committee1 = scenario(d)
    ch2 = d.challenge(claim_id, d.accounts[8])
    committee2 = d.draw(ch2)
    for v in committee1[:2]:
        d.attest(ch1, v, V_INVALID)
    for v in committee2[:2]:  # both committees commit in their commit phases
        d.attest(ch2, v, V_INVALID)
    d.settle(ch1)
    d.settle(ch2)
    assert d.pending(d.accounts[8]) == P.challenge_bond  # the prover bond was already taken by ch1
    assert d.claim_info(claim_id)["status"] == INVALID
    assert_conserved(d)


def test_valid_claim_can_still_be_rejected_in_window(d: Driver) -> None:
    claim_id, ch1, committee1 = scenario(d)
    for v in committee1[:2]:
        d.attest(ch1, v, V_VALID)
    d.settle(ch1)
    assert d.claim_info(claim_id)["status"] == VALID
    ch2 = d.challenge(claim_id, d.accounts[8], [0, 1])
    committee2 = d.draw(ch2)
    for v in committee2[:2]:
        d.attest(ch2, v, V_INVALID)
    d.settle(ch2)
    assert d.claim_info(claim_id)["status"] == INVALID
    assert_conserved(d)


def test_ownership_goes_to_earliest_claim_that_stands(d: Driver) -> None:
    weights = training_claim()[3]
    first = d.commit(training_claim(1, weights=weights), d.accounts[PROVER])
    second = d.commit(training_claim(2, weights=weights), d.accounts[SECOND_PROVER])
    third = d.commit(training_claim(3, weights=weights), d.accounts[8])
    assert d.call("ownerOf", weights) == d.accounts[PROVER] and d.call("ownerClaimOf", weights) == first
    assert d.claim_info(first)["nextSameWeights"] == second
    assert d.claim_info(second)["nextSameWeights"] == third
    for i in VERIFIERS:
        d.register(d.accounts[i])
    for claim_id in (first, second):
        ch = d.challenge(claim_id, d.accounts[CHALLENGER])
        committee = d.draw(ch)
        for v in committee[:2]:
            d.attest(ch, v, V_INVALID)
        d.settle(ch)
        expected = {first: d.accounts[SECOND_PROVER], second: d.accounts[8]}[claim_id]
        assert d.call("ownerOf", weights) == expected
    # the first prover may commit the same transcript again once its claim was rejected
    assert d.commit(training_claim(1, weights=weights), d.accounts[PROVER]) == 4
    assert d.call("ownerOf", weights) == d.accounts[8]
    assert_conserved(d)


def test_inference_claim_lifecycle(d: Driver) -> None:
    for i in VERIFIERS:
        d.register(d.accounts[i])
    model = d.commit(training_claim(), d.accounts[PROVER])
    claim_id = d.commit_inference(inference_claim(model), d.accounts[PROVER])
    ch = d.challenge(claim_id, d.accounts[CHALLENGER])
    committee = d.draw(ch)
    assert d.call("sampledSegments", ch) == []
    for v in committee[:2]:
        d.attest(ch, v, V_INVALID)
    d.settle(ch)
    assert d.claim_info(claim_id)["status"] == INVALID
    assert d.pending(d.accounts[CHALLENGER]) == P.challenge_bond + P.inference_bond * 80 // 100
    assert_conserved(d)


def test_everyone_can_withdraw_everything(d: Driver) -> None:
    """After all claims finalize and all verifiers exit, the contract holds nothing."""
    claim_id, ch, committee = scenario(d)
    d.attest(ch, committee[0], V_VALID)
    d.attest(ch, committee[1], V_INVALID)
    d.past_deadline(ch)
    d.settle(ch)
    d.chain.mine(P.challenge_window)
    d.send(d.reg.functions.finalize(claim_id), d.accounts[0])
    for i in VERIFIERS:
        d.send(d.reg.functions.requestExit(), d.accounts[i])
    d.chain.mine(P.exit_delay)
    for i in VERIFIERS:
        d.send(d.reg.functions.completeExit(), d.accounts[i])
    for a in d.accounts:
        if d.pending(a):
            d.send(d.reg.functions.withdraw(), a)
    assert d.w3.eth.get_balance(d.reg.address) == 0
