"""Audit: the worker pool that runs a job's audit through its claim kind's handler, retries an Unavailable
verdict with backoff, and writes the report."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from registry.core.hashing import keccak256, to_hex
from verifier.audit import UNAVAILABLE, AuditReport
from verifier.db import Job
from verifier.handlers import Assignment, environment, run_handler, warm_up
from verifier.jsonlog import short_error
from verifier.node import (
    CH_COMMIT_DEADLINE,
    REPORT_FORMAT,
    NodeState,
)


class AuditWorkers(NodeState):
    """The audit threads (`--workers`; one per device is the sane setting)."""

    def _worker(self) -> None:
        if threading.current_thread().name == "audit-0":
            warm_up(self.config.device, self.log)
        while True:
            cid = self.queue.get()
            if cid < 0:
                return
            try:
                self._audit(cid)
            except Exception as exc:  # noqa: BLE001 - the job is retried, the worker lives on
                self.log("audit_crashed", level="error", challenge=cid, error=short_error(exc))
                self.db.update_job(cid, next_try=time.time() + self.config.retry_base)
            finally:
                with self._running_lock:
                    self.running.discard(cid)

    def _audit(self, cid: int) -> None:
        job = self.db.job(cid)
        if job is None or job.state != "member" or self.stop_event.is_set():
            return
        found = self._claim(job.claim_id)
        started = time.perf_counter()
        if found is None:
            report = AuditReport(UNAVAILABLE, f"claim {job.claim_id}: commit event not found", 0.0)
            kind, claim = 0, dict[str, Any]()
        else:
            kind, claim = found
            self.log("audit_started", challenge=cid, claim=job.claim_id, kind=kind, segments=job.segments,
                     attempt=job.attempts + 1)
            report = run_handler(self.ctx, kind, claim, Assignment(cid, job.segments or [], self._seed(cid),
                                                                    self.params.samples if self.params else None))
        seconds = time.perf_counter() - started
        self.metrics.inc("audit_seconds_total", seconds)
        self.metrics.inc("audits_total", verdict=report.verdict)
        if report.verdict == UNAVAILABLE and not self._give_up(job):
            delay = min(self.config.retry_base * 2 ** job.attempts, 60.0)
            self.db.update_job(cid, attempts=job.attempts + 1, next_try=time.time() + delay, reason=report.reason)
            self.metrics.inc("audit_retries_total")
            self.log("audit_unavailable_retry", level="warning", challenge=cid, reason=report.reason, retry_in=delay)
            return
        doc = {"format": REPORT_FORMAT, "challengeId": cid, "claimId": job.claim_id, "claimKind": kind,
               "verifier": self.address, "assignedSegments": job.segments or [], "attempts": job.attempts + 1,
               "audit": report.to_json(), "resultsHash": to_hex(keccak256(report.results_bytes())),
               "environment": environment(), "finishedAt": int(time.time())}
        data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        report_cid, published = self._publish(data)
        self.db.update_job(cid, state="audited", verdict=report.verdict, reason=report.reason,
                           results_hash=doc["resultsHash"], report_cid=report_cid, report=doc, published=published,
                           attempts=job.attempts + 1)
        self.log("audited", challenge=cid, verdict=report.verdict, reason=report.reason, seconds=round(seconds, 3),
                 report=report_cid, published=published)

    def _seed(self, cid: int) -> bytes | None:
        """The drawn challenge's seed (None if the chain cannot be read now: the policy then adds no draws)."""
        assert self.contract is not None
        try:
            return bytes(self.contract.functions.seedOf(cid).call())
        except Exception:  # noqa: BLE001
            return None

    def _give_up(self, job: Job) -> bool:
        """Whether an Unavailable result is final: retried long enough, or the deadline is near."""
        assert self.contract is not None
        first = job.first_try or time.time()
        if time.time() - first >= self.config.unavailable_after:
            return True
        try:
            deadline = int(self.contract.functions.getChallenge(job.challenge_id).call()[CH_COMMIT_DEADLINE])
        except Exception:  # noqa: BLE001 - no chain now: keep retrying, the main loop backs off
            return False
        return self._at_give_up_point(deadline)
