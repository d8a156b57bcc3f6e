"""The main job on embedded defaults: training, inference and forged claims, challenged, audited and settled.

    python scripts/demo.py [--out DIR] [--epochs N]        (or: make demo)

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
7. prints a table (claims, verdicts, distances, bonds moved, gas) and writes `report.json` and plots.
Everything is real; only the adversary is scripted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from registry.chain import RegistryClient  # noqa: E402
from registry.datasets import Dataset  # noqa: E402
from registry.deployment import Deployment  # noqa: E402
from registry.hashing import sha256  # noqa: E402
from registry.localchain import EmbeddedChain  # noqa: E402
from registry.params import preset  # noqa: E402
from registry.pol.train import train  # noqa: E402
from registry.pol.transcript import MANIFEST_NAME, load_manifest, segment_tree, write_manifest  # noqa: E402
from registry.publish import publish_transcript  # noqa: E402
from registry.signer import dev_signer  # noqa: E402
from registry.store.embedded import EmbeddedStore  # noqa: E402
from verifier.daemon import DaemonConfig, JsonLog, VerifierDaemon  # noqa: E402
from verifier.report import AuditReport, SegmentResult, plot_report  # noqa: E402

OUTCOME = {1: "Open", 2: "Valid", 3: "Invalid", 4: "Unavailable", 5: "Expired"}
CLAIM_STATUS = {1: "Committed", 2: "Valid", 3: "Invalid", 4: "Finalized"}
MLP_ARGS = {"in_features": 64, "hidden": [16], "out_features": 10, "dropout": 0.1}
BLOCK_SECONDS = 0.5  # the block producer's pace (the embedded chain mines on demand otherwise)
SETTLE_TIMEOUT_S = 480
E = 10**18


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


def _wait(what: str, done: Any, timeout: float, nodes: list[tuple[VerifierDaemon, threading.Thread]]) -> None:
    deadline = time.monotonic() + timeout
    while not done():
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


def run(out: Path, epochs: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    result = train(out / "honest", family_args=MLP_ARGS, epochs=epochs, seed=0)
    num_examples = int(json.loads((result.dataset_dir / "dataset.json").read_text())["numExamples"])
    (out / "forged").mkdir(parents=True)
    shutil.copytree(result.dataset_dir, out / "forged" / "dataset")
    forge_data_substitution(result.transcript_dir, out / "forged" / "transcript", num_examples)
    print(f"trained {result.summary.num_steps} steps ({result.summary.num_segments} segments), "
          f"accuracy {result.accuracy:.3f}, in {time.perf_counter() - t0:.1f} s", flush=True)

    params = replace(preset("dev"), commit_period=600, reveal_period=300)  # ZK audits re-run setup: give them time
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
    producing = threading.Event()

    def produce_blocks() -> None:
        while not producing.wait(BLOCK_SECONDS):
            chain.mine(1)

    producer = threading.Thread(target=produce_blocks, name="block-producer", daemon=True)
    producer.start()
    nodes = _start_verifiers(chain, store, record, out)
    try:
        _wait("the verifiers to register", lambda: reg.functions.activeVerifierCount().call() >= 3, 120, nodes)
        print(f"3 verifier nodes registered (logs in {out / 'verifiers'})", flush=True)

        claims: list[dict[str, Any]] = []
        for name, transcript, who in (("honest", result.transcript_dir, prover),
                                      ("forged", out / "forged" / "transcript", forger)):
            published = publish_transcript(transcript, store)
            receipt = send(who, "commitTraining", published.claim_tuple(), value=p.training_bond)
            claim_id = int(reg.events.TrainingClaimCommitted().process_receipt(receipt)[0]["args"]["claimId"])
            size = sum(f.stat().st_size for f in transcript.rglob("*") if f.is_file())
            claims.append({"claim": name, "kind": "training", "claimId": claim_id, "prover": who,
                           "cid": published.transcript_cid, "evidenceBytes": size})

        from registry.zk.cli import commit_stored_bundle
        from registry.zk.prover import prove_inference

        t_zk = time.perf_counter()
        x, label = Dataset.load(result.dataset_dir).example(0)
        proved = prove_inference(result.transcript_dir, x.reshape(1, -1).tolist(), out / "zk-bundle", dev=True,
                                 cache_dir=out / "zk-cache")
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
        for c in claims:
            receipt = send(challenger, "openChallenge", c["claimId"], [], value=p.challenge_bond)
            c["challengeId"] = int(reg.events.ChallengeOpened().process_receipt(receipt)[0]["args"]["challengeId"])
        print("challenged all three claims; the verifier nodes take it from here", flush=True)
        _wait("settlement", lambda: all(reg.functions.getChallenge(c["challengeId"]).call()[2] != 1 for c in claims),
              SETTLE_TIMEOUT_S, nodes)
    finally:
        for node, _ in nodes:
            node.stop()
        for _, thread in nodes:
            thread.join(timeout=60)
        producing.set()
        producer.join()

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
        fetched = reports[0].get("bytesFetched", 0) + reports[0].get("datasetBytesFetched", 0) if reports else 0
        fetched = int(fetched)
        if c["kind"] == "training" and reports:
            plot = AuditReport(str(reports[0]["verdict"]), str(reports[0]["reason"]), float(reports[0]["threshold"]),
                               segments=[SegmentResult(int(s["index"]), s.get("rho"), passed=bool(s["passed"]))
                                         for s in segs])
            plot_report(plot, out / "plots" / f"{c['claim']}-rho.png", title=f"{c['claim']} claim {c['claimId']}: "
                        f"{reports[0]['verdict']}")
        rows.append({**c, "verdict": OUTCOME.get(ch[2], ch[2]),
                     "claimStatus": CLAIM_STATUS.get(reg.functions.getClaim(c["claimId"]).call()[3]),
                     "attestations": [r.get("verdict") for r in reports],
                     "reason": reports[0].get("reason") if reports else None,
                     "segmentsAudited": sorted(int(s["index"]) for s in segs),
                     "maxRho": max(rhos) if rhos else None, "bytesFetchedPerAudit": fetched,
                     "evidenceBytesFetched": reports[0].get("bytesFetched", 0) if reports else 0})
    credits = {who: reg.functions.pendingWithdrawal(a).call() - before[a]
               for who, a in (("honest prover", prover), ("forger", forger), ("challenger", challenger))}
    stake_change = sum(reg.functions.getVerifier(a).call()[0] - s for a, s in stakes.items())
    owner = reg.functions.ownerOf(result.summary.final_weights_hash).call()
    return {"rows": rows, "gas": gas, "ownerOfFinalWeights": owner, "honestProver": prover,
            "credits": credits, "verifierStakeChange": stake_change,
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="proof-registry main job on embedded defaults")
    parser.add_argument("--out", type=Path, default=ROOT / "demo-out")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    report = run(args.out, args.epochs)
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
    print(f"report: {args.out / 'report.json'}, plots: {args.out / 'plots'}  ({report['seconds']} s)")
    verdicts = [r["verdict"] for r in report["rows"]]
    return 0 if verdicts == ["Valid", "Invalid", "Valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
