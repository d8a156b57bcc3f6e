"""Contract tests through ape's pytest plugin, in the same `pytest` session as everything else.

eth-ape registers its plugin as a `pytest11` entry point (`ape_test = ape.pytest.plugin`), so plain `pytest`
loads it: it connects ape's default network from ape-config.yaml (ethereum:local:test, in-process) once
tests are collected, gives the fixtures `project`, `accounts`, `chain`, `networks`, and snapshots/restores
ape's chain around every test. It does not touch web3.py objects, so the other tests (the embedded chain
in tests/conftest.py) are unaffected. tests/conftest.py defines its own `chain` fixture, which hides ape's
in this folder: these tests use `ape.chain` instead. Extra session/module fixtures used for the first time
in a later test make ape "rebase" its snapshots (InvalidIsolationWarning): keep to `project`, `accounts`
and the one module-scoped `registry`, which the first test requests.
"""

from __future__ import annotations

from typing import Any

import ape
import pytest

from registry.core.errors import decode_revert
from registry.core.hashing import keccak256
from registry.core.params import preset

DEV = preset("dev")
CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"


def training_claim(seed: int = 0) -> tuple[Any, ...]:
    return (CID, keccak256(b"root-%d" % seed), keccak256(b"head-%d" % seed), keccak256(b"weights-%d" % seed),
            keccak256(b"dataset"), keccak256(b"config-%d" % seed), 16, 10,
            keccak256(b"init-%d" % seed), 0, 0)


@pytest.fixture(scope="module")
def registry(project: Any, accounts: Any) -> Any:
    return project.ProofRegistry.deploy(DEV.as_tuple(), sender=accounts[0])


def test_deploy_sets_parameters(registry: Any) -> None:
    assert tuple(registry.parameters()) == DEV.as_tuple()
    assert registry.claimCount() == 0


def test_commit_training_takes_the_bond(registry: Any, accounts: Any) -> None:
    prover = accounts[1]
    before = prover.balance
    receipt = registry.commitTraining(training_claim(1), sender=prover, value=DEV.training_bond)
    assert registry.claimCount() == 1
    assert ape.chain.provider.get_balance(registry.address) == DEV.training_bond
    assert before - prover.balance == DEV.training_bond + receipt.total_fees_paid
    (event,) = receipt.events.filter(registry.TrainingClaimCommitted)
    assert event.claimId == 1 and event.prover == prover.address
    assert event.finalWeightsHash == keccak256(b"weights-1")


def test_state_is_isolated_between_tests(registry: Any) -> None:
    # The commit of the previous test was rolled back by ape's per-test snapshot.
    assert registry.claimCount() == 0


def test_wrong_bond_reverts_with_custom_error(registry: Any, accounts: Any) -> None:
    with ape.reverts(registry.WrongBond, expected=DEV.training_bond, given=1):
        registry.commitTraining(training_claim(2), sender=accounts[1], value=1)


def test_bad_constructor_parameter_reverts(project: Any, accounts: Any) -> None:
    bad = DEV.with_overrides(quorum=1)
    with ape.reverts() as info:
        project.ProofRegistry.deploy(bad.as_tuple(), sender=accounts[0])
    # eth-tester reduces InvalidParameter("quorum") to its string argument; JSON-RPC nodes give the raw data.
    message = info.value.revert_message
    assert message == "quorum" or decode_revert(message) == ("InvalidParameter", {"name": "quorum"})


def test_owner_of_is_the_first_prover(registry: Any, accounts: Any) -> None:
    prover = accounts[1]
    weights = keccak256(b"weights-3")
    assert registry.ownerOf(weights) == "0x" + "00" * 20
    registry.commitTraining(training_claim(3), sender=prover, value=DEV.training_bond)
    assert registry.ownerOf(weights) == prover.address
    # A later claim of the same weights by someone else does not take the ownership.
    registry.commitTraining(training_claim(3), sender=accounts[2], value=DEV.training_bond)
    assert registry.ownerOf(weights) == prover.address
