"""A real recorded transcript and the contract agree: every segment leaf and proof from the manifest verifies
against the committed segmentRoot, and the dataset's membership proofs verify against datasetRoot."""

from __future__ import annotations

from pathlib import Path

from registry.datasets import Dataset
from registry.hashing import as_hash
from registry.pol.train import train
from registry.pol.transcript import segment_tree, segment_values
from registry.publish import publish_transcript, verify_transcript
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
