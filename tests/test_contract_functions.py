"""Every external function of ProofRegistry: its success path and every custom-error revert."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from eth_tester import EthereumTester, PyEVMBackend
from web3 import EthereumTesterProvider, Web3

from registry.chain.local import deploy_registry
from registry.chain.toolchain import compile_sources, solc_path
from registry.core.hashing import keccak256
from registry.core.params import RegistryParams, preset
from registry.core.sampling import open_randao_of
from tests.conftest import CID, inference_claim, reverts, training_claim
from tests.registry_driver import (
    ACTIVE,
    CH_OPEN,
    COMMITTED,
    EXITING,
    INVALID,
    SALT,
    V_INVALID,
    V_VALID,
    Driver,
)

DEV = preset("dev")
PROVER, CHALLENGER = 1, 2
VERIFIERS = (3, 4, 5, 6)


def setup_verifiers(d: Driver, idx: tuple[int, ...] = VERIFIERS) -> list[str]:
    vs = [d.accounts[i] for i in idx]
    for v in vs:
        d.register(v)
    return vs


def drawn_challenge(d: Driver, named: list[int] | None = None) -> tuple[int, int, list[str]]:
    setup_verifiers(d)
    claim_id = d.commit(training_claim(), d.accounts[PROVER])
    ch = d.challenge(claim_id, d.accounts[CHALLENGER], named)
    return claim_id, ch, d.draw(ch)


# --------------------------------------------------------------------------------------------------------------
# constructor and parameters
# --------------------------------------------------------------------------------------------------------------

def test_parameters_are_readable(d: Driver) -> None:
    assert RegistryParams.from_tuple(d.call("parameters")) == DEV
    assert d.call("MAX_COMMITTEE") == 8
    assert d.call("MAX_NAMED_SEGMENTS") == 8


BAD_PARAMS = [
    ("trainingBond", {"training_bond": 0}),
    ("inferenceBond", {"inference_bond": 0}),
    ("challengeBond", {"challenge_bond": 0}),
    ("verifierStake", {"verifier_stake": 0}),
    ("verifierStake", {"verifier_stake": 2**96}),
    ("challengeWindow", {"challenge_window": 0}),
    ("seedDelay", {"seed_delay": 0}),
    ("commitPeriod", {"commit_period": 0}),
    ("revealPeriod", {"reveal_period": 0}),
    ("exitDelay", {"exit_delay": 0}),
    ("exitDelay", {"exit_delay": 60}),  # must exceed commitPeriod + revealPeriod (40 + 20 in dev)
    ("committeeSize", {"committee_size": 0}),
    ("committeeSize", {"committee_size": 9, "quorum": 9}),
    ("quorum", {"quorum": 1}),
    ("quorum", {"quorum": 4}),
    ("samples", {"samples": 0}),
    ("minoritySlashBps", {"minority_slash_bps": 10_001}),
    ("silentSlashBps", {"silent_slash_bps": 10_001}),
    ("verifierRewardBps", {"verifier_reward_bps": 10_001}),
]


@pytest.mark.parametrize(("name", "overrides"), BAD_PARAMS)
def test_constructor_rejects_bad_parameters(d: Driver, name: str, overrides: dict[str, int]) -> None:
    with reverts("InvalidParameter", name=name):
        deploy_registry(d.w3, replace(DEV, **overrides), d.accounts[0])


# --------------------------------------------------------------------------------------------------------------
# commitTraining / commitInference
# --------------------------------------------------------------------------------------------------------------

def test_commit_training_stores_and_emits(d: Driver) -> None:
    claim = training_claim(1, num_segments=5, steps=7)
    receipt = d.send(d.reg.functions.commitTraining(claim), d.accounts[PROVER], DEV.training_bond)
    (ev,) = d.events("TrainingClaimCommitted", receipt)
    assert ev.args.claimId == 1 and ev.args.prover == d.accounts[PROVER]
    assert ev.args.finalWeightsHash == claim[3]
    assert tuple(ev.args.claim.values()) == claim
    info = d.claim_info(1)
    assert info["status"] == COMMITTED and info["numSegments"] == 5 and info["root"] == claim[1]
    assert info["committedAt"] == receipt.blockNumber
    assert d.call("challengeWindowEnd", 1) == receipt.blockNumber + DEV.challenge_window
    assert d.w3.eth.get_balance(d.reg.address) == DEV.training_bond


@pytest.mark.parametrize("value", [0, DEV.training_bond - 1, DEV.training_bond + 1])
def test_commit_training_wrong_bond(d: Driver, value: int) -> None:
    with reverts("WrongBond", expected=DEV.training_bond, given=value):
        d.commit(training_claim(), d.accounts[PROVER], value=value)


@pytest.mark.parametrize("field", [1, 2, 3, 5, 6, 7])
def test_commit_training_rejects_zero_fields(d: Driver, field: int) -> None:
    claim = list(training_claim())
    claim[field] = 0 if field >= 6 else b"\0" * 32
    with reverts("InvalidClaim"):
        d.commit(tuple(claim), d.accounts[PROVER])


@pytest.mark.parametrize("cid", ["", "b" * 129])
def test_commit_training_rejects_bad_cid(d: Driver, cid: str) -> None:
    with reverts("InvalidCid"):
        d.commit(training_claim(cid=cid), d.accounts[PROVER])


def test_commit_training_accepts_longest_cid(d: Driver) -> None:
    assert d.commit(training_claim(cid="b" * 128), d.accounts[PROVER]) == 1


def test_duplicate_commit_by_same_prover_reverts(d: Driver) -> None:
    d.commit(training_claim(), d.accounts[PROVER])
    with reverts("ClaimAlreadyCommitted", claimId=1):
        d.commit(training_claim(), d.accounts[PROVER])
    # someone else replaying the same transcript may commit; ownership stays with the first
    assert d.commit(training_claim(), d.accounts[7]) == 2
    assert d.call("ownerOf", training_claim()[3]) == d.accounts[PROVER]


def test_commit_inference(d: Driver) -> None:
    model = d.commit(training_claim(), d.accounts[PROVER])
    claim = inference_claim(model)
    receipt = d.send(d.reg.functions.commitInference(claim), d.accounts[PROVER], DEV.inference_bond)
    (ev,) = d.events("InferenceClaimCommitted", receipt)
    assert ev.args.modelClaimId == model and tuple(ev.args.claim.values()) == claim
    info = d.claim_info(2)
    assert info["kind"] == 2 and info["numSegments"] == 0
    assert info["root"] == keccak256(claim[1] + claim[2] + claim[3])
    assert d.commit_inference(inference_claim(0, seed=1), d.accounts[7]) == 3


def test_commit_inference_reverts(d: Driver) -> None:
    p = d.accounts[PROVER]
    with reverts("WrongBond"):
        d.send(d.reg.functions.commitInference(inference_claim()), p, DEV.training_bond)
    for field in (1, 2, 3):
        claim = list(inference_claim())
        claim[field] = b"\0" * 32
        with reverts("InvalidClaim"):
            d.commit_inference(tuple(claim), p)
    with reverts("InvalidCid"):
        d.commit_inference(inference_claim(cid=""), p)
    with reverts("UnknownModelClaim", claimId=5):
        d.commit_inference(inference_claim(5), p)
    inference_id = d.commit_inference(inference_claim(), p)
    with reverts("UnknownModelClaim", claimId=inference_id):
        d.commit_inference(inference_claim(inference_id), p)


def test_commit_inference_on_rejected_model_reverts(d: Driver) -> None:
    claim_id, ch, committee = drawn_challenge(d)
    for v in committee[:2]:
        d.attest(ch, v, V_INVALID)
    d.settle(ch)
    assert d.claim_info(claim_id)["status"] == INVALID
    with reverts("ModelClaimRejected", claimId=claim_id):
        d.commit_inference(inference_claim(claim_id), d.accounts[PROVER])


# --------------------------------------------------------------------------------------------------------------
# training-claim lineage: initWeightsHash, parentClaimId, origin
# --------------------------------------------------------------------------------------------------------------

SEED_ORIGIN, PARENT_ORIGIN, EXTERNAL_ORIGIN = 0, 1, 2


def reject(d: Driver, claim_id: int) -> None:
    """A committee rejects `claim_id` (verifiers 3-6 must be registered)."""
    ch = d.challenge(claim_id, d.accounts[CHALLENGER])
    d.vote(ch, V_INVALID)
    d.settle(ch)
    assert d.claim_info(claim_id)["status"] == INVALID


def test_commit_training_lineage_is_stored_and_emitted(d: Driver) -> None:
    parent = d.commit(training_claim(1), d.accounts[PROVER])
    claim = training_claim(2, parent=parent)
    receipt = d.send(d.reg.functions.commitTraining(claim), d.accounts[7], DEV.training_bond)
    (ev,) = d.events("TrainingClaimCommitted", receipt)
    assert tuple(ev.args.claim.values()) == claim
    child = ev.args.claimId
    info = d.claim_info(child)
    assert info["parentClaimId"] == parent and info["origin"] == PARENT_ORIGIN
    assert d.call("parentOf", child) == parent and d.call("originOf", child) == PARENT_ORIGIN
    assert d.call("parentOf", parent) == 0 and d.call("originOf", parent) == SEED_ORIGIN
    external = d.commit(training_claim(3, origin=EXTERNAL_ORIGIN), d.accounts[7])
    assert d.call("originOf", external) == EXTERNAL_ORIGIN and d.call("parentOf", external) == 0
    assert not d.call("isTainted", child) and not d.call("isTainted", parent)


@pytest.mark.parametrize(("init", "parent", "origin"), [
    (b"\0" * 32, 0, SEED_ORIGIN),  # no initWeightsHash
    (None, 0, PARENT_ORIGIN),  # origin Parent without a parent
    (None, 1, SEED_ORIGIN),  # a parent with origin Seed
    (None, 1, EXTERNAL_ORIGIN),  # a parent with origin External
])
def test_commit_training_rejects_bad_lineage(d: Driver, init: bytes | None, parent: int, origin: int) -> None:
    d.commit(training_claim(1), d.accounts[PROVER])
    with reverts("InvalidClaim"):
        d.commit(training_claim(2, init=init, parent=parent, origin=origin), d.accounts[PROVER])


def test_commit_training_unknown_parent_reverts(d: Driver) -> None:
    with reverts("UnknownParentClaim", claimId=5):
        d.commit(training_claim(2, parent=5), d.accounts[PROVER])
    inference = d.commit_inference(inference_claim(), d.accounts[PROVER])
    with reverts("UnknownParentClaim", claimId=inference):
        d.commit(training_claim(2, parent=inference), d.accounts[PROVER])
    with reverts("UnknownClaim", claimId=9):
        d.call("parentOf", 9)
    with reverts("UnknownClaim", claimId=9):
        d.call("originOf", 9)
    with reverts("UnknownClaim", claimId=9):
        d.call("isTainted", 9)


def test_rejected_ancestor_taints_descendants_and_their_ownership(d: Driver) -> None:
    setup_verifiers(d)
    root = d.commit(training_claim(1), d.accounts[PROVER])
    child = d.commit(training_claim(2, parent=root), d.accounts[7])
    grandchild = d.commit(training_claim(3, parent=child), d.accounts[8])
    # an honest re-run of the grandchild's weights from a seed, committed later
    later = d.commit(training_claim(4, weights=training_claim(3)[3]), d.accounts[9])
    assert d.call("ownerClaimOf", training_claim(3)[3]) == grandchild
    reject(d, root)
    assert d.call("isTainted", child) and d.call("isTainted", grandchild) and not d.call("isTainted", root)
    assert not d.call("isTainted", later)
    assert d.call("ownerClaimOf", training_claim(2)[3]) == 0
    assert d.call("ownerOf", training_claim(2)[3]) == "0x" + "00" * 20
    assert d.call("ownerClaimOf", training_claim(3)[3]) == later
    assert d.call("ownerOf", training_claim(3)[3]) == d.accounts[9]
    with reverts("ParentClaimRejected", claimId=root):
        d.commit(training_claim(5, parent=root), d.accounts[7])
    # a tainted (not rejected) parent may still be built on; the child is tainted too
    assert d.call("isTainted", d.commit(training_claim(6, parent=child), d.accounts[7]))


# --------------------------------------------------------------------------------------------------------------
# finalize
# --------------------------------------------------------------------------------------------------------------

def test_finalize_after_window_credits_bond(d: Driver) -> None:
    claim_id = d.commit(training_claim(), d.accounts[PROVER])
    with reverts("ChallengeWindowOpen", claimId=claim_id):
        d.send(d.reg.functions.finalize(claim_id), d.accounts[0])
    d.chain.mine(DEV.challenge_window)
    receipt = d.send(d.reg.functions.finalize(claim_id), d.accounts[0])
    assert d.events("ClaimFinalized", receipt)[0].args.claimId == claim_id
    assert d.pending(d.accounts[PROVER]) == DEV.training_bond
    with reverts("ClaimNotFinalizable", claimId=claim_id, status=4):
        d.send(d.reg.functions.finalize(claim_id), d.accounts[0])


def test_finalize_reverts(d: Driver) -> None:
    with reverts("UnknownClaim", claimId=9):
        d.send(d.reg.functions.finalize(9), d.accounts[0])
    claim_id, ch, _ = drawn_challenge(d)
    d.chain.mine(DEV.challenge_window)
    with reverts("ChallengesStillOpen", claimId=claim_id, openChallenges=1):
        d.send(d.reg.functions.finalize(claim_id), d.accounts[0])
    d.settle(ch)  # past the deadline with no verdict: Expired
    d.send(d.reg.functions.finalize(claim_id), d.accounts[0])


def test_finalize_rejected_claim_reverts(d: Driver) -> None:
    claim_id, ch, committee = drawn_challenge(d)
    for v in committee[:2]:
        d.attest(ch, v, V_INVALID)
    d.settle(ch)
    d.chain.mine(DEV.challenge_window)
    with reverts("ClaimNotFinalizable", status=INVALID):
        d.send(d.reg.functions.finalize(claim_id), d.accounts[0])


# --------------------------------------------------------------------------------------------------------------
# verifiers
# --------------------------------------------------------------------------------------------------------------

def test_register_and_stake_management(d: Driver) -> None:
    v = d.accounts[3]
    receipt = d.send(d.reg.functions.registerVerifier(), v, DEV.verifier_stake + 5)
    ev = d.events("VerifierRegistered", receipt)[0]
    assert (ev.args.verifier, ev.args.id, ev.args.stake) == (v, 0, DEV.verifier_stake + 5)
    info = d.verifier_info(v)
    assert info["status"] == ACTIVE and info["since"] == receipt.blockNumber
    assert d.call("verifierCount") == 1 and d.call("activeVerifierCount") == 1 and d.call("verifierAt", 0) == v
    d.send(d.reg.functions.increaseStake(), v, 10)
    assert d.stake(v) == DEV.verifier_stake + 15
    d.send(d.reg.functions.withdrawExcessStake(15), v)
    assert d.stake(v) == DEV.verifier_stake and d.pending(v) == 15


def test_register_reverts(d: Driver) -> None:
    v = d.accounts[3]
    with reverts("InsufficientStake", required=DEV.verifier_stake, given=DEV.verifier_stake - 1):
        d.register(v, DEV.verifier_stake - 1)
    d.register(v)
    with reverts("AlreadyRegistered", verifier=v):
        d.register(v)


def test_stake_reverts(d: Driver) -> None:
    v, stranger = d.accounts[3], d.accounts[8]
    with reverts("NotActiveVerifier", account=stranger):
        d.send(d.reg.functions.increaseStake(), stranger, 1)
    with reverts("NotActiveVerifier", account=stranger):
        d.send(d.reg.functions.withdrawExcessStake(1), stranger)
    with reverts("NotActiveVerifier", account=stranger):
        d.send(d.reg.functions.requestExit(), stranger)
    d.register(v)
    with reverts("ZeroAmount"):
        d.send(d.reg.functions.increaseStake(), v, 0)
    with reverts("ZeroAmount"):
        d.send(d.reg.functions.withdrawExcessStake(0), v)
    with reverts("InsufficientStake", required=DEV.verifier_stake, given=DEV.verifier_stake - 1):
        d.send(d.reg.functions.withdrawExcessStake(1), v)
    with reverts("InsufficientStake", given=0):
        d.send(d.reg.functions.withdrawExcessStake(DEV.verifier_stake + 1), v)


def test_stake_too_large() -> None:
    """A whale account (genesis balance above uint96) is needed to reach the uint96 stake bound."""
    state = PyEVMBackend.generate_genesis_state(overrides={"balance": 2**100}, num_accounts=2)
    w3 = Web3(EthereumTesterProvider(EthereumTester(PyEVMBackend(genesis_state=state))))
    whale = w3.eth.accounts[0]
    reg, _ = deploy_registry(w3, DEV, whale)
    with reverts("StakeTooLarge"):
        reg.functions.registerVerifier().transact({"from": whale, "value": 2**96})
    w3.eth.wait_for_transaction_receipt(
        reg.functions.registerVerifier().transact({"from": whale, "value": 2**96 - 1})
    )
    with reverts("StakeTooLarge"):
        reg.functions.increaseStake().transact({"from": whale, "value": 1})


def test_exit_flow(d: Driver) -> None:
    v = d.accounts[3]
    d.register(v)
    with reverts("NotExiting", account=v):
        d.send(d.reg.functions.completeExit(), v)
    receipt = d.send(d.reg.functions.requestExit(), v)
    exit_block = receipt.blockNumber + DEV.exit_delay
    assert d.events("VerifierExitRequested", receipt)[0].args.exitBlock == exit_block
    assert d.verifier_info(v)["status"] == EXITING and d.call("activeVerifierCount") == 0
    with reverts("NotActiveVerifier"):
        d.send(d.reg.functions.requestExit(), v)
    with reverts("ExitNotReady", exitBlock=exit_block):
        d.send(d.reg.functions.completeExit(), v)
    d.chain.mine(exit_block - d.chain.block_number - 1)  # the next tx lands in exit_block
    receipt = d.send(d.reg.functions.completeExit(), v)
    assert d.events("VerifierExited", receipt)[0].args.amount == DEV.verifier_stake
    assert d.verifier_info(v)["status"] == 0 and d.pending(v) == DEV.verifier_stake
    d.register(v)  # may come back, under a new id
    assert d.verifier_info(v)["id"] == 1


def test_exit_outlasts_every_committee_it_sits_on(d: Driver) -> None:
    """A member that asks to leave right after its draw can take its stake out only after the committee's reveal
    deadline: a silent member stays slashable until then, and for `exitDelay - commitPeriod - revealPeriod`
    blocks after it (the settlement grace); the draw itself writes nothing per member."""
    _, ch, committee = drawn_challenge(d)
    silent, leaver = committee[0], committee[1]
    receipt = d.send(d.reg.functions.requestExit(), silent)
    exit_block = receipt.blockNumber + DEV.exit_delay
    deadline = d.challenge_info(ch)["deadline"]
    assert exit_block > deadline
    d.send(d.reg.functions.requestExit(), leaver)
    d.attest(ch, leaver, V_VALID)  # an exiting member still serves on its committee
    d.attest(ch, committee[2], V_VALID)
    d.past_deadline(ch)
    with reverts("ExitNotReady", exitBlock=exit_block):  # past the deadline, still inside the grace
        d.send(d.reg.functions.completeExit(), silent)
    d.settle(ch)
    assert d.stake(silent) == DEV.verifier_stake - DEV.verifier_stake * DEV.silent_slash_bps // 10_000
    d.chain.mine(exit_block - d.chain.block_number - 1)
    d.send(d.reg.functions.completeExit(), silent)
    assert d.pending(silent) == DEV.verifier_stake * (10_000 - DEV.silent_slash_bps) // 10_000


def test_settling_after_a_member_exited_credits_its_reward(d: Driver) -> None:
    """Nobody settled inside the grace: the member that completed its exit has no stake left to slash or to
    add to, so its reward is credited to its pending balance and nothing stays in the contract."""
    _, ch, committee = drawn_challenge(d)
    leaver = committee[0]
    d.send(d.reg.functions.requestExit(), leaver)
    d.attest(ch, leaver, V_VALID)
    d.attest(ch, committee[1], V_VALID)
    d.past_deadline(ch)
    d.chain.mine(DEV.exit_delay)
    receipt = d.send(d.reg.functions.completeExit(), leaver)
    assert d.events("VerifierExited", receipt)[0].args.amount == DEV.verifier_stake
    assert d.verifier_info(leaver)["status"] == 0
    receipt = d.settle(ch)
    slashed = DEV.verifier_stake * DEV.silent_slash_bps // 10_000  # committee[2], silent
    each = (DEV.challenge_bond * DEV.verifier_reward_bps // 10_000 + slashed) // 2
    assert d.pending(leaver) == DEV.verifier_stake + each
    assert d.stake(committee[1]) == DEV.verifier_stake + each
    assert d.verifier_info(leaver)["stake"] == 0  # nothing left in the deleted record
    assert [e.args.verifier for e in d.events("VerifierRewarded", receipt)] == [committee[1]]


def test_active_list_swap_and_pop(d: Driver) -> None:
    a, b, c = setup_verifiers(d, (3, 4, 5))
    d.send(d.reg.functions.requestExit(), a)
    assert d.call("activeVerifierCount") == 2
    assert d.verifier_info(c)["activeIndex"] == 0 and d.verifier_info(b)["activeIndex"] == 1


# --------------------------------------------------------------------------------------------------------------
# openChallenge / reseed / drawCommittee
# --------------------------------------------------------------------------------------------------------------

def test_open_challenge_records_seed_block(d: Driver) -> None:
    claim_id = d.commit(training_claim(), d.accounts[PROVER])
    receipt = d.send(d.reg.functions.openChallenge(claim_id, [3, 0, 15]), d.accounts[CHALLENGER], DEV.challenge_bond)
    ev = d.events("ChallengeOpened", receipt)[0].args
    assert ev.seedBlock == receipt.blockNumber + DEV.seed_delay
    assert ev.commitDeadline == ev.seedBlock + DEV.commit_period
    assert ev.deadline == ev.commitDeadline + DEV.reveal_period
    assert list(ev.namedSegments) == [3, 0, 15]
    info = d.challenge_info(1)
    assert info["status"] == CH_OPEN and info["claimId"] == claim_id and not info["drawn"]
    assert d.call("namedSegments", 1) == [3, 0, 15]
    assert d.claim_info(claim_id)["openChallenges"] == 1


def test_open_challenge_reverts(d: Driver) -> None:
    ch_acct = d.accounts[CHALLENGER]
    with reverts("WrongBond"):
        d.send(d.reg.functions.openChallenge(1, []), ch_acct, DEV.challenge_bond - 1)
    with reverts("UnknownClaim", claimId=1):
        d.challenge(1, ch_acct)
    claim_id = d.commit(training_claim(num_segments=4), d.accounts[PROVER])
    with reverts("SelfChallenge"):
        d.challenge(claim_id, d.accounts[PROVER])
    with reverts("TooManyNamedSegments", given=9, max=8):
        d.challenge(claim_id, ch_acct, [0] * 9)
    with reverts("SegmentOutOfRange", index=4, numSegments=4):
        d.challenge(claim_id, ch_acct, [1, 4])
    inference_id = d.commit_inference(inference_claim(claim_id), d.accounts[PROVER])
    with reverts("SegmentOutOfRange", index=0, numSegments=0):
        d.challenge(inference_id, ch_acct, [0])
    d.chain.mine(DEV.challenge_window)
    with reverts("ChallengeWindowClosed", claimId=claim_id):
        d.challenge(claim_id, ch_acct)
    d.send(d.reg.functions.finalize(claim_id), d.accounts[0])
    with reverts("ClaimNotChallengeable", claimId=claim_id, status=4):
        d.challenge(claim_id, ch_acct)


@pytest.mark.slow
def test_too_many_open_challenges(d: Driver) -> None:
    """255 challenges take 255 blocks: this test uses its own registry with a window long enough."""
    params = replace(DEV, challenge_window=1000)
    reg, _ = deploy_registry(d.w3, params, d.accounts[0])
    d.chain.registry, saved = reg, d.chain.registry
    try:
        claim_id = d.commit(training_claim(), d.accounts[PROVER])
        for _ in range(255):
            d.challenge(claim_id, d.accounts[CHALLENGER])
        with reverts("TooManyOpenChallenges", claimId=claim_id):
            d.challenge(claim_id, d.accounts[CHALLENGER])
    finally:
        d.chain.registry = saved


def test_draw_committee(d: Driver) -> None:
    setup_verifiers(d)
    claim_id = d.commit(training_claim(), d.accounts[PROVER])
    ch = d.challenge(claim_id, d.accounts[CHALLENGER])
    with reverts("SeedNotReady"):
        d.send(d.reg.functions.drawCommittee(ch), d.accounts[0])
    with reverts("SeedNotReady"):
        d.call("seedOf", ch)
    with reverts("CommitteeNotDrawn", challengeId=ch):
        d.call("committee", ch)
    with reverts("CommitteeNotDrawn", challengeId=ch):
        d.call("sampledSegments", ch)
    d.to_seed(ch)
    seed = d.call("seedOf", ch)
    seed_block = d.challenge_info(ch)["seedBlock"]
    from registry.core.sampling import challenge_seed

    assert seed == challenge_seed(d.w3.eth.get_block(seed_block)["hash"], d.call("openRandaoOf", ch), ch)
    receipt = d.send(d.reg.functions.drawCommittee(ch), d.accounts[8])
    ev = d.events("CommitteeDrawn", receipt)[0].args
    committee = d.call("committee", ch)
    assert ev.seed == seed and list(ev.committee) == committee
    assert len(committee) == 3 and len(set(committee)) == 3
    assert d.call("verdicts", ch) == [0, 0, 0]
    # idempotent: a second draw changes nothing and emits nothing
    receipt = d.send(d.reg.functions.drawCommittee(ch), d.accounts[8])
    assert d.events("CommitteeDrawn", receipt) == [] and d.call("committee", ch) == committee
    # the draw overwrote openRandao with the seed: the getter says so
    with reverts("CommitteeAlreadyDrawn", challengeId=ch):
        d.call("openRandaoOf", ch)


def test_seed_expires_and_reseed(d: Driver) -> None:
    setup_verifiers(d)
    claim_id = d.commit(training_claim(), d.accounts[PROVER])
    ch = d.challenge(claim_id, d.accounts[CHALLENGER])
    with reverts("SeedStillAvailable"):
        d.send(d.reg.functions.reseed(ch), d.accounts[0])
    d.to_seed(ch)
    d.chain.mine(256)
    with reverts("SeedExpired"):
        d.send(d.reg.functions.drawCommittee(ch), d.accounts[0])
    with reverts("SeedExpired"):
        d.call("seedOf", ch)
    receipt = d.send(d.reg.functions.reseed(ch), d.accounts[0])
    ev = d.events("ChallengeReseeded", receipt)[0].args
    assert ev.seedBlock == receipt.blockNumber + DEV.seed_delay
    # the reseed's block supplies a fresh openRandao, fixed before the new seed block exists; the embedded EVM
    # executes with prevrandao 0 (eth-tester writes a random mixHash into the header only when sealing)
    assert d.call("openRandaoOf", ch) == open_randao_of(0) == 1
    assert ev.commitDeadline == ev.seedBlock + DEV.commit_period
    assert ev.deadline == ev.commitDeadline + DEV.reveal_period
    assert len(d.draw(ch)) == 3
    with reverts("CommitteeAlreadyDrawn", challengeId=ch):
        d.send(d.reg.functions.reseed(ch), d.accounts[0])


def test_challenge_lookups_revert_for_unknown_ids(d: Driver) -> None:
    for fn, args in (("drawCommittee", (7,)), ("reseed", (7,)), ("settle", (7,))):
        with reverts("UnknownChallenge", challengeId=7):
            d.send(getattr(d.reg.functions, fn)(*args), d.accounts[0])
    with reverts("UnknownChallenge", challengeId=7):
        d.send(d.reg.functions.commitVerdict(7, b"\1" * 32), d.accounts[3])
    with reverts("UnknownChallenge", challengeId=7):
        d.send(d.reg.functions.revealVerdict(7, V_VALID, b"\0" * 32, "bafy", b"\0" * 32), d.accounts[3])
    for view in ("getChallenge", "committee", "verdicts", "commitments", "namedSegments", "sampledSegments", "seedOf",
                 "openRandaoOf"):
        with reverts("UnknownChallenge", challengeId=7):
            d.call(view, 7)
    with reverts("UnknownClaim", claimId=7):
        d.call("getClaim", 7)
    with reverts("UnknownClaim", claimId=7):
        d.call("challengeWindowEnd", 7)


def test_committee_excludes_prover_challenger_and_late_verifiers(d: Driver) -> None:
    prover, challenger = d.accounts[PROVER], d.accounts[CHALLENGER]
    d.register(prover)
    d.register(challenger)
    d.register(d.accounts[3])
    claim_id = d.commit(training_claim(), prover)
    ch = d.challenge(claim_id, challenger)
    d.register(d.accounts[4])  # registered after the opening block, before the seed block: ineligible
    assert d.chain.block_number < d.challenge_info(ch)["seedBlock"]
    d.to_seed(ch)
    d.register(d.accounts[5])  # registered after the seed block: ineligible
    d.send(d.reg.functions.drawCommittee(ch), d.accounts[0])
    assert d.call("committee", ch) == [d.accounts[3]]


def test_prover_registered_after_open_is_excluded_after_a_reseed(d: Driver) -> None:
    """The draw excludes the prover by the verifier id noted at open; a prover that registers later is too new
    for that seed, and a reseed (which makes it old enough) notes its id again."""
    prover, challenger = d.accounts[PROVER], d.accounts[CHALLENGER]
    d.register(d.accounts[3])
    claim_id = d.commit(training_claim(), prover)
    ch = d.challenge(claim_id, challenger)
    d.register(prover)
    d.to_seed(ch)
    d.chain.mine(256)
    d.send(d.reg.functions.reseed(ch), d.accounts[0])
    assert d.draw(ch) == [d.accounts[3]]


def test_committee_skips_underfunded_verifiers(d: Driver) -> None:
    vs = setup_verifiers(d, (3, 4, 5, 6, 8))
    # first challenge: slash one member below the minimum stake (minority verdict)
    claim_id = d.commit(training_claim(), d.accounts[PROVER])
    ch = d.challenge(claim_id, d.accounts[CHALLENGER])
    committee = d.draw(ch)
    d.attest(ch, committee[0], V_VALID)
    d.attest(ch, committee[1], V_VALID)
    d.attest(ch, committee[2], V_INVALID)
    d.settle(ch)
    slashed = committee[2]
    assert d.stake(slashed) < DEV.verifier_stake
    for _ in range(6):
        ch = d.challenge(claim_id, d.accounts[CHALLENGER])
        assert slashed not in d.draw(ch)
    assert len(vs) == 5


def test_committee_with_no_verifiers_is_empty(d: Driver) -> None:
    claim_id = d.commit(training_claim(), d.accounts[PROVER])
    ch = d.challenge(claim_id, d.accounts[CHALLENGER])
    assert d.draw(ch) == []
    with reverts("NotSettleable"):
        d.settle(ch)
    d.past_deadline(ch)
    d.settle(ch)
    assert d.challenge_info(ch)["status"] == 5
    assert d.pending(d.accounts[CHALLENGER]) == DEV.challenge_bond


# --------------------------------------------------------------------------------------------------------------
# attest / settle
# --------------------------------------------------------------------------------------------------------------

def test_commit_then_reveal_records_verdict(d: Driver) -> None:
    _, ch, committee = drawn_challenge(d)
    commitment = d.commitment(committee[1], V_INVALID, "bafyreport1")
    receipt = d.commit_verdict(ch, committee[1], V_INVALID, report="bafyreport1")
    ev = d.events("VerdictCommitted", receipt)[0].args
    assert (ev.challengeId, ev.verifier, ev.commitment) == (ch, committee[1], commitment)
    assert d.call("commitments", ch) == [b"\0" * 32, commitment, b"\0" * 32]
    assert d.call("verdicts", ch) == [0, 0, 0]  # nothing shows before the reveal
    assert d.challenge_info(ch)["committed"] == 0b010
    # the contract and the Python mirror compute the same commitment
    assert d.call("commitmentOf", V_INVALID, keccak256(b"results"), "bafyreport1", SALT, committee[1]) == commitment
    d.to_reveal(ch)
    receipt = d.reveal(ch, committee[1], V_INVALID, report="bafyreport1")
    ev = d.events("Attested", receipt)[0].args
    assert (ev.challengeId, ev.verifier, ev.verdict, ev.reportCid) == (ch, committee[1], V_INVALID, "bafyreport1")
    assert ev.resultsHash == keccak256(b"results")
    assert d.call("verdicts", ch) == [0, V_INVALID, 0]


def test_commit_draws_lazily(d: Driver) -> None:
    setup_verifiers(d)
    claim_id = d.commit(training_claim(), d.accounts[PROVER])
    ch = d.challenge(claim_id, d.accounts[CHALLENGER])
    d.to_seed(ch)
    snap = d.chain.snapshot()
    d.send(d.reg.functions.drawCommittee(ch), d.accounts[0])
    expected = d.call("committee", ch)
    d.chain.revert(snap)
    receipt = d.commit_verdict(ch, expected[0], V_VALID)
    assert d.events("CommitteeDrawn", receipt)[0].args.committee == expected


def test_seed_mixes_block_hash_open_randao_and_challenge_id(d: Driver) -> None:
    from registry.core.sampling import challenge_seed

    setup_verifiers(d)
    claim_id = d.commit(training_claim(), d.accounts[PROVER])
    ch = d.challenge(claim_id, d.accounts[CHALLENGER])
    # the embedded EVM (py-evm under eth-tester) executes with prevrandao 0, so openRandao is 0 | 1 = 1 there;
    # the Hardhat devnet test checks a real nonzero prevrandao (tests/test_seed_hardhat.py)
    open_randao = open_randao_of(0)
    assert open_randao == 1 and d.call("openRandaoOf", ch) == open_randao
    assert d.challenge_info(ch)["seed"] == (1).to_bytes(32, "big")  # the seed slot holds openRandao until drawn
    d.to_seed(ch)
    seed_block = d.challenge_info(ch)["seedBlock"]
    block_hash = bytes(d.w3.eth.get_block(seed_block)["hash"])
    expected = challenge_seed(block_hash, open_randao, ch)
    assert d.call("seedOf", ch) == expected
    assert expected != challenge_seed(block_hash, 0, ch) and expected != challenge_seed(block_hash, 3, ch)
    assert expected == keccak256(block_hash + open_randao.to_bytes(32, "big") + ch.to_bytes(32, "big"))
    d.draw(ch)
    assert d.call("seedOf", ch) == expected and d.challenge_info(ch)["seed"] == expected
    with reverts("UnknownChallenge", challengeId=99):
        d.call("openRandaoOf", 99)


def test_reveal_opens_early_once_everyone_committed(d: Driver) -> None:
    _, ch, committee = drawn_challenge(d)
    d.commit_verdict(ch, committee[0], V_VALID)
    d.commit_verdict(ch, committee[1], V_VALID)
    with reverts("RevealNotOpen", challengeId=ch, commitDeadline=d.challenge_info(ch)["commitDeadline"]):
        d.reveal(ch, committee[0], V_VALID)
    d.commit_verdict(ch, committee[2], V_VALID)
    d.reveal(ch, committee[0], V_VALID)
    d.reveal(ch, committee[1], V_VALID)
    assert d.chain.block_number <= d.challenge_info(ch)["commitDeadline"]
    d.settle(ch)  # a revealed quorum settles before any deadline
    assert d.challenge_info(ch)["status"] == 2


def test_reveal_is_not_open_before_the_draw(d: Driver) -> None:
    setup_verifiers(d)
    claim_id = d.commit(training_claim(), d.accounts[PROVER])
    ch = d.challenge(claim_id, d.accounts[CHALLENGER])
    with reverts("RevealNotOpen", challengeId=ch):  # an empty undrawn committee must not read as "all committed"
        d.reveal(ch, d.accounts[3], V_VALID)


def test_commit_reverts(d: Driver) -> None:
    claim_id, ch, committee = drawn_challenge(d)
    outsider = next(a for a in d.accounts[3:7] if a not in committee)
    with reverts("NotCommitteeMember", challengeId=ch, account=outsider):
        d.commit_verdict(ch, outsider, V_VALID)
    with reverts("NotCommitteeMember", account=d.accounts[9]):  # never registered (id 0 must not match)
        d.commit_verdict(ch, d.accounts[9], V_VALID)
    with reverts("InvalidCommitment"):
        d.send(d.reg.functions.commitVerdict(ch, b"\0" * 32), committee[0])
    d.commit_verdict(ch, committee[0], V_VALID)
    with reverts("AlreadyCommitted", challengeId=ch, verifier=committee[0]):
        d.commit_verdict(ch, committee[0], V_INVALID)
    d.to_reveal(ch)
    with reverts("CommitPhaseOver", challengeId=ch, commitDeadline=d.challenge_info(ch)["commitDeadline"]):
        d.commit_verdict(ch, committee[1], V_VALID)
    d.reveal(ch, committee[0], V_VALID)
    d.past_deadline(ch)
    d.settle(ch)
    with reverts("ChallengeNotOpen", challengeId=ch, status=2):
        d.commit_verdict(ch, committee[1], V_VALID)
    with reverts("ChallengeNotOpen", challengeId=ch, status=2):
        d.reveal(ch, committee[1], V_VALID)
    with reverts("ChallengeNotOpen"):
        d.settle(ch)
    with reverts("ChallengeNotOpen"):
        d.send(d.reg.functions.drawCommittee(ch), d.accounts[0])
    with reverts("ChallengeNotOpen"):
        d.send(d.reg.functions.reseed(ch), d.accounts[0])
    assert d.claim_info(claim_id)["openChallenges"] == 0


def test_reveal_reverts(d: Driver) -> None:
    _, ch, committee = drawn_challenge(d)
    d.commit_verdict(ch, committee[0], V_INVALID)
    d.commit_verdict(ch, committee[1], V_VALID, salt=b"\7" * 32)
    d.to_reveal(ch)
    with reverts("NotCommitted", challengeId=ch, verifier=committee[2]):
        d.reveal(ch, committee[2], V_VALID)
    outsider = next(a for a in d.accounts[3:7] if a not in committee)
    with reverts("NotCommitteeMember", challengeId=ch, account=outsider):
        d.reveal(ch, outsider, V_VALID)
    with reverts("InvalidVerdict"):
        d.reveal(ch, committee[0], 0)
    with reverts("InvalidCid"):
        d.reveal(ch, committee[0], V_INVALID, report="")
    for verdict, report, salt in ((V_VALID, "bafyreport", SALT), (V_INVALID, "bafyother", SALT),
                                  (V_INVALID, "bafyreport", b"\1" * 32)):
        with reverts("CommitmentMismatch", challengeId=ch, verifier=committee[0]):  # any field changed
            d.reveal(ch, committee[0], verdict, report=report, salt=salt)
    d.reveal(ch, committee[0], V_INVALID)
    with reverts("AlreadyRevealed", challengeId=ch, verifier=committee[0]):
        d.reveal(ch, committee[0], V_INVALID)
    d.chain.mine(d.challenge_info(ch)["deadline"] - d.chain.block_number + 1)
    with reverts("RevealPhaseOver", challengeId=ch, deadline=d.challenge_info(ch)["deadline"]):
        d.reveal(ch, committee[1], V_VALID, salt=b"\7" * 32)
    # the unrevealed commitment counts as silence: slashed after the deadline, no verdict counted
    stake = d.stake(committee[1])
    d.settle(ch)
    assert d.stake(committee[1]) == stake - stake * DEV.silent_slash_bps // 10_000
    assert d.call("verdicts", ch) == [V_INVALID, 0, 0]


def test_copycat_cannot_reveal_anothers_commitment(d: Driver) -> None:
    """A lazy member copies an honest member's commitment; the reveal binds the revealer's address, so the copy
    opens for nobody: the copycat's reveal fails with the honest member's very arguments."""
    _, ch, committee = drawn_challenge(d)
    honest, copycat = committee[0], committee[1]
    commitment = d.commitment(honest, V_INVALID)
    d.send(d.reg.functions.commitVerdict(ch, commitment), honest)
    d.send(d.reg.functions.commitVerdict(ch, commitment), copycat)  # copied from the honest member's transaction
    d.to_reveal(ch)
    d.reveal(ch, honest, V_INVALID)  # public from here on
    with reverts("CommitmentMismatch", challengeId=ch, verifier=copycat):
        d.reveal(ch, copycat, V_INVALID)  # the honest member's verdict, results, report and salt
    assert d.call("verdicts", ch) == [V_INVALID, 0, 0]


def test_settle_before_quorum_reverts(d: Driver) -> None:
    _, ch, committee = drawn_challenge(d)
    with reverts("NotSettleable", challengeId=ch):
        d.settle(ch)
    d.attest(ch, committee[0], V_VALID)
    d.attest(ch, committee[1], V_INVALID)
    with reverts("NotSettleable"):
        d.settle(ch)


def test_sampled_segments_match_python_mirror(d: Driver) -> None:
    from registry.core.sampling import sampled_segments

    for named in ([], [5, 5, 0]):
        claim_id = d.commit(training_claim(len(named), num_segments=13), d.accounts[PROVER])
        ch = d.challenge(claim_id, d.accounts[CHALLENGER], named)
        d.draw(ch)
        seed = d.call("seedOf", ch)
        got = d.call("sampledSegments", ch)
        assert got == sampled_segments(seed, DEV.samples, 13, named)
        assert len(got) == DEV.samples + len(named)
    inference_id = d.commit_inference(inference_claim(1), d.accounts[PROVER])
    ch = d.challenge(inference_id, d.accounts[CHALLENGER])
    d.draw(ch)
    assert d.call("sampledSegments", ch) == []


# --------------------------------------------------------------------------------------------------------------
# withdraw (pull payments)
# --------------------------------------------------------------------------------------------------------------

def test_withdraw_pays_once(d: Driver) -> None:
    v = d.accounts[3]
    d.register(v)
    d.send(d.reg.functions.increaseStake(), v, 10**18)
    d.send(d.reg.functions.withdrawExcessStake(10**18), v)
    before = d.w3.eth.get_balance(v)
    receipt = d.send(d.reg.functions.withdraw(), v)
    fee = receipt.gasUsed * receipt.effectiveGasPrice
    assert d.w3.eth.get_balance(v) == before + 10**18 - fee
    assert d.events("Withdrawn", receipt)[0].args.amount == 10**18
    with reverts("NothingToWithdraw"):
        d.send(d.reg.functions.withdraw(), v)


@pytest.fixture(scope="module")
def actor_artifact() -> dict[str, Any]:
    if not solc_path().exists():
        pytest.fail("no Solidity compiler: run `make solc`")
    from pathlib import Path

    src = (Path(__file__).parent / "contracts" / "Actor.sol").read_text()
    out = compile_sources({"Actor.sol": src})["contracts"]["Actor.sol"]["Actor"]
    return {"abi": out["abi"], "bytecode": "0x" + out["evm"]["bytecode"]["object"]}


def _actor_with_balance(d: Driver, artifact: dict[str, Any]) -> Any:
    """A contract account with a pending balance: it registers as a verifier, exits and completes the exit."""
    factory = d.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = d.send(factory.constructor(), d.accounts[0])
    actor = d.w3.eth.contract(address=receipt.contractAddress, abi=artifact["abi"])

    def via(fn: Any, value: int = 0) -> Any:
        data = fn._encode_transaction_data()
        return d.send(actor.functions.forward(d.reg.address, data), d.accounts[0], value)

    via(d.reg.functions.registerVerifier(), DEV.verifier_stake)
    via(d.reg.functions.requestExit())
    d.chain.mine(DEV.exit_delay)
    via(d.reg.functions.completeExit())
    assert d.pending(actor.address) == DEV.verifier_stake
    actor.via = via
    return actor


def test_withdraw_to_rejecting_contract_keeps_the_money(d: Driver, actor_artifact: dict[str, Any]) -> None:
    actor = _actor_with_balance(d, actor_artifact)
    d.send(actor.functions.setMode(1, d.reg.address), d.accounts[0])
    with reverts("TransferFailed"):
        actor.via(d.reg.functions.withdraw())
    assert d.pending(actor.address) == DEV.verifier_stake
    d.send(actor.functions.setMode(0, d.reg.address), d.accounts[0])
    actor.via(d.reg.functions.withdraw())
    assert d.w3.eth.get_balance(actor.address) == DEV.verifier_stake
    assert d.w3.eth.get_balance(d.reg.address) == 0


def test_withdraw_is_not_reentrant(d: Driver, actor_artifact: dict[str, Any]) -> None:
    actor = _actor_with_balance(d, actor_artifact)
    d.send(actor.functions.setMode(2, d.reg.address), d.accounts[0])
    actor.via(d.reg.functions.withdraw())
    assert actor.functions.reentryAttempts().call() == 1
    assert actor.functions.reentrySucceeded().call() is False
    assert d.w3.eth.get_balance(actor.address) == DEV.verifier_stake
    assert d.pending(actor.address) == 0


# --------------------------------------------------------------------------------------------------------------
# ownership, leaves
# --------------------------------------------------------------------------------------------------------------

def test_owner_of_unknown_weights(d: Driver) -> None:
    assert d.call("ownerOf", keccak256(b"nothing")) == "0x" + "00" * 20
    assert d.call("ownerClaimOf", keccak256(b"nothing")) == 0


def test_verify_segment_on_inference_claim_reverts(d: Driver) -> None:
    inference_id = d.commit_inference(inference_claim(), d.accounts[PROVER])
    with reverts("UnknownClaim", claimId=inference_id):
        d.call("verifySegment", inference_id, 0, b"\0" * 32, b"\0" * 32, b"\0" * 32, [])


def test_cid_constant_fits_real_cids(d: Driver) -> None:
    assert len(CID) < d.call("MAX_CID_LENGTH")
