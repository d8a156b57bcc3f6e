"""Random augmentation as data (registry.pol.augment): declared in the config, drawn from a generator only the
committed seed and the step drive, applied by the committed step; such runs replay to rho 0 and are Valid.
A loop that augments with its own randomness is refused when it finishes; a config that drops or changes the
declared augmentation is Invalid."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from registry.pol import Recorder, RecorderError, TranscriptError, load_manifest
from registry.pol.augment import augment, augment_spec, augment_step
from registry.pol.batches import epoch_batches
from registry.pol.transcript import MANIFEST_NAME, write_manifest
from registry.spec.datasets import Dataset, build_builtin, build_dataset
from registry.spec.models import build_model
from tests.forgery import read_manifest, reseal_all
from tests.test_pol_step import rhos, verdict

CNN = {"in_channels": 1, "image_size": 8, "channels": [4, 8], "hidden": 16, "num_classes": 10}
OPS = [{"type": "hflip", "p": 0.5}, {"type": "randomCrop", "padding": 1}, {"type": "gaussianNoise", "std": 0.05}]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = tmp_path_factory.mktemp("aug")
    x, y = build_builtin("digits", root / "digits").arrays()
    return build_dataset(root / "img", "digits-8x8", x.reshape(-1, 1, 8, 8), y)


def _record(out: Path, ds: Dataset, *, hand: str | None = None, steps: int = 8, **kw: Any) -> None:
    torch.manual_seed(0)
    model = build_model("cnn", CNN)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rec = Recorder(out, model, opt, family="cnn", family_args=CNN, dataset=ds, steps_per_segment=4, **kw)
    try:
        for n, (_, idx) in enumerate(epoch_batches(len(ds), 16, 10, 0)):
            if n == steps:
                break
            if hand is None:
                rec.train_step(idx)
                continue
            if hand == "rec.batch":
                x, y = rec.batch(idx)
            else:  # augmentation with the loop's own randomness: nothing a verifier can rebuild
                x, y = ds.batch(idx)
                x = torch.where(torch.rand(x.shape[0]).view(-1, 1, 1, 1) < 0.5, x.flip(-1), x)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            rec.step(idx)
        rec.finish()
    finally:
        rec.close()


def test_declared_augmentation_replays_exactly_and_is_valid(images: Dataset, tmp_path: Path) -> None:
    _record(tmp_path / "t", images, augment=OPS)
    m = load_manifest(tmp_path / "t")
    assert m["config"]["augment"] == [{"type": "hflip", "p": 0.5}, {"type": "randomCrop", "padding": 1},
                                      {"type": "gaussianNoise", "std": 0.05}]
    assert rhos(tmp_path / "t", images) == [0.0, 0.0]
    assert verdict(tmp_path / "t", images, tmp_path) == "Valid"
    # A hand-written loop that takes its batches from rec.batch() records the same run, bit for bit.
    _record(tmp_path / "hand", images, hand="rec.batch", augment=OPS)
    assert load_manifest(tmp_path / "hand")["finalWeightsHash"] == m["finalWeightsHash"]
    # No augmentation declared: no key, so older configs keep their configHash.
    _record(tmp_path / "plain", images, steps=4)
    assert "augment" not in load_manifest(tmp_path / "plain")["config"]


def test_augmentation_with_the_loops_own_randomness_is_refused(images: Dataset, tmp_path: Path) -> None:
    with pytest.raises(RecorderError, match="does not replay") as e:
        _record(tmp_path / "t", images, hand="own-rng")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "t" / MANIFEST_NAME).exists()


def test_a_config_that_drops_or_changes_the_augmentation_is_invalid(images: Dataset, tmp_path: Path) -> None:
    _record(tmp_path / "honest", images, augment=OPS)
    for name, value in (("dropped", None), ("changed", [{"type": "hflip", "p": 0.9}, *OPS[1:]])):
        tdir = tmp_path / name
        shutil.copytree(tmp_path / "honest", tdir)
        m = read_manifest(tdir)
        if value is None:
            del m["config"]["augment"]
        else:
            m["config"]["augment"] = value
        write_manifest(tdir / MANIFEST_NAME, m)
        reseal_all(tdir)  # configHash, chainHead, segmentRoot: the cheating prover reseals everything
        assert verdict(tdir, images, tmp_path) == "Invalid", name


def test_draws_come_from_the_step_generator_only() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    state = torch.random.get_rng_state()
    a, b = augment_step(OPS, x, 7, 3), augment_step(OPS, x, 7, 3)
    assert torch.equal(a, b) and torch.equal(torch.random.get_rng_state(), state)
    assert not torch.equal(augment_step(OPS, x, 7, 4), a)
    assert augment_step(None, x, 7, 3) is x
    # randomCrop: the pad-and-crop at the drawn offsets, against a per-example reference
    g = torch.Generator().manual_seed(5)
    offsets = torch.randint(0, 5, (2, 2), generator=torch.Generator().manual_seed(5))
    got = augment([{"type": "randomCrop", "padding": 2}], x, g)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        want = F.pad(x[i], (2, 2, 2, 2))[:, dy:dy + 4, dx:dx + 4]
        assert torch.equal(got[i], want)
    # hflip with p = 1 mirrors every example
    assert torch.equal(augment([{"type": "hflip", "p": 1.0}], x, torch.Generator()), x.flip(-1))


@pytest.mark.parametrize("bad", [
    "hflip", [{"type": "rotate", "deg": 10}], [{"type": "hflip"}], [{"type": "hflip", "p": 2}],
    [{"type": "randomCrop", "padding": 0}], [{"type": "randomCrop", "padding": 1.5}],
    [{"type": "gaussianNoise", "std": -1}], [{"type": "gaussianNoise", "std": float("nan")}],
    [{"type": "hflip", "p": 0.5, "seed": 1}],
])
def test_malformed_augmentation_is_refused_in_one_line(bad: Any, images: Dataset, tmp_path: Path) -> None:
    with pytest.raises(TranscriptError) as e:
        augment_spec(bad)
    assert "\n" not in str(e.value)
    model = build_model("cnn", CNN)
    with pytest.raises(RecorderError):
        Recorder(tmp_path / "r", model, torch.optim.SGD(model.parameters(), lr=0.1), family="cnn", family_args=CNN,
                 dataset=images, steps_per_segment=2, augment=bad)


def test_ops_that_do_not_fit_the_data_are_refused() -> None:
    flat = torch.zeros(2, 64)
    with pytest.raises(TranscriptError, match="at least 2 axes"):
        augment([{"type": "hflip", "p": 0.5}], flat, torch.Generator())
    with pytest.raises(TranscriptError, match="float features"):
        augment([{"type": "gaussianNoise", "std": 0.1}], torch.zeros(2, 3, dtype=torch.int64), torch.Generator())
    assert np.isfinite(augment([{"type": "gaussianNoise", "std": 0.1}], flat, torch.Generator()).numpy()).all()
