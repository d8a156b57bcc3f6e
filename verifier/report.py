"""What an audit produces: the claim it checked, per-segment results, the verdict, and how it is written out
(the report JSON that goes to IPFS with an attestation, its canonical results bytes, and a PNG plot).

Kept apart from the engine so the daemon, `check` and `calibrate` share one report format.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.hashing import as_hash, to_hex

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
    init_weights_hash: bytes = b""  # canonical weights hash of checkpoint 0 (empty: not known, e.g. `check`)
    parent_claim_id: int = 0  # the training claim whose final weights are checkpoint 0 (origin Parent)
    origin: int = 0  # InitOrigin: 0 Seed, 1 Parent, 2 External

    @classmethod
    def from_event(cls, claim: dict[str, Any]) -> TrainingClaimFields:
        init = claim.get("initWeightsHash")
        return cls(str(claim["transcriptCid"]), as_hash(claim["segmentRoot"]), as_hash(claim["chainHead"]),
                   as_hash(claim["finalWeightsHash"]), as_hash(claim["datasetRoot"]), as_hash(claim["configHash"]),
                   int(claim["numSegments"]), int(claim["stepsPerSegment"]),
                   as_hash(init) if init is not None else b"", int(claim.get("parentClaimId", 0) or 0),
                   int(claim.get("origin", 0) or 0))

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], transcript: str) -> TrainingClaimFields:
        """The claim a validated manifest would commit: `check` without a chain uses it as the claim."""
        return cls(transcript, as_hash(manifest["segmentRoot"]), as_hash(manifest["chainHead"]),
                   as_hash(manifest["finalWeightsHash"]), as_hash(manifest["dataset"]["datasetRoot"]),
                   as_hash(manifest["configHash"]), int(manifest["numSegments"]), int(manifest["stepsPerSegment"]))

    def to_json(self) -> dict[str, Any]:
        return {"transcriptCid": self.transcript_cid, "segmentRoot": to_hex(self.segment_root),
                "chainHead": to_hex(self.chain_head), "finalWeightsHash": to_hex(self.final_weights_hash),
                "datasetRoot": to_hex(self.dataset_root), "configHash": to_hex(self.config_hash),
                "numSegments": self.num_segments, "stepsPerSegment": self.steps_per_segment,
                "initWeightsHash": to_hex(self.init_weights_hash) if self.init_weights_hash else None,
                "parentClaimId": self.parent_claim_id, "origin": self.origin}


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


@dataclass
class SegmentResult:
    """One audited segment. `why` says why it was audited: "assigned" (the contract's draws or named by the
    challenger), "extra" (the policy's further draws), "top-q" (largest update of its epoch)."""

    index: int
    rho: float | None = None
    linf: float | None = None
    cosine: float | None = None
    passed: bool = False
    error: str | None = None
    why: list[str] = field(default_factory=list)
    epoch: int | None = None
    update_norm: float | None = None  # recomputed from the two checkpoints
    claimed_update_norm: float | None = None  # what the manifest says
    steps: int = 0
    examples_proved: int = 0
    unavailable: bool = False  # the evidence could not be fetched (not a proof of fraud)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The deterministic part (what `resultsHash` covers): no timings."""
        return {"index": self.index, "rho": _finite(self.rho), "linf": _finite(self.linf),
                "cosine": _finite(self.cosine), "passed": self.passed, "error": self.error}

    def to_full_json(self) -> dict[str, Any]:
        return {**self.to_json(), "why": self.why, "epoch": self.epoch, "updateNorm": _finite(self.update_norm),
                "claimedUpdateNorm": self.claimed_update_norm, "steps": self.steps,
                "examplesProved": self.examples_proved, "unavailable": self.unavailable,
                "seconds": round(self.seconds, 4)}


@dataclass
class AuditReport:
    verdict: str
    reason: str
    threshold: float
    segments: list[SegmentResult] = field(default_factory=list)
    bytes_fetched: int = 0  # transcript files (manifest, checkpoints, batches)
    dataset_bytes_fetched: int = 0
    seconds: float = 0.0
    policy: dict[str, Any] = field(default_factory=dict)
    claim: dict[str, Any] = field(default_factory=dict)
    init: dict[str, Any] | None = None
    checks: dict[str, Any] = field(default_factory=dict)  # merkle/membership proof counts, final weights...
    files: dict[str, int] = field(default_factory=dict)  # what was fetched, bytes per file
    environment: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.reason, "threshold": self.threshold,
                "segments": [s.to_full_json() for s in self.segments], "bytesFetched": self.bytes_fetched,
                "datasetBytesFetched": self.dataset_bytes_fetched, "seconds": round(self.seconds, 3),
                "policy": self.policy, "claim": self.claim, "init": self.init, "checks": self.checks,
                "files": self.files, "environment": self.environment}

    def results_bytes(self) -> bytes:
        """Canonical JSON of the per-segment results, whose keccak256 is the attestation's `resultsHash`."""
        body = {"verdict": self.verdict, "segments": [s.to_json() for s in self.segments]}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def write(self, path: str | Path) -> Path:
        """The full report as JSON (what a daemon pins as `reportCid`, what `check` writes)."""
        out = Path(path)
        out.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True, allow_nan=False) + "\n")
        return out


def plot_report(report: AuditReport, path: str | Path, title: str = "") -> Path:
    """PNG of per-segment ρ (log scale) against the policy's δ; failing segments in red, exact zeros drawn at
    the floor. Uses matplotlib's Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    segs = [s for s in report.segments if s.rho is not None]
    floor = 1e-12
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    try:
        xs = [s.index for s in segs]
        ys = [max(float(s.rho), floor) if s.rho is not None else floor for s in segs]
        colors = ["tab:green" if s.passed else "tab:red" for s in segs]
        if segs:
            ax.scatter(xs, ys, c=colors, zorder=3, label="ρ per segment (green: pass, red: fail)")
        errored = [s.index for s in report.segments if s.rho is None]
        if errored:
            ax.scatter(errored, [floor] * len(errored), marker="x", c="tab:red", zorder=3,
                       label="not replayed (error)")
        delta = report.threshold
        if delta > 0:
            ax.axhline(delta, color="tab:orange", linestyle="--", label=f"δ = {delta:g}")
        ax.set_yscale("log")
        ax.set_ylim(floor / 2, max([*ys, delta, 1.0]) * 5)
        ax.set_xlabel("segment")
        ax.set_ylabel("ρ = ‖W′ − W_{i+1}‖ / ‖W_{i+1} − W_i‖")
        ax.set_title(title or f"{report.verdict}: {report.reason}"[:100], fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
        fig.tight_layout()
        out = Path(path)
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)
    return out
