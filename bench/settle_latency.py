"""Challenge → settlement latency with real processes (`python -m bench.settle_latency`).

A Hardhat node (automine plus a block every `--block-time` seconds, like a local devnet), the js-ipfs daemon
(or the embedded store with `--store embedded`), three `proofreg-verifier run` daemons, and a small
Proof-of-Learning claim (MLP on the digits, `--steps` steps, k = 10). Each round opens a challenge on the
claim and waits for `ChallengeSettled`; it prints the time of each round and where it went (seed block,
committee drawn, audits, attestations, settlement), taken from the daemons' JSON logs.

Goal (issue 4): ≤ 30 s on CPU for a small model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from web3 import HTTPProvider, Web3  # noqa: E402

from registry.chain.deployment import Deployment  # noqa: E402
from registry.chain.local import deploy_registry  # noqa: E402
from registry.core.params import preset  # noqa: E402
from registry.pol.publish import publish_transcript  # noqa: E402
from registry.pol.train import train  # noqa: E402
from tests.ipfs_node import IpfsDaemon  # noqa: E402
from tests.nodes import start_hardhat_node  # noqa: E402
from tests.test_verifier_daemon import VerifierProc  # noqa: E402

DEV = preset("dev")


def _events(procs: list[VerifierProc], challenge: int) -> dict[str, list[float]]:
    """Log timestamps per event name for one challenge, across the daemons."""
    out: dict[str, list[float]] = {}
    for p in procs:
        for r in p.log_records():
            if r.get("challenge") == challenge:
                out.setdefault(str(r["event"]), []).append(float(r["ts"]))
    return out


def run(rounds: int, steps: int, block_time: float, store_kind: str, work: Path) -> dict[str, Any]:
    node = start_hardhat_node(log_path=work / "hardhat.log")
    ipfs: IpfsDaemon | None = None
    procs: list[VerifierProc] = []
    try:
        w3 = Web3(HTTPProvider(node.url))
        accounts = w3.eth.accounts
        reg, receipt = deploy_registry(w3, DEV, accounts[0])
        home = work / "home"
        Deployment.from_receipt(w3, receipt, DEV, "hardhat").save(home / "deployments" / f"{int(w3.eth.chain_id)}.json")
        # three daemons share this machine's cores: one torch thread each (a real node has its own machine)
        env = {**os.environ, "PROOFREG_HOME": str(home), "PROOFREG_RPC": node.url, "OMP_NUM_THREADS": "1"}
        env.pop("PROOFREG_PRIVATE_KEY", None)
        if store_kind == "ipfs":
            ipfs = IpfsDaemon.create(work / "ipfs")
            ipfs.start()
            from registry.store.daemon import DaemonStore

            store: Any = DaemonStore(ipfs.api)
            api = ipfs.api
        else:
            from registry.store.embedded import EmbeddedStore

            store = EmbeddedStore(home / "store")
            api = ""
        procs = [VerifierProc(i, home, env, api) for i in (3, 4, 5)]
        for p in procs:
            p.start()
        t = time.perf_counter()
        result = train(work / "run", epochs=1, max_steps=steps, steps_per_segment=10, seed=0)
        train_s = time.perf_counter() - t
        published = publish_transcript(result.transcript_dir, store)
        tx = reg.functions.commitTraining(published.claim_tuple()).transact({"from": accounts[1],
                                                                             "value": DEV.training_bond})
        claim_id = int(reg.events.TrainingClaimCommitted().process_receipt(
            w3.eth.wait_for_transaction_receipt(tx))[0]["args"]["claimId"])
        for p in procs:
            p.wait_ready()
        if block_time > 0:
            node.rpc("evm_setIntervalMining", [int(block_time * 1000)])
        rows = []
        for _ in range(rounds):
            t0 = time.time()
            tx = reg.functions.openChallenge(claim_id, []).transact({"from": accounts[2],
                                                                     "value": DEV.challenge_bond})
            rec = w3.eth.wait_for_transaction_receipt(tx)
            cid = int(reg.events.ChallengeOpened().process_receipt(rec)[0]["args"]["challengeId"])
            if block_time <= 0:
                node.mine(DEV.seed_delay + 1)
            while int(reg.functions.getChallenge(cid).call()[2]) == 1:
                time.sleep(0.05)
            total = time.time() - t0
            time.sleep(0.5)  # let the logs of the last actions land
            ev = _events(procs, cid)

            def first(name: str, ev: dict[str, list[float]] = ev, t0: float = t0) -> float | None:
                return round(min(ev[name]) - t0, 2) if name in ev else None

            rows.append({"challenge": cid, "seconds": round(total, 2), "seen": first("challenge_seen"),
                         "assigned": first("assigned"), "firstAudit": first("audited"),
                         "firstAttest": first("attested"), "settled": first("settled"),
                         "outcome": int(reg.functions.getChallenge(cid).call()[2])})
        secs = [r["seconds"] for r in rows]
        return {"store": store_kind, "blockTime": block_time, "steps": steps,
                "segments": published.summary.num_segments, "trainSeconds": round(train_s, 1), "rounds": rows,
                "median": round(statistics.median(secs), 2), "min": min(secs), "max": max(secs)}
    finally:
        for p in procs:
            p.stop()
        if ipfs is not None:
            ipfs.stop()
        node.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="training steps of the claim (k = 10)")
    parser.add_argument("--block-time", type=float, default=1.0,
                        help="seconds between blocks besides automine (0: mine the seed blocks at once)")
    parser.add_argument("--store", choices=("ipfs", "embedded"), default="ipfs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="settle-bench-") as tmp:
        report = run(args.rounds, args.steps, args.block_time, args.store, Path(tmp))
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"store {report['store']}, block time {report['blockTime']} s, claim of {report['steps']} steps "
          f"({report['segments']} segments), 3 verifier daemons, dev preset (seed delay {DEV.seed_delay}, "
          f"quorum {DEV.quorum})")
    print(f"{'challenge':>9} {'total s':>8} {'seen':>6} {'assigned':>8} {'audited':>8} {'attested':>8} "
          f"{'settled':>8}  outcome")
    for r in report["rounds"]:
        def cell(v: Any) -> str:
            return "-" if v is None else f"{v:.2f}"
        print(f"{r['challenge']:>9} {r['seconds']:>8.2f} {cell(r['seen']):>6} {cell(r['assigned']):>8} "
              f"{cell(r['firstAudit']):>8} {cell(r['firstAttest']):>8} {cell(r['settled']):>8}  "
              f"{ {2: 'Valid', 3: 'Invalid'}.get(r['outcome'], r['outcome']) }")
    print(f"challenge -> settlement: median {report['median']} s (min {report['min']}, max {report['max']}); "
          "goal <= 30 s")
    return 0 if report["median"] <= 30 else 1


if __name__ == "__main__":
    sys.exit(main())
