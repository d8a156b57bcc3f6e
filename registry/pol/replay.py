"""Re-execution of one transcript segment (SPEC section 6): the verifier's core, kept in the protocol package.

`replay_segment` loads checkpoint i (safetensors only, hash-checked against the manifest), rebuilds the model
from its family and the optimizer from the config's allow-list, and takes from the checkpoint only its state
tensors: the model's state_dict and the optimizer's per-parameter state (copied first: see
`copy_optimizer_state`). The checkpoint's param groups (learning rate, momentum, weight decay, maximize, betas,
eps...) are never loaded; they must agree with the config (`check_checkpoint_config`, the field is named
otherwise). It replays the batches with the learning rates of the committed schedule
(`registry.pol.config.learning_rates`, which the manifest's `learningRates` must equal) — per step: the
generators re-seeded for that step (`registry.pol.rng`), then `registry.pol.step.train_step`: the config's
micro-batches, autocast, loss, backward, clipping, `step()`, `zero_grad(set_to_none=True)` — and returns
the resulting model state_dict (`replay_segment_state`: and the optimizer's state). `state_distances`
compares that full state with checkpoint i+1.

Replaying on the machine, device and thread count of the recording gives ρ = 0 exactly; other thread counts
or hardware give small non-zero ρ, which the tolerance policy bounds. The caller's RNG states are restored
afterwards
(torch's; replay does not touch numpy's or Python's).
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from registry.core.hashing import as_hash, to_hex
from registry.pol.augment import augment_spec, augment_step
from registry.pol.checkpoint import (
    SCALER_STATE,
    Checkpoint,
    TranscriptError,
    copy_optimizer_state,
    read_checkpoint,
)
from registry.pol.config import (
    epoch_of_step,
    group_mismatches,
    learning_rates,
    rebuild_model,
    rebuild_optimizer,
    rng_seed_of,
)
from registry.pol.rng import GLOBAL_RNG_LOCK, seed_step
from registry.pol.step import StepSpec, make_grad_scaler, precision_flags, precision_spec, scaler_state, train_step
from registry.pol.transcript import load_manifest, read_batches
from registry.spec.datasets import Dataset


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
    if not names:
        err2 = upd2 = rep2 = dot = linf = 0.0
    else:
        # one flat float64 vector per state, one read-back of the five sums (no per-tensor syncs)
        def flat(sd: dict[str, torch.Tensor]) -> torch.Tensor:
            return torch.cat([sd[n].detach().to("cpu", torch.float64).reshape(-1) for n in names])

        w_new, w_next, w_0 = flat(replayed), flat(claimed_next), flat(start)
        e, u, r = w_new - w_next, w_next - w_0, w_new - w_0
        m = e.abs().max() if e.numel() else torch.zeros((), dtype=torch.float64)
        err2, upd2, rep2, dot, linf = torch.stack([e @ e, u @ u, r @ r, r @ u, m]).tolist()
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


def check_checkpoint_config(config: dict[str, Any], ckpt: Checkpoint, lrs: list[list[float]]) -> None:
    """A checkpoint may not carry another optimizer than the config's: every param-group hyperparameter must be
    the config's, and its learning rate the committed schedule's at its step (the rate of the step before or
    of the step after, depending on whether the loop stepped its scheduler before the snapshot). `lrs` must
    cover steps 0 .. ckpt.step. It holds GradScaler state exactly when the config declares a GradScaler, and at
    step 0 that state is the committed initScale with growth tracker 0. Raises `TranscriptError` naming the field."""
    bad = group_mismatches(config, ckpt.optimizer["param_groups"])
    if bad:
        raise TranscriptError(f"checkpoint {ckpt.index} hyperparameters disagree with the config: {bad[0]}")
    gs = precision_spec(config.get("precision")).get("gradScaler")
    if (gs is None) != (ckpt.scaler is None):
        raise TranscriptError(f"checkpoint {ckpt.index} {'lacks' if ckpt.scaler is None else 'holds'} GradScaler "
                              f"state but the config declares {'a GradScaler' if gs is not None else 'none'}")
    if gs is not None and ckpt.step == 0 and ckpt.scaler is not None and (
            float(ckpt.scaler["scale"]) != gs["initScale"] or int(ckpt.scaler["growthTracker"]) != 0):
        raise TranscriptError(f"checkpoint {ckpt.index} GradScaler state at step 0 is not the committed initScale "
                              f"{gs['initScale']:g} with growth tracker 0")
    s = ckpt.step
    allowed = [lrs[t] for t in (s - 1, s) if 0 <= t < len(lrs)]
    got = [float(g["lr"]) for g in ckpt.optimizer["param_groups"]]
    if allowed and got not in allowed:
        raise TranscriptError(f"checkpoint {ckpt.index} hyperparameters disagree with the config: param group "
                              f"lr {got} at step {s}, the committed schedule gives {allowed[-1]}")


def check_segment_declarations(config: dict[str, Any], seg: dict[str, Any], lrs: list[list[float]]) -> None:
    """The manifest's per-segment `learningRates` and `epoch` must be the ones the config gives (they are the
    prover's words; replay and sampling use the config's)."""
    i, a, b = seg["index"], int(seg["startStep"]), int(seg["endStep"])
    want = lrs[a:b]
    got = [[float(v) for v in r] for r in seg["learningRates"]]
    if got != want:
        t = next((j for j, (x, y) in enumerate(zip(got, want, strict=False)) if x != y), 0)
        raise TranscriptError(f"segment {i} learningRates differ from the committed schedule at step {a + t}: "
                              f"{got[t] if t < len(got) else None} vs {want[t] if t < len(want) else None}")
    epoch = epoch_of_step(config, a)
    if seg["epoch"] != epoch:
        raise TranscriptError(f"segment {i} declares epoch {seg['epoch']!r} but the config's stepsPerEpoch gives "
                              f"{epoch}")


#: model -> (the config's optimizer spec, an optimizer over that model built from it, its param groups as built):
#: contiguous segments replayed on one model re-use one optimizer, its state and groups reloaded every segment
_OPTIMIZERS: weakref.WeakKeyDictionary[torch.nn.Module, tuple[dict[str, Any], torch.optim.Optimizer,
                                                              list[dict[str, Any]]]] = weakref.WeakKeyDictionary()


def _optimizer_for(config: dict[str, Any], model: torch.nn.Module,
                   reuse: bool) -> tuple[torch.optim.Optimizer, list[dict[str, Any]]]:
    """The config's optimizer over `model` and a copy of its param groups as `rebuild_optimizer` built them.

    With `reuse` (a caller's model, re-used across segments) the optimizer is kept with the model and handed
    back while the config's optimizer spec is unchanged: `load_state_dict` replaces all of its state and every
    param group (with the rebuilt groups copied here), so it then holds exactly what a fresh one would."""
    cached = _OPTIMIZERS.get(model) if reuse else None
    if cached is not None and cached[0] == config["optimizer"]:
        return cached[1], copy.deepcopy(cached[2])
    optimizer = rebuild_optimizer(config, model)
    groups = optimizer.state_dict()["param_groups"]
    if reuse:
        _OPTIMIZERS[model] = (copy.deepcopy(config["optimizer"]), optimizer, copy.deepcopy(groups))
    return optimizer, groups


def replay_segment(transcript_dir: str | Path, index: int, dataset: Dataset, *,
                   device: torch.device | str = "cpu", manifest: dict[str, Any] | None = None,
                   checkpoint: Checkpoint | None = None,
                   batches: np.ndarray | None = None, model: torch.nn.Module | None = None,
                   lrs: list[list[float]] | None = None) -> dict[str, torch.Tensor]:
    """Re-executes segment `index` from checkpoint `index`; returns the model state_dict after its steps
    (`replay_segment_state` for the arguments)."""
    return replay_segment_state(transcript_dir, index, dataset, device=device, manifest=manifest,
                                checkpoint=checkpoint, batches=batches, model=model, lrs=lrs)[0]


def replay_segment_state(transcript_dir: str | Path, index: int, dataset: Dataset, *,
                         device: torch.device | str = "cpu", manifest: dict[str, Any] | None = None,
                         checkpoint: Checkpoint | None = None, batches: np.ndarray | None = None,
                         model: torch.nn.Module | None = None, lrs: list[list[float]] | None = None,
                         inputs: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
                         ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Re-executes segment `index` from checkpoint `index`; returns (model state_dict, optimizer state_dict)
    after its steps. With a GradScaler (float16), restored from the checkpoint, the optimizer state_dict also
    holds its state under "scaler" (`registry.pol.step.scaler_state`): state that belongs to the step.

    `dataset` must be the transcript's training set (its root is checked); `manifest` and `checkpoint` may be
    passed when already loaded (the checkpoint is not modified, so it can be re-used), and `batches` when the
    caller already read and hash-checked the segment's batch file (a verifier holding fetched bytes). `model`:
    one built by `rebuild_model` from this config on this device, re-used across segments (every parameter and
    buffer is overwritten from the checkpoint; rebuilding costs as much as a step of a small model); the
    optimizer built for it is kept with it and re-used likewise (`_optimizer_for`). `lrs`: the
    config's `learning_rates` for at least steps 0 .. endStep (computed here when not given). `inputs`: each
    step's (x, y) on the CPU, exactly `dataset.batch(batches[j])`, when the caller gathered them ahead."""
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
    if inputs is not None and len(inputs) != steps:
        raise TranscriptError(f"segment {index}: {len(inputs)} gathered inputs for {steps} steps")
    ckpt = checkpoint if checkpoint is not None else load_segment_checkpoint(tdir, m, index)
    if lrs is None or len(lrs) < seg["endStep"] + 1:
        lrs = learning_rates(config, int(seg["endStep"]) + 1)
    check_segment_declarations(config, seg, lrs)
    check_checkpoint_config(config, ckpt, lrs)
    dev = torch.device(device)
    spec = StepSpec.of(config)
    if int(m["batchSize"]) % spec.micro_batches:
        raise TranscriptError(f"batch size {m['batchSize']} does not split into {spec.micro_batches} micro-batches")
    rng_seed = rng_seed_of(config)
    augment = augment_spec(config.get("augment"))

    cuda = _cuda_index(dev)
    with (GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[cuda] if cuda is not None else []),
          precision_flags(spec.precision)):
        reuse = model is not None
        if model is None:
            model = rebuild_model(config, dev)
        try:
            model.load_state_dict(ckpt.model, strict=True)
        except RuntimeError as exc:
            raise TranscriptError(f"checkpoint {index} does not fit the config's model: {exc}") from exc
        optimizer, groups = _optimizer_for(config, model, reuse)
        # only the state tensors: the param groups (hyperparameters) are the config's, never the checkpoint's
        state = copy_optimizer_state(ckpt.optimizer)
        state["param_groups"] = groups
        try:
            optimizer.load_state_dict(state)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise TranscriptError(f"checkpoint {index} optimizer state does not fit: {exc}") from exc
        scaler = None
        if spec.grad_scaler is not None:
            assert ckpt.scaler is not None  # check_checkpoint_config
            scaler = make_grad_scaler(spec.grad_scaler, dev, ckpt.scaler)
        model.train()
        start = int(seg["startStep"])
        for j in range(steps):
            step_lrs = lrs[start + j]
            if len(step_lrs) != len(optimizer.param_groups):
                raise TranscriptError(f"segment {index} step {j} has {len(step_lrs)} learning rates for "
                                      f"{len(optimizer.param_groups)} param groups")
            for g, lr in zip(optimizer.param_groups, step_lrs, strict=True):
                g["lr"] = float(lr)
            if inputs is not None:
                x, y = inputs[j]
            else:
                x, y = dataset.batch(batches[j], None if augment else dev)
            if augment:  # on the CPU batch, with the step's own generator (registry.pol.augment)
                x = augment_step(augment, x, rng_seed, start + j)
            if dev.type != "cpu" and x.device != dev:
                x, y = x.to(dev), y.to(dev)
            seed_step(rng_seed, start + j, cuda)
            train_step(model, optimizer, spec, x, y, scaler)
        osd = optimizer.state_dict()
        if scaler is not None:
            osd["scaler"] = scaler_state(scaler)
    return {k: v.detach() for k, v in model.state_dict().items()}, osd


@dataclass(frozen=True)
class StateDistance:
    """One class of state compared at the end of a segment (parameters, float buffers, integer buffers, one
    optimizer state key). `distance`: for floating tensors ‖X′ − X_{i+1}‖₂ / ‖X_{i+1} − X_i‖₂ (ρ of that
    state; X_i = 0 where checkpoint i has none), for counts (integer buffers, `step`) max |X′ − X_{i+1}|.
    `worst`: the tensor with the largest error; `error`: a structural mismatch (missing/extra tensor)."""

    name: str
    distance: float
    threshold: float
    worst: str | None
    exact: bool
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and math.isfinite(self.distance) and self.distance <= self.threshold

    def to_json(self) -> dict[str, Any]:
        d = self.distance if math.isfinite(self.distance) else None
        return {"distance": d, "threshold": self.threshold, "worst": self.worst, "exact": self.exact,
                "passed": self.passed, "error": self.error}


def _f64(t: Any) -> torch.Tensor:
    return torch.as_tensor(t).detach().to("cpu", torch.float64).reshape(-1)


def _class_distance(name: str, pairs: list[tuple[str, Any, Any, Any]], threshold: float,
                    exact: bool) -> StateDistance:
    """pairs: (tensor name, replayed, claimed next, start or None)."""
    err2 = upd2 = 0.0
    worst, worst_err, dmax = None, -1.0, 0.0
    for tname, rep, nxt, start in pairs:
        r, n = _f64(rep), _f64(nxt)
        if r.shape != n.shape:
            return StateDistance(name, math.inf, threshold, tname, exact, f"{tname} has shape {tuple(r.shape)} "
                                 f"after replay, {tuple(n.shape)} in the checkpoint")
        e = r - n
        e2 = float(e @ e)
        if exact:
            d = float(e.abs().max()) if e.numel() else 0.0
            if not math.isfinite(d):
                d = math.inf
            dmax = max(dmax, d)
            e2 = d
        else:
            fits = start is not None and torch.as_tensor(start).numel() == n.numel()
            s = _f64(start) if fits else torch.zeros_like(n)
            u = n - s
            err2 += e2
            upd2 += float(u @ u)
        if e2 > worst_err or (math.isnan(e2) and worst is None):
            worst, worst_err = tname, e2
    if exact:
        return StateDistance(name, dmax, threshold, worst if dmax > 0 else None, exact)
    err, upd = err2 ** 0.5, upd2 ** 0.5
    dist = err / upd if upd > 0 else (0.0 if err == 0 else math.inf)
    if math.isnan(dist):
        dist = math.inf
    return StateDistance(name, dist, threshold, worst if err > 0 else None, exact)


def state_distances(replayed_model: dict[str, torch.Tensor], replayed_optim: dict[str, Any], start: Checkpoint,
                    end: Checkpoint, config: dict[str, Any], threshold: float,
                    exact_threshold: float = 0.0) -> list[StateDistance]:
    """Replayed buffers and optimizer state against checkpoint i+1, one `StateDistance` per class: "buffers"
    (floating non-parameter state_dict entries, e.g. BatchNorm running statistics), "buffers.int" (integer
    ones, e.g. num_batches_tracked), and "optim.<key>" for every optimizer state key (momentum_buffer,
    exp_avg, exp_avg_sq; "step" is a count), and "scaler" (the GradScaler's scale and growth tracker, compared
    exactly) when the run has one. Parameters are `segment_distance`'s ρ. Names in `worst` are
    "model.<name>", "optim.<parameter name>.<key>" and "scaler.<key>"."""
    pnames = [n for g in config["optimizer"]["paramGroups"] for n in g["params"]]
    params = set(pnames)
    out: list[StateDistance] = []
    fb: list[tuple[str, Any, Any, Any]] = []
    ib: list[tuple[str, Any, Any, Any]] = []
    missing = sorted(set(replayed_model) ^ set(end.model))
    if missing:
        out.append(StateDistance("buffers", math.inf, threshold, f"model.{missing[0]}", False,
                                 f"model.{missing[0]} is in only one of the replayed state and the checkpoint"))
        return out
    for n in sorted(replayed_model):
        if n in params:
            continue
        row = (f"model.{n}", replayed_model[n], end.model[n], start.model.get(n))
        (fb if replayed_model[n].is_floating_point() else ib).append(row)
    if fb:
        out.append(_class_distance("buffers", fb, threshold, False))
    if ib:
        out.append(_class_distance("buffers.int", ib, exact_threshold, True))
    rep_state: dict[int, dict[str, Any]] = {int(k): v for k, v in replayed_optim["state"].items()}
    end_state: dict[int, dict[str, Any]] = {int(k): v for k, v in end.optimizer["state"].items()}
    start_state: dict[int, dict[str, Any]] = {int(k): v for k, v in start.optimizer["state"].items()}

    def pname(pid: int) -> str:
        return pnames[pid] if 0 <= pid < len(pnames) else str(pid)

    rows: dict[str, list[tuple[str, Any, Any, Any]]] = {}
    for pid in sorted(set(rep_state) | set(end_state)):
        a, b = rep_state.get(pid, {}), end_state.get(pid, {})
        for key in sorted(set(a) | set(b)):
            tname = f"optim.{pname(pid)}.{key}"
            if key not in a or key not in b:
                out.append(StateDistance(f"optim.{key}", math.inf, threshold, tname, False,
                                         f"{tname} is in only one of the replayed state and checkpoint {end.index}"))
                continue
            rows.setdefault(key, []).append((tname, a[key], b[key], start_state.get(pid, {}).get(key)))
    for key, pairs in sorted(rows.items()):
        exact = key == "step" or not all(torch.as_tensor(p[1]).is_floating_point() for p in pairs)
        out.append(_class_distance(f"optim.{key}", pairs, exact_threshold if exact else threshold, exact))
    rep_scaler = replayed_optim.get("scaler")
    if rep_scaler is not None or end.scaler is not None:
        if rep_scaler is None or end.scaler is None:
            out.append(StateDistance("scaler", math.inf, exact_threshold, "scaler.scale", True,
                                     f"GradScaler state is in only one of the replayed state and checkpoint "
                                     f"{end.index}"))
        else:
            out.append(_class_distance("scaler", [(f"scaler.{k}", rep_scaler[k], end.scaler[k], None)
                                                  for k in sorted(SCALER_STATE)], exact_threshold, True))
    return out


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
