"""Proof-of-Learning transcripts: recording, digests, determinism, exact replay, forgeries and hostile input."""

from __future__ import annotations

import io
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from registry.core.hashing import as_hash, chain_head, config_hash, sha256_file, to_hex, weights_hash
from registry.core.merkle import SEGMENT_LEAF_TYPES, StandardMerkleTree, segment_leaf, verify
from registry.pol import (
    Recorder,
    RecorderError,
    TranscriptError,
    check_segment,
    load_manifest,
    read_checkpoint,
    replay_segment,
    segment_distance,
    segment_tree,
)
from registry.pol.batches import epoch_batches
from registry.pol.checkpoint import copy_optimizer_state, safetensors_bytes
from registry.pol.replay import load_segment_checkpoint, parameter_names
from registry.pol.rng import step_seed
from registry.pol.train import train
from registry.pol.transcript import (
    TranscriptSummary,
    batches_path,
    checkpoint_path,
    validate_manifest,
    write_manifest,
)
from registry.spec.datasets import Dataset, build_builtin
from registry.spec.models import build_model

MLP = {"in_features": 64, "hidden": [32], "out_features": 10, "dropout": 0.2}


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return build_builtin("digits", tmp_path_factory.mktemp("digits"))


def record(out: Path, ds: Dataset, *, steps: int = 25, k: int = 10, seed: int = 0, rng_seed: int = 0,
           family: str = "mlp",
           args: dict[str, Any] | None = None, optimizer: str = "sgd", scheduler: bool = False,
           consume_rng: Callable[[int], bool] | None = None, device: str = "cpu", batch: int = 16,
           ) -> tuple[TranscriptSummary, torch.nn.Module]:
    """A training loop the way a user writes it, plus the recorder's lines."""
    args = MLP if args is None else args
    torch.manual_seed(seed)
    model = build_model(family, args).to(device)
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.05)
    elif optimizer == "nesterov":
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3)
    elif optimizer == "amsgrad":
        opt = torch.optim.Adam(model.parameters(), lr=3e-3, amsgrad=True, weight_decay=1e-3)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.7) if scheduler else None
    rec = Recorder(out, model, opt, family=family, family_args=args, dataset=ds, steps_per_segment=k,
                   config={"seed": seed}, scheduler=sched, rng_seed=rng_seed)
    model.train()
    for n, (_, idx) in enumerate(epoch_batches(len(ds), batch, 10, seed)):
        if n == steps:
            break
        if consume_rng is not None and consume_rng(n):
            torch.randperm(100)  # like DataLoader(shuffle=True) starting an epoch: global RNG used between steps
        x, y = ds.batch(idx, device)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        opt.zero_grad()
        rec.step(torch.from_numpy(idx) if n % 2 else idx)
    return rec.finish(), model


def rhos(tdir: Path, ds: Dataset, device: str = "cpu") -> list[float]:
    m = load_manifest(tdir)
    return [check_segment(tdir, i, ds, manifest=m, device=device).rho for i in range(m["numSegments"])]


def reseal(tdir: Path) -> None:
    """Recomputes the manifest's digests after files were altered: what a forger would publish."""
    m = json.loads((tdir / "manifest.json").read_text())
    for c in m["checkpoints"]:
        c["ckptHash"] = to_hex(sha256_file(tdir / c["path"]))
    for s in m["segments"]:
        s["batchesHash"] = to_hex(sha256_file(tdir / s["batches"]))
    m["chainHead"] = to_hex(chain_head([as_hash(c["ckptHash"]) for c in m["checkpoints"]]))
    m["segmentRoot"] = to_hex(segment_tree(m).root)
    write_manifest(tdir / "manifest.json", validate_manifest(m))


@pytest.fixture(scope="module")
def honest(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TranscriptSummary, Any]:
    out = tmp_path_factory.mktemp("honest") / "t"
    summary, model = record(out, digits, steps=25, k=10)
    return out, summary, model


def test_manifest_and_digests(honest: tuple[Path, TranscriptSummary, Any], digits: Dataset) -> None:
    tdir, summary, model = honest
    m = load_manifest(tdir)
    assert summary.manifest_path == tdir / "manifest.json"
    assert (summary.num_segments, summary.steps_per_segment, summary.num_steps) == (3, 10, 25)
    assert [(s["startStep"], s["endStep"]) for s in m["segments"]] == [(0, 10), (10, 20), (20, 25)]  # short last
    assert [c["step"] for c in m["checkpoints"]] == [0, 10, 20, 25]
    assert m["format"] == "proofreg-pol-transcript/1" and m["batchSize"] == 16
    cfg = m["config"]
    assert cfg["model"] == {"family": "mlp", "args": MLP} and cfg["loss"] == "cross_entropy"
    assert cfg["optimizer"]["type"] == "SGD" and cfg["optimizer"]["paramGroups"][0]["momentum"] == 0.9
    assert cfg["seed"] == 0 and cfg["stepsPerSegment"] == 10 and cfg["batchSize"] == 16
    assert summary.config_hash == config_hash(cfg) == as_hash(m["configHash"])
    assert summary.dataset_root == digits.root == as_hash(m["dataset"]["datasetRoot"])
    assert m["dataset"] == {"name": "digits", "cid": None, "datasetRoot": to_hex(digits.root), "numExamples": 1797}

    ckpt_hashes = []
    for c in m["checkpoints"]:
        assert sha256_file(tdir / c["path"]) == as_hash(c["ckptHash"])
        ckpt_hashes.append(as_hash(c["ckptHash"]))
    for s in m["segments"]:
        assert sha256_file(tdir / s["batches"]) == as_hash(s["batchesHash"])
        batches = np.load(tdir / s["batches"], allow_pickle=False)
        assert batches.dtype == np.int64 and batches.shape == (s["endStep"] - s["startStep"], 16)
        assert s["learningRates"] == [[0.1]] * batches.shape[0]
        assert s["updateNorm"] > 0 and s["epoch"] == 0
    assert summary.chain_head == chain_head(ckpt_hashes)

    values = [(i, ckpt_hashes[i], ckpt_hashes[i + 1], as_hash(s["batchesHash"])) for i, s in enumerate(m["segments"])]
    tree = StandardMerkleTree.of(values, SEGMENT_LEAF_TYPES)
    assert tree.root == summary.segment_root
    for i, v in enumerate(values):
        assert verify(summary.segment_root, segment_leaf(*v), tree.proof(i))
    assert not verify(summary.segment_root, segment_leaf(0, ckpt_hashes[0], ckpt_hashes[2], values[0][3]),
                      tree.proof(0))

    final = read_checkpoint(tdir / m["checkpoints"][-1]["path"])
    assert summary.final_weights_hash == weights_hash(model.state_dict()) == weights_hash(final.model)
    first = read_checkpoint(tdir / m["checkpoints"][0]["path"])
    assert first.step == 0 and first.optimizer["state"] == {}  # checkpoint 0: before any training
    assert summary.to_json()["segmentRoot"] == m["segmentRoot"]


def test_same_seed_same_transcript(digits: Dataset, tmp_path: Path,
                                   honest: tuple[Path, TranscriptSummary, Any]) -> None:
    _, first, _ = honest
    again, _ = record(tmp_path / "again", digits, steps=25, k=10)
    assert (again.segment_root, again.chain_head, again.final_weights_hash, again.config_hash) == (
        first.segment_root, first.chain_head, first.final_weights_hash, first.config_hash)
    a, b = load_manifest(first.manifest_path.parent), load_manifest(tmp_path / "again")
    assert [c["ckptHash"] for c in a["checkpoints"]] == [c["ckptHash"] for c in b["checkpoints"]]
    other, _ = record(tmp_path / "other", digits, steps=25, k=10, seed=1)
    assert other.final_weights_hash != first.final_weights_hash and other.segment_root != first.segment_root


def test_honest_segments_replay_exactly(honest: tuple[Path, TranscriptSummary, Any], digits: Dataset) -> None:
    tdir, _, _ = honest
    assert rhos(tdir, digits) == [0.0, 0.0, 0.0]
    # Re-using one loaded checkpoint for two replays gives the same result (optimizer state is copied first).
    m = load_manifest(tdir)
    ck = load_segment_checkpoint(tdir, m, 1)
    before = {k: v.clone() for k, v in ck.optimizer["state"][0].items()}
    w1 = replay_segment(tdir, 1, digits, manifest=m, checkpoint=ck)
    w2 = replay_segment(tdir, 1, digits, manifest=m, checkpoint=ck)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert all(torch.equal(before[k], ck.optimizer["state"][0][k]) for k in before)


def test_rng_used_between_steps_schedulers_and_adam_replay_exactly(digits: Dataset, tmp_path: Path) -> None:
    record(tmp_path / "t", digits, steps=30, k=10, scheduler=True, consume_rng=lambda n: n % 7 == 3)
    m = load_manifest(tmp_path / "t")
    assert m["config"]["rng"] == {"scheme": "proofreg/pol-rng/1", "seed": 0}
    lrs = [lr[0] for s in m["segments"] for lr in s["learningRates"]]
    assert lrs[0] == 0.1 and lrs[4] == pytest.approx(0.07) and len(set(lrs)) > 3
    assert m["config"]["scheduler"] == {"type": "StepLR", "args": {"gamma": 0.7, "step_size": 4}, "every": 1}
    assert rhos(tmp_path / "t", digits) == [0.0, 0.0, 0.0]

    record(tmp_path / "adam", digits, steps=12, k=5, optimizer="adam")
    assert rhos(tmp_path / "adam", digits) == [0.0, 0.0, 0.0]


def test_randomness_follows_the_committed_seed(digits: Dataset, tmp_path: Path) -> None:
    assert step_seed(0, 0) == 8636557844784450852 and step_seed(7, 123456) == 2817440235167129560
    a, _ = record(tmp_path / "a", digits, steps=10, k=5)
    b, _ = record(tmp_path / "b", digits, steps=10, k=5, rng_seed=7)
    ma, mb = load_manifest(tmp_path / "a"), load_manifest(tmp_path / "b")
    assert ma["checkpoints"][0]["ckptHash"] == mb["checkpoints"][0]["ckptHash"]  # same init, other dropout
    assert a.final_weights_hash != b.final_weights_hash and a.config_hash != b.config_hash
    assert rhos(tmp_path / "b", digits) == [0.0, 0.0]
    # Claiming another seed (configHash recomputed) does not replay: the draws are bound to the seed.
    mb["config"]["rng"]["seed"] = 8
    mb["configHash"] = to_hex(config_hash(mb["config"]))
    write_manifest(tmp_path / "b" / "manifest.json", mb)
    assert min(rhos(tmp_path / "b", digits)) > 0.01


def test_batchnorm_family_replays_exactly(digits: Dataset, tmp_path: Path) -> None:
    args = {"width": 2, "in_channels": 1}
    record(tmp_path / "t", digits, steps=6, k=3, family="resnet20", args=args, batch=8)
    assert rhos(tmp_path / "t", digits) == [0.0, 0.0]


def test_tampered_batches_are_caught(honest: tuple[Path, TranscriptSummary, Any], digits: Dataset,
                                     tmp_path: Path) -> None:
    tdir = tmp_path / "forged"
    shutil.copytree(honest[0], tdir)
    batches = np.load(tdir / batches_path(1))
    batches[3] = (batches[3] + 1) % len(digits)  # one of ten batches replaced
    np.save(tdir / batches_path(1), batches)
    with pytest.raises(TranscriptError, match="batchesHash"):
        check_segment(tdir, 1, digits)
    reseal(tdir)  # a consistent forgery: hashes, chain and root all recomputed
    r = rhos(tdir, digits)
    assert r[0] == 0.0 and r[2] == 0.0 and r[1] > 0.01


def test_spliced_checkpoint_is_caught(honest: tuple[Path, TranscriptSummary, Any], digits: Dataset,
                                      tmp_path: Path) -> None:
    other = tmp_path / "other"
    record(other, digits, steps=25, k=10, seed=5)
    tdir = tmp_path / "forged"
    shutil.copytree(honest[0], tdir)
    shutil.copy(other / checkpoint_path(2), tdir / checkpoint_path(2))
    reseal(tdir)
    r = rhos(tdir, digits)
    assert r[0] == 0.0 and r[1] > 0.5


def test_distance_definition() -> None:
    w0 = {"a": torch.zeros(2)}
    w1 = {"a": torch.tensor([3.0, 4.0])}
    d = segment_distance({"a": torch.tensor([3.0, 4.5])}, w1, w0, ["a"])
    assert d.update_norm == 5.0 and d.rho == pytest.approx(0.1) and d.linf == pytest.approx(0.5)
    assert segment_distance(w1, w1, w0, ["a"]).to_json() == {"rho": 0.0, "linf": 0.0, "cosine": 0.0,
                                                              "updateNorm": 5.0, "errorNorm": 0.0}


# --- what the recorder refuses ----------------------------------------------------------------------------


def _setup(tmp_path: Path, ds: Dataset, **kw: Any) -> tuple[torch.nn.Module, torch.optim.Optimizer, Recorder]:
    torch.manual_seed(0)
    model = build_model("mlp", MLP)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rec = Recorder(tmp_path / "t", model, opt, family="mlp", family_args=MLP, dataset=ds, steps_per_segment=4, **kw)
    return model, opt, rec


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, ds: Dataset, idx: np.ndarray, *,
          forwards: int = 1, steps: int = 1) -> None:
    for _ in range(forwards):
        x, y = ds.batch(idx)
        F.cross_entropy(model(x), y).backward()
    for _ in range(steps):
        opt.step()
    opt.zero_grad()


def test_gradient_accumulation_and_other_unreplayable_loops_are_refused(digits: Dataset, tmp_path: Path) -> None:
    idx = np.arange(8, dtype=np.int64)
    model, opt, rec = _setup(tmp_path / "a", digits)
    _step(model, opt, digits, idx, forwards=2)
    with pytest.raises(RecorderError, match="2 training-mode forwards"):
        rec.step(idx)
    rec.close()

    model, opt, rec = _setup(tmp_path / "b", digits)
    _step(model, opt, digits, idx, steps=0)
    with pytest.raises(RecorderError, match="ran 0 times"):
        rec.step(idx)
    rec.close()

    model, opt, rec = _setup(tmp_path / "c", digits)
    _step(model, opt, digits, idx)
    rec.step(idx, lr=0.1)
    _step(model, opt, digits, idx[:4])
    with pytest.raises(RecorderError, match="batch size changed"):
        rec.step(idx[:4])
    rec.close()

    model, opt, rec = _setup(tmp_path / "d", digits)
    opt.param_groups[0]["momentum"] = 0.5  # e.g. OneCycleLR cycling momentum
    _step(model, opt, digits, idx)
    with pytest.raises(RecorderError, match="only the learning rate may vary"):
        rec.step(idx)
    rec.close()

    model, opt, rec = _setup(tmp_path / "e", digits)
    _step(model, opt, digits, idx)
    with pytest.raises(RecorderError, match="differs"):
        rec.step(idx, lr=0.2)
    rec.close()

    model, opt, rec = _setup(tmp_path / "f", digits)
    with pytest.raises(RecorderError, match="no steps"):
        rec.finish()
    model, opt, rec = _setup(tmp_path / "g", digits)
    _step(model, opt, digits, idx)
    rec.step(idx)
    assert rec.finish().num_segments == 1
    with pytest.raises(RecorderError, match="already holds"):
        _setup(tmp_path / "g", digits)


@pytest.mark.parametrize("optimizer", ["adamw", "nesterov", "amsgrad"])
def test_adamw_and_optimizer_options_replay_exactly(optimizer: str, digits: Dataset, tmp_path: Path) -> None:
    """AdamW used to record and then be Invalid for every run: replay passed `decoupled_weight_decay` (a key
    AdamW sets itself) back to its constructor. Honest runs replay to rho 0; a tampered moment does not."""
    record(tmp_path / "t", digits, steps=12, k=4, optimizer=optimizer)
    m = load_manifest(tmp_path / "t")
    assert m["config"]["optimizer"]["type"] == {"adamw": "AdamW", "nesterov": "SGD", "amsgrad": "Adam"}[optimizer]
    assert rhos(tmp_path / "t", digits) == [0.0, 0.0, 0.0]
    # The verifier's whole verdict (every state group compared, not only the weights): Valid, exit code 0.
    from click.testing import CliRunner

    from verifier.cli import main as verifier_main

    res = CliRunner().invoke(verifier_main, ["check", str(tmp_path / "t"), "--all", "--dataset", str(digits.path),
                                             "--report", str(tmp_path / "r.json"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r.json").read_text())["verdict"] == "Valid"


def test_optimizer_configs_that_do_not_rebuild_exactly_are_refused(digits: Dataset, tmp_path: Path) -> None:
    from registry.pol.config import rebuild_optimizer

    record(tmp_path / "t", digits, steps=8, k=4, optimizer="adamw")
    m = load_manifest(tmp_path / "t")
    spec = json.loads(json.dumps(m["config"]["optimizer"]))
    spec["defaults"]["decoupled_weight_decay"] = False  # claims AdamW without its decoupled decay: refused
    with pytest.raises(TranscriptError, match="does not rebuild as committed"):
        rebuild_optimizer({"optimizer": spec}, build_model("mlp", MLP))
    spec = json.loads(json.dumps(m["config"]["optimizer"]))
    spec["defaults"]["not_an_option"] = 1
    with pytest.raises(TranscriptError, match="not_an_option"):
        rebuild_optimizer({"optimizer": spec}, build_model("mlp", MLP))
    # The same at record time, for an option the constructor does not take (set behind its back).
    model = build_model("mlp", MLP)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt.defaults["not_an_option"] = 1
    with pytest.raises(RecorderError, match="does not rebuild as committed: option 'not_an_option'"):
        Recorder(tmp_path / "r", model, opt, family="mlp", family_args=MLP, dataset=digits, steps_per_segment=2)


def test_models_and_optimizers_verifiers_cannot_rebuild_are_refused(digits: Dataset, tmp_path: Path) -> None:
    model = build_model("mlp", {**MLP, "hidden": [33]})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RecorderError, match="does not match family"):
        Recorder(tmp_path / "a", model, opt, family="mlp", family_args=MLP, dataset=digits, steps_per_segment=2)
    model = build_model("mlp", MLP)
    with pytest.raises(RecorderError, match="not supported"):
        Recorder(tmp_path / "b", model, torch.optim.LBFGS(model.parameters()), family="mlp", family_args=MLP,
                 dataset=digits, steps_per_segment=2)
    with pytest.raises(RecorderError, match="unknown model family"):
        Recorder(tmp_path / "c", model, torch.optim.SGD(model.parameters(), lr=0.1), family="gpt", family_args={},
                 dataset=digits, steps_per_segment=2)
    with pytest.raises(RecorderError, match="set by the recorder"):
        Recorder(tmp_path / "d", model, torch.optim.SGD(model.parameters(), lr=0.1), family="mlp", family_args=MLP,
                 dataset=digits, steps_per_segment=2, config={"loss": "mse"})


def test_writer_errors_reach_the_training_thread(digits: Dataset, tmp_path: Path) -> None:
    model, opt, rec = _setup(tmp_path, digits)
    ckdir = tmp_path / "t" / "checkpoints"
    shutil.rmtree(ckdir)
    ckdir.write_text("not a directory")  # every checkpoint write now fails in the writer thread
    idx = np.arange(8, dtype=np.int64)
    with pytest.raises(RecorderError, match="writing the transcript failed") as info:
        for _ in range(40):
            _step(model, opt, digits, idx)
            rec.step(idx)
        rec.finish()
    assert isinstance(info.value.__cause__, OSError)
    assert not (tmp_path / "t" / "manifest.json").exists()


# --- hostile transcripts ------------------------------------------------------------------------------------


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def test_pickle_in_place_of_a_checkpoint_fails_cleanly(honest: tuple[Path, TranscriptSummary, Any],
                                                       digits: Dataset, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"model": _Exploit(str(marker))})
    buf = io.BytesIO()
    torch.save({"x": _Exploit(str(marker))}, buf)
    for i, data in enumerate([payload, buf.getvalue(), b"", b"\xff" * 16]):
        tdir = tmp_path / f"t{i}"
        shutil.copytree(honest[0], tdir)
        (tdir / checkpoint_path(1)).write_bytes(data)
        with pytest.raises(TranscriptError, match="hash"):
            check_segment(tdir, 1, digits)
        reseal(tdir)  # even with matching hashes
        with pytest.raises(TranscriptError):
            check_segment(tdir, 1, digits)
        with pytest.raises(TranscriptError):
            read_checkpoint(tdir / checkpoint_path(1))
    assert not marker.exists()


def test_hostile_batches_and_manifests_fail_cleanly(honest: tuple[Path, TranscriptSummary, Any], digits: Dataset,
                                                    tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    tdir = tmp_path / "t"
    shutil.copytree(honest[0], tdir)
    np.save(tdir / batches_path(0), np.array([_Exploit(str(marker))], dtype=object), allow_pickle=True)
    reseal(tdir)
    with pytest.raises(TranscriptError, match=r"not a plain \.npy"):
        replay_segment(tdir, 0, digits)
    np.save(tdir / batches_path(0), np.full((10, 16), 10**9, dtype=np.int64))
    reseal(tdir)
    with pytest.raises(TranscriptError, match="outside the dataset"):
        replay_segment(tdir, 0, digits)
    assert not marker.exists()

    m = json.loads((honest[0] / "manifest.json").read_text())
    m["checkpoints"][1]["path"] = "../../../etc/passwd"
    with pytest.raises(TranscriptError, match="non-canonical"):
        validate_manifest(m)
    m = json.loads((honest[0] / "manifest.json").read_text())
    m["config"]["optimizer"]["type"] = "os.system"
    with pytest.raises(TranscriptError, match="configHash"):
        validate_manifest(m)
    m["configHash"] = to_hex(config_hash(m["config"]))
    (tdir / "manifest.json").write_text(json.dumps(m))
    np.save(tdir / batches_path(0), np.load(honest[0] / batches_path(0)))
    with pytest.raises(TranscriptError, match="optimizer"):
        replay_segment(tdir, 0, digits, manifest=m)
    m["segmentRoot"] = "0x" + "00" * 32
    with pytest.raises(TranscriptError, match="segmentRoot"):
        validate_manifest(m)
    with pytest.raises(TranscriptError):
        load_manifest(tmp_path / "missing")


def test_safetensors_writer_is_read_by_the_official_parser(tmp_path: Path) -> None:
    from safetensors import safe_open

    tensors = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.tensor(7, dtype=torch.int64),
               "e": torch.zeros(0), "h": torch.ones(3, dtype=torch.bfloat16), "m": torch.tensor([True, False])}
    data = safetensors_bytes(tensors, {"proofreg": "{}"})
    (tmp_path / "x.safetensors").write_bytes(data)
    with safe_open(str(tmp_path / "x.safetensors"), "pt") as f:
        assert f.metadata() == {"proofreg": "{}"}
        for k, t in tensors.items():
            assert torch.equal(f.get_tensor(k), t)
    assert safetensors_bytes(dict(reversed(tensors.items())), {"proofreg": "{}"}) == data


def test_copy_optimizer_state_does_not_alias() -> None:
    state = {"state": {0: {"momentum_buffer": torch.ones(3), "step": 4}}, "param_groups": [{"params": [0]}]}
    copy = copy_optimizer_state(state)
    copy["state"][0]["momentum_buffer"].add_(1)
    assert torch.equal(state["state"][0]["momentum_buffer"], torch.ones(3))


# --- the built-in training run, and CUDA ------------------------------------------------------------------------


def test_builtin_training_run(digits: Dataset, tmp_path: Path) -> None:
    result = train(tmp_path, dataset=digits, epochs=1, max_steps=30)
    m = load_manifest(result.transcript_dir)
    assert m["numSteps"] == 30 and m["config"]["model"]["args"]["hidden"] == [128]
    assert result.accuracy > 0.5
    assert check_segment(result.transcript_dir, 2, digits, manifest=m).rho == 0.0
    assert parameter_names(m["config"]) == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_recording_replays_exactly_on_cuda(digits: Dataset, tmp_path: Path) -> None:
    summary, model = record(tmp_path / "t", digits, steps=25, k=10, device="cuda",
                            consume_rng=lambda n: n % 7 == 3)
    m = load_manifest(tmp_path / "t")
    assert m["environment"]["device"].startswith("cuda")
    assert summary.final_weights_hash == weights_hash(model.state_dict())
    assert rhos(tmp_path / "t", digits, device="cuda") == [0.0, 0.0, 0.0]
    # Replayed on other hardware (no dropout, whose masks come from a different generator): small, not zero.
    record(tmp_path / "nodrop", digits, steps=25, k=10, device="cuda", args={**MLP, "dropout": 0.0})
    assert max(rhos(tmp_path / "nodrop", digits, device="cpu")) < 0.01


def test_recorder_refuses_what_verifiers_cannot_derive_from_the_config(digits: Dataset, tmp_path: Path) -> None:
    """Learning rates off the committed schedule, irregular or unsupported schedulers, epochs that are not
    step // stepsPerEpoch, and an init seed that does not reproduce the model: one-line errors at record time."""
    def setup(name: str, **kw: Any) -> tuple[Any, Any, Recorder]:
        torch.manual_seed(0)
        model = build_model("mlp", MLP)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = kw.pop("sched", None)
        s = sched(opt) if sched is not None else None
        return model, opt, Recorder(tmp_path / name, model, opt, family="mlp", family_args=MLP, dataset=digits,
                                    steps_per_segment=2, scheduler=s, **kw)

    def steps(model: Any, opt: Any, rec: Recorder, n: int, between: Callable[[int], None] = lambda t: None,
              epoch: int | None = None) -> None:
        for t, (_, idx) in enumerate(epoch_batches(len(digits), 16, 1, 0)):
            if t == n:
                return
            between(t)
            F.cross_entropy(model(digits.batch(idx)[0]), digits.batch(idx)[1]).backward()
            opt.step()
            opt.zero_grad()
            rec.step(idx, epoch=epoch)

    model, opt, rec = setup("lr")
    with pytest.raises(RecorderError, match="no scheduler was given"):
        steps(model, opt, rec, 4, between=lambda t: [g.update(lr=0.0) for g in opt.param_groups] if t == 2 else None)
    rec.close()
    model, opt, rec = setup("irregular", sched=lambda o: torch.optim.lr_scheduler.StepLR(o, 1, 0.5))
    sched = rec._scheduler
    steps(model, opt, rec, 5, between=lambda t: sched.step() if t in (1, 4) else None)
    with pytest.raises(RecorderError, match="stepped irregularly"):
        rec.finish()
    rec.close()
    with pytest.raises(RecorderError, match="LambdaLR is not supported"):
        setup("lambda", sched=lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1.0))
    model, opt, rec = setup("epoch")
    with pytest.raises(RecorderError, match="stepsPerEpoch"):
        steps(model, opt, rec, 1, epoch=3)
    rec.close()
    with pytest.raises(RecorderError, match="not family 'mlp' initialized on the CPU with seed 5"):
        setup("seed", init_seed=5)
    # a model no seed reproduces is recorded as external weights; init_seed=0 reproduces this one
    _, _, rec = setup("ok", init_seed=0)
    assert rec._init["origin"] == "seed" and rec._init["seed"] == 0
    rec.close()


def _undeclared_loop(out: Path, ds: Dataset, what: str, *, self_check: bool = True) -> TranscriptSummary:
    """A loop that does something its Recorder was not told about."""
    torch.manual_seed(0)
    model = build_model("mlp", MLP)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rec = Recorder(out, model, opt, family="mlp", family_args=MLP, dataset=ds, steps_per_segment=4,
                   self_check=self_check)
    model.train()
    for n, (_, idx) in enumerate(epoch_batches(len(ds), 16, 10, 0)):
        if n == 8:
            break
        x, y = ds.batch(idx)
        logits = model(x)
        loss = F.mse_loss(logits, F.one_hot(y, 10).float()) if what == "mse" else F.cross_entropy(logits, y)
        loss.backward()
        if what == "clip":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
        if what == "noise":
            for p in model.parameters():
                assert p.grad is not None
                p.grad.add_(torch.randn_like(p.grad), alpha=1e-2)  # global RNG, outside the forward
        opt.step()
        opt.zero_grad()
        rec.step(idx)
    return rec.finish()


@pytest.mark.parametrize("what", ["clip", "mse", "noise"])
def test_self_check_refuses_loops_that_do_not_replay(what: str, digits: Dataset, tmp_path: Path) -> None:
    """Undeclared clipping, another loss, gradient noise from the global RNG: each used to record silently and
    be Invalid at verification. The recorder now replays the first and last segments itself and refuses."""
    reason = r"does not replay: segment 0 diverges in (weights|optim\.\w+).*gradient clipping"
    with pytest.raises(RecorderError, match=reason):
        _undeclared_loop(tmp_path / "t", digits, what)
    assert not (tmp_path / "t" / "manifest.json").exists()  # nothing publishable is left behind


def test_self_check_can_be_turned_off_and_then_the_verifier_catches_it(digits: Dataset, tmp_path: Path) -> None:
    _undeclared_loop(tmp_path / "t", digits, "clip", self_check=False)
    assert rhos(tmp_path / "t", digits)[0] > 1e-3
    _undeclared_loop(tmp_path / "ok", digits, "none")  # the same loop, declared honestly: records
    assert rhos(tmp_path / "ok", digits) == [0.0, 0.0]


def _clipping_loop(out: Path, ds: Dataset, *, clips: str | None, declared: dict[str, Any] | None) -> None:
    torch.manual_seed(0)
    model = build_model("mlp", MLP)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rec = Recorder(out, model, opt, family="mlp", family_args=MLP, dataset=ds, steps_per_segment=4, clip=declared)
    model.train()
    for n, (_, idx) in enumerate(epoch_batches(len(ds), 16, 10, 0)):
        if n == 8:
            break
        x, y = ds.batch(idx)
        F.cross_entropy(model(x), y).backward()
        if clips == "norm":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
        elif clips == "value":
            torch.nn.utils.clip_grad_value_(model.parameters(), 0.002)
        opt.step()
        opt.zero_grad()
        rec.step(idx)
    rec.finish()


@pytest.mark.parametrize("kind,declared", [("norm", {"type": "norm", "max_norm": 0.05}),
                                           ("value", {"type": "value", "clip_value": 0.002})])
def test_declared_gradient_clipping_replays_exactly(kind: str, declared: dict[str, Any], digits: Dataset,
                                                    tmp_path: Path) -> None:
    _clipping_loop(tmp_path / "t", digits, clips=kind, declared=declared)
    m = load_manifest(tmp_path / "t")
    assert m["config"]["clip"]["type"] == kind
    assert rhos(tmp_path / "t", digits) == [0.0, 0.0]
    # Declared but not done, or done with another bound: the self-check refuses at record time.
    with pytest.raises(RecorderError, match="does not replay"):
        _clipping_loop(tmp_path / "u", digits, clips=None, declared=declared)


def test_clip_declarations_are_checked() -> None:
    from registry.pol.config import clip_spec

    assert clip_spec({"type": "norm", "max_norm": 1}) == {"type": "norm", "maxNorm": 1.0, "normType": 2.0}
    for bad in ({"type": "norm"}, {"type": "norm", "maxNorm": -1}, {"type": "value", "clipValue": float("nan")},
                {"type": "global"}, {"type": "value", "clipValue": 1, "maxNorm": 2}, "norm"):
        with pytest.raises(TranscriptError):
            clip_spec(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("loss", ["mse", "bce_with_logits"])
def test_regression_and_multi_label_losses_replay_exactly(loss: str, tmp_path: Path) -> None:
    from registry.spec.datasets import build_dataset

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (rng.normal(size=(64, 3)) if loss == "mse" else rng.random(size=(64, 3)) < 0.4).astype(np.float32)
    ds = build_dataset(tmp_path / "ds", "toy", x, y)
    args = {"in_features": 8, "hidden": [16], "out_features": 3}
    torch.manual_seed(0)
    model = build_model("mlp", args)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    fn = F.mse_loss if loss == "mse" else F.binary_cross_entropy_with_logits
    rec = Recorder(tmp_path / "t", model, opt, family="mlp", family_args=args, dataset=ds, steps_per_segment=3,
                   loss=loss)
    for n, (_, idx) in enumerate(epoch_batches(len(ds), 8, 10, 0)):
        if n == 6:
            break
        xb, yb = ds.batch(idx)
        fn(model(xb), yb).backward()
        opt.step()
        opt.zero_grad()
        rec.step(idx)
    rec.finish()
    assert load_manifest(tmp_path / "t")["config"]["loss"] == loss
    assert rhos(tmp_path / "t", ds) == [0.0, 0.0]
