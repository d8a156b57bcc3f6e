"""Auditing an inference claim (protocol section 5) on a verifier node: the claim's fields from the chain, the
bundle from the content store, and `registry.zk.audit.audit_bundle` (the one audit, which `proofreg zk verify`
runs too) for the checks. docs/zk.md says what a Valid verdict guarantees.

The link has two halves, because the circuit takes the weights as hashed private parameters:
- **weights**: the bundle's ONNX holds, under the family's `state_dict` names, tensors whose canonical weights
  hash is the training claim's `finalWeightsHash`; the proof's params-hash instance equals the Poseidon hash
  this verifier computes from those weights;
- **graph**: this verifier exports the claim's model family (from the project's registry, never from bundle
  code) holding those weights, derives its settings from the bundle's run arguments (they must be the
  bundle's settings), compiles it and runs `setup`: the verification key must be the claim's.
Without a model claim (`modelClaimId` 0) the graph is the bundle's own ONNX.

SRS: a production verifier verifies with its own trusted SRS files, `kzg<logrows>.srs` in `srs_dir` (default
`$PROOFREG_SRS_DIR`, else `$PROOFREG_HOME/srs`): a proof made with any other SRS fails. A bundle marked
`developmentOnly` is `Invalid` unless development SRSs are allowed (`allow_dev_srs`, default
`$PROOFREG_ALLOW_DEV_SRS=1`), as in tests and demos.

Verdicts: `Valid` (the report's `checks.output` is the decoded output exactly as proven); `Invalid` when the
evidence contradicts the claim; `Unavailable` when it cannot be fetched (or no trusted SRS of the right size is
installed). `audit_inference_claim` never raises, whatever the bundle holds (deep JSON included).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.core.claims import TrainingClaim
from registry.core.hashing import as_hash, to_hex
from registry.store.base import ContentStore, StoreError
from registry.zk.audit import (
    DEFAULT_MAX_LOGROWS,
    MAX_FILE_BYTES,
    MAX_JSON_BYTES,
    ClaimDigests,
    ModelLink,
    StoreSource,
    audit_bundle,
    unavailable,
)
from verifier.audit import AuditReport

__all__ = ["DEFAULT_MAX_LOGROWS", "MAX_FILE_BYTES", "InferenceClaimFields", "audit_inference_claim",
           "default_cache_dir", "default_srs_dir", "model_link"]


@dataclass(frozen=True)
class InferenceClaimFields:
    """What the chain says about an inference claim (from its `InferenceClaimCommitted` event)."""

    model_claim_id: int
    vk_hash: bytes
    proof_digest: bytes
    instances_hash: bytes
    bundle_cid: str

    @classmethod
    def from_event(cls, args: dict[str, Any]) -> InferenceClaimFields:
        """From the event's `claim` struct (a dict with the Solidity field names); the whole event args
        (with the struct under "claim") are accepted too."""
        if "claim" in args and "vkHash" not in args:
            args = args["claim"]
        return cls(int(args["modelClaimId"]), as_hash(args["vkHash"]), as_hash(args["proofDigest"]),
                   as_hash(args["instancesHash"]), str(args["bundleCid"]))

    def claim_tuple(self) -> tuple[Any, ...]:
        """The `InferenceClaim` struct in ABI order, for `commitInference`."""
        return (self.model_claim_id, self.vk_hash, self.proof_digest, self.instances_hash, self.bundle_cid)

    def digests(self) -> ClaimDigests:
        return ClaimDigests(self.model_claim_id, self.vk_hash, self.proof_digest, self.instances_hash)


def default_srs_dir() -> Path:
    from registry.chain.deployment import proofreg_home

    env = os.environ.get("PROOFREG_SRS_DIR")
    return Path(env) if env else proofreg_home() / "srs"


def default_cache_dir() -> Path:
    from registry.chain.deployment import proofreg_home

    return proofreg_home() / "zk-cache" / "verifier"


def model_link(store: ContentStore, claim_id: int, model_claim: TrainingClaim) -> ModelLink:
    """The training claim's fields and its manifest, fetched (bounded) from the store when the audit needs it."""
    from registry.pol.transcript import MANIFEST_NAME

    def manifest() -> bytes:
        try:
            data = store.cat(f"{model_claim.transcript_cid}/{MANIFEST_NAME}", 0, MAX_JSON_BYTES + 1)
        except StoreError as exc:
            raise unavailable(f"training claim manifest: {exc}") from None
        return data

    return ModelLink(claim_id, model_claim.final_weights_hash, model_claim.config_hash, manifest)


def audit_inference_claim(store: ContentStore, claim: InferenceClaimFields, *,
                          model_claim: TrainingClaim | None, workdir: Path | None = None,
                          srs_dir: Path | None = None, allow_dev_srs: bool | None = None,
                          cache_dir: Path | None = None) -> AuditReport:
    """Audits an inference claim; `model_claim` is the training claim `claim.model_claim_id` names (None when it
    is 0, or when the caller could not find it: then the verdict is Unavailable)."""
    from registry.zk.pipeline import ezkl_version

    link = model_link(store, claim.model_claim_id, model_claim) \
        if model_claim is not None and claim.model_claim_id != 0 else None
    outcome = audit_bundle(StoreSource(store, claim.bundle_cid), claim.digests(), link,
                           srs_dir=srs_dir if srs_dir is not None else default_srs_dir(),
                           allow_dev_srs=allow_dev_srs if allow_dev_srs is not None
                           else os.environ.get("PROOFREG_ALLOW_DEV_SRS") == "1",
                           cache_dir=cache_dir if cache_dir is not None else default_cache_dir(), workdir=workdir)
    return AuditReport(verdict=outcome.verdict, reason=outcome.reason, threshold=0.0,
                       bytes_fetched=sum(outcome.files.values()), seconds=outcome.seconds, files=outcome.files,
                       checks=outcome.checks,
                       claim={"kind": "inference", "modelClaimId": claim.model_claim_id,
                              "vkHash": to_hex(claim.vk_hash), "proofDigest": to_hex(claim.proof_digest),
                              "instancesHash": to_hex(claim.instances_hash), "bundleCid": claim.bundle_cid},
                       environment={"ezkl": ezkl_version()})
