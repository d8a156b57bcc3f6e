"""Random data augmentation as data: the config's `augment` list, applied to each step's batch with draws from
a generator that only the committed seed and the step number drive (protocol section 6).

A prover who augments with its own randomness (torchvision transforms in a DataLoader, numpy's global RNG)
trains on inputs no verifier can rebuild, so such a run does not replay and the recorder's self-check refuses
it. Declared here instead, the augmentation is part of `configHash` and of the committed step:

    x_aug = augment(ops, x, generator seeded with augment_seed(rngSeed, t))

for global step t, before the batch is split into micro-batches, on the CPU. `augment_seed` is `step_seed`
under its own tag, so augmentation draws never shift dropout's stream (`registry.pol.rng`). Operations, each
drawn per example in list order (the order of the draws is part of the rule):

- `{"type": "hflip", "p": 0.5}`: mirror the last axis of examples whose uniform draw is < p;
- `{"type": "randomCrop", "padding": 2}`: zero-pad the last two axes by `padding` and crop back to the
  original size at an offset (dy, dx), each uniform in [0, 2·padding];
- `{"type": "gaussianNoise", "std": 0.05}`: add std · N(0, 1) to every feature (float features only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from registry.pol.checkpoint import TranscriptError
from registry.pol.rng import tagged_seed

__all__ = ["AUGMENT_SCHEME", "augment", "augment_seed", "augment_spec", "augment_step"]

AUGMENT_SCHEME = "proofreg/pol-augment/1"
_TAG = AUGMENT_SCHEME.encode()
_KEYS = {"hflip": {"type", "p"}, "randomCrop": {"type", "padding"}, "gaussianNoise": {"type", "std"}}


def augment_seed(rng_seed: int, step: int) -> int:
    """The 63-bit seed of step `step`'s augmentation generator (`step_seed`'s rule under this module's tag)."""
    return tagged_seed(_TAG, rng_seed, step)


def augment_spec(value: Any) -> list[dict[str, Any]] | None:
    """The config's `augment` validated and normalised (None or [] means none)."""
    if value is None:
        return None
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise TranscriptError(f"augment must be a list of operations like {{'type': 'hflip', 'p': 0.5}}, "
                              f"not {value!r}")
    ops: list[dict[str, Any]] = []
    for op in value:
        kind = op.get("type") if isinstance(op, Mapping) else None
        allowed = _KEYS.get(str(kind))
        if not isinstance(op, Mapping) or allowed is None:
            raise TranscriptError(f"augment operation must be one of {sorted(_KEYS)}, not {op!r}")
        if set(op) != allowed:
            raise TranscriptError(f"augment {kind} takes exactly {sorted(allowed - {'type'})}, got "
                                  f"{sorted(set(op) - {'type'})}")
        if kind == "hflip":
            p = op["p"]
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
                raise TranscriptError(f"augment hflip p must be in [0, 1], not {p!r}")
            ops.append({"type": "hflip", "p": float(p)})
        elif kind == "randomCrop":
            pad = op["padding"]
            if isinstance(pad, bool) or not isinstance(pad, int) or not 1 <= pad <= 64:
                raise TranscriptError(f"augment randomCrop padding must be an integer in [1, 64], not {pad!r}")
            ops.append({"type": "randomCrop", "padding": pad})
        else:
            std = op["std"]
            if isinstance(std, bool) or not isinstance(std, int | float) or not math.isfinite(std) or std <= 0:
                raise TranscriptError(f"augment gaussianNoise std must be a positive finite number, not {std!r}")
            ops.append({"type": "gaussianNoise", "std": float(std)})
    return ops or None


def augment(ops: Sequence[Mapping[str, Any]], x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The batch x [B, ...] augmented by `ops` with draws from `generator` (module docstring); x on the CPU."""
    if x.device.type != "cpu":
        raise TranscriptError("augmentation runs on the CPU batch, before it moves to the training device")
    b = x.shape[0]
    for op in ops:
        kind = op["type"]
        if kind == "hflip":
            if x.dim() < 3:
                raise TranscriptError(f"augment hflip needs examples with at least 2 axes, got {tuple(x.shape[1:])}")
            flip = torch.rand(b, generator=generator) < op["p"]
            x = torch.where(flip.view(b, *([1] * (x.dim() - 1))), x.flip(-1), x)
        elif kind == "randomCrop":
            if x.dim() < 3:
                raise TranscriptError(f"augment randomCrop needs examples with at least 2 axes, got "
                                      f"{tuple(x.shape[1:])}")
            p, (h, w) = op["padding"], x.shape[-2:]
            offsets = torch.randint(0, 2 * p + 1, (b, 2), generator=generator)
            padded = F.pad(x, (p, p, p, p))
            rows = (offsets[:, 0:1] + torch.arange(h)).view(b, 1, h, 1)
            cols = (offsets[:, 1:2] + torch.arange(w)).view(b, 1, 1, w)
            lead = padded.reshape(b, -1, h + 2 * p, w + 2 * p)
            c = lead.shape[1]
            picked = lead.gather(2, rows.expand(b, c, h, w + 2 * p))
            x = picked.gather(3, cols.expand(b, c, h, w)).reshape(x.shape)
        else:
            if not x.dtype.is_floating_point:
                raise TranscriptError(f"augment gaussianNoise needs float features, not {x.dtype}")
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float32)
            x = (x.to(torch.float32) + op["std"] * noise).to(x.dtype)
    return x


def augment_step(ops: Sequence[Mapping[str, Any]] | None, x: torch.Tensor, rng_seed: int, step: int) -> torch.Tensor:
    """Step `step`'s batch as the committed step trains on it (x itself when nothing is declared)."""
    if not ops:
        return x
    g = torch.Generator(device="cpu")
    g.manual_seed(augment_seed(rng_seed, step))
    return augment(ops, x, g)
