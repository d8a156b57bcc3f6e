"""The verifier node daemon (`proofreg-verifier run`, SPEC sections 5 and 7).

One loop, one thread for the chain, a small pool of audit workers. The node's data flow is
follow -> schedule -> audit -> attest, and the code follows it: `verifier.follower` (events, cursor,
reorgs), `verifier.schedule` (jobs brought forward from the contract's view), `verifier.work` (the worker
pool; `verifier.handlers`: claim kind -> audit), `verifier.attest` (commit-reveal, reports, settlement) and
`verifier.txsender` (signed, persisted, re-broadcast transactions), over the state in `verifier.node`. This
module composes them: configuration, start-up, the main loop, events and health.

- **Registration.** At start, registers the account with the stake (`--stake`, default the registry's
  minimum) unless it is already registered.
- **Events.** `verifier.follower.Follower` reads the registry's events `--confirmations` blocks behind the
  head from a cursor persisted in SQLite (`verifier.db`), backfills after downtime and rewinds on reorgs.
  Commit events give the claims' fields; `ChallengeOpened` creates a job.
- **Jobs.** Every poll, each open job is brought forward from the contract's *current* view functions, never
  from remembered state: draw the committee once the seed block is mined (or `reseed` once its hash is
  gone), read `committee` and `sampledSegments`, queue the audit, commit to the verdict, reveal it, settle.
  So a daemon restarted after a crash, a reorg or a long outage simply continues.
- **Audits** run on `--workers` threads (the GPU queue: one worker per device is the sane setting). The
  claim kind picks the handler from `CLAIM_HANDLERS` (training: `verifier.audit`; inference: `verifier.zk`
  when installed); `register_claim_handler` adds more. An audit never raises out of a handler: any failure
  is a verdict with a reason. An `Unavailable` verdict (evidence not fetchable) is retried with backoff
  and only attested once `--unavailable-after` seconds have passed or the deadline is `--deadline-margin`
  blocks away, so a content daemon that is briefly down does not flip verdicts.
- **Attestations are commit-reveal.** In the commit phase the daemon sends
  `commitmentOf(verdict, resultsHash, reportCid, salt, self)`; the 32-byte random salt is written to the state
  file *before* the commitment is signed, so a restarted daemon always holds the salt of any commitment it
  made. Once the reveal opens (the commit deadline passed, or every member committed) it reveals. Before each
  phase it re-reads its position on-chain (`commitments`, `verdicts`), so a commitment or reveal is never
  sent twice, and a revealed vote is never lost: a job leaves `committed` only when the chain shows its
  verdict.
- **Reports** (JSON: verdict, per-segment distances, threshold, hardware, software) are published to the
  content store; their CID goes into the commitment and the reveal. If the store is down the CID is
  computed locally (same importer, same CID) and publishing is retried until it succeeds.
- **Transactions** are signed locally and written to the state file *before* they are broadcast; a
  pending one is re-broadcast (same bytes, same nonce) when the node dropped it, and one whose nonce was
  taken by another is abandoned after re-checking the chain. Before every attestation the daemon checks
  on-chain that its position holds no verdict yet and that no attestation of its own is pending, so each
  challenge gets exactly one attestation across crashes and restarts.
- **Settlement.** A committee member settles once a verdict has a quorum (staggered by position so members
  do not race), anyone tracked settles after the deadline.
- **Faults.** Any RPC failure makes the tick end and the loop back off (exponentially, up to 30 s);
  content-store failures become retries of the audit. SIGTERM/SIGINT stop the loop, wait up to `--grace`
  seconds for running audits, and exit 0; unfinished audits run again after a restart.
- **Observability.** JSON-lines logs on stderr (never a key: the signer only exposes its address);
  `/healthz` and `/metrics` (Prometheus) on 127.0.0.1:`--metrics-port`.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from typing import Any

from web3 import HTTPProvider, Web3
from web3.contract import Contract

from registry import __version__
from registry.chain.deployment import DeploymentError, load_deployment
from registry.chain.rpc import TransactionError
from registry.chain.signer import Signer
from registry.core.artifact import load_artifact
from registry.core.params import RegistryParams
from registry.core.states import CHALLENGE_STATUS
from verifier.attest import Attester
from verifier.audit import (
    chain_parent_lookup,
)
from verifier.db import StateDB, StateMismatch
from verifier.engine import InitUnavailable, ParentClaim
from verifier.follower import Event, Follower
from verifier.handlers import (
    AuditContext,
)
from verifier.jsonlog import JsonLog, short_error
from verifier.metrics import HealthServer, Metrics
from verifier.node import (
    V_STAKE,
    V_STATUS,
    DaemonConfig,
    event_json,
)
from verifier.schedule import Scheduler
from verifier.txsender import TxSender
from verifier.work import AuditWorkers


class VerifierDaemon(Scheduler, AuditWorkers, Attester):
    """The node: the stages of `verifier.schedule`, `verifier.work` and `verifier.attest` over one state."""

    def __init__(self, config: DaemonConfig, signer: Signer, log: JsonLog | None = None) -> None:
        self.config = config
        self.signer = signer
        self.address = Web3.to_checksum_address(signer.address)
        self.log = log or JsonLog(extra={"verifier": self.address})
        self.metrics = Metrics()
        self._declare_metrics()
        self.stop_event = threading.Event()
        self.db = StateDB(config.state_path)
        self.queue: queue.Queue[int] = queue.Queue()
        self.running: set[int] = set()
        self._running_lock = threading.Lock()
        self._quorum_seen: dict[int, float] = {}
        self.head = 0
        self.last_ok = 0.0
        self.registered = False
        self._register_tried = False
        self._late_logged: set[int] = set()
        self.w3: Web3 | None = None
        self.contract: Contract | None = None
        self.params: RegistryParams | None = None
        self.follower: Follower | None = None
        self.sender: TxSender | None = None
        self.health: HealthServer | None = None
        self._workers: list[threading.Thread] = []
        config.workdir.mkdir(parents=True, exist_ok=True)
        self.ctx = AuditContext(config.store, config.workdir, config.device, config.threshold, self._claim,
                                config.policy, self._parent)

    def _parent(self, claim_id: int) -> ParentClaim | None:
        """A training claim's registered parent, read from the chain at audit time (lineage origin)."""
        if self.contract is None:
            raise InitUnavailable(f"parent claim {claim_id}: not connected to the chain")
        try:
            return chain_parent_lookup(self.contract)(claim_id)
        except Exception as exc:  # noqa: BLE001 - any RPC failure: the parent cannot be looked up now
            raise InitUnavailable(f"parent claim {claim_id} cannot be looked up: {str(exc).splitlines()[0][:200]}"
                                  ) from None

    def _declare_metrics(self) -> None:
        m = self.metrics
        for name, kind, text in [
            ("head_block", "gauge", "Latest block seen"), ("cursor_block", "gauge", "Last block scanned for events"),
            ("lag_blocks", "gauge", "Blocks between head and cursor"), ("jobs", "gauge", "Jobs by state"),
            ("audits_running", "gauge", "Audits in progress"),
            ("audit_queue_depth", "gauge", "Audits queued for a free worker"),
            ("audits_total", "counter", "Audits by verdict"),
            ("audit_seconds_total", "counter", "Time spent auditing"),
            ("attestations_total", "counter", "Attestations revealed by verdict"),
            ("tx_sent_total", "counter", "Transactions sent by purpose"),
            ("tx_resent_total", "counter", "Pending transactions re-broadcast"),
            ("tx_failed_total", "counter", "Transactions mined with a failure status"),
            ("rpc_errors_total", "counter", "Ticks ended by an RPC failure"),
            ("audit_retries_total", "counter", "Unavailable audits scheduled again"),
            ("reorgs_total", "counter", "Reorgs detected at the cursor"),
            ("events_total", "counter", "Registry events processed by name"),
            ("publish_failures_total", "counter", "Report publications that failed (retried)"),
        ]:
            m.declare(name, kind, text)

    # ---- start-up ---------------------------------------------------------------------------------------

    def _connect(self) -> None:
        """Connects to the node and the registry of the deployment record, retrying while it is down."""
        delay = 1.0
        while not self.stop_event.is_set():
            try:
                w3 = self.config.web3_factory() if self.config.web3_factory is not None else Web3(
                    HTTPProvider(self.config.rpc_url, request_kwargs={"timeout": self.config.rpc_timeout},
                                 exception_retry_configuration=None))
                chain_id = int(w3.eth.chain_id)
                record = load_deployment(self.config.deployment_path, chain_id=chain_id)
                address = Web3.to_checksum_address(record.address)
                if not w3.eth.get_code(address):
                    raise DeploymentError(f"no contract at {address} on chain {chain_id}: stale deployment record")
                self.w3 = w3
                self.contract = w3.eth.contract(address=address, abi=load_artifact().abi)
                self.params = RegistryParams.from_tuple(self.contract.functions.parameters().call())
                self.db.bind(chain_id, address, self.address)
                start = self.config.from_block if self.config.from_block is not None else record.block_number
                self.follower = Follower(w3, self.contract, self.db, start_block=start,
                                         confirmations=self.config.confirmations, chunk=self.config.chunk,
                                         on_reorg=self._on_reorg)
                self.sender = TxSender(w3, self.contract, self.signer, self.db, self.metrics, self.log,
                                       receipt_timeout=self.config.receipt_timeout,
                                       resend_after=self.config.resend_after)
                self.log("connected", chain_id=chain_id, registry=address, rpc=self.config.rpc_url,
                         start_block=start, cursor=self.db.cursor())
                return
            except (DeploymentError, StateMismatch):
                raise
            except Exception as exc:  # noqa: BLE001 - the node may be down at start: wait for it
                self.metrics.inc("rpc_errors_total")
                self.log("rpc_unreachable", level="warning", error=short_error(exc), retry_in=delay)
                self.stop_event.wait(delay)
                delay = min(delay * 2, 30.0)

    def _ensure_registered(self) -> None:
        """Registers once per process when the account is no verifier yet; until the chain shows it
        registered (a pending or failed registration), re-checks every tick."""
        assert self.contract is not None and self.params is not None and self.sender is not None
        v = self.contract.functions.getVerifier(self.address).call()
        status, stake = int(v[V_STATUS]), int(v[V_STAKE])
        if status != 0:
            self.registered = True
            if stake < self.params.verifier_stake:
                self.log("stake_below_minimum", level="warning", stake=stake, minimum=self.params.verifier_stake)
            if status == 2:
                self.log("exiting", level="warning", note="serves committees already drawn; not drawn again")
            return
        if self._register_tried:
            return
        self._register_tried = True
        if not self.config.register:
            self.log("not_registered", level="warning", note="--no-register: never drawn onto a committee")
            return
        if any(t.purpose == "register" for t in self.db.pending_txs()):
            self.log("registration_pending")  # sent before a restart; recover() follows it up
            return
        amount = self.config.stake or self.params.verifier_stake
        try:
            receipt = self.sender.send("register", None, "registerVerifier", value=amount)
        except TransactionError as exc:  # e.g. too little balance: keep following and say why
            self.log("registration_failed", level="error", stake=amount, error=str(exc))
            return
        self.log("registration_sent", stake=amount, mined=receipt is not None)
        self.registered = receipt is not None and int(receipt["status"]) == 1

    # ---- main loop --------------------------------------------------------------------------------------

    def run(self) -> int:
        """Runs until SIGTERM/SIGINT (or `stop()`); returns the exit code."""
        self._install_signals()
        self.log("starting", version=__version__, state=str(self.config.state_path), workers=self.config.workers,
                 device=self.config.device, confirmations=self.config.confirmations)
        if self.config.metrics_port is not None:
            self.health = HealthServer(self.config.metrics_port, self.metrics, self._health)
            self.health.start()
            self.log("health_listening", port=self.health.port)
        try:
            self._connect()
            if self.stop_event.is_set():
                return 0
            for i in range(max(1, self.config.workers)):
                t = threading.Thread(target=self._worker, name=f"audit-{i}", daemon=True)
                t.start()
                self._workers.append(t)
            delay = 1.0
            while not self.stop_event.is_set():
                try:
                    if not self.registered:
                        self._ensure_registered()
                    busy = self.tick()
                    self.last_ok = time.time()
                    delay = 1.0
                    if not busy:
                        self.stop_event.wait(self.config.poll_interval)
                except Exception as exc:  # noqa: BLE001 - RPC outages, node restarts: back off and go on
                    self.metrics.inc("rpc_errors_total")
                    self.log("tick_failed", level="warning", error=short_error(exc), retry_in=delay)
                    self.stop_event.wait(delay)
                    delay = min(delay * 2, 30.0)
            return 0
        finally:
            self._shutdown()

    def stop(self) -> None:
        self.stop_event.set()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, _frame: Any) -> None:
            self.log("signal", signal=signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.config.grace
        for _ in self._workers:
            self.queue.put(-1)
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        unfinished = self._running_now()
        if self.health is not None:
            self.health.stop()
        self.log("stopped", unfinished_audits=unfinished)
        self.db.close()

    def tick(self) -> bool:
        """One pass: pending transactions, new events, every open job. True when there is more to scan."""
        assert self.follower is not None and self.sender is not None
        scanned = self.follower.poll(self._on_event)  # first: a reorg abandons the transactions of its jobs
        self.head = self.follower.head
        self.sender.recover()
        for job in self.db.jobs():
            if self.stop_event.is_set():
                break
            self._step(job)
        self._retry_publish()
        m = self.metrics
        m.set("head_block", self.head)
        m.set("cursor_block", self.follower.cursor)
        m.set("lag_blocks", self.follower.lag)
        for state, n in self.db.job_counts().items():
            m.set("jobs", n, state=state)
        m.set("audits_running", len(self._running_now()))
        m.set("audit_queue_depth", self.queue.qsize())
        return scanned >= self.follower.chunk

    # ---- events -----------------------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        self.metrics.inc("events_total", name=event.name)
        args = event.args
        if event.name in ("TrainingClaimCommitted", "InferenceClaimCommitted"):
            kind = 1 if event.name == "TrainingClaimCommitted" else 2
            self.db.put_claim(int(args["claimId"]), kind, event_json(args["claim"]), event.block)
        elif event.name == "ChallengeOpened":
            cid = int(args["challengeId"])
            if self.db.add_job(cid, int(args["claimId"]), event.block):
                self.log("challenge_seen", challenge=cid, claim=int(args["claimId"]), block=event.block,
                         seed_block=int(args["seedBlock"]), commit_deadline=int(args["commitDeadline"]),
                         deadline=int(args["deadline"]))
        elif event.name == "ChallengeSettled":
            cid = int(args["challengeId"])
            job = self.db.job(cid)
            if job is not None and job.state != "done":
                self.db.update_job(cid, state="done", outcome=CHALLENGE_STATUS.get(int(args["outcome"])))

    def _on_reorg(self, fork: int, reset: int) -> None:
        self.metrics.inc("reorgs_total")
        self.log("reorg", level="warning", fork_point=fork, jobs_reset=reset)

    def _claim(self, claim_id: int) -> tuple[int, dict[str, Any]] | None:
        """The claim's committed fields: from the state file, else from its commit event (a claim committed
        before `--from-block`)."""
        found = self.db.get_claim(claim_id)
        if found is not None:
            return found
        assert self.contract is not None
        for kind, name in ((1, "TrainingClaimCommitted"), (2, "InferenceClaimCommitted")):
            logs = getattr(self.contract.events, name)().get_logs(from_block=0,
                                                                   argument_filters={"claimId": claim_id})
            if logs:
                self.db.put_claim(claim_id, kind, event_json(logs[0]["args"]["claim"]), int(logs[0]["blockNumber"]))
                return kind, event_json(dict(logs[0]["args"]["claim"]))
        return None

    # ---- health -----------------------------------------------------------------------------------------

    def _running_now(self) -> list[int]:
        with self._running_lock:
            return sorted(self.running)

    def _health(self) -> tuple[int, dict[str, Any]]:
        age = time.time() - self.last_ok if self.last_ok else None
        stale = age is None or age > max(30.0, 10 * self.config.poll_interval)
        status = "stopping" if self.stop_event.is_set() else ("degraded" if stale else "ok")
        data = {"status": status, "verifier": self.address, "registered": self.registered, "head": self.head,
                "cursor": self.follower.cursor if self.follower else None,
                "lag": self.follower.lag if self.follower else None,
                "lastTickAgeSeconds": None if age is None else round(age, 3),
                "auditsRunning": self._running_now(), "auditQueueDepth": self.queue.qsize(),
                "jobs": self.db.job_counts()}
        return (503 if stale and not self.stop_event.is_set() else 200), data
