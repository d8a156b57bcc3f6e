"""Forged Proof-of-Learning transcripts, made from an honest one (registry-free: files and manifests only).

Each `forge_*` copies an honest transcript directory to `out` and applies one attack, re-sealing the
manifest (hashes, chain head, segment root, update norms) wherever the attack needs the transcript to look
consistent, exactly as a forger would. They return a `Forgery` naming the segments the attack touches (a
challenger names them, so the sampled audit is sure to look there) and what an auditor should say.

    honest = train(tmp / "run", max_steps=40, steps_per_segment=10).transcript_dir
    f = forge_interpolated(honest, tmp / "interp")
    claim = claim_tuple(f.path, transcript_cid)      # the TrainingClaim struct for commitTraining

Used by the verifier daemon tests; meant for the attack suite too.
PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from registry.core.hashing import as_hash, chain_head, sha256
from registry.pol.checkpoint import decode_checkpoint, encode_checkpoint
from registry.pol.transcript import MANIFEST_NAME, segment_tree, write_manifest


@dataclass(frozen=True)
class Forgery:
    name: str
    path: Path
    segments: list[int]  # segments the attack touches (to name in a challenge)
    expect: str  # the verdict an auditor must reach
    reason_contains: str = ""  # a fragment of the audit's reason
    notes: dict[str, Any] = field(default_factory=dict)


def read_manifest(tdir: Path) -> dict[str, Any]:
    return dict(json.loads((tdir / MANIFEST_NAME).read_text()))


def _file_hash(tdir: Path, rel: str) -> str:
    return "0x" + sha256((tdir / rel).read_bytes()).hex()


def _update_norm(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    total = 0.0
    for name, t in a.items():
        if t.is_floating_point():
            d = (b[name].double() - t.double()).reshape(-1)
            total += float(d @ d)
    return total ** 0.5


def reseal(tdir: Path, *, checkpoints: bool = True, batches: bool = True, norms: bool = False) -> dict[str, Any]:
    """Recomputes the manifest's file hashes (of checkpoints and/or batch files), chain head and segment root
    (and the update norms, when checkpoints changed) so the manifest agrees with the files; returns it."""
    m = read_manifest(tdir)
    if checkpoints:
        for c in m["checkpoints"]:
            c["ckptHash"] = _file_hash(tdir, c["path"])
    if batches:
        for s in m["segments"]:
            s["batchesHash"] = _file_hash(tdir, s["batches"])
    if norms:
        states = [decode_checkpoint((tdir / c["path"]).read_bytes()).model for c in m["checkpoints"]]
        for i, s in enumerate(m["segments"]):
            s["updateNorm"] = _update_norm(states[i], states[i + 1])
    m["chainHead"] = "0x" + chain_head([as_hash(c["ckptHash"]) for c in m["checkpoints"]]).hex()
    m["segmentRoot"] = "0x" + segment_tree(m).root.hex()
    write_manifest(tdir / MANIFEST_NAME, m)
    return m


def claim_tuple(tdir: Path, transcript_cid: str) -> tuple[Any, ...]:
    """The `TrainingClaim` struct (ABI order) a forger commits for this directory, taken from its manifest."""
    from registry.core.claims import TrainingClaim

    return TrainingClaim.from_manifest(read_manifest(tdir), transcript_cid).claim_tuple()


def _copy(honest: Path, out: Path) -> Path:
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(honest, out)
    return out


def forge_interpolated(honest: Path, out: Path) -> Forgery:
    """Every intermediate checkpoint replaced by the linear interpolation between the first and the last
    (weights and optimizer state): a "training run" made without training. Resealed completely."""
    tdir = _copy(honest, out)
    m = read_manifest(tdir)
    n = len(m["checkpoints"]) - 1
    first = decode_checkpoint((tdir / m["checkpoints"][0]["path"]).read_bytes())
    last = decode_checkpoint((tdir / m["checkpoints"][n]["path"]).read_bytes())

    def mix(a: Any, b: Any, t: float) -> Any:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            return (a * (1 - t) + b * t).contiguous()
        return a

    for i in range(1, n):
        t = i / n
        ck = decode_checkpoint((tdir / m["checkpoints"][i]["path"]).read_bytes())
        model = {k: mix(first.model[k], last.model[k], t) for k in ck.model}
        state = {pid: {k: mix(first.optimizer["state"].get(pid, {}).get(k, v), last.optimizer["state"][pid][k], t)
                       for k, v in entries.items()} for pid, entries in ck.optimizer["state"].items()}
        optim = {"state": state, "param_groups": ck.optimizer["param_groups"]}
        (tdir / m["checkpoints"][i]["path"]).write_bytes(encode_checkpoint(ck.index, ck.step, model, optim))
    reseal(tdir, batches=False, norms=True)
    return Forgery("interpolated", tdir, list(range(n)), "Invalid", "does not reproduce")


def forge_spliced(honest: Path, other_seed: Path, out: Path, index: int = 2) -> Forgery:
    """Checkpoint `index` replaced by checkpoint `index` of a run with another seed. Resealed."""
    tdir = _copy(honest, out)
    rel = read_manifest(tdir)["checkpoints"][index]["path"]
    shutil.copyfile(other_seed / rel, tdir / rel)
    reseal(tdir, batches=False, norms=True)
    return Forgery("spliced", tdir, [index - 1, index], "Invalid", "does not reproduce")


def forge_batches(honest: Path, out: Path, segment: int = 1, num_examples: int | None = None,
                  seed: int = 7) -> Forgery:
    """One step's example indices of `segment` replaced by other examples. Resealed."""
    tdir = _copy(honest, out)
    m = read_manifest(tdir)
    path = tdir / m["segments"][segment]["batches"]
    arr = np.load(path, allow_pickle=False)
    hi = num_examples if num_examples is not None else int(m["dataset"]["numExamples"])
    rng = np.random.default_rng(seed)
    arr[arr.shape[0] // 2] = rng.integers(0, hi, size=arr.shape[1], dtype=np.int64)
    np.save(path, arr, allow_pickle=False)
    reseal(tdir, checkpoints=False)
    return Forgery("batches", tdir, [segment], "Invalid", "does not reproduce")


def edit_batches(honest: Path, out: Path, edit: Callable[[np.ndarray], None], segment: int = 1) -> Path:
    """A copy of `honest` whose `segment` batch indices `edit` changed in place, everything resealed
    (`reseal_all`): the forger who rewrites who trained on what and recomputes every hash and root."""
    tdir = _copy(honest, out)
    m = read_manifest(tdir)
    path = tdir / m["segments"][segment]["batches"]
    arr = np.load(path, allow_pickle=False)
    edit(arr)
    np.save(path, arr, allow_pickle=False)
    reseal_all(tdir)
    return tdir


def forge_bad_hash(honest: Path, out: Path, index: int = 2) -> Forgery:
    """Checkpoint `index` edited after recording (a weight nudged) while the manifest keeps its old hash:
    the file does not match its committed hash. Not resealed."""
    tdir = _copy(honest, out)
    rel = read_manifest(tdir)["checkpoints"][index]["path"]
    ck = decode_checkpoint((tdir / rel).read_bytes())
    name = sorted(k for k, v in ck.model.items() if v.is_floating_point())[0]
    ck.model[name] = ck.model[name] + 0.01
    optim = {"state": ck.optimizer["state"], "param_groups": ck.optimizer["param_groups"]}
    (tdir / rel).write_bytes(encode_checkpoint(ck.index, ck.step, ck.model, optim))
    return Forgery("bad-hash", tdir, [index], "Invalid", "is not the manifest's")


def forge_path_escape(honest: Path, out: Path, index: int = 1) -> Forgery:
    """The manifest points checkpoint `index` outside the transcript directory ("../../..."); every digest
    is unchanged (paths are not committed), so the claim matches the honest one's roots."""
    tdir = _copy(honest, out)
    m = read_manifest(tdir)
    m["checkpoints"][index]["path"] = f"../../../../etc/{index:06d}.safetensors"
    write_manifest(tdir / MANIFEST_NAME, m)
    return Forgery("path-escape", tdir, [index], "Invalid", "non-canonical")


class _Payload:
    """Unpickling this creates `marker`: proof that someone ran the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.marker,))


def forge_pickle(honest: Path, out: Path, marker: Path, index: int = 2) -> Forgery:
    """Checkpoint `index` replaced by a torch pickle (torch.save of the same tensors plus an object whose
    unpickling creates `marker`). Resealed, so only its format gives it away; a verifier must refuse it
    without running it (check afterwards that `marker` does not exist)."""
    tdir = _copy(honest, out)
    rel = read_manifest(tdir)["checkpoints"][index]["path"]
    ck = decode_checkpoint((tdir / rel).read_bytes())
    torch.save({"model": ck.model, "payload": _Payload(marker)}, tdir / rel, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    reseal(tdir, batches=False)
    return Forgery("pickle", tdir, [index - 1, index], "Invalid", "safetensors", {"marker": str(marker)})


# ---------------------------------------------------------------------------------------------------------
# A cheating prover's tools for the soundness suite (issue 11): training on from an edited checkpoint the way
# a prover controls it (its own optimizer, hyperparameters from the checkpoint, its own declared learning
# rates), then resealing everything the prover controls.
# ---------------------------------------------------------------------------------------------------------


def write_checkpoint(tdir: Path, index: int, step: int, model: dict[str, torch.Tensor], optim: dict[str, Any]) -> None:
    m = read_manifest(tdir)
    (tdir / m["checkpoints"][index]["path"]).write_bytes(encode_checkpoint(index, step, model, optim))


def prover_continue(tdir: Path, start: int, dataset: Any, *, end: int | None = None) -> None:
    """Re-trains segments start .. end−1 from checkpoint `start` as the prover's own loop would: the model
    and optimizer rebuilt from the config, then the checkpoint's WHOLE optimizer state_dict loaded (param
    groups included, so hyperparameters forged into a checkpoint take effect), the manifest's declared
    learning rates, the committed per-step seeds. Writes checkpoints start+1 .. end (not resealed)."""
    from registry.pol.config import loss_function, rebuild_model, rebuild_optimizer, rng_seed_of
    from registry.pol.rng import GLOBAL_RNG_LOCK, seed_step

    m = read_manifest(tdir)
    cfg = m["config"]
    end = m["numSegments"] if end is None else end
    ck = decode_checkpoint((tdir / m["checkpoints"][start]["path"]).read_bytes())
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        model = rebuild_model(cfg)
        model.load_state_dict(ck.model)
        opt = rebuild_optimizer(cfg, model)
        from registry.pol.checkpoint import copy_optimizer_state

        opt.load_state_dict(copy_optimizer_state(ck.optimizer))
        model.train()
        for i in range(start, end):
            seg = m["segments"][i]
            batches = np.load(tdir / seg["batches"], allow_pickle=False)
            for j in range(batches.shape[0]):
                for g, lr in zip(opt.param_groups, seg["learningRates"][j], strict=True):
                    g["lr"] = float(lr)
                x, y = dataset.batch(batches[j])
                seed_step(rng_seed_of(cfg), seg["startStep"] + j)
                loss = loss_function(cfg)(model(x), y)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            sd = opt.state_dict()
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            write_checkpoint(tdir, i + 1, seg["endStep"], state, {"state": sd["state"],
                                                                  "param_groups": sd["param_groups"]})


def reseal_all(tdir: Path) -> dict[str, Any]:
    """Everything the prover controls, recomputed from the files: file hashes, update norms (parameters
    only, as the recorder does), finalWeightsHash, config init.weightsHash (from checkpoint 0), configHash,
    chainHead, segmentRoot."""
    from registry.core.hashing import config_hash, weights_hash
    from registry.pol.recorder import update_norm
    from registry.pol.replay import parameter_names

    m = read_manifest(tdir)
    ckpts = [decode_checkpoint((tdir / c["path"]).read_bytes()) for c in m["checkpoints"]]
    names = parameter_names(m["config"])
    for c in m["checkpoints"]:
        c["ckptHash"] = _file_hash(tdir, c["path"])
    for i, s in enumerate(m["segments"]):
        s["batchesHash"] = _file_hash(tdir, s["batches"])
        s["updateNorm"] = update_norm(ckpts[i].model, ckpts[i + 1].model, names)
    m["finalWeightsHash"] = "0x" + weights_hash(ckpts[-1].model).hex()
    if isinstance(m["config"].get("init"), dict):
        m["config"]["init"]["weightsHash"] = "0x" + weights_hash(ckpts[0].model).hex()
    m["configHash"] = "0x" + config_hash(m["config"]).hex()
    m["chainHead"] = "0x" + chain_head([as_hash(c["ckptHash"]) for c in m["checkpoints"]]).hex()
    m["segmentRoot"] = "0x" + segment_tree(m).root.hex()
    write_manifest(tdir / MANIFEST_NAME, m)
    return m
