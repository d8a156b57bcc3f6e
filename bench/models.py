"""Build and initialization cost of models described as data, each a ratio against building the same
model directly with torch / transformers in the same run:

- `initial_state(family, args, seed)` (normalize the arguments, count parameters on the meta device, seed,
  build on CPU, copy the state) over `torch.manual_seed(seed); <the same model built by hand>`;
- `spec_args(user_model, x)` (conversion with its exactness checks) over one forward pass of the model;
- the transformers import, once, in seconds (it is paid only by processes that use an `hf-*` family).

    python -m bench.models [--repeat N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from registry.spec import models


class _Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.act = nn.GELU()
        self.out = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out(self.act(self.fc(self.norm(x))))


class _UserNet(nn.Module):
    """A user's residual MLP (about 0.8M parameters)."""

    def __init__(self, d: int = 128, depth: int = 6) -> None:
        super().__init__()
        self.embed = nn.Linear(64, d)
        self.blocks = nn.ModuleList([_Block(d) for _ in range(depth)])
        self.head = nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def _best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) if repeat < 3 else statistics.median(times)


def _hf_cases() -> list[tuple[str, str, dict[str, Any]]]:
    gpt2 = {"model_type": "gpt2", "n_embd": 128, "n_layer": 4, "n_head": 4, "vocab_size": 1024, "n_positions": 128}
    llama = {"model_type": "llama", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024, "max_position_embeddings": 128}
    bert = {"model_type": "bert", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
            "num_attention_heads": 4, "vocab_size": 1024, "max_position_embeddings": 128}
    vit = {"model_type": "vit", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
           "num_attention_heads": 4, "image_size": 32, "patch_size": 4, "num_labels": 10}
    return [("hf-causal-lm", "AutoModelForCausalLM", gpt2), ("hf-causal-lm", "AutoModelForCausalLM", llama),
            ("hf-masked-lm", "AutoModelForMaskedLM", bert),
            ("hf-image-classification", "AutoModelForImageClassification", vit)]


def run(repeat: int = 5) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seed = 7

    def row(name: str, params: int, ours: float, base: float, what: str) -> None:
        rows.append({"model": name, "params": params, "seconds": ours, "baseline_seconds": base,
                     "ratio": ours / base if base > 0 else float("inf"), "what": what})

    # Built-in family and spec trees against hand-built torch modules.
    mlp_args = {"in_features": 64, "hidden": [512, 512], "out_features": 10}
    base = _best(lambda: (torch.manual_seed(seed), models.MLP(64, [512, 512], 10, 0.0)), repeat)
    ours = _best(lambda: models.initial_state("mlp", mlp_args, seed), repeat)
    row("mlp 64-512-512-10", sum(v.numel() for v in models.initial_state("mlp", mlp_args, seed).values()), ours, base,
        "initial_state / seeded build")

    torch.manual_seed(seed)
    user = _UserNet()
    x = torch.randn(32, 64)
    spec = models.spec_args(user, x)
    base = _best(lambda: (torch.manual_seed(seed), _UserNet()), repeat)
    ours = _best(lambda: models.initial_state("spec", spec, seed), repeat)
    n = sum(p.numel() for p in user.parameters())
    row("spec: user residual MLP", n, ours, base, "initial_state / seeded build")
    with torch.no_grad():
        fwd = _best(lambda: user(x), repeat)
    conv = _best(lambda: models.spec_args(user, x), max(1, repeat // 2))
    row("spec: convert user model", n, conv, fwd, "spec_args / one forward")

    t = time.perf_counter()
    import transformers

    rows.append({"model": "import transformers", "params": 0, "seconds": time.perf_counter() - t,
                 "baseline_seconds": None, "ratio": None, "what": "once per process"})
    for family, auto, cfg in _hf_cases():
        args = models.normalize_args(family, {"config": cfg})
        config = transformers.AutoConfig.for_model(**cfg)
        cls = getattr(transformers, auto)
        base = _best(lambda cls=cls, config=config: (torch.manual_seed(seed),
                                                     cls.from_config(config, attn_implementation="eager")), repeat)
        ours = _best(lambda family=family, args=args: models.initial_state(family, args, seed), repeat)
        n = sum(v.numel() for v in models.initial_state(family, args, seed).values())
        row(f"{family}: {cfg['model_type']}", n, ours, base, "initial_state / from_config")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    rows = run(a.repeat)
    if a.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'model':32} {'params':>10} {'seconds':>9} {'baseline':>9} {'ratio':>7}  what")
    for r in rows:
        base = "" if r["baseline_seconds"] is None else f"{r['baseline_seconds']:.4f}"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"{r['model']:32} {r['params']:>10,} {r['seconds']:>9.4f} {base:>9} {ratio:>7}  {r['what']}")


if __name__ == "__main__":
    main()
