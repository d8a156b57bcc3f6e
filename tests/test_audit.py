"""The verifier's audit of a training claim: each verdict path, against real transcripts in the embedded store."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from registry.core.claims import TrainingClaim
from registry.pol.publish import publish_transcript
from registry.pol.train import train
from registry.pol.transcript import batches_path, checkpoint_path
from registry.store.embedded import EmbeddedStore
from scripts.demo import forge_data_substitution
from verifier.audit import INVALID, UNAVAILABLE, VALID, audit_training_claim
from verifier.policy import get_policy


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("audit")
    result = train(out / "honest", epochs=1, max_steps=40, seed=3)
    store = EmbeddedStore(out / "store")
    honest = publish_transcript(result.transcript_dir, store)
    (out / "forged").mkdir()
    shutil.copytree(result.dataset_dir, out / "forged" / "dataset")
    forge_data_substitution(result.transcript_dir, out / "forged" / "transcript", 1797)
    forged = publish_transcript(out / "forged" / "transcript", store)
    return {"store": store, "honest": honest, "forged": forged, "out": out}


def fields(published: Any, **overrides: Any) -> TrainingClaim:
    return replace(published.claim, **overrides)


def test_honest_claim_is_valid_and_fetches_only_audited_segments(world: dict[str, Any]) -> None:
    only_assigned = get_policy(None).with_overrides(top_q=0, init_check=False)  # no top-Q/init files here
    report = audit_training_claim(world["store"], fields(world["honest"]), [1, 1, 3], policy=only_assigned)
    assert report.verdict == VALID, report.reason
    # the first and the last segment are always re-executed, whatever the sample
    assert [s.index for s in report.segments] == [0, 1, 3] and all(s.rho == 0.0 for s in report.segments)
    assert report.segments[0].why == ["first"] and report.segments[2].why == ["assigned", "last"]
    manifest_dir = world["out"] / "honest" / "transcript"
    needed = {"manifest.json", *(checkpoint_path(i) for i in (0, 1, 2, 3, 4)), batches_path(0), batches_path(1),
              batches_path(3)}
    assert report.bytes_fetched == sum((manifest_dir / rel).stat().st_size for rel in needed)
    assert json.loads(report.results_bytes())["verdict"] == VALID


def test_forged_claim_is_invalid(world: dict[str, Any]) -> None:
    report = audit_training_claim(world["store"], fields(world["forged"]), [0, 2])
    assert report.verdict == INVALID and "does not reproduce" in report.reason
    assert all(s.rho is not None and s.rho > 0.01 for s in report.segments)


def test_manifest_that_does_not_match_the_claim_is_invalid(world: dict[str, Any]) -> None:
    claim = fields(world["honest"], segment_root=world["forged"].summary.segment_root)
    report = audit_training_claim(world["store"], claim, [0])
    assert report.verdict == INVALID and "segmentRoot" in report.reason
    claim = fields(world["honest"], num_segments=99)
    assert audit_training_claim(world["store"], claim, [0]).verdict == INVALID


def test_missing_evidence_is_unavailable(world: dict[str, Any], tmp_path: Path) -> None:
    empty = EmbeddedStore(tmp_path / "empty")
    report = audit_training_claim(empty, fields(world["honest"]), [0])
    assert report.verdict == UNAVAILABLE and "manifest" in report.reason
    # the manifest is there but a checkpoint block is gone
    partial = EmbeddedStore(tmp_path / "partial")
    cid = world["honest"].transcript_cid
    for block_cid, data in world["store"].blocks(cid):
        partial.put_block(block_cid, data)
    ckpt = world["store"].resolve(cid, checkpoint_path(2))
    for block_cid, _ in world["store"].blocks(ckpt):
        partial._path(block_cid).unlink()  # the store's block file (semi-public, see registry/store/embedded.py)
    report = audit_training_claim(partial, fields(world["honest"]), [1])
    assert report.verdict == UNAVAILABLE and "evidence" in report.reason
