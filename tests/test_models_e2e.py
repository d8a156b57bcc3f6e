"""Models described as data, recorded and verified end to end: a user's residual+LayerNorm model converted to
a `spec` tree, and a tiny HF ViT from its config, trained on digits, audited by the verifier's engine with
the initialization check; with nothing but the family name and arguments on the verifier's side."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from registry.pol.train import train
from registry.pol.transcript import MANIFEST_NAME, checkpoint_path
from registry.spec import models
from registry.spec.datasets import build_builtin
from verifier.audit import INVALID, VALID
from verifier.engine import DirSource, audit
from verifier.policy import get_policy

POLICY = get_policy(None).with_overrides(top_q=0, extra_samples=0)  # with the initialization check


class UserNet(nn.Module):
    """A user's own model: flatten, embed, one pre-norm residual block, head."""

    def __init__(self) -> None:
        super().__init__()
        self.flat = nn.Flatten()
        self.embed = nn.Linear(64, 32)
        self.block = Block()
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.embed(self.flat(x))))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(32)
        self.fc = nn.Linear(32, 32)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.fc(self.norm(x)))


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    build_builtin("digits", out, shard_size=256)
    return out


def _record_and_audit(out: Path, digits: Path, family: str, args: dict[str, Any]) -> tuple[Path, Any]:
    res = train(out, family=family, family_args=args, dataset_dir=digits, epochs=1, max_steps=8,
                steps_per_segment=4, seed=5, lr=0.05)
    tdir = res.transcript_dir
    manifest = json.loads((tdir / MANIFEST_NAME).read_text())
    assert manifest["config"]["model"]["family"] == family
    report = audit(DirSource(tdir), None, [0, 1], policy=POLICY, dataset_source=DirSource(digits))
    return tdir, report


def test_user_model_as_spec_records_and_verifies(tmp_path: Path, digits: Path) -> None:
    args = models.spec_args(UserNet(), torch.randn(2, 1, 8, 8))
    tdir, report = _record_and_audit(tmp_path / "spec", digits, "spec", args)
    assert report.verdict == VALID, report.reason
    assert report.init is not None and report.init["method"] == "seed" and report.init["passed"]
    # Checkpoint 0 from another seed: not the committed seed's initialization, and no distribution to fall
    # back on for a spec model, so Invalid with the reason.
    other = train(tmp_path / "other", family="spec", family_args=args, dataset_dir=digits, epochs=1, max_steps=4,
                  steps_per_segment=4, seed=6)
    forged = tmp_path / "forged"
    shutil.copytree(tdir, forged)
    shutil.copy(other.transcript_dir / checkpoint_path(0), forged / checkpoint_path(0))
    from tests.test_verifier_engine import reseal  # what a forger does: every digest recomputed

    reseal(forged)
    report = audit(DirSource(forged), None, [1], policy=POLICY, dataset_source=DirSource(digits))
    assert report.verdict == INVALID and "initialization: checkpoint 0" in report.reason  # not the seed's init


def test_hf_vit_from_config_records_and_verifies(tmp_path: Path, digits: Path) -> None:
    pytest.importorskip("transformers")
    cfg = {"model_type": "vit", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
           "num_attention_heads": 2, "image_size": 8, "patch_size": 4, "num_channels": 1, "num_labels": 10}
    args = models.normalize_args("hf-image-classification", {"config": cfg})
    _, report = _record_and_audit(tmp_path / "vit", digits, "hf-image-classification", args)
    assert report.verdict == VALID, report.reason
    assert report.init is not None and report.init["method"] == "seed" and report.init["passed"]
