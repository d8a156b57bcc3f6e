"""The `spec` model family: trees of standard torch.nn modules as data, conversion from a user's module,
bit-exact re-initialization from the seed, and hostile trees refused with one-line errors."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import torch
from torch import nn

from registry.core.hashing import canonical_json
from registry.spec import models, modelspec
from registry.spec.models import ModelFamilyError, build_model, initial_state


class Block(nn.Module):
    """A pre-norm residual MLP block: what users write by hand."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 2 * d)
        self.act = nn.GELU()
        self.out = nn.Linear(2 * d, d)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.out(self.act(self.fc(self.norm(x)))))


class UserNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.blocks = nn.ModuleList([Block(16), Block(16)])
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x))


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return list(a) == list(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def _numel(model: nn.Module) -> int:
    return sum(t.numel() for t in model.state_dict().values())


def test_user_module_converts_and_reinitializes_bit_exactly() -> None:
    torch.manual_seed(11)
    user = UserNet()
    args = models.spec_args(user, torch.randn(5, 8))
    assert models.normalize_args("spec", args) == args  # normalized: every argument written out
    assert json.loads(canonical_json(args)) == args  # plain JSON, what configHash commits to
    block = args["tree"]["children"][1]["children"][0]
    assert block["type"] == "Residual" and [c["name"] for c in block["children"]] == ["norm", "fc", "act", "out",
                                                                                     "drop"]
    # Same parameter names, same values from the same seed: the user's own construction order is the tree's.
    assert _same_state(initial_state("spec", args, 11), user.state_dict())
    torch.manual_seed(11)
    built = build_model("spec", args)
    assert _same_state(built.state_dict(), user.state_dict())
    other = initial_state("spec", args, 12)
    assert not torch.equal(other["embed.weight"], user.state_dict()["embed.weight"])
    # The caller's RNG stream is untouched by initial_state.
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    initial_state("spec", args, 1)
    assert torch.equal(torch.rand(3), want)
    # Training-mode outputs (dropout) agree too, under the same RNG state.
    x = torch.randn(4, 8)
    outs = []
    for m in (user, built):
        m.train()
        torch.manual_seed(3)
        outs.append(m(x))
    assert torch.equal(*outs)


def test_every_layer_kind_builds_and_converts_back() -> None:
    tree: dict[str, Any] = {"type": "Sequential", "children": [
        {"type": "Conv2d", "args": {"in_channels": 3, "out_channels": 8, "kernel_size": 3, "padding": 1}},
        {"type": "BatchNorm2d", "args": {"num_features": 8}},
        {"type": "GroupNorm", "args": {"num_groups": 2, "num_channels": 8}},
        {"type": "SiLU"},
        {"type": "MaxPool2d", "args": {"kernel_size": 2}},
        {"type": "Residual", "children": [{"type": "Conv2d", "args": {"in_channels": 8, "out_channels": 8,
                                                                       "kernel_size": [3, 3], "padding": "same"}},
                                           {"type": "Dropout2d", "args": {"p": 0.1}}]},
        {"type": "AdaptiveAvgPool2d", "args": {"output_size": 2}},
        {"type": "Flatten"},
        {"type": "Unflatten", "args": {"dim": 1, "unflattened_size": [8, 4]}},
        {"type": "Conv1d", "args": {"in_channels": 8, "out_channels": 4, "kernel_size": 1}},
        {"type": "BatchNorm1d", "args": {"num_features": 4}},
        {"type": "AvgPool1d", "args": {"kernel_size": 2}},
        {"type": "Flatten"},
        {"type": "RMSNorm", "args": {"normalized_shape": 8}},
        {"type": "Linear", "name": "head", "args": {"in_features": 8, "out_features": 6}},
        {"type": "LeakyReLU", "args": {"negative_slope": 0.2}},
        {"type": "Softmax", "args": {"dim": -1}},
    ]}
    args = models.normalize_args("spec", {"tree": tree})
    model = build_model("spec", args)
    x = torch.randn(2, 3, 8, 8)
    assert model(x).shape == (2, 6)
    assert modelspec.count_parameters(args["tree"]) == _numel(model)  # the size limit counts exactly
    assert "head.weight" in model.state_dict() and "5.0.weight" in model.state_dict()
    conv = models.spec_args(model, x)  # torch keeps `dilation=1` as (1, 1): the same model, spelled out
    assert conv["tree"]["children"][0]["args"]["dilation"] == [1, 1]
    assert models.spec_args(build_model("spec", conv), x) == conv
    torch.manual_seed(4)
    assert _same_state(initial_state("spec", conv, 4), initial_state("spec", args, 4))


def test_transformer_tree_builds_causal_and_converts() -> None:
    layer = {"type": "TransformerEncoderLayer", "args": {"d_model": 16, "nhead": 2, "dim_feedforward": 32,
                                                         "dropout": 0.0, "batch_first": True, "norm_first": True,
                                                         "activation": "gelu"}}
    tree = {"type": "Sequential", "children": [
        {"type": "Embedding", "args": {"num_embeddings": 40, "embedding_dim": 16}},
        {"type": "TransformerEncoder", "causal": True,
         "args": {"encoder_layer": layer, "num_layers": 2,
                  "norm": {"type": "LayerNorm", "args": {"normalized_shape": 16}}}},
        {"type": "MultiheadAttention", "causal": True, "args": {"embed_dim": 16, "num_heads": 2, "batch_first": True}},
        {"type": "TransformerDecoderLayer", "args": {"d_model": 16, "nhead": 2, "dim_feedforward": 32,
                                                      "batch_first": True}},
        {"type": "Linear", "args": {"in_features": 16, "out_features": 40}},
    ]}
    args = models.normalize_args("spec", {"tree": tree})
    model = build_model("spec", args).eval()
    assert modelspec.count_parameters(args["tree"]) == _numel(model)
    tokens = torch.randint(0, 40, (2, 6))
    out = model(tokens)
    assert out.shape == (2, 6, 40)
    # Causal: changing the last token leaves earlier positions of the causal part unchanged.
    prefix = nn.Sequential(*list(model)[:3])
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 40
    assert torch.allclose(prefix(tokens)[:, :-1], prefix(changed)[:, :-1], atol=1e-6)
    # A user's plain encoder stack converts (non-causal, as it is called without a mask).
    user = nn.Sequential(nn.Embedding(40, 16), nn.TransformerEncoder(
        nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True), 2, enable_nested_tensor=False),
        nn.Linear(16, 40))
    conv = models.spec_args(user, tokens)
    assert conv["tree"]["children"][1]["args"]["num_layers"] == 2


class Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x)) * 2


class OwnParam(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Functional()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.inner(x))


class Reordered(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc(x))  # children registered in another order than called


@pytest.mark.parametrize(("module", "match"), [
    (Functional(), r"root \(Functional\): forward\(\) is not its children in order"),
    (OwnParam(), r"root \(OwnParam\) holds its own parameters"),
    (Tied(), "ties parameters"),
    (Twice(), "called more than once"),
    (Reordered(), "does not reproduce the model's output exactly in train mode"),
    (nn.Sequential(nn.Linear(4, 4), nn.Sequential(Functional())), r"root\.1\.0 \(Functional\)"),
    (nn.Embedding(10, 4, max_norm=1.0), "max_norm"),
])
def test_conversion_refuses_what_a_tree_cannot_express(module: nn.Module, match: str) -> None:
    x = torch.randint(0, 10, (2, 3)) if isinstance(module, nn.Embedding) else torch.randn(2, 4)
    with pytest.raises(ModelFamilyError, match=match) as info:
        models.spec_args(module, x)
    assert "\n" not in str(info.value)


def _deep(n: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "Linear", "args": {"in_features": 2, "out_features": 2}}
    for _ in range(n):
        node = {"type": "Sequential", "children": [node]}
    return node


LIN = {"type": "Linear", "args": {"in_features": 4, "out_features": 2}}


@pytest.mark.parametrize(("tree", "match"), [
    ({"type": "Evil"}, r"root: unknown module type 'Evil'"),
    ({"type": "torch.nn.Linear"}, "unknown module type"),
    ({"type": "Linear", "args": {"in_features": 4, "out_features": 2, "device": "cuda"}},
     r"root\(Linear\): unknown arguments \['device'\]"),
    ({"type": "Linear", "args": {"in_features": 4}}, "missing required argument 'out_features'"),
    ({"type": "Linear", "args": {"in_features": "__import__('os').system('x')", "out_features": 2}},
     r"root\(Linear\)\.args\.in_features must be an integer"),
    ({"type": "Linear", "args": {"in_features": 4.0, "out_features": 2}}, "must be an integer"),
    ({"type": "Linear", "args": {"in_features": True, "out_features": 2}}, "must be an integer"),
    ({"type": "Linear", "args": {"in_features": -4, "out_features": 2}}, "must be positive"),
    ({"type": "Linear", "args": {"in_features": 1 << 40, "out_features": 2}}, "magnitude at most"),
    ({"type": "Linear", "args": {"in_features": 1 << 24, "out_features": 1 << 24}}, "parameters and buffers, more"),
    ({"type": "Sequential", "children": [LIN] * (modelspec.MAX_NODES + 1)}, "more than 4096 nodes"),
    (_deep(modelspec.MAX_DEPTH + 5), "nested deeper than 32 levels"),
    ({"type": "TransformerEncoderLayer", "args": {"d_model": 16, "nhead": 2, "activation": "os.system"}},
     r"activation must be one of \['relu', 'gelu'\]"),
    ({"type": "GELU", "args": {"approximate": {"__class__": "x"}}}, "approximate must be one of"),
    ({"type": "Sequential", "children": [LIN, {"type": "ReLU", "args": {"callback": "print"}}]},
     r"root\(Sequential\)\.children\[1\]: unknown arguments \['callback'\]"),
    ({"type": "Sequential", "children": [{"name": "../x", **LIN}]}, "name must be an identifier"),
    ({"type": "Sequential", "children": [{"name": "a", **LIN}, {"name": "a", **LIN}]}, "used twice"),
    ({"type": "Linear", "args": LIN["args"], "init": "normal_"}, r"unknown keys \['init'\]"),
    ({"type": "Linear", "args": LIN["args"], "children": []}, "has no children"),
    ({"type": "Residual", "children": []}, "non-empty list"),
    ({"type": "Conv2d", "args": {"in_channels": 3, "out_channels": 4, "kernel_size": 3, "groups": 2}},
     "divisible by groups"),
    ({"type": "Conv2d", "args": {"in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding": "full"}},
     "'same' or 'valid'"),
    ({"type": "Dropout", "args": {"p": 1.5}}, r"must be in \[0, 1\)"),
    ({"type": "Conv1d", "args": {"in_channels": 2, "out_channels": 2, "kernel_size": 3, "stride": 2,
                                 "padding": "same"}}, "torch refuses the tree: padding='same'"),
    ({"type": "LayerNorm", "args": {"normalized_shape": 4, "eps": float("nan")}}, "finite"),
    ({"type": "TransformerEncoder", "args": {"encoder_layer": LIN, "num_layers": 2}},
     "must be a TransformerEncoderLayer node"),
    ({"type": "Linear", "args": LIN["args"], "causal": True}, "causal"),
    ([LIN], "must be an object"),
])
def test_hostile_trees_are_refused_in_one_line(tree: Any, match: str) -> None:
    with pytest.raises(ModelFamilyError, match=match) as info:
        build_model("spec", {"tree": tree})
    assert "\n" not in str(info.value) and len(str(info.value)) < 1200


def test_callables_and_objects_in_args_are_refused() -> None:
    for value in (print, nn.Linear(2, 2), torch.ones(2), lambda: 1):
        with pytest.raises(ModelFamilyError, match="must be"):
            build_model("spec", {"tree": {"type": "Linear", "args": {"in_features": value, "out_features": 2}}})
    with pytest.raises(ModelFamilyError, match="unknown arguments"):
        build_model("spec", {"tree": LIN, "code": "import os"})
    with pytest.raises(ModelFamilyError, match="unknown format"):
        build_model("spec", {"tree": LIN, "format": "proofreg-modelspec/99"})


def test_initial_state_of_builtin_families_matches_seeded_build() -> None:
    for family, args in (("mlp", {"in_features": 16, "hidden": [8], "out_features": 3}), ("resnet20", {"width": 2})):
        torch.manual_seed(9)
        want = build_model(family, args).state_dict()
        assert _same_state(initial_state(family, args, 9), want)
    with pytest.raises(ModelFamilyError, match="seed"):
        initial_state("mlp", {"in_features": 2, "out_features": 2}, -1)
    with pytest.raises(ModelFamilyError, match="declares no initializer"):
        models.init_spec("spec", {"tree": LIN})


def test_tree_state_is_independent_of_the_callers_model() -> None:
    """The converted tree does not alias the user's module: training it leaves the user's weights alone."""
    torch.manual_seed(0)
    user = UserNet()
    before = copy.deepcopy(user.state_dict())
    model = build_model("spec", models.spec_args(user, torch.randn(2, 8)))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert _same_state(user.state_dict(), before)
