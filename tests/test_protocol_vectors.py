"""The protocol rules are pinned by vectors: Python reproduces @openzeppelin/merkle-tree, and the contract
accepts Python-made proofs and rejects altered ones."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from registry.core import hashing, merkle, sampling
from registry.core.merkle import StandardMerkleTree
from tests.conftest import training_claim
from tests.registry_driver import Driver

VECTORS = Path(__file__).parent / "vectors"
ROOT = Path(__file__).resolve().parent.parent
MERKLE = json.loads((VECTORS / "merkle.json").read_text())
HASHING = json.loads((VECTORS / "hashing.json").read_text())
SAMPLING = json.loads((VECTORS / "sampling.json").read_text())


def b32(x: str) -> bytes:
    return bytes.fromhex(x[2:])


def test_vectors_come_from_openzeppelin() -> None:
    """Re-derive the Merkle vectors with the JS reference library (installed by `npm ci`)."""
    cases = [{k: c[k] for k in ("name", "leafEncoding", "values")} for c in MERKLE]
    proc = subprocess.run(["node", str(ROOT / "scripts" / "oz-merkle.js")], input=json.dumps(cases),
                          capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout) == MERKLE


@pytest.mark.parametrize("case", MERKLE, ids=[c["name"] for c in MERKLE])
def test_python_tree_matches_openzeppelin(case: dict[str, Any]) -> None:
    tree = StandardMerkleTree.of(case["values"], case["leafEncoding"])
    assert hashing.to_hex(tree.root) == case["root"]
    assert tree.dump() == case["dump"]
    for i, value in enumerate(case["values"]):
        assert hashing.to_hex(merkle.leaf_hash(case["leafEncoding"], value)) == case["leafHashes"][i]
        proof = tree.proof(i)
        assert hashing.hashes_hex(proof) == case["proofs"][i]
        assert merkle.verify(tree.root, tree.leaf(i), proof)
    assert StandardMerkleTree.load(case["dump"]).root == tree.root


def test_merkle_rejects_altered_proofs_and_dumps() -> None:
    case = MERKLE[3]  # 5 segments
    tree = StandardMerkleTree.of(case["values"], case["leafEncoding"])
    proof = tree.proof(2)
    bad = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
    assert not merkle.verify(tree.root, tree.leaf(2), bad)
    assert not merkle.verify(tree.root, tree.leaf(3), proof)
    dump = json.loads(json.dumps(case["dump"]))
    dump["values"][0]["value"][1] = "0x" + "11" * 32
    with pytest.raises(ValueError, match="inconsistent"):
        StandardMerkleTree.load(dump)
    with pytest.raises(ValueError, match="format"):
        StandardMerkleTree.load({**case["dump"], "format": "simple-v1"})
    with pytest.raises(ValueError, match="at least one leaf"):
        StandardMerkleTree.of([], merkle.SEGMENT_LEAF_TYPES)


@pytest.mark.parametrize("case", [c for c in MERKLE if c["name"].startswith("segments")], ids=lambda c: c["name"])
def test_contract_accepts_python_segment_proofs(d: Driver, case: dict[str, Any]) -> None:
    tree = StandardMerkleTree.of(case["values"], case["leafEncoding"])
    n = len(case["values"])
    claim_id = d.commit(training_claim(root=tree.root, num_segments=n), d.accounts[1])
    for i, (idx, a, b, c) in enumerate(case["values"]):
        args = (int(idx), b32(a), b32(b), b32(c))
        assert d.call("segmentLeaf", *args) == b32(case["leafHashes"][i])
        proof = tree.proof(i)
        assert d.call("verifySegment", claim_id, *args, proof) is True
        # altered: another checkpoint hash, another index, a flipped proof byte, a truncated proof
        assert d.call("verifySegment", claim_id, args[0], b32(b), args[2], args[3], proof) is False
        if n > 1:
            other = (args[0] + 1) % n
            assert d.call("verifySegment", claim_id, other, *args[1:], proof) is False
            flipped = [bytes([proof[0][0] ^ 0x80]) + proof[0][1:], *proof[1:]]
            assert d.call("verifySegment", claim_id, *args, flipped) is False
            assert d.call("verifySegment", claim_id, *args, proof[:-1]) is False
    assert d.call("verifySegment", claim_id, n, *(b32(x) for x in case["values"][0][1:]), []) is False


@pytest.mark.parametrize("case", [c for c in MERKLE if c["name"].startswith("examples")], ids=lambda c: c["name"])
def test_contract_accepts_python_example_proofs(d: Driver, case: dict[str, Any]) -> None:
    tree = StandardMerkleTree.of(case["values"], case["leafEncoding"])
    for i, (idx, h) in enumerate(case["values"]):
        assert d.call("exampleLeaf", int(idx), b32(h)) == b32(case["leafHashes"][i])
        assert d.call("verifyExample", tree.root, int(idx), b32(h), tree.proof(i)) is True
        assert d.call("verifyExample", tree.root, int(idx) + 1, b32(h), tree.proof(i)) is False


def test_hashing_vectors() -> None:
    v = HASHING
    assert hashing.to_hex(hashing.keccak256(bytes.fromhex(v["keccak256"]["input_hex"]))) == v["keccak256"]["digest"]
    ckpts = [b32(x) for x in v["chain"]["ckptHashes"]]
    assert hashing.hashes_hex(hashing.chain_hashes(ckpts)) == v["chain"]["links"]
    assert hashing.to_hex(hashing.chain_head(ckpts)) == v["chain"]["links"][-1]
    assert hashing.chain_head(ckpts[:1]) == ckpts[0]
    with pytest.raises(ValueError):
        hashing.chain_head([])
    assert hashing.canonical_json(v["config"]["config"]).decode() == v["config"]["canonical"]
    assert hashing.to_hex(hashing.config_hash(v["config"]["config"])) == v["config"]["configHash"]
    with pytest.raises(ValueError):
        hashing.canonical_json({"x": float("nan")})


def _vector_tensors() -> dict[str, np.ndarray]:
    return {
        k: np.array(t["data"], dtype=t["dtype"]).reshape(t["shape"])
        for k, t in HASHING["weights"]["tensors"].items()
    }


def test_weights_hash_vector_numpy_and_torch() -> None:
    arrays = _vector_tensors()
    expected = HASHING["weights"]["weightsHash"]
    assert hashing.to_hex(hashing.weights_hash(arrays)) == expected
    tensors = {k: torch.from_numpy(a.copy()) for k, a in arrays.items()}
    assert hashing.to_hex(hashing.weights_hash(tensors)) == expected
    # big-endian input is the same tensor: same hash
    be = {k: a.astype(a.dtype.newbyteorder(">")) if a.dtype.itemsize > 1 else a for k, a in arrays.items()}
    assert hashing.to_hex(hashing.weights_hash(be)) == expected
    # any change of name, dtype, shape or value changes it
    changed = dict(arrays, **{"layer.bias": arrays["layer.bias"].astype(np.float64)})
    assert hashing.weights_hash(changed) != hashing.weights_hash(arrays)
    reshaped = dict(arrays, **{"layer.weight": arrays["layer.weight"].reshape(4, 3)})
    assert hashing.weights_hash(reshaped) != hashing.weights_hash(arrays)
    renamed = {("x" + k if k == "steps" else k): a for k, a in arrays.items()}
    assert hashing.weights_hash(renamed) != hashing.weights_hash(arrays)


def test_weights_hash_bfloat16_and_noncontiguous() -> None:
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    assert hashing.weights_hash({"w": t.t()}) == hashing.weights_hash({"w": t.t().contiguous()})
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert hashing.weights_hash({"w": a.T}) == hashing.weights_hash({"w": np.ascontiguousarray(a.T)})
    assert hashing.weights_hash({"w": a.T}) == hashing.weights_hash({"w": t.t()})
    assert hashing.weights_hash({"w": t.to(torch.bfloat16)}) != hashing.weights_hash({"w": t.to(torch.float16)})


@pytest.mark.parametrize("case", SAMPLING["cases"], ids=lambda c: f"{c['seed'][:8]}-{c['numSegments']}")
def test_sampling_vectors(case: dict[str, Any]) -> None:
    seed, n = b32(case["seed"]), case["numSegments"]
    assert [sampling.segment_at(seed, j, n) for j in range(8)] == case["segments"]
    assert [sampling.committee_start(seed, j, n) for j in range(4)] == case["committeeStarts"]
    assert sampling.sampled_segments(seed, 8, n, [0]) == [*case["segments"], 0]


@pytest.mark.parametrize("case", SAMPLING["challengeSeeds"], ids=lambda c: f"{c['seed'][:10]}")
def test_challenge_seed_vectors(case: dict[str, Any]) -> None:
    open_randao = sampling.open_randao_of(b32(case["mixHash"]))
    assert open_randao == int(case["openRandao"], 16) and open_randao & 1 == 1
    assert sampling.challenge_seed(b32(case["seedBlockHash"]), open_randao, case["challengeId"]) == b32(case["seed"])


def test_detection_probability() -> None:
    assert sampling.detection_probability(100, 0, 8) == 0.0
    assert sampling.detection_probability(100, 100, 1) == 1.0
    assert abs(sampling.detection_probability(100, 10, 8) - (1 - 0.9**8)) < 1e-12
