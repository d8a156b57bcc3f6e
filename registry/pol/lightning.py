"""Recording a PyTorch Lightning `Trainer.fit` run as a PoL transcript.

    cb = PoLLightningCallback(out_dir, dataset=ds, family="mlp", family_args=args, steps_per_segment=4)
    trainer = Trainer(callbacks=[cb], accelerator="cpu", devices=1, max_steps=8, gradient_clip_val=1.0,
                      accumulate_grad_batches=2, precision="bf16-mixed")
    trainer.fit(module, train_dataloaders=cb.train_dataloader(batch_size=8))   # cb.summary: the digests

The LightningModule holds the project-describable model (a registry family, e.g. a modelspec model or
`hf-causal-lm`) as `module.model` (`model_attr=`), calls it once per batch in `training_step` and returns the
committed loss of that batch (`cb.loss(output, y)` is that loss). Lightning's automatic optimization then runs
exactly the committed step (`registry.pol.step.train_step`): the loss divided by `accumulate_grad_batches`,
backward per micro-batch, clipping by `gradient_clip_val` over the optimizer's parameters after the last
backward, `optimizer.step()`, `zero_grad`, a torch LR scheduler with interval "step" after the optimizer step,
and `precision="bf16-mixed"` autocast around `training_step` only.

`train_dataloader()` gives a DataLoader over example indices whose collate function builds `ds.batch(indices)`
and remembers the indices, which a forward pre-hook matches, micro-batch by micro-batch, against what the model
receives: the recorded indices are the batches the model really trained on.

Refused at `on_train_start` with one line, because a verifier could not replay them: manual optimization,
several optimizers, precisions other than 32-true / bf16-mixed (16-mixed needs a GradScaler whose state is not
checkpointed), strategies other than a single device, an overridden `configure_gradient_clipping`, an unknown
clip algorithm, schedulers stepped per epoch or every n steps, `limit_train_batches` / `overfit_batches`, and
epochs that do not split into whole optimizer steps. A `training_step` returning another loss than the committed
loss of the model's output is refused at its first batch; what else a loop may do to the step (a hook changing
gradients, say) the recorder's self-check (replay of the first, the last and one sampled segment at
`on_train_end`) refuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from registry.pol.collate import CollatedBatches, IndexView
from registry.pol.recorder import Recorder, RecorderError
from registry.pol.step import LossSpec, loss_spec, loss_value
from registry.pol.transcript import TranscriptSummary
from registry.spec.datasets import Dataset

#: Lightning precision settings the committed step can replay, and the autocast each commits.
PRECISIONS: dict[str, str | None] = {"32-true": None, "32": None, "bf16-mixed": "bfloat16"}


def _clip_algorithm(trainer: pl.Trainer) -> str:
    """Lightning's algorithm name (its default when unset is "norm", `LightningModule.clip_gradients`)."""
    algo = trainer.gradient_clip_algorithm or "norm"
    return str(getattr(algo, "value", algo)).lower()


class PoLLightningCallback(pl.Callback):
    """A Lightning Callback that records `Trainer.fit` with a `Recorder` (module docstring)."""

    def __init__(self, out_dir: str | Path, *, dataset: Dataset, family: str, family_args: Mapping[str, Any],
                 steps_per_segment: int, loss: str | Mapping[str, Any] = "cross_entropy",
                 model_attr: str = "model", **recorder_kw: Any) -> None:
        self.out_dir, self.dataset, self.family, self.family_args = Path(out_dir), dataset, family, family_args
        self.k, self.model_attr, self.recorder_kw = steps_per_segment, model_attr, recorder_kw
        self.loss_config = loss
        self._loss: LossSpec = loss_spec(loss)
        self.rec: Recorder | None = None
        self.summary: TranscriptSummary | None = None
        self._batches = CollatedBatches(dataset)
        self._error: str | None = None
        self._handles: list[Any] = []
        self._out: tuple[torch.Tensor, torch.dtype | None] | None = None
        self._device = "cpu"
        self._global_step = 0

    # --- what the user is given -------------------------------------------------------------------------------
    def train_dataloader(self, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                         **loader_kw: Any) -> torch.utils.data.DataLoader[Any]:
        """Batches of example indices turned into `ds.batch(indices)` = (x, y); constant size (drop_last)."""
        gen = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(IndexView(len(self.dataset)), batch_size=batch_size, shuffle=shuffle,
                                           generator=gen, drop_last=True, collate_fn=self.collate, **loader_kw)

    def collate(self, features: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._batches.collate(features)

    def loss(self, output: Any, target: torch.Tensor) -> torch.Tensor:
        """The committed loss of one batch: what `training_step` must return (Lightning divides it further)."""
        return loss_value(self._loss, output, target)

    # --- hooks ------------------------------------------------------------------------------------------------
    def _pre_forward(self, module: torch.nn.Module, args: Any, kwargs: Any) -> None:
        if not module.training:
            return
        problem = self._batches.match(args, kwargs)
        if problem == "unmade":
            self._error = "the model ran on a batch the PoL collate function did not make; use cb.train_dataloader()"
        elif problem == "mismatch":
            self._error = "the model's input is not the collated batch x; call the model on cb.train_dataloader()'s x"

    def _post_forward(self, module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        if not module.training:
            return
        out = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
        amp = torch.get_autocast_dtype(self._device) if torch.is_autocast_enabled(self._device) else None
        self._out = (out.detach(), amp) if isinstance(out, torch.Tensor) else None

    def _check_loss(self, outputs: Any, batch: Any, micro: int) -> None:
        """The loss training_step returned (Lightning hands it back divided by `micro`) must be the committed loss
        of the model's output: caught at the first batch instead of by the self-check at the end."""
        got = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if self._out is None or not isinstance(got, torch.Tensor) or not isinstance(batch, tuple | list):
            return
        out, amp = self._out
        self._out = None
        ctx = torch.autocast(self._device, dtype=amp) if amp is not None else nullcontext()
        with torch.no_grad(), ctx:
            want = loss_value(self._loss, out, batch[1]).float()
        got = got.detach().float() * micro
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-6):
            raise RecorderError(f"training_step returned loss {got.item():.6g}, the committed {self._loss.type} loss "
                                f"of the model's output is {want.item():.6g}; return cb.loss(output, y)")

    def _problems(self, trainer: pl.Trainer, module: pl.LightningModule) -> list[str]:
        problems = []
        if not module.automatic_optimization:
            problems.append("manual optimization is not the committed step; use automatic optimization")
        precision = str(trainer.precision)
        if precision not in PRECISIONS:
            why = ("it needs a GradScaler, whose state is not checkpointed" if precision.startswith("16")
                   else "it is not a replayable precision")
            problems.append(f"precision={precision!r}: {why}; use '32-true' or 'bf16-mixed'")
        if type(trainer.strategy) is not pl.strategies.SingleDeviceStrategy or trainer.world_size != 1:
            problems.append(f"strategy {type(trainer.strategy).__name__} on {trainer.world_size} process(es): "
                            "only a single-device run can be replayed")
        if len(trainer.optimizers) != 1:
            problems.append(f"{len(trainer.optimizers)} optimizers: the committed step has exactly one")
        clip_val, algo = trainer.gradient_clip_val, _clip_algorithm(trainer)
        if clip_val and algo not in ("norm", "value"):
            problems.append(f"gradient_clip_algorithm {algo!r} is not norm or value")
        if type(module).configure_gradient_clipping is not pl.LightningModule.configure_gradient_clipping:
            problems.append("configure_gradient_clipping is overridden; clip with Trainer(gradient_clip_val=...)")
        overfit: float = getattr(trainer, "overfit_batches", 0.0)  # set by Trainer.__init__, not declared
        if trainer.limit_train_batches not in (1.0, None) or overfit:
            problems.append("limit_train_batches / overfit_batches change the epochs the indices are recorded in")
        for cfg in trainer.lr_scheduler_configs:
            if cfg.interval != "step" or cfg.frequency != 1:
                problems.append(f"an LR scheduler with interval {cfg.interval!r} and frequency {cfg.frequency}: "
                                "only interval 'step', frequency 1 is committed")
        if len(trainer.lr_scheduler_configs) > 1:
            problems.append("several LR schedulers: the committed schedule is one")
        if not isinstance(getattr(module, self.model_attr, None), torch.nn.Module):
            problems.append(f"the LightningModule has no model at .{self.model_attr} (pass model_attr=)")
        loader = trainer.train_dataloader
        coll = getattr(loader, "collate_fn", None)
        if getattr(coll, "__self__", None) is not self or not getattr(loader, "drop_last", False):
            problems.append("train with cb.train_dataloader(batch_size) (index batches, drop_last)")
        else:
            assert loader is not None
            per_epoch = len(self.dataset) // int(loader.batch_size or 1)
            acc = int(trainer.accumulate_grad_batches)
            if per_epoch % acc:
                problems.append(f"an epoch of {per_epoch} batches does not split into optimizer steps of {acc}")
        return problems

    # --- callback events --------------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        problems = self._problems(trainer, pl_module)
        if problems:
            raise RecorderError(f"this Lightning run cannot be recorded: {problems[0]}")
        model: torch.nn.Module = getattr(pl_module, self.model_attr)
        optimizer = trainer.optimizers[0]
        scheduler = trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
        clip = None
        if trainer.gradient_clip_val:
            val = float(trainer.gradient_clip_val)
            clip = ({"type": "value", "clipValue": val} if _clip_algorithm(trainer) == "value"
                    else {"type": "norm", "maxNorm": val})
        self._global_step = trainer.global_step
        self._device = next(model.parameters()).device.type
        self._handles = [model.register_forward_pre_hook(self._pre_forward, with_kwargs=True, prepend=True),
                         model.register_forward_hook(self._post_forward, with_kwargs=True)]
        self.rec = Recorder(self.out_dir, model, optimizer, family=self.family, family_args=self.family_args,
                            dataset=self.dataset, steps_per_segment=self.k, scheduler=scheduler,
                            loss=self.loss_config, clip=clip, accumulation=int(trainer.accumulate_grad_batches),
                            autocast=PRECISIONS[str(trainer.precision)], **self.recorder_kw)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._error is not None:
            raise RecorderError(self._error)
        self._check_loss(outputs, batch, int(trainer.accumulate_grad_batches))
        if trainer.global_step == self._global_step:
            return  # a micro-batch inside an accumulation window
        assert self.rec is not None
        self._global_step = trainer.global_step
        self.rec.step(self._batches.take_step())

    def _close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()
        if self.rec is not None:
            try:
                self.summary = self.rec.finish()
            finally:
                self.rec.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close()
        if self.rec is not None:
            self.rec.close()
