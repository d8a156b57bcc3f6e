"""The main job on embedded defaults: training, inference and forged claims, challenged, audited and settled.

    python scripts/demo.py [--out DIR] [--epochs N] [--seed N]        (or: make demo)

1. trains a small MLP (64→16→10) on scikit-learn's digits with Proof-of-Learning recording (real torch, CPU);
2. forges a second transcript from it (every batch file replaced by other examples, the manifest resealed so
   that it is internally consistent: a data-substitution forgery);
3. starts three verifier nodes (`verifier.daemon.VerifierDaemon`, the code of `proofreg-verifier run`, as
   threads) on an in-process EVM running the shipped registry contract; they register with stake themselves;
4. publishes both transcripts to the embedded content store (real IPFS blocks and CIDs) and commits both
   training claims;
5. proves one inference of the trained model with ezkl (weights hashed into the proof, output public) and
   commits the inference claim, linked to the honest training claim. The SRS is generated locally, so the
   bundle and the claim are marked development-only (and the verifiers are told to accept that);
6. challenges all three claims; the verifier nodes draw the committee, re-execute the sampled segments (or
   verify the ZK proof and its link to the training claim), attest and settle, on their own;
7. prints a table (claims, verdicts, distances, bonds moved, gas) and writes `report.json` (its format:
   docs/report.md, `demoReport` in docs/report.schema.json) and plots.
Everything is real; only the adversary is scripted.

Deterministic for a given seed: training and forgery draw from `--seed`; torch runs at a fixed thread count
(`TORCH_THREADS`: ρ depends on the thread count's floating-point summation order); the transcript has at most
8 segments and the challenger names all of them, so every node audits every segment whatever the block hash
that seeds the contract's draws (which follows wall-clock block timestamps). What still follows timing: the
committee's order, which member is silent, the gas of draw/attest/settle, rounding dust, and the ZK bundle
(a proof carries fresh blinding randomness).
A progress display (rich) runs on stderr when stderr is a terminal, and only then.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from registry.chain.deployment import Deployment  # noqa: E402
from registry.chain.local import EmbeddedChain  # noqa: E402
from registry.chain.rpc import RegistryClient  # noqa: E402
from registry.chain.signer import dev_signer  # noqa: E402
from registry.core.hashing import sha256  # noqa: E402
from registry.core.params import preset  # noqa: E402
from registry.core.states import CLAIM_STATUS  # noqa: E402
from registry.pol.publish import publish_transcript  # noqa: E402
from registry.pol.train import train  # noqa: E402
from registry.pol.transcript import MANIFEST_NAME, load_manifest, segment_tree, write_manifest  # noqa: E402
from registry.spec.datasets import Dataset  # noqa: E402
from registry.store.embedded import EmbeddedStore  # noqa: E402
from verifier.daemon import DaemonConfig, JsonLog, VerifierDaemon  # noqa: E402
from verifier.report import AuditReport, SegmentResult, plot_report  # noqa: E402

OUTCOME = {1: "Open", 2: "Valid", 3: "Invalid", 4: "Unavailable", 5: "Expired"}
VERDICT = {1: "Valid", 2: "Invalid", 3: "Unavailable"}
MLP_ARGS = {"in_features": 64, "hidden": [16], "out_features": 10, "dropout": 0.1}
BLOCK_SECONDS = 0.5  # the block producer's pace (the embedded chain mines on demand otherwise)
SETTLE_TIMEOUT_S = 480
E = 10**18
TORCH_THREADS = 2  # fixed, so that the same seed gives the same checkpoints (and ρ) on any core count
MAX_SEGMENTS = 8  # the contract's MAX_NAMED_SEGMENTS: the challenger can name every segment
STEPS_PER_EPOCH = 1797 // 32  # the bundled digits at the default batch size (drop_last)


class Stages:
    """The demo's progress display: one rich line per stage on stderr, only when stderr is a terminal (logs
    and CI output stay free of progress labels and carriage returns)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._progress: Any = None
        if self.enabled:
            try:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    SpinnerColumn,
                    TextColumn,
                    TimeElapsedColumn,
                )
            except ImportError:
                self.enabled = False
                return
            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description:<34}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True))
            self._progress.start()

    def start(self, label: str, total: int | None = None) -> int:
        return int(self._progress.add_task(label, total=total)) if self._progress is not None else -1

    def update(self, task: int, done: int, total: int | None = None, label: str | None = None) -> None:
        if self._progress is not None:
            self._progress.update(task, completed=done, **({"total": total} if total is not None else {}),
                                  **({"description": label} if label is not None else {}))

    def finish(self, task: int) -> None:
        if self._progress is not None:
            t = self._progress.tasks[[x.id for x in self._progress.tasks].index(task)]
            self._progress.update(task, total=t.total or 1, completed=t.total or 1)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def forge_data_substitution(honest: Path, forged: Path, num_examples: int, seed: int = 1) -> None:
    """A forger's copy: same checkpoints, but every segment claims other training examples; the manifest's
    batch hashes and segment root are recomputed so the transcript is self-consistent."""
    shutil.copytree(honest, forged)
    rng = np.random.default_rng(seed)
    manifest = json.loads((forged / MANIFEST_NAME).read_text())
    for seg in manifest["segments"]:
        path = forged / seg["batches"]
        batches = np.load(path, allow_pickle=False)
        fake = rng.integers(0, num_examples, size=batches.shape, dtype=np.int64)
        np.save(path, fake, allow_pickle=False)
        seg["batchesHash"] = "0x" + sha256(path.read_bytes()).hex()
    manifest["segmentRoot"] = "0x" + segment_tree(manifest).root.hex()
    write_manifest(forged / MANIFEST_NAME, manifest)
    load_manifest(forged)  # the forgery passes every manifest check


def _start_verifiers(chain: EmbeddedChain, store: EmbeddedStore, record: Path, out: Path,
                     count: int = 3) -> list[tuple[VerifierDaemon, threading.Thread]]:
    """Verifier nodes as threads, each with its own key, state file, log and connection to the chain."""
    nodes = []
    for i in range(1, count + 1):
        signer = dev_signer(i)
        tx = chain.w3.eth.send_transaction({"from": chain.accounts[0], "to": signer.address, "value": 5 * E})
        chain.w3.eth.wait_for_transaction_receipt(tx)
        vdir = out / "verifiers" / f"v{i}"
        vdir.mkdir(parents=True)
        config = DaemonConfig(rpc_url="embedded", state_path=vdir / "state.sqlite", store=store,
                              workdir=vdir / "work", deployment_path=record, confirmations=0, poll_interval=0.2,
                              unavailable_after=30.0, settle_stagger=0.5, web3_factory=chain.connect)
        log = JsonLog(open(vdir / "daemon.log", "a"), extra={"verifier": signer.address})  # noqa: SIM115
        node = VerifierDaemon(config, signer, log)
        thread = threading.Thread(target=node.run, name=f"verifier-{i}", daemon=True)
        thread.start()
        nodes.append((node, thread))
    return nodes


@contextmanager
def running_network(chain: EmbeddedChain, store: EmbeddedStore, record: Path, out: Path,
                    ) -> Iterator[list[tuple[VerifierDaemon, threading.Thread]]]:
    """A block producer (one block every BLOCK_SECONDS) and three verifier nodes for the body of the `with`;
    the nodes are stopped and joined, and the producer stopped, when it ends."""
    producing = threading.Event()

    def produce_blocks() -> None:
        while not producing.wait(BLOCK_SECONDS):
            chain.mine(1)

    producer = threading.Thread(target=produce_blocks, name="block-producer", daemon=True)
    producer.start()
    nodes = _start_verifiers(chain, store, record, out)
    try:
        yield nodes
    finally:
        for node, _ in nodes:
            node.stop()
        for _, thread in nodes:
            thread.join(timeout=60)
        producing.set()
        producer.join()


def _wait(what: str, done: Any, timeout: float, nodes: list[tuple[VerifierDaemon, threading.Thread]],
          tick: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if tick is not None:
            tick()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        if any(not t.is_alive() for _, t in nodes):
            raise RuntimeError(f"a verifier node stopped while waiting for {what}")
        time.sleep(0.2)


def _report_of(store: EmbeddedStore, cid: str) -> dict[str, Any]:
    """The audit inside a verifier node's published report (`proofreg-verifier-report/1`)."""
    return dict(json.loads(store.cat(cid))["audit"])


def _segments(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in report.get("segments", []) if isinstance(s, dict)]


def run(out: Path, epochs: int, seed: int = 0, stages: Stages | None = None) -> dict[str, Any]:
    stages = stages or Stages(enabled=False)
    torch.set_num_threads(TORCH_THREADS)
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    if out.exists():
        shutil.rmtree(out)
    k = max(1, math.ceil(epochs * STEPS_PER_EPOCH / MAX_SEGMENTS))
    task = stages.start("training (recording every step)")
    result = train(out / "honest", family_args=MLP_ARGS, epochs=epochs, seed=seed, steps_per_segment=k,
                   progress=lambda d, t: stages.update(task, d, t))
    stages.finish(task)
    num_examples = int(json.loads((result.dataset_dir / "dataset.json").read_text())["numExamples"])
    (out / "forged").mkdir(parents=True)
    shutil.copytree(result.dataset_dir, out / "forged" / "dataset")
    forge_data_substitution(result.transcript_dir, out / "forged" / "transcript", num_examples, seed=seed + 1)
    seconds["train"] = round(time.perf_counter() - t0, 1)
    print(f"trained {result.summary.num_steps} steps ({result.summary.num_segments} segments of {k}), "
          f"accuracy {result.accuracy:.3f}, in {seconds['train']:.1f} s", flush=True)

    # ZK audits re-run setup: give them time (an exit must outlast commit + reveal)
    params = replace(preset("dev"), commit_period=600, reveal_period=300, exit_delay=1000)
    chain = EmbeddedChain(params)
    store = EmbeddedStore(out / "store")
    w3, reg, p, acct = chain.w3, chain.registry, chain.params, chain.accounts
    record = Deployment.from_receipt(w3, chain.deploy_receipt, p, "embedded").save(out / "deployment.json")
    gas: dict[str, int] = {}
    prover, forger, challenger = acct[1], acct[7], acct[2]

    def client(sender: str) -> RegistryClient:
        return RegistryClient(w3, reg, None, sender=sender)

    def send(sender: str, name: str, *args: Any, value: int = 0) -> Any:
        receipt = client(sender).transact(name, *args, value=value)
        gas.setdefault(name, int(receipt["gasUsed"]))
        return receipt

    os.environ["PROOFREG_ALLOW_DEV_SRS"] = "1"  # this demo's SRS is local: development only, and said so
    with running_network(chain, store, record, out) as nodes:
        _wait("the verifiers to register", lambda: reg.functions.activeVerifierCount().call() >= 3, 120, nodes)
        print(f"3 verifier nodes registered (logs in {out / 'verifiers'})", flush=True)

        claims: list[dict[str, Any]] = []
        task = stages.start("publishing and committing", 2)
        for n, (name, transcript, who) in enumerate((("honest", result.transcript_dir, prover),
                                                     ("forged", out / "forged" / "transcript", forger)), 1):
            published = publish_transcript(transcript, store)
            receipt = send(who, "commitTraining", published.claim_tuple(), value=p.training_bond)
            claim_id = int(reg.events.TrainingClaimCommitted().process_receipt(receipt)[0]["args"]["claimId"])
            size = sum(f.stat().st_size for f in transcript.rglob("*") if f.is_file())
            claims.append({"claim": name, "kind": "training", "claimId": claim_id, "prover": who,
                           "cid": published.transcript_cid, "evidenceBytes": size,
                           "numSegments": published.summary.num_segments})
            stages.update(task, n)

        from registry.cli.zk import commit_stored_bundle
        from registry.zk.prover import prove_inference

        t_zk = time.perf_counter()
        x, label = Dataset.load(result.dataset_dir).example(0)
        task = stages.start("ZK proof (ezkl: setup, witness, prove)")
        proved = prove_inference(result.transcript_dir, x.reshape(1, -1).tolist(), out / "zk-bundle", dev=True,
                                 cache_dir=out / "zk-cache")
        stages.finish(task)
        seconds["prove"] = round(time.perf_counter() - t_zk, 1)
        committed = commit_stored_bundle(client(prover), store, out / "zk-bundle", claims[0]["claimId"])
        gas.setdefault("commitInference", int(committed["gasUsed"]))
        outputs = proved.bundle.get("output") or []
        predicted = max(range(len(outputs)), key=lambda i: outputs[i]) if outputs else None
        print(f"ZK inference proof (logrows {proved.run.circuit.logrows}, development SRS) in "
              f"{time.perf_counter() - t_zk:.1f} s: predicts {predicted} for an example labelled {label}", flush=True)
        bundle_size = sum(f.stat().st_size for f in (out / "zk-bundle").rglob("*") if f.is_file())
        claims.append({"claim": "inference", "kind": "inference", "claimId": int(committed["claimId"]),
                       "prover": prover, "cid": committed["bundleCid"], "evidenceBytes": bundle_size,
                       "developmentOnly": committed["developmentOnly"]})

        before = {a: reg.functions.pendingWithdrawal(a).call() for a in (prover, forger, challenger)}
        stakes = {n.address: reg.functions.getVerifier(n.address).call()[0] for n, _ in nodes}
        t_audit = time.perf_counter()
        for c in claims:
            # the challenger names every segment (at most MAX_SEGMENTS): the audit, and so every figure of the
            # table, does not depend on the block hash that seeds the contract's own draws
            named = list(range(c["numSegments"]))[:MAX_SEGMENTS] if c["kind"] == "training" else []
            receipt = send(challenger, "openChallenge", c["claimId"], named, value=p.challenge_bond)
            c["challengeId"] = int(reg.events.ChallengeOpened().process_receipt(receipt)[0]["args"]["challengeId"])
        print("challenged all three claims; the verifier nodes take it from here", flush=True)
        task = stages.start("audits: challenges settled", len(claims))

        def tick() -> None:
            settled = sum(reg.functions.getChallenge(c["challengeId"]).call()[2] != 1 for c in claims)
            attested = len(reg.events.Attested().get_logs(from_block=0))
            stages.update(task, settled, label=f"audits: {attested} attestations, settled")

        _wait("settlement", lambda: all(reg.functions.getChallenge(c["challengeId"]).call()[2] != 1 for c in claims),
              SETTLE_TIMEOUT_S, nodes, tick)
        stages.finish(task)
        seconds["audit"] = round(time.perf_counter() - t_audit, 1)

    for event, label in ((reg.events.CommitteeDrawn, "drawCommittee"), (reg.events.VerdictCommitted, "commitVerdict"),
                         (reg.events.Attested, "attest"),
                         (reg.events.ChallengeSettled, "settle"), (reg.events.VerifierRegistered, "registerVerifier")):
        logs = event().get_logs(from_block=0)
        if logs:
            gas.setdefault(label, int(w3.eth.get_transaction_receipt(logs[0]["transactionHash"])["gasUsed"]))
    attested = reg.events.Attested().get_logs(from_block=0)
    (out / "plots").mkdir()
    rows = []
    for c in claims:
        ch = reg.functions.getChallenge(c["challengeId"]).call()
        reports = [_report_of(store, a["args"]["reportCid"]) for a in attested
                   if a["args"]["challengeId"] == c["challengeId"]]
        segs = _segments(reports[0]) if reports else []
        rhos = [float(s["rho"]) for s in segs if s.get("rho") is not None]
        attested_by = {str(a["args"]["verifier"]).lower(): VERDICT.get(int(a["args"]["verdict"]))
                       for a in attested if a["args"]["challengeId"] == c["challengeId"]}
        committee = [{"verifier": m, "verdict": attested_by.get(str(m).lower()),
                      "silent": str(m).lower() not in attested_by}
                     for m in reg.functions.committee(c["challengeId"]).call()]
        if c["kind"] == "training" and reports:
            plot = AuditReport(str(reports[0]["verdict"]), str(reports[0]["reason"]), float(reports[0]["threshold"]),
                               segments=[SegmentResult(int(s["index"]), s.get("rho"), passed=bool(s["passed"]))
                                         for s in segs])
            plot_report(plot, out / "plots" / f"{c['claim']}-rho.png", title=f"{c['claim']} claim {c['claimId']}: "
                        f"{reports[0]['verdict']}")
        c.pop("numSegments", None)
        rows.append({**c, "verdict": OUTCOME.get(ch[2], ch[2]),
                     "claimStatus": CLAIM_STATUS.get(reg.functions.getClaim(c["claimId"]).call()[3]),
                     "committee": committee, "silentMembers": [m["verifier"] for m in committee if m["silent"]],
                     "attestations": [r.get("verdict") for r in reports],
                     "reason": reports[0].get("reason") if reports else None,
                     "segmentsAudited": sorted(int(s["index"]) for s in segs),
                     "maxRho": max(rhos) if rhos else None,
                     "evidenceBytesFetched": int(reports[0].get("bytesFetched", 0)) if reports else 0,
                     "datasetBytesFetched": int(reports[0].get("datasetBytesFetched", 0)) if reports else 0})
    credits = {who: reg.functions.pendingWithdrawal(a).call() - before[a]
               for who, a in (("honest prover", prover), ("forger", forger), ("challenger", challenger))}
    stake_change = sum(reg.functions.getVerifier(a).call()[0] - s for a, s in stakes.items())
    owner = reg.functions.ownerOf(result.summary.final_weights_hash).call()
    seconds["total"] = round(time.perf_counter() - t0, 1)
    return {"seed": seed, "rows": rows, "gas": gas, "ownerOfFinalWeights": owner, "honestProver": prover,
            "credits": credits, "verifierStakeChange": stake_change, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="proof-registry main job on embedded defaults")
    parser.add_argument("--out", type=Path, default=ROOT / "demo-out")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="training and forgery seed (same seed, same figures)")
    args = parser.parse_args(argv)
    stages = Stages()
    try:
        report = run(args.out, args.epochs, args.seed, stages)
    finally:
        stages.close()
    print()
    print(f"{'claim':<9} {'id':>2} {'verdict':<8} {'status':<9} {'max rho':>9} {'audited':>7} "
          f"{'evidence fetched/size':>21}")
    for r in report["rows"]:
        rho = f"{r['maxRho']:.3g}" if r["maxRho"] is not None else "-"
        frac = f"{r['evidenceBytesFetched'] / 1e3:.0f}/{r['evidenceBytes'] / 1e3:.0f} kB"
        audited = len(r["segmentsAudited"]) if r["kind"] == "training" else "proof"
        print(f"{r['claim']:<9} {r['claimId']:>2} {r['verdict']:<8} {r['claimStatus']:<9} {rho:>9} {audited:>7} "
              f"{frac:>21}")
    print("bonds moved (ETH credited): " + ", ".join(f"{k} {v / E:+.3f}" for k, v in report["credits"].items())
          + f", verifiers' stakes {report['verifierStakeChange'] / E:+.3f}")
    print("gas: " + ", ".join(f"{k} {v:,}" for k, v in report["gas"].items()))
    owner = report["ownerOfFinalWeights"]
    print(f"ownerOf(final weights) = {owner} ({'the honest prover' if owner == report['honestProver'] else '?'})")
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    for r in report["rows"]:
        if r["silentMembers"]:
            print(f"{r['claim']}: {len(r['silentMembers'])} of {len(r['committee'])} committee members silent "
                  "(the quorum settled the challenge before they attested)")
    t = report["seconds"]
    print(f"report: {args.out / 'report.json'}, plots: {args.out / 'plots'}  ({t['total']} s: training "
          f"{t['train']} s, ZK proof {t['prove']} s, audits {t['audit']} s)")
    verdicts = [r["verdict"] for r in report["rows"]]
    return 0 if verdicts == ["Valid", "Invalid", "Valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
