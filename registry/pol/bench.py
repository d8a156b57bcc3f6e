"""Recording overhead: the same training loop timed with and without the recorder, in one process.

`python -m registry.pol.bench [--steps N] [--repeats R] [--k K] [--family mlp|cnn] [--device D] [--threads T]`
prints the median
wall time of each and their ratio (goal ≤ 1.05). Runs alternate (plain, recorded, plain, ...) after one
warm-up of each, so drift in machine load hits both sides alike.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from registry.pol.batches import epoch_batches
from registry.pol.recorder import Recorder
from registry.pol.transcript import checkpoint_path
from registry.spec.datasets import Dataset, build_builtin
from registry.spec.models import build_model

FAMILY_ARGS: dict[str, dict[str, Any]] = {
    "mlp": {"in_features": 64, "hidden": [128], "out_features": 10, "dropout": 0.1},
    "cnn": {"in_channels": 1, "image_size": 8, "channels": [16, 32], "hidden": 64, "num_classes": 10},
}


def _run(ds: Dataset, family: str, steps: int, k: int, out: Path | None, seed: int = 0,
         device: str = "cpu", family_args: dict[str, Any] | None = None) -> tuple[float, float]:
    """(loop seconds, seconds including `finish()`) of one training run, recorded into `out` unless None."""
    torch.manual_seed(seed)
    args = FAMILY_ARGS[family] if family_args is None else family_args
    model = build_model(family, args).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    epochs = -(-steps * 32 // len(ds)) + 1
    batches = [idx for _, idx in epoch_batches(len(ds), 32, epochs, seed)][:steps]
    rec = None
    t0 = time.perf_counter()
    if out is not None:
        rec = Recorder(out, model, opt, family=family, family_args=args, dataset=ds,
                       steps_per_segment=k)
    model.train()
    for idx in batches:
        x, y = ds.batch(idx, device)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if rec is not None:
            rec.step(idx)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    if rec is not None:
        rec.finish()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t0


def measure_overhead(*, steps: int = 560, repeats: int = 5, k: int = 10, family: str = "mlp",
                     device: str = "cpu", workdir: str | Path | None = None,
                     family_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Median times of plain and recorded runs and the ratios (loop only, and including `finish()`)."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        ds = build_builtin("digits", root / "dataset")
        plain: list[float] = []
        rec_loop: list[float] = []
        rec_total: list[float] = []
        fa = family_args
        _run(ds, family, steps, k, None, device=device, family_args=fa)
        _run(ds, family, steps, k, root / "warmup", device=device, family_args=fa)
        ckpt_bytes = (root / "warmup" / checkpoint_path(1)).stat().st_size
        for r in range(repeats):
            plain.append(_run(ds, family, steps, k, None, device=device, family_args=fa)[0])
            loop, total = _run(ds, family, steps, k, root / f"rec{r}", device=device, family_args=fa)
            rec_loop.append(loop)
            rec_total.append(total)
            shutil.rmtree(root / f"rec{r}")  # big models: keep one transcript on disk at a time
    p, rl, rt = statistics.median(plain), statistics.median(rec_loop), statistics.median(rec_total)
    return {"family": family, "device": device, "steps": steps, "k": k, "threads": torch.get_num_threads(),
            "plain_s": p, "recorded_loop_s": rl,
            "recorded_total_s": rt, "ratio_loop": rl / p, "ratio_total": rt / p, "checkpoint_bytes": ckpt_bytes}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=560)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--family", choices=sorted(FAMILY_ARGS), default="mlp")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before measuring")
    a = parser.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    res = measure_overhead(steps=a.steps, repeats=a.repeats, k=a.k, family=a.family, device=a.device)
    print(f"{a.family} on {a.device}, {res['steps']} steps, k={res['k']}, {res['threads']} threads: "
          f"plain {res['plain_s']:.3f} s, "
          f"recorded {res['recorded_loop_s']:.3f} s (loop) / {res['recorded_total_s']:.3f} s (with finish); "
          f"ratio {res['ratio_loop']:.3f} (loop), {res['ratio_total']:.3f} (with finish)")


if __name__ == "__main__":
    main()
