"""Calibration of tolerance policies on this hardware (SPEC section 6): how far honest replays land from the
recorded checkpoints, and how far forged segments do, so that δ can sit between the two with measured
false-reject and false-accept rates.

For every segment of every honest transcript given (local directories, e.g. from `proofreg train`, or runs
this module trains itself), and for every thread count asked for, the segment is replayed from its
checkpoint with the engine's replay (`registry.pol.replay`) and ρ is measured. Then three forgeries of that
segment are measured the same way, built in memory from the honest evidence:

- `tampered-batch`: one of the k recorded batches replaced by other example indices (data substitution);
- `other-seed`: the claimed next checkpoint taken from another honest run of the same configuration but
  another seed (a spliced transcript), when two or more runs share an architecture;
- `interpolated`: checkpoints linearly interpolated between the first and the last (the PoL paper's
  cheapest spoof), replayed from the interpolated W_i and compared with the interpolated W_{i+1}.

A policy's false-reject rate is the share of honest replays with ρ > δ; its false-accept rate is the share
of forgeries with ρ ≤ δ.

The full-state comparison (`registry.pol.replay.state_distances`: buffers such as BatchNorm running
statistics, every optimizer state key, counts) is calibrated the same way: every honest replay's distance per
state class, and two forgeries of the end state whose parameters are left honest (so only the state
comparison can catch them): `optimizer-state` (every floating optimizer state tensor of checkpoint i+1 scaled
by 1 + ε, ε = 1e-2) and `buffers` (every floating buffer scaled likewise, on models that have buffers). A state
false reject is an honest replay with any class over its threshold; a state false accept a state forgery
with every class within.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from registry.core.hashing import as_hash
from registry.pol.checkpoint import Checkpoint, read_checkpoint
from registry.pol.replay import parameter_names, replay_segment, replay_segment_state, segment_distance, state_distances
from registry.pol.transcript import load_manifest, read_batches
from registry.spec.datasets import Dataset
from verifier.engine import resolve_device
from verifier.policy import POLICIES, TolerancePolicy

FORGERIES = ("tampered-batch", "other-seed", "interpolated")
STATE_FORGERIES = ("optimizer-state", "buffers")
STATE_EPS = 1e-2


@dataclass
class Run:
    """One honest transcript on disk, with its training set."""

    transcript: Path
    dataset: Dataset
    manifest: dict[str, Any]

    @classmethod
    def open(cls, transcript: str | Path, dataset_dir: str | Path | None = None) -> Run:
        tdir = Path(transcript)
        manifest = load_manifest(tdir)
        ddir = Path(dataset_dir) if dataset_dir is not None else tdir.parent / "dataset"
        return cls(tdir, Dataset.load(ddir, expected_root=as_hash(manifest["dataset"]["datasetRoot"])), manifest)

    def checkpoint(self, i: int) -> Checkpoint:
        entry = self.manifest["checkpoints"][i]
        return read_checkpoint(self.transcript / entry["path"], as_hash(entry["ckptHash"]))

    def batches(self, i: int) -> np.ndarray:
        seg = self.manifest["segments"][i]
        return read_batches(self.transcript / seg["batches"], seg["batchesHash"])

    def arch(self) -> str:
        c = self.manifest["config"]
        return json.dumps([c["model"], c["dtype"], c["optimizer"]["type"]], sort_keys=True)


def quantiles(values: Sequence[float]) -> dict[str, Any]:
    """min/p50/p90/p99/max and how many are exactly 0 (bitwise replays)."""
    if not values:
        return {"count": 0}
    arr = np.asarray([v if math.isfinite(v) else np.inf for v in values], dtype=np.float64)
    q = {f"p{p}": float(np.quantile(arr, p / 100)) for p in (50, 90, 99)}
    return {"count": int(arr.size), "zero": int(np.sum(arr == 0.0)), "min": float(arr.min()), **q,
            "max": float(arr.max())}


def _rho(run: Run, i: int, device: str, start: Checkpoint, nxt: dict[str, torch.Tensor],
         batches: np.ndarray | None = None) -> float:
    replayed = replay_segment(run.transcript, i, run.dataset, device=device, manifest=run.manifest,
                              checkpoint=start, batches=batches)
    names = parameter_names(run.manifest["config"])
    return segment_distance(replayed, nxt, start.model, names).rho


def _state(run: Run, i: int, device: str, start: Checkpoint, end: Checkpoint,
           threshold: float) -> tuple[float, dict[str, tuple[float, bool]], dict[str, torch.Tensor], dict[str, Any]]:
    """ρ and the distance of every state class of an honest replay, plus the replayed state."""
    model, optim = replay_segment_state(run.transcript, i, run.dataset, device=device, manifest=run.manifest,
                                        checkpoint=start)
    rho = segment_distance(model, end.model, start.model, parameter_names(run.manifest["config"])).rho
    dists = {d.name: (d.distance, d.exact) for d in state_distances(model, optim, start, end, run.manifest["config"],
                                                         threshold)}
    return rho, dists, model, optim


def _scaled_state(end: Checkpoint, config: dict[str, Any], what: str) -> Checkpoint | None:
    """checkpoint i+1 with its floating optimizer state (or floating buffers) scaled by 1 + STATE_EPS."""
    params = {n for g in config["optimizer"]["paramGroups"] for n in g["params"]}
    if what == "optimizer-state":
        state = {pid: {k: v * (1 + STATE_EPS) if isinstance(v, torch.Tensor) and v.is_floating_point()
                       and k != "step" else v for k, v in e.items()} for pid, e in end.optimizer["state"].items()}
        if not any(isinstance(v, torch.Tensor) for e in state.values() for v in e.values()):
            return None
        return Checkpoint(end.index, end.step, end.model, {"state": state,
                                                           "param_groups": end.optimizer["param_groups"]})
    bufs = [n for n, v in end.model.items() if n not in params and v.is_floating_point()]
    if not bufs:
        return None
    model = {n: v * (1 + STATE_EPS) if n in bufs else v for n, v in end.model.items()}
    return Checkpoint(end.index, end.step, model, end.optimizer)


def _lerp(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], t: float) -> dict[str, torch.Tensor]:
    return {n: (a[n] + t * (b[n] - a[n])).to(a[n].dtype) if a[n].is_floating_point() else a[n].clone() for n in a}


def calibrate(runs: Sequence[Run], *, device: str = "cpu", threads: Sequence[int] = (), max_segments: int | None = None,
              seed: int = 0, policies: Sequence[TolerancePolicy] | None = None,
              progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Replays honest segments (at each thread count) and forged ones; returns the ρ distributions and each
    policy's false-reject and false-accept rates (module docstring)."""
    dev = resolve_device(device)
    pols = list(policies) if policies is not None else list(POLICIES.values())
    rng = np.random.default_rng(seed)
    thread_counts = list(threads) or [torch.get_num_threads()]
    honest: dict[str, list[float]] = {str(t): [] for t in thread_counts}
    forged: dict[str, list[float]] = {k: [] for k in FORGERIES}
    state_threshold = min(p.state_threshold for p in pols) if pols else 1e-3
    honest_state: dict[str, list[float]] = {}  # state class → distances (all thread counts)
    honest_rows: list[dict[str, tuple[float, bool]]] = []  # per honest replay: class → (distance, exact)
    forged_state: dict[str, list[float]] = {k: [] for k in STATE_FORGERIES}  # worst class distance per forgery
    plan = [(r, i) for r in runs for i in range(r.manifest["numSegments"])[:max_segments]]
    total, done = len(plan), 0
    before = torch.get_num_threads()
    try:
        for run, i in plan:
            start, end = run.checkpoint(i), run.checkpoint(i + 1)
            for t in thread_counts:
                torch.set_num_threads(t)
                rho, dists, model, optim = _state(run, i, dev, start, end, state_threshold)
                honest[str(t)].append(rho)
                for name, (d, _) in dists.items():
                    honest_state.setdefault(name, []).append(d)
                honest_rows.append(dists)
            torch.set_num_threads(thread_counts[0])
            for what in STATE_FORGERIES:
                fake = _scaled_state(end, run.manifest["config"], what)
                if fake is not None:
                    fd = state_distances(model, optim, start, fake, run.manifest["config"], state_threshold)
                    forged_state[what].append(max(d.distance for d in fd))
            # tampered batch: one step's examples replaced by random other ones
            b = run.batches(i).copy()
            row = int(rng.integers(0, b.shape[0]))
            b[row] = rng.integers(0, len(run.dataset), size=b.shape[1], dtype=np.int64)
            forged["tampered-batch"].append(_rho(run, i, dev, start, end.model, b))
            # spliced: the next checkpoint from another run with the same architecture
            other = next((o for o in runs if o is not run and o.arch() == run.arch()
                          and o.manifest["numSegments"] > i), None)
            if other is not None:
                forged["other-seed"].append(_rho(run, i, dev, start, other.checkpoint(i + 1).model))
            # interpolated between the first and the last checkpoint
            n = run.manifest["numSegments"]
            first, last = run.checkpoint(0).model, run.checkpoint(n).model
            fake_start = Checkpoint(start.index, start.step, _lerp(first, last, i / n), start.optimizer)
            forged["interpolated"].append(_rho(run, i, dev, fake_start, _lerp(first, last, (i + 1) / n)))
            done += 1
            if progress is not None:
                progress(done, total)
    finally:
        torch.set_num_threads(before)
    all_honest = [v for vs in honest.values() for v in vs]
    all_forged = [v for vs in forged.values() for v in vs]
    policy_rows = []
    for p in pols:
        fr = sum(1 for v in all_honest if not v <= p.threshold)
        fa = sum(1 for v in all_forged if v <= p.threshold)
        policy_rows.append({"policy": p.name, "threshold": p.threshold,
                            "falseRejects": fr, "honest": len(all_honest),
                            "falseRejectRate": fr / len(all_honest) if all_honest else None,
                            "falseAccepts": fa, "forged": len(all_forged),
                            "falseAcceptRate": fa / len(all_forged) if all_forged else None})
    for prow in policy_rows:
        p = next(q for q in pols if q.name == prow["policy"])
        sfr = sum(1 for r in honest_rows if any(not d <= (0.0 if exact else p.state_threshold)
                                                    for d, exact in r.values()))
        all_fs = [v for vs in forged_state.values() for v in vs]
        sfa = sum(1 for v in all_fs if v <= p.state_threshold)
        prow.update({"stateThreshold": p.state_threshold, "stateFalseRejects": sfr,
                    "stateFalseRejectRate": sfr / len(honest_rows) if honest_rows else None,
                    "stateFalseAccepts": sfa, "stateForged": len(all_fs),
                    "stateFalseAcceptRate": sfa / len(all_fs) if all_fs else None})
    recorded_threads = sorted({r.manifest.get("environment", {}).get("threads") for r in runs}, key=str)
    return {
        "device": dev,
        "recordedThreads": recorded_threads,
        "transcripts": [str(r.transcript) for r in runs],
        "segmentsPerRun": max_segments,
        "honest": {f"threads={t}": quantiles(v) for t, v in honest.items()},
        "honestAll": quantiles(all_honest),
        "forged": {k: quantiles(v) for k, v in forged.items()},
        "forgedAll": quantiles(all_forged),
        "honestState": {k: quantiles(v) for k, v in sorted(honest_state.items())},
        "forgedState": {k: quantiles(v) for k, v in forged_state.items()},
        "policies": policy_rows,
        "samples": {"honest": honest, "forged": forged, "honestState": honest_state, "forgedState": forged_state},
    }


#: `train_runs(mix=True)`: every fourth run is a BatchNorm ResNet-20 (width 4) trained with Adam, so that
#: running statistics and Adam's moments and step counts are calibrated too.
BN_ADAM = {"family": "resnet20", "family_args": {"in_channels": 1, "width": 4}, "optimizer": "adam", "lr": 1e-3}


def train_runs(out: Path, count: int, *, max_steps: int = 60, k: int = 5, device: str = "cpu",
               progress: Callable[[int, int], None] | None = None, mix: bool = False) -> list[Run]:
    """`count` honest MLP-on-digits runs (seeds 0..count−1) under `out` sharing one dataset (with `mix`,
    every fourth is `BN_ADAM`, with a third of the steps)."""
    from registry.pol.train import train

    runs = []
    for s in range(count):
        extra: dict[str, Any] = dict(BN_ADAM) if mix and s % 4 == 3 else {}
        steps = max(k, max_steps // 3) if extra else max_steps
        r = train(out / f"run{s}", seed=s, epochs=max(1, steps // 56 + 1), max_steps=steps,
                  steps_per_segment=k, device=device, dataset_dir=out / "dataset", **extra)
        runs.append(Run(r.transcript_dir, Dataset.load(r.dataset_dir), load_manifest(r.transcript_dir)))
        if progress is not None:
            progress(s + 1, count)
    return runs


def plot_calibration(result: dict[str, Any], path: str | Path) -> Path:
    """PNG: ρ of honest replays and of each forgery (log scale; exact zeros and infinities in their own
    labelled bands), with each policy's δ as a labelled line; legend outside the data."""
    from registry.cli.plots import DELTA_COLOR, FAIL_COLOR, PASS_COLOR, LogBands, figure

    groups = [(f"honest, threads={k}", v) for k, v in result["samples"]["honest"].items()]
    groups += [(f"forged: {k}", v) for k, v in result["samples"]["forged"].items() if v]
    thresholds = [p["threshold"] for p in result["policies"] if p["threshold"] > 0]
    bands = LogBands.fit([float(v) for _, vals in groups for v in vals], thresholds)
    with figure(path, size=(8.0, 1.2 + 0.45 * max(len(groups), 1))) as (_fig, ax):
        seen: set[str] = set()
        for y, (label, vals) in enumerate(groups):
            kind = "honest replay" if label.startswith("honest") else "forged segment"
            xs = [bands.place(float(v)) for v in vals]
            ax.scatter(xs, np.full(len(xs), y) + np.linspace(-0.2, 0.2, len(xs)), s=8, clip_on=False,
                       c=PASS_COLOR if kind == "honest replay" else FAIL_COLOR,
                       label=None if kind in seen else kind)
            seen.add(kind)
        styles = ["--", "-.", ":", (0, (5, 1))]
        for n, p in enumerate(q for q in result["policies"] if q["threshold"] > 0):
            ax.axvline(p["threshold"], linestyle=styles[n % len(styles)], color=DELTA_COLOR, alpha=0.8,
                       label=f"δ of {p['policy']} = {p['threshold']:g}")
        bands.apply(ax, "x")
        ax.set_yticks(range(len(groups)), [g[0] for g in groups], fontsize=8)
        ax.set_ylim(-0.6, len(groups) - 0.4)
        ax.set_xlabel("ρ = replay error / recorded update")
        ax.set_title(f"calibration on {result['device']}", fontsize=9)
        ax.grid(True, axis="x", which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return Path(path)


def calibrate_fresh(count: int = 3, *, max_steps: int = 60, k: int = 5, threads: Sequence[int] = (),
                    device: str = "cpu") -> dict[str, Any]:
    """Trains `count` runs in a temporary folder and calibrates on them (bench and tests)."""
    with tempfile.TemporaryDirectory() as tmp:
        runs = train_runs(Path(tmp), count, max_steps=max_steps, k=k)
        return calibrate(runs, device=device, threads=threads)


def liar_detection(manifest: dict[str, Any], forged: Sequence[int], *, trials: int = 10000, samples: int = 8,
                   policy: TolerancePolicy | None = None, tag: str = "liar") -> dict[str, Any]:
    """How often the audit of a challenge re-executes at least one of the `forged` segments of this manifest,
    over `trials` challenge seeds, with the engine's own planning (`verifier.engine.plan_segments`): the
    contract's `samples` draws, the policy's extra draws, first and last, top-Q by the manifest's declared
    norms (the prover's words: a liar makes the forged ones look smallest). A forged segment that is
    re-executed is Invalid (the soundness suite shows it for each forgery class), so this is the detection
    rate. Compared with the bound 1 − (1 − f)^(S + extra) that ignores first/last and top-Q."""
    from registry.core.hashing import keccak256
    from registry.core.sampling import sampled_segments
    from verifier.engine import plan_segments
    from verifier.policy import get_policy

    pol = policy or get_policy(None)
    n = int(manifest["numSegments"])
    bad = set(int(i) for i in forged)
    hits = 0
    for t in range(trials):
        seed = keccak256(f"{tag}/{t}".encode())
        planned = plan_segments(manifest, sampled_segments(seed, samples, n), seed, samples, pol)
        hits += bool(bad & set(planned))
    f = len(bad) / n
    return {"numSegments": n, "forged": sorted(bad), "fraction": f, "trials": trials, "detected": hits,
            "rate": hits / trials, "bound": 1 - (1 - f) ** (samples + pol.extra_samples)}
