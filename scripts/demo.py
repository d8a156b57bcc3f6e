"""The main job on embedded defaults: an honest and a forged Proof-of-Learning claim, challenged and settled.

    python scripts/demo.py [--out DIR] [--epochs N]        (or: make demo)

1. trains a small MLP on scikit-learn's digits with Proof-of-Learning recording (real torch, CPU);
2. forges a second transcript from it (every batch file replaced by other examples, the manifest resealed so
   that it is internally consistent: a data-substitution forgery);
3. publishes both to the embedded content store (real IPFS blocks and CIDs) and commits both claims to an
   in-process EVM running the shipped registry contract;
4. registers three verifiers, challenges both claims, and lets each committee member audit its sampled
   segments (fetching only the manifest and those segments' files from the store, re-executing them) and
   attest on-chain; then settles and prints what happened: verdicts, distances, bonds moved and gas.
Everything is real; only the adversary is scripted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from registry.hashing import keccak256, sha256  # noqa: E402
from registry.localchain import EmbeddedChain  # noqa: E402
from registry.params import preset  # noqa: E402
from registry.pol.train import train  # noqa: E402
from registry.pol.transcript import MANIFEST_NAME, load_manifest, segment_tree, write_manifest  # noqa: E402
from registry.publish import publish_transcript  # noqa: E402
from registry.store.embedded import EmbeddedStore  # noqa: E402
from verifier.audit import VERDICT_CODE, TrainingClaimFields, audit_training_claim  # noqa: E402

OUTCOME = {2: "Valid", 3: "Invalid", 4: "Unavailable", 5: "Expired"}
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


def run(out: Path, epochs: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    result = train(out / "honest", epochs=epochs, seed=0)
    num_examples = int(json.loads((result.dataset_dir / "dataset.json").read_text())["numExamples"])
    (out / "forged").mkdir(parents=True)
    shutil.copytree(result.dataset_dir, out / "forged" / "dataset")
    forge_data_substitution(result.transcript_dir, out / "forged" / "transcript", num_examples)
    print(f"trained {result.summary.num_steps} steps ({result.summary.num_segments} segments), "
          f"accuracy {result.accuracy:.3f}, in {time.perf_counter() - t0:.1f} s")

    chain = EmbeddedChain(preset("dev"))
    store = EmbeddedStore(out / "store")
    w3, reg, p, acct = chain.w3, chain.registry, chain.params, chain.accounts
    gas: dict[str, int] = {}

    def send(fn: Any, sender: str, value: int = 0, label: str = "") -> Any:
        receipt = w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender, "value": value}))
        if label:
            gas[label] = int(receipt.gasUsed)
        return receipt

    verifiers = acct[3:6]
    for v in verifiers:
        send(reg.functions.registerVerifier(), v, p.verifier_stake, "registerVerifier")
    challenger = acct[2]
    rows = []
    for name, transcript, prover in (("honest", out / "honest" / "transcript", acct[1]),
                                     ("forged", out / "forged" / "transcript", acct[7])):
        published = publish_transcript(transcript, store)
        receipt = send(reg.functions.commitTraining(published.claim_tuple()), prover, p.training_bond,
                       "commitTraining")
        claim_id = int(reg.events.TrainingClaimCommitted().process_receipt(receipt)[0]["args"]["claimId"])
        event_claim = dict(reg.events.TrainingClaimCommitted().process_receipt(receipt)[0]["args"]["claim"])
        fields = TrainingClaimFields.from_event(event_claim)
        receipt = send(reg.functions.openChallenge(claim_id, []), challenger, p.challenge_bond, "openChallenge")
        ch = int(reg.events.ChallengeOpened().process_receipt(receipt)[0]["args"]["challengeId"])
        chain.mine(p.seed_delay + 1)
        send(reg.functions.drawCommittee(ch), acct[0], label="drawCommittee")
        committee = reg.functions.committee(ch).call()
        segments = [int(s) for s in reg.functions.sampledSegments(ch).call()]
        reports = []
        for member in committee:
            report = audit_training_claim(store, fields, segments)
            report_cid = store.add_bytes(json.dumps(report.to_json(), sort_keys=True).encode())
            send(reg.functions.attest(ch, VERDICT_CODE[report.verdict], keccak256(report.results_bytes()),
                                      report_cid), member, label="attest")
            reports.append(report)
            if sum(r.verdict == report.verdict for r in reports) >= p.quorum:
                break
        before = {a: reg.functions.pendingWithdrawal(a).call() for a in (prover, challenger)}
        stakes = {v: reg.functions.getVerifier(v).call()[0] for v in verifiers}
        send(reg.functions.settle(ch), acct[0], label="settle")
        outcome = OUTCOME[reg.functions.getChallenge(ch).call()[2]]
        rhos = [s.rho for s in reports[0].segments if s.rho is not None]
        transcript_bytes = sum(f.stat().st_size for f in transcript.rglob("*") if f.is_file())
        rows.append({
            "claim": name, "claimId": claim_id, "transcriptCid": published.transcript_cid,
            "verdict": outcome, "segmentsAudited": sorted(set(segments)),
            "maxRho": max(rhos) if rhos else None, "reason": reports[0].reason,
            "bytesFetchedPerAudit": reports[0].bytes_fetched, "transcriptBytes": transcript_bytes,
            "datasetBytesFetched": reports[0].dataset_bytes_fetched,
            "proverCredit": reg.functions.pendingWithdrawal(prover).call() - before[prover],
            "challengerCredit": reg.functions.pendingWithdrawal(challenger).call() - before[challenger],
            "verifierStakeChange": sum(reg.functions.getVerifier(v).call()[0] - stakes[v] for v in verifiers),
            "claimStatus": {1: "Committed", 2: "Valid", 3: "Invalid"}.get(reg.functions.getClaim(claim_id).call()[3]),
        })
    owner = reg.functions.ownerOf(result.summary.final_weights_hash).call()
    return {"rows": rows, "gas": gas, "ownerOfFinalWeights": owner, "honestProver": acct[1],
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="proof-registry main job on embedded defaults")
    parser.add_argument("--out", type=Path, default=ROOT / "demo-out")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    report = run(args.out, args.epochs)
    print()
    print(f"{'claim':<7} {'id':>2} {'verdict':<8} {'status':<8} {'max rho':>9} {'audited':>7} "
          f"{'fetched/transcript':>18} {'prover':>9} {'challenger':>10} {'verifiers':>9}")
    for r in report["rows"]:
        rho = f"{r['maxRho']:.3g}" if r["maxRho"] is not None else "-"
        frac = f"{r['bytesFetchedPerAudit'] / 1e3:.0f}/{r['transcriptBytes'] / 1e3:.0f} kB"
        print(f"{r['claim']:<7} {r['claimId']:>2} {r['verdict']:<8} {r['claimStatus']:<8} {rho:>9} "
              f"{len(r['segmentsAudited']):>7} {frac:>18} {r['proverCredit'] / E:>+9.3f} "
              f"{r['challengerCredit'] / E:>+10.3f} {r['verifierStakeChange'] / E:>+9.3f}")
    print("(credits in ETH; the forged claim's bond went to the challenger and the majority verifiers; "
          f"each audit also fetched the {report['rows'][0]['datasetBytesFetched'] / 1e3:.0f} kB training set)")
    print("gas: " + ", ".join(f"{k} {v:,}" for k, v in report["gas"].items()))
    owner = report["ownerOfFinalWeights"]
    print(f"ownerOf(final weights) = {owner} ({'the honest prover' if owner == report['honestProver'] else '?'})")
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"report: {args.out / 'report.json'}  ({report['seconds']} s)")
    verdicts = [r["verdict"] for r in report["rows"]]
    return 0 if verdicts == ["Valid", "Invalid"] else 1


if __name__ == "__main__":
    sys.exit(main())
