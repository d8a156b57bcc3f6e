"""What every stage of the verifier node shares (`verifier.daemon` composes the stages): its configuration,
the contract's tuple positions, the state the stages read and write, and the one way they send a transaction.
The stages follow the node's data flow: `verifier.follower` (follow) -> `verifier.schedule` -> `verifier.work`
(audit) -> `verifier.attest`."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract import Contract

from registry.chain.rpc import TransactionError
from registry.core.hashing import to_hex
from registry.core.params import RegistryParams
from registry.store.base import ContentStore
from verifier.audit import DEFAULT_RHO_THRESHOLD
from verifier.db import Job, StateDB
from verifier.handlers import AuditContext
from verifier.jsonlog import JsonLog
from verifier.metrics import Metrics
from verifier.txsender import TxSender

REPORT_FORMAT = "proofreg-verifier-report/1"
BLOCKHASH_WINDOW = 256
#: getChallenge tuple positions (the contract's Challenge struct). CH_DEADLINE is the reveal (settlement)
#: deadline.
CH_STATUS, CH_SIZE, CH_DRAWN, CH_SEED_BLOCK, CH_DEADLINE, CH_COMMIT_DEADLINE, CH_COMMITTED = 2, 3, 5, 6, 7, 8, 10
#: getVerifier tuple positions.
V_STAKE, V_STATUS = 0, 2


def event_json(value: Any) -> Any:
    """Event arguments as JSON: bytes become 0x-hex, tuples lists, attribute dicts plain dicts."""
    if isinstance(value, bytes | bytearray):
        return to_hex(bytes(value))
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): event_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [event_json(v) for v in value]
    return value


@dataclass
class DaemonConfig:
    rpc_url: str
    state_path: Path
    store: ContentStore
    workdir: Path
    deployment_path: Path | None = None
    confirmations: int = 2
    poll_interval: float = 1.0
    workers: int = 1
    device: str = "cpu"
    threshold: float = DEFAULT_RHO_THRESHOLD
    policy: str | None = None
    stake: int | None = None
    register: bool = True
    metrics_port: int | None = None
    from_block: int | None = None
    unavailable_after: float = 120.0
    deadline_margin: int = 5
    retry_base: float = 2.0
    rpc_timeout: float = 10.0
    receipt_timeout: float = 30.0
    resend_after: float = 30.0
    grace: float = 30.0
    settle_stagger: float = 2.0
    chunk: int = 2000
    #: Builds the node connection instead of an HTTP provider for `rpc_url` (the main job runs its verifier
    #: nodes as threads over the embedded in-process chain this way).
    web3_factory: Callable[[], Web3] | None = None


class NodeState:
    """The node's shared state, set up by `VerifierDaemon.__init__` and `_connect`, and the stages' calls into
    each other (defined by the stage that owns them)."""

    config: DaemonConfig
    address: ChecksumAddress
    log: JsonLog
    metrics: Metrics
    stop_event: threading.Event
    db: StateDB
    queue: queue.Queue[int]
    running: set[int]
    _running_lock: threading.Lock
    _quorum_seen: dict[int, float]
    _late_logged: set[int]
    head: int
    contract: Contract | None
    params: RegistryParams | None
    sender: TxSender | None
    ctx: AuditContext

    def _tx(self, purpose: str, cid: int, fn_name: str, *args: Any) -> bool:
        """Sends a transaction; a revert at estimation (someone was faster, the deadline passed) is logged
        and the job re-reads the chain next tick."""
        assert self.sender is not None
        try:
            receipt = self.sender.send(purpose, cid, fn_name, cid, *args)
        except TransactionError as exc:
            self.log(f"{purpose}_skipped", challenge=cid, reason=str(exc))
            return False
        return receipt is not None and int(receipt["status"]) == 1

    def _at_give_up_point(self, commit_deadline: int) -> bool:
        """Whether the head is deadline_margin blocks from the commit deadline: an audit still Unavailable is
        final then, since its verdict must be committed by the deadline."""
        return self.head >= commit_deadline - self.config.deadline_margin

    # the stages' calls into each other
    def _claim(self, claim_id: int) -> tuple[int, dict[str, Any]] | None:
        raise NotImplementedError  # verifier.daemon: the claim's committed fields

    def _queue_audit(self, job: Job, commit_deadline: int) -> None:
        raise NotImplementedError  # verifier.schedule

    def _publish(self, data: bytes) -> tuple[str, bool]:
        raise NotImplementedError  # verifier.attest

    def _commit(self, job: Job, ch: Any) -> bool:
        raise NotImplementedError  # verifier.attest

    def _reveal(self, job: Job, ch: Any) -> bool:
        raise NotImplementedError  # verifier.attest

    def _maybe_settle(self, cid: int, position: int | None, verdicts: list[int], deadline: int) -> None:
        raise NotImplementedError  # verifier.attest

    def _settle(self, cid: int, why: str) -> None:
        raise NotImplementedError  # verifier.attest
