"""Replay fidelity for each optimizer, precision, loss and step option that records: the largest ρ and the
largest distance of every state group (parameters, float buffers, optimizer state tensors, counts) over all
segments, when the verifier's engine replays a run recorded at 2 threads at 1 and at 2 threads.

Each case is a real run recorded through the plain-loop API (`Recorder.train_step`), so what is replayed is
what users record. At the recording's thread count the replay is bitwise (ρ = 0); at another thread count
the reduction order changes and ρ is the rounding that policy δ = 1e-3 has to absorb. Each case also reports
the verdict of an audit of every segment (Valid expected for all).

    python -m bench.fidelity [--steps 24] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from registry.pol import Recorder
from registry.pol.batches import epoch_batches
from registry.spec.datasets import Dataset, build_builtin, build_dataset
from registry.spec.models import build_model
from verifier.engine import DirSource, audit
from verifier.policy import get_policy

MLP = {"in_features": 64, "hidden": [64], "out_features": 10, "dropout": 0.1}
TOY = {"in_features": 8, "hidden": [32], "out_features": 3}
CNN = {"in_channels": 1, "image_size": 8, "channels": [8, 16], "hidden": 32, "num_classes": 10}
GPT2 = {"config": {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2, "vocab_size": 64,
                   "n_positions": 16}, "output": "model_output"}


def _adamw(m: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.01)


#: name -> (dataset kind, family, family args, optimizer factory, Recorder keywords, scheduler factory or None)
CASES: dict[str, tuple[str, str, dict[str, Any], Callable[[torch.nn.Module], torch.optim.Optimizer],
                       dict[str, Any], Callable[[torch.optim.Optimizer], Any] | None]] = {
    "SGD momentum, cross-entropy": ("digits", "mlp", MLP, lambda m: torch.optim.SGD(
        m.parameters(), lr=0.05, momentum=0.9), {}, None),
    "SGD nesterov + weight decay, StepLR": ("digits", "mlp", MLP, lambda m: torch.optim.SGD(
        m.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4), {},
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=8, gamma=0.5)),
    "Adam (amsgrad)": ("digits", "mlp", MLP, lambda m: torch.optim.Adam(m.parameters(), lr=3e-3, amsgrad=True),
                       {}, None),
    "AdamW, cosine schedule": ("digits", "mlp", MLP, _adamw, {},
                               lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=24)),
    "AdamW, clip by norm 0.5": ("digits", "mlp", MLP, _adamw, {"clip": {"type": "norm", "maxNorm": 0.5}}, None),
    "AdamW, clip by value 0.01": ("digits", "mlp", MLP, _adamw, {"clip": {"type": "value", "clipValue": 0.01}},
                                  None),
    "AdamW, accumulation 4": ("digits", "mlp", MLP, _adamw, {"accumulation": 4}, None),
    "AdamW, bf16 autocast": ("digits", "mlp", MLP, _adamw, {"autocast": "bfloat16"}, None),
    "AdamW, fp16 autocast + GradScaler": ("digits", "mlp", MLP, _adamw, {"scaler": "GradScaler"}, None),
    "AdamW, label smoothing 0.1": ("digits", "mlp", MLP, _adamw,
                                   {"loss": {"type": "cross_entropy", "labelSmoothing": 0.1}}, None),
    "Adam, MSE regression": ("regression", "mlp", TOY, lambda m: torch.optim.Adam(m.parameters(), lr=1e-2),
                             {"loss": "mse"}, None),
    "Adam, BCE-with-logits multi-label": ("multilabel", "mlp", TOY, lambda m: torch.optim.Adam(
        m.parameters(), lr=1e-2), {"loss": "bce_with_logits"}, None),
    "CNN, SGD momentum": ("digits-image", "cnn", CNN, lambda m: torch.optim.SGD(
        m.parameters(), lr=0.05, momentum=0.9), {}, None),
    "GPT-2 (HF config), AdamW, causal LM, bf16": ("tokens", "hf-causal-lm", GPT2, _adamw,
                                                   {"loss": "causal_lm", "autocast": "bfloat16"}, None),
}


def _dataset(kind: str, root: Path) -> Dataset:
    rng = np.random.default_rng(0)
    if kind == "digits":
        return build_builtin("digits", root / kind)
    if kind == "digits-image":
        d = build_builtin("digits", root / "digits")
        x, y = d.arrays()
        return build_dataset(root / kind, "digits-8x8", x.reshape(-1, 1, 8, 8), y)
    if kind in ("regression", "multilabel"):
        x = rng.normal(size=(256, 8)).astype(np.float32)
        y = (rng.normal(size=(256, 3)) if kind == "regression" else rng.random(size=(256, 3)) < 0.4)
        return build_dataset(root / kind, kind, x, y.astype(np.float32))
    t = rng.integers(0, 64, size=(256, 9), dtype=np.int64)  # "tokens": causal-LM inputs are their own targets
    return build_dataset(root / kind, "tokens", t, t)


def record(name: str, root: Path, steps: int, k: int) -> tuple[Path, Dataset]:
    kind, family, args, make_opt, kw, make_sched = CASES[name]
    ds = _dataset(kind, root / "datasets")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_model(family, args)
    opt = make_opt(model)
    sched = make_sched(opt) if make_sched is not None else None
    out = root / name.replace(" ", "_").replace(",", "").replace("/", "-")
    micro = int(kw.get("accumulation", 1))
    if kw.get("scaler") == "GradScaler":  # a fresh scaler per run (its state is part of the run)
        kw = {**kw, "scaler": torch.amp.GradScaler("cpu")}
    rec = Recorder(out, model, opt, family=family, family_args=args, dataset=ds, steps_per_segment=k,
                   scheduler=sched, **kw)
    try:
        for n, (_, idx) in enumerate(epoch_batches(len(ds), 8 * micro, 100, 0)):
            if n == steps:
                break
            rec.train_step(idx)
        rec.finish()
    finally:
        rec.close()
    return out, ds


def replay(tdir: Path, ds: Dataset, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    rep = audit(DirSource(tdir), None, [], dataset=ds, all_segments=True,
                policy=get_policy(None).with_overrides(init_check=False))
    torch.set_num_threads(2)
    groups: dict[str, float] = {}
    for seg in rep.segments:
        for g, st in (seg.state or {}).items():
            d = st.get("distance")
            groups[g] = max(groups.get(g, 0.0), float("inf") if d is None else float(d))
    rhos = [s.rho for s in rep.segments if s.rho is not None]
    return {"verdict": rep.verdict, "reason": rep.reason, "segments": len(rep.segments),
            "maxRho": max(rhos) if rhos else None, "groups": groups}


def measure(steps: int, k: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in CASES:
            tdir, ds = record(name, root, steps, k)
            rows.append({"case": name, "threads": {str(t): replay(tdir, ds, t) for t in (2, 1)}})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("-k", type=int, default=6)
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args(argv)
    rows = measure(a.steps, a.k)
    if a.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"replay fidelity: recorded at 2 threads, every segment replayed by the engine at 2 and at 1 thread "
          f"({a.steps} steps, k={a.k}); max rho, then the largest distance of each state group (policy 1e-3)")
    for r in rows:
        same, other = r["threads"]["2"], r["threads"]["1"]
        groups = ", ".join(f"{g} {v:.2g}" for g, v in sorted(other["groups"].items()))
        print(f"  {r['case']:<44} {same['verdict']}/{other['verdict']}  rho {same['maxRho']:.2g} / "
              f"{other['maxRho']:.2g}   at 1 thread: {groups}")


if __name__ == "__main__":
    main()
