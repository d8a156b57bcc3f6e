"""Gas is deterministic on the EVM, so its goals are checked as regressions (not as timings)."""

from __future__ import annotations

from bench.gas import GOALS, measure


def test_operations_meet_gas_goals() -> None:
    rows = measure()
    assert next(g for op, _, g in rows if op == "transfer") == 21_000
    checked = 0
    for op, case, gas in rows:
        # daemons call drawCommittee first; a claim with a parent pays one more fresh storage slot (22,100 gas)
        # for its on-chain lineage, reported beside the goal rather than held to it
        if op in GOALS and case != "draws the committee lazily" and "origin Parent" not in case:
            assert gas <= GOALS[op], f"{op} ({case}) uses {gas} gas, goal {GOALS[op]}"
            checked += 1
    assert checked >= 8
