"""Gas is deterministic on the EVM, so its goals are checked as regressions (not as timings)."""

from __future__ import annotations

import pytest

from bench.gas import GOALS, LAZY_GOAL, measure

LAZY = "draws the committee lazily"
#: What the lazy-draw commit costs now (99.3k-101.4k: the seed block's hash decides how often a pick probes past
#: an already-picked verifier), with a little room; it was 128k before the committee moved into slot 1.
LAZY_CEILING = 102_500


@pytest.fixture(scope="module")
def rows() -> list[tuple[str, str, int]]:
    return measure()


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


def test_lazy_draw_commit_does_not_regress(rows: list[tuple[str, str, int]]) -> None:
    gas = next(g for op, case, g in rows if op == "commitVerdict" and case == LAZY)
    assert gas <= LAZY_CEILING, f"commitVerdict ({LAZY}) uses {gas} gas, ceiling {LAZY_CEILING}"


@pytest.mark.xfail(strict=True, reason="issue 14: the draw's storage work alone is ~88k with the commit "
                   "(docs/contract.md, Gas); 90k needs a protocol change")
def test_lazy_draw_commit_meets_goal(rows: list[tuple[str, str, int]]) -> None:
    gas = next(g for op, case, g in rows if op == "commitVerdict" and case == LAZY)
    assert gas <= LAZY_GOAL, f"commitVerdict ({LAZY}) uses {gas} gas, goal {LAZY_GOAL}"
