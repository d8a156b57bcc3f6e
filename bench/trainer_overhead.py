"""Recording overhead of the Hugging Face `Trainer` callback (registry.pol.hf_trainer.PoLCallback) on the
GPT-2 example's model (scripts/gpt2_trainer.py, about 1.9M parameters): `trainer.train()` wall time with the
callback over the same run without it (same model, data, collation, loss and TrainingArguments: AdamW, linear
warmup, max_grad_norm=1.0, accumulation 2; fp32, see scripts/gpt2_trainer.py on bf16 at this size),
alternating runs, median of each. Goal ≤ 1.05.

Two ratios: the training loop alone (up to the last step: what recording costs while training goes on) and
`trainer.train()` in full, which also holds the recorder's `finish()`: the last writes and its self-check,
a replay of the first and the last segment. Also reports bytes per checkpoint against the raw state size.

    python -m bench.trainer_overhead [--size small|tiny] [--steps 40] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from registry.pol.collate import IndexView
from registry.pol.step import loss_spec, loss_value
from registry.pol.transcript import load_manifest
from registry.spec.datasets import Dataset, build_dataset
from registry.spec.models import build_model
from scripts.gpt2_trainer import NUM_EXAMPLES, SEQ_LEN, SIZES, TORCH_THREADS, family_args, markov_tokens, trainer_args


def _one(root: Path, ds: Dataset, size: str, steps: int, k: int, recorded: bool, tag: str) -> dict[str, float]:
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    from registry.pol.hf_trainer import PoLCallback

    marks: dict[str, float] = {}

    class _Clock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == steps:
                marks["loop"] = time.perf_counter()

    torch.manual_seed(0)
    model = build_model("hf-causal-lm", family_args(size))
    args = trainer_args(root / tag, steps, 0)
    if recorded:
        cb = PoLCallback(root / tag / "transcript", dataset=ds, family_args=family_args(size), steps_per_segment=k)
        kwargs, callbacks = cb.trainer_kwargs(), [_Clock(), cb]
    else:
        def collate(features: list[int]) -> dict[str, torch.Tensor]:  # the callback's collation, not recorded
            x, y = ds.batch(np.asarray(features, dtype=np.int64))
            return {"input_ids": x, "labels": y}

        def compute_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
            return loss_value(loss_spec("causal_lm"), outputs, labels) / 2  # the same loss and accumulation scaling

        kwargs = {"train_dataset": IndexView(len(ds)), "data_collator": collate, "compute_loss_func": compute_loss}
        callbacks = [_Clock()]
    trainer = Trainer(model=model, args=args, callbacks=callbacks, **kwargs)
    trainer.remove_callback(PrinterCallback)
    t0 = time.perf_counter()
    trainer.train()
    t1 = time.perf_counter()
    return {"loop": marks["loop"] - t0, "total": t1 - t0}


def measure(size: str, steps: int, repeats: int) -> dict[str, Any]:
    torch.set_num_threads(TORCH_THREADS)
    k = max(1, steps // 8)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tokens = markov_tokens(NUM_EXAMPLES[size], SEQ_LEN[size], SIZES[size]["vocab_size"], 0)
        ds = build_dataset(root / "dataset", "tokens", tokens, tokens)
        _one(root, ds, size, steps, k, False, "warm-plain")
        _one(root, ds, size, steps, k, True, "warm-rec")
        plain: list[dict[str, float]] = []
        rec: list[dict[str, float]] = []
        for r in range(repeats):
            plain.append(_one(root, ds, size, steps, k, False, f"plain{r}"))
            rec.append(_one(root, ds, size, steps, k, True, f"rec{r}"))
        m = load_manifest(root / "rec0" / "transcript")
        ckpt_bytes = (root / "rec0" / "transcript" / m["checkpoints"][1]["path"]).stat().st_size
        model = build_model("hf-causal-lm", family_args(size))
        params = sum(p.numel() for p in model.parameters())
        raw = 3 * 4 * params  # fp32 weights + AdamW's two moments
    med = {key: {x: statistics.median(r[x] for r in runs) for x in ("loop", "total")}
           for key, runs in (("plain", plain), ("recorded", rec))}
    return {"size": size, "parameters": params, "steps": steps, "k": k, "repeats": repeats,
            "threads": torch.get_num_threads(), "plain_loop_s": med["plain"]["loop"],
            "recorded_loop_s": med["recorded"]["loop"], "plain_total_s": med["plain"]["total"],
            "recorded_total_s": med["recorded"]["total"],
            "ratio_loop": med["recorded"]["loop"] / med["plain"]["loop"],
            "ratio_total": med["recorded"]["total"] / med["plain"]["total"],
            "checkpoint_bytes": ckpt_bytes, "raw_state_bytes": raw, "checkpoint_over_raw": ckpt_bytes / raw}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args(argv)
    f = measure(a.size, a.steps, a.repeats)
    if a.json:
        print(json.dumps(f, indent=1))
        return
    print(f"Trainer callback overhead, GPT-2 {f['parameters']:,} parameters, {f['steps']} steps, k={f['k']}, "
          f"{f['threads']} threads (median of {f['repeats']}; goal <= 1.05)")
    print(f"  training loop: plain {f['plain_loop_s']:.2f} s, recorded {f['recorded_loop_s']:.2f} s: "
          f"x{f['ratio_loop']:.3f}")
    print(f"  trainer.train() incl. finish() and its self-check: plain {f['plain_total_s']:.2f} s, recorded "
          f"{f['recorded_total_s']:.2f} s: x{f['ratio_total']:.3f}")
    print(f"  checkpoint {f['checkpoint_bytes']:,} B = x{f['checkpoint_over_raw']:.4f} of the raw state "
          f"(weights + AdamW moments, fp32)")


if __name__ == "__main__":
    main()
