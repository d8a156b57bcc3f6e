"""The training configuration of a transcript (what `configHash` commits to) and rebuilding from it.

Everything a verifier needs to re-execute a segment comes from here or from the checkpoint, never from code
in the transcript: the model family and its normalized arguments (`registry.spec.models`), the parameter dtype,
the optimizer class (from a fixed allow-list) with its defaults and param groups (parameters by name), the
loss (from a fixed allow-list), batch size, steps per segment, the dataset root and the tolerance policy.

Config keys written by the recorder (format "proofreg-pol-config/2")::

    format, model: {family, args}, dtype, optimizer: {type, defaults, paramGroups: [{params: [names], ...}]},
    scheduler: {type, args, every} | null, loss (a name or {type, options}: `registry.pol.step`), batchSize,
    stepsPerSegment, stepsPerEpoch,
    dataset: {datasetRoot, numExamples}, rng: {scheme: "proofreg/pol-rng/1", seed},
    init: {origin: "seed", seed, weightsHash} | {origin: "parent", parentClaimId, weightsHash}
          | {origin: "external", weightsHash},
    tolerancePolicy,
    clip: {type: "norm", maxNorm, normType} | {type: "value", clipValue}   (only when the run clips)
    accumulation: {microBatches: n}                                        (only when n > 1)
    distributed: {worldSize: W}                                            (only when W > 1: a DDP run;
                 microBatches is then W x the local micro-batches, rank-major, see `registry.pol.step`)
    precision: {autocast, matmulPrecision, cudnnTf32}                      (only when not torch's defaults)
               + gradScaler: {initScale, growthFactor, backoffFactor, growthInterval}   (autocast float16 only)

plus any user keys (seed, epochs, notes...) that do not collide with these.

The rule this module serves (docs/threat-model.md): every value replay or sampling reads is bound by the claim.
The verifier builds model, optimizer, scheduler and loss from this config only; a checkpoint contributes
state tensors and nothing else, and its param groups must agree with the config (`group_mismatches`). The
learning rate of global step t is `learning_rates(config, n)[t]` (the committed scheduler stepped t // every
times) and the epoch of step t is t // stepsPerEpoch; neither is taken from the manifest.

The training step that replay performs, and that a recorded training loop must perform, is
`registry.pol.step.train_step` (one module, used by replay, the self-check and `Recorder.train_step`)::

    model.train(); x, y = dataset.batch(indices)
    seed_step(rng seed, global step)                       # done by the recorder's forward hook
    for each of the n micro-batches (xm, ym) of (x, y):    # n = accumulation.microBatches, else 1
        with autocast(precision.autocast):                 # only when declared
            loss = <config loss>(model(xm), ym)            # one training-mode forward per micro-batch
        (loss / n).backward()                              # loss.backward() when n == 1
    clip (when declared); optimizer.step(); optimizer.zero_grad(set_to_none=True)

with `precision.gradScaler` (float16), the scaler restored from the checkpoint's `scaler.*` state::

        scaler.scale(loss / n).backward()                  # per micro-batch
    scaler.unscale_(optimizer); clip                       # only when clipping is declared
    scaler.step(optimizer); scaler.update(); optimizer.zero_grad(set_to_none=True)
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from registry.core.hashing import to_hex, weights_hash
from registry.pol.augment import augment_spec
from registry.pol.checkpoint import TranscriptError, from_json_group_value, json_scalar
from registry.pol.rng import RNG_SCHEME
from registry.pol.step import (
    LOSS_TYPES,
    clip_spec,
    loss_callable,
    loss_spec,
    micro_batches_of,
    precision_spec,
    world_size_of,
)
from registry.pol.transcript import CONFIG_FORMAT
from registry.spec.models import GLOBAL_RNG_LOCK, build_model, get_family, initial_state

DEFAULT_TOLERANCE_POLICY = "pol-tolerance/1"

SUPPORTED_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "SGD": torch.optim.SGD,
    "Adam": torch.optim.Adam,
    "AdamW": torch.optim.AdamW,
    "RMSprop": torch.optim.RMSprop,
    "Adagrad": torch.optim.Adagrad,
}

#: Loss names a config may give (options: `registry.pol.step.LOSS_OPTIONS`).
SUPPORTED_LOSSES = LOSS_TYPES

#: Config keys the recorder writes only when the run uses them (an absent key keeps older configs, and
#: their configHash, unchanged); a user key may not take their names.
OPTIONAL_KEYS = frozenset({"clip", "accumulation", "distributed", "precision", "augment"})

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
                                  "bfloat16": torch.bfloat16}

#: Param-group keys that may change between steps (the learning rate is recorded per step); any other
#: hyperparameter changing mid-run (e.g. OneCycleLR cycling momentum) is refused by the recorder.
VARYING_GROUP_KEYS = frozenset({"params", "lr", "initial_lr"})

#: LR schedulers a config may name, with the constructor arguments that define each (read back from the
#: scheduler object, rebuilt by the verifier from the config alone).
SUPPORTED_SCHEDULERS: dict[str, tuple[type[Any], tuple[str, ...]]] = {
    "StepLR": (torch.optim.lr_scheduler.StepLR, ("step_size", "gamma")),
    "MultiStepLR": (torch.optim.lr_scheduler.MultiStepLR, ("milestones", "gamma")),
    "ExponentialLR": (torch.optim.lr_scheduler.ExponentialLR, ("gamma",)),
    "CosineAnnealingLR": (torch.optim.lr_scheduler.CosineAnnealingLR, ("T_max", "eta_min")),
    "LinearLR": (torch.optim.lr_scheduler.LinearLR, ("start_factor", "end_factor", "total_iters")),
    "ConstantLR": (torch.optim.lr_scheduler.ConstantLR, ("factor", "total_iters")),
    "PolynomialLR": (torch.optim.lr_scheduler.PolynomialLR, ("total_iters", "power")),
}

#: Hugging Face's warmup schedules (`transformers.optimization.get_*_schedule_with_warmup`, a LambdaLR over a
#: partial of a module-level function): recognised by that function's name and keywords, never called. The
#: verifier computes the same factors with `_hf_factor` (the recorder checks every recorded rate against it).
HF_SCHEDULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "HFConstantWarmup": ("_get_constant_schedule_with_warmup_lr_lambda", ("num_warmup_steps",)),
    "HFLinearWarmup": ("_get_linear_schedule_with_warmup_lr_lambda", ("num_warmup_steps", "num_training_steps")),
    "HFCosineWarmup": ("_get_cosine_schedule_with_warmup_lr_lambda",
                       ("num_warmup_steps", "num_training_steps", "num_cycles", "min_lr_rate")),
}
_HF_DEFAULTS: dict[str, Any] = {"min_lr_rate": 0.0}

INIT_ORIGINS = ("seed", "parent", "external")
#: The contract's `InitOrigin` enum (Seed, Parent, External) by config origin.
ORIGIN_CODE = {"seed": 0, "parent": 1, "external": 2}


def parameter_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    """For each param group, the model names of its parameters (every optimizer parameter must be the model's)."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for gi, g in enumerate(optimizer.param_groups):
        names = []
        for p in g["params"]:
            if id(p) not in by_id:
                raise TranscriptError(f"optimizer param group {gi} holds a tensor that is not a model parameter")
            names.append(by_id[id(p)])
        groups.append(names)
    return groups


def describe_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    kind = type(optimizer).__name__
    if SUPPORTED_OPTIMIZERS.get(kind) is not type(optimizer):
        raise TranscriptError(f"optimizer {type(optimizer).__module__}.{kind} is not supported; "
                              f"supported: {sorted(SUPPORTED_OPTIMIZERS)} from torch.optim")
    names = parameter_names(model, optimizer)
    groups = []
    for gi, (g, n) in enumerate(zip(optimizer.param_groups, names, strict=True)):
        groups.append({"params": n, **{k: json_scalar(v, f"param group {gi} {k}") for k, v in g.items()
                                       if k != "params"}})
    defaults = {k: json_scalar(v, f"optimizer default {k}") for k, v in optimizer.defaults.items()}
    return {"type": kind, "defaults": defaults, "paramGroups": groups}


def model_dtype(model: nn.Module) -> str:
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(dtypes) != 1:
        raise TranscriptError(f"model parameters must share one floating dtype, found {sorted(map(str, dtypes))}")
    dtype = next(iter(dtypes))
    for name, d in DTYPES.items():
        if d == dtype:
            return name
    raise TranscriptError(f"unsupported parameter dtype {dtype}")


def check_model_matches_family(model: nn.Module, family: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Normalized family args, after checking that the family rebuilds this model's exact state_dict layout."""
    fam = get_family(family)
    normalized = fam.normalize_args(args)
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        ref = fam.build(normalized)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    if got != want:
        diff = sorted(set(got) ^ set(want)) or sorted(k for k in got if got[k] != want[k])
        raise TranscriptError(f"model does not match family {family!r} with these arguments (differs at "
                              f"{diff[:5]}); verifiers rebuild it from the family")
    if family.startswith("hf-"):
        from registry.spec import hf

        running = hf.running_differences(model, normalized)
        if running:
            key, (live, committed) = next(iter(running.items()))
            more = f" (and {len(running) - 1} more)" if len(running) > 1 else ""
            raise TranscriptError(f"the model runs with {key} = {live!r} but the family arguments give {committed!r}"
                                  f"{more}; pass it in family_args: verifiers build the model from them")
    return normalized


def rebuild_model(config: Mapping[str, Any], device: torch.device | str = "cpu") -> nn.Module:
    """A model of the config's family, dtype and device (initial values are overwritten by a checkpoint)."""
    try:
        spec = config["model"]
        dtype = DTYPES[config["dtype"]]
    except (KeyError, TypeError) as exc:
        raise TranscriptError(f"config lacks a usable model/dtype: {exc!r}") from exc
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        model = build_model(spec["family"], spec["args"])
    return model.to(device=device, dtype=dtype)


def _constructor_keywords(cls: type[torch.optim.Optimizer]) -> frozenset[str]:
    return frozenset(inspect.signature(cls.__init__).parameters) - {"self", "params"}


def rebuild_optimizer(config: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    """The config's optimizer over `model`'s parameters, param groups by name.

    Built with the constructor's own keywords only: `defaults` also holds keys a constructor sets itself
    (AdamW's `decoupled_weight_decay`), which it would refuse as arguments. The rebuilt optimizer must then
    hold exactly the committed defaults and groups (`check_optimizer_rebuilds`), or the config is refused."""
    try:
        spec = config["optimizer"]
        cls = SUPPORTED_OPTIMIZERS[spec["type"]]
        params = dict(model.named_parameters())
        groups = []
        for g in spec["paramGroups"]:
            groups.append({"params": [params[n] for n in g["params"]],
                           **{k: from_json_group_value(v) for k, v in g.items() if k != "params"}})
        keywords = _constructor_keywords(cls)
        defaults = {k: from_json_group_value(v) for k, v in spec["defaults"].items() if k in keywords}
    except (KeyError, TypeError) as exc:
        raise TranscriptError(f"config optimizer cannot be rebuilt: {exc!r}") from exc
    try:
        optimizer = cls(groups, **defaults)
    except (TypeError, ValueError) as exc:
        raise TranscriptError(f"config optimizer cannot be rebuilt: {exc}") from exc
    problems = optimizer_differences(spec, describe_optimizer(model, optimizer))
    if problems:
        raise TranscriptError(f"config optimizer does not rebuild as committed: {problems[0]}")
    return optimizer


def optimizer_differences(committed: Mapping[str, Any], rebuilt: Mapping[str, Any]) -> list[str]:
    """Where an optimizer rebuilt from its description differs from the description (empty: identical)."""
    out = []
    for key in sorted(set(committed.get("defaults", {})) | set(rebuilt.get("defaults", {}))):
        a, b = committed.get("defaults", {}).get(key, "<absent>"), rebuilt.get("defaults", {}).get(key, "<absent>")
        if _norm(a) != _norm(b):
            out.append(f"option {key!r} is {a!r} but a {committed.get('type')} rebuilt from the config has {b!r}")
    ca, cb = committed.get("paramGroups", []), rebuilt.get("paramGroups", [])
    if len(ca) != len(cb):
        out.append(f"{len(ca)} param groups committed, {len(cb)} rebuilt")
    for gi, (ga, gb) in enumerate(zip(ca, cb, strict=False)):
        for key in sorted(set(ga) | set(gb)):
            if _norm(ga.get(key, "<absent>")) != _norm(gb.get(key, "<absent>")):
                out.append(f"param group {gi} {key!r} is {ga.get(key, '<absent>')!r} but rebuilds as "
                           f"{gb.get(key, '<absent>')!r}")
    return out


def rng_seed_of(config: Mapping[str, Any]) -> int:
    """The run's RNG seed, after checking the randomness scheme is the one this code replays."""
    rng = config.get("rng")
    if not isinstance(rng, dict) or rng.get("scheme") != RNG_SCHEME:
        raise TranscriptError(f"unsupported randomness scheme {rng!r}; expected {RNG_SCHEME!r}")
    seed = rng.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 64:
        raise TranscriptError(f"bad rng seed {seed!r}")
    return seed


def loss_function(config: Mapping[str, Any]) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    return loss_callable(config.get("loss"))


def _hf_schedule(scheduler: Any) -> dict[str, Any] | None:
    """The config entry of a Hugging Face warmup schedule, or None when `scheduler` is not one."""
    if type(scheduler) is not torch.optim.lr_scheduler.LambdaLR:
        return None
    fns = list(getattr(scheduler, "lr_lambdas", []))
    if not fns or not all(isinstance(f, functools.partial) for f in fns):
        return None
    f = fns[0]
    if getattr(f.func, "__module__", None) != "transformers.optimization":
        return None
    kind = next((k for k, (fn, _) in HF_SCHEDULES.items() if f.func.__name__ == fn), None)
    if kind is None or f.args or any(g.func is not f.func or g.args or g.keywords != f.keywords for g in fns):
        raise TranscriptError(f"Hugging Face schedule {f.func.__name__} is not supported; supported: "
                              f"{sorted(fn for fn, _ in HF_SCHEDULES.values())} (the same for every param group)")
    names = HF_SCHEDULES[kind][1]
    kw = {**{k: v for k, v in _HF_DEFAULTS.items() if k in names}, **f.keywords}
    if set(kw) != set(names):
        raise TranscriptError(f"Hugging Face schedule {f.func.__name__} has arguments {sorted(kw)}, expected "
                              f"{list(names)}")
    return {"type": kind, "args": {k: json_scalar(kw[k], f"scheduler {k}") for k in names}}


def _hf_factor(kind: str, args: Mapping[str, Any]) -> Callable[[int], float]:
    """The LR factor of step t of a Hugging Face warmup schedule: the formulas of transformers 5.17's
    `_get_*_schedule_with_warmup_lr_lambda`, computed in the same float operations."""
    names = HF_SCHEDULES[kind][1]
    if set(args) != set(names):
        raise TranscriptError(f"scheduler {kind} needs arguments {list(names)}")
    for k in ("num_warmup_steps", "num_training_steps"):
        v = args.get(k, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise TranscriptError(f"scheduler {kind} {k} must be a non-negative integer, not {v!r}")
    for k in ("num_cycles", "min_lr_rate"):
        v = args.get(k, 0.0)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise TranscriptError(f"scheduler {kind} {k} must be a finite number, not {v!r}")
    warm = int(args["num_warmup_steps"])
    if kind == "HFConstantWarmup":
        return lambda t: float(t) / float(max(1.0, warm)) if t < warm else 1.0
    total = int(args["num_training_steps"])
    if kind == "HFLinearWarmup":
        return lambda t: (float(t) / float(max(1, warm)) if t < warm
                          else max(0.0, float(total - t) / float(max(1, total - warm))))
    cycles, floor = float(args["num_cycles"]), float(args["min_lr_rate"])

    def cosine(t: int) -> float:
        if t < warm:
            return float(t) / float(max(1, warm))
        progress = float(t - warm) / float(max(1, total - warm))
        factor = 0.5 * (1.0 + math.cos(math.pi * float(cycles) * 2.0 * progress))
        return max(0, factor * (1 - floor) + floor)

    return cosine


def describe_scheduler(scheduler: Any, every: int | None) -> dict[str, Any] | None:
    """The config's `scheduler`: type, defining arguments, and `every` (optimizer steps per scheduler.step(),
    null when it was never stepped)."""
    if scheduler is None:
        return None
    hf = _hf_schedule(scheduler)
    if hf is not None:
        return {**hf, "every": every}
    kind = type(scheduler).__name__
    entry = SUPPORTED_SCHEDULERS.get(kind)
    if entry is None or entry[0] is not type(scheduler):
        raise TranscriptError(f"LR scheduler {type(scheduler).__module__}.{kind} is not supported; supported: "
                              f"{sorted(SUPPORTED_SCHEDULERS)} from torch.optim.lr_scheduler, and Hugging Face's "
                              "constant / linear / cosine warmup schedules")
    args: dict[str, Any] = {}
    for name in entry[1]:
        value = getattr(scheduler, name)
        if name == "milestones":
            value = sorted(int(m) for m, c in dict(value).items() for _ in range(int(c)))
        args[name] = json_scalar(value, f"scheduler {name}")
    return {"type": kind, "args": args, "every": every}


def _base_lrs(config: Mapping[str, Any]) -> list[float]:
    groups = config["optimizer"]["paramGroups"]
    return [float(g.get("initial_lr", g["lr"])) for g in groups]


def learning_rates(config: Mapping[str, Any], num_steps: int) -> list[list[float]]:
    """The learning rate of every param group at global steps 0 .. num_steps−1, from the config alone: the
    committed scheduler (on a stand-in optimizer with the committed base rates) after t // every steps, or
    the committed constant rates without one. The recorder refuses a run whose optimizer used other rates."""
    try:
        groups = config["optimizer"]["paramGroups"]
        lr0 = [float(g["lr"]) for g in groups]
        spec = config.get("scheduler")
        if spec is None:
            return [list(lr0) for _ in range(num_steps)]
        args = spec["args"]
        every = spec.get("every")
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise TranscriptError(f"scheduler every {every!r} must be a positive integer or null")
        dummy = torch.optim.SGD([{"params": [torch.zeros(0)], "lr": b} for b in _base_lrs(config)], lr=1.0)
        sched: Any
        if spec["type"] in HF_SCHEDULES:
            sched = torch.optim.lr_scheduler.LambdaLR(dummy, _hf_factor(spec["type"], args))
        else:
            cls, names = SUPPORTED_SCHEDULERS[spec["type"]]
            if set(args) != set(names):
                raise TranscriptError(f"scheduler {spec['type']} needs arguments {list(names)}")
            sched = cls(dummy, **{k: (list(v) if isinstance(v, list) else v) for k, v in args.items()})
    except TranscriptError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TranscriptError(f"config scheduler cannot be rebuilt: {exc!r}") from exc
    out: list[list[float]] = []
    count = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": the stand-in never steps
        for t in range(num_steps):
            want = 0 if every is None else t // every
            while count < want:
                sched.step()
                count += 1
            out.append([float(g["lr"]) for g in dummy.param_groups])
    if out and out[0] != lr0:
        raise TranscriptError(f"the config's scheduler starts at learning rates {out[0]}, its param groups say {lr0}")
    return out


def steps_per_epoch(config: Mapping[str, Any]) -> int:
    spe = config.get("stepsPerEpoch")
    if isinstance(spe, bool) or not isinstance(spe, int) or spe < 1:
        raise TranscriptError(f"config stepsPerEpoch {spe!r} must be a positive integer")
    return spe


def epoch_of_step(config: Mapping[str, Any], step: int) -> int:
    """The epoch of global step `step`, from the committed `stepsPerEpoch` (never from the manifest)."""
    return int(step) // steps_per_epoch(config)


def _norm(v: Any) -> Any:
    return [_norm(x) for x in v] if isinstance(v, list | tuple) else v


def group_mismatches(config: Mapping[str, Any], groups: list[dict[str, Any]]) -> list[str]:
    """Where a checkpoint's optimizer param groups disagree with the committed config: every hyperparameter
    except the learning rate (set per step from the schedule) must be the config's, and each group must hold
    the config group's parameters. Each entry names the group and field."""
    want = config["optimizer"]["paramGroups"]
    if len(groups) != len(want):
        return [f"param groups: {len(groups)} in the checkpoint, {len(want)} in the config"]
    out = []
    offset = 0
    for gi, (g, w) in enumerate(zip(groups, want, strict=True)):
        ids = list(range(offset, offset + len(w["params"])))
        offset += len(w["params"])
        if list(g.get("params", [])) != ids:
            out.append(f"param group {gi} params")
        keys = (set(g) | set(w)) - VARYING_GROUP_KEYS
        for k in sorted(keys):
            if k not in g or k not in w or _norm(g[k]) != _norm(w[k]):
                out.append(f"param group {gi} {k} (checkpoint {g.get(k)!r}, config {w.get(k)!r})")
    return out


def init_state(config: Mapping[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """The family's fresh state_dict from `seed` (`registry.spec.models.initial_state`: built on the CPU right after
    seeding torch's generator, the committed generator), cast to the config's dtype. Bit-exact on any machine
    with the same torch build."""
    try:
        spec = config["model"]
        dtype = DTYPES[config["dtype"]]
    except (KeyError, TypeError) as exc:
        raise TranscriptError(f"config lacks a usable model/dtype: {exc!r}") from exc
    state = initial_state(spec["family"], spec["args"], seed)
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def init_spec_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config's `init` entry, checked: origin, seed / parent claim id, weightsHash (0x-hex)."""
    init = config.get("init")
    if not isinstance(init, dict) or init.get("origin") not in INIT_ORIGINS:
        raise TranscriptError(f"config commits no initialization origin (init: {init!r}); expected one of "
                              f"{list(INIT_ORIGINS)}")
    wh = init.get("weightsHash")
    if not isinstance(wh, str) or len(wh) != 66 or not wh.startswith("0x"):
        raise TranscriptError("config init.weightsHash is not a 0x-prefixed 32-byte hex string")
    origin = init["origin"]
    if origin == "seed":
        seed = init.get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 63:
            raise TranscriptError(f"config init.seed {seed!r} is not a usable seed")
    if origin == "parent":
        pid = init.get("parentClaimId")
        if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < 1 << 64:
            raise TranscriptError(f"config init.parentClaimId {pid!r} is not a claim id")
    return init


def make_init(origin: str, model_state: Mapping[str, torch.Tensor], *, seed: int | None = None,
              parent_claim_id: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"origin": origin, "weightsHash": to_hex(weights_hash(model_state))}
    if origin == "seed":
        out["seed"] = seed
    elif origin == "parent":
        out["parentClaimId"] = parent_claim_id
    return out


def make_config(*, family: str, family_args: dict[str, Any], dtype: str, optimizer: dict[str, Any],
                scheduler: dict[str, Any] | None, loss: str | Mapping[str, Any], batch_size: int,
                steps_per_segment: int,
                dataset_root: str, num_examples: int, rng_seed: int, tolerance_policy: str,
                user: Mapping[str, Any] | None, steps_per_epoch: int = 1,
                init: dict[str, Any] | None = None, clip: Mapping[str, Any] | None = None,
                micro_batches: int = 1, precision: Mapping[str, Any] | None = None,
                augment: Sequence[Mapping[str, Any]] | None = None, world_size: int = 1) -> dict[str, Any]:
    config: dict[str, Any] = {
        "format": CONFIG_FORMAT,
        "model": {"family": family, "args": family_args},
        "dtype": dtype,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "loss": loss_spec(loss).to_config(),
        "batchSize": batch_size,
        "stepsPerSegment": steps_per_segment,
        "stepsPerEpoch": steps_per_epoch,
        "dataset": {"datasetRoot": dataset_root, "numExamples": num_examples},
        "rng": {"scheme": RNG_SCHEME, "seed": rng_seed},
        "init": init,
        "tolerancePolicy": tolerance_policy,
    }
    clip_config = clip_spec(clip)
    if clip_config is not None:
        config["clip"] = clip_config
    if micro_batches != 1:
        config["accumulation"] = {"microBatches": micro_batches}
        micro_batches_of(config)
    if world_size != 1:
        config["distributed"] = {"worldSize": world_size}
        world_size_of(config)
    if precision is not None:
        config["precision"] = precision_spec(precision)
    augment_ops = augment_spec(augment)
    if augment_ops is not None:
        config["augment"] = augment_ops
    for k, v in (user or {}).items():
        if k in config or k in OPTIONAL_KEYS:
            raise TranscriptError(f"config key {k!r} is set by the recorder; choose another name")
        config[k] = v
    return config
