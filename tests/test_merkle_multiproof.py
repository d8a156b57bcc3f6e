"""OpenZeppelin-compatible multiproofs (`registry.merkle.multi_proof` / `process_multi_proof`): every subset of
small trees against single proofs, and hostile inputs (wrong flags, extra or missing proof nodes)."""

from __future__ import annotations

import itertools
import random

import pytest

from registry.merkle import (
    EXAMPLE_LEAF_TYPES,
    StandardMerkleTree,
    multi_proof,
    process_multi_proof,
    verify,
    verify_multi,
)


def _tree(n: int) -> StandardMerkleTree:
    return StandardMerkleTree.of([(i, bytes([i % 256]) * 32) for i in range(n)], EXAMPLE_LEAF_TYPES)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8])
def test_every_subset_verifies_and_agrees_with_single_proofs(n: int) -> None:
    t = _tree(n)
    for r in range(1, n + 1):
        for subset in itertools.combinations(range(n), r):
            mp = t.multi_proof(list(subset))
            assert sorted(mp.leaves) == sorted(t.leaf(i) for i in subset)
            assert process_multi_proof(mp.leaves, mp.proof, mp.flags) == t.root
            for i in subset:
                assert verify(t.root, t.leaf(i), t.proof(i))


def test_large_random_subsets_and_size() -> None:
    rng = random.Random(7)
    t = _tree(1797)
    for _ in range(5):
        subset = rng.sample(range(1797), 320)
        mp = t.multi_proof(subset)
        assert verify_multi(t.root, mp.leaves, mp.proof, mp.flags)
        # far fewer sibling hashes than 320 single proofs of ~11 nodes
        assert len(mp.proof) < 320 * 11 // 3


def test_empty_multiproof_is_the_root() -> None:
    t = _tree(6)
    mp = multi_proof(t.tree, [])
    assert mp.proof == (t.root,) and mp.flags == ()
    assert verify_multi(t.root, [], mp.proof, mp.flags)


def test_hostile_multiproofs_fail() -> None:
    t = _tree(13)
    mp = t.multi_proof([0, 3, 4, 9])
    leaves, proof, flags = list(mp.leaves), list(mp.proof), list(mp.flags)
    assert verify_multi(t.root, leaves, proof, flags)
    # a wrong flag
    for k in range(len(flags)):
        bad = flags.copy()
        bad[k] = not bad[k]
        assert not verify_multi(t.root, leaves, proof, bad)
    # an extra or a missing proof node
    assert not verify_multi(t.root, leaves, [*proof, t.root], flags)
    assert not verify_multi(t.root, leaves, proof[:-1], flags)
    assert not verify_multi(t.root, leaves, proof, [*flags, True])
    # an extra proof node balanced by an extra flag (the pre-4.9.2 OpenZeppelin bug) is refused
    assert not verify_multi(t.root, leaves, [*proof, b"\x00" * 32], [*flags, False])
    # a leaf that is not in the tree, leaves out of order, a leaf dropped
    assert not verify_multi(t.root, [b"\x01" * 32, *leaves[1:]], proof, flags)
    assert not verify_multi(t.root, leaves[::-1], proof, flags)
    assert not verify_multi(t.root, leaves[1:], proof, flags)
    with pytest.raises(ValueError, match="flags \\+ 1"):
        process_multi_proof(leaves, proof[:-1], flags)


def test_multi_proof_refuses_bad_positions() -> None:
    t = _tree(5)
    with pytest.raises(ValueError, match="not a leaf"):
        multi_proof(t.tree, [0])
    with pytest.raises(ValueError, match="twice"):
        multi_proof(t.tree, [5, 5])
