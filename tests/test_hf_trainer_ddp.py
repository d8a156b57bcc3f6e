"""A multi-process Hugging Face Trainer run (2 CPU processes, gloo, the way torchrun / accelerate launch start
them) recorded by PoLCallback as one transcript through the Recorder's DDP path, replayed in one process
(issue 13): Valid, with the measured rho printed; rank 1's share of a step dropped and resealed is Invalid; a
model with dropout is refused on every rank in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from registry.pol import check_segment, load_manifest
from registry.spec.datasets import Dataset, build_dataset, load_dataset
from tests.forgery import edit_batches
from tests.procs import free_port
from tests.test_pol_step import verdict

pytest.importorskip("accelerate")
pytestmark = pytest.mark.slow

CONFIG = {"model_type": "gpt2", "n_embd": 16, "n_layer": 1, "n_head": 2, "vocab_size": 64, "n_positions": 16,
          "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
ARGS = {"config": CONFIG, "output": "model_output"}
WORLD, LOCAL, MICRO, STEPS, K = 2, 4, 2, 8, 4



def _train(out: Path, ds: Dataset, family_args: dict[str, Any]) -> Any:
    from transformers import Trainer, TrainingArguments

    from registry.pol.hf_trainer import PoLCallback
    from registry.spec.models import build_model

    torch.manual_seed(0)
    model = build_model("hf-causal-lm", family_args)
    args = TrainingArguments(output_dir=str(out.parent / "hf"), use_cpu=True, per_device_train_batch_size=LOCAL,
                             gradient_accumulation_steps=MICRO, max_steps=STEPS, learning_rate=1e-3,
                             lr_scheduler_type="linear", warmup_steps=3, max_grad_norm=1.0, bf16=True,
                             dataloader_drop_last=True, seed=0, report_to=[], save_strategy="no",
                             logging_strategy="no", disable_tqdm=True)
    assert args.world_size == WORLD
    cb = PoLCallback(out, dataset=ds, family_args=family_args, steps_per_segment=K)
    Trainer(model=model, args=args, callbacks=[cb], **cb.trainer_kwargs()).train()
    return cb.summary


def _rank_main(rank: int, port: int, base: str, ds_path: str) -> None:
    # what torchrun sets for each process; TrainingArguments (accelerate's PartialState) starts gloo from these
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from registry.pol import RecorderError

    ds = load_dataset(ds_path)
    result: dict[str, Any] = {}
    try:
        summary = _train(Path(base) / "t", ds, ARGS)
        result["manifest"] = str(summary.manifest_path)
        try:
            _train(Path(base) / "dropout", ds, {**ARGS, "config": {**CONFIG, "resid_pdrop": 0.1}})
        except RecorderError as exc:
            result["dropout"] = str(exc)
    finally:
        (Path(base) / f"result{rank}.json").write_text(json.dumps(result))


@pytest.fixture()
def tokens(tmp_path: Path) -> Dataset:
    t = np.random.default_rng(1).integers(0, 64, size=(32, 9), dtype=np.int64)
    return build_dataset(tmp_path / "ds", "tokens", t, t)



def test_two_process_trainer_run_is_one_transcript_replayed_in_one_process(tokens: Dataset, tmp_path: Path) -> None:
    base = tmp_path / "run"
    base.mkdir()
    mp.start_processes(_rank_main, args=(free_port(), str(base), str(tokens.path)), nprocs=WORLD,
                       start_method="spawn")
    results = [json.loads((base / f"result{r}.json").read_text()) for r in range(WORLD)]
    tdir = Path(results[0]["manifest"]).parent
    assert all(r["manifest"] == results[0]["manifest"] for r in results)
    m = load_manifest(tdir)
    cfg = m["config"]
    assert cfg["distributed"] == {"worldSize": WORLD}
    assert cfg["accumulation"] == {"microBatches": WORLD * MICRO}
    assert m["batchSize"] == WORLD * MICRO * LOCAL and m["numSteps"] == STEPS and m["numSegments"] == STEPS // K
    got = np.concatenate([np.load(tdir / s["batches"]) for s in m["segments"]])
    assert all(len(set(row)) == row.size for row in got[:2])  # an epoch's 2 steps: the ranks' shards are disjoint
    assert len(set(got[:2].ravel())) == len(tokens)
    rho = [check_segment(tdir, i, tokens, manifest=m).rho for i in range(m["numSegments"])]
    print(f"Trainer W={WORLD} n={MICRO} bf16 honest rho per segment: {rho}")
    assert max(rho) <= 1e-3
    assert verdict(tdir, tokens, tmp_path) == "Valid"

    half = MICRO * LOCAL  # rank 0's examples of a step come first

    def drop(arr: np.ndarray) -> None:  # rank 1's share of the segment's second step replaced by rank 0's
        arr[1, half:] = arr[1, :half]

    forged = edit_batches(tdir, tmp_path / "drop", drop)
    assert verdict(forged, tokens, tmp_path) == "Invalid"

    for r in results:
        assert "\n" not in r["dropout"]
        assert "draws random numbers in the forward from each DDP rank's own generator" in r["dropout"], r
    assert not (base / "dropout" / "manifest.json").exists()
