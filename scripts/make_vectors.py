"""Regenerates tests/vectors/*.json: Merkle vectors from @openzeppelin/merkle-tree (node), hashing and
sampling vectors from the Python core. Run after changing a protocol rule, then check the diff.

    python scripts/make_vectors.py
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from registry.core import hashing, sampling  # noqa: E402
from registry.core.merkle import EXAMPLE_LEAF_TYPES, SEGMENT_LEAF_TYPES  # noqa: E402

VECTORS = ROOT / "tests" / "vectors"


def h(tag: str) -> str:
    return "0x" + hashlib.sha256(tag.encode()).hexdigest()


def merkle_cases() -> list[dict[str, object]]:
    cases: list[dict[str, object]] = []
    for n in (1, 2, 3, 5, 8, 17):
        values = [[str(i), h(f"ckpt-{i}"), h(f"ckpt-{i + 1}"), h(f"batches-{i}")] for i in range(n)]
        cases.append({"name": f"segments-{n}", "leafEncoding": list(SEGMENT_LEAF_TYPES), "values": values})
    for n in (1, 4, 7):
        values = [[str(i), h(f"example-{i}")] for i in range(n)]
        cases.append({"name": f"examples-{n}", "leafEncoding": list(EXAMPLE_LEAF_TYPES), "values": values})
    return cases


def oz_trees(cases: list[dict[str, object]]) -> list[dict[str, object]]:
    proc = subprocess.run(
        ["node", str(ROOT / "scripts" / "oz-merkle.js")], input=json.dumps(cases), capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"oz-merkle.js failed (run `npm ci`): {proc.stderr.strip()}")
    result: list[dict[str, object]] = json.loads(proc.stdout)
    return result


def hashing_vectors() -> dict[str, object]:
    import numpy as np

    ckpts = [bytes.fromhex(h(f"ckpt-{i}")[2:]) for i in range(5)]
    tensors = {
        "layer.weight": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
        "layer.bias": np.array([1.5, -2.25, 0.0], dtype=np.float32),
        "steps": np.array(42, dtype=np.int64),
        "mask": np.array([True, False, True]),
        "empty": np.zeros((0, 3), dtype=np.float64),
    }
    config = {"model": {"family": "mlp", "args": {"hidden": [128], "dropout": 0.1}}, "k": 10, "seed": 7,
              "name": "déjà vu"}
    return {
        "keccak256": {"input_hex": b"proof-registry".hex(),
                      "digest": "0x" + hashing.keccak256(b"proof-registry").hex()},
        "chain": {
            "ckptHashes": hashing.hashes_hex(ckpts),
            "links": hashing.hashes_hex(hashing.chain_hashes(ckpts)),
        },
        "config": {
            "config": config,
            "canonical": hashing.canonical_json(config).decode(),
            "configHash": "0x" + hashing.config_hash(config).hex(),
        },
        "weights": {
            "tensors": {
                k: {"dtype": v.dtype.name, "shape": list(v.shape), "data": v.reshape(-1).tolist()}
                for k, v in tensors.items()
            },
            "weightsHash": "0x" + hashing.weights_hash(tensors).hex(),
        },
    }


def sampling_vectors() -> dict[str, object]:
    seeds = [h("seed-a"), h("seed-b"), "0x" + "00" * 32]
    out = []
    for s in seeds:
        seed = bytes.fromhex(s[2:])
        for n in (1, 7, 100, 2**20):
            out.append({
                "seed": s,
                "numSegments": n,
                "segments": [sampling.segment_at(seed, j, n) for j in range(8)],
                "committeeStarts": [sampling.committee_start(seed, j, n) for j in range(4)],
            })
    # the challenge seed: keccak256(abi.encode(blockhash(seedBlock), openRandao, challengeId))
    seeds_of = []
    for block_hash, mix_hash, challenge_id in ((h("block-a"), h("randao-a"), 1), (h("block-a"), h("randao-b"), 1),
                                               (h("block-a"), "0x" + "00" * 32, 2), (h("block-b"), h("randao-a"), 7)):
        open_randao = sampling.open_randao_of(bytes.fromhex(mix_hash[2:]))
        seeds_of.append({"seedBlockHash": block_hash, "mixHash": mix_hash, "openRandao": hex(open_randao),
                         "challengeId": challenge_id,
                         "seed": "0x" + sampling.challenge_seed(bytes.fromhex(block_hash[2:]), open_randao,
                                                                challenge_id).hex()})
    return {"cases": out, "challengeSeeds": seeds_of}


def main() -> None:
    VECTORS.mkdir(parents=True, exist_ok=True)
    (VECTORS / "merkle.json").write_text(json.dumps(oz_trees(merkle_cases()), indent=1) + "\n")
    (VECTORS / "hashing.json").write_text(json.dumps(hashing_vectors(), indent=1, ensure_ascii=False) + "\n")
    (VECTORS / "sampling.json").write_text(json.dumps(sampling_vectors(), indent=1) + "\n")
    print(f"wrote {', '.join(p.name for p in sorted(VECTORS.glob('*.json')))}")


if __name__ == "__main__":
    main()
