"""OpenZeppelin-compatible multiproofs (`registry.core.merkle.multi_proof` / `process_multi_proof`): every subset of
small trees against single proofs, and hostile inputs (wrong flags, extra or missing proof nodes)."""

from __future__ import annotations

import itertools
import random

import pytest

from registry.core.merkle import (
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


def test_matches_openzeppelin_merkle_tree_js() -> None:
    """Pinned from `@openzeppelin/merkle-tree` `StandardMerkleTree.of(...).getMultiProof([0, 3, 4, 9])`."""
    t = _tree(13)
    mp = t.multi_proof([0, 3, 4, 9])
    assert t.root.hex() == "4b72849fc185ace7c1fa4a5381211e7a589062be131c64e67a5bc643abb51260"
    assert [p.hex() for p in mp.proof] == [
        "07c332f80d559e6099392dbcc27975c3d49d342810427fe4f250b3e62185f289",
        "34ae61d619c5eae4bea37c30ad319b79efc9d93facb6bd76769ddc2ec0cd3616",
        "ab00b1528865f8dd56bc788ed45c2d3d16529cb5a3ba0db75880f8acde011d71",
        "e50e8fc9585e9f8a414188bff7075aa8ad7e55911db5eb85e5485e778f9cf045",
        "d7daf6d3b6ff1c5282819bbc7236ed24b22984a7f37075c39bfa5bc00aa8fc12",
        "5fba91d7974b70ec89e6d43f81edb902ce1e1705213a9527847d8c0f8ce6002c",
    ]
    assert list(mp.flags) == [False, False, False, False, True, False, False, True, True]
