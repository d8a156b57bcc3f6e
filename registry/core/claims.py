"""The training claim, once: what `commitTraining` takes, what `TrainingClaimCommitted` reports, what a
transcript commits and what a verifier checks the evidence against (protocol section 2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from registry.core.hashing import as_hash, to_hex
from registry.core.states import ORIGIN_NAMES

__all__ = ["TrainingClaim"]


@dataclass(frozen=True)
class TrainingClaim:
    """A training claim: the contract's `TrainingClaim` struct, field for field, in ABI order.

    The one claim type of the project: a recorded transcript's `TranscriptSummary` is one before it is
    published (`published_as` gives the claim), the chain client sends `claim_tuple()` to `commitTraining`,
    verifiers read it back from the `TrainingClaimCommitted` event (`from_event`) or, offline, from a
    validated manifest (`from_manifest`).

    The last three follow the `TrainingClaim` struct's tail (initWeightsHash, parentClaimId, origin); they
    are None/0 for a claim read from a registry that predates them (the config, bound by configHash, still
    commits the origin and the verifier checks it there)."""

    transcript_cid: str
    segment_root: bytes
    chain_head: bytes
    final_weights_hash: bytes
    dataset_root: bytes
    config_hash: bytes
    num_segments: int
    steps_per_segment: int
    init_weights_hash: bytes | None = None
    parent_claim_id: int = 0
    origin: int | None = None

    @classmethod
    def from_event(cls, claim: dict[str, Any]) -> TrainingClaim:
        init = claim.get("initWeightsHash")
        origin = claim.get("origin")
        return cls(str(claim["transcriptCid"]), as_hash(claim["segmentRoot"]), as_hash(claim["chainHead"]),
                   as_hash(claim["finalWeightsHash"]), as_hash(claim["datasetRoot"]), as_hash(claim["configHash"]),
                   int(claim["numSegments"]), int(claim["stepsPerSegment"]),
                   None if init is None else as_hash(init), int(claim.get("parentClaimId") or 0),
                   None if origin is None else int(origin))

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], transcript: str) -> TrainingClaim:
        """The claim a validated manifest would commit: `check` without a chain uses it as the claim."""
        init = manifest["config"].get("init") if isinstance(manifest.get("config"), dict) else None
        ok = isinstance(init, dict) and isinstance(init.get("weightsHash"), str) and len(init["weightsHash"]) == 66
        codes = {v: k for k, v in ORIGIN_NAMES.items()}
        pid = init.get("parentClaimId") if ok and isinstance(init, dict) else 0
        return cls(transcript, as_hash(manifest["segmentRoot"]), as_hash(manifest["chainHead"]),
                   as_hash(manifest["finalWeightsHash"]), as_hash(manifest["dataset"]["datasetRoot"]),
                   as_hash(manifest["configHash"]), int(manifest["numSegments"]), int(manifest["stepsPerSegment"]),
                   as_hash(init["weightsHash"]) if ok and isinstance(init, dict) else None,
                   pid if isinstance(pid, int) and not isinstance(pid, bool) else 0,
                   codes.get(str(init.get("origin"))) if ok and isinstance(init, dict) else None)

    def claim_tuple(self) -> tuple[Any, ...]:
        """The `TrainingClaim` struct in ABI order (the three init fields zero when unknown)."""
        return (self.transcript_cid, self.segment_root, self.chain_head, self.final_weights_hash, self.dataset_root,
                self.config_hash, self.num_segments, self.steps_per_segment, self.init_weights_hash or bytes(32),
                self.parent_claim_id, self.origin or 0)

    def to_json(self) -> dict[str, Any]:
        return {"transcriptCid": self.transcript_cid, "segmentRoot": to_hex(self.segment_root),
                "chainHead": to_hex(self.chain_head), "finalWeightsHash": to_hex(self.final_weights_hash),
                "datasetRoot": to_hex(self.dataset_root), "configHash": to_hex(self.config_hash),
                "numSegments": self.num_segments, "stepsPerSegment": self.steps_per_segment,
                "initWeightsHash": None if self.init_weights_hash is None else to_hex(self.init_weights_hash),
                "parentClaimId": self.parent_claim_id,
                "origin": None if self.origin is None else ORIGIN_NAMES.get(self.origin, self.origin)}
