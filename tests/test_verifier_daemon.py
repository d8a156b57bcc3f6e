"""The verifier node daemon with real processes: a Hardhat node, a js-ipfs daemon and three
`proofreg-verifier run` daemons, each a separate OS process.

- an honest training claim challenged → Valid, and the challenger's bond paid out as SPEC §5 says;
- six forged claims (tests/forgery.py) → Invalid, provers slashed, no pickle ever run;
- one daemon SIGKILLed in every phase (audit, commitment sent, committed, reveal sent, revealed) across
  many challenges and restarted → no challenge missed, no commitment or reveal sent twice, no revealed vote
  lost (the committee needs its vote: the third member is stopped with SIGTERM);
- the IPFS daemon stopped while audits run and restarted → the same verdicts;
- the JSON-RPC node frozen (SIGSTOP) for a while → the daemons recover;
- a reorg (Hardhat snapshot/revert) under the event follower → the job is reset and found again.

Faults are induced with real signals to real processes; nothing is faked.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import requests
from web3 import HTTPProvider, Web3

from registry.chain.deployment import Deployment
from registry.chain.local import deploy_registry
from registry.chain.signer import dev_signer
from registry.core.params import preset
from registry.pol.publish import publish_transcript
from registry.pol.train import train
from registry.store.daemon import DaemonStore
from tests import forgery
from tests.procs import free_port, pdeathsig_kill, stop_group, track, untrack

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
DEV = preset("dev")
#: The world's registry: the dev preset with longer commit and reveal phases, since the daemons here share two busy
#: cores with each other and the tests, and every transaction of theirs mines a block (a longer challenge
#: window too: the tests mine past hundreds of deadline blocks and still challenge the module's honest claim).
WORLD = replace(DEV, challenge_window=5000, commit_period=200, reveal_period=200, exit_delay=500)
PROVER, CHALLENGER = 1, 2
#: Blocks before a commit deadline at which a retrying daemon gives up and commits Unavailable. Above the default
#: of 5 here: every transaction mines a block, and the other members' commits and reveals of a sibling challenge
#: can use up 5 blocks while a daemon is still retrying.
DEADLINE_MARGIN = 25
VERIFIERS = (3, 4, 5)
OPEN, VALID, INVALID = 1, 2, 3


# ------------------------------------------------------------------------------------------------------------
# processes
# ------------------------------------------------------------------------------------------------------------


@dataclass
class VerifierProc:
    """One `proofreg-verifier run` process (state file and log survive restarts); `ipfs_api` "" means the
    embedded store in `home/store`."""

    index: int
    home: Path
    env: dict[str, str]
    ipfs_api: str
    extra: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def address(self) -> str:
        return dev_signer(self.index).address

    @property
    def log_path(self) -> Path:
        return self.home / f"verifier-{self.index}.log"

    def start(self) -> None:
        store = ["--ipfs", self.ipfs_api] if self.ipfs_api else ["--store-dir", str(self.home / "store")]
        command = [str(BIN / "proofreg-verifier"), "run", "--account", f"dev:{self.index}", *store,
                   "--state", str(self.home / f"v{self.index}.sqlite"), "--confirmations", "1",
                   "--poll-interval", "0.2", "--metrics-port", str(self.port), "--rpc-timeout", "5",
                   "--fetch-timeout", "3", "--grace", "10", "--deadline-margin", str(DEADLINE_MARGIN), *self.extra]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(command, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        start_new_session=True, preexec_fn=pdeathsig_kill)
        log.close()
        self.starts += 1
        track(self)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait (the daemon's clean shutdown); SIGKILL after `timeout`."""
        if self.process is None:
            return None
        stop_group(self.process, timeout)
        untrack(self)
        return self.process.returncode

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return dict(json.loads(r.read()))
        except (OSError, ValueError):
            return None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
            return str(r.read().decode())

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.health()
            if h is not None and h.get("registered") and h.get("status") == "ok":
                return
            assert self.alive(), f"verifier {self.index} exited:\n{self.log_tail()}"
            time.sleep(0.2)
        raise AssertionError(f"verifier {self.index} not ready:\n{self.log_tail()}")

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def __hash__(self) -> int:
        return id(self)


# ------------------------------------------------------------------------------------------------------------
# the world: node, registry, IPFS daemon, transcripts, three verifier daemons
# ------------------------------------------------------------------------------------------------------------


@dataclass
class World:
    node: Any
    w3: Web3
    reg: Any
    ipfs: Any
    store: DaemonStore
    home: Path
    env: dict[str, str]
    honest_dir: Path
    other_dir: Path
    honest_claim: int
    verifiers: list[VerifierProc]
    honest_tuple: tuple[Any, ...] = ()

    def account(self, i: int) -> str:
        return str(self.w3.eth.accounts[i])

    def send(self, fn: Any, sender: int, value: int = 0) -> Any:
        tx = fn.transact({"from": self.account(sender), "value": value})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx, timeout=60)
        assert receipt["status"] == 1
        return receipt

    def commit(self, claim: tuple[Any, ...], prover: int) -> int:
        receipt = self.send(self.reg.functions.commitTraining(claim), prover, DEV.training_bond)
        return int(self.reg.events.TrainingClaimCommitted().process_receipt(receipt)[0]["args"]["claimId"])

    def challenge(self, claim_id: int, segments: list[int] | None = None) -> int:
        receipt = self.send(self.reg.functions.openChallenge(claim_id, segments or []), CHALLENGER,
                            DEV.challenge_bond)
        return int(self.reg.events.ChallengeOpened().process_receipt(receipt)[0]["args"]["challengeId"])

    def status(self, challenge_id: int) -> int:
        return int(self.reg.functions.getChallenge(challenge_id).call()[2])

    def open_reveals(self, ids: list[int]) -> None:
        """Mines just past the latest commit deadline of these challenges (with a committee member silent the
        reveal opens only then, and blocks only come with transactions), not further: the reveal phase must
        stay open for the daemons."""
        chs = [self.reg.functions.getChallenge(i).call() for i in ids]
        # only once the two awake members have committed (else one would miss the commit phase)
        ends = [int(ch[8]) for ch in chs if ch[2] == OPEN and bin(int(ch[10])).count("1") >= 2]
        head = int(self.w3.eth.block_number)
        if ends and head <= max(ends):
            self.node.mine(max(ends) - head + 1)

    def wait_settled(self, ids: list[int], timeout: float = 120.0) -> dict[int, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                states = {i: self.status(i) for i in ids}
            except requests.exceptions.ConnectionError:  # a node just back from SIGSTOP may reset a connection
                time.sleep(0.5)
                continue
            if all(s != OPEN for s in states.values()):
                return states
            time.sleep(0.25)
        tails = "\n".join(f"--- verifier {v.index}\n{v.log_tail(15)}" for v in self.verifiers)
        raise AssertionError(f"not settled in {timeout} s: { {i: self.status(i) for i in ids} }\n{tails}")

    def attestations(self, challenge_id: int) -> list[Any]:
        return list(self.reg.events.Attested().get_logs(from_block=0, argument_filters={"challengeId": challenge_id}))


@pytest.fixture(scope="module")
def world(hardhat_node: Any, ipfs_daemon_factory: Callable[[], Any],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("vhome")
    w3 = Web3(HTTPProvider(hardhat_node.url))
    deployer = w3.eth.accounts[0]
    reg, receipt = deploy_registry(w3, WORLD, deployer)
    record = Deployment.from_receipt(w3, receipt, WORLD, "hardhat")
    record.save(home / "deployments" / f"{record.chain_id}.json")
    env = {**os.environ, "PROOFREG_HOME": str(home), "PROOFREG_RPC": hardhat_node.url, "OMP_NUM_THREADS": "1"}
    env.pop("PROOFREG_PRIVATE_KEY", None)

    ipfs = ipfs_daemon_factory()
    verifiers = [VerifierProc(i, home, env, ipfs.api) for i in VERIFIERS]
    for v in verifiers:  # they start (imports, registration) while the transcripts train
        v.start()
    runs = tmp_path_factory.mktemp("runs")
    honest = train(runs / "honest", epochs=1, max_steps=40, steps_per_segment=10, seed=0)
    other = train(runs / "other", epochs=1, max_steps=40, steps_per_segment=10, seed=1)
    store = DaemonStore(ipfs.api)
    published = publish_transcript(honest.transcript_dir, store)
    world = World(hardhat_node, w3, reg, ipfs, store, home, env, honest.transcript_dir, other.transcript_dir, 0,
                  verifiers)
    world.honest_tuple = published.claim_tuple()
    world.honest_claim = world.commit(world.honest_tuple, PROVER)
    for v in verifiers:
        v.wait_ready()
    yield world
    for v in verifiers:
        v.stop()


def mine(world: World, n: int) -> None:
    world.node.mine(n)


# ------------------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------------------


def test_honest_claim_is_valid_and_the_challenger_bond_is_paid_out(world: World) -> None:
    f = world.reg.functions
    prover = world.account(PROVER)
    before_prover = f.pendingWithdrawal(prover).call()
    before_stake = {v.address: f.getVerifier(v.address).call()[0] for v in world.verifiers}
    started = time.monotonic()
    cid = world.challenge(world.honest_claim)
    mine(world, DEV.seed_delay + 1)
    assert world.wait_settled([cid]) == {cid: VALID}
    elapsed = time.monotonic() - started

    verdicts = f.verdicts(cid).call()
    committee = f.committee(cid).call()
    majority = [a for a, v in zip(committee, verdicts, strict=True) if v == 1]
    assert len(majority) >= DEV.quorum and all(v in (0, 1) for v in verdicts)
    # SPEC §5: Valid → the challenger's bond goes verifierRewardBps to the majority, the rest to the prover
    each = DEV.challenge_bond * DEV.verifier_reward_bps // 10_000 // len(majority)
    assert f.pendingWithdrawal(prover).call() - before_prover == DEV.challenge_bond - each * len(majority)
    for v in world.verifiers:
        gained = f.getVerifier(v.address).call()[0] - before_stake[v.address]
        assert gained == (each if v.address in majority else 0)
    assert f.getClaim(world.honest_claim).call()[3] == 2  # claim status Valid

    # each attestation carries a report published to IPFS whose results hash matches
    for log in world.attestations(cid):
        report = json.loads(world.store.cat(log["args"]["reportCid"]))
        assert report["challengeId"] == cid and report["audit"]["verdict"] == "Valid"
        assert report["verifier"] == log["args"]["verifier"] and report["environment"]["torch"]
        assert report["resultsHash"] == Web3.to_hex(log["args"]["resultsHash"])
    # health and metrics on the loopback port; logs are JSON lines without keys
    for v in world.verifiers:
        h = v.health()
        assert h is not None and h["status"] == "ok" and h["registered"]
        text = v.metrics()
        assert "proofreg_verifier_head_block" in text and 'proofreg_verifier_jobs{state="done"}' in text
        assert "proofreg_verifier_audit_queue_depth 0" in text and h["auditQueueDepth"] == 0
        logs = v.log_path.read_text()
        assert dev_signer(v.index).account.key.hex()[2:] not in logs and "private" not in logs.lower()
    print(f"\nchallenge -> settlement: {elapsed:.1f} s")


def test_forged_claims_are_invalid_and_provers_slashed(world: World, tmp_path: Path) -> None:
    f = world.reg.functions
    honest, marker = world.honest_dir, tmp_path / "pickle-ran"
    forgeries = [
        (forgery.forge_interpolated(honest, tmp_path / "interpolated"), 6),
        (forgery.forge_spliced(honest, world.other_dir, tmp_path / "spliced"), 6),
        (forgery.forge_batches(honest, tmp_path / "batches"), 6),
        (forgery.forge_bad_hash(honest, tmp_path / "bad-hash"), 7),
        (forgery.forge_path_escape(honest, tmp_path / "path-escape"), 8),
        (forgery.forge_pickle(honest, tmp_path / "pickle", marker), 9),
    ]
    claims = {}
    for forged, prover in forgeries:
        transcript_cid = world.store.add_directory(forged.path)
        claims[forged.name] = world.commit(forgery.claim_tuple(forged.path, transcript_cid), prover)
    before = f.pendingWithdrawal(world.account(CHALLENGER)).call()
    challenges = {name: world.challenge(claims[name], fg.segments) for name, fg in
                  ((fg.name, fg) for fg, _ in forgeries)}
    mine(world, DEV.seed_delay + 1)
    outcomes = world.wait_settled(list(challenges.values()), timeout=150)
    reasons = {}
    for name, cid in challenges.items():
        assert outcomes[cid] == INVALID, (name, outcomes[cid])
        assert f.getClaim(claims[name]).call()[3] == 3  # claim Invalid: prover bond slashed
        logs = world.attestations(cid)
        report = json.loads(world.store.cat(logs[0]["args"]["reportCid"]))
        reasons[name] = report["audit"]["reason"]
        assert report["audit"]["verdict"] == "Invalid" and report["audit"]["reason"]
    # SPEC §5: Invalid → the prover bond goes verifierRewardBps to the majority, the rest (and its own bond) to
    # the challenger
    gained = f.pendingWithdrawal(world.account(CHALLENGER)).call() - before
    expected = 0
    for cid in challenges.values():
        majority = sum(1 for v in f.verdicts(cid).call() if v == 2)
        each = DEV.training_bond * DEV.verifier_reward_bps // 10_000 // majority
        expected += DEV.challenge_bond + DEV.training_bond - each * majority
    assert gained == expected
    assert not marker.exists(), "a verifier ran the planted pickle"
    print("\n" + "\n".join(f"{k:<13} {v}" for k, v in reasons.items()))


def _registry_txs(world: World, address: str, from_block: int, ids: list[int], signature: str) -> list[Any]:
    """Every transaction `address` sent to the registry's `signature` for one of `ids` since `from_block`, with
    its receipt (earlier challenges may still draw late transactions from slow members)."""
    selector = bytes(Web3.keccak(text=signature)[:4])
    out = []
    for n in range(from_block, int(world.w3.eth.block_number) + 1):
        for tx in world.w3.eth.get_block(n, full_transactions=True)["transactions"]:
            data = bytes(tx["input"])
            if tx["from"] == address and data[:4] == selector and int.from_bytes(data[4:36], "big") in ids:
                out.append((tx, world.w3.eth.get_transaction_receipt(tx["hash"])))
    return out


#: Where the victim is killed, one challenge each: as soon as it logs the event (with that purpose, for
#: tx_sent) for any challenge. Together they cover each phase of a commit-reveal attestation.
KILL_MOMENTS = [("audit_started", None), ("audited", None), ("tx_sent", "commit"), ("committed", None),
                ("tx_sent", "reveal"), ("attested", None)]


def settle_by_quorum(world: World, ids: list[int], timeout: float = 180.0) -> None:
    """Quorum is 2 of a committee of 3 with one member stopped: no settlement without both awake members'
    votes, and the reveal phase opens only at the commit deadline (mined to as soon as both have committed)."""
    until = time.monotonic() + timeout
    while any(world.status(i) == OPEN for i in ids) and time.monotonic() < until:
        world.open_reveals(ids)
        time.sleep(1.0)


def test_sigkill_in_each_phase_misses_nothing_and_attests_once(world: World) -> None:
    victim, steady, third = world.verifiers
    assert third.stop() == 0  # SIGTERM: clean shutdown, exit code 0
    assert any(r["event"] == "stopped" for r in third.log_records())
    start_block = int(world.w3.eth.block_number)
    rng = random.Random(1234)
    ids: list[int] = []
    landed: list[str] = []
    try:
        for k, (event, purpose) in enumerate(KILL_MOMENTS):
            # a fresh claim each time (provers 7 and 8 in turn): waiting for reveals mines blocks, and
            # 6 rounds would outlast one claim's challenge window
            ids.append(world.challenge(world.commit(world.honest_tuple, 7 + k % 2)))
            mine(world, DEV.seed_delay + 1)
            seen = len(victim.log_records())
            until = time.monotonic() + 90
            while time.monotonic() < until:
                fresh = victim.log_records()[seen:]
                if any(r["event"] == event and purpose in (None, r.get("purpose")) for r in fresh):
                    break
                if event in ("tx_sent", "attested") and purpose != "commit":
                    world.open_reveals([ids[-1]])  # the third member is silent: the reveal waits for the deadline
                time.sleep(0.1)
            time.sleep(rng.uniform(0.0, 0.2))
            fresh = victim.log_records()[seen:]
            victim.kill()
            landed.append(f"{fresh[-1]['event']}:{fresh[-1].get('purpose', '')}" if fresh else "(starting)")
            victim.start()
            victim.wait_ready()
            # settled before the next round: its challenge's commit phase would reach past this one's reveal
            # deadline, which then settles by the deadline rule (the stopped member slashed for later tests)
            settle_by_quorum(world, ids)
        outcomes = world.wait_settled(ids, timeout=60)
    finally:
        third.start()
    assert set(outcomes.values()) == {VALID}
    for cid in ids:
        by = [log["args"]["verifier"] for log in world.attestations(cid)]
        assert sorted(by) == sorted([victim.address, steady.address]), (cid, by)
    for v in (victim, steady):
        for signature in ("commitVerdict(uint256,bytes32)", "revealVerdict(uint256,uint8,bytes32,string,bytes32)"):
            sent = _registry_txs(world, v.address, start_block, ids, signature)
            assert len(sent) == len(ids) and all(r["status"] == 1 for _, r in sent), \
                (signature, [r["status"] for _, r in sent])
    print(f"\n{len(landed)} SIGKILLs; {len(ids)} challenges, one commitment and one reveal each; "
          f"killed right after: {landed}")
    third.wait_ready()


def test_ipfs_daemon_stopped_during_audits_gives_the_same_verdicts(world: World, tmp_path: Path) -> None:
    forged = forgery.forge_batches(world.honest_dir, tmp_path / "batches2", seed=11)
    claim = world.commit(forgery.claim_tuple(forged.path, world.store.add_directory(forged.path)), 6)
    honest_ch = world.challenge(world.honest_claim)
    forged_ch = world.challenge(claim, forged.segments)
    ours = (honest_ch, forged_ch)

    def logged(event: str) -> list[bool]:
        return [any(r["event"] == event and r.get("challenge") in ours for r in v.log_records())
                for v in world.verifiers]

    world.ipfs.stop()  # before the draw, so every audit meets the outage (small audits can finish in a blink)
    try:
        mine(world, DEV.seed_delay + 1)
        deadline = time.monotonic() + 60
        while not any(logged("audit_unavailable_retry")):
            assert time.monotonic() < deadline, "\n".join(v.log_tail(10) for v in world.verifiers)
            time.sleep(0.2)
        time.sleep(3)  # an outage of a few seconds, with retries backing off
        met = logged("audit_unavailable_retry")
    finally:
        world.ipfs.start()
    outcomes = world.wait_settled([honest_ch, forged_ch], timeout=120)
    assert outcomes == {honest_ch: VALID, forged_ch: INVALID}
    print(f"\ndaemons that met the outage and retried: {sum(met)} of {len(met)}")
    # reports made while the daemon was down were published once it came back
    for cid in (honest_ch, forged_ch):
        for log in world.attestations(cid):
            assert json.loads(world.store.cat(log["args"]["reportCid"]))["challengeId"] == cid


def test_rpc_node_unreachable_for_a_while_then_recovers(world: World) -> None:
    cid = world.challenge(world.honest_claim)
    mine(world, DEV.seed_delay + 1)
    pid = world.node.process.pid
    os.kill(pid, signal.SIGSTOP)  # the node stops answering (connections hang until the daemons' 5 s timeout)
    try:
        time.sleep(12)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert world.wait_settled([cid], timeout=120) == {cid: VALID}
    for v in world.verifiers:
        assert any(r["event"] in ("tick_failed", "rpc_unreachable") for r in v.log_records())
        assert float(_metric(v.metrics(), "proofreg_verifier_rpc_errors_total")) >= 1
        assert v.alive()
    deadline = time.monotonic() + 30
    while not all((h := v.health()) is not None and h["status"] == "ok" for v in world.verifiers):
        assert time.monotonic() < deadline
        time.sleep(0.5)


def _metric(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return line.rsplit(" ", 1)[1]
    return "0"


def test_evidence_missing_until_the_deadline_is_unavailable(world: World, tmp_path: Path) -> None:
    """A training claim whose transcript is on no IPFS node, and an inference claim (kind 2, dispatched to
    verifier.zk) whose bundle is on none either: the daemons retry, and once the deadline is
    --deadline-margin blocks away they attest Unavailable; the provers' bonds go to the challenger."""
    from registry.store.embedded import EmbeddedStore

    hidden = forgery.forge_batches(world.honest_dir, tmp_path / "hidden", seed=23)
    private = EmbeddedStore(tmp_path / "private-store")  # never published
    training = world.commit(forgery.claim_tuple(hidden.path, private.add_directory(hidden.path)), 7)
    bundle_nowhere = private.add_bytes(b"a bundle nobody published")
    receipt = world.send(world.reg.functions.commitInference(
        (world.honest_claim, b"\x11" * 32, b"\x22" * 32, b"\x33" * 32, bundle_nowhere)), 7, DEV.inference_bond)
    inference = int(world.reg.events.InferenceClaimCommitted().process_receipt(receipt)[0]["args"]["claimId"])
    ids, deadlines = [], []
    for claim in (training, inference):
        receipt = world.send(world.reg.functions.openChallenge(claim, []), CHALLENGER, DEV.challenge_bond)
        args = world.reg.events.ChallengeOpened().process_receipt(receipt)[0]["args"]
        ids.append(int(args["challengeId"]))
        deadlines.append(int(args["commitDeadline"]))  # an Unavailable verdict must be committed by then
    mine(world, DEV.seed_delay + 1)
    until = time.monotonic() + 60
    while not all(any(r["event"] == "audit_unavailable_retry" and r.get("challenge") == cid for r in v.log_records())
                  for v in world.verifiers for cid in ids):
        assert time.monotonic() < until, "\n".join(v.log_tail(8) for v in world.verifiers)
        time.sleep(0.3)
    assert [world.status(cid) for cid in ids] == [OPEN, OPEN]  # retrying, not yet giving up
    mine(world, min(deadlines) - DEADLINE_MARGIN - int(world.w3.eth.block_number))
    assert world.wait_settled(ids, timeout=90) == {cid: 4 for cid in ids}  # Unavailable
    for claim, cid in zip((training, inference), ids, strict=True):
        assert world.reg.functions.getClaim(claim).call()[3] == 3  # the claim is rejected, its bond slashed
        report = json.loads(world.store.cat(world.attestations(cid)[0]["args"]["reportCid"]))
        assert report["audit"]["verdict"] == "Unavailable" and report["attempts"] >= 2
        assert report["claimKind"] == (1 if claim == training else 2)
        print(f"\nclaim kind {report['claimKind']}: {report['audit']['reason']}")


def test_reorg_under_the_daemons(world: World, tmp_path: Path) -> None:
    """A challenge is served and settled on a fork that Hardhat then reverts (evm_revert: a reorg deeper
    than the confirmation depth). The daemons and an in-process follower rewind to the fork point and drop
    the job; the challenge that takes the same id on the new chain is served again, one attestation each."""
    from verifier.db import StateDB
    from verifier.follower import Follower

    db = StateDB(tmp_path / "s.sqlite")
    follower = Follower(world.w3, world.reg, db, start_block=int(world.w3.eth.block_number) + 1, confirmations=1)
    reorgs: list[int] = []
    follower.on_reorg = lambda fork, reset: reorgs.append(reset)

    def handle(event: Any) -> None:
        if event.name == "ChallengeOpened":
            db.add_job(int(event.args["challengeId"]), int(event.args["claimId"]), event.block)

    def drain() -> None:
        while follower.poll(handle):
            pass

    before = {v.index: sum(r["event"] == "reorg" for r in v.log_records()) for v in world.verifiers}
    claim = world.commit(world.honest_tuple, 6)  # the same transcript from another prover, in a fresh window
    snap = world.node.snapshot()
    doomed = world.challenge(claim)
    mine(world, DEV.seed_delay + 1)
    assert world.wait_settled([doomed]) == {doomed: VALID}
    drain()
    assert db.job(doomed) is not None
    world.node.revert(snap)  # the fork with the challenge, its attestations and its settlement is gone
    mine(world, 12)  # a longer chain without it
    drain()
    assert reorgs == [1] and db.job(doomed) is None
    assert follower.cursor == int(world.w3.eth.block_number) - 1

    deadline = time.monotonic() + 30  # (a daemon that read the fork switch mid-poll finds the id unknown)
    while not any(sum(r["event"] == "reorg" for r in v.log_records()) > before[v.index] for v in world.verifiers):
        assert time.monotonic() < deadline, "\n".join(v.log_tail(8) for v in world.verifiers)
        time.sleep(0.3)
    again = world.challenge(claim)
    assert again == doomed  # the id now names a new challenge
    mine(world, DEV.seed_delay + 1)
    assert world.wait_settled([again]) == {again: VALID}
    by = [log["args"]["verifier"] for log in world.attestations(again)]
    assert len(by) >= DEV.quorum and len(by) == len(set(by))


def test_seed_hash_gone_before_anyone_drew_is_reseeded(world: World) -> None:
    """All three daemons frozen (SIGSTOP) while 260 blocks pass after a challenge: the seed block's hash is
    gone. Thawed, one of them reseeds (exactly one ChallengeReseeded), then they draw, audit and settle."""
    claim = world.commit(world.honest_tuple, 8)  # a fresh claim (window open)
    for v in world.verifiers:
        assert v.process is not None
        os.killpg(v.process.pid, signal.SIGSTOP)
    try:
        cid = world.challenge(claim)
        mine(world, DEV.seed_delay + 260)
    finally:
        for v in world.verifiers:
            assert v.process is not None
            os.killpg(v.process.pid, signal.SIGCONT)
    until = time.monotonic() + 60
    while not world.reg.events.ChallengeReseeded().get_logs(from_block=0, argument_filters={"challengeId": cid}):
        assert time.monotonic() < until, "\n".join(v.log_tail(8) for v in world.verifiers)
        time.sleep(0.2)
    mine(world, DEV.seed_delay + 1)
    assert world.wait_settled([cid]) == {cid: VALID}
    assert len(world.reg.events.ChallengeReseeded().get_logs(from_block=0, argument_filters={"challengeId": cid})) == 1


def test_deadline_settlement_when_the_quorum_stays_silent(world: World) -> None:
    """Two of three members frozen (SIGSTOP) through the whole attestation period: the one awake commits,
    reveals after the commit deadline, and once the deadline has passed it settles by plurality; the silent
    members lose silentSlashBps."""
    awake, frozen = world.verifiers[0], world.verifiers[1:]
    claim = world.commit(world.honest_tuple, 9)
    f = world.reg.functions
    for v in frozen:
        assert v.process is not None
        os.killpg(v.process.pid, signal.SIGSTOP)
    try:
        cid = world.challenge(claim)
        mine(world, DEV.seed_delay + 1)
        until = time.monotonic() + 60
        while not any(r["event"] == "committed" and r.get("challenge") == cid for r in awake.log_records()):
            assert time.monotonic() < until, awake.log_tail(10)
            time.sleep(0.2)
        commit_deadline = int(f.getChallenge(cid).call()[8])
        mine(world, commit_deadline - int(world.w3.eth.block_number) + 1)
        until = time.monotonic() + 60
        while not any(r["event"] == "attested" and r.get("challenge") == cid for r in awake.log_records()):
            assert time.monotonic() < until, awake.log_tail(10)
            time.sleep(0.2)
        stakes = {v.address: int(f.getVerifier(v.address).call()[0]) for v in frozen}
        deadline_block = int(f.getChallenge(cid).call()[7])
        assert world.status(cid) == OPEN  # one vote is no quorum
        mine(world, deadline_block - int(world.w3.eth.block_number) + 1)
        assert world.wait_settled([cid], timeout=60) == {cid: VALID}
    finally:
        for v in frozen:
            assert v.process is not None
            os.killpg(v.process.pid, signal.SIGCONT)
    slashed = {log["args"]["verifier"]: int(log["args"]["amount"]) for log in
               world.reg.events.VerifierSlashed().get_logs(from_block=0, argument_filters={"challengeId": cid})}
    assert slashed == {a: s * DEV.silent_slash_bps // 10_000 for a, s in stakes.items()}
    assert any(r["event"] == "settled" and r.get("challenge") == cid and r.get("why") == "deadline"
               for r in awake.log_records())
