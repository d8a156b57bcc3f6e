"""Publishing a transcript before its claim: verify every file, store the dataset and the transcript, and
read the manifest back, so that a claim is only ever committed for evidence that is fully stored.

A transcript directory is checked end to end before anything is stored: the manifest's digests (by
`load_manifest`), every checkpoint and batch file against its listed hash (a half-written or edited
directory fails here), and the final checkpoint's weights against `finalWeightsHash`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.core.claims import TrainingClaim
from registry.core.errors import PublishError
from registry.core.hashing import as_hash, sha256_file, weights_hash
from registry.pol.checkpoint import Checkpoint, TranscriptError, decode_checkpoint, read_buffer
from registry.pol.transcript import MANIFEST_NAME, TranscriptSummary, load_manifest, summary_of, write_manifest
from registry.spec.datasets import Dataset, DatasetError
from registry.store.base import ContentStore, StoreError

__all__ = ["PublishError", "Published", "publish_transcript", "verify_transcript"]


@dataclass(frozen=True)
class Published:
    transcript_cid: str
    dataset_cid: str
    summary: TranscriptSummary

    @property
    def claim(self) -> TrainingClaim:
        return self.summary.published_as(self.transcript_cid)

    def claim_tuple(self) -> tuple[Any, ...]:
        """The `TrainingClaim` struct, in ABI order, for `commitTraining`."""
        return self.claim.claim_tuple()

    def to_json(self) -> dict[str, Any]:
        return {"transcriptCid": self.transcript_cid, "datasetCid": self.dataset_cid, **self.summary.to_json()}


def verify_transcript(transcript_dir: str | Path, progress: Callable[[int, int], None] | None = None,
                      ) -> tuple[dict[str, Any], TranscriptSummary]:
    """Checks a local transcript completely; returns its manifest and the digests a claim commits.

    `progress(done, total)` is called after each file is hashed (the CLI's progress bar)."""
    tdir = Path(transcript_dir)
    if not (tdir / MANIFEST_NAME).is_file():
        raise PublishError(f"{tdir} is not a transcript directory (no {MANIFEST_NAME}): run `proofreg train` first")
    try:
        manifest = load_manifest(tdir)
        ckpts = manifest["checkpoints"]
        # Checkpoints 0 and last are decoded as well as hashed: read once, hashed once (decode_checkpoint checks
        # the hash of the bytes it parses), and only their weights hashes are kept, so that no more than one
        # state is in memory at a time (issue 13); every other file is hashed streaming.
        decode = {0: "first", len(ckpts) - 1: "last"}
        files = [(e["path"], e["ckptHash"], f"checkpoint {e['index']}", decode.get(i)) for i, e in enumerate(ckpts)]
        files += [(s["batches"], s["batchesHash"], f"batch file of segment {s['index']}", None)
                  for s in manifest["segments"]]
        weights: dict[str, bytes] = {}
        for done, (rel, expected, what, role) in enumerate(files, 1):
            if role is None:
                _check_file(tdir, rel, expected, what)
            else:
                weights[role] = weights_hash(_read_checkpoint_file(tdir, rel, expected, what).model)
            if progress is not None:
                progress(done, len(files))
        summary = summary_of(manifest, tdir / MANIFEST_NAME)
    except TranscriptError as exc:
        raise PublishError(f"invalid transcript {tdir}: {exc}") from None
    if weights["last"] != as_hash(manifest["finalWeightsHash"]):
        raise PublishError(f"invalid transcript {tdir}: the last checkpoint's weights do not give finalWeightsHash")
    if weights["first"] != summary.init_weights_hash:
        raise PublishError(f"invalid transcript {tdir}: checkpoint 0's weights do not give the config's "
                           "init.weightsHash")
    return manifest, summary


def _read_checkpoint_file(tdir: Path, rel: str, expected: str, what: str) -> Checkpoint:
    path = tdir / rel
    if not path.is_file():
        raise PublishError(f"invalid transcript {tdir}: {what} is missing ({rel}); was the run finished?")
    try:
        # one writable buffer that the decoded tensors share: the file is in memory once, not twice
        return decode_checkpoint(read_buffer(path), as_hash(expected))
    except TranscriptError as exc:
        if "is not the manifest's" in str(exc):
            raise PublishError(f"invalid transcript {tdir}: {what} ({rel}) does not match its hash "
                               "(half-written?)") from None
        raise


def _check_file(tdir: Path, rel: str, expected: str, what: str) -> None:
    path = tdir / rel
    if not path.is_file():
        raise PublishError(f"invalid transcript {tdir}: {what} is missing ({rel}); was the run finished?")
    if sha256_file(path) != as_hash(expected):
        raise PublishError(f"invalid transcript {tdir}: {what} ({rel}) does not match its hash (half-written?)")


def publish_transcript(transcript_dir: str | Path, store: ContentStore, dataset_dir: str | Path | None = None,
                       *, verified: tuple[dict[str, Any], TranscriptSummary] | None = None) -> Published:
    """Stores the dataset (when the manifest has no CID for it yet) and the transcript; returns both CIDs.

    `verified` is what `verify_transcript` returned for this directory just before (the CLI checks first, so
    that a bad transcript fails before the chain is touched); the files are then not hashed a second time.

    The dataset directory defaults to `dataset/` beside the transcript (where `proofreg train` puts it); its
    root must equal the transcript's `datasetRoot`. The manifest is updated with the dataset CID first,
    which changes no committed digest."""
    tdir = Path(transcript_dir)
    manifest, summary = verified if verified is not None else verify_transcript(tdir)
    try:
        dataset_cid = manifest["dataset"].get("cid")
        if not dataset_cid:
            ddir = Path(dataset_dir) if dataset_dir is not None else tdir.parent / "dataset"
            try:
                Dataset.load(ddir, expected_root=summary.dataset_root)
            except (DatasetError, OSError) as exc:
                raise PublishError(f"cannot publish the dataset from {ddir}: {exc}") from None
            dataset_cid = store.add_directory(ddir)
            manifest["dataset"]["cid"] = dataset_cid
            write_manifest(tdir / MANIFEST_NAME, manifest)
        transcript_cid = store.add_directory(tdir)
        stored = store.cat(f"{transcript_cid}/{MANIFEST_NAME}")
    except StoreError as exc:
        raise PublishError(f"content store failed: {exc}") from None
    if stored != (tdir / MANIFEST_NAME).read_bytes():
        raise PublishError(f"the store returned a different manifest for {transcript_cid}")
    return Published(transcript_cid, str(dataset_cid), summary)

