"""Re-execution of one transcript segment (SPEC section 6): the verifier's core, kept in the protocol package.

`replay_segment` loads checkpoint i (safetensors only, hash-checked against the manifest), rebuilds the model
from its family and the optimizer from the config's allow-list, restores the optimizer state (copied first:
see `copy_optimizer_state`), replays the recorded batches with the recorded learning rates — per step: the
generators re-seeded for that step (`registry.pol.rng`), one forward, `F.cross_entropy`, backward, `step()`,
`zero_grad(set_to_none=True)` — and returns the resulting model state_dict.

Replaying on the machine, device and thread count of the recording gives ρ = 0 exactly; other thread counts
or hardware give small non-zero ρ, which the tolerance policy bounds. The caller's RNG states are restored
afterwards
(torch's; replay does not touch numpy's or Python's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from registry.datasets import Dataset
from registry.hashing import as_hash, to_hex
from registry.pol.checkpoint import Checkpoint, TranscriptError, copy_optimizer_state, read_checkpoint
from registry.pol.config import loss_function, rebuild_model, rebuild_optimizer, rng_seed_of
from registry.pol.rng import GLOBAL_RNG_LOCK, seed_step
from registry.pol.transcript import load_manifest, read_batches


@dataclass(frozen=True)
class SegmentDistance:
    """Reproduction error of a segment, over the model's parameters.

    rho = ‖W' − W_{i+1}‖₂ / ‖W_{i+1} − W_i‖₂; linf = max |W' − W_{i+1}|; cosine = 1 − cos(W' − W_i, W_{i+1} − W_i)
    (the angle between the replayed and the claimed update); update_norm = ‖W_{i+1} − W_i‖₂."""

    rho: float
    linf: float
    cosine: float
    update_norm: float
    error_norm: float

    def to_json(self) -> dict[str, float]:
        return {"rho": self.rho, "linf": self.linf, "cosine": self.cosine, "updateNorm": self.update_norm,
                "errorNorm": self.error_norm}


def segment_distance(replayed: dict[str, torch.Tensor], claimed_next: dict[str, torch.Tensor],
                     start: dict[str, torch.Tensor], names: list[str]) -> SegmentDistance:
    """Distances between the replayed weights W' and checkpoint i+1's W_{i+1}, relative to W_i (float64)."""
    err2 = upd2 = rep2 = dot = 0.0
    linf = 0.0
    for n in names:
        w_new = replayed[n].detach().to("cpu", torch.float64).reshape(-1)
        w_next = claimed_next[n].detach().to("cpu", torch.float64).reshape(-1)
        w_0 = start[n].detach().to("cpu", torch.float64).reshape(-1)
        e, u, r = w_new - w_next, w_next - w_0, w_new - w_0
        err2 += float(e @ e)
        upd2 += float(u @ u)
        rep2 += float(r @ r)
        dot += float(r @ u)
        if e.numel():
            linf = max(linf, float(e.abs().max()))
    err, upd = err2 ** 0.5, upd2 ** 0.5
    rho = err / upd if upd > 0 else (0.0 if err == 0 else float("inf"))
    denom = (rep2 ** 0.5) * upd
    cosine = 1.0 - dot / denom if denom > 0 else (0.0 if err == 0 else 1.0)
    return SegmentDistance(rho=rho, linf=linf, cosine=cosine, update_norm=upd, error_norm=err)


def load_segment_checkpoint(transcript_dir: str | Path, manifest: dict[str, Any], index: int) -> Checkpoint:
    """Checkpoint `index` of a validated manifest, hash-checked; its index and step must agree with the manifest."""
    if not 0 <= index < len(manifest["checkpoints"]):
        raise TranscriptError(f"no checkpoint {index}")
    entry = manifest["checkpoints"][index]
    ckpt = read_checkpoint(Path(transcript_dir) / entry["path"], as_hash(entry["ckptHash"]))
    if ckpt.index != index or ckpt.step != entry["step"]:
        raise TranscriptError(f"checkpoint {index} says it is index {ckpt.index} at step {ckpt.step}")
    return ckpt


def _cuda_index(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()


def replay_segment(transcript_dir: str | Path, index: int, dataset: Dataset, *,
                   device: torch.device | str = "cpu", manifest: dict[str, Any] | None = None,
                   checkpoint: Checkpoint | None = None,
                   batches: np.ndarray | None = None, model: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Re-executes segment `index` from checkpoint `index`; returns the model state_dict after its steps.

    `dataset` must be the transcript's training set (its root is checked); `manifest` and `checkpoint` may be
    passed when already loaded (the checkpoint is not modified, so it can be re-used), and `batches` when the
    caller already read and hash-checked the segment's batch file (a verifier holding fetched bytes). `model`:
    one built by `rebuild_model` from this config on this device, re-used across segments (every parameter and
    buffer is overwritten from the checkpoint; rebuilding costs as much as a step of a small model)."""
    tdir = Path(transcript_dir)
    m = manifest if manifest is not None else load_manifest(tdir)
    config = m["config"]
    if not 0 <= index < m["numSegments"]:
        raise TranscriptError(f"segment {index} out of range [0, {m['numSegments']})")
    if dataset.root != as_hash(m["dataset"]["datasetRoot"]):
        raise TranscriptError(f"dataset root {to_hex(dataset.root)} is not the transcript's "
                              f"{m['dataset']['datasetRoot']}")
    seg = m["segments"][index]
    steps = seg["endStep"] - seg["startStep"]
    if batches is None:
        batches = read_batches(tdir / seg["batches"], seg["batchesHash"], (steps, int(m["batchSize"])))
    elif batches.shape != (steps, int(m["batchSize"])) or batches.dtype != np.int64:
        raise TranscriptError(f"segment {index} batches have shape {batches.shape}, expected "
                              f"{(steps, int(m['batchSize']))}")
    if int(batches.min()) < 0 or int(batches.max()) >= len(dataset):
        raise TranscriptError(f"segment {index} uses example indices outside the dataset")
    ckpt = checkpoint if checkpoint is not None else load_segment_checkpoint(tdir, m, index)
    dev = torch.device(device)
    loss_fn = loss_function(config)
    rng_seed = rng_seed_of(config)

    cuda = _cuda_index(dev)
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[cuda] if cuda is not None else []):
        if model is None:
            model = rebuild_model(config, dev)
        try:
            model.load_state_dict(ckpt.model, strict=True)
        except RuntimeError as exc:
            raise TranscriptError(f"checkpoint {index} does not fit the config's model: {exc}") from exc
        optimizer = rebuild_optimizer(config, model)
        try:
            optimizer.load_state_dict(copy_optimizer_state(ckpt.optimizer))
        except (ValueError, KeyError, RuntimeError) as exc:
            raise TranscriptError(f"checkpoint {index} optimizer state does not fit: {exc}") from exc
        model.train()
        for j in range(steps):
            lrs = seg["learningRates"][j]
            if len(lrs) != len(optimizer.param_groups):
                raise TranscriptError(f"segment {index} step {j} has {len(lrs)} learning rates for "
                                      f"{len(optimizer.param_groups)} param groups")
            for g, lr in zip(optimizer.param_groups, lrs, strict=True):
                g["lr"] = float(lr)
            x, y = dataset.batch(batches[j], dev)
            seed_step(rng_seed, seg["startStep"] + j, cuda)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return {k: v.detach() for k, v in model.state_dict().items()}


def parameter_names(config: dict[str, Any]) -> list[str]:
    """Names of the model's parameters (what ρ and update norms are taken over), from the family."""
    model = rebuild_model(config, "cpu")
    return [n for n, _ in model.named_parameters()]


def check_segment(transcript_dir: str | Path, index: int, dataset: Dataset, *, device: torch.device | str = "cpu",
                  manifest: dict[str, Any] | None = None) -> SegmentDistance:
    """Replays segment `index` and measures it against checkpoint index+1 (ρ, L∞, cosine)."""
    tdir = Path(transcript_dir)
    m = manifest if manifest is not None else load_manifest(tdir)
    start = load_segment_checkpoint(tdir, m, index)
    nxt = load_segment_checkpoint(tdir, m, index + 1)
    replayed = replay_segment(tdir, index, dataset, device=device, manifest=m, checkpoint=start)
    return segment_distance(replayed, nxt.model, start.model, parameter_names(m["config"]))
