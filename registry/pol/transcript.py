"""The transcript manifest (`manifest.json`, format "proofreg-pol-transcript/1") and the digests it commits to.

A transcript directory holds::

    manifest.json
    checkpoints/GGGG/NNNNNN.safetensors    checkpoint i (format in `registry.pol.checkpoint`), i = 0..N
    batches/GGGG/NNNNNN.npy                segment i's example indices, int64 [steps in segment, batch size]

(GGGG = i // 100: 100 files per subdirectory, so no directory is HAMT-sharded up to 99,999 segments.)

`manifest.json` (UTF-8 JSON, keys sorted, 1-space indent)::

    format            "proofreg-pol-transcript/1"
    config            the training configuration: exactly the JSON whose keccak256(canonical JSON) is configHash
    configHash        0x-hex
    dataset           {"name", "cid" (IPFS CID of the dataset directory, or null until published),
                       "datasetRoot", "numExamples"}
    stepsPerSegment   k
    batchSize         examples per step
    numSteps          optimizer steps recorded
    numSegments       N = ceil(numSteps / k); the last segment is shorter when k does not divide numSteps
    checkpoints       [{"index": i, "step": global step, "path": "checkpoints/GGGG/NNNNNN.safetensors",
                        "ckptHash": sha256 of the file}]        (N + 1 entries; checkpoint 0 is before training)
    segments          [{"index": i, "startStep", "endStep" (half-open step range), "batches": "batches/GGGG/NNNNNN.npy",
                        "batchesHash": sha256 of the file, "learningRates": [[lr of each param group] per step],
                        "updateNorm": ‖W_{i+1} − W_i‖₂ over the model's parameters, "epoch": epoch of startStep}]
    segmentRoot       StandardMerkleTree root over (i, ckptHash_i, ckptHash_{i+1}, batchesHash_i), SEGMENT_LEAF_TYPES
    chainHead         h_0 = ckptHash_0, h_i = keccak256(h_{i-1} ‖ ckptHash_i)
    finalWeightsHash  registry.core.hashing.weights_hash of the final model state_dict (= the `model.*` tensors of the
                      last checkpoint, names without the prefix)
    environment       where it was recorded (torch/numpy/python versions, device, threads): informational,
                      not committed anywhere

The manifest's digests are checked by `load_manifest`, so a consumer can trust them against the files it fetches.
"""

from __future__ import annotations

import json
import tokenize
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from registry.core import safejson
from registry.core.claims import TrainingClaim
from registry.core.hashing import as_hash, chain_head, config_hash
from registry.core.merkle import SEGMENT_LEAF_TYPES, StandardMerkleTree
from registry.pol.checkpoint import TranscriptError

TRANSCRIPT_FORMAT = "proofreg-pol-transcript/1"
CONFIG_FORMAT = "proofreg-pol-config/2"
MANIFEST_NAME = "manifest.json"


#: files per subdirectory: every directory of a transcript stays under both IPFS sharding thresholds
#: (js-ipfs: 1,000 entries; Kubo: 256 KiB of links), so its CID is the same on either daemon, flat dag-pb
GROUP_SIZE = 100


def checkpoint_path(index: int) -> str:
    """`checkpoints/GGGG/NNNNNN.safetensors`, GGGG = the first four digits of NNNNNN (index // 100)."""
    return f"checkpoints/{index // GROUP_SIZE:04d}/{index:06d}.safetensors"


def batches_path(index: int) -> str:
    """`batches/GGGG/NNNNNN.npy`, grouped as checkpoints are."""
    return f"batches/{index // GROUP_SIZE:04d}/{index:06d}.npy"


@dataclass(frozen=True, kw_only=True)
class TranscriptSummary(TrainingClaim):
    """The training claim a recorded transcript commits, before it is published (so `transcript_cid` is
    empty), plus where its manifest is and how many steps it records: the claim's fields are declared once,
    in `TrainingClaim`; `published_as(cid)` is the claim `commitTraining` takes."""

    transcript_cid: str = ""
    init_weights_hash: bytes = bytes(32)  # canonical weights hash of checkpoint 0 (config init.weightsHash)
    parent_claim_id: int = 0  # the fine-tuning parent, 0 unless origin is "parent"
    origin: int = 2  # the contract's InitOrigin: 0 Seed, 1 Parent, 2 External
    manifest_path: Path
    num_steps: int

    def published_as(self, transcript_cid: str) -> TrainingClaim:
        """The claim this transcript commits once it is stored under `transcript_cid`."""
        return TrainingClaim(**{f.name: getattr(self, f.name) for f in fields(TrainingClaim)}
                             | {"transcript_cid": transcript_cid})

    def to_json(self) -> dict[str, Any]:
        claim = {k: v for k, v in super().to_json().items() if k != "transcriptCid"}
        return {"manifest": str(self.manifest_path), **claim, "numSteps": self.num_steps}


def segment_values(manifest: dict[str, Any]) -> list[tuple[int, bytes, bytes, bytes]]:
    """The leaf values (i, ckptHash_i, ckptHash_{i+1}, batchesHash_i) of the segment tree, in segment order."""
    ck = [as_hash(c["ckptHash"]) for c in manifest["checkpoints"]]
    return [(i, ck[i], ck[i + 1], as_hash(s["batchesHash"])) for i, s in enumerate(manifest["segments"])]


def segment_tree(manifest: dict[str, Any]) -> StandardMerkleTree:
    """The tree whose root is `segmentRoot`; `.proof(i)` is segment i's proof for `verifySegment`."""
    return StandardMerkleTree.of(segment_values(manifest), SEGMENT_LEAF_TYPES)


def summary_of(manifest: dict[str, Any], manifest_path: Path) -> TranscriptSummary:
    init = manifest["config"].get("init")
    if not isinstance(init, dict) or init.get("origin") not in ("seed", "parent", "external"):
        raise TranscriptError("the config commits no initialization origin (config init)")
    origin = ("seed", "parent", "external").index(init["origin"])
    return TranscriptSummary(
        manifest_path=manifest_path,
        segment_root=as_hash(manifest["segmentRoot"]),
        chain_head=as_hash(manifest["chainHead"]),
        final_weights_hash=as_hash(manifest["finalWeightsHash"]),
        dataset_root=as_hash(manifest["dataset"]["datasetRoot"]),
        config_hash=as_hash(manifest["configHash"]),
        num_segments=int(manifest["numSegments"]),
        steps_per_segment=int(manifest["stepsPerSegment"]),
        num_steps=int(manifest["numSteps"]),
        init_weights_hash=_hex32(init.get("weightsHash"), "config init.weightsHash"),
        parent_claim_id=int(init.get("parentClaimId") or 0) if origin == 1 else 0,
        origin=origin,
    )


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    tmp.replace(path)


def _hex32(value: Any, where: str) -> bytes:
    """A manifest digest: "0x" + 64 hex digits only (`as_hash` would also take an int and allocate that many
    bytes, which a hostile manifest must not be able to ask for)."""
    if not isinstance(value, str) or len(value) != 66:
        raise TranscriptError(f"manifest {where} is not a 0x-prefixed 32-byte hex string")
    return as_hash(value)


def validate_manifest(m: Any) -> dict[str, Any]:
    """Structure, canonical paths, contiguous step ranges, and every digest recomputed from the listed hashes."""
    if not isinstance(m, dict) or m.get("format") != TRANSCRIPT_FORMAT:
        raise TranscriptError(f"manifest format is not {TRANSCRIPT_FORMAT!r}")
    try:
        for key in ("configHash", "segmentRoot", "chainHead", "finalWeightsHash"):
            _hex32(m[key], key)
        _hex32(m["dataset"]["datasetRoot"], "datasetRoot")
        for c in m["checkpoints"]:
            _hex32(c["ckptHash"], "ckptHash")
        for seg in m["segments"]:
            _hex32(seg["batchesHash"], "batchesHash")
        if config_hash(m["config"]) != as_hash(m["configHash"]):
            raise TranscriptError("manifest configHash does not match its config")
        cfg = m["config"]
        k = int(m["stepsPerSegment"])
        if k < 1 or cfg.get("stepsPerSegment") != k or cfg.get("batchSize") != m["batchSize"]:
            raise TranscriptError("manifest stepsPerSegment/batchSize disagree with the config")
        if cfg.get("dataset", {}).get("datasetRoot") != m["dataset"]["datasetRoot"]:
            raise TranscriptError("manifest datasetRoot disagrees with the config")
        ckpts, segs = m["checkpoints"], m["segments"]
        n = int(m["numSegments"])
        if n < 1 or len(segs) != n or len(ckpts) != n + 1:
            raise TranscriptError("manifest numSegments does not match its checkpoint and segment lists")
        for i, c in enumerate(ckpts):
            if c["index"] != i or c["path"] != checkpoint_path(i):
                raise TranscriptError(f"manifest checkpoint {i} has a non-canonical index or path")
            as_hash(c["ckptHash"])
        step = 0
        for i, s in enumerate(segs):
            if s["index"] != i or s["batches"] != batches_path(i):
                raise TranscriptError(f"manifest segment {i} has a non-canonical index or path")
            length = s["endStep"] - s["startStep"]
            if s["startStep"] != step or not 1 <= length <= k or (length < k and i != n - 1):
                raise TranscriptError(f"manifest segment {i} has a bad step range")
            if ckpts[i]["step"] != s["startStep"] or ckpts[i + 1]["step"] != s["endStep"]:
                raise TranscriptError(f"manifest segment {i} disagrees with its checkpoints' steps")
            lrs = s["learningRates"]
            if len(lrs) != length or not all(isinstance(r, list) and r for r in lrs):
                raise TranscriptError(f"manifest segment {i} needs one list of learning rates per step")
            for r in lrs:
                for lr in r:
                    if isinstance(lr, bool) or not isinstance(lr, int | float):
                        raise TranscriptError(f"manifest segment {i} has a non-numeric learning rate")
            as_hash(s["batchesHash"])
            step = s["endStep"]
        if step != m["numSteps"]:
            raise TranscriptError("manifest numSteps disagrees with its segments")
        if chain_head([as_hash(c["ckptHash"]) for c in ckpts]) != as_hash(m["chainHead"]):
            raise TranscriptError("manifest chainHead does not match its checkpoint hashes")
        if segment_tree(m).root != as_hash(m["segmentRoot"]):
            raise TranscriptError("manifest segmentRoot does not match its segments")
        as_hash(m["finalWeightsHash"])
    except TranscriptError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TranscriptError(f"manifest is malformed: {exc!r}") from exc
    return m


def load_manifest(transcript_dir: str | Path) -> dict[str, Any]:
    """Reads and validates `manifest.json` of a transcript directory."""
    path = Path(transcript_dir) / MANIFEST_NAME
    try:
        raw = path.read_bytes()
        manifest = safejson.loads(raw, what=str(path), max_depth=safejson.MANIFEST_DEPTH)
    except (OSError, ValueError) as exc:
        raise TranscriptError(f"cannot read {path}: {exc}") from exc
    return validate_manifest(manifest)


def read_batches(path: str | Path, expected_hash: bytes | str | None = None,
                 shape: tuple[int, int] | None = None) -> np.ndarray:
    """A segment's batch file: plain int64 [steps, batch] .npy (never unpickled), checked against its hash."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TranscriptError(f"cannot read batch file {path}: {exc}") from exc
    return parse_batches(data, expected_hash, shape, where=str(path))


def parse_batches(data: bytes, expected_hash: bytes | str | None = None, shape: tuple[int, int] | None = None,
                  *, where: str = "") -> np.ndarray:
    """`read_batches` on bytes already in memory (a verifier's fetched file): same checks, no pickle."""
    from registry.core.hashing import sha256

    path = where or "(in memory)"
    if expected_hash is not None and sha256(data) != as_hash(expected_hash):
        raise TranscriptError(f"batch file {path} does not match its batchesHash")
    import io

    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as exc:  # numpy parses headers
        raise TranscriptError(f"batch file {path} is not a plain .npy array: {exc}") from exc
    if not isinstance(arr, np.ndarray) or arr.dtype != np.dtype("<i8") or arr.ndim != 2:
        raise TranscriptError(f"batch file {path} must hold int64 [steps, batch], got {getattr(arr, 'dtype', '?')}")
    if shape is not None and arr.shape != shape:
        raise TranscriptError(f"batch file {path} has shape {arr.shape}, expected {shape}")
    return arr
