"""The challenge draws of SPEC section 5, mirrored from `contracts/libraries/Sampling.sol`.

Daemons take their assignments from the registry's views (`sampledSegments`, `committee`); this mirror is
for planning and analysis (which segments a seed would pick, detection probability) and is pinned against
the contract by `tests/vectors/sampling.json`.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_abi import encode as abi_encode

from registry.hashing import as_hash, keccak256


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
