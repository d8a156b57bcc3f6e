"""The committed training step (registry.pol.step): gradient accumulation, bf16 autocast, loss options, the
causal-LM loss and the plain-loop API each record and replay to rho 0; loops that do something else are refused
when recorded, with one line, never afterwards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from registry.pol import Recorder, RecorderError, TranscriptError, check_segment, load_manifest
from registry.pol.batches import epoch_batches
from registry.pol.step import StepSpec, loss_spec, precision_spec
from registry.spec.datasets import Dataset, build_builtin, build_dataset, next_token_arrays
from registry.spec.models import build_model
from verifier.cli import main as verifier_main

MLP = {"in_features": 64, "hidden": [32], "out_features": 10, "dropout": 0.2}


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return build_builtin("digits", tmp_path_factory.mktemp("digits"))


def rhos(tdir: Path, ds: Dataset) -> list[float]:
    m = load_manifest(tdir)
    return [check_segment(tdir, i, ds, manifest=m).rho for i in range(m["numSegments"])]


def report(tdir: Path, ds: Dataset, tmp_path: Path) -> dict[str, Any]:
    """The report of `proofreg-verifier check --all` on this transcript."""
    res = CliRunner().invoke(verifier_main, ["check", str(tdir), "--all", "--dataset", str(ds.path),
                                             "--report", str(tmp_path / "r.json"), "--json"])
    assert res.exit_code in (0, 1, 3), res.output
    return dict(json.loads((tmp_path / "r.json").read_text()))


def verdict(tdir: Path, ds: Dataset, tmp_path: Path) -> str:
    return str(report(tdir, ds, tmp_path)["verdict"])


def _model(args: dict[str, Any] = MLP) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = build_model("mlp", args)
    return model, torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)


def hand_loop(out: Path, ds: Dataset, *, micro: int = 1, divide: bool = True, amp: torch.dtype | None = None,
              amp_from: int = 0, steps: int = 8, **rec_kw: Any) -> None:
    """A loop the way users write accumulation and autocast, with the recorder's lines."""
    model, opt = _model()
    rec = Recorder(out, model, opt, family="mlp", family_args=MLP, dataset=ds, steps_per_segment=4, **rec_kw)
    try:
        for n, (_, idx) in enumerate(epoch_batches(len(ds), 8 * micro, 10, 0)):
            if n == steps:
                break
            for part in np.split(idx, micro):
                x, y = ds.batch(part)
                on = amp is not None and n >= amp_from
                with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=on):
                    loss = F.cross_entropy(model(x), y)
                (loss / micro if divide else loss).backward()
            opt.step()
            opt.zero_grad()
            rec.step(idx)
        rec.finish()
    finally:
        rec.close()


def test_gradient_accumulation_replays_exactly_and_is_committed(digits: Dataset, tmp_path: Path) -> None:
    hand_loop(tmp_path / "t", digits, micro=4, accumulation=4)
    m = load_manifest(tmp_path / "t")
    assert m["config"]["accumulation"] == {"microBatches": 4} and m["batchSize"] == 32
    assert rhos(tmp_path / "t", digits) == [0.0, 0.0]
    assert verdict(tmp_path / "t", digits, tmp_path) == "Valid"


def test_accumulation_loops_that_do_not_match_the_declaration_are_refused(digits: Dataset, tmp_path: Path) -> None:
    with pytest.raises(RecorderError, match="4 training-mode forwards in this step, the Recorder expects 1"):
        hand_loop(tmp_path / "a", digits, micro=4)
    # The loss not divided by the number of micro-batches: the self-check replays and refuses it.
    with pytest.raises(RecorderError, match="does not replay: segment 0 diverges"):
        hand_loop(tmp_path / "b", digits, micro=2, divide=False, accumulation=2)
    assert not (tmp_path / "b" / "manifest.json").exists()
    model, opt = _model()
    rec = Recorder(tmp_path / "c", model, opt, family="mlp", family_args=MLP, dataset=digits, steps_per_segment=4,
                   accumulation=3)
    idx = np.arange(8, dtype=np.int64)
    for _ in range(3):
        x, y = digits.batch(idx[:4])
        F.cross_entropy(model(x), y).backward()
    opt.step()
    with pytest.raises(RecorderError, match="does not split into 3 equal micro-batches"):
        rec.step(idx)
    rec.close()
    for bad in (0, -1, True, 1.5):
        with pytest.raises(RecorderError, match="accumulation must be"):
            Recorder(tmp_path / f"d{bad}", model, opt, family="mlp", family_args=MLP, dataset=digits,
                     steps_per_segment=4, accumulation=bad)


def test_bf16_autocast_is_detected_committed_and_replayed(digits: Dataset, tmp_path: Path) -> None:
    hand_loop(tmp_path / "t", digits, amp=torch.bfloat16)
    m = load_manifest(tmp_path / "t")
    assert m["config"]["precision"] == {"autocast": "bfloat16", "matmulPrecision": "highest", "cudnnTf32": True}
    assert rhos(tmp_path / "t", digits) == [0.0, 0.0]
    assert verdict(tmp_path / "t", digits, tmp_path) == "Valid"
    # An fp32 run writes no precision key: older configs keep their configHash.
    hand_loop(tmp_path / "fp32", digits)
    assert "precision" not in load_manifest(tmp_path / "fp32")["config"]


def test_autocast_that_cannot_be_replayed_is_refused_when_recorded(digits: Dataset, tmp_path: Path) -> None:
    with pytest.raises(RecorderError, match="autocast in float16 cannot be replayed"):
        hand_loop(tmp_path / "a", digits, amp=torch.float16)
    with pytest.raises(RecorderError, match="autocast changed from None to bfloat16 at step 2"):
        hand_loop(tmp_path / "b", digits, amp=torch.bfloat16, amp_from=2)
    with pytest.raises(RecorderError, match="told autocast='bfloat16'"):
        hand_loop(tmp_path / "c", digits, autocast="bfloat16")  # declared, but the loop runs in fp32
    with pytest.raises(RecorderError, match="cannot be replayed"):
        hand_loop(tmp_path / "d", digits, autocast="float16")


def test_matmul_flags_are_committed_and_may_not_change(digits: Dataset, tmp_path: Path) -> None:
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        hand_loop(tmp_path / "t", digits, steps=4)
        assert load_manifest(tmp_path / "t")["config"]["precision"]["matmulPrecision"] == "high"
        torch.set_float32_matmul_precision("highest")
        assert rhos(tmp_path / "t", digits) == [0.0]  # replay sets the committed flags, and restores them
        assert torch.get_float32_matmul_precision() == "highest"

        model, opt = _model()
        rec = Recorder(tmp_path / "c", model, opt, family="mlp", family_args=MLP, dataset=digits,
                       steps_per_segment=4)
        rec.train_step(np.arange(8, dtype=np.int64))
        torch.set_float32_matmul_precision("medium")
        with pytest.raises(RecorderError, match="matmul precision / cuDNN TF32 flags changed"):
            rec.finish()
        rec.close()
    finally:
        torch.set_float32_matmul_precision(old)


def test_plain_loop_api_with_scheduler_clip_accumulation_and_bf16(digits: Dataset, tmp_path: Path) -> None:
    """The plain-loop API: three added lines, the step itself is the protocol's (registry.pol.step)."""
    model, opt = _model()
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=6)
    rec = Recorder(tmp_path / "t", model, opt, family="mlp", family_args=MLP, dataset=digits, steps_per_segment=3,
                   scheduler=sched, clip={"type": "norm", "max_norm": 0.5}, accumulation=2, autocast="bfloat16",
                   loss={"type": "cross_entropy", "label_smoothing": 0.1})
    losses = [float(rec.train_step(idx)) for n, (_, idx) in zip(range(7), epoch_batches(len(digits), 16, 10, 0),
                                                                  strict=False)]
    rec.finish()
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    cfg = load_manifest(tmp_path / "t")["config"]
    assert cfg["loss"] == {"type": "cross_entropy", "labelSmoothing": 0.1, "ignoreIndex": -100}
    assert cfg["accumulation"] == {"microBatches": 2} and cfg["precision"]["autocast"] == "bfloat16"
    assert cfg["scheduler"]["type"] == "LinearLR" and cfg["scheduler"]["every"] == 1
    assert rhos(tmp_path / "t", digits) == [0.0, 0.0, 0.0]
    assert verdict(tmp_path / "t", digits, tmp_path) == "Valid"


def test_loss_options_and_ignore_index_replay_exactly(digits: Dataset, tmp_path: Path) -> None:
    model, opt = _model()
    loss = {"type": "cross_entropy", "labelSmoothing": 0.2, "ignoreIndex": 3}
    rec = Recorder(tmp_path / "t", model, opt, family="mlp", family_args=MLP, dataset=digits, steps_per_segment=2,
                   loss=loss)
    for _, (_, idx) in zip(range(4), epoch_batches(len(digits), 8, 10, 0), strict=False):
        x, y = digits.batch(idx)
        F.cross_entropy(model(x), y, label_smoothing=0.2, ignore_index=3).backward()
        opt.step()
        opt.zero_grad()
        rec.step(idx)
    rec.finish()
    assert load_manifest(tmp_path / "t")["config"]["loss"] == loss
    assert rhos(tmp_path / "t", digits) == [0.0, 0.0]
    # The same loop declaring plain cross-entropy is refused by the self-check.
    model, opt = _model()
    rec = Recorder(tmp_path / "u", model, opt, family="mlp", family_args=MLP, dataset=digits, steps_per_segment=2)
    for _, (_, idx) in zip(range(2), epoch_batches(len(digits), 8, 10, 0), strict=False):
        x, y = digits.batch(idx)
        F.cross_entropy(model(x), y, label_smoothing=0.2).backward()
        opt.step()
        opt.zero_grad()
        rec.step(idx)
    with pytest.raises(RecorderError, match="does not replay"):
        rec.finish()


@pytest.mark.parametrize("layout", ["causal_lm", "next_token"])
def test_language_model_losses_replay_exactly(layout: str, tmp_path: Path) -> None:
    """GPT-2 (transformers, from its config) on token sequences: HF's shifted causal-LM loss over input ids,
    and plain cross-entropy over next-token targets [N, T] (datasets.next_token_arrays)."""
    tokens = np.random.default_rng(1).integers(0, 64, size=(32, 9), dtype=np.int64)
    x, y = (tokens, tokens) if layout == "causal_lm" else next_token_arrays(tokens)
    ds = build_dataset(tmp_path / "ds", "tokens", x, y)
    args = {"config": {"model_type": "gpt2", "n_embd": 16, "n_layer": 1, "n_head": 2, "vocab_size": 64,
                       "n_positions": 16}}
    torch.manual_seed(0)
    model = build_model("hf-causal-lm", args)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = {"type": "causal_lm", "ignoreIndex": 5} if layout == "causal_lm" else "cross_entropy"
    rec = Recorder(tmp_path / "t", model, opt, family="hf-causal-lm", family_args=args, dataset=ds,
                   steps_per_segment=2, loss=loss)
    for _, (_, idx) in zip(range(4), epoch_batches(len(ds), 4, 10, 0), strict=False):
        rec.train_step(idx)
    rec.finish()
    assert rhos(tmp_path / "t", ds) == [0.0, 0.0]


def test_step_declarations_are_checked() -> None:
    assert loss_spec("cross_entropy").to_config() == "cross_entropy"
    assert loss_spec({"type": "causal_lm", "ignore_index": -100}).to_config() == "causal_lm"
    for bad in ("hinge", {"type": "mse", "labelSmoothing": 0.1}, {"type": "cross_entropy", "labelSmoothing": 2},
                {"type": "cross_entropy", "ignoreIndex": 1.5}, {"labelSmoothing": 0.1}, 7):
        with pytest.raises(TranscriptError):
            loss_spec(bad)
    for bad_p in ({"autocast": "float16", "matmulPrecision": "highest", "cudnnTf32": True},
                  {"autocast": None, "matmulPrecision": "fast", "cudnnTf32": True},
                  {"autocast": None, "matmulPrecision": "highest", "cudnnTf32": 1},
                  {"autocast": None}, "bf16"):
        with pytest.raises(TranscriptError):
            precision_spec(bad_p)
    for bad_a in ({"microBatches": 1}, {"microBatches": "2"}, {"microBatches": 2, "x": 1}, 2):
        with pytest.raises(TranscriptError):
            StepSpec.of({"loss": "mse", "accumulation": bad_a})


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant", "cosine_min_lr"])
def test_hugging_face_warmup_schedules_are_data(kind: str, digits: Dataset, tmp_path: Path) -> None:
    """transformers' warmup schedules are LambdaLRs over partials: recognised by name and keywords, never
    called by a verifier, which recomputes every rate; the recorder checks each recorded rate against it."""
    from transformers import optimization as hf

    model, opt = _model()
    sched = {"linear": lambda: hf.get_linear_schedule_with_warmup(opt, 3, 8),
             "cosine": lambda: hf.get_cosine_schedule_with_warmup(opt, 2, 8, num_cycles=0.7),
             "constant": lambda: hf.get_constant_schedule_with_warmup(opt, 3),
             "cosine_min_lr": lambda: hf.get_cosine_with_min_lr_schedule_with_warmup(
                 opt, 2, 8, min_lr_rate=0.1)}[kind]()
    ref = []
    shadow = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=3e-3)
    shadow_sched = {"linear": lambda: hf.get_linear_schedule_with_warmup(shadow, 3, 8),
                    "cosine": lambda: hf.get_cosine_schedule_with_warmup(shadow, 2, 8, num_cycles=0.7),
                    "constant": lambda: hf.get_constant_schedule_with_warmup(shadow, 3),
                    "cosine_min_lr": lambda: hf.get_cosine_with_min_lr_schedule_with_warmup(
                        shadow, 2, 8, min_lr_rate=0.1)}[kind]()
    for _ in range(8):
        ref.append(shadow.param_groups[0]["lr"])
        shadow.step()
        shadow_sched.step()
    rec = Recorder(tmp_path / "t", model, opt, family="mlp", family_args=MLP, dataset=digits, steps_per_segment=4,
                   scheduler=sched)
    for _, (_, idx) in zip(range(8), epoch_batches(len(digits), 8, 10, 0), strict=False):
        rec.train_step(idx)
    rec.finish()
    m = load_manifest(tmp_path / "t")
    assert m["config"]["scheduler"]["type"] == {"linear": "HFLinearWarmup", "cosine": "HFCosineWarmup",
                                                "constant": "HFConstantWarmup",
                                                "cosine_min_lr": "HFCosineWarmup"}[kind]
    from registry.pol.config import learning_rates

    assert [r[0] for r in learning_rates(m["config"], 8)] == ref  # bit for bit, transformers' own numbers
    assert rhos(tmp_path / "t", digits) == [0.0, 0.0]


def test_schedules_that_are_not_data_are_refused(digits: Dataset, tmp_path: Path) -> None:
    model, opt = _model()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.9 ** t)  # arbitrary code: a verifier cannot run it
    with pytest.raises(RecorderError, match="LambdaLR is not supported"):
        Recorder(tmp_path / "t", model, opt, family="mlp", family_args=MLP, dataset=digits, steps_per_segment=4,
                 scheduler=sched)


class _Twice(torch.autograd.Function):
    """A custom autograd Function: prover code a verifier, which rebuilds the model as data, never runs."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g * 2


def test_a_closure_records_and_custom_autograd_functions_are_refused(digits: Dataset, tmp_path: Path) -> None:
    # optimizer.step(closure), as Lightning and accelerate call it: the supported optimizers evaluate it once,
    # before the update, which is the committed step; the run replays exactly
    model, opt = _model()
    rec = Recorder(tmp_path / "a", model, opt, family="mlp", family_args=MLP, dataset=digits, steps_per_segment=2)
    for n, (_, idx) in enumerate(epoch_batches(len(digits), 8, 10, 0)):
        if n == 4:
            break
        x, y = digits.batch(idx)

        def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)
        opt.zero_grad()
        rec.step(idx)
    rec.finish()
    assert rhos(tmp_path / "a", digits) == [0.0, 0.0]
    # a custom autograd Function in the forward, found in the graph of the first training forward
    idx = np.arange(8, dtype=np.int64)
    x, y = digits.batch(idx)
    model, opt = _model()
    rec = Recorder(tmp_path / "b", model, opt, family="mlp", family_args=MLP, dataset=digits, steps_per_segment=4)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))  # inside the model's forward
    hook = first.register_forward_hook(lambda m, a, out: _Twice.apply(out))
    F.cross_entropy(model(x), y).backward()
    opt.step()
    with pytest.raises(RecorderError, match=r"custom autograd Function \(_Twice\)") as e:
        rec.step(idx)
    assert "\n" not in str(e.value)
    hook.remove()
    rec.close()
