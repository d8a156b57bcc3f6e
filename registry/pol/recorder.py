"""The transcript recorder: a few lines added to an existing PyTorch training loop (SPEC sections 2-3).

    rec = Recorder(out_dir, model, optimizer, family="mlp", family_args={...}, dataset=ds, steps_per_segment=10,
                   config={"seed": 0})
    for idx in batch_index_source:                     # int64 example indices of one step
        x, y = ds.batch(idx)
        loss = F.cross_entropy(model(x), y)
        loss.backward(); optimizer.step(); optimizer.zero_grad()
        rec.step(idx)
    summary = rec.finish()

What it records, and why it can be replayed exactly:

- Checkpoint 0 is taken when the recorder is created (before any training), then one every k steps, and a
  last one at `finish()`. Each holds the model's state_dict and the optimizer's state and param groups
  (`registry.pol.checkpoint`).
- Randomness: a hook on the model's forward re-seeds torch's generators before every step's first
  training-mode forward from `rng_seed` and the step number (`registry.pol.rng`), so dropout replays bit for
  bit whatever the loop does with the global RNG between steps. This changes which random numbers the loop
  sees (not how they are distributed).
- The learning rate of every param group is captured when `optimizer.step()` runs and must be the committed
  schedule's (`registry.pol.config.learning_rates`: the constant rates of the param groups, or the scheduler
  passed as `scheduler=`, one of `SUPPORTED_SCHEDULERS`, stepped every `every` optimizer steps); a run whose
  optimizer used another rate is refused with a one-line error, since verifiers take the rate from the config
  and never from the transcript. A scheduler changing any other hyperparameter (momentum, betas...) is refused.
- Epochs: the config commits `stepsPerEpoch` (default: dataset size // batch size, the `drop_last` rule);
  the epoch of step t is t // stepsPerEpoch, and an `epoch=` passed to `step()` must agree.
- Initialization: checkpoint 0's origin is committed in the config (`init`): `seed` when the model is the
  family built on the CPU after `torch.manual_seed(init_seed)` (tried with `init_seed`, else the user config's
  `seed`, else `rng_seed`), `parent` when `parent_claim_id` names the registered claim whose final weights
  these are (fine-tuning), else `external` (reported by verifiers as "origin not verified").
- Exactly one `optimizer.step()` and one training-mode forward of `model` must happen per `rec.step()`:
  gradient accumulation over several forwards or optimizer steps is refused with a clear error, since replay
  does one forward per step.
- fp16 autocast needs its GradScaler passed as `scaler=`: its options are committed (`precision.gradScaler`),
  its scale and growth tracker are checkpointed, a step it skips (inf/NaN gradients: no `optimizer.step()`)
  is recorded as such, and each step is checked to have run `scaler.step(optimizer); scaler.update()` once.
- Batches must have a constant size (use `drop_last=True`); indices are int64 example indices into `dataset`.
- When the number of steps is not a multiple of k, the last segment is shorter (its step range in the manifest
  says so); `stepsPerSegment` stays k.
- torch.distributed DDP (`distributed=True`, or pass the DistributedDataParallel wrapper as `model`): every rank
  builds the Recorder with the same arguments and calls `rec.step(local_indices)`; the ranks' indices are
  gathered (rank order) into the step's batch, and only rank 0 writes files, the manifest and runs the
  self-check (`finish()` returns the summary on every rank). The config gets `distributed: {worldSize: W}` and
  `accumulation: {microBatches: W * accumulation}` (`registry.pol.step`): replay is one process. Refused: running
  stats (BatchNorm), random draws in the forward (dropout), unequal local batches, ranks whose weights differ
  (checked at every checkpoint, e.g. an optimizer step inside `no_sync()`), `augment=`, and `train_step` (step
  the DDP wrapper yourself).
- Files are encoded, hashed and written by a background thread fed through a bounded queue with CPU copies
  of the tensors; an error there is raised in the training thread at the next `step()` or at `finish()`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import platform
import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from registry.core.hashing import chain_head, config_hash, to_hex, weights_hash
from registry.pol.augment import augment_spec, augment_step
from registry.pol.checkpoint import TranscriptError, checkpoint_chunks
from registry.pol.config import (
    DEFAULT_TOLERANCE_POLICY,
    VARYING_GROUP_KEYS,
    check_model_matches_family,
    clip_spec,
    describe_optimizer,
    describe_scheduler,
    init_state,
    learning_rates,
    make_config,
    make_init,
    model_dtype,
    rebuild_optimizer,
)
from registry.pol.rng import seed_step
from registry.pol.step import (
    AUTOCAST_DTYPES,
    SCALED_AUTOCAST,
    StepSpec,
    current_flags,
    describe_grad_scaler,
    loss_spec,
    precision_config,
    scaler_state,
    train_step,
)
from registry.pol.transcript import (
    MANIFEST_NAME,
    TRANSCRIPT_FORMAT,
    TranscriptSummary,
    batches_path,
    checkpoint_path,
    segment_tree,
    summary_of,
    write_manifest,
)
from registry.spec.datasets import Dataset


class RecorderError(RuntimeError):
    """The training loop did something the transcript cannot represent, or writing the transcript failed."""


@dataclass
class _Snapshot:
    """CPU copies of model and optimizer state at a checkpoint boundary.

    From a CUDA model the copies are asynchronous (into pinned memory, ordered on the training stream), so
    the training thread never waits for them; `ready` is the event whoever reads them waits on first."""

    step: int
    model: dict[str, torch.Tensor]
    optim: dict[str, Any]
    ready: Any = None  # torch.cuda.Event | None
    scaler: dict[str, torch.Tensor] | None = None  # GradScaler state (float16 runs)

    def wait(self) -> None:
        if self.ready is not None:
            self.ready.synchronize()


@dataclass
class _SegmentJob:
    index: int
    start: _Snapshot
    end: _Snapshot
    batches: np.ndarray
    lrs: list[list[float]]
    epoch: int


@dataclass
class _FinalJob:
    index: int
    snapshot: _Snapshot


@dataclass
class _Results:
    ckpt_hashes: dict[int, bytes] = field(default_factory=dict)
    segments: dict[int, dict[str, Any]] = field(default_factory=dict)


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if t.device.type == "cpu":
        return t.clone(memory_format=torch.contiguous_format)
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    out.copy_(t, non_blocking=True)
    return out


def _snapshot(step: int, model: nn.Module, optimizer: torch.optim.Optimizer, cuda: bool = False,
              scaler: torch.amp.GradScaler | None = None) -> _Snapshot:
    sd = optimizer.state_dict()
    optim = {
        "state": {pid: {k: _cpu_copy(v) if isinstance(v, torch.Tensor) else v for k, v in entry.items()}
                  for pid, entry in sd["state"].items()},
        "param_groups": [dict(g, params=list(g["params"])) for g in sd["param_groups"]],
    }
    model_state = {k: _cpu_copy(v) for k, v in model.state_dict().items()}
    ready = None
    if cuda:
        ready = torch.cuda.Event()
        ready.record()
    return _Snapshot(step, model_state, optim, ready, None if scaler is None else scaler_state(scaler))


def update_norm(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], names: Sequence[str]) -> float:
    """‖b − a‖₂ over the named tensors, accumulated in float64.

    Computed with numpy element-wise operations (no BLAS, no torch kernels) because it runs on the writer
    thread: a torch op there starts a second OpenMP team that competes with the training thread's."""
    total = 0.0
    for n in names:
        x = b[n].detach().cpu().reshape(-1).numpy().astype(np.float64)
        x -= a[n].detach().cpu().reshape(-1).numpy()
        total += float(np.sum(x * x))
    return total ** 0.5


_BLOCK = 8 << 20


def _blocks(chunks: Sequence[bytes | memoryview]) -> list[bytes | memoryview]:
    """Consecutive chunks joined up to `_BLOCK` bytes; larger chunks pass through without a copy."""
    out: list[bytes | memoryview] = []
    pending: list[bytes | memoryview] = []
    size = 0
    for c in chunks:
        n = memoryview(c).nbytes
        if n >= _BLOCK:
            if pending:
                out.append(b"".join(pending))
                pending, size = [], 0
            out.append(c)
            continue
        if size + n > _BLOCK:
            out.append(b"".join(pending))
            pending, size = [], 0
        pending.append(c)
        size += n
    if pending:
        out.append(b"".join(pending))
    return out


def distributed_problem(model: nn.Module) -> str | None:
    """Why a DDP run of `model` cannot be replayed in one process, in one line, or None."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
            return (f"module {name or 'model'!r} ({type(m).__name__}) keeps running statistics, which DDP takes "
                    "from rank 0 only; a single-process replay cannot reproduce them (use track_running_stats="
                    "False, or LayerNorm/GroupNorm)")
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return (f"module {name or 'model'!r} ({type(m).__name__}, p={m.p}) draws random numbers in the forward "
                    "from each DDP rank's own generator; a single-process replay cannot reproduce them")
    return None


def custom_autograd_functions(output: Any, limit: int = 100_000) -> list[str]:
    """Names of the custom `torch.autograd.Function`s in the graph behind `output` (tensors, or tuples, lists,
    dicts and Hugging Face outputs of them), visiting at most `limit` nodes."""
    roots: list[Any] = []
    stack: list[Any] = [output]
    while stack:
        o = stack.pop()
        if isinstance(o, torch.Tensor):
            if o.grad_fn is not None:
                roots.append(o.grad_fn)
        elif isinstance(o, Mapping):
            stack.extend(o.values())
        elif isinstance(o, list | tuple):
            stack.extend(o)
    seen: set[int] = set()
    found: list[str] = []
    while roots and len(seen) < limit:
        node = roots.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        forward_cls = getattr(node, "_forward_cls", None)  # BackwardCFunction nodes of Python Functions
        if forward_cls is not None and forward_cls.__name__ not in found:
            found.append(forward_cls.__name__)
        roots.extend(fn for fn, _ in node.next_functions if fn is not None)
    return found


class Recorder:
    """Records a Proof-of-Learning transcript of a training run into `out_dir` (see the module docstring)."""

    def __init__(self, out_dir: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, *, family: str,
                 family_args: Mapping[str, Any] | None, dataset: Dataset, steps_per_segment: int,
                 config: Mapping[str, Any] | None = None, scheduler: Any = None,
                 loss: str | Mapping[str, Any] = "cross_entropy",
                 dataset_cid: str | None = None, tolerance_policy: str = DEFAULT_TOLERANCE_POLICY,
                 rng_seed: int = 0, queue_size: int = 4, init_seed: int | None = None,
                 parent_claim_id: int | None = None, steps_per_epoch: int | None = None,
                 self_check: bool = True, clip: Mapping[str, Any] | None = None,
                 accumulation: int = 1, autocast: str | None = None,
                 augment: Sequence[Mapping[str, Any]] | None = None,
                 scaler: torch.amp.GradScaler | None = None, distributed: bool = False,
                 process_group: Any = None) -> None:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            if process_group is None:
                process_group = model.process_group
            model, distributed = model.module, True
        self._dist = bool(distributed) or process_group is not None
        self._pg = process_group
        self._world, self._rank = 1, 0
        if self._dist:
            if not (dist.is_available() and dist.is_initialized()):
                raise RecorderError("distributed=True needs torch.distributed initialized (init_process_group)")
            self._world, self._rank = dist.get_world_size(process_group), dist.get_rank(process_group)
            problem = distributed_problem(model)
            if problem is not None:
                raise RecorderError(problem)
        self._writes = self._rank == 0
        if steps_per_segment < 1:
            raise RecorderError("steps_per_segment must be at least 1")
        try:
            loss_config = loss_spec(loss).to_config()
        except TranscriptError as exc:
            raise RecorderError(str(exc)) from exc
        if isinstance(accumulation, bool) or not isinstance(accumulation, int) or accumulation < 1:
            raise RecorderError(f"accumulation must be a positive number of micro-batches, not {accumulation!r}")
        self.out_dir = Path(out_dir)
        if self._writes and ((self.out_dir / MANIFEST_NAME).exists() or any((self.out_dir / "checkpoints").glob("*"))):
            raise RecorderError(f"{self.out_dir} already holds a transcript; use an empty directory")
        try:
            self._family_args = check_model_matches_family(model, family, family_args or {})
            self._optimizer_spec = describe_optimizer(model, optimizer)
            # What a verifier will build from the config, read back as JSON, must be this optimizer exactly.
            rebuild_optimizer({"optimizer": json.loads(json.dumps(self._optimizer_spec))}, model)
            self._dtype = model_dtype(model)
        except (TranscriptError, ValueError) as exc:
            raise RecorderError(str(exc)) from exc
        devices = {p.device for p in model.parameters()}
        if len(devices) != 1:
            raise RecorderError(f"model parameters must live on one device, found {sorted(map(str, devices))}")
        self.device = next(iter(devices))
        self._cuda_index: int | None = None
        if self.device.type == "cuda":
            self._cuda_index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        elif self.device.type != "cpu":
            raise RecorderError(f"device {self.device} is not supported (cpu or cuda)")

        self.model, self.optimizer, self.dataset = model, optimizer, dataset
        self.family, self.k, self.loss = family, int(steps_per_segment), loss_config
        self._micro = accumulation  # forwards per step on this process
        self._micro_global = accumulation * self._world  # micro-batches of the replayed step (rank-major)
        self._flags = current_flags()
        self._autocast: str | None = None  # seen at the first training-mode forward
        self._autocast_seen = False
        if autocast is not None and autocast not in AUTOCAST_DTYPES:
            raise RecorderError(f"autocast {autocast!r} cannot be replayed; supported: {sorted(AUTOCAST_DTYPES)}")
        self._scaler = scaler
        self._scaler_spec: dict[str, Any] | None = None
        self._scaler_prev = (0.0, 0)
        if scaler is not None:
            if autocast not in (None, SCALED_AUTOCAST):
                raise RecorderError(f"a GradScaler is recorded only with autocast={SCALED_AUTOCAST!r}, "
                                    f"not {autocast!r}")
            autocast = SCALED_AUTOCAST
            try:
                self._scaler_spec = describe_grad_scaler(scaler, self.device)
            except TranscriptError as exc:
                raise RecorderError(str(exc)) from exc
            self._scaler_prev = self._scaler_now()
            if self._scaler_prev != (self._scaler_spec["initScale"], 0):
                raise RecorderError("create the GradScaler fresh before recording (its scale and growth tracker "
                                    "must be its initScale and 0 at checkpoint 0)")
        elif autocast == SCALED_AUTOCAST:
            raise RecorderError(f"autocast={SCALED_AUTOCAST!r} cannot be replayed without its GradScaler: pass "
                                "scaler=torch.amp.GradScaler(...) to the Recorder")
        self._declared_autocast = autocast
        self._fwd_lrs: list[Any] = []
        self._fwd_sched = 0
        self._spec: StepSpec | None = None
        self._user_config = dict(config or {})
        self._scheduler, self._dataset_cid, self._policy = scheduler, dataset_cid, tolerance_policy
        self._scheduler_spec: dict[str, Any] | None = None
        self._param_names = [n for n, _ in model.named_parameters()]
        if isinstance(rng_seed, bool) or not isinstance(rng_seed, int) or not 0 <= rng_seed < 1 << 64:
            raise RecorderError("rng_seed must be an unsigned 64-bit integer")
        self._rng_seed = rng_seed
        self._num_groups = len(optimizer.param_groups)
        self._lr0 = [g["lr"] for g in optimizer.param_groups]
        if scheduler is not None:
            scheduled = getattr(scheduler, "optimizer", None)
            # accelerate's AcceleratedOptimizer (Hugging Face Trainer) wraps the optimizer and shares its groups.
            if scheduled is not optimizer and getattr(scheduled, "optimizer", None) is not optimizer:
                raise RecorderError("the scheduler must schedule the recorded optimizer")
            if getattr(scheduler, "last_epoch", None) != 0:
                raise RecorderError("create the LR scheduler fresh (last_epoch 0) before recording; a resumed "
                                    "schedule cannot be derived from the config")
            try:
                describe_scheduler(scheduler, None)
            except TranscriptError as exc:
                raise RecorderError(str(exc)) from exc
        if steps_per_epoch is not None and (isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int)
                                            or steps_per_epoch < 1):
            raise RecorderError("steps_per_epoch must be a positive integer")
        self._steps_per_epoch = steps_per_epoch
        self._self_check = bool(self_check)
        try:
            self._clip = clip_spec(clip)
            self._augment = augment_spec(augment)
        except TranscriptError as exc:
            raise RecorderError(str(exc)) from exc
        if self._dist and self._augment:
            raise RecorderError("augment= under DDP: every rank would draw the step's augmentation for its own share "
                                "from the same per-step generator, which replay's one draw over the batch does not")
        self._sched_counts: list[int] = []
        self._all_lrs: list[list[float]] = []
        self._fixed_checks = [(gi, k, v) for gi, g in enumerate(optimizer.param_groups) for k, v in g.items()
                              if k not in VARYING_GROUP_KEYS]
        self._init = self._init_origin(model, init_seed, parent_claim_id)
        try:
            make_config(family=family, family_args=self._family_args, dtype=self._dtype,
                        optimizer=self._optimizer_spec, scheduler=None, loss=loss, batch_size=1,
                        steps_per_segment=self.k, dataset_root=to_hex(dataset.root), num_examples=len(dataset),
                        rng_seed=rng_seed, tolerance_policy=tolerance_policy, user=self._user_config,
                        clip=self._clip, micro_batches=self._micro_global, augment=self._augment,
                        world_size=self._world)
        except TranscriptError as exc:
            raise RecorderError(str(exc)) from exc

        if self._writes:
            (self.out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            (self.out_dir / "batches").mkdir(parents=True, exist_ok=True)

        # Training-thread state.
        self._step = 0  # optimizer steps recorded
        self._j = 0  # position inside the current segment
        self._segment = 0
        self._batch_size: int | None = None
        self._seg_batches: np.ndarray | None = None
        self._seg_lrs: list[list[float]] = []
        self._seg_epoch = 0
        self._start = (_snapshot(0, model, optimizer, self._cuda_index is not None, scaler) if self._writes
                       else _Snapshot(0, {}, {"state": {}, "param_groups": []}))
        self._rng_before: list[torch.Tensor] = []
        self._local_size: int | None = None  # DDP: each rank's examples per step, fixed at the first step
        self._forwards = 0
        self._opt_steps = 0
        self._step_lrs: list[Any] | None = None
        self._hook_error: str | None = None
        self._finished = False
        self._closed = False

        # Background writer.
        self._results = _Results()
        self._error: BaseException | None = None
        self._queue: queue.Queue[_SegmentJob | _FinalJob | None] = queue.Queue(maxsize=max(1, queue_size))
        self._thread = threading.Thread(target=self._writer, name="proofreg-pol-writer", daemon=True)
        self._thread.start()

        self._graph_checked = False
        self._handles = [
            model.register_forward_pre_hook(self._on_forward),
            model.register_forward_hook(self._on_forward_graph),
            optimizer.register_step_pre_hook(self._on_step_pre),
        ]
        if self._dist:
            self._handles.append(model.register_forward_hook(self._on_forward_done))
            self._check_replicas()

    # --- hooks (training thread; kept lean: they run on every step) -----------------------------------------
    def _on_forward(self, module: nn.Module, args: Any) -> None:
        if not module.training:
            return
        self._forwards += 1
        if self._forwards == 1:
            seed_step(self._rng_seed, self._step, self._cuda_index)
            if self._scaler is not None:  # what a step the scaler skips (no optimizer.step()) used
                self._fwd_lrs = [g["lr"] for g in self.optimizer.param_groups]
                self._fwd_sched = int(self._scheduler.last_epoch) if self._scheduler is not None else 0
        kind = self.device.type
        autocast = None
        if torch.is_autocast_enabled(kind):
            dtype = torch.get_autocast_dtype(kind)
            autocast = next((n for n, d in AUTOCAST_DTYPES.items() if d == dtype), str(dtype).removeprefix("torch."))
        if not self._autocast_seen:
            self._autocast, self._autocast_seen = autocast, True
            if autocast is not None and autocast not in AUTOCAST_DTYPES:
                self._hook_error = (f"torch.autocast in {autocast} cannot be replayed; supported: "
                                    f"{sorted(AUTOCAST_DTYPES)}, or no autocast")
            elif autocast == SCALED_AUTOCAST and self._scaler is None:
                self._hook_error = (f"torch.autocast in {autocast} cannot be replayed without its GradScaler: pass "
                                    "scaler=<your torch.amp.GradScaler> to the Recorder")
        elif autocast != self._autocast:
            self._hook_error = (f"autocast changed from {self._autocast} to {autocast} at step {self._step}; a "
                                "recorded run must use one precision for every forward")
        if self._dist:
            self._rng_before = self._rng_states()

    def _rng_states(self) -> list[torch.Tensor]:
        states = [torch.get_rng_state()]
        if self._cuda_index is not None:
            states.append(torch.cuda.get_rng_state(self._cuda_index))
        return states

    def _on_forward_done(self, module: nn.Module, args: Any, output: Any) -> None:
        """DDP only: a forward that drew random numbers drew them from this rank's generator, which a
        single-process replay (one generator, micro-batches in rank order) cannot reproduce."""
        if module.training and self._rng_before and any(
                not torch.equal(a, b) for a, b in zip(self._rng_before, self._rng_states(), strict=True)):
            self._hook_error = (f"the forward drew random numbers at step {self._step} (dropout?); under DDP each "
                                "rank draws from its own generator, which a single-process replay cannot reproduce")

    def _on_forward_graph(self, module: nn.Module, args: Any, output: Any) -> None:
        """Once, on the first training forward: a custom autograd Function in the graph is prover code that a
        verifier, which rebuilds the model from its description, would not run."""
        if self._graph_checked or not module.training:
            return
        self._graph_checked = True
        custom = custom_autograd_functions(output)
        if custom:
            self._hook_error = (f"the forward uses a custom autograd Function ({', '.join(custom)}), which cannot be "
                                "replayed: verifiers rebuild the model from its committed description and run no "
                                "prover code")

    def _on_step_pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._opt_steps += 1
        # optimizer.step(closure) is accepted: every supported optimizer calls the closure once, before its
        # update, which is the committed step; the forward count per step catches a closure that does more.
        groups = optimizer.param_groups
        self._step_lrs = [g["lr"] for g in groups]
        if self._scheduler is not None:
            self._sched_counts.append(int(self._scheduler.last_epoch))
        elif self._step_lrs != self._lr0:
            self._hook_error = (f"the learning rate changed to {self._step_lrs} at step {self._step} but no scheduler "
                                "was given to the Recorder; pass scheduler= (verifiers take the rate from the config)")
            return
        if len(groups) != self._num_groups:
            self._hook_error = "param groups were added to the optimizer during a recorded run"
            return
        for gi, key, value in self._fixed_checks:
            if groups[gi].get(key) != value:
                self._hook_error = (f"param group {gi} hyperparameter {key!r} changed from {value!r} to "
                                    f"{groups[gi].get(key)!r}; only the learning rate may vary during a recorded run")

    # --- public API -----------------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return self._step

    def step(self, indices: Sequence[int] | np.ndarray | torch.Tensor, *, lr: float | Sequence[float] | None = None,
             epoch: int | None = None) -> None:
        """Records the optimizer step just taken on the examples `indices` (call right after `optimizer.step()`).

        `lr`, if given, is checked against the learning rates captured from the optimizer; `epoch`, if given, must
        be the committed one (step // stepsPerEpoch)."""
        self._check_open()
        if self._dist:
            idx = self._gather_indices(indices, lr)
        else:
            self._raise_writer_error()
            self._check_step(lr)
            idx = self._indices(indices)
        self._record(idx, epoch)

    def _check_step(self, lr: float | Sequence[float] | None) -> None:
        """The checks of one `step()` on this process's hooks: one optimizer step, the forwards, autocast,
        the GradScaler, the learning rate."""
        if self._hook_error is not None:
            raise RecorderError(self._hook_error)
        skipped = self._scaler is not None and self._opt_steps == 0
        if self._opt_steps != 1 and not skipped:
            raise RecorderError(
                "optimizer.step() must run exactly once per rec.step(), it ran "
                f"{self._opt_steps} times; gradient accumulation and skipped steps cannot be replayed"
            )
        if self._forwards != self._micro:
            raise RecorderError(
                f"the model ran {self._forwards} training-mode forwards in this step, the Recorder expects "
                f"{self._micro} (one per micro-batch); pass accumulation=<micro-batches per optimizer step>"
            )
        if self._declared_autocast is not None and self._autocast != self._declared_autocast:
            raise RecorderError(f"the Recorder was told autocast={self._declared_autocast!r} but the forward ran "
                                f"with autocast {self._autocast}")
        if self._scaler is not None:
            self._check_scaler(stepped=not skipped)
            if skipped:  # the learning rate the skipped step would have used, seen at its first forward
                self._step_lrs = self._fwd_lrs
                if self._scheduler is not None:
                    self._sched_counts.append(self._fwd_sched)
        assert self._step_lrs is not None
        if lr is not None:
            used = [float(v) for v in self._step_lrs]
            given = [float(lr)] * len(used) if isinstance(lr, int | float) else [float(v) for v in lr]
            if given != used:
                raise RecorderError(f"lr {given} differs from the optimizer's learning rates {used}")

    def _record(self, idx: np.ndarray, epoch: int | None) -> None:
        assert self._step_lrs is not None
        if self._steps_per_epoch is None:
            self._steps_per_epoch = max(1, len(self.dataset) // len(idx))
        derived = self._step // self._steps_per_epoch
        if epoch is not None and int(epoch) != derived:
            raise RecorderError(f"epoch {epoch} at step {self._step} is not step // stepsPerEpoch = {derived} "
                                f"(stepsPerEpoch {self._steps_per_epoch}); pass steps_per_epoch= to the Recorder")
        if self._j == 0:
            self._seg_epoch = derived
        assert self._seg_batches is not None
        self._seg_batches[self._j] = idx
        self._seg_lrs.append(self._step_lrs)
        self._all_lrs.append([float(v) for v in self._step_lrs])
        self._step += 1
        self._j += 1
        self._forwards = 0
        self._opt_steps = 0
        if self._j == self.k:
            self._close_segment()

    def train_step(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """The plain-loop API: runs the committed step (`registry.pol.step.train_step`: micro-batches, autocast
        as declared, loss, backward, clipping, optimizer step) on the examples `indices`, steps the scheduler
        given to the Recorder (every optimizer step) and records it. Returns the detached mean loss.

            rec = Recorder(out, model, optimizer, family=..., family_args=..., dataset=ds, steps_per_segment=10)
            for idx in batches:
                rec.train_step(idx)
            rec.finish()
        """
        self._check_open()
        if self._dist:
            raise RecorderError("train_step() runs the unwrapped model, which does not synchronize gradients; under "
                                "DDP step the DistributedDataParallel wrapper and call rec.step(local_indices)")
        if self._spec is None:
            self._spec = StepSpec.of({"loss": self.loss, "clip": self._clip,
                                      "accumulation": {"microBatches": self._micro} if self._micro > 1 else None,
                                      "precision": precision_config(self._declared_autocast, *self._flags,
                                                                    self._scaler_spec)})
        self.model.train()
        x, y = self.batch(indices)
        loss = train_step(self.model, self.optimizer, self._spec, x, y, self._scaler)
        if self._scheduler is not None:
            self._scheduler.step()
        self.step(indices)
        return loss

    def batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs and targets the committed step trains on for the step about to be recorded: the examples
        `indices`, augmented as declared (`augment=`, drawn from the committed per-step generator, so that a
        verifier rebuilds them), on the training device. A hand-written loop with augmentation takes its batch
        from here; one that augments with its own randomness does not replay and is refused by the self-check."""
        if not self._augment:
            return self.dataset.batch(indices, self.device)
        x, y = self.dataset.batch(indices)
        x = augment_step(self._augment, x, self._rng_seed, self._step)
        return (x.to(self.device), y.to(self.device)) if self.device.type != "cpu" else (x, y)

    def finish(self) -> TranscriptSummary:
        """Closes a partial last segment, writes the final checkpoint and `manifest.json`, returns the digests.

        Under DDP every rank calls it; rank 0 writes and self-checks, and every rank returns its summary (or
        raises its error)."""
        self._check_open()
        if not self._dist:
            return self._finish()
        err: str | None = None
        try:
            self._raise_writer_error()
            self._check_finish()
        except RecorderError as exc:
            err = str(exc)
        self._sync_errors(err)
        result: list[Any] = [None]
        if self._writes:
            try:
                result[0] = self._finish(checked=True)
            except RecorderError as exc:
                result[0] = str(exc)
        else:
            try:
                if self._j > 0:
                    self._close_segment()
            except RecorderError as exc:
                err = str(exc)
            self.close()
            self._finished = True
        dist.broadcast_object_list(result, src=self._global_rank0(), group=self._pg)
        if isinstance(result[0], str):
            raise RecorderError(result[0] if self._writes else f"rank 0: {result[0]}")
        if err is not None:
            raise RecorderError(err)
        summary: TranscriptSummary = result[0]
        return summary

    def _check_finish(self) -> None:
        if self._forwards or self._opt_steps:
            raise RecorderError("a training step ran after the last rec.step(); record it or drop it first")

    def _finish(self, checked: bool = False) -> TranscriptSummary:
        if not checked:
            self._raise_writer_error()
            self._check_finish()
        if self._j > 0:
            self._close_segment()
        if self._segment == 0:
            raise RecorderError("no steps were recorded; a transcript needs at least one segment")
        self._check_schedule()
        if current_flags() != self._flags:
            raise RecorderError(f"the float32 matmul precision / cuDNN TF32 flags changed during the run "
                                f"({self._flags} -> {current_flags()}); set them before creating the Recorder")
        self._put(_FinalJob(self._segment, self._start))
        self._queue.put(None)
        self._thread.join()
        self._remove_hooks()
        self._closed = True
        self._raise_writer_error()
        self._start.wait()
        manifest = self._manifest()
        path = self.out_dir / MANIFEST_NAME
        write_manifest(path, manifest)
        if self._self_check:
            self._run_self_check(manifest, path)
        self._finished = True
        return summary_of(manifest, path)

    def _run_self_check(self, manifest: dict[str, Any], path: Path) -> None:
        """Replays the first, the last and one sampled segment (`self_check_segments`) with the verifier's
        code; a run that does not reproduce loses its manifest (so it cannot be published) and fails here with
        the reason. It runs at `finish()`, not beside the training: replay re-seeds torch's process-global
        generator, which the training thread's dropout draws from."""
        from registry.pol.selfcheck import check_segments, self_check_segments

        try:
            problem = check_segments(self.out_dir, self.dataset, self_check_segments(manifest), manifest=manifest,
                                     device=self.device)
        except TranscriptError as exc:
            problem = f"the recorded run cannot be replayed: {exc}"
        if problem is not None:
            path.unlink(missing_ok=True)
            raise RecorderError(problem)

    def close(self) -> None:
        """Stops recording without writing a manifest (e.g. the training loop failed)."""
        if self._closed:
            return
        self._closed = True
        self._remove_hooks()
        self._queue.put(None)
        self._thread.join()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()

    # --- internals (training thread) ------------------------------------------------------------------------
    def _scaler_now(self) -> tuple[float, int]:
        assert self._scaler is not None
        st = scaler_state(self._scaler)
        return float(st["scale"]), int(st["growthTracker"])

    def _check_scaler(self, stepped: bool) -> None:
        """Refuses a step where the GradScaler did not do what one `scaler.step(optimizer); scaler.update()`
        does (replay does exactly that), or whose options changed: after a taken step the growth tracker
        counts up (the scale grows every growthInterval taken steps); a skipped step backs the scale off."""
        assert self._scaler is not None and self._scaler_spec is not None
        try:
            options = describe_grad_scaler(self._scaler, self.device)
        except TranscriptError as exc:
            raise RecorderError(str(exc)) from exc
        if options != self._scaler_spec:
            raise RecorderError(f"the GradScaler's options changed during the run ({self._scaler_spec} -> {options}); "
                                "verifiers rebuild it from the committed ones")
        (ps, pt), (scale, tracker) = self._scaler_prev, self._scaler_now()
        gs = self._scaler_spec
        if not stepped:
            ok = tracker == 0 and math.isclose(scale, ps * gs["backoffFactor"], rel_tol=1e-6)
        elif pt + 1 < gs["growthInterval"]:
            ok = (scale, tracker) == (ps, pt + 1)
        else:
            ok = tracker == 0 and (scale == ps or math.isclose(scale, ps * gs["growthFactor"], rel_tol=1e-6))
        if not ok:
            raise RecorderError(f"the GradScaler was not used once in step {self._step} (scale {ps:g}, tracker {pt} "
                                f"-> {scale:g}, {tracker}, {'taken' if stepped else 'skipped'}); each step must run "
                                "scaler.scale(loss).backward(), scaler.step(optimizer), scaler.update()")
        self._scaler_prev = (scale, tracker)

    def _init_origin(self, model: nn.Module, init_seed: int | None, parent_claim_id: int | None) -> dict[str, Any]:
        """The config's `init` entry for checkpoint 0 (module docstring)."""
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        if parent_claim_id is not None:
            if isinstance(parent_claim_id, bool) or not isinstance(parent_claim_id, int) or parent_claim_id <= 0:
                raise RecorderError("parent_claim_id must be a positive claim id")
            return make_init("parent", state, parent_claim_id=parent_claim_id)
        spec = {"model": {"family": self.family, "args": self._family_args}, "dtype": self._dtype}
        user_seed = self._user_config.get("seed")
        candidates = [init_seed] if init_seed is not None else [user_seed, self._rng_seed]
        for seed in candidates:
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 63:
                continue
            fresh = init_state(spec, seed)
            if set(fresh) == set(state) and all(fresh[n].shape == state[n].shape and fresh[n].dtype == state[n].dtype
                                                and torch.equal(fresh[n], state[n]) for n in fresh):
                return make_init("seed", state, seed=seed)
        if init_seed is not None:
            raise RecorderError(f"the model is not family {self.family!r} initialized on the CPU with seed {init_seed} "
                                "(torch.manual_seed, build, then .to(device)); verifiers re-initialize it bit-exactly")
        return make_init("external", state)

    def _scheduler_every(self) -> int | None:
        """Optimizer steps per scheduler.step(), from the scheduler's step counts seen at each optimizer step."""
        counts = self._sched_counts
        if not counts or counts[-1] == 0:
            return None
        every = counts.index(1) if 1 in counts else 0
        if every < 1 or any(c != t // every for t, c in enumerate(counts)):
            first = next((t for t, c in enumerate(counts) if every < 1 or c != t // every), 0)
            raise RecorderError(f"the LR scheduler was stepped irregularly (step count {counts[first]} at optimizer "
                                f"step {first}); verifiers derive the rate of step t from t // every scheduler steps")
        return every

    def _check_schedule(self) -> None:
        """Refuses the run when the optimizer's actual learning rates depart from the committed schedule."""
        every = self._scheduler_every() if self._scheduler is not None else None
        try:
            self._scheduler_spec = describe_scheduler(self._scheduler, every)
            cfg = {"optimizer": self._optimizer_spec, "scheduler": self._scheduler_spec}
            want = learning_rates(cfg, len(self._all_lrs))
        except TranscriptError as exc:
            raise RecorderError(str(exc)) from exc
        for t, (got, exp) in enumerate(zip(self._all_lrs, want, strict=True)):
            if got != exp:
                raise RecorderError(f"step {t} used learning rates {got} but the committed schedule gives {exp}; "
                                    "verifiers take the rate from the config")

    def _check_open(self) -> None:
        if self._closed:
            raise RecorderError("the recorder is finished or closed")

    def _raise_writer_error(self) -> None:
        if self._error is not None:
            err = self._error
            if not self._closed:
                self.close()
            raise RecorderError(f"writing the transcript failed: {err!r}") from err

    def _indices(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
        if (type(indices) is np.ndarray and indices.dtype == np.int64 and indices.ndim == 1  # the common case
                and indices.size == self._batch_size):
            return indices
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        idx = np.asarray(indices)
        if idx.ndim != 1 or idx.size == 0 or idx.dtype.kind not in "iu":
            raise RecorderError(f"indices must be a non-empty 1-d integer array, got {idx.dtype} {idx.shape}")
        if self._batch_size is None:
            if idx.size % self._micro_global:
                raise RecorderError(f"a step of {idx.size} examples does not split into {self._micro_global} equal "
                                    "micro-batches; pass the indices of all micro-batches of the step, in order")
            self._batch_size = int(idx.size)
            self._seg_batches = np.empty((self.k, self._batch_size), dtype="<i8")
        elif idx.size != self._batch_size:
            raise RecorderError(f"batch size changed from {self._batch_size} to {idx.size}; batches must have a "
                                "constant size (e.g. DataLoader(drop_last=True))")
        return idx

    def _close_segment(self) -> None:
        assert self._seg_batches is not None
        batches = self._seg_batches[:self._j]
        if self._dist:
            self._check_replicas()
        if int(batches.min()) < 0 or int(batches.max()) >= len(self.dataset):  # once per segment: cheaper
            raise RecorderError(f"segment {self._segment} uses example indices outside [0, {len(self.dataset)})")
        if not self._writes:
            self._segment += 1
            self._j = 0
            self._seg_lrs = []
            return
        end = _snapshot(self._step, self.model, self.optimizer, self._cuda_index is not None, self._scaler)
        job = _SegmentJob(
            index=self._segment, start=self._start, end=end, batches=batches.copy(),
            lrs=[[float(v) for v in r] for r in self._seg_lrs], epoch=self._seg_epoch,
        )
        self._put(job)
        self._segment += 1
        self._start = end
        self._j = 0
        self._seg_lrs = []

    # --- DDP (collectives over the process group; every rank makes the same calls in the same order) -------
    def _global_rank0(self) -> int:
        return 0 if self._pg is None else int(dist.get_global_rank(self._pg, 0))

    def _collective_device(self) -> torch.device:
        return self.device if dist.get_backend(self._pg) == "nccl" else torch.device("cpu")

    def _all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        t = t.to(self._collective_device())
        parts = [torch.empty_like(t) for _ in range(self._world)]
        dist.all_gather(parts, t, group=self._pg)
        return [p.cpu() for p in parts]

    def _sync_errors(self, err: str | None, size: int = 0) -> list[int]:
        """Every rank learns whether any rank failed its checks (then all raise the first failing rank's
        reason, so no rank is left waiting in a collective); returns the ranks' local batch sizes."""
        heads = self._all_gather(torch.tensor([0 if err is None else 1, size], dtype=torch.int64))
        failed = [r for r, h in enumerate(heads) if int(h[0])]
        if failed:
            msgs: list[Any] = [None] * self._world
            dist.all_gather_object(msgs, err, group=self._pg)
            self.close()
            raise RecorderError(msgs[failed[0]] if failed[0] == self._rank else f"rank {failed[0]}: {msgs[failed[0]]}")
        return [int(h[1]) for h in heads]

    def _gather_indices(self, indices: Sequence[int] | np.ndarray | torch.Tensor,
                        lr: float | Sequence[float] | None) -> np.ndarray:
        """This rank's checks, then every rank's local indices concatenated in rank order (the step's batch)."""
        err: str | None = None
        local = np.zeros(0, dtype=np.int64)
        try:
            self._raise_writer_error()
            self._check_step(lr)
            if isinstance(indices, torch.Tensor):
                indices = indices.detach().cpu().numpy()
            arr = np.asarray(indices)
            if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
                raise RecorderError(f"indices must be a non-empty 1-d integer array, got {arr.dtype} {arr.shape}")
            local = arr.astype(np.int64)
        except RecorderError as exc:
            err = str(exc)
        b = self._local_size
        if b is None:  # the first step: sizes first, then the indices
            sizes = self._sync_errors(err, int(local.size))
            parts = None
        else:  # one collective per step: [failed, size, indices (when of the established size)]
            row = torch.zeros(2 + b, dtype=torch.int64)
            row[0], row[1] = int(err is not None), int(local.size)
            if err is None and local.size == b:
                row[2:] = torch.from_numpy(local)
            rows = self._all_gather(row)
            if any(int(r[0]) for r in rows):
                self._sync_errors(err, int(local.size))  # raises every rank's first failure
            sizes = [int(r[1]) for r in rows]
            parts = [r[2:] for r in rows]
        if len(set(sizes)) != 1:
            self.close()
            raise RecorderError(f"the ranks' local batch sizes differ at step {self._step} ({sizes}); DDP records "
                                "equal local batches (DistributedSampler with drop_last=True)")
        if b is not None and sizes[0] != b:
            self.close()
            raise RecorderError(f"the local batch size changed from {b} to {sizes[0]} at step {self._step}; batches "
                                "must have a constant size (drop_last=True)")
        if parts is None:
            parts = self._all_gather(torch.from_numpy(local))
            self._local_size = sizes[0]
        return self._indices(np.concatenate([p.numpy() for p in parts]))

    def _check_replicas(self) -> None:
        """Every rank must hold rank 0's weights and buffers (DDP keeps them identical); a rank whose copy
        differs (an optimizer step inside no_sync(), unsynchronized buffers) is not what replay computes."""
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        digest = torch.frombuffer(bytearray(weights_hash(state)), dtype=torch.uint8)
        digests = self._all_gather(digest)
        bad = [r for r, d in enumerate(digests) if not torch.equal(d, digests[0])]
        if bad:
            self.close()
            raise RecorderError(f"rank {bad[0]}'s weights differ from rank 0's at step {self._step}; DDP ranks must "
                                "stay identical (no optimizer step inside no_sync(), no per-rank buffers)")

    def _put(self, job: _SegmentJob | _FinalJob) -> None:
        self._queue.put(job)

    def _remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # --- background writer ------------------------------------------------------------------------------------
    def _writer(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is not None:
                continue  # drain: the training thread raises at its next call
            try:
                if isinstance(job, _SegmentJob):
                    self._write_segment(job)
                else:
                    self._write_checkpoint(job.index, job.snapshot)
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread
                self._error = exc

    def _write_file(self, rel: str, chunks: Sequence[bytes | memoryview]) -> bytes:
        """Writes the chunks to `rel` and returns their sha256.

        Small pieces are joined into blocks of up to `_BLOCK` bytes first: every write or hash call of the writer
        hands the GIL back and forth with the training thread, and on small models those hand-offs, not the
        bytes, are what slows training down. Files are written in place (the manifest, written last and
        atomically, is what makes a transcript complete)."""
        h = hashlib.sha256()
        path = self.out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)  # checkpoints/GGGG/, batches/GGGG/
        with open(path, "wb") as f:
            for block in _blocks(chunks):
                h.update(block)
                f.write(block)
        return h.digest()

    def _write_checkpoint(self, index: int, snap: _Snapshot) -> None:
        snap.wait()
        chunks = checkpoint_chunks(index, snap.step, snap.model, snap.optim, snap.scaler)
        self._results.ckpt_hashes[index] = self._write_file(checkpoint_path(index), chunks)

    def _write_segment(self, job: _SegmentJob) -> None:
        self._write_checkpoint(job.index, job.start)
        job.end.wait()
        buf = io.BytesIO()
        np.save(buf, job.batches, allow_pickle=False)
        batches_hash = self._write_file(batches_path(job.index), [buf.getvalue()])
        self._results.segments[job.index] = {
            "index": job.index,
            "startStep": job.start.step,
            "endStep": job.end.step,
            "batches": batches_path(job.index),
            "batchesHash": to_hex(batches_hash),
            "learningRates": job.lrs,
            "updateNorm": update_norm(job.start.model, job.end.model, self._param_names),
            "epoch": job.epoch,
        }

    # --- manifest -----------------------------------------------------------------------------------------------
    def _manifest(self) -> dict[str, Any]:
        assert self._batch_size is not None
        n = self._segment
        config = make_config(
            family=self.family, family_args=self._family_args, dtype=self._dtype, optimizer=self._optimizer_spec,
            scheduler=self._scheduler_spec, loss=self.loss, batch_size=self._batch_size, steps_per_segment=self.k,
            dataset_root=to_hex(self.dataset.root), num_examples=len(self.dataset), rng_seed=self._rng_seed,
            tolerance_policy=self._policy, user=self._user_config, steps_per_epoch=self._steps_per_epoch or 1,
            init=self._init, clip=self._clip, micro_batches=self._micro_global, augment=self._augment,
            world_size=self._world,
            precision=precision_config(self._autocast, *self._flags, self._scaler_spec),
        )
        hashes = [self._results.ckpt_hashes[i] for i in range(n + 1)]
        checkpoints = [{"index": i, "step": (self._results.segments[i]["startStep"] if i < n else self._step),
                        "path": checkpoint_path(i), "ckptHash": to_hex(h)} for i, h in enumerate(hashes)]
        manifest: dict[str, Any] = {
            "format": TRANSCRIPT_FORMAT,
            "config": config,
            "configHash": to_hex(config_hash(config)),
            "dataset": self.dataset.reference(self._dataset_cid),
            "stepsPerSegment": self.k,
            "batchSize": self._batch_size,
            "numSteps": self._step,
            "numSegments": n,
            "checkpoints": checkpoints,
            "segments": [self._results.segments[i] for i in range(n)],
            "chainHead": to_hex(chain_head(hashes)),
            "finalWeightsHash": to_hex(weights_hash(self._start.model)),
            "environment": self._environment(),
        }
        manifest["segmentRoot"] = to_hex(segment_tree(manifest).root)
        return manifest

    def _environment(self) -> dict[str, Any]:
        env: dict[str, Any] = {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "device": str(self.device),
            "threads": torch.get_num_threads(),
        }
        if self._cuda_index is not None:
            env["deviceName"] = torch.cuda.get_device_name(self._cuda_index)
            env["cuda"] = torch.version.cuda
        return env
