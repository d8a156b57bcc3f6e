"""Hugging Face `transformers` models built from their config as data (docs/models.md, form (a)).

Arguments of the `hf-*` families::

    {"transformers": "5.17.0",                 the release that built the model; a verifier with another refuses
     "config": {"model_type": "gpt2", ...},    the model's config; normalized to every field the release writes
     "attn_implementation": "eager",           "eager" or "sdpa": the attention kernel is part of the numerics
     "output": "logits"}                       "logits": forward returns the logits tensor; "model_output": HF's

A model is built with `AutoModelFor<Task>.from_config(config)` only: never `from_pretrained`, never the hub,
never `trust_remote_code`. `model_type` must be on this module's allow-list for the task and shipped by the
installed release; keys that load code or files (`auto_map`, `trust_remote_code`, `quantization_config`, ...)
and keys the config class does not define are refused. Initialization is the model's own `post_init`
under torch's global RNG (seed it first), so `registry.spec.models.initial_state` re-creates checkpoint 0.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

#: The release pinned in pyproject.toml; a model's committed version must equal the installed one.
PINNED_TRANSFORMERS = "5.17.0"
MAX_PARAMETERS = 2_000_000_000
#: Counting parameters builds the model on the meta device, whose cost grows with the layer count.
MAX_LAYERS = 256
_LAYER_KEYS = ("n_layer", "num_hidden_layers", "num_layers")
_MAX_JSON = 64 * 1024
_FORBIDDEN = frozenset({"auto_map", "trust_remote_code", "quantization_config", "_name_or_path", "name_or_path",
                        "custom_pipelines", "_commit_hash", "transformers_version", "dtype", "torch_dtype",
                        "_attn_implementation", "attn_implementation", "_experts_implementation"})


_MISSING = object()


class HFModelError(ValueError):
    """A config that is not allowed or malformed."""


class HFVersionError(HFModelError):
    """The model needs a transformers release this machine does not have: not a fault of the transcript."""


@dataclass(frozen=True)
class HFTask:
    """One `hf-*` family: the Auto class it builds with and the model types it accepts."""

    family: str
    auto_class: str
    mapping: str
    model_types: tuple[str, ...]
    description: str


TASKS: dict[str, HFTask] = {t.family: t for t in (
    HFTask("hf-causal-lm", "AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
           ("gpt2", "llama", "mistral", "qwen2", "gpt_neo", "opt", "phi", "gemma"),
           "Hugging Face causal language model from its config (GPT-2, Llama, ...)"),
    HFTask("hf-masked-lm", "AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
           ("bert", "roberta", "distilbert"), "Hugging Face masked language model from its config (BERT, ...)"),
    HFTask("hf-sequence-classification", "AutoModelForSequenceClassification",
           "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", ("bert", "roberta", "distilbert", "gpt2", "llama"),
           "Hugging Face sequence classifier from its config (BERT, ...)"),
    HFTask("hf-image-classification", "AutoModelForImageClassification",
           "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", ("vit", "deit", "convnext", "resnet"),
           "Hugging Face image classifier from its config (ViT, ...)"),
)}


def installed_version() -> str:
    """The installed transformers release (imports it: ~10 s cold, so only when an hf-* family is used)."""
    try:
        import transformers
    except ImportError as exc:
        raise HFVersionError(f"hf-* model families need transformers=={PINNED_TRANSFORMERS} installed "
                             f"({exc})") from None
    return str(transformers.__version__)


def _plain_json(value: Any, path: str, depth: int = 0) -> None:
    """Only JSON scalars, lists and string-keyed objects, shallow: nothing that can name code."""
    if depth > 6:
        raise HFModelError(f"{path}: nested too deeply")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise HFModelError(f"{path} must be finite")
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _plain_json(v, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise HFModelError(f"{path} has a non-string key {k!r}")
            if k in _FORBIDDEN:
                raise HFModelError(f"{path}.{k} is not allowed (it loads code or files, or is set by the registry)")
            _plain_json(v, f"{path}.{k}", depth + 1)
        return
    raise HFModelError(f"{path} must be plain JSON, got {type(value).__name__}")


def normalize(family: str, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """Checked arguments with the config written out in full by the installed release (idempotent)."""
    task = TASKS[family]
    given = dict(args or {})
    unknown = sorted(set(given) - {"transformers", "config", "attn_implementation", "output"})
    if unknown:
        raise HFModelError(f"{family}: unknown arguments {unknown}; accepted: attn_implementation, config, "
                           "output, transformers")
    have = installed_version()
    want = given.get("transformers", have)
    if want != have:
        raise HFVersionError(f"{family}: the model was built with transformers {want!r}; this verifier has {have!r} "
                           "(install the committed release to verify it)")
    attn = given.get("attn_implementation", "eager")
    if attn not in ("eager", "sdpa"):
        raise HFModelError(f"{family}: attn_implementation must be 'eager' or 'sdpa', got {attn!r}")
    output = given.get("output", "logits")
    if output not in ("logits", "model_output"):
        raise HFModelError(f"{family}: output must be 'logits' or 'model_output', got {output!r}")
    cfg = given.get("config")
    if not isinstance(cfg, Mapping):
        raise HFModelError(f"{family}: argument 'config' must be an object with a model_type")
    try:
        _plain_json(cfg, "config")
    except HFModelError as exc:
        raise HFModelError(f"{family}: {exc}") from None
    if len(json.dumps(cfg)) > _MAX_JSON:
        raise HFModelError(f"{family}: config is larger than {_MAX_JSON} bytes of JSON")
    for key in _LAYER_KEYS:
        n = cfg.get(key)
        if isinstance(n, int) and not isinstance(n, bool) and n > MAX_LAYERS:
            raise HFModelError(f"{family}: config.{key} = {n} is more than {MAX_LAYERS} layers")
    with _quiet():
        config = _make_config(task, cfg)
    try:
        full = _committed_form(config)
    except HFModelError as exc:
        raise HFModelError(f"{family}: {exc}") from None
    out = {"transformers": have, "config": full, "attn_implementation": attn, "output": output}
    _check_size(task, out)
    return out


def _committed_form(config: Any) -> dict[str, Any]:
    """A config object as the family arguments commit it: every field the release writes, less the refused
    keys, as plain JSON (id2label's int keys become strings)."""
    full = {k: v for k, v in config.to_dict().items() if k not in _FORBIDDEN}
    try:
        full = json.loads(json.dumps(full, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise HFModelError(f"the config does not serialize as plain JSON: {exc}") from None
    _plain_json(full, "config")
    return full


def _make_config(task: HFTask, cfg: Mapping[str, Any]) -> Any:
    from transformers.models.auto import modeling_auto
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = cfg.get("model_type")
    if model_type not in task.model_types:
        raise HFModelError(f"{task.family}: model_type {model_type!r} is not allowed; "
                           f"allowed: {list(task.model_types)}")
    if model_type not in CONFIG_MAPPING or model_type not in getattr(modeling_auto, task.mapping):
        raise HFModelError(f"{task.family}: this transformers release does not ship {model_type!r} for this task")
    cls = CONFIG_MAPPING[model_type]
    known = set(cls().to_dict()) | {"num_labels"}
    extra = sorted(set(cfg) - known)
    if extra:
        raise HFModelError(f"{task.family}: config keys {extra[:5]} are not fields of {cls.__name__}")
    kwargs = {k: v for k, v in cfg.items() if k != "model_type"}
    if isinstance(kwargs.get("id2label"), Mapping):
        kwargs["id2label"] = {int(k): v for k, v in kwargs["id2label"].items()}
    try:
        return cls(**copy.deepcopy(kwargs))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HFModelError(f"{task.family}: {cls.__name__} refuses the config: {first}") from None


@contextmanager
def _quiet() -> Iterator[None]:
    """HF logs warnings about a config's token ids on every build; they say nothing about the model's numerics."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def _build(task: HFTask, args: Mapping[str, Any]) -> nn.Module:
    import transformers

    auto = getattr(transformers, task.auto_class)
    with _quiet():
        config = _make_config(task, args["config"])
        try:
            model: nn.Module = auto.from_config(config, attn_implementation=args["attn_implementation"])
        except (ValueError, TypeError, KeyError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise HFModelError(f"{task.family}: cannot build the model: {first}") from None
    if args["output"] == "logits":
        model.register_forward_hook(_logits_only)
    return model


def _logits_only(_module: nn.Module, _args: Any, output: Any) -> torch.Tensor:
    """Forward returns the logits tensor, so a replayed step applies its loss to it like any other model's."""
    logits = getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise HFModelError("the model output has no logits")
    return logits


def _check_size(task: HFTask, args: Mapping[str, Any]) -> None:
    with torch.device("meta"):
        model = _build(task, args)
    n = sum(p.numel() for p in model.parameters())
    if n > MAX_PARAMETERS:
        raise HFModelError(f"{task.family}: the model has {n:,} parameters, more than {MAX_PARAMETERS:,}")


def running_config(model: nn.Module) -> tuple[dict[str, Any], str] | None:
    """The config and attention implementation a live model runs with, in the form the family arguments commit
    them (None for a model that is not a transformers model)."""
    cfg = getattr(model, "config", None)
    if cfg is None or not callable(getattr(cfg, "to_dict", None)):
        return None
    return _committed_form(cfg), str(getattr(cfg, "_attn_implementation", None))


def running_differences(model: nn.Module, args: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """What the live model runs with that normalized arguments `args` do not say: config keys and
    `attn_implementation`, each as (live value, committed value). The Trainer, for one, sets
    `config.use_cache = False`, and a model built with `from_config` alone runs `sdpa` attention; replay must
    build that model, or the numerics differ (bf16 kernels round differently on other layouts)."""
    live = running_config(model)
    if live is None:
        return {}
    config, attn = live
    committed = args["config"]
    out: dict[str, tuple[Any, Any]] = {f"config.{k}": (config[k], committed.get(k)) for k in sorted(config)
                                       if committed.get(k, _MISSING) != config[k]}
    if attn != args["attn_implementation"]:
        out["attn_implementation"] = (attn, args["attn_implementation"])
    return out


def adopt_running(family: str, args: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """`args` with what the live model runs with written in, for a caller (the Trainer callback) whose
    framework changes the model's config itself; normalized again, so a value the family refuses still fails."""
    diff = running_differences(model, normalize(family, args))
    if not diff:
        return dict(args)
    config = dict(args["config"])
    config.update({k.removeprefix("config."): live for k, (live, _) in diff.items() if k.startswith("config.")})
    out = {**args, "config": config}
    if "attn_implementation" in diff:
        out["attn_implementation"] = diff["attn_implementation"][0]
    return out


def build(family: str, args: Mapping[str, Any]) -> nn.Module:
    """A fresh model from normalized arguments; parameters are drawn from torch's global RNG."""
    return _build(TASKS[family], args)
