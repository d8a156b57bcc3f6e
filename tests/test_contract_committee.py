"""Committees of more than 4 members (C = 5, 7, 8): members 0..3 share the challenge record's slot 1 with the
commit bits, members 4..7 live in a slot of their own (`committeeHigh`). Every member draws, commits, reveals,
is counted, paid and slashed; the money stays conserved down to an empty contract."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from registry.chain.local import EmbeddedChain, deploy_registry
from registry.core.sampling import commitment_of, committee_start
from tests.conftest import DEV, reverts, training_claim
from tests.registry_driver import (
    CH_INVALID,
    CH_VALID,
    INVALID,
    SALT,
    V_INVALID,
    V_NONE,
    V_VALID,
    VALID,
    Driver,
)

BPS = 10_000
SIZES = (5, 7, 8)
PROVER, CHALLENGER = 1, 2
EXTRA_ACCOUNTS = 4  # eth-tester has 10; C = 8 needs 8 members, 2 registered non-members, prover and challenger
N_VERIFIERS = 10  # accounts 3..12
OUTSIDER = 13  # never registers


def params_for(size: int) -> Any:
    return replace(DEV, committee_size=size, quorum=size // 2 + 1)


def _add_accounts(chain: EmbeddedChain, count: int) -> None:
    for i in range(count):
        key = (0xC0FFEE00 + i).to_bytes(32, "big")
        account = chain.tester.add_account("0x" + key.hex())
        chain.w3.eth.wait_for_transaction_receipt(chain.w3.eth.send_transaction(
            {"from": chain.accounts[0], "to": account, "value": 10**22}))
        chain.accounts.append(chain.w3.to_checksum_address(account))


@pytest.fixture(scope="module", params=SIZES, ids=[f"C={c}" for c in SIZES])
def _big_chain(request: pytest.FixtureRequest) -> EmbeddedChain:
    chain = EmbeddedChain(params_for(request.param))
    _add_accounts(chain, EXTRA_ACCOUNTS)
    return chain


@pytest.fixture
def bd(_big_chain: EmbeddedChain) -> Iterator[Driver]:
    snap = _big_chain.snapshot()
    yield Driver(_big_chain)
    _big_chain.revert(snap)


def verifiers(d: Driver) -> list[str]:
    return d.accounts[3:3 + N_VERIFIERS]


def opened(d: Driver, pool: int = N_VERIFIERS) -> tuple[int, int]:
    """Registers `pool` verifiers, commits a claim and challenges it; returns (claim id, challenge id)."""
    for v in verifiers(d)[:pool]:
        d.register(v)
    claim_id = d.commit(training_claim(), d.accounts[PROVER])
    return claim_id, d.challenge(claim_id, d.accounts[CHALLENGER])


def expected_committee(d: Driver, challenge_id: int, pool: int) -> list[str]:
    """`_draw` recomputed from the stored seed (no exits here, so the active list is registration order)."""
    seed = d.call("seedOf", challenge_id)
    active = verifiers(d)[:pool]
    n, picked = len(active), []
    for j in range(d.p.committee_size):
        pos = committee_start(seed, j, n)
        for _ in range(n):
            if active[pos] not in picked:
                picked.append(active[pos])
                break
            pos = (pos + 1) % n
    return picked


def check_committee(d: Driver, challenge_id: int, pool: int = N_VERIFIERS) -> list[str]:
    committee = list(d.call("committee", challenge_id))
    size = min(d.p.committee_size, pool)
    assert len(committee) == size == len(set(committee))
    assert committee == expected_committee(d, challenge_id, pool)
    info = d.challenge_info(challenge_id)
    assert info["drawn"] and info["committeeSize"] == size
    packed = info["committee"]
    for p, member in enumerate(committee):  # positions >= 4 come from the second committee slot
        assert (packed >> (32 * p)) & 0xFFFFFFFF == d.verifier_info(member)["id"]
    assert packed >> (32 * size) == 0
    return committee


def commitment(verifier: str, verdict: int) -> bytes:
    return commitment_of(verdict, b"\x11" * 32, "bafyreport", SALT, verifier)


def locked(d: Driver) -> int:
    """Everything the contract holds for someone: pending payments, verifier stakes, open bonds."""
    total = sum(d.pending(a) for a in d.accounts)
    total += sum(d.stake(v) for v in verifiers(d))
    for claim_id in range(1, d.call("claimCount") + 1):
        if d.claim_info(claim_id)["status"] in (1, VALID):
            total += d.p.training_bond
    for ch in range(1, d.call("challengeCount") + 1):
        if d.challenge_info(ch)["status"] == 1:
            total += d.p.challenge_bond
    return total


def drain(d: Driver) -> None:
    """Every verifier exits, every live claim finalizes, everyone withdraws: the contract ends empty (nothing
    stuck, nothing missing)."""
    assert d.w3.eth.get_balance(d.reg.address) == locked(d)
    registered = [v for v in verifiers(d) if d.verifier_info(v)["status"] != 0]
    for v in registered:
        d.send(d.reg.functions.requestExit(), v)
    d.chain.mine(max(d.p.exit_delay, d.p.challenge_window) + 1)
    for claim_id in range(1, d.call("claimCount") + 1):
        if d.claim_info(claim_id)["status"] in (1, VALID):
            d.send(d.reg.functions.finalize(claim_id), d.accounts[0])
    for v in registered:
        d.send(d.reg.functions.completeExit(), v)
    for a in d.accounts:
        if d.pending(a):
            d.send(d.reg.functions.withdraw(), a)
    assert d.w3.eth.get_balance(d.reg.address) == 0


def test_explicit_draw_every_member_counts_and_is_paid(bd: Driver) -> None:
    d, size, quorum = bd, bd.p.committee_size, bd.p.quorum
    claim_id, ch = opened(d)
    d.to_seed(ch)
    receipt = d.send(d.reg.functions.drawCommittee(ch), d.accounts[0])
    committee = check_committee(d, ch)
    (ev,) = d.events("CommitteeDrawn", receipt)
    assert list(ev.args.committee) == committee
    # the first C - quorum members are outvoted; the quorum needs members 4.. to be counted
    minority, majority = committee[: size - quorum], committee[size - quorum:]
    assert any(committee.index(m) >= 4 for m in majority)
    verdict_of = {m: V_VALID for m in minority} | {m: V_INVALID for m in majority}
    for p, m in enumerate(committee):
        d.send(d.reg.functions.commitVerdict(ch, commitment(m, verdict_of[m])), m)
        assert d.challenge_info(ch)["committed"] == (1 << (p + 1)) - 1
    assert list(d.call("commitments", ch)) == [commitment(m, verdict_of[m]) for m in committee]
    for m in reversed(committee):  # every member committed: the reveal is open early
        d.send(d.reg.functions.revealVerdict(ch, verdict_of[m], b"\x11" * 32, "bafyreport", SALT), m)
    assert list(d.call("verdicts", ch)) == [verdict_of[m] for m in committee]
    bits = d.challenge_info(ch)["verdicts"]
    assert [(bits >> (2 * p)) & 3 for p in range(size)] == [verdict_of[m] for m in committee]

    stakes = {m: d.stake(m) for m in committee}
    d.send(d.reg.functions.settle(ch), d.accounts[0])
    assert d.challenge_info(ch)["status"] == CH_INVALID and d.claim_info(claim_id)["status"] == INVALID
    slash = d.p.verifier_stake * d.p.minority_slash_bps // BPS
    pool = d.p.training_bond
    each = (pool * d.p.verifier_reward_bps // BPS + slash * len(minority)) // len(majority)
    for m in minority:
        assert d.stake(m) == stakes[m] - slash
    for m in majority:
        assert d.stake(m) == stakes[m] + each
    assert d.pending(d.accounts[CHALLENGER]) == d.p.challenge_bond + pool + slash * len(minority) - each * len(
        majority)
    assert d.pending(d.accounts[PROVER]) == 0
    drain(d)


@pytest.mark.parametrize("first", ["high", "low"])
def test_lazy_draw_on_first_commit(bd: Driver, first: str) -> None:
    """The first commit draws the committee; a member at position >= 4 may be the one that triggers it."""
    d, size = bd, bd.p.committee_size
    claim_id, ch = opened(d)
    d.to_seed(ch)
    snap = d.chain.snapshot()
    d.send(d.reg.functions.drawCommittee(ch), d.accounts[0])  # only to learn who will be drawn
    will_be = list(d.call("committee", ch))
    d.chain.revert(snap)
    trigger = will_be[size - 1] if first == "high" else will_be[0]
    receipt = d.send(d.reg.functions.commitVerdict(ch, commitment(trigger, V_VALID)), trigger)
    (ev,) = d.events("CommitteeDrawn", receipt)
    committee = check_committee(d, ch)
    assert list(ev.args.committee) == committee == will_be
    assert d.challenge_info(ch)["committed"] == 1 << committee.index(trigger)
    with reverts("RevealNotOpen"):
        d.send(d.reg.functions.revealVerdict(ch, V_VALID, b"\x11" * 32, "bafyreport", SALT), trigger)
    for m in committee:
        if m != trigger:
            d.send(d.reg.functions.commitVerdict(ch, commitment(m, V_VALID)), m)
    assert d.challenge_info(ch)["committed"] == (1 << size) - 1
    for m in committee:
        d.send(d.reg.functions.revealVerdict(ch, V_VALID, b"\x11" * 32, "bafyreport", SALT), m)
    assert list(d.call("verdicts", ch)) == [V_VALID] * size
    stakes = {m: d.stake(m) for m in committee}
    d.send(d.reg.functions.settle(ch), d.accounts[0])
    assert d.challenge_info(ch)["status"] == CH_VALID and d.claim_info(claim_id)["status"] == VALID
    each = d.p.challenge_bond * d.p.verifier_reward_bps // BPS // size
    assert all(d.stake(m) == stakes[m] + each for m in committee)
    assert d.pending(d.accounts[PROVER]) == d.p.challenge_bond - each * size
    assert d.pending(d.accounts[CHALLENGER]) == 0
    assert d.w3.eth.get_balance(d.reg.address) == locked(d)


def test_silent_high_members_are_slashed(bd: Driver) -> None:
    """Position 4 never commits, position C-1 (3 when C = 5) commits but never reveals: both silent, both
    slashed after the deadline."""
    d, size = bd, bd.p.committee_size
    _, ch = opened(d)
    d.draw(ch)
    committee = check_committee(d, ch)
    silent, unrevealed = committee[4], committee[size - 1 if size > 5 else 3]
    speakers = [m for m in committee if m not in (silent, unrevealed)]
    for m in [*speakers, unrevealed]:
        d.send(d.reg.functions.commitVerdict(ch, commitment(m, V_VALID)), m)
    with reverts("RevealNotOpen"):  # position 4 has not committed: no early reveal
        d.send(d.reg.functions.revealVerdict(ch, V_VALID, b"\x11" * 32, "bafyreport", SALT), speakers[0])
    d.to_reveal(ch)
    for m in speakers:
        d.send(d.reg.functions.revealVerdict(ch, V_VALID, b"\x11" * 32, "bafyreport", SALT), m)
    verdicts = list(d.call("verdicts", ch))
    assert verdicts[4] == verdicts[size - 1] == V_NONE
    assert verdicts.count(V_VALID) == size - 2
    d.past_deadline(ch)
    stakes = {m: d.stake(m) for m in committee}
    receipt = d.send(d.reg.functions.settle(ch), d.accounts[0])
    slash = d.p.verifier_stake * d.p.silent_slash_bps // BPS
    slashed = {ev.args.verifier: ev.args.amount for ev in d.events("VerifierSlashed", receipt)}
    assert slashed == {silent: slash, unrevealed: slash}
    each = (d.p.challenge_bond * d.p.verifier_reward_bps // BPS + 2 * slash) // len(speakers)
    assert d.stake(silent) == stakes[silent] - slash and d.stake(unrevealed) == stakes[unrevealed] - slash
    assert all(d.stake(m) == stakes[m] + each for m in speakers)
    assert d.pending(d.accounts[PROVER]) == d.p.challenge_bond + 2 * slash - each * len(speakers)
    drain(d)


def test_non_members_cannot_commit_or_reveal(bd: Driver) -> None:
    d = bd
    _, ch = opened(d)
    committee = d.draw(ch)
    outsiders = [v for v in verifiers(d) if v not in committee]
    assert len(outsiders) == N_VERIFIERS - d.p.committee_size
    for account in [*outsiders, d.accounts[PROVER], d.accounts[CHALLENGER], d.accounts[OUTSIDER]]:
        with reverts("NotCommitteeMember", challengeId=ch, account=account):
            d.send(d.reg.functions.commitVerdict(ch, commitment(account, V_VALID)), account)
    d.to_reveal(ch)
    with reverts("NotCommitteeMember", challengeId=ch, account=outsiders[0]):
        d.send(d.reg.functions.revealVerdict(ch, V_VALID, b"\x11" * 32, "bafyreport", SALT), outsiders[0])


def test_high_members_cannot_commit_or_reveal_twice(bd: Driver) -> None:
    d, size = bd, bd.p.committee_size
    _, ch = opened(d)
    committee = d.draw(ch)
    for p in range(4, size):
        m = committee[p]
        d.send(d.reg.functions.commitVerdict(ch, commitment(m, V_INVALID)), m)
        with reverts("AlreadyCommitted", challengeId=ch, verifier=m):
            d.send(d.reg.functions.commitVerdict(ch, commitment(m, V_VALID)), m)
    assert d.challenge_info(ch)["committed"] == ((1 << size) - 1) & ~0xF
    assert list(d.call("commitments", ch))[4:] == [commitment(m, V_INVALID) for m in committee[4:]]
    d.to_reveal(ch)
    for p in range(4, size):
        m = committee[p]
        with reverts("CommitmentMismatch", challengeId=ch, verifier=m):
            d.send(d.reg.functions.revealVerdict(ch, V_VALID, b"\x11" * 32, "bafyreport", SALT), m)
        d.send(d.reg.functions.revealVerdict(ch, V_INVALID, b"\x11" * 32, "bafyreport", SALT), m)
        with reverts("AlreadyRevealed", challengeId=ch, verifier=m):
            d.send(d.reg.functions.revealVerdict(ch, V_INVALID, b"\x11" * 32, "bafyreport", SALT), m)
    with reverts("NotCommitted", challengeId=ch, verifier=committee[0]):
        d.send(d.reg.functions.revealVerdict(ch, V_INVALID, b"\x11" * 32, "bafyreport", SALT), committee[0])
    assert list(d.call("verdicts", ch)) == [V_NONE] * 4 + [V_INVALID] * (size - 4)


@pytest.mark.parametrize("pool", [4, 6])
def test_small_pool_draws_fewer_members(bd: Driver, pool: int) -> None:
    """Fewer eligible verifiers than C: the drawn size drops (still through slot 3 when above 4), and the
    early reveal opens once those members have committed."""
    d = bd
    if pool >= d.p.committee_size:
        pytest.skip("the pool is not below C")
    claim_id, ch = opened(d, pool)
    d.draw(ch)
    committee = check_committee(d, ch, pool)
    for m in committee:
        d.send(d.reg.functions.commitVerdict(ch, commitment(m, V_VALID)), m)
    assert d.challenge_info(ch)["committed"] == (1 << pool) - 1
    for m in committee:  # open early: every drawn member committed
        d.send(d.reg.functions.revealVerdict(ch, V_VALID, b"\x11" * 32, "bafyreport", SALT), m)
    if pool >= d.p.quorum:
        d.send(d.reg.functions.settle(ch), d.accounts[0])
    else:
        with reverts("NotSettleable"):
            d.send(d.reg.functions.settle(ch), d.accounts[0])
        d.past_deadline(ch)
        d.send(d.reg.functions.settle(ch), d.accounts[0])
    assert d.challenge_info(ch)["status"] == CH_VALID and d.claim_info(claim_id)["status"] == VALID
    assert d.w3.eth.get_balance(d.reg.address) == locked(d)


def test_constructor_committee_size_bounds(bd: Driver) -> None:
    d = bd
    with reverts("InvalidParameter", name="committeeSize"):
        deploy_registry(d.w3, replace(DEV, committee_size=9, quorum=5), d.accounts[0])
    with reverts("InvalidParameter", name="committeeSize"):
        deploy_registry(d.w3, replace(DEV, committee_size=255, quorum=200), d.accounts[0])
    with reverts("InvalidParameter", name="quorum"):
        deploy_registry(d.w3, replace(DEV, committee_size=8, quorum=4), d.accounts[0])
    for quorum in (5, 8):
        reg, _ = deploy_registry(d.w3, replace(DEV, committee_size=8, quorum=quorum), d.accounts[0])
        assert reg.functions.parameters().call()[9:11] == (8, quorum)
