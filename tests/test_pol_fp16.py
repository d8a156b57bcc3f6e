"""float16 autocast with a GradScaler (issue 12): the scaler's options are committed in the config
(`precision.gradScaler`), its state (scale, growth tracker) is a checkpointed state group, and the committed
step (registry.pol.step) scales, unscales, skips and updates exactly as the prover's loop did, so honest runs,
including ones whose first steps overflow and are skipped, replay to rho 0 and are Valid; forged scaler state
or options are Invalid; loops the recorder cannot describe are refused with one line when recorded."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from registry.pol import Recorder, RecorderError, TranscriptError, load_manifest
from registry.pol.batches import epoch_batches
from registry.pol.checkpoint import decode_checkpoint, encode_checkpoint
from registry.pol.step import StepSpec, precision_spec
from registry.pol.transcript import MANIFEST_NAME, write_manifest
from registry.spec.datasets import Dataset, build_builtin
from registry.spec.models import build_model
from tests.forgery import read_manifest, reseal_all
from tests.report_schema import validate
from tests.test_pol_step import report, rhos

MLP = {"in_features": 64, "hidden": [32], "out_features": 10, "dropout": 0.2}
#: Large enough that the first steps' fp16 gradients overflow (skipped, scale backed off), small enough that
#: the scale settles within a few steps; growthInterval 2 makes it grow again inside a short run.
OVERFLOW = {"init_scale": 2.0 ** 20, "growth_interval": 2}


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return build_builtin("digits", tmp_path_factory.mktemp("digits"))


def _model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = build_model("mlp", MLP)
    return model, torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)


def fp16_loop(out: Path, ds: Dataset, *, steps: int = 9, micro: int = 1, max_norm: float | None = None,
              scaler_kw: dict[str, Any] | None = None, declare: bool = True, use_scaler: bool = True,
              amp: bool = True, on_step: Callable[[int, torch.amp.GradScaler], None] | None = None,
              **rec_kw: Any) -> list[float]:
    """A hand-written fp16 loop the way torch's AMP recipe writes it, with the recorder's lines; returns the
    scale after every step."""
    model, opt = _model()
    scaler = torch.amp.GradScaler("cpu", **(scaler_kw or OVERFLOW))
    clip = None if max_norm is None else {"type": "norm", "max_norm": max_norm}
    rec = Recorder(out, model, opt, family="mlp", family_args=MLP, dataset=ds, steps_per_segment=3,
                   scaler=scaler if declare else None, clip=clip, accumulation=micro, **rec_kw)
    scales = []
    try:
        for n, (_, idx) in enumerate(epoch_batches(len(ds), 8 * micro, 10, 0)):
            if n == steps:
                break
            for part in np.split(idx, micro):
                x, y = ds.batch(part)
                with torch.autocast("cpu", dtype=torch.float16, enabled=amp):
                    loss = F.cross_entropy(model(x), y)
                loss = loss / micro if micro > 1 else loss
                (scaler.scale(loss) if use_scaler else loss).backward()
            if use_scaler:
                if max_norm is not None:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.zero_grad()
            if on_step is not None:
                on_step(n, scaler)
            rec.step(idx)
            scales.append(scaler.get_scale())
        rec.finish()
    finally:
        rec.close()
    return scales


def test_fp16_loop_with_overflowing_scale_replays_exactly_and_is_valid(digits: Dataset, tmp_path: Path) -> None:
    """The first steps overflow and are skipped (no optimizer.step()), the scale backs off, then grows again:
    replay skips the same steps and ends at the same scale and growth tracker."""
    scales = fp16_loop(tmp_path / "t", digits)
    assert scales[0] < OVERFLOW["init_scale"]  # step 0 was skipped
    assert any(b > a for a, b in itertools.pairwise(scales))  # and the scale grew again later
    m = load_manifest(tmp_path / "t")
    assert m["config"]["precision"] == {"autocast": "float16", "matmulPrecision": "highest", "cudnnTf32": True,
                                        "gradScaler": {"initScale": 2.0 ** 20, "growthFactor": 2.0,
                                                       "backoffFactor": 0.5, "growthInterval": 2}}
    ck = [decode_checkpoint((tmp_path / "t" / c["path"]).read_bytes()) for c in m["checkpoints"]]
    states = [c.scaler for c in ck]
    assert all(st is not None and set(st) == {"scale", "growthTracker"} for st in states)
    first, last = states[0], states[-1]
    assert first is not None and last is not None
    assert float(first["scale"]) == 2.0 ** 20 and int(first["growthTracker"]) == 0
    assert float(last["scale"]) == scales[-1]
    assert rhos(tmp_path / "t", digits) == [0.0, 0.0, 0.0]
    r = report(tmp_path / "t", digits, tmp_path)
    assert r["verdict"] == "Valid"
    validate(r, "auditReport")
    groups = [seg["state"]["scaler"] for seg in r["segments"]]  # the scaler is a state group, compared exactly
    assert len(groups) == 3 and all(g["exact"] and g["passed"] and g["distance"] == 0.0 for g in groups)


def test_skipped_steps_keep_the_committed_schedule(digits: Dataset, tmp_path: Path) -> None:
    """A step the scaler skips still uses (and records) the schedule's learning rate of that step: the recorder
    reads it at the step's first forward, since no optimizer.step() runs."""
    model, opt = _model()
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=6)
    scaler = torch.amp.GradScaler("cpu", **OVERFLOW)
    rec = Recorder(tmp_path / "t", model, opt, family="mlp", family_args=MLP, dataset=digits, steps_per_segment=3,
                   scaler=scaler, scheduler=sched)
    for _, (_, idx) in zip(range(9), epoch_batches(len(digits), 8, 10, 0), strict=False):
        rec.train_step(idx)
    rec.finish()
    m = load_manifest(tmp_path / "t")
    assert m["config"]["scheduler"]["every"] == 1
    assert m["segments"][0]["learningRates"] == [[0.0015], [0.0017500000000000003], [0.002]]
    assert rhos(tmp_path / "t", digits) == [0.0, 0.0, 0.0]


def test_fp16_with_clipping_and_accumulation_hand_loop_and_plain_api(digits: Dataset, tmp_path: Path) -> None:
    fp16_loop(tmp_path / "hand", digits, micro=2, max_norm=0.5)
    cfg = load_manifest(tmp_path / "hand")["config"]
    assert cfg["accumulation"] == {"microBatches": 2} and cfg["clip"]["maxNorm"] == 0.5
    assert rhos(tmp_path / "hand", digits) == [0.0, 0.0, 0.0]
    assert report(tmp_path / "hand", digits, tmp_path)["verdict"] == "Valid"

    # The plain-loop API runs the committed step itself (registry.pol.step.train_step) with the scaler.
    model, opt = _model()
    scaler = torch.amp.GradScaler("cpu", **OVERFLOW)
    rec = Recorder(tmp_path / "api", model, opt, family="mlp", family_args=MLP, dataset=digits, steps_per_segment=3,
                   scaler=scaler, clip={"type": "norm", "max_norm": 0.5}, accumulation=2)
    losses = [float(rec.train_step(idx)) for _, (_, idx) in zip(range(9), epoch_batches(len(digits), 16, 10, 0),
                                                                 strict=False)]
    rec.finish()
    assert all(np.isfinite(losses))
    assert load_manifest(tmp_path / "api")["config"]["precision"] == cfg["precision"]
    assert rhos(tmp_path / "api", digits) == [0.0, 0.0, 0.0]
    # same loop, same step: the hand loop and the API wrote the same final checkpoint
    last = load_manifest(tmp_path / "api")["checkpoints"][-1]
    assert last["ckptHash"] == load_manifest(tmp_path / "hand")["checkpoints"][-1]["ckptHash"]


@pytest.fixture(scope="module")
def honest(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("honest") / "t"
    fp16_loop(out, digits)
    return out


def _forge(honest: Path, out: Path, edit: Callable[[Path, dict[str, Any]], None]) -> Path:
    shutil.copytree(honest, out)
    edit(out, read_manifest(out))
    reseal_all(out)
    return out


def test_forged_scaler_state_in_a_checkpoint_is_invalid(digits: Dataset, honest: Path, tmp_path: Path) -> None:
    """The scale is its own state group, bound by the checkpoint hash: a prover who rewrites it (every digest
    resealed) is caught at the segment that ends there, compared exactly."""
    def edit(tdir: Path, m: dict[str, Any]) -> None:
        c = m["checkpoints"][2]
        ck = decode_checkpoint((tdir / c["path"]).read_bytes())
        assert ck.scaler is not None
        scaler = {"scale": ck.scaler["scale"] * 2, "growthTracker": ck.scaler["growthTracker"]}
        (tdir / c["path"]).write_bytes(encode_checkpoint(ck.index, ck.step, ck.model, ck.optimizer, scaler))

    tdir = _forge(honest, tmp_path / "f", edit)
    r = report(tdir, digits, tmp_path)
    assert r["verdict"] == "Invalid"
    assert r["reason"].startswith("segment 1 does not reproduce scaler.scale: scaler distance")


@pytest.mark.parametrize("key, value, reason", [
    ("growthInterval", 3, "does not reproduce scaler.growthTracker"),
    ("backoffFactor", 0.25, "replay moves them"),  # the all-skipped segment 0 now takes a step
    ("initScale", 2.0 ** 19, "is not the committed initScale"),
])
def test_forged_grad_scaler_options_are_invalid(digits: Dataset, honest: Path, tmp_path: Path, key: str,
                                                value: Any, reason: str) -> None:
    """The options are read by replay: changed in the config (configHash and every digest resealed), the
    replayed scale departs from the checkpointed one, or checkpoint 0 is not at the committed initScale."""
    def edit(tdir: Path, m: dict[str, Any]) -> None:
        m["config"]["precision"]["gradScaler"][key] = value
        write_manifest(tdir / MANIFEST_NAME, m)

    tdir = _forge(honest, tmp_path / "f", edit)
    assert read_manifest(tdir)["config"]["precision"]["gradScaler"][key] == value
    r = report(tdir, digits, tmp_path)
    assert r["verdict"] == "Invalid" and reason in r["reason"]


def test_scaler_state_and_config_must_agree(digits: Dataset, honest: Path, tmp_path: Path) -> None:
    """Dropping the gradScaler declaration (autocast bfloat16 instead), or the scaler state from checkpoints, is
    Invalid: the checkpoint holds state the config does not declare, or lacks state it does."""
    def no_decl(tdir: Path, m: dict[str, Any]) -> None:
        m["config"]["precision"] = {"autocast": "bfloat16", "matmulPrecision": "highest", "cudnnTf32": True}
        write_manifest(tdir / MANIFEST_NAME, m)

    def no_state(tdir: Path, m: dict[str, Any]) -> None:
        for c in m["checkpoints"]:
            ck = decode_checkpoint((tdir / c["path"]).read_bytes())
            (tdir / c["path"]).write_bytes(encode_checkpoint(ck.index, ck.step, ck.model, ck.optimizer))

    for name, edit in (("decl", no_decl), ("state", no_state)):
        tdir = _forge(honest, tmp_path / name, edit)
        r = report(tdir, digits, tmp_path)
        assert r["verdict"] == "Invalid", name
        assert "GradScaler state but the config declares" in r["reason"], (name, r["reason"])


def _one_line_refusal(match: str, fn: Callable[[], Any]) -> None:
    with pytest.raises(RecorderError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


def test_fp16_loops_the_recorder_cannot_describe_are_refused(digits: Dataset, tmp_path: Path) -> None:
    # fp16 autocast with a scaler the recorder was not given
    _one_line_refusal("float16 cannot be replayed without its GradScaler",
                      lambda: fp16_loop(tmp_path / "a", digits, declare=False))
    # a declared scaler the loop never uses (plain backward and optimizer.step)
    _one_line_refusal("GradScaler was not used once in step 0",
                      lambda: fp16_loop(tmp_path / "b", digits, use_scaler=False))
    # a declared scaler on a loop that runs without autocast
    _one_line_refusal("told autocast='float16' but the forward ran with autocast None",
                      lambda: fp16_loop(tmp_path / "c", digits, amp=False))
    # scaler options changed mid-run

    def change(n: int, scaler: torch.amp.GradScaler) -> None:
        if n == 2:
            scaler.set_growth_factor(4.0)

    _one_line_refusal("GradScaler's options changed", lambda: fp16_loop(tmp_path / "d", digits, on_step=change))
    # a disabled scaler, one already used, one for bfloat16, fp16 declared with no scaler
    model, opt = _model()
    kw: dict[str, Any] = {"family": "mlp", "family_args": MLP, "dataset": digits, "steps_per_segment": 3}
    _one_line_refusal("GradScaler is disabled", lambda: Recorder(
        tmp_path / "e", model, opt, scaler=torch.amp.GradScaler("cpu", enabled=False), **kw))
    used = torch.amp.GradScaler("cpu")
    used.scale(torch.ones(()))
    used.update(1024.0)
    _one_line_refusal("create the GradScaler fresh", lambda: Recorder(tmp_path / "f", model, opt, scaler=used, **kw))
    _one_line_refusal("recorded only with autocast='float16'", lambda: Recorder(
        tmp_path / "g", model, opt, scaler=torch.amp.GradScaler("cpu"), autocast="bfloat16", **kw))
    _one_line_refusal("cannot be replayed without its GradScaler",
                      lambda: Recorder(tmp_path / "h", model, opt, autocast="float16", **kw))


def test_grad_scaler_declarations_are_checked() -> None:
    base = {"autocast": "float16", "matmulPrecision": "highest", "cudnnTf32": True}
    good = {"initScale": 65536.0, "growthFactor": 2.0, "backoffFactor": 0.5, "growthInterval": 2000}
    assert precision_spec({**base, "gradScaler": good})["gradScaler"] == good
    for bad in ({**good, "initScale": 0}, {**good, "growthFactor": 1.0}, {**good, "backoffFactor": 1.0},
                {**good, "growthInterval": 0}, {**good, "growthInterval": 2.5}, {**good, "extra": 1},
                {k: v for k, v in good.items() if k != "initScale"}, "on"):
        with pytest.raises(TranscriptError):
            precision_spec({**base, "gradScaler": bad})
    with pytest.raises(TranscriptError, match="gradScaler is required with autocast float16"):
        precision_spec(base)
    with pytest.raises(TranscriptError, match="allowed only with it"):
        precision_spec({**base, "autocast": "bfloat16", "gradScaler": good})
    with pytest.raises(TranscriptError, match="needs float32 parameters"):
        StepSpec.of({"loss": "mse", "dtype": "float16", "precision": {**base, "gradScaler": good}})
