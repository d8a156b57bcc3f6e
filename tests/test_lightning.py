"""A PyTorch Lightning `Trainer.fit` run (AdamW + a step scheduler, clipping, accumulation, bf16-mixed on CPU)
recorded by registry.pol.lightning.PoLLightningCallback replays to rho 0 and is Valid; what cannot be replayed
is refused in one line at the start of training, and a training_step with another loss fails the self-check."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from registry.pol import RecorderError, load_manifest
from registry.spec.datasets import Dataset, build_dataset
from registry.spec.models import build_model
from tests.test_pol_step import rhos, verdict

pl = pytest.importorskip("pytorch_lightning")
MLP = {"in_features": 16, "hidden": [16], "out_features": 4, "dropout": 0.1}
GPT2 = {"config": {"model_type": "gpt2", "n_embd": 16, "n_layer": 1, "n_head": 2, "vocab_size": 64,
                   "n_positions": 16}, "output": "model_output"}
QUIET = dict(enable_progress_bar=False, logger=False, enable_checkpointing=False, enable_model_summary=False,
             accelerator="cpu", devices=1)


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture()
def ds(tmp_path: Path) -> Dataset:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 16)).astype(np.float32)
    return build_dataset(tmp_path / "ds", "synthetic", x, rng.integers(0, 4, size=64).astype(np.int64))


class Module(pl.LightningModule):  # type: ignore[misc,name-defined]
    def __init__(self, cb: Any, opt: str = "adamw", sched: bool = True, scale: float = 1.0,
                 manual: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = build_model("mlp", MLP)
        self.cb, self.opt, self.sched, self.scale = cb, opt, sched, scale
        self.automatic_optimization = not manual

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.cb.loss(self.model(x), y) * self.scale

    def configure_optimizers(self) -> Any:
        if self.opt == "sgd":
            o: torch.optim.Optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        else:
            o = torch.optim.AdamW(self.model.parameters(), lr=3e-3, weight_decay=0.01)
        if not self.sched:
            return o
        s = torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)
        return {"optimizer": o, "lr_scheduler": {"scheduler": s, "interval": "step"}}


def _run(tmp_path: Path, ds: Dataset, mod: dict[str, Any] | None = None, **over: Any) -> Any:
    from registry.pol.lightning import PoLLightningCallback

    cb = PoLLightningCallback(tmp_path / "t", dataset=ds, family="mlp", family_args=MLP, steps_per_segment=4,
                              config={"seed": 0})
    kw: dict[str, Any] = dict(QUIET, max_steps=8, gradient_clip_val=1.0, accumulate_grad_batches=2)
    kw.update(over)
    trainer = pl.Trainer(callbacks=[cb], **kw)
    trainer.fit(Module(cb, **(mod or {})), train_dataloaders=cb.train_dataloader(batch_size=4))
    return cb


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_lightning_run_is_valid(ds: Dataset, tmp_path: Path, precision: str) -> None:
    cb = _run(tmp_path, ds, precision=precision)
    m = load_manifest(tmp_path / "t")
    cfg = m["config"]
    assert m["numSteps"] == 8 and m["batchSize"] == 8 and cb.summary is not None
    assert cfg["accumulation"] == {"microBatches": 2} and cfg["clip"]["maxNorm"] == 1.0
    assert cfg["scheduler"]["type"] == "StepLR"
    assert (cfg.get("precision") or {}).get("autocast") == ("bfloat16" if precision == "bf16-mixed" else None)
    r = rhos(tmp_path / "t", ds)
    assert all(x <= 1e-3 for x in r), r
    assert verdict(tmp_path / "t", ds, tmp_path) == "Valid"


class CausalLM(pl.LightningModule):  # type: ignore[misc,name-defined]
    def __init__(self, cb: Any) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model, self.cb = build_model("hf-causal-lm", GPT2), cb

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.cb.loss(self.model(input_ids=x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.model.parameters(), lr=1e-3)


def test_hf_causal_lm_bf16_is_valid(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from registry.pol.lightning import PoLLightningCallback

    t = np.random.default_rng(1).integers(0, 64, size=(32, 9), dtype=np.int64)
    tokens = build_dataset(tmp_path / "tok", "tokens", t, t)
    cb = PoLLightningCallback(tmp_path / "t", dataset=tokens, family="hf-causal-lm", family_args=GPT2,
                              loss="causal_lm", steps_per_segment=2)
    trainer = pl.Trainer(callbacks=[cb], **QUIET, max_steps=4, precision="bf16-mixed", gradient_clip_val=1.0,
                         accumulate_grad_batches=2)
    trainer.fit(CausalLM(cb), train_dataloaders=cb.train_dataloader(batch_size=2))
    assert load_manifest(tmp_path / "t")["config"]["precision"]["autocast"] == "bfloat16"
    assert all(x <= 1e-3 for x in rhos(tmp_path / "t", tokens))
    assert verdict(tmp_path / "t", tokens, tmp_path) == "Valid"


def test_clip_by_value_sgd_is_valid(ds: Dataset, tmp_path: Path) -> None:
    _run(tmp_path, ds, mod={"opt": "sgd", "sched": False}, gradient_clip_algorithm="value",
         gradient_clip_val=0.05, accumulate_grad_batches=1)
    assert load_manifest(tmp_path / "t")["config"]["clip"] == {"type": "value", "clipValue": 0.05}
    assert verdict(tmp_path / "t", ds, tmp_path) == "Valid"


@pytest.mark.parametrize(("mod", "over", "match"), [
    ({"manual": True}, {"gradient_clip_val": None, "accumulate_grad_batches": 1}, "manual optimization"),
    ({}, {"precision": "bf16-true"}, "precision='bf16-true': it is not a replayable precision"),
    ({}, {"precision": "64-true"}, "precision='64-true'"),
    ({}, {"limit_train_batches": 4}, "limit_train_batches"),
])
def test_refused_in_one_line(ds: Dataset, tmp_path: Path, mod: dict[str, Any], over: dict[str, Any],
                             match: str) -> None:
    with pytest.raises(RecorderError, match="cannot be recorded: " + match) as e:
        _run(tmp_path, ds, mod=mod, **over)
    assert "\n" not in str(e.value)


def test_ddp_strategy_is_refused(ds: Dataset, tmp_path: Path) -> None:
    try:
        with pytest.raises(RecorderError, match="cannot be recorded: strategy DDPStrategy on 1 process") as e:
            _run(tmp_path, ds, strategy="ddp")
        assert "\n" not in str(e.value)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_other_loss_is_refused(ds: Dataset, tmp_path: Path) -> None:
    with pytest.raises(RecorderError, match=r"training_step returned loss .* committed cross_entropy") as e:
        _run(tmp_path, ds, mod={"scale": 2.0})
    assert "\n" not in str(e.value)


class NoisyGrads(Module):
    def on_before_optimizer_step(self, optimizer: Any) -> None:
        for p in self.model.parameters():
            p.grad.add_(1e-2)  # type: ignore[union-attr]


def test_changed_gradients_fail_self_check(ds: Dataset, tmp_path: Path) -> None:
    from registry.pol.lightning import PoLLightningCallback

    cb = PoLLightningCallback(tmp_path / "t", dataset=ds, family="mlp", family_args=MLP, steps_per_segment=4)
    trainer = pl.Trainer(callbacks=[cb], **QUIET, max_steps=8)
    with pytest.raises(RecorderError) as e:
        trainer.fit(NoisyGrads(cb, opt="sgd"), train_dataloaders=cb.train_dataloader(batch_size=4))
    assert "\n" not in str(e.value) and "segment" in str(e.value)
    assert not (tmp_path / "t" / "manifest.json").exists()
