"""The challenge seed on a real Hardhat node, whose blocks carry a nonzero `prevrandao` (mixHash): the contract
stores the opening block's `prevrandao | 1` and its seed equals `registry.core.sampling.challenge_seed` computed
from the seed block's hash, the opening block's mixHash and the challenge id; a reseed takes the reseed
block's mixHash instead."""

from __future__ import annotations

from typing import Any

import pytest
from web3 import HTTPProvider, Web3

from registry.chain.local import deploy_registry
from registry.core.params import preset
from registry.core.sampling import challenge_seed, open_randao_of
from tests.conftest import training_claim

DEV = preset("dev")
BLOCKHASH_WINDOW = 256  # blockhash() reads only the last 256 blocks


@pytest.fixture()
def chain(hardhat_node: Any) -> Any:
    w3 = Web3(HTTPProvider(hardhat_node.url))
    snap = hardhat_node.snapshot()
    reg, _ = deploy_registry(w3, DEV, w3.eth.accounts[0])
    yield w3, reg, hardhat_node
    hardhat_node.revert(snap)


def _send(w3: Web3, fn: Any, sender: str, value: int = 0) -> Any:
    receipt = w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender, "value": value}))
    assert receipt["status"] == 1
    return receipt


def _mix_hash(w3: Web3, number: int) -> bytes:
    return bytes(w3.eth.get_block(number)["mixHash"])


def test_seed_mixes_the_opening_blocks_prevrandao(chain: Any) -> None:
    w3, reg, node = chain
    accounts = w3.eth.accounts
    for v in accounts[3:7]:
        _send(w3, reg.functions.registerVerifier(), v, DEV.verifier_stake)
    _send(w3, reg.functions.commitTraining(training_claim()), accounts[1], DEV.training_bond)
    opened = _send(w3, reg.functions.openChallenge(1, []), accounts[2], DEV.challenge_bond)
    ch = int(reg.functions.challengeCount().call())
    mix = _mix_hash(w3, opened["blockNumber"])
    assert int.from_bytes(mix, "big") > 1  # Hardhat's post-merge blocks carry a real prevrandao
    open_randao = open_randao_of(mix)
    assert reg.functions.openRandaoOf(ch).call() == open_randao
    seed_block = int(reg.functions.getChallenge(ch).call()[6])
    node.mine(max(0, seed_block - w3.eth.block_number + 1))
    expected = challenge_seed(bytes(w3.eth.get_block(seed_block)["hash"]), open_randao, ch)
    assert reg.functions.seedOf(ch).call() == expected
    drawn = _send(w3, reg.functions.drawCommittee(ch), accounts[8])
    ev = reg.events.CommitteeDrawn().process_receipt(drawn)[0].args
    assert ev.seed == expected and reg.functions.seedOf(ch).call() == expected
    # a drawing block's prevrandao is not read: the seed is the same whatever block draws (checked above: it
    # was computed before the draw), and it differs from the seed without openRandao
    assert expected != challenge_seed(bytes(w3.eth.get_block(seed_block)["hash"]), 1, ch)


def test_reseed_after_the_blockhash_window_takes_a_fresh_prevrandao(chain: Any) -> None:
    w3, reg, node = chain
    accounts = w3.eth.accounts
    for v in accounts[3:7]:
        _send(w3, reg.functions.registerVerifier(), v, DEV.verifier_stake)
    _send(w3, reg.functions.commitTraining(training_claim()), accounts[1], DEV.training_bond)
    opened = _send(w3, reg.functions.openChallenge(1, []), accounts[2], DEV.challenge_bond)
    ch = int(reg.functions.challengeCount().call())
    seed_block = int(reg.functions.getChallenge(ch).call()[6])
    node.mine(seed_block + BLOCKHASH_WINDOW + 1 - w3.eth.block_number)
    reseeded = _send(w3, reg.functions.reseed(ch), accounts[0])
    open_randao = open_randao_of(_mix_hash(w3, reseeded["blockNumber"]))
    assert open_randao != open_randao_of(_mix_hash(w3, opened["blockNumber"]))
    assert reg.functions.openRandaoOf(ch).call() == open_randao
    seed_block = int(reg.functions.getChallenge(ch).call()[6])
    node.mine(max(0, seed_block - w3.eth.block_number + 1))
    expected = challenge_seed(bytes(w3.eth.get_block(seed_block)["hash"]), open_randao, ch)
    assert reg.functions.seedOf(ch).call() == expected
