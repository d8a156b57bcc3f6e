"""The challenge draws of SPEC section 5, mirrored from `contracts/libraries/Sampling.sol`.

Daemons take their assignments from the registry's views (`sampledSegments`, `committee`); this mirror is
for planning and analysis (which segments a seed would pick, detection probability) and is pinned against
the contract by `tests/vectors/sampling.json`.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_abi import encode as abi_encode

from registry.core.hashing import as_hash, keccak256


def _draw(seed: bytes, tag: str, j: int, n: int) -> int:
    if n <= 0:
        raise ValueError("cannot draw from an empty range")
    digest = keccak256(abi_encode(["bytes32", "string", "uint256"], [as_hash(seed), tag, j]))
    return int.from_bytes(digest, "big") % n


def segment_at(seed: bytes, j: int, n: int) -> int:
    """`uint256(keccak256(abi.encode(seed, "segment", j))) % n`."""
    return _draw(seed, "segment", j, n)


def committee_start(seed: bytes, j: int, n: int) -> int:
    """Where the j-th committee pick starts probing the active verifier list."""
    return _draw(seed, "committee", j, n)


def sampled_segments(seed: bytes, samples: int, num_segments: int, named: Sequence[int] = ()) -> list[int]:
    """What `sampledSegments` returns: S draws then the named indices, duplicates kept."""
    if num_segments == 0:
        return []
    return [segment_at(seed, j, num_segments) for j in range(samples)] + [int(s) for s in named]


def detection_probability(num_segments: int, forged: int, samples: int) -> float:
    """Chance that S independent draws (with replacement) hit at least one of `forged` bad segments."""
    if num_segments <= 0 or forged <= 0:
        return 0.0
    return 1.0 - (1.0 - min(forged, num_segments) / num_segments) ** samples


def challenge_seed(seed_block_hash: bytes, open_randao: int, challenge_id: int) -> bytes:
    """The challenge's seed: `keccak256(abi.encode(blockhash(seedBlock), openRandao, challengeId))`, where
    openRandao is `prevrandao | 1` of the block that opened (or last reseeded) the challenge, that block's
    `mixHash` (docs/protocol.md section 5)."""
    return keccak256(abi_encode(["bytes32", "uint256", "uint256"],
                                [as_hash(seed_block_hash), int(open_randao), int(challenge_id)]))


def open_randao_of(mix_hash: bytes | int) -> int:
    """openRandao from the opening block's `mixHash` (its prevrandao): `prevrandao | 1`."""
    value = mix_hash if isinstance(mix_hash, int) else int.from_bytes(as_hash(mix_hash), "big")
    return value | 1


def commitment_of(verdict: int, results_hash: bytes, report_cid: str, salt: bytes, member: str) -> bytes:
    """A commit-reveal attestation's commitment, as the registry's `commitmentOf` computes it:
    `keccak256(abi.encode(uint8 verdict, bytes32 resultsHash, string reportCid, bytes32 salt, address member))`."""
    return keccak256(abi_encode(["uint8", "bytes32", "string", "bytes32", "address"],
                                [int(verdict), as_hash(results_hash), report_cid, as_hash(salt), member]))
