"""Model families that verifiers rebuild from a family name plus JSON arguments (SPEC section 3).

A transcript names a family and its arguments; a verifier calls `build_model(family, args)` and never runs
code that came with the transcript. Built in: `mlp`, `cnn`, `resnet20`; `spec` (a tree of standard torch.nn
modules as data, `registry.spec.modelspec`); and `hf-causal-lm`, `hf-masked-lm`, `hf-sequence-classification`,
`hf-image-classification` (Hugging Face models from their config, `registry.spec.hf`). See docs/models.md.

Plugins are Python entry points in the group `proofreg.models`, loaded only when the verifier's operator
lists their names, in the environment variable `PROOFREG_MODEL_PLUGINS` (comma-separated) or through
`allow_plugins`; `family_origin` says which one a model came from, for the report. A plugin can never
replace a built-in family.

`initial_state(family, args, seed)` is checkpoint 0 of an honest run: the model built on CPU right after
`torch.manual_seed(seed)`, each module initialized by its own `reset_parameters` (bit-exact on CPU).

Each family also declares its initializer: `init_spec(model)` maps every `state_dict` entry to the
distribution it was drawn from at construction (`Uniform`, `Normal` or `Constant`), so that the verifier's
Kolmogorov–Smirnov check of checkpoint 0 (SPEC section 5) compares against something explicit:

- `nn.Linear` / `nn.Conv*d` with torch's default init (`kaiming_uniform_(a=√5)`): weight and bias are
  `Uniform(-1/√fan_in, 1/√fan_in)`, fan_in = `weight.shape[1] * prod(kernel size)`.
- `resnet20` re-initializes conv and linear weights with `kaiming_normal_(mode="fan_in",
  nonlinearity="relu")`: `Normal(0, √(2/fan_in))`; the linear bias keeps torch's default uniform.
- `nn.BatchNorm*d`: weight `Constant(1)`, bias `Constant(0)`, running_mean `Constant(0)`, running_var
  `Constant(1)`, num_batches_tracked `Constant(0)`.

`normalize_args` fills defaults and rejects unknown or ill-typed arguments; the normalized dict is what a
recorder writes into the training configuration (and so into `configHash`).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ENTRY_POINT_GROUP = "proofreg.models"
#: Comma-separated names of the entry-point plugins the operator allows (none by default).
PLUGINS_ENV = "PROOFREG_MODEL_PLUGINS"

#: torch's default generators are process-wide. Whatever seeds and draws from them, or saves and restores
#: them (`fork_rng`: building a model, a replay, the initialization check), holds this lock, so that audits
#: in one process (the daemon's worker threads, verifier nodes run as threads) never touch each other's streams.
GLOBAL_RNG_LOCK = threading.RLock()
_FAMILY_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


class ModelFamilyError(ValueError):
    """A family that does not exist, or arguments it does not accept."""


class UnknownFamilyError(ModelFamilyError, LookupError):
    """The family is neither built in nor installed as a plugin by the operator."""


# ---------------------------------------------------------------------------------------------------------
# Initializer distributions
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Uniform:
    """U(low, high): torch's default for Linear/Conv weights and biases."""

    low: float
    high: float

    def cdf(self, x: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(x, np.float64) - self.low) / (self.high - self.low), 0.0, 1.0)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "uniform", "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Normal:
    """N(mean, std²): e.g. kaiming_normal_ weights."""

    mean: float
    std: float

    def cdf(self, x: np.ndarray) -> np.ndarray:
        z = (torch.from_numpy(np.asarray(x, np.float64)) - self.mean) / self.std
        return torch.special.ndtr(z).numpy()

    def to_json(self) -> dict[str, Any]:
        return {"kind": "normal", "mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class Constant:
    """Every element equals `value` (BatchNorm affine parameters and running statistics)."""

    value: float

    def cdf(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) >= self.value).astype(np.float64)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "constant", "value": self.value}


InitDist = Uniform | Normal | Constant


def ks_statistic(values: np.ndarray | torch.Tensor, dist: InitDist) -> float:
    """Two-sided one-sample Kolmogorov–Smirnov statistic D of `values` against `dist`."""
    x = np.sort(np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values,
                           np.float64).reshape(-1))
    n = x.size
    if n == 0:
        return 0.0
    if isinstance(dist, Constant):
        return 0.0 if bool(np.all(x == dist.value)) else 1.0
    f = dist.cdf(x)
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(max(np.max(i / n - f), np.max(f - (i - 1) / n)))


def ks_pvalue(d: float, n: int) -> float:
    """Asymptotic p-value of D for n samples (Kolmogorov distribution with Stephens' small-n correction)."""
    if n <= 0 or d <= 0:
        return 1.0
    sn = math.sqrt(n)
    lam = (sn + 0.12 + 0.11 / sn) * d
    if lam < 0.2:
        return 1.0
    p = 2.0 * sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return float(min(1.0, max(0.0, p)))


def _fan_in(weight: torch.Tensor) -> int:
    """torch.nn.init's fan_in: input feature maps times receptive field size."""
    if weight.dim() < 2:
        raise ModelFamilyError("fan_in needs a weight with at least 2 dimensions")
    return int(weight.shape[1]) * int(np.prod(weight.shape[2:], dtype=np.int64))


def default_torch_init(model: nn.Module) -> dict[str, InitDist]:
    """Declared initializer of a model built only from torch's default-initialized layers.

    Every `state_dict` entry must be covered: a module type this function does not know raises, so a family
    cannot silently declare nothing for some of its parameters.
    """
    spec: dict[str, InitDist] = {}
    for prefix, module in model.named_modules():
        p = f"{prefix}." if prefix else ""
        if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            bound = 1.0 / math.sqrt(_fan_in(module.weight)) if _fan_in(module.weight) > 0 else 0.0
            spec[p + "weight"] = Uniform(-bound, bound)
            if module.bias is not None:
                spec[p + "bias"] = Uniform(-bound, bound)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.affine:
                spec[p + "weight"] = Constant(1.0)
                spec[p + "bias"] = Constant(0.0)
            if module.track_running_stats:
                spec[p + "running_mean"] = Constant(0.0)
                spec[p + "running_var"] = Constant(1.0)
                spec[p + "num_batches_tracked"] = Constant(0.0)
        elif list(module.named_parameters(recurse=False)) or list(module.named_buffers(recurse=False)):
            raise ModelFamilyError(f"no declared initializer for module {prefix!r} ({type(module).__name__})")
    missing = set(model.state_dict()) - set(spec)
    if missing:
        raise ModelFamilyError(f"no declared initializer for {sorted(missing)}")
    return spec


# ---------------------------------------------------------------------------------------------------------
# Families and their arguments
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    """One accepted argument: its JSON type and default (`required=True` for none)."""

    kind: str  # "int", "float", "bool", "int_list"
    default: Any = None
    required: bool = False
    minimum: float | None = None


def _check_arg(family: str, name: str, arg: Arg, value: Any) -> Any:
    where = f"{family}: argument {name!r}"

    def check_min(v: float) -> None:
        if arg.minimum is not None and v < arg.minimum:
            raise ModelFamilyError(f"{where} must be >= {arg.minimum}, got {v}")

    if arg.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelFamilyError(f"{where} must be an integer, got {value!r}")
        check_min(value)
        return int(value)
    if arg.kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ModelFamilyError(f"{where} must be a finite number, got {value!r}")
        check_min(float(value))
        return float(value)
    if arg.kind == "bool":
        if not isinstance(value, bool):
            raise ModelFamilyError(f"{where} must be true or false, got {value!r}")
        return value
    if arg.kind == "int_list":
        if not isinstance(value, list | tuple) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise ModelFamilyError(f"{where} must be a list of integers, got {value!r}")
        for v in value:
            check_min(v)
        return [int(v) for v in value]
    raise ModelFamilyError(f"{where} has unknown kind {arg.kind!r}")


@dataclass(frozen=True)
class ModelFamily:
    """A named way to build a model from JSON arguments, with its declared initializer.

    `build` receives normalized arguments (every key present, types checked) and must be deterministic given
    torch's global RNG state; `init_spec` maps every `state_dict` entry of a freshly built model to the
    distribution it was drawn from.
    """

    name: str
    args: Mapping[str, Arg]
    build: Callable[[dict[str, Any]], nn.Module]
    init_spec: Callable[[nn.Module, dict[str, Any]], dict[str, InitDist]]
    description: str = ""
    validate: Callable[[dict[str, Any]], None] | None = field(default=None)
    #: Replaces the `args` table for families whose arguments are a structure (a module tree, an HF config).
    normalizer: Callable[[Mapping[str, Any] | None], dict[str, Any]] | None = field(default=None)

    def normalize_args(self, args: Mapping[str, Any] | None) -> dict[str, Any]:
        if self.normalizer is not None:
            return _cached_normalize(self.name, self.normalizer, args)
        given = dict(args or {})
        unknown = sorted(set(given) - set(self.args))
        if unknown:
            raise ModelFamilyError(f"{self.name}: unknown arguments {unknown}; accepted: {sorted(self.args)}")
        out: dict[str, Any] = {}
        for name, arg in self.args.items():
            if name in given:
                out[name] = _check_arg(self.name, name, arg, given[name])
            elif arg.required:
                raise ModelFamilyError(f"{self.name}: missing required argument {name!r}")
            else:
                out[name] = arg.default
        if self.validate is not None:
            self.validate(out)
        return out


_NORMALIZED: dict[tuple[str, bytes], dict[str, Any]] = {}
_NORMALIZED_LOCK = threading.Lock()


def _cached_normalize(name: str, normalizer: Callable[[Mapping[str, Any] | None], dict[str, Any]],
                      args: Mapping[str, Any] | None) -> dict[str, Any]:
    """Structured arguments are checked once per process (a verifier normalizes the same config several
    times: init check, replay, KS); a copy is returned so no caller can alter the cached one."""
    try:
        key = (name, json.dumps(args, sort_keys=True, allow_nan=False).encode())
    except (TypeError, ValueError):
        return normalizer(args)  # not plain JSON: the normalizer gives the one-line reason
    with _NORMALIZED_LOCK:
        hit = _NORMALIZED.get(key)
    if hit is None:
        hit = normalizer(args)
        with _NORMALIZED_LOCK:
            if len(_NORMALIZED) >= 64:
                _NORMALIZED.clear()
            _NORMALIZED[key] = hit
    return copy.deepcopy(hit)


# --- mlp ---------------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """Flatten → (Linear → ReLU → Dropout)* → Linear. Parameters are `layers.<i>.weight|bias`."""

    def __init__(self, in_features: int, hidden: list[int], out_features: int, dropout: float) -> None:
        super().__init__()
        sizes = [in_features, *hidden, out_features]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = self.dropout(F.relu(layer(x)))
        return self.layers[-1](x)


def _validate_dropout(args: dict[str, Any]) -> None:
    if not 0.0 <= args["dropout"] < 1.0:
        raise ModelFamilyError(f"dropout must be in [0, 1), got {args['dropout']}")


MLP_FAMILY = ModelFamily(
    name="mlp",
    args={
        "in_features": Arg("int", required=True, minimum=1),
        "hidden": Arg("int_list", default=[], minimum=1),
        "out_features": Arg("int", required=True, minimum=1),
        "dropout": Arg("float", default=0.0, minimum=0.0),
    },
    build=lambda a: MLP(a["in_features"], a["hidden"], a["out_features"], a["dropout"]),
    init_spec=lambda model, _a: default_torch_init(model),
    description="multi-layer perceptron on flattened inputs, ReLU, optional dropout",
    validate=_validate_dropout,
)


# --- cnn ---------------------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """(Conv3x3 → ReLU → MaxPool2)* → Flatten → [Linear → ReLU → Dropout] → Linear, for small images."""

    def __init__(self, in_channels: int, image_size: int, channels: list[int], hidden: int, num_classes: int,
                 dropout: float) -> None:
        super().__init__()
        convs = []
        prev, size = in_channels, image_size
        for c in channels:
            convs.append(nn.Conv2d(prev, c, kernel_size=3, padding=1))
            prev, size = c, size // 2
        self.convs = nn.ModuleList(convs)
        flat = prev * size * size
        self.fc1 = nn.Linear(flat, hidden) if hidden > 0 else None
        self.fc2 = nn.Linear(hidden if hidden > 0 else flat, num_classes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2)
        x = x.flatten(1)
        if self.fc1 is not None:
            x = self.dropout(F.relu(self.fc1(x)))
        return self.fc2(x)


def _validate_cnn(args: dict[str, Any]) -> None:
    _validate_dropout(args)
    if not args["channels"]:
        raise ModelFamilyError("cnn: channels must name at least one conv layer")
    if args["image_size"] // (2 ** len(args["channels"])) < 1:
        raise ModelFamilyError(f"cnn: image_size {args['image_size']} is too small for {len(args['channels'])} "
                               "pooling stages")


CNN_FAMILY = ModelFamily(
    name="cnn",
    args={
        "in_channels": Arg("int", default=1, minimum=1),
        "image_size": Arg("int", default=8, minimum=1),
        "channels": Arg("int_list", default=[16, 32], minimum=1),
        "hidden": Arg("int", default=64, minimum=0),
        "num_classes": Arg("int", default=10, minimum=1),
        "dropout": Arg("float", default=0.0, minimum=0.0),
    },
    build=lambda a: SmallCNN(a["in_channels"], a["image_size"], a["channels"], a["hidden"], a["num_classes"],
                             a["dropout"]),
    init_spec=lambda model, _a: default_torch_init(model),
    description="small conv net for square images (e.g. 1x8x8 digits, 3x32x32 CIFAR)",
    validate=_validate_cnn,
)


# --- resnet20 ----------------------------------------------------------------------------------------------


class _PadShortcut(nn.Module):
    """Option-A shortcut of He et al. for CIFAR: subsample by 2 and zero-pad the new channels (no params)."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        half = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra - half))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = (
            _PadShortcut(planes - in_planes) if stride != 1 or in_planes != planes else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR-style ResNet-20 (He et al. 2016, section 4.2): 3 stages of 3 basic blocks, widths w, 2w, 4w."""

    def __init__(self, width: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        blocks: list[nn.Module] = []
        in_planes = width
        for stage, planes in enumerate((width, 2 * width, 4 * width)):
            for b in range(3):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.blocks(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def _resnet_init(model: nn.Module, _args: dict[str, Any]) -> dict[str, InitDist]:
    """torch defaults, then kaiming_normal_(fan_in, relu) on every conv and linear weight."""
    spec = default_torch_init(model)
    for prefix, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            spec[f"{prefix}.weight"] = Normal(0.0, math.sqrt(2.0 / _fan_in(module.weight)))
    return spec


RESNET20_FAMILY = ModelFamily(
    name="resnet20",
    args={
        "width": Arg("int", default=16, minimum=1),
        "num_classes": Arg("int", default=10, minimum=1),
        "in_channels": Arg("int", default=3, minimum=1),
    },
    build=lambda a: ResNet20(a["width"], a["num_classes"], a["in_channels"]),
    init_spec=_resnet_init,
    description="CIFAR-style ResNet-20 with BatchNorm and option-A (zero-pad) shortcuts",
)


# --- spec: a tree of standard modules ----------------------------------------------------------------------


def _no_declared_init(family: str) -> Callable[[nn.Module, dict[str, Any]], dict[str, InitDist]]:
    def spec(_model: nn.Module, _args: dict[str, Any]) -> dict[str, InitDist]:
        raise ModelFamilyError(f"family {family!r} declares no initializer distributions: checkpoint 0 must equal "
                               "initial_state(family, args, seed)")
    return spec


def _spec_normalize(args: Mapping[str, Any] | None) -> dict[str, Any]:
    from registry.spec import modelspec

    given = dict(args or {})
    unknown = sorted(set(given) - {"format", "tree"})
    if unknown:
        raise ModelFamilyError(f"spec: unknown arguments {unknown}; accepted: format, tree")
    if given.get("format", modelspec.SPEC_FORMAT) != modelspec.SPEC_FORMAT:
        raise ModelFamilyError(f"spec: unknown format {given.get('format')!r}; this verifier reads "
                               f"{modelspec.SPEC_FORMAT!r}")
    if "tree" not in given:
        raise ModelFamilyError("spec: missing required argument 'tree'")
    try:
        return {"format": modelspec.SPEC_FORMAT, "tree": modelspec.normalize_tree(given["tree"])}
    except modelspec.ModelSpecError as exc:
        raise ModelFamilyError(f"spec: {exc}") from None


def _spec_build(args: dict[str, Any]) -> nn.Module:
    from registry.spec import modelspec

    try:
        return modelspec.build_normalized(args["tree"])  # `build` receives normalized arguments
    except modelspec.ModelSpecError as exc:
        raise ModelFamilyError(f"spec: {exc}") from None


SPEC_FAMILY = ModelFamily(
    name="spec",
    args={},
    build=_spec_build,
    init_spec=_no_declared_init("spec"),
    description="a tree of standard torch.nn modules given as data (registry.spec.modelspec, docs/models.md)",
    normalizer=_spec_normalize,
)


def spec_args(module: nn.Module, example_input: torch.Tensor) -> dict[str, Any]:
    """`spec` family arguments for a user's model built from standard layers (refuses with one line)."""
    from registry.spec import modelspec

    try:
        return {"format": modelspec.SPEC_FORMAT, "tree": modelspec.module_to_tree(module, example_input)}
    except modelspec.ModelSpecError as exc:
        raise ModelFamilyError(f"spec: {exc}") from None


# --- hf-*: Hugging Face models from their config ------------------------------------------------------------


def _hf_family(name: str, description: str) -> ModelFamily:
    def normalize(args: Mapping[str, Any] | None) -> dict[str, Any]:
        from registry.spec import hf

        try:
            return hf.normalize(name, args)
        except hf.HFVersionError as exc:  # the verifier cannot judge it here: Unavailable, not Invalid
            raise UnknownFamilyError(str(exc)) from None
        except hf.HFModelError as exc:
            raise ModelFamilyError(str(exc)) from None

    def build(args: dict[str, Any]) -> nn.Module:
        from registry.spec import hf

        try:
            return hf.build(name, args)
        except hf.HFModelError as exc:
            raise ModelFamilyError(str(exc)) from None

    return ModelFamily(name=name, args={}, build=build, init_spec=_no_declared_init(name), description=description,
                       normalizer=normalize)


def _hf_families() -> list[ModelFamily]:
    from registry.spec.hf import TASKS  # no transformers import here

    return [_hf_family(t.family, t.description) for t in TASKS.values()]


# ---------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------

BUILTIN_FAMILIES: dict[str, ModelFamily] = {
    f.name: f for f in (MLP_FAMILY, CNN_FAMILY, RESNET20_FAMILY, SPEC_FAMILY, *_hf_families())}
_registered: dict[str, ModelFamily] = {}
_plugins_loaded: dict[str, str] = {}  # family name → entry point value, for the report
_allowed_plugins: set[str] | None = None  # None: read PLUGINS_ENV


def allow_plugins(names: list[str] | set[str] | tuple[str, ...] | None) -> None:
    """The operator's list of entry-point plugins that may be loaded (None: back to `PROOFREG_MODEL_PLUGINS`)."""
    global _allowed_plugins
    _allowed_plugins = None if names is None else {str(n) for n in names}


def allowed_plugins() -> set[str]:
    if _allowed_plugins is not None:
        return set(_allowed_plugins)
    return {n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()}


def family_origin(name: str) -> dict[str, Any]:
    """Where a family comes from, for reports: {"family", "origin": builtin|registered|plugin, "plugin"}."""
    get_family(name)
    if name in BUILTIN_FAMILIES:
        return {"family": name, "origin": "builtin", "plugin": None}
    if name in _plugins_loaded:
        return {"family": name, "origin": "plugin", "plugin": _plugins_loaded[name]}
    return {"family": name, "origin": "registered", "plugin": None}


def register_family(family: ModelFamily) -> None:
    """Registers a family from code the operator runs (tests, a daemon's own start-up); never replaces one."""
    if not _FAMILY_NAME.match(family.name):
        raise ModelFamilyError(f"invalid family name {family.name!r}")
    if family.name in BUILTIN_FAMILIES or family.name in _registered:
        raise ModelFamilyError(f"model family {family.name!r} is already defined")
    _registered[family.name] = family


def unregister_family(name: str) -> None:
    _registered.pop(name, None)


def _plugin_entry_points(name: str) -> list[EntryPoint]:
    """Entry points named `name` in `proofreg.models` of the installed distributions (nothing is imported)."""
    return list(entry_points(group=ENTRY_POINT_GROUP, name=name))


def _load_plugin(name: str) -> ModelFamily | None:
    if name not in allowed_plugins():
        return None
    found = _plugin_entry_points(name)
    if not found:
        return None
    if len(found) > 1:
        raise ModelFamilyError(f"model family {name!r} is provided by several installed plugins: "
                               f"{sorted(ep.value for ep in found)}")
    obj = found[0].load()
    family = obj() if callable(obj) and not isinstance(obj, ModelFamily) else obj
    if not isinstance(family, ModelFamily):
        raise ModelFamilyError(f"plugin {found[0].value!r} did not provide a ModelFamily")
    if family.name != name:
        raise ModelFamilyError(f"plugin {found[0].value!r} is registered as {name!r} but names itself "
                               f"{family.name!r}")
    _plugins_loaded[name] = found[0].value
    return family


def get_family(name: str) -> ModelFamily:
    """The family called `name`: built-in first, then registered in-process, then an installed plugin."""
    if not isinstance(name, str) or not _FAMILY_NAME.match(name):
        raise UnknownFamilyError(f"invalid model family name {name!r}")
    family = BUILTIN_FAMILIES.get(name) or _registered.get(name)
    if family is None:
        family = _load_plugin(name)
        if family is not None:
            _registered[name] = family
    if family is None:
        raise UnknownFamilyError(
            f"unknown model family {name!r}: built-in families are {sorted(BUILTIN_FAMILIES)}; a plugin "
            f"(entry point group {ENTRY_POINT_GROUP!r}) loads only if the operator lists it in {PLUGINS_ENV}"
        )
    return family


def list_families() -> list[str]:
    """Built-in, registered and allowed installed-plugin family names (plugins are listed, not loaded)."""
    names = set(BUILTIN_FAMILIES) | set(_registered)
    allowed = allowed_plugins()
    names |= {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name in allowed}
    return sorted(names)


def normalize_args(family: str, args: Mapping[str, Any] | None) -> dict[str, Any]:
    return get_family(family).normalize_args(args)


def build_model(family: str, args: Mapping[str, Any] | None = None) -> nn.Module:
    """A fresh model of `family`; parameters are drawn from torch's global RNG (seed it first)."""
    fam = get_family(family)
    return fam.build(fam.normalize_args(args))


def init_spec(family: str, args: Mapping[str, Any] | None, model: nn.Module | None = None) -> dict[str, InitDist]:
    """Per `state_dict` entry, the declared initializer distribution of `family` with these arguments."""
    fam = get_family(family)
    normalized = fam.normalize_args(args)
    if model is None:
        with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
            model = fam.build(normalized)
    return fam.init_spec(model, normalized)


def initial_state(family: str, args: Mapping[str, Any] | None, seed: int) -> dict[str, torch.Tensor]:
    """Checkpoint 0 of an honest run: the model built on CPU in float32 right after `torch.manual_seed(seed)`.

    Every module initializes itself (`reset_parameters`, or an HF model's `post_init`) from torch's global
    CPU generator in construction order, so the same family, arguments, seed and torch give bit-identical
    tensors. The recorder's side of the contract: seed, then `build_model(family, args)` before any other
    draw. Runs under `GLOBAL_RNG_LOCK` and restores the caller's RNG state. Tied tensors are returned as
    separate copies.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 64:
        raise ModelFamilyError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    fam = get_family(family)
    normalized = fam.normalize_args(args)
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float32)
        try:
            with torch.device("cpu"):
                torch.manual_seed(seed)
                model = fam.build(normalized)
        finally:
            torch.set_default_dtype(previous)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
