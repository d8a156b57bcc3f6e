"""Gas used by each registry operation on the embedded EVM, against the goals and against a plain ether
transfer measured in the same run (21,000 gas on any EVM, so the ratio doubles as a sanity check).

    python -m bench.gas [--json]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

from registry.chain.local import EmbeddedChain
from registry.core.hashing import keccak256
from registry.core.params import preset
from registry.core.sampling import commitment_of

GOALS = {"commitTraining": 120_000, "commitInference": 120_000, "openChallenge": 150_000, "commitVerdict": 70_000,
         "revealVerdict": 70_000, "settle": 120_000}
#: The lazy draw's goal: a commit that draws the committee (the old one-phase `attest` with a lazy draw).
LAZY_GOAL = 90_000
#: EAS 1.9.0 `attest` on the same kind of node (issue 14), for comparison: one attestation, no committee.
EAS_ATTEST = 340_124
SALT = b"\x5a" * 32
CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"


#: The committee size of the extra rows (`measure_large`): the most the contract packs, positions 4..7 in the
#: challenge record's second committee slot.
LARGE_C = 8
LARGE_POOL = 10


def goal_of(op: str, case: str) -> int | None:
    return LAZY_GOAL if case.endswith("draws the committee lazily") else GOALS.get(op)


def _claim(seed: int, weights: bytes | None = None, parent: int = 0) -> tuple[Any, ...]:
    return (CID, keccak256(b"root%d" % seed), keccak256(b"head%d" % seed), weights or keccak256(b"w%d" % seed),
            keccak256(b"data"), keccak256(b"cfg%d" % seed), 64, 10, keccak256(b"init%d" % seed), parent,
            1 if parent else 0)


def _accepts(fn: Any, sender: str) -> bool:
    """Whether `sender` could send this call now (its gas estimate does not revert)."""
    try:
        fn.estimate_gas({"from": sender})
    except Exception:  # noqa: BLE001 - any revert means no
        return False
    return True


def measure() -> list[tuple[str, str, int]]:
    chain = EmbeddedChain(preset("dev"))
    w3, reg, p, acct = chain.w3, chain.registry, chain.params, chain.accounts
    rows: list[tuple[str, str, int]] = []

    def run(op: str, case: str, fn: Any, sender: str, value: int = 0) -> Any:
        receipt = w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender, "value": value}))
        rows.append((op, case, int(receipt.gasUsed)))
        return receipt

    transfer = w3.eth.send_transaction({"from": acct[0], "to": acct[9], "value": 1})
    base = w3.eth.wait_for_transaction_receipt(transfer)
    rows.append(("transfer", "plain ether transfer (baseline)", int(base.gasUsed)))
    for i, v in enumerate(acct[3:7]):
        run("registerVerifier", "first verifier" if i == 0 else "another verifier", reg.functions.registerVerifier(),
            v, p.verifier_stake)
    run("commitTraining", "first claim of the deployment", reg.functions.commitTraining(_claim(1)), acct[1],
        p.training_bond)
    run("commitTraining", "same weights as an earlier claim", reg.functions.commitTraining(
        _claim(2, keccak256(b"w1"))), acct[7], p.training_bond)
    run("commitInference", "linked to a training claim", reg.functions.commitInference(
        (1, keccak256(b"vk"), keccak256(b"pf"), keccak256(b"in"), CID)), acct[1], p.inference_bond)
    run("commitTraining", "fine-tuned from claim 1 (origin Parent)", reg.functions.commitTraining(
        _claim(4, parent=1)), acct[7], p.training_bond)
    run("openChallenge", "no named segments", reg.functions.openChallenge(1, []), acct[2], p.challenge_bond)
    run("openChallenge", "8 named segments", reg.functions.openChallenge(1, list(range(8))), acct[8],
        p.challenge_bond)
    chain.mine(p.seed_delay + 1)
    run("drawCommittee", "C=3 of 4 verifiers", reg.functions.drawCommittee(1), acct[0])
    committee = reg.functions.committee(1).call()

    def commit_fn(ch: int, verdict: int, member: str) -> Any:
        return reg.functions.commitVerdict(ch, commitment_of(verdict, keccak256(b"r"), CID, SALT, member))

    def reveal_fn(ch: int, verdict: int) -> Any:
        return reg.functions.revealVerdict(ch, verdict, keccak256(b"r"), CID, SALT)

    run("commitVerdict", "committee drawn", commit_fn(1, 1, committee[0]), committee[0])
    run("commitVerdict", "second member", commit_fn(1, 1, committee[1]), committee[1])
    run("commitVerdict", "last member (opens the reveal)", commit_fn(1, 1, committee[2]), committee[2])
    run("revealVerdict", "first reveal", reveal_fn(1, 1), committee[0])
    run("revealVerdict", "second reveal (quorum)", reveal_fn(1, 1), committee[1])
    run("settle", "Valid by quorum", reg.functions.settle(1), acct[0])
    # Challenge 2's committee is not drawn yet and depends on a block hash: ask the contract which verifier
    # it would accept (a gas estimate runs the lazy draw) instead of guessing one.
    lazy = next(v for v in acct[3:7] if _accepts(commit_fn(2, 2, v), v))
    run("commitVerdict", "draws the committee lazily", commit_fn(2, 2, lazy), lazy)
    second = next(v for v in reg.functions.committee(2).call() if v != lazy)
    run("commitVerdict", "second member", commit_fn(2, 2, second), second)
    chain.mine(p.commit_period)
    run("revealVerdict", "after the commit deadline", reveal_fn(2, 2), lazy)
    run("revealVerdict", "second reveal (quorum)", reveal_fn(2, 2), second)
    run("settle", "Invalid by quorum (prover slashed)", reg.functions.settle(2), acct[0])
    run("withdraw", "challenger", reg.functions.withdraw(), acct[8])
    run("requestExit", "", reg.functions.requestExit(), acct[6])
    chain.mine(p.challenge_window)
    run("finalize", "claim 3 (inference)", reg.functions.finalize(3), acct[0])
    run("completeExit", "", reg.functions.completeExit(), acct[6])
    return rows


def measure_large(size: int = LARGE_C, pool: int = LARGE_POOL) -> list[tuple[str, str, int]]:
    """The committee phase with C = `size` (quorum C/2 + 1) drawn from `pool` verifiers: what a committee
    larger than 4 adds (its second slot, more members to draw, release and pay). Cases start with `C=<size>`."""
    chain = EmbeddedChain(replace(preset("dev"), committee_size=size, quorum=size // 2 + 1))
    w3, reg, p, acct = chain.w3, chain.registry, chain.params, chain.accounts
    for i in range(max(0, pool + 2 - len(acct))):  # eth-tester has 10 accounts: add the ones missing
        extra = chain.tester.add_account("0x" + (0x6A5000 + i).to_bytes(32, "big").hex())
        w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction({"from": acct[0], "to": extra, "value": 10**21}))
        acct.append(w3.to_checksum_address(extra))
    prover, challenger = acct[1], acct[2]
    pool_accounts = [a for a in acct if a not in (prover, challenger)][:pool]
    rows: list[tuple[str, str, int]] = []
    tag = f"C={size}"

    def send(fn: Any, sender: str, value: int = 0) -> int:
        return int(w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender, "value": value})).gasUsed)

    def commit_fn(ch: int, member: str) -> Any:
        return reg.functions.commitVerdict(ch, commitment_of(1, keccak256(b"r"), CID, SALT, member))

    for v in pool_accounts:
        send(reg.functions.registerVerifier(), v, p.verifier_stake)
    send(reg.functions.commitTraining(_claim(1)), prover, p.training_bond)
    for _ in range(2):
        send(reg.functions.openChallenge(1, []), challenger, p.challenge_bond)
    chain.mine(p.seed_delay + 1)
    rows.append(("drawCommittee", f"{tag} of {pool} verifiers", send(reg.functions.drawCommittee(1), acct[0])))
    committee = reg.functions.committee(1).call()
    gas = [send(commit_fn(1, m), m) for m in committee]
    rows.append(("commitVerdict", f"{tag}, committee drawn, position 0", gas[0]))
    rows.append(("commitVerdict", f"{tag}, position 4 (second committee slot)", gas[4]))
    rows.append(("commitVerdict", f"{tag}, last member (opens the reveal)", gas[-1]))
    quorum = size // 2 + 1
    reveals = [send(reg.functions.revealVerdict(1, 1, keccak256(b"r"), CID, SALT), m)
               for m in reversed(committee[-quorum:])]
    rows.append(("revealVerdict", f"{tag}, position {size - 1} (second committee slot)", reveals[0]))
    rows.append(("settle", f"{tag}, Valid by quorum of {quorum}", send(reg.functions.settle(1), acct[0])))
    lazy = next(v for v in pool_accounts if _accepts(commit_fn(2, v), v))
    rows.append(("commitVerdict", f"{tag}, draws the committee lazily", send(commit_fn(2, lazy), lazy)))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = measure() + measure_large()
    baseline = next(g for op, _, g in rows if op == "transfer")
    if args.json:
        print(json.dumps([{"op": o, "case": c, "gas": g, "goal": goal_of(o, c)} for o, c, g in rows]
                         + [{"op": "EAS attest", "case": "EAS 1.9.0 (reference)", "gas": EAS_ATTEST, "goal": None}],
                         indent=1))
        return
    print(f"{'operation':<17} {'case':<40} {'gas':>9} {'x transfer':>10} {'goal':>9} {'of goal':>8}")
    for op, case, gas in [*rows, ("EAS attest", "EAS 1.9.0, same kind of node (reference)", EAS_ATTEST)]:
        goal = goal_of(op, case)
        of_goal = f"{gas / goal:.2f}" if goal else ""
        print(f"{op:<17} {case:<40} {gas:>9,} {gas / baseline:>10.2f} {goal or '':>9} {of_goal:>8}")
    commit_reveal = [g for op, c, g in rows if op in ("commitVerdict", "revealVerdict") and c in
                     ("committee drawn", "first reveal")]
    total = sum(commit_reveal)
    print(f"one commit-reveal attestation: {total:,} gas = {total / EAS_ATTEST:.2f} x EAS attest")


if __name__ == "__main__":
    main()
