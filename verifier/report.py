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

VALID, INVALID, UNAVAILABLE = "Valid", "Invalid", "Unavailable"
VERDICT_CODE = {VALID: 1, INVALID: 2, UNAVAILABLE: 3}


@dataclass(frozen=True)
class ParentClaim:
    """What the chain says about a fine-tuning parent: its committed final weights and whether it (or any of
    its ancestors) was judged Invalid. `status`: the contract's claim status name (e.g. "Valid", "Invalid",
    "Pending")."""

    claim_id: int
    final_weights_hash: bytes
    status: str
    tainted: bool = False


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
    #: full-state comparison against checkpoint i+1: class name → StateDistance.to_json() (buffers,
    #: integer buffers, each optimizer state key)
    state: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The deterministic part (what `resultsHash` covers): no timings."""
        return {"index": self.index, "rho": _finite(self.rho), "linf": _finite(self.linf),
                "cosine": _finite(self.cosine), "passed": self.passed, "error": self.error,
                "state": self.state}

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
    """PNG of per-segment ρ against the policy's δ (`registry.cli.plots.rho_plot`: exact zeros and infinities in
    their own labelled bands, δ as a line, legend outside the data)."""
    from registry.cli.plots import RhoPoint, rho_plot

    points = [RhoPoint(s.index, s.rho, s.passed) for s in report.segments]
    rho_plot(points, report.threshold, path, title or f"{report.verdict}: {report.reason}")
    return Path(path)
