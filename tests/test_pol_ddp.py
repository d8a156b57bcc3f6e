"""A torch.distributed DDP run recorded as one transcript and replayed in one process (issue 13).

Two (or three) CPU processes on gloo train a tiny MLP with DistributedDataParallel; every rank runs the
Recorder, rank 0 alone writes. The transcript commits `distributed: {worldSize: W}` and W micro-batches per
step (rank-major), and the verifier replays it in one process: Valid, with the measured rho printed. A prover
who changes one rank's share of a step and reseals is Invalid; what one process cannot replay is refused."""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from registry.pol import Recorder, RecorderError, check_segment, load_manifest
from registry.pol.batches import epoch_batches
from registry.spec.datasets import Dataset, build_builtin, load_dataset
from registry.spec.models import build_model
from tests.forgery import edit_batches
from tests.procs import free_port
from verifier.cli import main as verifier_main

MLP = {"in_features": 64, "hidden": [32], "out_features": 10, "dropout": 0.0}
LOCAL = 8  # examples per rank per step
STEPS = 10
K = 4



def _model(args: dict[str, Any] = MLP) -> nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", args)


def _train(rank: int, world: int, out: Path, ds: Dataset, model: nn.Module, local: int = LOCAL,
           scale: float = 1.0, micro: int = 1, sync: bool = True, short_from: int = STEPS) -> Any:
    """The user's DDP loop with the recorder's lines (`local`: this rank's examples per step; `scale`: a loss
    the config does not declare; `micro`: local gradient accumulation, synchronized on the last micro-batch;
    `sync=False`: every backward inside no_sync(), so each rank steps on its own gradients; `short_from`: rank 1
    drops an example from that step on)."""
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    rec = Recorder(out, ddp, opt, family="mlp", family_args=MLP, dataset=ds, steps_per_segment=K,
                   accumulation=micro)
    try:
        for n, (_, idx) in enumerate(epoch_batches(len(ds), LOCAL * world, 10, 0)):
            if n == STEPS:
                break
            mine = idx[rank * LOCAL:rank * LOCAL + local]  # a DistributedSampler's share, rank-major
            if rank == 1 and n >= short_from:
                mine = mine[:-1]
            for i, part in enumerate(np.split(mine, micro)):
                x, y = ds.batch(part)
                with ddp.no_sync() if i < micro - 1 or not sync else contextlib.nullcontext():
                    (scale * F.cross_entropy(ddp(x), y) / micro).backward()
            opt.step()
            opt.zero_grad()
            rec.step(mine)
        return rec.finish()
    finally:
        rec.close()


def _rank_main(rank: int, world: int, port: int, base: str, ds_path: str, mode: str, micro: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    ds = load_dataset(ds_path)
    result: dict[str, Any] = {}
    try:
        if mode == "honest":
            summary = _train(rank, world, Path(base) / f"rank{rank}", ds, _model(), micro=micro)
            result["manifest"] = str(summary.manifest_path)
        else:
            for name, model in (("dropout", _model(dict(MLP, dropout=0.2))),
                                ("batchnorm", nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
                                                            nn.Linear(32, 10)))):
                try:
                    Recorder(Path(base) / f"{name}{rank}", model, torch.optim.SGD(model.parameters(), lr=0.1),
                             family="mlp", family_args=MLP, dataset=ds, steps_per_segment=K, distributed=True)
                except RecorderError as exc:
                    result[name] = str(exc)
            try:
                _train(rank, world, Path(base) / f"unequal{rank}", ds, _model(), local=LOCAL - rank)
            except RecorderError as exc:
                result["unequal"] = str(exc)
            try:
                _train(rank, world, Path(base) / f"later{rank}", ds, _model(), short_from=5)
            except RecorderError as exc:
                result["later"] = str(exc)
            noisy = _model()  # a random draw inside the forward that no module declares (functional dropout)
            noisy.get_submodule("layers.0").register_forward_hook(lambda m, a, out: out + 1e-3 * torch.rand_like(out))
            try:
                _train(rank, world, Path(base) / f"rng{rank}", ds, noisy)
            except RecorderError as exc:
                result["rng"] = str(exc)
            try:
                _train(rank, world, Path(base) / f"nosync{rank}", ds, _model(), sync=False)
            except RecorderError as exc:
                result["nosync"] = str(exc)
            try:  # rank 0's self-check fails; every rank raises its reason
                _train(rank, world, Path(base) / f"scaled{rank}", ds, _model(), scale=3.0)
            except RecorderError as exc:
                result["selfcheck"] = str(exc)
    finally:
        (Path(base) / f"result{rank}.json").write_text(json.dumps(result))
        # every rank leaves together: a rank that tears gloo down while another (rank 0, still writing and
        # self-checking the transcript) has it open makes that one abort at exit ("terminate called without
        # an active exception"), about one W=3 run in three
        with contextlib.suppress(RuntimeError):
            dist.monitored_barrier(timeout=timedelta(seconds=120))
        dist.destroy_process_group()


def _spawn(base: Path, ds: Dataset, mode: str, world: int = 2, micro: int = 1) -> list[dict[str, Any]]:
    base.mkdir(parents=True, exist_ok=True)
    mp.start_processes(_rank_main, args=(world, free_port(), str(base), str(ds.path), mode, micro), nprocs=world,
                       start_method="spawn")
    return [json.loads((base / f"result{r}.json").read_text()) for r in range(world)]


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return build_builtin("digits", tmp_path_factory.mktemp("digits"))


def _report(tdir: Path, ds: Dataset, tmp_path: Path) -> dict[str, Any]:
    res = CliRunner().invoke(verifier_main, ["check", str(tdir), "--all", "--dataset", str(ds.path),
                                             "--report", str(tmp_path / "r.json"), "--json"])
    assert res.exit_code in (0, 1, 3), res.output
    return dict(json.loads((tmp_path / "r.json").read_text()))



@pytest.mark.parametrize(("world", "micro"), [(2, 1), pytest.param(3, 1, marks=pytest.mark.slow),
                                              pytest.param(2, 2, marks=pytest.mark.slow)])
def test_ddp_run_is_one_transcript_replayed_in_one_process(digits: Dataset, tmp_path: Path, world: int,
                                                           micro: int) -> None:
    results = _spawn(tmp_path / "run", digits, "honest", world, micro)
    tdir = Path(results[0]["manifest"]).parent
    assert all(r["manifest"] == results[0]["manifest"] for r in results)  # every rank gets rank 0's summary
    assert not any((tmp_path / "run" / f"rank{r}").exists() for r in range(1, world))  # only rank 0 writes
    m = load_manifest(tdir)
    assert m["config"]["distributed"] == {"worldSize": world}
    assert m["config"]["accumulation"] == {"microBatches": world * micro}
    assert m["batchSize"] == world * LOCAL and m["numSteps"] == STEPS and m["numSegments"] == 3
    # The batch is every rank's share in rank order: the global batches of the loop above.
    want = [idx for n, (_, idx) in zip(range(STEPS), epoch_batches(len(digits), LOCAL * world, 10, 0), strict=False)]
    got = np.concatenate([np.load(tdir / s["batches"]) for s in m["segments"]])
    assert np.array_equal(got, np.stack(want))
    rho = [check_segment(tdir, i, digits, manifest=m).rho for i in range(m["numSegments"])]
    print(f"DDP W={world} n={micro} honest rho per segment: {rho} (max {max(rho):.3g})")
    assert max(rho) <= 1e-3
    report = _report(tdir, digits, tmp_path)
    assert report["verdict"] == "Valid", report

    if (world, micro) != (2, 1):
        return
    # Rank 1's share of one step dropped (rank 0's examples twice): resealed, Invalid.
    half = LOCAL

    def drop(arr: np.ndarray) -> None:
        arr[1, half:] = arr[1, :half]

    def other_step(arr: np.ndarray) -> None:  # rank 1's share of step 5 swapped with its share of step 6
        arr[[1, 2], half:] = arr[[2, 1], half:]

    for name, edit in (("drop", drop), ("other_step", other_step)):
        forged = edit_batches(tdir, tmp_path / name, edit)
        assert _report(forged, digits, tmp_path)["verdict"] == "Invalid", name
    # Swapping the two ranks' shares within a step is the same gradient (the sum over ranks commutes, bit for
    # bit with two micro-batches): not a forgery, and the verifier rightly finds nothing.
    swapped = edit_batches(tdir, tmp_path / "swap", lambda arr: arr.__setitem__(
        1, np.concatenate([arr[1, half:], arr[1, :half]])))
    assert _report(swapped, digits, tmp_path)["verdict"] == "Valid"


def test_what_one_process_cannot_replay_is_refused_in_one_line(digits: Dataset, tmp_path: Path) -> None:
    results = _spawn(tmp_path / "bad", digits, "refusals")
    for r in results:
        for key in ("dropout", "batchnorm", "unequal", "later", "rng", "nosync"):
            assert "\n" not in r[key], r[key]
        assert "draws random numbers in the forward from each DDP rank's own generator" in r["dropout"]
        assert "keeps running statistics, which DDP takes from rank 0 only" in r["batchnorm"]
        assert "local batch sizes differ at step 0 ([8, 7])" in r["unequal"]
        assert "local batch sizes differ at step 5 ([8, 7])" in r["later"]
        assert "the forward drew random numbers at step 0" in r["rng"]
        assert "rank 1's weights differ from rank 0's at step 4" in r["nosync"]
    assert "does not replay: segment 0 diverges" in results[0]["selfcheck"]
    assert results[1]["selfcheck"] == "rank 0: " + results[0]["selfcheck"]
    assert not (tmp_path / "bad" / "scaled0" / "manifest.json").exists()
    assert not (tmp_path / "bad" / "unequal0" / "manifest.json").exists()


def test_train_step_augment_and_uninitialized_distributed_are_refused(digits: Dataset, tmp_path: Path) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    kw: dict[str, Any] = {"family": "mlp", "family_args": MLP, "dataset": digits, "steps_per_segment": K,
                          "distributed": True}
    with pytest.raises(RecorderError, match=r"needs torch\.distributed initialized"):
        Recorder(tmp_path / "t", model, opt, **kw)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        rec = Recorder(tmp_path / "t", model, opt, **kw)
        with pytest.raises(RecorderError, match=r"under DDP step the DistributedDataParallel wrapper"):
            rec.train_step(np.arange(8))
        rec.close()
        with pytest.raises(RecorderError, match=r"augment= under DDP: every rank would draw"):
            Recorder(tmp_path / "a", model, opt, augment=[{"type": "gaussianNoise", "std": 0.01}], **kw)
    finally:
        dist.destroy_process_group()


def test_the_distributed_key_is_checked_against_the_micro_batches() -> None:
    from registry.pol import TranscriptError
    from registry.pol.step import StepSpec

    ok = {"loss": "cross_entropy", "accumulation": {"microBatches": 4}, "distributed": {"worldSize": 2}}
    assert StepSpec.of(ok).micro_batches == 4
    for bad in ({"distributed": {"worldSize": 2}},
                {"accumulation": {"microBatches": 3}, "distributed": {"worldSize": 2}},
                {"accumulation": {"microBatches": 2}, "distributed": {"worldSize": 1}},
                {"accumulation": {"microBatches": 2}, "distributed": {"worldSize": 2, "rank": 0}}):
        with pytest.raises(TranscriptError, match="distributed"):
            StepSpec.of({"loss": "cross_entropy", **bad})
