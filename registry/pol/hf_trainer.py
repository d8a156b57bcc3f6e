"""Recording a Hugging Face `transformers.Trainer` run as a PoL transcript.

    cb = PoLCallback(out_dir, dataset=ds, family_args=args, steps_per_segment=4)
    trainer = Trainer(model, training_args, callbacks=[cb], **cb.trainer_kwargs())
    trainer.train()                       # cb.summary holds the transcript's digests afterwards

`trainer_kwargs()` gives the Trainer three things so that what it runs is the committed step
(`registry.pol.step.train_step`):

- `train_dataset`: a view whose items are example indices; `data_collator` turns a list of indices into
  `ds.batch(indices)` as {"input_ids", "labels"} (the tensors replay uses) and remembers the indices, which a
  forward pre-hook matches, micro-batch by micro-batch, against what the model actually receives.
- `compute_loss_func`: the committed `causal_lm` loss of each micro-batch divided by the number of micro-batches
  (the Trainer then divides no further), not HF's token-count-weighted loss.

The model must be the raw `hf-causal-lm` model built with `output: "model_output"`. AdamW (or any optimizer the
Recorder accepts), HF warmup schedules, `max_grad_norm` (norm clipping), `gradient_accumulation_steps` and
`bf16` (autocast) are committed; fp16, DeepSpeed/FSDP, several GPUs in one process (DataParallel), tensor /
context parallelism, label smoothing, `group_by_length` and epochs that do not split into whole optimizer steps
are refused at `on_train_begin` with one line.

A multi-process run (`torchrun` / `accelerate launch`, one process per rank: DDP, gloo on CPU) records through
the Recorder's DDP path: every rank's callback matches its own shard of the Trainer's batches and calls
`rec.step(local_indices)`; the ranks' indices are gathered in rank order and rank 0 alone writes one transcript
with `distributed: {worldSize: W}` and W * gradient_accumulation_steps micro-batches, replayed in one process.
The Trainer multiplies a custom loss by W when it averages token counts across devices
(`average_tokens_across_devices`, the default) so that DDP's mean becomes a sum; the committed loss divides that
factor back out, so each rank's micro-batch loss is 1/(W * n) of the step's as replay computes it. The DDP
refusals hold (dropout or other random draws in the forward, BatchNorm running statistics, unequal local batches).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from registry.pol.collate import CollatedBatches, IndexView
from registry.pol.recorder import Recorder, RecorderError
from registry.pol.step import LossSpec, loss_value
from registry.pol.transcript import TranscriptSummary
from registry.spec.datasets import Dataset
from registry.spec.hf import HFModelError, adopt_running


class PoLCallback(TrainerCallback):
    """A TrainerCallback that records the run with a `Recorder` (module docstring)."""

    def __init__(self, out_dir: str | Path, *, dataset: Dataset, family_args: Mapping[str, Any],
                 steps_per_segment: int, family: str = "hf-causal-lm", **recorder_kw: Any) -> None:
        self.out_dir, self.dataset, self.family, self.family_args = Path(out_dir), dataset, family, family_args
        self.k, self.recorder_kw = steps_per_segment, recorder_kw
        self.rec: Recorder | None = None
        self.summary: TranscriptSummary | None = None
        self._batches = CollatedBatches(dataset)
        self._losses = 0
        self._micro = 1
        self._world = 1
        self._avg_tokens = False
        self._error: str | None = None
        self._handles: list[Any] = []
        self._amp: Any = None
        self._loss = LossSpec("causal_lm")

    # --- what the Trainer is given ----------------------------------------------------------------------------
    def trainer_kwargs(self) -> dict[str, Any]:
        return {"train_dataset": IndexView(len(self.dataset)), "data_collator": self.collate,
                "compute_loss_func": self.compute_loss}

    def collate(self, features: list[int]) -> dict[str, torch.Tensor]:
        x, y = self._batches.collate(features)
        return {"input_ids": x, "labels": y}

    def compute_loss(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        self._losses += 1
        loss = loss_value(self._loss, outputs, labels)
        div = self._micro
        if self._world > 1 and self._avg_tokens and num_items_in_batch is not None:
            div *= self._world  # Trainer.compute_loss multiplies the loss by the number of processes next
        return loss / div if div > 1 else loss

    # --- hooks ------------------------------------------------------------------------------------------------
    def _pre_forward(self, module: torch.nn.Module, args: Any, kwargs: Any) -> None:
        if not module.training:
            return
        if self._amp is not None:
            self._amp_ctx = torch.autocast(self._amp[0], dtype=self._amp[1])
            self._amp_ctx.__enter__()
        problem = self._batches.match(args, kwargs)
        if problem == "unmade":
            self._error = "the model ran on a batch the PoL data collator did not make; pass cb.trainer_kwargs()"
        elif problem == "mismatch":
            self._error = "the model's input_ids are not the collated batch; pass cb.trainer_kwargs() unchanged"

    def _post_forward(self, module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        if module.training and self._amp is not None:
            self._amp_ctx.__exit__(None, None, None)

    # --- callback events --------------------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                       lr_scheduler: Any = None, train_dataloader: Any = None, **kw: Any) -> None:
        problems = []
        if args.fp16:
            problems.append("fp16 through the Trainer is not recorded yet (accelerate owns its GradScaler; a "
                            "hand-written fp16 loop records with Recorder(scaler=...)); use bf16=True or neither")
        if getattr(args, "deepspeed", None) or getattr(args, "fsdp", None):
            problems.append("DeepSpeed / FSDP runs cannot be replayed on one device")
        if args.n_gpu > 1:
            problems.append("several GPUs in one process (DataParallel) cannot be replayed; launch one process per "
                            "device (torchrun / accelerate launch) instead")
        if getattr(args, "parallelism_config", None) is not None:
            problems.append("tensor / context / sequence parallelism (parallelism_config) cannot be replayed")
        world = int(args.world_size)
        if world > 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            problems.append(f"world_size is {world} but torch.distributed is not initialized")
        if getattr(args, "label_smoothing_factor", 0):
            problems.append("label_smoothing_factor is not the committed causal_lm loss")
        if getattr(args, "group_by_length", False):
            problems.append("group_by_length is not supported")
        if not args.dataloader_drop_last:
            problems.append("batches must have a constant size: set dataloader_drop_last=True")
        gas = int(args.gradient_accumulation_steps)
        per_epoch = len(self.dataset) // int(args.per_device_train_batch_size)
        if per_epoch % (gas * world):
            problems.append(f"an epoch of {per_epoch} batches does not split into optimizer steps of {gas}"
                            + (f" micro-batches on each of {world} processes (the sharded loader would pad or drop)"
                               if world > 1 else ""))
        inner = getattr(optimizer, "optimizer", optimizer)
        if problems:
            raise RecorderError(f"this Trainer run cannot be recorded: {problems[0]}")
        self._micro, self._world = gas, world
        self._avg_tokens = bool(getattr(args, "average_tokens_across_devices", False))
        clip = {"type": "norm", "maxNorm": float(args.max_grad_norm)} if args.max_grad_norm > 0 else None
        autocast = "bfloat16" if args.bf16 else None
        device = next(model.parameters()).device
        self._amp = (device.type, torch.bfloat16) if args.bf16 else None
        self._handles = [model.register_forward_pre_hook(self._pre_forward, with_kwargs=True, prepend=True),
                         model.register_forward_hook(self._post_forward, with_kwargs=True, always_call=True)]
        # the Trainer changes the model's config itself (config.use_cache = args.use_cache, False): without a
        # KV cache the training forward keeps other tensor layouts, and bf16 backward kernels round differently
        # on them, so what the model runs with is committed, not what the caller declared
        try:
            family_args = adopt_running(self.family, self.family_args, model)
        except HFModelError as exc:
            raise RecorderError(f"this Trainer run cannot be recorded: {exc}") from None
        self.rec = Recorder(self.out_dir, model, inner, family=self.family, family_args=family_args,
                            dataset=self.dataset, steps_per_segment=self.k, scheduler=lr_scheduler,
                            loss="causal_lm", clip=clip, accumulation=gas, autocast=autocast,
                            config={"seed": int(args.seed)}, distributed=world > 1, **self.recorder_kw)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        assert self.rec is not None
        if self._error is not None:
            raise RecorderError(self._error)
        if self._losses != self._micro:
            raise RecorderError(f"the committed loss ran {self._losses} times in a step of {self._micro} "
                                "micro-batches; pass cb.trainer_kwargs() (compute_loss_func) to the Trainer")
        self._losses = 0
        self.rec.step(self._batches.take_step())

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self.rec is not None:
            try:
                self.summary = self.rec.finish()
            finally:
                self.rec.close()
