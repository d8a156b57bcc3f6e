"""Attest: commit-reveal of the audited verdict (salt persisted before the commitment is signed, position
re-read before each phase, so nothing is sent twice or lost), report publication, and settlement."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from registry.core.hashing import as_hash, to_hex
from registry.core.sampling import commitment_of
from registry.store.base import StoreError
from verifier.audit import UNAVAILABLE, VERDICT_CODE
from verifier.db import Job
from verifier.node import (
    CH_COMMIT_DEADLINE,
    CH_COMMITTED,
    CH_DEADLINE,
    CH_SIZE,
    NodeState,
)


class Attester(NodeState):
    """Commitment, reveal, report publication and settlement of a job."""

    def _publish(self, data: bytes) -> tuple[str, bool]:
        """The report's CID: from the store, or computed locally (same importer, same CID) when the store
        is down, to be published later."""
        try:
            return self.config.store.add_bytes(data), True
        except StoreError as exc:
            from registry.store.unixfs import import_bytes

            self.metrics.inc("publish_failures_total")
            self.log("report_publish_failed", level="warning", error=str(exc))
            return str(import_bytes(data).cid), False

    def _retry_publish(self) -> None:
        for job in self.db.jobs(("audited", "attested", "done")):
            if job.published or job.report is None:
                continue
            data = json.dumps(job.report, sort_keys=True, separators=(",", ":")).encode()
            try:
                stored = self.config.store.add_bytes(data)
            except StoreError:
                return  # still down; next tick
            self.db.update_job(job.challenge_id, published=True)
            self.log("report_published", challenge=job.challenge_id, report=stored)

    def _commitment(self, job: Job) -> bytes:
        assert job.salt is not None
        return commitment_of(VERDICT_CODE[job.verdict or UNAVAILABLE], as_hash(job.results_hash or ""),
                             job.report_cid or "", as_hash(job.salt), self.address)

    def _commit(self, job: Job, ch: Any) -> bool:
        """Sends our one commitment (salt persisted first); True once it is on-chain."""
        assert self.contract is not None and job.position is not None
        cid = job.challenge_id
        # exactly once: re-read our position's commitment right before signing (recover() already ran)
        on_chain = bytes(self.contract.functions.commitments(cid).call()[job.position])
        if on_chain != bytes(32):
            if job.salt is None or on_chain != self._commitment(job):
                self.log("commitment_unknown", level="error", challenge=cid, commitment=to_hex(on_chain))
            self.db.update_job(cid, state="committed")
            return True
        commit_deadline = int(ch[CH_COMMIT_DEADLINE])
        if self.head >= commit_deadline:
            if cid not in self._late_logged:  # once per challenge, not on every tick until the deadline
                self._late_logged.add(cid)
                self.log("commit_too_late", level="warning", challenge=cid, commit_deadline=commit_deadline,
                         head=self.head)
            return False
        if job.salt is None:
            job.salt = to_hex(os.urandom(32))
            self.db.update_job(cid, salt=job.salt)  # on disk before the commitment leaves the process
        if self._tx("commit", cid, "commitVerdict", self._commitment(job)):
            self.db.update_job(cid, state="committed")
            self.log("committed", challenge=cid, verdict=job.verdict)
            return True
        return False

    def _reveal(self, job: Job, ch: Any) -> bool:
        """Reveals our committed verdict once the reveal is open; True once it is on-chain."""
        assert self.contract is not None and job.position is not None
        cid = job.challenge_id
        deadline, commit_deadline = int(ch[CH_DEADLINE]), int(ch[CH_COMMIT_DEADLINE])
        everyone = int(ch[CH_COMMITTED]) == (1 << int(ch[CH_SIZE])) - 1
        if self.head >= deadline:
            self.log("reveal_too_late", level="warning", challenge=cid, deadline=deadline, head=self.head)
            return False
        if self.head < commit_deadline and not everyone:
            return False  # the next block is still in the commit phase
        verdicts = self.contract.functions.verdicts(cid).call()
        if int(verdicts[job.position]) != 0:
            self.db.update_job(cid, state="attested")
            return True
        if job.salt is None:
            self.log("salt_missing", level="error", challenge=cid)
            return False
        verdict = job.verdict or UNAVAILABLE
        ok = self._tx("reveal", cid, "revealVerdict", VERDICT_CODE[verdict], as_hash(job.results_hash or ""),
                      job.report_cid or "", as_hash(job.salt))
        if ok:
            self.db.update_job(cid, state="attested")
            self.metrics.inc("attestations_total", verdict=verdict)
            self.log("attested", challenge=cid, verdict=verdict, report=job.report_cid)
        return ok

    def _maybe_settle(self, cid: int, position: int | None, verdicts: list[int], deadline: int) -> None:
        assert self.params is not None
        counts = [verdicts.count(v) for v in (1, 2, 3)]
        if self.head > deadline:
            self._settle(cid, "deadline")
            return
        if max(counts) < self.params.quorum:
            return
        seen = self._quorum_seen.setdefault(cid, time.monotonic())
        if time.monotonic() - seen >= (position or 0) * self.config.settle_stagger:
            self._settle(cid, "quorum")

    def _settle(self, cid: int, why: str) -> None:
        if self._tx("settle", cid, "settle"):
            self.log("settled", challenge=cid, why=why)
