"""Schedule: every open job brought forward from the contract's current view, never from remembered state
(draw or reseed, read the committee and the sample, queue the audit, commit, reveal, settle)."""

from __future__ import annotations

import time

from web3 import Web3

from registry.chain.rpc import _is_revert
from registry.core.errors import describe_exception
from registry.core.states import CHALLENGE_STATUS
from verifier.db import Job
from verifier.node import (
    BLOCKHASH_WINDOW,
    CH_COMMIT_DEADLINE,
    CH_DEADLINE,
    CH_DRAWN,
    CH_SEED_BLOCK,
    CH_STATUS,
    NodeState,
)


class Scheduler(NodeState):
    """One step per job per tick (`VerifierDaemon.tick`)."""

    def _step(self, job: Job) -> None:
        """Moves one challenge forward from the contract's current state."""
        assert self.contract is not None and self.sender is not None and self.params is not None
        f = self.contract.functions
        cid = job.challenge_id
        try:
            ch = f.getChallenge(cid).call()
        except Exception as exc:
            if not _is_revert(exc):
                raise
            # UnknownChallenge: it existed only on a fork that a reorg removed
            self.db.update_job(cid, state="done", outcome="unknown")
            self.log("challenge_unknown", level="warning", challenge=cid, error=describe_exception(exc))
            return
        status = int(ch[CH_STATUS])
        if status != 1:
            self.db.update_job(cid, state="done", outcome=CHALLENGE_STATUS.get(status))
            self.log("challenge_closed", challenge=cid, outcome=CHALLENGE_STATUS.get(status))
            self._quorum_seen.pop(cid, None)
            return
        if self.sender.pending_for(cid):
            return  # a draw, reseed, attestation or settlement of ours is in flight: recover() follows it up
        seed_block, deadline = int(ch[CH_SEED_BLOCK]), int(ch[CH_DEADLINE])
        if not ch[CH_DRAWN]:
            self._draw_or_reseed(cid, seed_block)
            return
        if job.state == "new":
            members = [Web3.to_checksum_address(a) for a in f.committee(cid).call()]
            if self.address not in members:
                self.db.update_job(cid, state="observer")
                self.log("not_on_committee", challenge=cid)
                return
            segments = [int(s) for s in f.sampledSegments(cid).call()]
            self.db.update_job(cid, state="member", position=members.index(self.address), segments=segments)
            self.log("assigned", challenge=cid, position=members.index(self.address), segments=segments)
            job = self.db.job(cid) or job
        if job.state == "observer":
            if self.head > deadline:
                self._settle(cid, "deadline")
            return
        assert job.position is not None
        verdicts = [int(v) for v in f.verdicts(cid).call()]
        mine = verdicts[job.position] if job.position < len(verdicts) else 0
        if mine != 0 and job.state != "attested":
            self.db.update_job(cid, state="attested")
            self.log("attestation_on_chain", challenge=cid, verdict=mine)
            job.state = "attested"
        if job.state == "member":
            self._queue_audit(job, int(ch[CH_COMMIT_DEADLINE]))
        elif job.state == "audited" and self._commit(job, ch):
            job = self.db.job(cid) or job
            ch = f.getChallenge(cid).call()  # our commitment may have opened the reveal
        if job.state == "committed" and self._reveal(job, ch):
            job.state = "attested"
            verdicts = [int(v) for v in f.verdicts(cid).call()]
        if job.state == "attested":
            self._maybe_settle(cid, job.position, verdicts, deadline)
        elif self.head > deadline:
            self._settle(cid, "deadline")

    def _draw_or_reseed(self, cid: int, seed_block: int) -> None:
        assert self.sender is not None
        if self.head > seed_block + BLOCKHASH_WINDOW:
            self._tx("reseed", cid, "reseed")
        elif self.head > seed_block:
            self._tx("draw", cid, "drawCommittee")

    def _queue_audit(self, job: Job, commit_deadline: int) -> None:
        """Queues the job's audit when its retry is due. A retry backing off (up to a minute) is brought forward
        once the head reaches the give-up point, deadline_margin blocks before the commit deadline: that attempt
        is the last, and its verdict (Unavailable if the evidence is still missing) must be committed in time."""
        if time.time() < job.next_try and not (job.attempts > 0 and self._at_give_up_point(commit_deadline)):
            return
        with self._running_lock:
            if job.challenge_id in self.running:
                return
            self.running.add(job.challenge_id)
        if job.first_try is None:
            self.db.update_job(job.challenge_id, first_try=time.time())
        self.queue.put(job.challenge_id)
