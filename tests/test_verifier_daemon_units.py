"""Pieces of the verifier daemon in-process: the claim-kind handler registry, the state file, metrics, and
the transaction sender against a real Hardhat node (a transaction the node drops is re-broadcast)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from web3 import HTTPProvider, Web3

from registry.chain.local import deploy_registry
from registry.chain.signer import dev_signer
from registry.core.params import preset
from registry.store.embedded import EmbeddedStore
from verifier.audit import AuditReport
from verifier.db import StateDB, StateMismatch
from verifier.handlers import CLAIM_HANDLERS, Assignment, AuditContext, register_claim_handler, run_handler
from verifier.jsonlog import JsonLog
from verifier.metrics import Metrics
from verifier.txsender import TxSender


@pytest.fixture
def ctx(tmp_path: Path) -> AuditContext:
    return AuditContext(EmbeddedStore(tmp_path / "store"), tmp_path / "work")


def test_handler_registry(ctx: AuditContext) -> None:
    assert set(CLAIM_HANDLERS) >= {1, 2}
    report = run_handler(ctx, 9, {}, Assignment(1, []))
    assert report.verdict == "Unavailable" and "no handler for claim kind 9" in report.reason

    def boom(_ctx: AuditContext, _claim: dict[str, Any], _work: Assignment) -> AuditReport:
        raise RuntimeError("disk on fire")

    register_claim_handler(9, boom)
    try:
        report = run_handler(ctx, 9, {}, Assignment(1, []))
        assert report.verdict == "Unavailable" and "RuntimeError: disk on fire" in report.reason
    finally:
        del CLAIM_HANDLERS[9]


def test_inference_without_a_zk_verifier_is_unavailable(ctx: AuditContext, monkeypatch: pytest.MonkeyPatch) -> None:
    # fault induced: hide verifier.zk as if it were not installed (None in sys.modules makes the import fail)
    monkeypatch.setitem(sys.modules, "verifier.zk", None)
    claim = {"modelClaimId": 0, "vkHash": "0x" + "11" * 32, "proofDigest": "0x" + "22" * 32,
             "instancesHash": "0x" + "33" * 32, "bundleCid": "bafy"}
    report = run_handler(ctx, 2, claim, Assignment(1, []))
    assert (report.verdict, report.reason) == ("Unavailable", "no ZK verifier installed")


def test_state_file(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    db = StateDB(path)
    db.bind(31337, "0xAbC", "0xDeF")
    assert db.add_job(1, 10, 100) and not db.add_job(1, 10, 100)
    assert db.add_job(2, 11, 120)
    db.update_job(2, state="member", position=1, segments=[3, 1])
    db.add_tx("0x01", "attest", 2, 5, b"raw")
    db.advance(110, "0xaa")
    db.advance(130, "0xbb")
    db.close()

    db = StateDB(path)  # survives a restart
    db.bind(31337, "0xabc", "0xdef")
    with pytest.raises(StateMismatch):
        db.bind(1, "0xabc", "0xdef")
    job = db.job(2)
    assert job is not None and job.state == "member" and job.segments == [3, 1] and db.cursor() == 130
    assert db.rewind(110) == 1  # the challenge opened at block 120 is gone with its fork
    assert db.job(2) is None and db.job(1) is not None and db.cursor() == 110
    assert db.pending_txs() == [] and db.txs("attest")[0].state == "abandoned"  # never re-broadcast
    # a re-used challenge id that now names another claim starts over
    db.update_job(1, state="attested")
    assert db.add_job(1, 99, 140) and db.job(1).state == "new"  # type: ignore[union-attr]


def test_state_file_keeps_the_commit_reveal_salt(tmp_path: Path) -> None:
    """The salt written before a commitment is sent survives a restart; a version-1 file gains the column."""
    import sqlite3

    old = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(old)
    conn.execute("CREATE TABLE jobs (challenge_id INTEGER PRIMARY KEY, claim_id INTEGER NOT NULL, opened_block "
                 "INTEGER NOT NULL, state TEXT NOT NULL DEFAULT 'new', position INTEGER, segments TEXT, verdict TEXT, "
                 "reason TEXT, results_hash TEXT, report_cid TEXT, report TEXT, published INTEGER NOT NULL DEFAULT 0, "
                 "attempts INTEGER NOT NULL DEFAULT 0, first_try REAL, next_try REAL NOT NULL DEFAULT 0, "
                 "outcome TEXT, updated REAL NOT NULL)")
    conn.execute("INSERT INTO jobs(challenge_id, claim_id, opened_block, state, updated) "
                 "VALUES (4, 1, 9, 'audited', 0)")
    conn.commit()
    conn.close()
    db = StateDB(old)
    job = db.job(4)
    assert job is not None and job.state == "audited" and job.salt is None
    db.update_job(4, salt="0x" + "ab" * 32)
    db.close()
    job = StateDB(old).job(4)
    assert job is not None and job.salt == "0x" + "ab" * 32
    assert "committed" in StateDB(tmp_path / "new.sqlite").job_counts()


def test_metrics_text() -> None:
    m = Metrics()
    m.declare("jobs", "gauge", "Jobs by state")
    m.set("jobs", 3, state="done")
    m.inc("events_total", name="ChallengeOpened")
    text = m.render()
    assert '# TYPE proofreg_verifier_jobs gauge' in text and 'proofreg_verifier_jobs{state="done"} 3' in text
    assert 'proofreg_verifier_events_total{name="ChallengeOpened"} 1' in text


def test_dropped_transaction_is_rebroadcast(hardhat_node: Any, tmp_path: Path) -> None:
    """Automine off, the node drops our pending transaction (hardhat_dropTransaction, a real node feature);
    `recover` finds it gone and re-broadcasts the same signed bytes, which then get mined."""
    w3 = Web3(HTTPProvider(hardhat_node.url))
    dev = preset("dev")
    reg, _ = deploy_registry(w3, dev, w3.eth.accounts[0])
    db = StateDB(tmp_path / "s.sqlite")
    out = io.StringIO()
    signer = dev_signer(9)
    sender = TxSender(w3, reg, signer, db, Metrics(), JsonLog(out), receipt_timeout=0.3, resend_after=600)
    hardhat_node.rpc("evm_setAutomine", [False])
    try:
        assert sender.send("register", None, "registerVerifier", value=dev.verifier_stake) is None  # pending
        (tx,) = db.pending_txs()
        assert hardhat_node.rpc("hardhat_dropTransaction", [tx.hash]) is True
        sender.recover()  # dropped: re-broadcast
        assert w3.eth.get_transaction(tx.hash)["nonce"] == tx.nonce  # type: ignore[arg-type]
    finally:
        hardhat_node.rpc("evm_setAutomine", [True])
    hardhat_node.mine(1)
    sender.recover()
    assert db.txs()[0].state == "mined" and db.pending_txs() == []
    assert reg.functions.getVerifier(signer.address).call()[2] == 1  # registered
    logs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["event"] for r in logs] == ["tx_sent", "tx_resent"] and logs[1]["dropped"] is True
    assert signer.account.key.hex()[2:] not in out.getvalue()


def test_a_backing_off_retry_is_brought_forward_at_the_give_up_point(tmp_path: Path) -> None:
    """An Unavailable audit waits up to a minute before its next try; once the head is deadline_margin blocks
    from the commit deadline, that last try (which gives up and commits Unavailable) runs at once instead."""
    import queue
    import threading
    import time
    from types import SimpleNamespace

    from verifier.schedule import Scheduler

    db = StateDB(tmp_path / "s.sqlite")
    db.add_job(1, 1, 10)
    db.update_job(1, state="member", attempts=3, first_try=time.time(), next_try=time.time() + 60)
    node = Scheduler.__new__(Scheduler)  # the scheduling rule alone: no chain, no workers
    node.db, node.queue, node.running, node._running_lock = db, queue.Queue(), set(), threading.Lock()
    node.config = SimpleNamespace(deadline_margin=5)
    job = db.job(1)
    assert job is not None
    for head in (90, 94):  # still early: the backoff holds
        node.head = head
        node._queue_audit(job, commit_deadline=100)
        assert node.queue.empty() and not node.running
    node.head = 95  # the give-up point
    node._queue_audit(job, commit_deadline=100)
    assert node.queue.get_nowait() == 1 and node.running == {1}
    node._queue_audit(job, commit_deadline=100)  # queued once, while it runs
    assert node.queue.empty()
    # a first try is never held back by the rule, nor run early: it has no backoff yet
    db.add_job(2, 1, 10)
    db.update_job(2, state="member")
    fresh = db.job(2)
    assert fresh is not None and fresh.attempts == 0
    node._queue_audit(fresh, commit_deadline=100)
    assert node.queue.get_nowait() == 2
