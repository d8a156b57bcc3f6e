"""One training step as the protocol defines it (docs/protocol.md section 6), read from the committed config.

This is the only implementation of the step: replay (`registry.pol.replay`), the recorder's self-check and the
plain-loop API (`Recorder.train_step`) all call `train_step`, so the step a prover runs through the API is
bit for bit the step a verifier re-executes. Everything it does comes from config keys, never from code:

- ``loss``: ``"cross_entropy" | "mse" | "bce_with_logits" | "causal_lm"``, or a mapping with options:
  ``{"type": "cross_entropy", "labelSmoothing": s, "ignoreIndex": i}``, ``{"type": "causal_lm", "ignoreIndex": i}``.
  A loss with only default options is written as its name, so older configs keep their hash.
- ``accumulation``: ``{"microBatches": n}`` (only when n > 1): the step's batch is n equal micro-batches in
  order; each runs forward and ``backward()`` on its loss divided by n; then one optimizer step.
- ``distributed``: ``{"worldSize": W}`` (only when W > 1): the run was torch.distributed DDP on W ranks, each
  with local batch b and local accumulation n. DDP averages gradients over ranks, g = (1/W) sum_r sum_m
  grad(loss_{r,m} / n), which is exactly the accumulation step above over W*n micro-batches each divided by
  W*n, so the config also holds ``accumulation: {"microBatches": W*n}`` and the step's batch is every rank's
  local indices concatenated in rank order (rank-major, batchSize W*b). This key changes nothing in the
  step: it is the record of how the run was made, and is checked to divide ``microBatches``.
- ``precision``: ``{"autocast": "bfloat16" | "float16" | null, "matmulPrecision": ..., "cudnnTf32": bool}`` (only
  when it differs from torch's defaults: no autocast, "highest", cudnn TF32 on): the forward and loss run under
  ``torch.autocast(device, dtype)``, and the float32 matmul / cuDNN TF32 flags are set for the replay. With
  ``"float16"`` (and only then) it also holds ``"gradScaler": {"initScale", "growthFactor", "backoffFactor",
  "growthInterval"}``: each backward is ``scaler.scale(loss / n).backward()``, gradients are unscaled before
  clipping, ``scaler.step(optimizer)`` skips a step whose gradients are not finite and ``scaler.update()``
  moves the scale. The scaler's state (scale, growth tracker) is checkpointed (`registry.pol.checkpoint`).
- ``clip``: see `registry.pol.config.clip_spec`; applied after the last backward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from registry.pol.checkpoint import TranscriptError

LOSS_TYPES = ("cross_entropy", "mse", "bce_with_logits", "causal_lm")
#: Options each loss takes, with torch's defaults (config name -> default).
LOSS_OPTIONS: dict[str, dict[str, Any]] = {
    "cross_entropy": {"labelSmoothing": 0.0, "ignoreIndex": -100},
    "mse": {},
    "bce_with_logits": {},
    "causal_lm": {"ignoreIndex": -100},
}
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
#: The autocast dtype that needs a GradScaler (and the only one that may have one).
SCALED_AUTOCAST = "float16"
#: GradScaler constructor options: config name -> torch attribute (read from a scaler object).
GRAD_SCALER_OPTIONS = {"initScale": "_init_scale", "growthFactor": "_growth_factor",
                       "backoffFactor": "_backoff_factor", "growthInterval": "_growth_interval"}
MATMUL_PRECISIONS = ("highest", "high", "medium")
DEFAULT_PRECISION: dict[str, Any] = {"autocast": None, "matmulPrecision": "highest", "cudnnTf32": True}


@dataclass(frozen=True)
class LossSpec:
    type: str
    label_smoothing: float = 0.0
    ignore_index: int = -100

    def to_config(self) -> str | dict[str, Any]:
        """The canonical config value: the bare name when every option has its default."""
        opts = {"labelSmoothing": self.label_smoothing, "ignoreIndex": self.ignore_index}
        given = {k: opts[k] for k, d in LOSS_OPTIONS[self.type].items() if opts[k] != d}
        if not given:
            return self.type
        return {"type": self.type, **{k: opts[k] for k in LOSS_OPTIONS[self.type]}}


def loss_spec(value: Any) -> LossSpec:
    """The config's `loss`, checked. Accepts torch's argument names (label_smoothing, ignore_index) too."""
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, Mapping):
        raise TranscriptError(f"loss must be one of {list(LOSS_TYPES)} or a mapping with a 'type', not {value!r}")
    names = {"label_smoothing": "labelSmoothing", "ignore_index": "ignoreIndex"}
    v: dict[str, Any] = {names.get(str(k), str(k)): x for k, x in value.items()}
    kind = v.pop("type", None)
    if kind not in LOSS_TYPES:
        raise TranscriptError(f"unsupported loss {kind!r}; supported: {list(LOSS_TYPES)}")
    allowed = LOSS_OPTIONS[kind]
    if set(v) - set(allowed):
        raise TranscriptError(f"loss {kind} takes options {sorted(allowed)}, not {sorted(set(v) - set(allowed))}")
    ls = v.get("labelSmoothing", 0.0)
    if isinstance(ls, bool) or not isinstance(ls, int | float) or not (math.isfinite(ls) and 0.0 <= ls <= 1.0):
        raise TranscriptError(f"loss labelSmoothing must be a number in [0, 1], not {ls!r}")
    ii = v.get("ignoreIndex", -100)
    if isinstance(ii, bool) or not isinstance(ii, int):
        raise TranscriptError(f"loss ignoreIndex must be an integer, not {ii!r}")
    return LossSpec(kind, float(ls), int(ii))


def loss_value(spec: LossSpec, output: Any, target: torch.Tensor) -> torch.Tensor:
    """The committed loss of one (micro-)batch. Sequence outputs [B, T, C] with targets [B, T] are flattened for
    cross-entropy; `causal_lm` predicts token t+1 from position t (HF's shift), over float32 logits."""
    if not isinstance(output, torch.Tensor):
        output = getattr(output, "logits", None)
        if not isinstance(output, torch.Tensor):
            raise TranscriptError("the model's forward returned no tensor (and no .logits) to take the loss of")
    if spec.type == "cross_entropy":
        if spec.label_smoothing == 0.0 and spec.ignore_index == -100 and output.dim() <= 2:
            return F.cross_entropy(output, target)  # the /2 step, unchanged
        if output.dim() > 2 and target.dim() == output.dim() - 1:
            output, target = output.reshape(-1, output.shape[-1]), target.reshape(-1)
        return F.cross_entropy(output, target, ignore_index=spec.ignore_index,
                               label_smoothing=spec.label_smoothing)
    if spec.type == "mse":
        return F.mse_loss(output, target)
    if spec.type == "bce_with_logits":
        return F.binary_cross_entropy_with_logits(output, target)
    logits = output[:, :-1, :].float()
    labels = target[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=spec.ignore_index)


def loss_callable(value: Any) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    """The config loss as a function of (output, target): what a hand-written loop should call."""
    spec = loss_spec(value)
    return lambda output, target: loss_value(spec, output, target)


def micro_batches_of(config: Mapping[str, Any]) -> int:
    acc = config.get("accumulation")
    if acc is None:
        return 1
    if not isinstance(acc, Mapping) or set(acc) != {"microBatches"}:
        raise TranscriptError(f"accumulation must be {{'microBatches': n}}, not {acc!r}")
    n = acc["microBatches"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise TranscriptError(f"accumulation microBatches must be an integer >= 2, not {n!r}")
    return n


def world_size_of(config: Mapping[str, Any]) -> int:
    """The config's `distributed.worldSize` (1 when absent), checked against the micro-batches it implies."""
    dist = config.get("distributed")
    if dist is None:
        return 1
    if not isinstance(dist, Mapping) or set(dist) != {"worldSize"}:
        raise TranscriptError(f"distributed must be {{'worldSize': W}}, not {dist!r}")
    w = dist["worldSize"]
    if isinstance(w, bool) or not isinstance(w, int) or w < 2:
        raise TranscriptError(f"distributed worldSize must be an integer >= 2, not {w!r}")
    if micro_batches_of(config) % w:
        raise TranscriptError(f"distributed worldSize {w} does not divide accumulation microBatches "
                              f"{micro_batches_of(config)} (W x the local micro-batches of each rank)")
    return w


def precision_spec(value: Any) -> dict[str, Any]:
    """The config's `precision` with defaults filled in (absent: torch's defaults)."""
    if value is None:
        return dict(DEFAULT_PRECISION)
    if not isinstance(value, Mapping) or set(value) - {"gradScaler"} != set(DEFAULT_PRECISION):
        raise TranscriptError(f"precision must hold exactly {sorted(DEFAULT_PRECISION)} (and gradScaler with "
                              f"float16), not {value!r}")
    if value["autocast"] is not None and value["autocast"] not in AUTOCAST_DTYPES:
        raise TranscriptError(f"precision autocast {value['autocast']!r} is not replayable; supported: "
                              f"{sorted(AUTOCAST_DTYPES)} or null")
    if (value["autocast"] == SCALED_AUTOCAST) != ("gradScaler" in value):
        raise TranscriptError("precision gradScaler is required with autocast float16 and allowed only with it "
                              "(float16 gradients underflow without loss scaling)")
    if value["matmulPrecision"] not in MATMUL_PRECISIONS:
        raise TranscriptError(f"precision matmulPrecision must be one of {list(MATMUL_PRECISIONS)}")
    if not isinstance(value["cudnnTf32"], bool):
        raise TranscriptError("precision cudnnTf32 must be true or false")
    out = dict(value)
    if "gradScaler" in value:
        out["gradScaler"] = grad_scaler_spec(value["gradScaler"])
    return out


def grad_scaler_spec(value: Any) -> dict[str, Any]:
    """The config's `precision.gradScaler`, checked: the options torch's GradScaler accepts, as numbers."""
    if not isinstance(value, Mapping) or set(value) != set(GRAD_SCALER_OPTIONS):
        raise TranscriptError(f"precision gradScaler must hold exactly {sorted(GRAD_SCALER_OPTIONS)}, not {value!r}")

    def number(key: str, ok: Callable[[float], bool], what: str) -> float:
        v = value[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not ok(float(v)):
            raise TranscriptError(f"precision gradScaler {key} must be {what}, not {v!r}")
        return float(v)

    interval = value["growthInterval"]
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise TranscriptError(f"precision gradScaler growthInterval must be a positive integer, not {interval!r}")
    return {"initScale": number("initScale", lambda v: v > 0, "a positive number"),
            "growthFactor": number("growthFactor", lambda v: v > 1, "a number > 1"),
            "backoffFactor": number("backoffFactor", lambda v: 0 < v < 1, "a number in (0, 1)"),
            "growthInterval": int(interval)}


def describe_grad_scaler(scaler: Any, device: torch.device) -> dict[str, Any]:
    """The `gradScaler` options of a torch GradScaler object, read back from it; one that replay could not
    rebuild (disabled, another device, another class) is refused."""
    if not isinstance(scaler, torch.amp.GradScaler):
        raise TranscriptError(f"scaler {type(scaler).__module__}.{type(scaler).__name__} is not torch.amp.GradScaler")
    if not scaler.is_enabled():
        raise TranscriptError("the GradScaler is disabled but float16 autocast needs loss scaling; pass "
                              "enabled=True (replay always scales)")
    if getattr(scaler, "_device", device.type) != device.type:
        raise TranscriptError(f"the GradScaler is for device {scaler._device!r}, the model is on {device.type}")
    return grad_scaler_spec({k: getattr(scaler, a) for k, a in GRAD_SCALER_OPTIONS.items()})


def make_grad_scaler(spec: Mapping[str, Any], device: torch.device,
                     state: Mapping[str, torch.Tensor]) -> torch.amp.GradScaler:
    """A GradScaler with the committed options, at a checkpoint's scale and growth tracker (`scaler_state`)."""
    scaler = torch.amp.GradScaler(device.type, init_scale=spec["initScale"], growth_factor=spec["growthFactor"],
                                  backoff_factor=spec["backoffFactor"], growth_interval=spec["growthInterval"])
    scaler.load_state_dict({"scale": float(state["scale"]), "growth_factor": spec["growthFactor"],
                            "backoff_factor": spec["backoffFactor"], "growth_interval": spec["growthInterval"],
                            "_growth_tracker": int(state["growthTracker"])})
    return scaler


def scaler_state(scaler: torch.amp.GradScaler) -> dict[str, torch.Tensor]:
    """The checkpointed state of a GradScaler: ``scale`` (float32) and ``growthTracker`` (int32), 0-d CPU tensors
    (a scaler not used yet holds its initial values)."""
    sd = scaler.state_dict()
    return {"scale": torch.tensor(float(sd["scale"]), dtype=torch.float32),
            "growthTracker": torch.tensor(int(sd["_growth_tracker"]), dtype=torch.int32)}


def precision_config(autocast: str | None, matmul: str, cudnn_tf32: bool,
                     grad_scaler: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The `precision` key to write: None when everything is torch's default (older configs stay unchanged);
    `gradScaler` only with float16."""
    p: dict[str, Any] = {"autocast": autocast, "matmulPrecision": matmul, "cudnnTf32": bool(cudnn_tf32)}
    if p == DEFAULT_PRECISION:
        return None
    if grad_scaler is not None:
        p["gradScaler"] = dict(grad_scaler)
    return precision_spec(p)


def current_flags() -> tuple[str, bool]:
    """The process's float32 matmul precision and cuDNN TF32 flag (what the recorder commits)."""
    return torch.get_float32_matmul_precision(), bool(torch.backends.cudnn.allow_tf32)


@contextmanager
def precision_flags(precision: Mapping[str, Any]) -> Iterator[None]:
    """Sets the committed matmul / cuDNN flags for the duration of a replay (they are process-global: callers
    hold `GLOBAL_RNG_LOCK`, as replay does)."""
    old = current_flags()
    torch.set_float32_matmul_precision(precision["matmulPrecision"])
    torch.backends.cudnn.allow_tf32 = bool(precision["cudnnTf32"])
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old[0])
        torch.backends.cudnn.allow_tf32 = old[1]


@dataclass(frozen=True)
class StepSpec:
    """What one optimizer step does, from the config."""

    loss: LossSpec
    micro_batches: int
    autocast: str | None
    precision: dict[str, Any]
    clip: dict[str, Any] | None

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> StepSpec:
        precision = precision_spec(config.get("precision"))
        if "gradScaler" in precision and config.get("dtype") == "float16":
            # torch's GradScaler refuses to unscale float16 gradients (a ValueError mid-replay otherwise)
            raise TranscriptError("precision gradScaler needs float32 parameters (dtype float16 gradients cannot "
                                  "be unscaled)")
        world_size_of(config)
        return cls(loss=loss_spec(config.get("loss")), micro_batches=micro_batches_of(config),
                   autocast=precision["autocast"], precision=precision, clip=clip_spec(config.get("clip")))

    @property
    def grad_scaler(self) -> dict[str, Any] | None:
        """The committed GradScaler options (float16 autocast), or None."""
        return self.precision.get("gradScaler")

    def autocast_context(self, device: torch.device) -> Any:
        if self.autocast is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[self.autocast])


def clip_spec(clip: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The config's `clip` (gradient clipping over all model parameters, after the backward and before
    `optimizer.step()`): {"type": "norm", "maxNorm", "normType"} (`clip_grad_norm_`) or {"type": "value",
    "clipValue"} (`clip_grad_value_`). Accepts the torch argument names too (max_norm, norm_type, clip_value)."""
    if clip is None:
        return None
    if not isinstance(clip, Mapping):
        raise TranscriptError(f"clip must be a mapping like {{'type': 'norm', 'max_norm': 1.0}}, not {clip!r}")
    c = {{"max_norm": "maxNorm", "norm_type": "normType", "clip_value": "clipValue"}.get(k, k): v
         for k, v in clip.items()}
    kind = c.get("type")
    allowed = {"norm": {"type", "maxNorm", "normType"}, "value": {"type", "clipValue"}}.get(str(kind))
    if allowed is None:
        raise TranscriptError(f"clip type must be 'norm' or 'value', not {kind!r}")
    if set(c) - allowed:
        raise TranscriptError(f"clip of type {kind!r} takes {sorted(allowed - {'type'})}, "
                              f"not {sorted(set(c) - allowed)}")

    def number(key: str, default: float | None = None) -> float:
        v = c.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise TranscriptError(f"clip {key} must be a positive finite number, not {v!r}")
        return float(v)

    if kind == "norm":
        return {"type": "norm", "maxNorm": number("maxNorm"), "normType": number("normType", 2.0)}
    return {"type": "value", "clipValue": number("clipValue")}


def split_micro(t: torch.Tensor, n: int) -> list[torch.Tensor]:
    if n == 1:
        return [t]
    if t.shape[0] % n:
        raise TranscriptError(f"a batch of {t.shape[0]} examples does not split into {n} equal micro-batches")
    return list(t.split(t.shape[0] // n))


def clip_gradients(spec: Mapping[str, Any] | None, model: nn.Module) -> None:
    if spec is None:
        return
    if spec["type"] == "norm":
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec["maxNorm"], norm_type=spec["normType"])
    else:
        torch.nn.utils.clip_grad_value_(model.parameters(), spec["clipValue"])


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, spec: StepSpec, x: torch.Tensor,
               y: torch.Tensor, scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """One committed optimizer step on the batch (x, y); returns the step's mean loss, detached (no device
    synchronisation: call .item() only when logging). `scaler`: the run's GradScaler, required exactly when
    the config declares one (float16); a step whose scaled gradients are not finite is skipped by it."""
    if (scaler is None) != (spec.grad_scaler is None):
        raise TranscriptError("the config declares a GradScaler but none was given to the step" if scaler is None
                              else "a GradScaler was given to a step whose config declares none")
    device = next(model.parameters()).device
    n = spec.micro_batches
    total: torch.Tensor | None = None
    for xm, ym in zip(split_micro(x, n), split_micro(y, n), strict=True):
        with spec.autocast_context(device):
            loss = loss_value(spec.loss, model(xm), ym)
        scaled = loss / n if n > 1 else loss
        (scaled if scaler is None else scaler.scale(scaled)).backward()
        total = loss.detach() if total is None else total + loss.detach()
    if scaler is None:
        clip_gradients(spec.clip, model)
        optimizer.step()
    else:
        if spec.clip is not None:
            scaler.unscale_(optimizer)
            clip_gradients(spec.clip, model)
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    assert total is not None
    return total / n if n > 1 else total
