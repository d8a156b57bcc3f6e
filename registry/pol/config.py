"""The training configuration of a transcript (what `configHash` commits to) and rebuilding from it.

Everything a verifier needs to re-execute a segment comes from here or from the checkpoint, never from code
in the transcript: the model family and its normalized arguments (`registry.models`), the parameter dtype,
the optimizer class (from a fixed allow-list) with its defaults and param groups (parameters by name), the
loss (from a fixed allow-list), batch size, steps per segment, the dataset root and the tolerance policy.

Config keys written by the recorder (format "proofreg-pol-config/1")::

    format, model: {family, args}, dtype, optimizer: {type, defaults, paramGroups: [{params: [names], ...}]},
    scheduler: {type} | null, loss, batchSize, stepsPerSegment, dataset: {datasetRoot, numExamples},
    rng: {scheme: "proofreg/pol-rng/1", seed}, tolerancePolicy

plus any user keys (seed, epochs, notes...) that do not collide with these.

The training step that replay performs, and that a recorded training loop must perform, is::

    model.train(); x, y = dataset.batch(indices)
    seed_step(rng seed, global step)                       # done by the recorder's forward hook
    loss = F.cross_entropy(model(x), y)                     # one training-mode forward
    loss.backward(); optimizer.step(); optimizer.zero_grad(set_to_none=True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from registry.models import GLOBAL_RNG_LOCK, build_model, get_family
from registry.pol.checkpoint import TranscriptError, from_json_group_value, json_scalar
from registry.pol.rng import RNG_SCHEME
from registry.pol.transcript import CONFIG_FORMAT

DEFAULT_TOLERANCE_POLICY = "pol-tolerance/1"

SUPPORTED_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "SGD": torch.optim.SGD,
    "Adam": torch.optim.Adam,
    "AdamW": torch.optim.AdamW,
    "RMSprop": torch.optim.RMSprop,
    "Adagrad": torch.optim.Adagrad,
}

SUPPORTED_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cross_entropy": F.cross_entropy,
}

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
                                  "bfloat16": torch.bfloat16}

#: Param-group keys that may change between steps (the learning rate is recorded per step); any other
#: hyperparameter changing mid-run (e.g. OneCycleLR cycling momentum) is refused by the recorder.
VARYING_GROUP_KEYS = frozenset({"params", "lr", "initial_lr"})


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


def rebuild_optimizer(config: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    """The config's optimizer over `model`'s parameters, param groups by name."""
    try:
        spec = config["optimizer"]
        cls = SUPPORTED_OPTIMIZERS[spec["type"]]
        params = dict(model.named_parameters())
        groups = []
        for g in spec["paramGroups"]:
            groups.append({"params": [params[n] for n in g["params"]],
                           **{k: from_json_group_value(v) for k, v in g.items() if k != "params"}})
        defaults = {k: from_json_group_value(v) for k, v in spec["defaults"].items()}
    except (KeyError, TypeError) as exc:
        raise TranscriptError(f"config optimizer cannot be rebuilt: {exc!r}") from exc
    try:
        return cls(groups, **defaults)
    except (TypeError, ValueError) as exc:
        raise TranscriptError(f"config optimizer cannot be rebuilt: {exc}") from exc


def rng_seed_of(config: Mapping[str, Any]) -> int:
    """The run's RNG seed, after checking the randomness scheme is the one this code replays."""
    rng = config.get("rng")
    if not isinstance(rng, dict) or rng.get("scheme") != RNG_SCHEME:
        raise TranscriptError(f"unsupported randomness scheme {rng!r}; expected {RNG_SCHEME!r}")
    seed = rng.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 64:
        raise TranscriptError(f"bad rng seed {seed!r}")
    return seed


def loss_function(config: Mapping[str, Any]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    name = config.get("loss")
    if name not in SUPPORTED_LOSSES:
        raise TranscriptError(f"unsupported loss {name!r}; supported: {sorted(SUPPORTED_LOSSES)}")
    return SUPPORTED_LOSSES[name]


def make_config(*, family: str, family_args: dict[str, Any], dtype: str, optimizer: dict[str, Any],
                scheduler: Any, loss: str, batch_size: int, steps_per_segment: int, dataset_root: str,
                num_examples: int, rng_seed: int, tolerance_policy: str,
                user: Mapping[str, Any] | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "format": CONFIG_FORMAT,
        "model": {"family": family, "args": family_args},
        "dtype": dtype,
        "optimizer": optimizer,
        "scheduler": None if scheduler is None else {"type": type(scheduler).__name__},
        "loss": loss,
        "batchSize": batch_size,
        "stepsPerSegment": steps_per_segment,
        "dataset": {"datasetRoot": dataset_root, "numExamples": num_examples},
        "rng": {"scheme": RNG_SCHEME, "seed": rng_seed},
        "tolerancePolicy": tolerance_policy,
    }
    for k, v in (user or {}).items():
        if k in config:
            raise TranscriptError(f"config key {k!r} is set by the recorder; choose another name")
        config[k] = v
    return config
