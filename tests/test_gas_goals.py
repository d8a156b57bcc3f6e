"""Gas is deterministic on the EVM, so its goals are checked as regressions (not as timings)."""

from __future__ import annotations

import pytest

from bench.gas import GOALS, LARGE_C, LAZY_GOAL, measure, measure_large

LAZY = "draws the committee lazily"


@pytest.fixture(scope="module")
def rows() -> list[tuple[str, str, int]]:
    return measure()


@pytest.fixture(scope="module")
def large_rows() -> list[tuple[str, str, int]]:
    return measure_large()


def test_operations_meet_gas_goals(rows: list[tuple[str, str, int]]) -> None:
    assert next(g for op, _, g in rows if op == "transfer") == 21_000
    checked = 0
    for op, case, gas in rows:
        # daemons call drawCommittee first; a claim with a parent pays one more fresh storage slot (22,100 gas)
        # for its on-chain lineage, reported beside the goal rather than held to it
        if op in GOALS and case != LAZY and "origin Parent" not in case:
            assert gas <= GOALS[op], f"{op} ({case}) uses {gas} gas, goal {GOALS[op]}"
            checked += 1
    assert checked >= 8


def test_lazy_draw_commit_meets_goal(rows: list[tuple[str, str, int]]) -> None:
    """86.5k-87.7k (the seed block's hash decides how often a pick probes past an already-picked verifier): the
    draw writes nothing per member and reads no claim (issue 14; it was 99.3k-101.4k with duty counters)."""
    gas = next(g for op, case, g in rows if op == "commitVerdict" and case == LAZY)
    assert gas <= LAZY_GOAL, f"commitVerdict ({LAZY}) uses {gas} gas, goal {LAZY_GOAL}"


def test_large_committee_commit_and_reveal_meet_goals(large_rows: list[tuple[str, str, int]]) -> None:
    """C = 8: a commit or reveal reads the second committee slot too (about 2k more) and stays in its goal;
    the draw, the lazy draw and settle grow with C and are reported (bench/gas.py), not held to C = 3 goals."""
    assert all(case.startswith(f"C={LARGE_C}") for _, case, _ in large_rows)
    checked = 0
    for op, case, gas in large_rows:
        if op in ("commitVerdict", "revealVerdict") and not case.endswith(LAZY):
            assert gas <= GOALS[op], f"{op} ({case}) uses {gas} gas, goal {GOALS[op]}"
            checked += 1
    assert checked == 4
    assert {op for op, _, _ in large_rows} == {"drawCommittee", "commitVerdict", "revealVerdict", "settle"}
