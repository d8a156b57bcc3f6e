"""Hugging Face families: tiny GPT-2, Llama, BERT and ViT built from their config as data (no downloads),
re-initialized bit-exactly from the seed; remote code, unknown keys and other releases refused."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from registry.core.hashing import canonical_json
from registry.spec import hf, models
from registry.spec.models import ModelFamilyError, build_model, initial_state

transformers = pytest.importorskip("transformers")

TINY: dict[str, dict[str, Any]] = {
    "gpt2": {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2, "vocab_size": 128, "n_positions": 32,
             "bos_token_id": 0, "eos_token_id": 0},
    "llama": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 128, "max_position_embeddings": 32},
    "bert": {"model_type": "bert", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2, "vocab_size": 128, "max_position_embeddings": 32},
    "vit": {"model_type": "vit", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "image_size": 16, "patch_size": 4, "num_labels": 5},
}
CASES = [
    ("hf-causal-lm", "gpt2", (2, 10), (2, 10, 128)),
    ("hf-causal-lm", "llama", (2, 10), (2, 10, 128)),
    ("hf-masked-lm", "bert", (2, 10), (2, 10, 128)),
    ("hf-sequence-classification", "bert", (2, 10), (2, 3)),
    ("hf-image-classification", "vit", (2, 3, 16, 16), (2, 5)),
]


def test_pinned_release_is_installed() -> None:
    assert transformers.__version__ == hf.PINNED_TRANSFORMERS
    assert torch.__version__.startswith("2.13.0")  # installing transformers must not have moved torch


@pytest.mark.parametrize(("family", "kind", "in_shape", "out_shape"), CASES)
def test_hf_family_from_config(family: str, kind: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
    cfg = dict(TINY[kind])
    if family == "hf-sequence-classification":
        cfg["num_labels"] = 3
    args = models.normalize_args(family, {"config": cfg})
    assert args["transformers"] == hf.PINNED_TRANSFORMERS and args["attn_implementation"] == "eager"
    assert models.normalize_args(family, args) == args  # idempotent: what the verifier re-normalizes
    assert canonical_json(args)  # plain JSON
    state = initial_state(family, args, 21)
    assert sum(v.numel() for k, v in state.items() if not k.endswith("lm_head.weight")) < 500_000
    torch.manual_seed(21)
    model = build_model(family, args)
    assert list(state) == list(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    again = initial_state(family, args, 22)
    assert any(not torch.equal(state[k], again[k]) for k in state)
    x = torch.randn(*in_shape) if kind == "vit" else torch.randint(0, 128, in_shape)
    model.eval()
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == out_shape  # "output": "logits"


def test_model_output_mode_returns_hf_outputs() -> None:
    args = models.normalize_args("hf-causal-lm", {"config": TINY["llama"], "output": "model_output"})
    model = build_model("hf-causal-lm", args)
    ids = torch.randint(0, 128, (1, 6))
    out = model(ids, labels=ids)
    assert out.loss is not None and out.logits.shape == (1, 6, 128)


@pytest.mark.parametrize(("args", "match"), [
    ({"config": {"model_type": "gpt2", "auto_map": {"AutoModelForCausalLM": "evil.Model"}}}, "auto_map is not allowed"),
    ({"config": {"model_type": "gpt2", "trust_remote_code": True}}, "trust_remote_code is not allowed"),
    ({"config": {"model_type": "gpt2", "quantization_config": {}}}, "quantization_config is not allowed"),
    ({"config": {"model_type": "gpt2", "nested": {"auto_map": "x"}}}, "auto_map is not allowed"),
    ({"config": {"model_type": "gpt2", "not_a_field": 1}}, r"config keys \['not_a_field'\] are not fields"),
    ({"config": {"model_type": "t5"}}, "model_type 't5' is not allowed"),
    ({"config": {"model_type": "../../evil"}}, "is not allowed"),
    ({"config": {"n_layer": 2}}, "model_type None is not allowed"),
    ({"config": "gpt2"}, "must be an object"),
    ({"config": {"model_type": "gpt2", "n_embd": float("inf")}}, "finite"),
    ({"config": {"model_type": "gpt2", "n_embd": 65536, "n_head": 32, "n_layer": 2}}, "parameters, more than"),
    ({"config": {"model_type": "gpt2", "n_layer": 100_000}}, "more than 256 layers"),
    ({"transformers": "4.46.0", "config": {"model_type": "gpt2"}},
     r"built with transformers '4\.46\.0'; this verifier has '5\.17\.0'"),
    ({"config": {"model_type": "gpt2"}, "attn_implementation": "flash_attention_2"}, "attn_implementation"),
    ({"config": {"model_type": "gpt2"}, "pretrained": "gpt2"}, r"unknown arguments \['pretrained'\]"),
])
def test_hostile_hf_configs_are_refused_in_one_line(args: dict[str, Any], match: str) -> None:
    with pytest.raises(ModelFamilyError, match=match) as info:
        models.normalize_args("hf-causal-lm", args)
    assert "\n" not in str(info.value)


def test_another_release_is_unavailable_not_invalid() -> None:
    """A verifier without the committed release cannot judge the model: UnknownFamilyError (Unavailable)."""
    with pytest.raises(models.UnknownFamilyError, match="this verifier has"):
        models.build_model("hf-causal-lm", {"transformers": "5.0.0", "config": TINY["gpt2"]})


def test_vision_model_type_is_not_a_causal_lm() -> None:
    with pytest.raises(ModelFamilyError, match="model_type 'vit' is not allowed"):
        models.normalize_args("hf-causal-lm", {"config": TINY["vit"]})
