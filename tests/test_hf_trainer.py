"""A Hugging Face Trainer run (AdamW, linear warmup, clipping, accumulation, bf16 on CPU) recorded by
registry.pol.hf_trainer.PoLCallback replays; configurations that cannot be replayed are refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from registry.pol import RecorderError, load_manifest
from registry.spec.datasets import Dataset, build_dataset
from registry.spec.models import build_model
from tests.test_pol_step import rhos, verdict

pytest.importorskip("accelerate")
ARGS = {"config": {"model_type": "gpt2", "n_embd": 16, "n_layer": 1, "n_head": 2, "vocab_size": 64,
                   "n_positions": 16}, "output": "model_output"}


def _run(tmp_path: Path, ds: Dataset, model: Any = None, **over: Any) -> Any:
    from transformers import Trainer, TrainingArguments

    from registry.pol.hf_trainer import PoLCallback

    torch.manual_seed(0)
    model = model if model is not None else build_model("hf-causal-lm", ARGS)
    kw: dict[str, Any] = dict(output_dir=str(tmp_path / "hf"), use_cpu=True, per_device_train_batch_size=4,
                              gradient_accumulation_steps=2, max_steps=8, learning_rate=1e-3,
                              lr_scheduler_type="linear", warmup_steps=3, max_grad_norm=1.0, bf16=True,
                              dataloader_drop_last=True, seed=0, report_to=[], save_strategy="no",
                              logging_strategy="no", disable_tqdm=True)
    kw.update(over)
    cb = PoLCallback(tmp_path / "t", dataset=ds, family_args=ARGS, steps_per_segment=4)
    trainer = Trainer(model=model, args=TrainingArguments(**kw), callbacks=[cb], **cb.trainer_kwargs())
    trainer.train()
    return cb


@pytest.fixture()
def tokens(tmp_path: Path) -> Dataset:
    t = np.random.default_rng(1).integers(0, 64, size=(32, 9), dtype=np.int64)
    return build_dataset(tmp_path / "ds", "tokens", t, t)


def test_trainer_run_is_valid(tokens: Dataset, tmp_path: Path) -> None:
    cb = _run(tmp_path, tokens)
    m = load_manifest(tmp_path / "t")
    cfg = m["config"]
    assert m["numSteps"] == 8 and m["batchSize"] == 8 and cb.summary is not None
    assert cfg["accumulation"] == {"microBatches": 2} and cfg["precision"]["autocast"] == "bfloat16"
    assert cfg["scheduler"]["type"] == "HFLinearWarmup" and cfg["clip"]["maxNorm"] == 1.0
    r = rhos(tmp_path / "t", tokens)
    print("rho", r)
    assert all(x <= 1e-3 for x in r)
    assert verdict(tmp_path / "t", tokens, tmp_path) == "Valid"


def test_fp16_is_refused(tokens: Dataset, tmp_path: Path) -> None:
    with pytest.raises(RecorderError, match="cannot be recorded: fp16") as e:
        _run(tmp_path, tokens, bf16=False, fp16=True)
    assert "\n" not in str(e.value)


def test_replay_builds_the_model_the_trainer_ran(tokens: Dataset, tmp_path: Path) -> None:
    """The Trainer sets model.config.use_cache = False (args.use_cache); replay must build that model too: with
    the KV cache on, bf16 backward kernels on a CPU without bf16 instructions round differently (the 1.9M GPT-2
    example was refused by the self-check, segment distance 0.0138 with oneDNN/ATen held to AVX2; 0 with this)."""
    from registry.pol.config import rebuild_model

    _run(tmp_path, tokens, max_steps=4)
    cfg = load_manifest(tmp_path / "t")["config"]
    assert cfg["model"]["args"]["config"]["use_cache"] is False
    assert rebuild_model(cfg, "cpu").config.use_cache is False


def _from_config() -> Any:
    """A model the way a user builds one with transformers alone: `from_config` picks sdpa attention."""
    from transformers import AutoModelForCausalLM, GPT2Config

    cfg = {k: v for k, v in ARGS["config"].items() if k != "model_type"}
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(GPT2Config(**cfg))


def test_the_trainer_callback_commits_what_the_model_runs_with(tokens: Dataset, tmp_path: Path) -> None:
    """family_args say eager attention (the default) while the model runs sdpa: the callback commits sdpa, and
    the run verifies."""
    model = _from_config()
    assert model.config._attn_implementation == "sdpa"
    _run(tmp_path, tokens, model=model, max_steps=4)
    args = load_manifest(tmp_path / "t")["config"]["model"]["args"]
    assert args["attn_implementation"] == "sdpa" and args["config"]["use_cache"] is False
    assert verdict(tmp_path / "t", tokens, tmp_path) == "Valid"


def test_a_hand_written_loop_on_a_model_running_another_config_is_refused(tokens: Dataset, tmp_path: Path) -> None:
    """The Recorder holds the live model to the family arguments it is given, beyond the state_dict layout:
    a config key or the attention implementation that differs is refused in one line, before any step."""
    from registry.pol import Recorder

    def record(model: Any, args: dict[str, Any], name: str = "refused") -> Any:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        return Recorder(tmp_path / name, model, opt, family="hf-causal-lm", family_args=args, dataset=tokens,
                        steps_per_segment=4, loss="causal_lm")

    model = build_model("hf-causal-lm", ARGS)
    model.config.use_cache = False
    with pytest.raises(RecorderError, match=r"runs with config.use_cache = False but the family arguments give "
                                            r"True; pass it in family_args") as e:
        record(model, ARGS)
    assert "\n" not in str(e.value)
    record(model, {**ARGS, "config": {**ARGS["config"], "use_cache": False}}, "cache").close()
    with pytest.raises(RecorderError, match="runs with attn_implementation = 'sdpa' but the family arguments "
                                            "give 'eager'"):
        record(_from_config(), ARGS)
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").rglob("*"))
    record(_from_config(), {**ARGS, "attn_implementation": "sdpa"}, "sdpa").close()


@pytest.mark.parametrize(("over", "reason"), [
    ({"n_gpu": 2}, "several GPUs in one process (DataParallel) cannot be replayed"),
    ({"fsdp": "full_shard"}, "DeepSpeed / FSDP runs cannot be replayed"),
    ({"parallelism_config": object()}, "parallelism (parallelism_config) cannot be replayed"),
    ({"world_size": 2}, "world_size is 2 but torch.distributed is not initialized"),
    ({"world_size": 3}, "does not split into optimizer steps of 2 micro-batches on each of 3 processes"),
])
def test_what_a_multi_device_run_cannot_replay_is_refused(tokens: Dataset, tmp_path: Path, over: dict[str, Any],
                                                           reason: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusals of on_train_begin, on the arguments alone (a DataParallel or FSDP run needs devices this test
    does not have; a real two-process run is tests/test_hf_trainer_ddp.py)."""
    from types import SimpleNamespace

    from registry.pol.hf_trainer import PoLCallback

    if over.get("world_size") == 3:  # the epoch check, past the process-group check
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    args = SimpleNamespace(**{"fp16": False, "deepspeed": None, "fsdp": "", "n_gpu": 1, "parallelism_config": None,
                              "world_size": 1, "label_smoothing_factor": 0.0, "group_by_length": False,
                              "dataloader_drop_last": True, "gradient_accumulation_steps": 2,
                              "per_device_train_batch_size": 4, **over})
    cb = PoLCallback(tmp_path / "t", dataset=tokens, family_args=ARGS, steps_per_segment=4)
    model = build_model("hf-causal-lm", ARGS)
    with pytest.raises(RecorderError, match="cannot be recorded") as e:
        cb.on_train_begin(args, None, None, model=model, optimizer=torch.optim.AdamW(model.parameters()))
    assert reason in str(e.value) and "\n" not in str(e.value)
