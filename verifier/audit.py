"""Auditing a training claim (SPEC sections 5 and 6): fetch only the manifest and the files of the segments to
check, tie the manifest to the on-chain claim, re-execute each segment and compare it with the next
checkpoint.

Verdicts follow the contract's: `Valid` when every audited segment reproduces within the tolerance,
`Invalid` when the evidence contradicts the claim (a digest mismatch, a malformed transcript, a segment
that does not reproduce), `Unavailable` when the evidence cannot be fetched. A failure is a verdict with its
reason, never an exception out of `audit_training_claim`.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.datasets import Dataset, DatasetError
from registry.hashing import as_hash, to_hex
from registry.pol.checkpoint import TranscriptError
from registry.pol.replay import check_segment
from registry.pol.transcript import MANIFEST_NAME, validate_manifest
from registry.store.base import ContentStore, StoreError

#: Default tolerance policy "pol-tolerance/1": the largest ρ accepted for a segment. Honest segments replay
#: with ρ = 0 on the recording's hardware and thread count and ρ ≈ 1e-7..4e-7 across thread counts on CPU;
#: forged segments measured 0.2 and above (TOOLCHAIN.md, tests). Issue-level calibration refines this.
DEFAULT_RHO_THRESHOLD = 1e-3

VALID, INVALID, UNAVAILABLE = "Valid", "Invalid", "Unavailable"
VERDICT_CODE = {VALID: 1, INVALID: 2, UNAVAILABLE: 3}


@dataclass(frozen=True)
class TrainingClaimFields:
    """What the chain says about a training claim (from its `TrainingClaimCommitted` event)."""

    transcript_cid: str
    segment_root: bytes
    chain_head: bytes
    final_weights_hash: bytes
    dataset_root: bytes
    config_hash: bytes
    num_segments: int
    steps_per_segment: int

    @classmethod
    def from_event(cls, claim: dict[str, Any]) -> TrainingClaimFields:
        return cls(str(claim["transcriptCid"]), as_hash(claim["segmentRoot"]), as_hash(claim["chainHead"]),
                   as_hash(claim["finalWeightsHash"]), as_hash(claim["datasetRoot"]), as_hash(claim["configHash"]),
                   int(claim["numSegments"]), int(claim["stepsPerSegment"]))


@dataclass
class SegmentResult:
    index: int
    rho: float | None = None
    linf: float | None = None
    cosine: float | None = None
    passed: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "rho": self.rho, "linf": self.linf, "cosine": self.cosine,
                "passed": self.passed, "error": self.error}


@dataclass
class AuditReport:
    verdict: str
    reason: str
    threshold: float
    segments: list[SegmentResult] = field(default_factory=list)
    bytes_fetched: int = 0  # transcript files (manifest, checkpoints, batches)
    dataset_bytes_fetched: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.reason, "threshold": self.threshold,
                "segments": [s.to_json() for s in self.segments], "bytesFetched": self.bytes_fetched,
                "datasetBytesFetched": self.dataset_bytes_fetched,
                "seconds": round(self.seconds, 3)}

    def results_bytes(self) -> bytes:
        """Canonical JSON of the per-segment results, whose keccak256 is the attestation's `resultsHash`."""
        body = {"verdict": self.verdict, "segments": [s.to_json() for s in self.segments]}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


class _Fetcher:
    """Copies single files of a stored directory into a local folder, counting bytes."""

    def __init__(self, store: ContentStore, root_cid: str, dest: Path) -> None:
        self.store, self.root_cid, self.dest = store, root_cid, dest
        self.bytes = self.dataset_bytes = 0

    def fetch(self, rel: str) -> bytes:
        data = self.store.cat(f"{self.root_cid}/{rel}")
        self.bytes += len(data)
        path = self.dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data


def _check_manifest_against_claim(m: dict[str, Any], claim: TrainingClaimFields) -> str | None:
    pairs = [("segmentRoot", claim.segment_root), ("chainHead", claim.chain_head),
             ("finalWeightsHash", claim.final_weights_hash), ("configHash", claim.config_hash)]
    for key, value in pairs:
        if as_hash(m[key]) != value:
            return f"manifest {key} {m[key]} differs from the claim's {to_hex(value)}"
    if as_hash(m["dataset"]["datasetRoot"]) != claim.dataset_root:
        return "manifest datasetRoot differs from the claim's"
    if int(m["numSegments"]) != claim.num_segments or int(m["stepsPerSegment"]) != claim.steps_per_segment:
        return "manifest segment count or steps per segment differ from the claim's"
    return None


def audit_training_claim(store: ContentStore, claim: TrainingClaimFields, segments: list[int], *,
                         dataset: Dataset | None = None, threshold: float = DEFAULT_RHO_THRESHOLD,
                         device: str = "cpu", workdir: Path | None = None) -> AuditReport:
    """Audits the given segments (duplicates are checked once) of a training claim."""
    started = time.perf_counter()
    wanted = sorted(set(segments))
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        dest = Path(tmp) / "transcript"
        fetcher = _Fetcher(store, claim.transcript_cid, dest)

        def report(verdict: str, reason: str, results: list[SegmentResult] | None = None) -> AuditReport:
            return AuditReport(verdict, reason, threshold, results or [], fetcher.bytes, fetcher.dataset_bytes,
                               time.perf_counter() - started)

        try:
            manifest = validate_manifest(json.loads(fetcher.fetch(MANIFEST_NAME)))
        except StoreError as exc:
            return report(UNAVAILABLE, f"manifest: {exc}")
        except (TranscriptError, ValueError) as exc:
            return report(INVALID, f"manifest: {exc}")
        mismatch = _check_manifest_against_claim(manifest, claim)
        if mismatch:
            return report(INVALID, mismatch)
        if any(not 0 <= s < claim.num_segments for s in wanted):
            return report(INVALID, "assigned segment outside the claim")
        try:
            for s in wanted:
                for rel in (manifest["checkpoints"][s]["path"], manifest["checkpoints"][s + 1]["path"],
                            manifest["segments"][s]["batches"]):
                    if not (dest / rel).exists():
                        fetcher.fetch(rel)
            if dataset is None:
                dataset = _fetch_dataset(store, manifest, Path(tmp) / "dataset", fetcher)
        except StoreError as exc:
            return report(UNAVAILABLE, f"evidence: {exc}")
        except DatasetError as exc:
            return report(INVALID, f"dataset: {exc}")

        results: list[SegmentResult] = []
        for s in wanted:
            try:
                d = check_segment(dest, s, dataset, device=device, manifest=manifest)
                results.append(SegmentResult(s, d.rho, d.linf, d.cosine, d.rho <= threshold))
            except TranscriptError as exc:
                results.append(SegmentResult(s, error=str(exc)))
        failed = [r for r in results if not r.passed]
        if failed:
            worst = failed[0]
            why = worst.error or f"segment {worst.index} does not reproduce: rho={worst.rho:.3g} > {threshold:g}"
            return report(INVALID, why, results)
        return report(VALID, f"{len(results)} segment(s) reproduce within rho <= {threshold:g}", results)


def _fetch_dataset(store: ContentStore, manifest: dict[str, Any], dest: Path, fetcher: _Fetcher) -> Dataset:
    cid = manifest["dataset"].get("cid")
    if not cid:
        raise DatasetError("the transcript names no dataset CID")
    data = store.cat(f"{cid}/dataset.json")
    fetcher.dataset_bytes += len(data)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "dataset.json").write_bytes(data)
    for rel in sorted({s for s in _shard_files(json.loads(data))}):
        blob = store.cat(f"{cid}/{rel}")
        fetcher.dataset_bytes += len(blob)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(blob)
    return Dataset.load(dest, expected_root=as_hash(manifest["dataset"]["datasetRoot"]))


def _shard_files(dataset_manifest: dict[str, Any]) -> list[str]:
    files: list[str] = []
    for shard in dataset_manifest.get("shards", []):
        for key in ("features", "labels"):
            value = shard.get(key) if isinstance(shard, dict) else None
            if isinstance(value, str):
                files.append(value)
    return files
