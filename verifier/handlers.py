"""The audit stage of the node (follow -> schedule -> **audit** -> attest): claim kind -> handler, what a
handler may use (`AuditContext`), what the contract assigned (`Assignment`), and the device warm-up.
An audit never raises out of a handler: any failure is a verdict with a reason."""

from __future__ import annotations

import importlib
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry import __version__
from registry.core.claims import TrainingClaim
from registry.store.base import ContentStore
from verifier.audit import (
    DEFAULT_RHO_THRESHOLD,
    UNAVAILABLE,
    AuditReport,
    audit_training_claim,
)
from verifier.engine import ParentLookup
from verifier.jsonlog import JsonLog, short_error


@dataclass
class AuditContext:
    """What a claim handler may use: the content store, where to work, and how to look up other claims."""

    store: ContentStore
    workdir: Path
    device: str = "cpu"
    threshold: float = DEFAULT_RHO_THRESHOLD
    claim_lookup: Callable[[int], tuple[int, dict[str, Any]] | None] = lambda _id: None
    policy: str | None = None  # tolerance policy name (None: the engine's default)
    parent_lookup: ParentLookup | None = None  # a training claim's registered parent (lineage origin)


@dataclass(frozen=True)
class Assignment:
    """What the contract assigned: `segments` from `sampledSegments` (S draws, then the named ones), the
    challenge's `seed` (policies draw extra segments from it by the contract's rule) and how many of the
    segments were draws (`samples_drawn` = the registry's S)."""

    challenge_id: int
    segments: list[int]
    seed: bytes | None = None
    samples_drawn: int | None = None


#: A handler audits one claim: (context, the claim's committed fields as JSON, assignment) -> report.
ClaimHandler = Callable[[AuditContext, dict[str, Any], Assignment], AuditReport]


def audit_training(ctx: AuditContext, claim: dict[str, Any], work: Assignment) -> AuditReport:
    """Kind 1: Proof-of-Learning re-execution of the sampled segments, plus what the policy adds
    (`verifier.audit`)."""
    fields = TrainingClaim.from_event(claim)
    return audit_training_claim(ctx.store, fields, work.segments, threshold=ctx.threshold, device=ctx.device,
                                workdir=ctx.workdir, policy=ctx.policy, seed=work.seed,
                                samples_drawn=work.samples_drawn, parent_lookup=ctx.parent_lookup)


def audit_inference(ctx: AuditContext, claim: dict[str, Any], work: Assignment) -> AuditReport:
    """Kind 2: ZK inference proof checks, from `verifier.zk` when it is installed (imported lazily: the ZK
    stack is heavy and optional); without it the verdict is Unavailable."""
    try:
        zk = importlib.import_module("verifier.zk")
        fields_cls, audit_fn = zk.InferenceClaimFields, zk.audit_inference_claim
    except (ImportError, AttributeError):
        return AuditReport(UNAVAILABLE, "no ZK verifier installed", 0.0)
    model_claim: TrainingClaim | None = None  # None when it cannot be found: the ZK audit says Unavailable
    model_id = int(claim.get("modelClaimId", 0) or 0)
    if model_id:
        found = ctx.claim_lookup(model_id)
        if found is not None and found[0] == 1:
            model_claim = TrainingClaim.from_event(found[1])
    report: AuditReport = audit_fn(ctx.store, fields_cls.from_event(claim), model_claim=model_claim,
                                   workdir=ctx.workdir)
    return report


CLAIM_HANDLERS: dict[int, ClaimHandler] = {1: audit_training, 2: audit_inference}


def register_claim_handler(kind: int, handler: ClaimHandler) -> None:
    """Adds or replaces the audit of a claim kind (the extension point for further checks)."""
    CLAIM_HANDLERS[kind] = handler


def run_handler(ctx: AuditContext, kind: int, claim: dict[str, Any], work: Assignment) -> AuditReport:
    """The handler's report; a handler that raises gives Unavailable with the exception as the reason (the
    daemon retries it like any other unavailability)."""
    handler = CLAIM_HANDLERS.get(kind)
    if handler is None:
        return AuditReport(UNAVAILABLE, f"no handler for claim kind {kind}", 0.0)
    try:
        return handler(ctx, claim, work)
    except Exception as exc:  # noqa: BLE001 - a verdict, never a crash of the daemon
        return AuditReport(UNAVAILABLE, f"audit failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
                           ctx.threshold)


def environment() -> dict[str, Any]:
    """Hardware and software the report was made on (the audit's distances depend on them)."""
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "machine": platform.machine(), "cpus": os.cpu_count(), "proofreg": __version__}
    try:
        import torch

        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def warm_up(device: str, log: JsonLog) -> None:
    """Pays torch's one-time costs (lazy imports behind the first optimizer, the autograd engine's first
    backward: several seconds on a small CPU) at start-up rather than inside the first audit's deadline."""
    started = time.perf_counter()
    try:
        import torch

        model = torch.nn.Linear(4, 2).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model(torch.zeros(2, 4, device=device)).sum().backward()
        opt.step()
    except Exception as exc:  # noqa: BLE001 - only an optimization; the audit reports real failures
        log("warm_up_failed", level="warning", error=short_error(exc))
        return
    log("warmed_up", seconds=round(time.perf_counter() - started, 2))
