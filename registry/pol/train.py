"""Training a built-in model family on a built-in dataset with recording on (backs `proofreg train`).

The loop is the one a user would write (`registry.pol.config` spells out the step replay performs); the
recorder is the only addition. Default: MLP 64→128→10 with dropout 0.1 on the digits, SGD with momentum 0.9,
batch 32, k = 10, 5 epochs (280 steps) — a few seconds on a 2-core CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from registry.pol.batches import epoch_batches
from registry.pol.recorder import Recorder
from registry.pol.transcript import TranscriptSummary
from registry.spec.datasets import Dataset, build_builtin
from registry.spec.models import build_model

DEFAULT_MLP_ARGS: dict[str, Any] = {"in_features": 64, "hidden": [128], "out_features": 10, "dropout": 0.1}


@dataclass(frozen=True)
class TrainResult:
    summary: TranscriptSummary
    transcript_dir: Path
    dataset_dir: Path
    final_loss: float
    accuracy: float


def make_optimizer(name: str, params: Any, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r} (sgd or adam)")


def train(out_dir: str | Path, *, family: str = "mlp", family_args: Mapping[str, Any] | None = None,
          dataset: str | Dataset = "digits", dataset_dir: str | Path | None = None, epochs: int = 5,
          batch_size: int = 32, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 0.0,
          optimizer: str = "sgd", steps_per_segment: int = 10, seed: int = 0, device: str = "cpu",
          max_steps: int | None = None, dataset_cid: str | None = None,
          progress: Callable[[int, int], None] | None = None) -> TrainResult:
    """Trains and records into `out_dir/transcript` (dataset built into `out_dir/dataset` unless given).

    `progress(done, total)` is called after every step (the CLI draws its progress bar from it)."""
    out = Path(out_dir)
    if isinstance(dataset, Dataset):
        ds = dataset
    else:
        ddir = Path(dataset_dir) if dataset_dir is not None else out / "dataset"
        ds = Dataset.load(ddir) if (ddir / "dataset.json").exists() else build_builtin(dataset, ddir)
    args = dict(family_args) if family_args is not None else dict(DEFAULT_MLP_ARGS) if family == "mlp" else {}
    torch.manual_seed(seed)
    model = build_model(family, args).to(device)
    opt = make_optimizer(optimizer, model.parameters(), lr, momentum, weight_decay)
    config = {"seed": seed, "epochs": epochs, "shuffle": "numpy PCG64 permutation per epoch, drop_last"}
    rec = Recorder(out / "transcript", model, opt, family=family, family_args=args, dataset=ds,
                   steps_per_segment=steps_per_segment, config=config, dataset_cid=dataset_cid, rng_seed=seed)
    total = epochs * (len(ds) // batch_size) if 1 <= batch_size <= len(ds) else 0
    if max_steps is not None:
        total = min(total, max_steps)
    model.train()
    loss_value = float("nan")
    with rec:
        for n, (epoch, idx) in enumerate(epoch_batches(len(ds), batch_size, epochs, seed)):
            if max_steps is not None and n >= max_steps:
                break
            x, y = ds.batch(idx, device)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            rec.step(idx, epoch=epoch)
            loss_value = float(loss.detach())
            if progress is not None:
                progress(n + 1, total)
        summary = rec.finish()
    model.eval()
    with torch.no_grad():
        x_all, y_all = ds.batch(torch.arange(len(ds)), device)
        accuracy = float((model(x_all).argmax(1) == y_all).float().mean())
    return TrainResult(summary, out / "transcript", ds.path, loss_value, accuracy)
