"""Shared fixtures: the embedded chain with the registry deployed, reverted to a clean snapshot per test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from eth_tester.exceptions import TransactionFailed
from web3.exceptions import ContractCustomError, ContractLogicError

from registry.chain.local import EmbeddedChain
from registry.core.errors import decode_revert, revert_data
from registry.core.hashing import keccak256
from registry.core.params import RegistryParams, preset

pytest_plugins = ["tests.nodes", "tests.ipfs_node"]

DEV: RegistryParams = preset("dev")
CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"


@pytest.fixture(scope="session")
def _session_chain() -> EmbeddedChain:
    return EmbeddedChain(DEV)


@pytest.fixture
def chain(_session_chain: EmbeddedChain) -> Iterator[EmbeddedChain]:
    snap = _session_chain.snapshot()
    yield _session_chain
    _session_chain.revert(snap)


def _check_decoded(error: str, expected_args: dict[str, Any], decoded: Any, raw: str) -> None:
    assert decoded is not None, f"expected {error}, got undecodable revert {raw}"
    name, args = decoded
    assert name == error, f"expected {error}, got {name}({args})"
    for k, v in expected_args.items():
        assert args.get(k) == v, f"{error}: {k}={args.get(k)!r}, expected {v!r}"


@contextlib.contextmanager
def reverts(error: str, **expected_args: Any) -> Iterator[None]:
    """Asserts that the block reverts with the registry custom error `error` (and these arguments)."""
    try:
        yield
    except TransactionFailed as exc:
        data = revert_data(exc)
        if data is None:
            # contract creation through eth-tester keeps only the error's decoded string argument
            message = str(exc)
            assert message.startswith("execution reverted"), f"expected {error}, got {message}"
            for v in expected_args.values():
                assert str(v) in message, f"expected {error}{expected_args}, got {message}"
        else:
            _check_decoded(error, expected_args, decode_revert(data), str(exc))
    except (ContractCustomError, ContractLogicError) as exc:
        _check_decoded(error, expected_args, decode_revert(revert_data(exc)), repr(exc))
    else:
        raise AssertionError(f"expected revert {error}, but the call succeeded")


def training_claim(seed: int = 0, *, num_segments: int = 16, steps: int = 10, root: bytes | None = None,
                   weights: bytes | None = None, cid: str = CID, init: bytes | None = None, parent: int = 0,
                   origin: int | None = None) -> tuple[Any, ...]:
    """A `TrainingClaim`; origin defaults to Parent (1) when a parent is given, else Seed (0)."""
    origin = (1 if parent else 0) if origin is None else origin
    return (
        cid,
        root or keccak256(b"root-%d" % seed),
        keccak256(b"head-%d" % seed),
        weights or keccak256(b"weights-%d" % seed),
        keccak256(b"dataset"),
        keccak256(b"config-%d" % seed),
        num_segments,
        steps,
        init or keccak256(b"init-%d" % seed),
        parent,
        origin,
    )


def inference_claim(model_claim_id: int = 0, seed: int = 0, cid: str = CID) -> tuple[Any, ...]:
    return (model_claim_id, keccak256(b"vk-%d" % seed), keccak256(b"proof-%d" % seed),
            keccak256(b"inst-%d" % seed), cid)


@pytest.fixture
def d(chain: EmbeddedChain) -> Any:
    from tests.registry_driver import Driver

    return Driver(chain)
