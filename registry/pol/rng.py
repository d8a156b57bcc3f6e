"""Randomness of a recorded run: torch's generators are re-seeded before every step from a committed seed.

Before the first training-mode forward of global step t, the recorder (and replay) sets torch's CPU generator,
and the CUDA generator of the training device, to

    step_seed(rngSeed, t) = first 8 bytes, little-endian, of sha256(b"proofreg/pol-rng/1" ‖ rngSeed ‖ t) >> 1

(rngSeed and t as 8-byte little-endian unsigned integers), where rngSeed is in the training configuration
(`config["rng"]`). Why this rather than storing generator states in checkpoints:

- Dropout and every other draw inside a step replay exactly no matter what the training loop does with the
  global RNG between steps (a `DataLoader(shuffle=True)` starting an epoch, logging, evaluation).
- It costs one re-seed per step, where capturing and comparing generator states cost more than that per step.
- A prover cannot pick the random draws of a step (e.g. dropout masks that make a forged segment replay):
  they follow from a seed committed in `configHash` before any checkpoint.

Only torch's generators are covered; a model whose forward draws from numpy's or Python's global RNG cannot
be replayed (no built-in family does).
"""

from __future__ import annotations

import torch

from registry.core.hashing import sha256
from registry.spec.models import GLOBAL_RNG_LOCK

__all__ = ["GLOBAL_RNG_LOCK", "RNG_SCHEME", "seed_step", "step_seed", "tagged_seed"]

RNG_SCHEME = "proofreg/pol-rng/1"
_TAG = RNG_SCHEME.encode()
_CPU = torch.default_generator


def tagged_seed(tag: bytes, rng_seed: int, step: int) -> int:
    """First 8 bytes, little-endian, of sha256(tag ‖ rngSeed ‖ step) >> 1: a 63-bit seed per step and purpose."""
    if not 0 <= rng_seed < 1 << 64 or not 0 <= step < 1 << 64:
        raise ValueError("rng seed and step must be unsigned 64-bit integers")
    digest = sha256(tag + rng_seed.to_bytes(8, "little") + step.to_bytes(8, "little"))
    return int.from_bytes(digest[:8], "little") >> 1


def step_seed(rng_seed: int, step: int) -> int:
    """The 63-bit seed of global step `step` (module docstring)."""
    return tagged_seed(_TAG, rng_seed, step)


def seed_step(rng_seed: int, step: int, cuda_index: int | None = None) -> None:
    """Re-seeds torch's CPU generator (and the CUDA generator of `cuda_index`) for global step `step`."""
    s = step_seed(rng_seed, step)
    _CPU.manual_seed(s)
    if cuda_index is not None:
        torch.cuda.default_generators[cuda_index].manual_seed(s)
