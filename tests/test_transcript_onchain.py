"""A real recorded transcript and the contract agree: every segment leaf and proof from the manifest verifies
against the committed segmentRoot, and the dataset's membership proofs verify against datasetRoot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from registry.core.claims import TrainingClaim
from registry.core.hashing import as_hash
from registry.pol.publish import publish_transcript, verify_transcript
from registry.pol.train import train
from registry.pol.transcript import segment_tree, segment_values
from registry.spec.datasets import Dataset
from registry.store.embedded import EmbeddedStore
from tests.registry_driver import Driver


def test_real_transcript_proofs_verify_on_chain(d: Driver, tmp_path: Path) -> None:
    result = train(tmp_path / "run", epochs=1, max_steps=35, seed=5)  # 4 segments, the last one shorter
    manifest, summary = verify_transcript(result.transcript_dir)
    published = publish_transcript(result.transcript_dir, EmbeddedStore(tmp_path / "store"))
    claim_id = d.commit(published.claim_tuple(), d.accounts[1])
    tree = segment_tree(manifest)
    assert tree.root == summary.segment_root and summary.num_segments == 4
    for i, (index, a, b, c) in enumerate(segment_values(manifest)):
        assert d.call("verifySegment", claim_id, index, a, b, c, tree.proof(i)) is True
        assert d.call("verifySegment", claim_id, index, b, a, c, tree.proof(i)) is False
    dataset = Dataset.load(result.dataset_dir)
    for index in (0, 17, len(dataset) - 1):
        h = dataset.example_hash(index)
        assert d.call("verifyExample", summary.dataset_root, index, h, dataset.proof(index)) is True
        assert d.call("verifyExample", summary.dataset_root, index, as_hash(b"\1" * 32), dataset.proof(index)) is False


def test_one_claim_type_from_transcript_manifest_and_chain(d: Driver, tmp_path: Path) -> None:
    """The prover's claim, the manifest's and the one the chain reports are the same TrainingClaim."""
    result = train(tmp_path / "run", epochs=1, max_steps=12, seed=3)
    published = publish_transcript(result.transcript_dir, EmbeddedStore(tmp_path / "store"))
    claim_id = d.commit(published.claim_tuple(), d.accounts[1])
    logs = d.reg.events.TrainingClaimCommitted().get_logs(from_block=0, argument_filters={"claimId": claim_id})
    from_chain = TrainingClaim.from_event(dict(logs[-1]["args"]["claim"]))
    manifest, _ = verify_transcript(result.transcript_dir)
    assert from_chain == published.claim == TrainingClaim.from_manifest(manifest, published.transcript_cid)
    assert from_chain.origin == 0 and from_chain.init_weights_hash == published.summary.init_weights_hash


def test_commit_hashes_each_transcript_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`proofreg commit` verifies, then publishes what it verified: every checkpoint and batch file goes
    through sha256 once (observed by wrapping the real functions; nothing is faked)."""
    import registry.pol.publish as publish

    result = train(tmp_path / "run", epochs=1, max_steps=25, seed=4)
    seen: list[str] = []
    real_file, real_decode = publish.sha256_file, publish.decode_checkpoint
    monkeypatch.setattr(publish, "sha256_file", lambda p, *a: seen.append(Path(p).name) or real_file(p, *a))

    def decode(data: bytes, expected: bytes | None = None) -> Any:
        seen.append(f"decoded:{expected.hex() if expected else None}")
        return real_decode(data, expected)

    monkeypatch.setattr(publish, "decode_checkpoint", decode)
    verified = verify_transcript(result.transcript_dir)
    publish_transcript(result.transcript_dir, EmbeddedStore(tmp_path / "store"), verified=verified)
    manifest = verified[0]
    assert len(seen) == len(manifest["checkpoints"]) + len(manifest["segments"])
    assert len(set(seen)) == len(seen)
    seen.clear()
    publish_transcript(result.transcript_dir, EmbeddedStore(tmp_path / "store2"))  # alone, it still verifies
    assert len(seen) == len(manifest["checkpoints"]) + len(manifest["segments"])
