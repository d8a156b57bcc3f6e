"""Plain torch.nn models described as data: a tree of standard modules by name (docs/models.md).

A verifier builds a transcript's model from this tree and never imports code the transcript names. A node is
a JSON object::

    {"type": "Linear", "args": {"in_features": 16, "out_features": 32}}          a leaf (allow-listed module)
    {"type": "Sequential", "children": [NODE, ...]}                                children run in order
    {"type": "Residual", "children": [NODE, ...]}                                  x + children(x)

A child may carry `"name"` (a Python identifier or digits; default its index), which becomes its key in
`state_dict`, so a tree reproduces the parameter names of the model it describes. `MultiheadAttention` is
applied as self-attention on the tree's single tensor (`attn(x, x, x)[0]`); it and the Transformer layers
take an optional `"causal": true` for a causal mask. Arguments come from a per-type allow-list
(`LEAVES`); every argument is written out by `normalize_tree`, so the committed config states each value
instead of relying on a default. Strings appear only as values from a fixed enumeration; no argument can
name a callable or become code.

Limits: depth `MAX_DEPTH`, `MAX_NODES` nodes, every integer argument at most `MAX_INT`, and at most
`MAX_PARAMETERS` parameters (counted on the meta device before anything is allocated). Every refusal is a
one-line `ModelSpecError` naming the path in the tree (`root.children[2:blocks].args.in_features`).

Initialization is each module's own (`reset_parameters` in its constructor), drawn from torch's global RNG
in tree order: seeding it and building gives bit-identical parameters on CPU (`registry.spec.models.initial_state`).

`module_to_tree(module, example_input)` converts a user's model built from standard layers: allow-listed
modules become leaves, `nn.Sequential`/`nn.ModuleList` become `Sequential`, and any other module must compute
exactly `Sequential` or `Residual` of its children, which is checked by running both on the example input.
"""

from __future__ import annotations

import copy
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SPEC_FORMAT = "proofreg-modelspec/1"
MAX_DEPTH = 32
MAX_NODES = 4096
MAX_INT = 1 << 24
MAX_PARAMETERS = 2_000_000_000
_NAME = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]{0,63}|[0-9]{1,6})$")
_NODE_KEYS = frozenset({"type", "args", "children", "name", "causal"})


class ModelSpecError(ValueError):
    """A model tree that is malformed, names something outside the allow-list, or is too large."""


# ---------------------------------------------------------------------------------------------------------
# Argument kinds
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class K:
    """One accepted constructor argument: its kind and default (`REQUIRED` for none)."""

    kind: str  # int+, int0, int, float, float+, prob, bool, ints+, ints0, shape, padding, enum, opt_*, node
    default: Any = None
    choices: tuple[str, ...] = ()
    node_types: tuple[str, ...] = ()


REQUIRED = object()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_value(path: str, k: K, v: Any, depth: int, counter: list[int]) -> Any:
    kind = k.kind
    if kind.startswith("opt_"):
        if v is None:
            return None
        kind = kind[4:]
    if kind in ("int+", "int0", "int"):
        if not _is_int(v) or abs(v) > MAX_INT:
            raise ModelSpecError(f"{path} must be an integer of magnitude at most {MAX_INT}, got {_short(v)}")
        if (kind == "int+" and v < 1) or (kind == "int0" and v < 0):
            raise ModelSpecError(f"{path} must be {'positive' if kind == 'int+' else 'non-negative'}, got {v}")
        return int(v)
    if kind in ("float", "float+", "prob"):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or abs(v) > 1e9:
            raise ModelSpecError(f"{path} must be a finite number, got {_short(v)}")
        if kind == "float+" and v <= 0:
            raise ModelSpecError(f"{path} must be positive, got {v}")
        if kind == "prob" and not 0.0 <= v < 1.0:
            raise ModelSpecError(f"{path} must be in [0, 1), got {v}")
        return float(v)
    if kind == "bool":
        if not isinstance(v, bool):
            raise ModelSpecError(f"{path} must be true or false, got {_short(v)}")
        return v
    if kind in ("ints+", "ints0", "shape", "padding"):
        if kind == "padding" and isinstance(v, str):
            if v not in ("same", "valid"):
                raise ModelSpecError(f"{path} must be an integer, a list of integers, 'same' or 'valid', "
                                     f"got {_short(v)}")
            return v
        items = list(v) if isinstance(v, list | tuple) else [v]
        if not 1 <= len(items) <= 8 or not all(_is_int(i) and 0 <= i <= MAX_INT for i in items):
            raise ModelSpecError(f"{path} must be a non-negative integer or a list of 1 to 8 of them, got {_short(v)}")
        if kind in ("ints+", "shape") and min(items) < 1:
            raise ModelSpecError(f"{path} must be positive, got {_short(v)}")
        return [int(i) for i in items] if isinstance(v, list | tuple) or kind == "shape" else int(v)
    if kind == "enum":
        if not isinstance(v, str) or v not in k.choices:
            raise ModelSpecError(f"{path} must be one of {list(k.choices)}, got {_short(v)}")
        return v
    if kind == "node":
        node = _normalize_node(v, path, depth + 1, counter)
        if node["type"] not in k.node_types:
            raise ModelSpecError(f"{path} must be a {' or '.join(k.node_types)} node, got {node['type']!r}")
        return node
    raise ModelSpecError(f"{path}: internal error, unknown argument kind {kind!r}")


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


# ---------------------------------------------------------------------------------------------------------
# The allow-list
# ---------------------------------------------------------------------------------------------------------

_PADMODE = K("enum", "zeros", choices=("zeros", "reflect", "replicate", "circular"))


def _conv() -> dict[str, K]:
    return {"in_channels": K("int+", REQUIRED), "out_channels": K("int+", REQUIRED),
            "kernel_size": K("ints+", REQUIRED),
            "stride": K("ints+", 1), "padding": K("padding", 0), "dilation": K("ints+", 1), "groups": K("int+", 1),
            "bias": K("bool", True), "padding_mode": _PADMODE}


def _bn() -> dict[str, K]:
    return {"num_features": K("int+", REQUIRED), "eps": K("float+", 1e-5), "momentum": K("opt_prob", 0.1),
            "affine": K("bool", True), "track_running_stats": K("bool", True)}


def _transformer_layer() -> dict[str, K]:
    return {"d_model": K("int+", REQUIRED), "nhead": K("int+", REQUIRED), "dim_feedforward": K("int+", 2048),
            "dropout": K("prob", 0.1), "activation": K("enum", "relu", choices=("relu", "gelu")),
            "layer_norm_eps": K("float+", 1e-5), "batch_first": K("bool", False), "norm_first": K("bool", False),
            "bias": K("bool", True)}


def _maxpool() -> dict[str, K]:
    return {"kernel_size": K("ints+", REQUIRED), "stride": K("opt_ints+", None), "padding": K("ints0", 0),
            "dilation": K("ints+", 1), "ceil_mode": K("bool", False)}


def _avgpool(divisor: bool) -> dict[str, K]:
    out = {"kernel_size": K("ints+", REQUIRED), "stride": K("opt_ints+", None), "padding": K("ints0", 0),
           "ceil_mode": K("bool", False), "count_include_pad": K("bool", True)}
    if divisor:
        out["divisor_override"] = K("opt_int+", None)
    return out


_INPLACE = {"inplace": K("bool", False)}

#: Leaf type name → (torch class, accepted arguments with defaults).
LEAVES: dict[str, tuple[type[nn.Module], dict[str, K]]] = {
    "Linear": (nn.Linear, {"in_features": K("int+", REQUIRED), "out_features": K("int+", REQUIRED),
                           "bias": K("bool", True)}),
    "Conv1d": (nn.Conv1d, _conv()),
    "Conv2d": (nn.Conv2d, _conv()),
    "BatchNorm1d": (nn.BatchNorm1d, _bn()),
    "BatchNorm2d": (nn.BatchNorm2d, _bn()),
    "LayerNorm": (nn.LayerNorm, {"normalized_shape": K("shape", REQUIRED), "eps": K("float+", 1e-5),
                                 "elementwise_affine": K("bool", True), "bias": K("bool", True)}),
    "GroupNorm": (nn.GroupNorm, {"num_groups": K("int+", REQUIRED), "num_channels": K("int+", REQUIRED),
                                 "eps": K("float+", 1e-5), "affine": K("bool", True)}),
    "RMSNorm": (nn.RMSNorm, {"normalized_shape": K("shape", REQUIRED), "eps": K("opt_float+", None),
                             "elementwise_affine": K("bool", True)}),
    "Identity": (nn.Identity, {}),
    "ReLU": (nn.ReLU, dict(_INPLACE)),
    "GELU": (nn.GELU, {"approximate": K("enum", "none", choices=("none", "tanh"))}),
    "SiLU": (nn.SiLU, dict(_INPLACE)),
    "Tanh": (nn.Tanh, {}),
    "Sigmoid": (nn.Sigmoid, {}),
    "Mish": (nn.Mish, dict(_INPLACE)),
    "Hardswish": (nn.Hardswish, dict(_INPLACE)),
    "LeakyReLU": (nn.LeakyReLU, {"negative_slope": K("float", 0.01), **_INPLACE}),
    "ELU": (nn.ELU, {"alpha": K("float", 1.0), **_INPLACE}),
    "Softplus": (nn.Softplus, {"beta": K("float+", 1.0), "threshold": K("float", 20.0)}),
    "Softmax": (nn.Softmax, {"dim": K("int", REQUIRED)}),
    "LogSoftmax": (nn.LogSoftmax, {"dim": K("int", REQUIRED)}),
    "Dropout": (nn.Dropout, {"p": K("prob", 0.5), **_INPLACE}),
    "Dropout1d": (nn.Dropout1d, {"p": K("prob", 0.5), **_INPLACE}),
    "Dropout2d": (nn.Dropout2d, {"p": K("prob", 0.5), **_INPLACE}),
    "Flatten": (nn.Flatten, {"start_dim": K("int", 1), "end_dim": K("int", -1)}),
    "Unflatten": (nn.Unflatten, {"dim": K("int", REQUIRED), "unflattened_size": K("shape", REQUIRED)}),
    "Embedding": (nn.Embedding, {"num_embeddings": K("int+", REQUIRED), "embedding_dim": K("int+", REQUIRED),
                                 "padding_idx": K("opt_int", None), "scale_grad_by_freq": K("bool", False)}),
    "MultiheadAttention": (nn.MultiheadAttention, {
        "embed_dim": K("int+", REQUIRED), "num_heads": K("int+", REQUIRED), "dropout": K("prob", 0.0),
        "bias": K("bool", True), "add_bias_kv": K("bool", False), "add_zero_attn": K("bool", False),
        "batch_first": K("bool", False)}),
    "TransformerEncoderLayer": (nn.TransformerEncoderLayer, _transformer_layer()),
    "TransformerDecoderLayer": (nn.TransformerDecoderLayer, _transformer_layer()),
    "TransformerEncoder": (nn.TransformerEncoder, {
        "encoder_layer": K("node", REQUIRED, node_types=("TransformerEncoderLayer",)),
        "num_layers": K("int+", REQUIRED),
        "norm": K("opt_node", None, node_types=("LayerNorm", "RMSNorm"))}),
    "MaxPool1d": (nn.MaxPool1d, _maxpool()),
    "MaxPool2d": (nn.MaxPool2d, _maxpool()),
    "AvgPool1d": (nn.AvgPool1d, _avgpool(False)),
    "AvgPool2d": (nn.AvgPool2d, _avgpool(True)),
    "AdaptiveAvgPool1d": (nn.AdaptiveAvgPool1d, {"output_size": K("ints+", REQUIRED)}),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, {"output_size": K("ints+", REQUIRED)}),
    "AdaptiveMaxPool1d": (nn.AdaptiveMaxPool1d, {"output_size": K("ints+", REQUIRED)}),
    "AdaptiveMaxPool2d": (nn.AdaptiveMaxPool2d, {"output_size": K("ints+", REQUIRED)}),
}
CONTAINERS = ("Sequential", "Residual")
_CAUSAL_OK = frozenset({"MultiheadAttention", "TransformerEncoderLayer", "TransformerDecoderLayer",
                        "TransformerEncoder"})


# ---------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------


def normalize_tree(tree: Any) -> dict[str, Any]:
    """The tree with every argument written out, after strict checks (module docstring); raises ModelSpecError."""
    counter = [0]
    node = _normalize_node(tree, "root", 1, counter)
    count_parameters(node)
    return node


def _normalize_node(node: Any, path: str, depth: int, counter: list[int]) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise ModelSpecError(f"...{path[-80:]}: the tree is nested deeper than {MAX_DEPTH} levels")
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise ModelSpecError(f"{path}: the tree has more than {MAX_NODES} nodes")
    if not isinstance(node, Mapping):
        raise ModelSpecError(f"{path} must be an object with a 'type', got {_short(node)}")
    unknown = sorted(str(k) for k in set(node) - _NODE_KEYS)
    if unknown:
        raise ModelSpecError(f"{path}: unknown keys {unknown}; a node has {sorted(_NODE_KEYS)}")
    typ = node.get("type")
    if not isinstance(typ, str) or (typ not in LEAVES and typ not in CONTAINERS):
        raise ModelSpecError(f"{path}: unknown module type {_short(typ)}; allowed: {sorted([*LEAVES, *CONTAINERS])}")
    path = f"{path}({typ})" if path == "root" else path
    out: dict[str, Any] = {"type": typ}
    if "name" in node:
        out["name"] = node["name"]
    if "causal" in node:
        if typ not in _CAUSAL_OK or not isinstance(node["causal"], bool):
            raise ModelSpecError(f"{path}.causal: only true/false, on {sorted(_CAUSAL_OK)}")
        out["causal"] = node["causal"]
    if typ in CONTAINERS:
        if "args" in node and node["args"] not in ({}, None):
            raise ModelSpecError(f"{path}: a {typ} takes no args")
        children = node.get("children")
        if not isinstance(children, list) or (typ == "Residual" and not children):
            raise ModelSpecError(f"{path}.children must be a {'non-empty ' if typ == 'Residual' else ''}list of nodes")
        seen: set[str] = set()
        kids = []
        for i, child in enumerate(children):
            name = child.get("name", str(i)) if isinstance(child, Mapping) else str(i)
            cpath = f"{path}.children[{i}]"
            if not isinstance(name, str) or not _NAME.match(name):
                raise ModelSpecError(f"{cpath}.name must be an identifier or digits, got {_short(name)}")
            if name in seen:
                raise ModelSpecError(f"{cpath}.name {name!r} is used twice")
            seen.add(name)
            explicit = isinstance(child, Mapping) and "name" in child
            kids.append(_normalize_node(child, f"{cpath}:{name}" if explicit else cpath, depth + 1, counter))
        out["children"] = kids
        return out
    if "children" in node:
        raise ModelSpecError(f"{path}: a {typ} has no children")
    args = node.get("args", {})
    if not isinstance(args, Mapping):
        raise ModelSpecError(f"{path}.args must be an object")
    allowed = LEAVES[typ][1]
    bad = sorted(str(k) for k in set(args) - set(allowed))
    if bad:
        raise ModelSpecError(f"{path}: unknown arguments {bad} for {typ}; accepted: {sorted(allowed)}")
    norm: dict[str, Any] = {}
    for name, k in allowed.items():
        if name in args:
            norm[name] = _check_value(f"{path}.args.{name}", k, args[name], depth, counter)
        elif k.default is REQUIRED:
            raise ModelSpecError(f"{path}: missing required argument {name!r} for {typ}")
        else:
            norm[name] = copy.deepcopy(k.default)
    _check_leaf(typ, norm, path)
    out["args"] = norm
    return out


def _check_leaf(typ: str, a: dict[str, Any], path: str) -> None:
    """Constraints between arguments that torch would otherwise report as a multi-line error (or not at all)."""
    if typ in ("Conv1d", "Conv2d") and (a["in_channels"] % a["groups"] or a["out_channels"] % a["groups"]):
        raise ModelSpecError(f"{path}: in_channels and out_channels must be divisible by groups")
    if typ == "GroupNorm" and a["num_channels"] % a["num_groups"]:
        raise ModelSpecError(f"{path}: num_channels must be divisible by num_groups")
    if typ == "MultiheadAttention" and a["embed_dim"] % a["num_heads"]:
        raise ModelSpecError(f"{path}: embed_dim must be divisible by num_heads")
    if typ in ("TransformerEncoderLayer", "TransformerDecoderLayer") and a["d_model"] % a["nhead"]:
        raise ModelSpecError(f"{path}: d_model must be divisible by nhead")
    if typ == "Embedding" and a["padding_idx"] is not None and not (
            -a["num_embeddings"] <= a["padding_idx"] < a["num_embeddings"]):
        raise ModelSpecError(f"{path}: padding_idx must be within num_embeddings")


# ---------------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------------


class Residual(nn.Sequential):
    """x + children(x): a residual block whose body is its children in order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


def _causal_mask(x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    n = x.size(1) if batch_first and x.dim() == 3 else x.size(0)
    return nn.Transformer.generate_square_subsequent_mask(n, device=x.device, dtype=x.dtype)


class SelfAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention applied to one tensor: `attn(x, x, x, need_weights=False)[0]` (same parameters)."""

    causal: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        mask = _causal_mask(x, self.batch_first) if self.causal else None
        return super().forward(x, x, x, need_weights=False, attn_mask=mask, is_causal=self.causal)[0]


class CausalEncoderLayer(nn.TransformerEncoderLayer):
    """nn.TransformerEncoderLayer with a causal mask (`"causal": true`)."""

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if src_mask is None:
            src_mask, is_causal = _causal_mask(src, self.self_attn.batch_first), True
        return super().forward(src, src_mask, src_key_padding_mask, is_causal)


class SelfDecoderLayer(nn.TransformerDecoderLayer):
    """nn.TransformerDecoderLayer on one tensor: its input is both target and memory."""

    causal: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        mask = _causal_mask(x, self.self_attn.batch_first) if self.causal else None
        return super().forward(x, x, tgt_mask=mask, tgt_is_causal=self.causal)


class CausalEncoder(nn.TransformerEncoder):
    """nn.TransformerEncoder with a causal mask (`"causal": true`)."""

    def forward(self, src: torch.Tensor, mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None, is_causal: bool | None = None) -> torch.Tensor:
        layer = self.layers[0]
        assert isinstance(layer, nn.TransformerEncoderLayer)
        if mask is None:
            mask, is_causal = _causal_mask(src, layer.self_attn.batch_first), True
        return super().forward(src, mask, src_key_padding_mask, is_causal)


def build_tree(tree: Any) -> nn.Module:
    """A fresh model for a tree (normalized first); parameters come from torch's global RNG in tree order."""
    return build_normalized(normalize_tree(tree))


def build_normalized(node: Mapping[str, Any]) -> nn.Module:
    """A fresh model for a tree that `normalize_tree` returned (not checked again); a combination of arguments
    torch refuses is a one-line ModelSpecError."""
    try:
        return _build(node)
    except (ValueError, TypeError, RuntimeError, AssertionError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelSpecError(f"root: torch refuses the tree: {first[:200]}") from None


def _build(node: Mapping[str, Any]) -> nn.Module:
    typ = node["type"]
    if typ in CONTAINERS:
        kids = OrderedDict((c.get("name", str(i)), _build(c)) for i, c in enumerate(node["children"]))
        return Residual(kids) if typ == "Residual" else nn.Sequential(kids)
    a = dict(node["args"])
    causal = bool(node.get("causal", False))
    for key in ("kernel_size", "stride", "padding", "dilation", "output_size"):
        if isinstance(a.get(key), list):
            a[key] = tuple(a[key])
    if typ == "MultiheadAttention":
        attn = SelfAttention(**a)
        attn.causal = causal
        return attn
    if typ == "TransformerEncoderLayer":
        return (CausalEncoderLayer if causal else nn.TransformerEncoderLayer)(**a)
    if typ == "TransformerDecoderLayer":
        dec = SelfDecoderLayer(**a)
        dec.causal = causal
        return dec
    if typ == "TransformerEncoder":
        layer = _build(a["encoder_layer"])
        norm = _build(a["norm"]) if a["norm"] is not None else None
        cls = CausalEncoder if causal else nn.TransformerEncoder
        return cls(layer, a["num_layers"], norm=norm, enable_nested_tensor=False)  # type: ignore[arg-type]
    return LEAVES[typ][0](**a)


def count_parameters(node: Mapping[str, Any]) -> int:
    """Parameters and buffers of a normalized tree, computed from the arguments (nothing is built: building on
    the meta device would import torch's compiler for `normal_`, ~9 s); refuses above the limit."""
    n = _count(node)
    if n > MAX_PARAMETERS:
        raise ModelSpecError(f"root: the tree has {n:,} parameters and buffers, more than {MAX_PARAMETERS:,}")
    return n


def _prod(v: int | list[int], dims: int) -> int:
    return math.prod(v) if isinstance(v, list) else v ** dims


def _mha(d: int, bias: bool, bias_kv: bool = False) -> int:
    return 4 * d * d + (4 * d if bias else 0) + (2 * d if bias_kv else 0)


def _count(node: Mapping[str, Any]) -> int:
    typ = node["type"]
    if typ in CONTAINERS:
        return sum(_count(c) for c in node["children"])
    a = node["args"]
    if typ == "Linear":
        return a["in_features"] * a["out_features"] + (a["out_features"] if a["bias"] else 0)
    if typ in ("Conv1d", "Conv2d"):
        k = _prod(a["kernel_size"], 1 if typ == "Conv1d" else 2)
        return a["out_channels"] * (a["in_channels"] // a["groups"]) * k + (a["out_channels"] if a["bias"] else 0)
    if typ.startswith("BatchNorm"):
        c = a["num_features"]
        return (2 * c if a["affine"] else 0) + (2 * c + 1 if a["track_running_stats"] else 0)
    if typ == "LayerNorm":
        p = _prod(a["normalized_shape"], 1)
        return (p + (p if a["bias"] else 0)) if a["elementwise_affine"] else 0
    if typ == "RMSNorm":
        return _prod(a["normalized_shape"], 1) if a["elementwise_affine"] else 0
    if typ == "GroupNorm":
        return 2 * a["num_channels"] if a["affine"] else 0
    if typ == "Embedding":
        return a["num_embeddings"] * a["embedding_dim"]
    if typ == "MultiheadAttention":
        return _mha(a["embed_dim"], a["bias"], a["add_bias_kv"])
    if typ in ("TransformerEncoderLayer", "TransformerDecoderLayer"):
        d, ff, b = a["d_model"], a["dim_feedforward"], a["bias"]
        attn, norms = (1, 2) if typ == "TransformerEncoderLayer" else (2, 3)
        return attn * _mha(d, b) + 2 * d * ff + ((ff + d) if b else 0) + norms * (2 * d if b else d)
    if typ == "TransformerEncoder":
        return a["num_layers"] * _count(a["encoder_layer"]) + (_count(a["norm"]) if a["norm"] is not None else 0)
    return 0


# ---------------------------------------------------------------------------------------------------------
# Converting a user's module
# ---------------------------------------------------------------------------------------------------------

_LEAF_OF_CLASS: dict[type[nn.Module], str] = {cls: name for name, (cls, _) in LEAVES.items()}
_ACTIVATIONS: dict[Callable[..., Any], str] = {F.relu: "relu", F.gelu: "gelu"}


def _leaf_args(typ: str, module: nn.Module, path: str) -> dict[str, Any]:
    """Constructor arguments of an allow-listed module instance, read from its attributes."""
    m: Any = module

    def refuse(why: str) -> ModelSpecError:
        return ModelSpecError(f"{path} ({type(m).__name__}): {why}")

    a: dict[str, Any] = {}
    for name in LEAVES[typ][1]:
        if name == "bias":
            a[name] = (m.in_proj_bias is not None if typ == "MultiheadAttention"
                       else m.linear1.bias is not None if typ.startswith("Transformer")
                       else getattr(m, "bias", None) is not None if typ != "LayerNorm"
                       else m.bias is not None or not m.elementwise_affine)
        elif typ == "MultiheadAttention" and name == "add_bias_kv":
            a[name] = m.bias_k is not None
        elif typ.startswith("Transformer") and typ.endswith("Layer"):
            attn = m.self_attn
            a.update(d_model=attn.embed_dim, nhead=attn.num_heads, dim_feedforward=m.linear1.out_features,
                     dropout=m.dropout.p, layer_norm_eps=m.norm1.eps, batch_first=attn.batch_first,
                     norm_first=m.norm_first)
            act = _ACTIVATIONS.get(m.activation)
            if act is None:
                raise refuse("activation must be relu or gelu")
            a["activation"] = act
        elif typ == "TransformerEncoder":
            layers = list(m.layers)
            first = module_to_node(layers[0], f"{path}.layers.0")
            if any(module_to_node(x, f"{path}.layers.{i}") != first for i, x in enumerate(layers)):
                raise refuse("its layers are not all the same configuration")
            a.update(encoder_layer=first, num_layers=len(layers),
                     norm=module_to_node(m.norm, f"{path}.norm") if m.norm is not None else None)
            break
        elif name not in a:
            if not hasattr(m, name):
                raise refuse(f"cannot read argument {name!r}")
            a[name] = getattr(m, name)
    if typ == "Embedding" and (m.max_norm is not None or m.sparse):
        raise refuse("max_norm and sparse embeddings are not supported")
    if typ.startswith("MaxPool") and m.return_indices:
        raise refuse("return_indices is not supported")
    if typ == "MultiheadAttention" and not m._qkv_same_embed_dim:
        raise refuse("kdim/vdim other than embed_dim are not supported")
    if isinstance(a.get("normalized_shape"), tuple | torch.Size):
        a["normalized_shape"] = list(a["normalized_shape"])
    if isinstance(a.get("unflattened_size"), tuple | torch.Size):
        a["unflattened_size"] = list(a["unflattened_size"])
    for k, v in list(a.items()):
        if isinstance(v, tuple):
            a[k] = list(v)
    return a


def module_to_node(m: nn.Module, path: str = "root") -> dict[str, Any]:
    """The tree node of an allow-listed module or standard container (custom modules need `module_to_tree`)."""
    typ = _LEAF_OF_CLASS.get(type(m))
    if typ is not None:
        return {"type": typ, "args": _leaf_args(typ, m, path)}
    if type(m) in (nn.Sequential, nn.ModuleList, Residual):
        return {"type": "Residual" if type(m) is Residual else "Sequential",
                "children": [_named(module_to_node(c, f"{path}.{n}"), n, i) for i, (n, c) in
                             enumerate(m.named_children())]}
    raise ModelSpecError(f"{path}: {type(m).__name__} is not a standard module")


def _named(node: dict[str, Any], name: str, index: int) -> dict[str, Any]:
    return node if name == str(index) else {"name": name, **node}


def module_to_tree(module: nn.Module, example_input: torch.Tensor) -> dict[str, Any]:
    """The normalized tree of a user's model built from standard layers; refuses with a one-line reason.

    Each non-standard module must compute exactly Sequential or Residual of its children (in registration
    order), checked on the inputs it sees while the model runs on `example_input`. The result is then built,
    given the user's parameters and buffers, and must reproduce the model's outputs exactly, in eval mode
    and in train mode under the same RNG state (so dropout sits where it did), with the same state_dict.
    """
    if not isinstance(example_input, torch.Tensor):
        raise ModelSpecError("module_to_tree needs an example input tensor")
    names = [n for n, _ in module.named_parameters(remove_duplicate=False)]
    if len(names) != len(list(module.parameters())):
        raise ModelSpecError("root: the model ties parameters (one tensor under two names); a tree cannot express it")
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    calls: dict[str, int] = {}
    hooks = []
    work = copy.deepcopy(module).cpu().eval()
    for path, sub in _custom_modules(work, "root"):
        if any(True for _ in sub.parameters(recurse=False)) or any(True for _ in sub.buffers(recurse=False)):
            raise ModelSpecError(f"{path} ({type(sub).__name__}) holds its own parameters or buffers; only "
                                 "standard modules may")

        def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any, path: str = path) -> None:
            calls[path] = calls.get(path, 0) + 1
            if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor) or not isinstance(out, torch.Tensor):
                raise ModelSpecError(f"{path} ({type(mod).__name__}): forward() must take one tensor and return one")
            captured[path] = (args[0].detach().clone(), out.detach().clone())

        hooks.append(sub.register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            work(example_input.cpu())
    finally:
        for h in hooks:
            h.remove()
    if any(c > 1 for c in calls.values()):
        raise ModelSpecError(f"{min(p for p, c in calls.items() if c > 1)}: called more than once in forward()")
    tree = _convert(work, "root", captured)
    node = normalize_tree(tree)
    _check_equivalent(module, node, example_input)
    return node


def _custom_modules(m: nn.Module, path: str) -> list[tuple[str, nn.Module]]:
    """Non-standard modules reached without passing through an allow-listed leaf (whose insides are torch's)."""
    if type(m) in _LEAF_OF_CLASS:
        return []
    out = [] if type(m) in (nn.Sequential, nn.ModuleList, Residual) else [(path, m)]
    for n, c in m.named_children():
        out += _custom_modules(c, f"{path}.{n}")
    return out


def _convert(m: nn.Module, path: str, captured: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    if type(m) in _LEAF_OF_CLASS:
        return module_to_node(m, path)
    kids = [_named(_convert(c, f"{path}.{n}", captured), n, i) for i, (n, c) in enumerate(m.named_children())]
    if type(m) in (nn.Sequential, nn.ModuleList, Residual):
        return {"type": "Residual" if type(m) is Residual else "Sequential", "children": kids}
    if path not in captured:
        raise ModelSpecError(f"{path} ({type(m).__name__}): not called by forward() on the example input")
    if not kids:
        raise ModelSpecError(f"{path} ({type(m).__name__}): a custom module with no standard children")
    x, want = captured[path]
    for typ in ("Sequential", "Residual"):
        cand = {"type": typ, "children": kids}
        try:
            with torch.random.fork_rng(devices=[]):
                built = _build(normalize_tree(cand))
            built.load_state_dict(m.state_dict(), strict=True)
            built.eval()
            with torch.no_grad():
                got = built(x)
        except (ModelSpecError, RuntimeError, ValueError, TypeError, AssertionError):
            continue
        if got.shape == want.shape and got.dtype == want.dtype and torch.equal(got, want):
            return cand
    raise ModelSpecError(f"{path} ({type(m).__name__}): forward() is not its children in order, nor a residual "
                         "around them (functional ops in forward() cannot be expressed as a tree)")


def _check_equivalent(module: nn.Module, node: dict[str, Any], x: torch.Tensor) -> None:
    """The built tree, with the user's weights, gives bit-identical outputs in eval and train mode."""
    with torch.random.fork_rng(devices=[]):
        built = _build(node)
    ref = copy.deepcopy(module).cpu()
    want_keys = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    got_keys = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    if want_keys != got_keys:
        diff = sorted(set(want_keys) ^ set(got_keys)) or sorted(k for k in want_keys if want_keys[k] != got_keys[k])
        raise ModelSpecError(f"root: the tree's state_dict differs from the model's at {diff[:3]}")
    built.load_state_dict(ref.state_dict(), strict=True)
    x = x.cpu()
    for train in (False, True):
        ref.train(train)
        built.train(train)
        outs = []
        for model in (ref, built):
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(12345)
                outs.append(model(x))
        if not (isinstance(outs[0], torch.Tensor) and outs[0].shape == outs[1].shape and torch.equal(*outs)):
            raise ModelSpecError(f"root: the tree does not reproduce the model's output exactly in "
                                 f"{'train' if train else 'eval'} mode")
