"""`verifyInferenceOnChain`: an inference claim whose vkHash is a verifier contract's code hash, verified with no
committee. A configurable mock verifier covers every branch here; tests/test_zk.py runs a real ezkl verifier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode

from registry.chain.toolchain import compile_sources, solc_path
from registry.core.hashing import keccak256
from registry.core.params import preset
from tests.conftest import CID, reverts, training_claim
from tests.registry_driver import COMMITTED, Driver

DEV = preset("dev")
PROVER, CHALLENGER = 1, 2
ACCEPT, REJECT, REVERT, WRITE = 0, 1, 2, 3
VALID, FINALIZED = 2, 4
PROOF = b"\x01" * 64
INSTANCES = [7, 8, 9]


@pytest.fixture(scope="module")
def mock_artifact() -> dict[str, Any]:
    if not solc_path().exists():
        pytest.fail("no Solidity compiler: run `make solc`")
    src = (Path(__file__).parent / "contracts" / "MockZkVerifier.sol").read_text()
    out = compile_sources({"MockZkVerifier.sol": src})["contracts"]["MockZkVerifier.sol"]["MockZkVerifier"]
    return {"abi": out["abi"], "bytecode": "0x" + out["evm"]["bytecode"]["object"]}


def _mock(d: Driver, artifact: dict[str, Any], mode: int = ACCEPT) -> Any:
    factory = d.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = d.send(factory.constructor(), d.accounts[0])
    mock = d.w3.eth.contract(address=receipt.contractAddress, abi=artifact["abi"])
    if mode != ACCEPT:
        d.send(mock.functions.setMode(mode), d.accounts[0])
    return mock


def _claim(d: Driver, verifier: Any, model_claim: int = 0, proof: bytes = PROOF,
           instances: list[int] | None = None) -> int:
    codehash = keccak256(bytes(d.w3.eth.get_code(verifier.address)))
    inst = INSTANCES if instances is None else instances
    claim = (model_claim, codehash, keccak256(proof), keccak256(encode(["uint256[]"], [inst])), CID)
    return d.commit_inference(claim, d.accounts[PROVER])


def _verify(d: Driver, claim_id: int, verifier: str, proof: bytes = PROOF, instances: list[int] | None = None) -> Any:
    inst = INSTANCES if instances is None else instances
    return d.send(d.reg.functions.verifyInferenceOnChain(claim_id, verifier, proof, inst), d.accounts[7])


def test_unlinked_claim_is_finalized_and_bond_credited(d: Driver, mock_artifact: dict[str, Any]) -> None:
    mock = _mock(d, mock_artifact)
    claim_id = _claim(d, mock)
    receipt = _verify(d, claim_id, mock.address)
    (ev,) = d.events("InferenceVerifiedOnChain", receipt)
    assert ev.args.claimId == claim_id and ev.args.verifier == mock.address and ev.args.finalized is True
    assert d.events("ClaimFinalized", receipt)[0].args.claimId == claim_id
    assert d.claim_info(claim_id)["status"] == FINALIZED
    assert d.pending(d.accounts[PROVER]) == DEV.inference_bond
    with reverts("ClaimNotFinalizable", claimId=claim_id, status=FINALIZED):
        _verify(d, claim_id, mock.address)


def test_linked_claim_becomes_valid_and_stays_challengeable(d: Driver, mock_artifact: dict[str, Any]) -> None:
    model = d.commit(training_claim(), d.accounts[PROVER])
    mock = _mock(d, mock_artifact)
    claim_id = _claim(d, mock, model_claim=model)
    assert d.claim_info(claim_id)["modelClaimId"] == model
    receipt = _verify(d, claim_id, mock.address)
    assert d.events("InferenceVerifiedOnChain", receipt)[0].args.finalized is False
    assert d.claim_info(claim_id)["status"] == VALID and d.pending(d.accounts[PROVER]) == 0
    d.challenge(claim_id, d.accounts[CHALLENGER])  # the model link can still be disputed in the window
    d.chain.mine(DEV.challenge_window + 1)
    with reverts("ChallengesStillOpen", claimId=claim_id, openChallenges=1):
        _verify(d, claim_id, mock.address)


def test_reverts(d: Driver, mock_artifact: dict[str, Any]) -> None:
    mock = _mock(d, mock_artifact)
    claim_id = _claim(d, mock)
    with reverts("UnknownClaim", claimId=99):
        _verify(d, 99, mock.address)
    training = d.commit(training_claim(), d.accounts[PROVER])
    with reverts("NotInferenceClaim", claimId=training):
        _verify(d, training, mock.address)
    # proof, instances or verifier other than the claim's
    with reverts("ProofDoesNotMatchClaim", claimId=claim_id):
        _verify(d, claim_id, mock.address, proof=b"\x02" * 64)
    with reverts("ProofDoesNotMatchClaim", claimId=claim_id):
        _verify(d, claim_id, mock.address, instances=[7, 8, 10])
    other = _mock(d, mock_artifact, REJECT)  # same code as `mock`: the code hash names code, not a deployment
    d.send(mock.functions.setMode(REJECT), d.accounts[0])
    for verifier in (mock, other):
        with reverts("ProofRejected", claimId=claim_id, verifier=verifier.address):
            _verify(d, claim_id, verifier.address)
    d.send(mock.functions.setMode(REVERT), d.accounts[0])
    with reverts("ProofRejected", claimId=claim_id):
        _verify(d, claim_id, mock.address)
    d.send(mock.functions.setMode(WRITE), d.accounts[0])  # STATICCALL: a verifier cannot change state
    with reverts("ProofRejected", claimId=claim_id):
        _verify(d, claim_id, mock.address)
    assert mock.functions.calls().call() == 0
    # an account without code is no verifier
    eoa_claim = d.commit_inference((0, keccak256(b""), keccak256(PROOF), keccak256(encode(["uint256[]"], [INSTANCES])),
                                    CID), d.accounts[PROVER])
    with reverts("ProofRejected", claimId=eoa_claim):
        _verify(d, eoa_claim, d.accounts[8])
    assert d.claim_info(claim_id)["status"] == COMMITTED
