"""Auditing a training claim (SPEC sections 5 and 6): the daemon's entry point to the re-execution engine.

`audit_training_claim` fetches only the manifest and the files of the segments to check from a content store,
ties the manifest to the on-chain claim, re-executes each segment and compares it with the next checkpoint
(`verifier.engine` does the work; `verifier.policy` says what passes).

Verdicts follow the contract's: `Valid` when every audited segment reproduces within the tolerance,
`Invalid` when the evidence contradicts the claim (a digest mismatch, a malformed transcript, a segment
that does not reproduce), `Unavailable` when the evidence cannot be fetched. A failure is a verdict with its
reason, never an exception out of `audit_training_claim`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from registry.core.claims import TrainingClaim
from registry.spec.datasets import Dataset
from registry.store.base import ContentStore
from verifier.engine import Limits, ParentLookup, StoreSource
from verifier.engine import audit as run_audit
from verifier.policy import DEFAULT_POLICY, TolerancePolicy, get_policy
from verifier.report import (
    INVALID,
    UNAVAILABLE,
    VALID,
    VERDICT_CODE,
    AuditReport,
    ParentClaim,
    SegmentResult,
)

__all__ = ["DEFAULT_RHO_THRESHOLD", "INVALID", "UNAVAILABLE", "VALID", "VERDICT_CODE", "AuditReport",
           "SegmentResult", "TrainingClaim", "audit_training_claim", "chain_parent_lookup"]

#: δ of the default tolerance policy "pol-tolerance/1" (`verifier.policy`, calibrated in README).
DEFAULT_RHO_THRESHOLD = get_policy(DEFAULT_POLICY).threshold


def audit_training_claim(store: ContentStore, claim: TrainingClaim, segments: list[int], *,
                         dataset: Dataset | None = None, threshold: float = DEFAULT_RHO_THRESHOLD,
                         device: str = "cpu", workdir: Path | None = None, policy: TolerancePolicy | str | None = None,
                         seed: bytes | None = None, samples_drawn: int | None = None, prefetch: bool = True,
                         limits: Limits | None = None,
                         on_segment: Callable[[SegmentResult], None] | None = None,
                         parent_lookup: ParentLookup | None = None) -> AuditReport:
    """Audits the given segments (duplicates are checked once) of a training claim, plus what the policy adds.

    `policy`: a `TolerancePolicy` or a shipped policy's name (default `pol-tolerance/1`); `threshold`, when
    changed from the default, overrides its δ. `seed` (the challenge's seed) lets the policy draw its extra
    segments by the contract's rule, continuing after the `samples_drawn` draws the contract made (default:
    len(segments)). `prefetch` fetches the next segment's files while one replays. `parent_lookup(claimId)`:
    the chain's view of a fine-tuning parent (`ParentClaim`, None if unregistered); without it a claim of
    origin Parent is Unavailable."""
    pol = policy if isinstance(policy, TolerancePolicy) else get_policy(policy)
    if threshold != DEFAULT_RHO_THRESHOLD:
        pol = pol.with_overrides(threshold=threshold)
    drawn = len(segments) if samples_drawn is None else samples_drawn
    return run_audit(StoreSource(store, claim.transcript_cid), claim, segments, policy=pol, dataset=dataset,
                     store=store, device=device, workdir=workdir, seed=seed, samples_drawn=drawn,
                     prefetch=prefetch, limits=limits, on_segment=on_segment, parent_lookup=parent_lookup)


_CLAIM_STATUS = ("None", "Committed", "Valid", "Invalid", "Finalized")


def chain_parent_lookup(registry: Any, from_block: int = 0) -> ParentLookup:
    """A `ParentLookup` over a web3 ProofRegistry contract: the parent's `finalWeightsHash` from its
    `TrainingClaimCommitted` event, its status from `getClaim`, taint from `isTainted` (any ancestor Invalid).
    None when no training claim of that id was committed. For the daemon to pass to `audit_training_claim`."""

    def lookup(claim_id: int) -> ParentClaim | None:
        logs = registry.events.TrainingClaimCommitted.get_logs(from_block=from_block,
                                                                argument_filters={"claimId": claim_id})
        if not logs:
            return None
        info = registry.functions.getClaim(claim_id).call()
        status = info[3] if isinstance(info, list | tuple) else info["status"]
        name = _CLAIM_STATUS[int(status)] if 0 <= int(status) < len(_CLAIM_STATUS) else str(status)
        tainted = bool(registry.functions.isTainted(claim_id).call())
        return ParentClaim(int(claim_id), bytes(logs[0]["args"]["finalWeightsHash"]), name, tainted)

    return lookup
