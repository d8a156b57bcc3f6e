"""Stateful property test: random sequences of every registry action against the real contract (embedded EVM).

A `RuleBasedStateMachine` commits training and inference claims (shared final weights across provers,
duplicates), registers verifiers, moves stake, exits, opens challenges (named segments, in and out of the
window), reseeds, draws committees, commits and reveals verdicts (members and non-members, every verdict,
wrong openings, copied commitments, early and late), settles, finalizes,
withdraws and mines blocks (now and then past the 256-block blockhash window). Every rule predicts its
outcome from a Python model — success, or the exact custom error the contract must revert with — and after
every step the invariants are read from the chain:

1. money: the registry's balance equals all pending withdrawals plus everything locked (bonds of Committed or
   Valid claims, bonds of Open challenges, stakes of Active or Exiting verifiers);
2. no claim moves backwards (Committed < Valid < Invalid/Finalized, the last two terminal) and no challenge
   leaves a settled status;
3. `ownerOf(h)` is the prover of the earliest claim with final weights `h` that is not Invalid;
4. each claim's `openChallenges` counts its Open challenges; no member of an Open drawn committee can take its
   stake out before that challenge's reveal deadline (an Exiting member's exit block is past it, and a member
   whose exit completed did so after it), so silent and outvoted members stay slashable;
5. commit-reveal: a position's verdict is set only by a reveal that opens its own commitment (no reveal without a
   commitment, none after the deadline, none before the reveal opens, no second commitment or reveal), and the
   chain's commitments, committed bits and verdicts equal the model's.

The model also tracks exact stakes, pending payments, committees (recomputed from the seed with
`registry.core.sampling`) and statuses, and every step compares it with the chain.

Size: `PROOFREG_STATEFUL_STEPS` rule steps in all (default 5,000, the issue's CI minimum), in examples of
`PROOFREG_STATEFUL_STEP_COUNT` steps (default 50). The test counts the steps that really ran and tops up with
further runs if Hypothesis stopped early. Reads go straight to py-evm (a message call on the pending block)
and transactions straight to eth-tester, which is what makes 5,000 checked steps fit in a few minutes.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from eth.exceptions import Revert
from eth.vm.message import Message
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import to_canonical_address, to_checksum_address
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from registry.chain.local import EmbeddedChain
from registry.core.errors import decode_revert
from registry.core.hashing import keccak256
from registry.core.sampling import challenge_seed, commitment_of, committee_start, open_randao_of, sampled_segments
from tests.conftest import CID, DEV
from tests.registry_driver import (
    ACTIVE,
    CH_EXPIRED,
    CH_OPEN,
    CH_VALID,
    COMMITTED,
    EXITING,
    FINALIZED,
    INVALID,
    VALID,
)

TARGET_STEPS = int(os.environ.get("PROOFREG_STATEFUL_STEPS", "5000"))
STEP_COUNT = max(1, min(int(os.environ.get("PROOFREG_STATEFUL_STEP_COUNT", "50")), TARGET_STEPS))
MAX_RUNS = 5  # runs of the machine to reach TARGET_STEPS (more than one only if Hypothesis stops early)

# Steps that really ran (rules only, not `initialize`), per rule and per outcome; module level so the test
# can check the total after Hypothesis returns.
STATS: Counter[str] = Counter()

TRAINING, INFERENCE = 1, 2
NONE_STATUS = 0
TRAINING_BOND, INFERENCE_BOND, CHALLENGE_BOND = DEV.training_bond, DEV.inference_bond, DEV.challenge_bond
MIN_STAKE = DEV.verifier_stake
BPS = 10_000
BLOCKHASH_WINDOW = 256
MAX_NAMED = 8
MAX_CID = 128
GAS = 3_000_000
ZERO = "0x0000000000000000000000000000000000000000"

N_ACTORS = 7  # chain.accounts[1..7]; account 0 (the deployer) is the neutral caller of permissionless functions
WEIGHTS = [keccak256(b"stateful-weights-%d" % i) for i in range(3)]
UNUSED_WEIGHTS = keccak256(b"stateful-weights-never-committed")
ROOTS = [keccak256(b"stateful-root-%d" % i) for i in range(2)]
STEPS_PER_SEGMENT = 10

# Claim status moves the contract allows (SPEC section 5): forward only, Invalid and Finalized terminal.
CLAIM_MOVES = {(COMMITTED, VALID), (COMMITTED, INVALID), (COMMITTED, FINALIZED), (VALID, INVALID), (VALID, FINALIZED)}


# --------------------------------------------------------------------------------------------------------------
# Direct EVM access: reads as message calls on the pending block, transactions through eth-tester
# --------------------------------------------------------------------------------------------------------------

def _abi_type(param: dict[str, Any]) -> str:
    t = param["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in param["components"]) + ")" + t[len("tuple"):]
    return str(t)


class Evm:
    """The registry on the embedded chain, without web3's per-call overhead (~1 ms a read, ~20 ms a tx)."""

    def __init__(self, chain: EmbeddedChain) -> None:
        self.chain = chain
        self.tester = chain.tester
        self.backend = chain.tester.backend
        self.address = chain.registry.address
        self._to = to_canonical_address(self.address)
        self._fns: dict[str, tuple[bytes, list[str], list[str]]] = {}
        for item in chain.registry.abi:
            if item.get("type") == "function":
                ins = [_abi_type(p) for p in item["inputs"]]
                outs = [_abi_type(p) for p in item["outputs"]]
                selector = keccak256(f"{item['name']}({','.join(ins)})".encode())[:4]
                self._fns[item["name"]] = (selector, ins, outs)
        self._state: Any = None

    def pending_block(self) -> int:
        """The number of the block the next transaction executes in."""
        return int(self.backend.chain.get_block().number)

    def block_hash(self, number: int) -> bytes:
        return bytes(self.backend.chain.get_canonical_block_by_number(number).hash)

    def pending_open_randao(self) -> int:
        """openRandao of a challenge opened (or reseeded) by the next transaction: the pending header's mixHash
        (the `prevrandao` the EVM executes with) | 1. eth-tester writes a random mixHash into the header only when
        it seals the block, after execution, so read the pending one (0 on the embedded chain)."""
        return open_randao_of(bytes(self.backend.chain.get_block().header.mix_hash))

    def balance(self, account: str) -> int:
        return int(self.fresh_state().get_balance(to_canonical_address(account)))

    def fresh_state(self) -> Any:
        """State of the pending block (= the latest block's post-state, with block.number = latest + 1)."""
        vm = self.backend.chain.get_vm(at_header=self.backend.chain.get_block().header)
        self._state = vm.state
        return self._state

    def encode(self, name: str, args: tuple[Any, ...]) -> bytes:
        selector, ins, _ = self._fns[name]
        return selector + abi_encode(ins, list(args))

    def _message(self, state: Any, name: str, args: tuple[Any, ...], sender: str, value: int) -> Any:
        origin = to_canonical_address(sender)
        msg = Message(gas=GAS, to=self._to, sender=origin, value=value, data=self.encode(name, args),
                      code=state.get_code(self._to))
        ctx = state.get_transaction_context_class()(gas_price=0, origin=origin)
        snapshot = state.snapshot()
        try:
            return state.computation_class.apply_message(state, msg, ctx)
        finally:
            state.revert(snapshot)

    def read(self, name: str, *args: Any, state: Any = None) -> Any:
        """A view call; `state` from `fresh_state()` lets many reads share one state."""
        comp = self._message(state or self.fresh_state(), name, args, ZERO, 0)
        if comp.is_error:
            raise AssertionError(f"view {name}{args} failed: {_describe_error(comp)}")
        values = abi_decode(self._fns[name][2], comp.output)
        return values[0] if len(values) == 1 else values

    def precheck(self, name: str, args: tuple[Any, ...], sender: str, value: int) -> tuple[str, dict[str, Any]] | None:
        """None if the transaction would succeed in the next block, else the decoded custom error."""
        comp = self._message(self.fresh_state(), name, args, sender, value)
        if not comp.is_error:
            return None
        return _decoded_error(comp)

    def send(self, name: str, args: tuple[Any, ...], sender: str, value: int) -> dict[str, Any]:
        """Sends and mines the transaction; it must succeed."""
        tx_hash = self.tester.send_transaction({
            "from": sender, "to": self.address, "data": "0x" + self.encode(name, args).hex(), "value": value,
            "gas": GAS,
        })
        receipt = self.tester.get_transaction_receipt(tx_hash)
        assert receipt["status"] == 1, f"{name}{args} from {sender} passed the precheck but failed on chain"
        return dict(receipt)


def _decoded_error(comp: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(comp.error, Revert):
        decoded = decode_revert(comp.output)
        if decoded is not None:
            return decoded
    return "<not a registry error>", {"error": repr(comp.error), "data": comp.output.hex()}


def _describe_error(comp: Any) -> str:
    name, args = _decoded_error(comp)
    return f"{name}({args})"


# --------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------

@dataclass
class MClaim:
    id: int
    prover: str
    kind: int
    committed_at: int
    num_segments: int
    weights: bytes | None = None
    root: bytes | None = None
    status: int = COMMITTED
    open_challenges: int = 0

    @property
    def window_end(self) -> int:
        return self.committed_at + DEV.challenge_window

    @property
    def bond(self) -> int:
        return TRAINING_BOND if self.kind == TRAINING else INFERENCE_BOND


@dataclass
class MChallenge:
    id: int
    claim_id: int
    challenger: str
    named: list[int]
    seed_block: int
    commit_deadline: int
    deadline: int
    status: int = CH_OPEN
    open_randao: int = 1  # prevrandao | 1 of the block that opened (or last reseeded) the challenge
    drawn: bool = False
    committee: list[str] = field(default_factory=list)
    verdicts: list[int] = field(default_factory=list)  # revealed, by committee position, 0 = silent
    commitments: list[bytes] = field(default_factory=list)  # by committee position, zero = none
    openings: list[tuple[int, str, bytes] | None] = field(default_factory=list)  # what each member committed
    member_ids: list[int] = field(default_factory=list)  # the members' verifier ids when drawn

    def committed_mask(self) -> int:
        return sum(1 << p for p, c in enumerate(self.commitments) if c != bytes(32))

    def reveal_open(self, block: int) -> bool:
        """Reveals are accepted after the commit deadline, or once every drawn member has committed."""
        return block > self.commit_deadline or (self.drawn and self.committed_mask() == (1 << len(self.committee)) - 1)


@dataclass
class MVerifier:
    id: int
    stake: int
    status: int
    since: int
    duties: int = 0  # Open drawn committees this record sits on (the model's, to steer exits; not on chain)


Expect = tuple[str, dict[str, Any]] | None  # None: must succeed; else (custom error, some of its arguments)


def err(name: str, **args: Any) -> Expect:
    return name, args


# Strategies
actor = st.integers(0, N_ACTORS - 1)
pick = st.integers(0, 1_000)


class RegistryMachine(RuleBasedStateMachine):
    """Set `RegistryMachine.chain` before running; each example starts from a snapshot and reverts to it."""

    chain: EmbeddedChain | None = None
    #: The deployment's C and quorum (the chain must be deployed with them) and how many accounts after the
    #: actors register as verifiers at the start and only ever serve on committees (so that C = 8 can be drawn).
    committee_size: int = DEV.committee_size
    quorum: int = DEV.quorum
    extra_verifiers: int = 0

    def __init__(self) -> None:
        super().__init__()
        assert self.chain is not None
        self.evm = Evm(self.chain)
        self.snapshot = self.chain.snapshot()
        self.chain.revert(self.snapshot)  # rebuilds the pending block (deterministic timestamps, see below)
        accounts = self.chain.accounts
        self.actors = [to_checksum_address(a) for a in accounts[1:1 + N_ACTORS]]
        self.neutral = to_checksum_address(accounts[0])
        self.extras = [to_checksum_address(a) for a in accounts[1 + N_ACTORS:1 + N_ACTORS + self.extra_verifiers]]
        assert len(self.extras) == self.extra_verifiers, "the chain needs more accounts"
        self.tracked = [*self.actors, *self.extras]  # every account that may become a verifier
        self.everyone = [self.neutral, *self.tracked]
        assert self.evm.balance(self.evm.address) == 0 and self.evm.read("claimCount") == 0, "needs a fresh registry"
        self.claims: list[MClaim] = []
        self.challenges: list[MChallenge] = []
        self.verifiers: dict[str, MVerifier] = {}
        self.verifier_ids: list[str] = []  # _verifierAddresses
        self.active: list[str] = []  # _active, in the contract's order (swap-and-pop on exit)
        self.pending: dict[str, int] = dict.fromkeys(self.everyone, 0)
        self.by_weights: dict[bytes, list[int]] = {w: [] for w in WEIGHTS}  # claim ids in commit order
        # statuses as last read from the chain, for invariant 2
        self.seen_claims: dict[int, int] = {}
        self.seen_challenges: dict[int, int] = {}
        self.steps = 0

    def teardown(self) -> None:
        assert self.chain is not None
        self.chain.revert(self.snapshot)

    # ------------------------------------------------------------------------------------------------------
    # plumbing
    # ------------------------------------------------------------------------------------------------------

    def _step(self, name: str) -> None:
        self.steps += 1
        STATS["steps"] += 1
        STATS[f"rule:{name}"] += 1

    def _tx(self, name: str, args: tuple[Any, ...], sender: str, value: int, expect: Expect) -> dict[str, Any] | None:
        """Sends the transaction if it succeeds, else checks its revert against `expect`; the receipt or None."""
        error = self.evm.precheck(name, args, sender, value)
        if error is None:
            assert expect is None, f"{name}{args} from {sender}: model expects revert {expect}, but it succeeds"
            STATS[f"ok:{name}"] += 1
            return self.evm.send(name, args, sender, value)
        got_name, got_args = error
        assert expect is not None, f"{name}{args} from {sender}: unexpected revert {got_name}({got_args})"
        want_name, want_args = expect
        assert got_name == want_name, f"{name}{args}: expected {want_name}{want_args}, got {got_name}({got_args})"
        for k, v in want_args.items():
            assert got_args.get(k) == v, f"{name}: {got_name}.{k} = {got_args.get(k)!r}, model expects {v!r}"
        STATS[f"revert:{got_name}"] += 1
        return None

    def _mine(self, blocks: int) -> None:
        if blocks > 0:
            STATS["blocks-mined"] += blocks
            self.chain.mine(blocks)  # type: ignore[union-attr]

    @staticmethod
    def _prefer(items: list[Any], p: int, good: Any) -> Any:
        """Three picks in four an item for which the action can succeed (if any), else any item."""
        preferred = [x for x in items if good(x)]
        if preferred and p % 4 != 3:
            return preferred[(p // 4) % len(preferred)]
        return items[p % len(items)] if items else None

    def _claim(self, p: int, good: Any = lambda cl: True) -> MClaim | None:
        """A model claim, or None (the rule then uses a non-existent id) for one pick in 12."""
        if p % 12 == 11:
            return None
        return self._prefer(self.claims, p, good)  # type: ignore[no-any-return]

    def _challenge(self, p: int, good: Any = lambda ch: ch.status == CH_OPEN) -> MChallenge | None:
        if p % 12 == 11:
            return None
        return self._prefer(self.challenges, p, good)  # type: ignore[no-any-return]

    def _actor(self, p: int, good: Any) -> str:
        return self._prefer(self.actors, p, good)  # type: ignore[no-any-return]

    def _bogus_claim_id(self, p: int) -> int:
        return 0 if p % 2 else len(self.claims) + 1 + p % 3

    def _bogus_challenge_id(self, p: int) -> int:
        return 0 if p % 2 else len(self.challenges) + 1 + p % 3

    def _is_active(self, account: str) -> bool:
        return account in self.verifiers and self.verifiers[account].status == ACTIVE

    def _credit(self, account: str, amount: int) -> None:
        self.pending[account] = self.pending.get(account, 0) + amount

    def _challengeable(self, claim: MClaim, block: int) -> bool:
        return claim.status in (COMMITTED, VALID) and block <= claim.window_end

    def _finalizable(self, claim: MClaim, block: int) -> bool:
        return claim.status in (COMMITTED, VALID) and block > claim.window_end and claim.open_challenges == 0

    # ------------------------------------------------------------------------------------------------------
    # actions: each predicts its outcome, runs, and on success updates the model
    # ------------------------------------------------------------------------------------------------------

    def _do_commit_training(self, prover: str, w: int, r: int, num_segments: int, value: int, cid: str) -> None:
        weights, root = WEIGHTS[w], ROOTS[r]
        claim = (cid, root, keccak256(b"head-%d" % r), weights, keccak256(b"dataset"), keccak256(b"config"),
                 num_segments, STEPS_PER_SEGMENT, keccak256(b"init"), 0, 0)
        expect: Expect = None
        if value != TRAINING_BOND:
            expect = err("WrongBond", expected=TRAINING_BOND, given=value)
        elif num_segments == 0:
            expect = err("InvalidClaim")
        elif not cid:
            expect = err("InvalidCid")
        elif self.by_weights[weights]:
            # a duplicate is the same prover and segment root as the LAST claim with these weights
            last = self.claims[self.by_weights[weights][-1] - 1]
            if last.prover == prover and last.root == root and last.status != INVALID:
                expect = err("ClaimAlreadyCommitted", claimId=last.id)
        block = self.evm.pending_block()
        if self._tx("commitTraining", (claim,), prover, value, expect) is not None:
            claim_id = len(self.claims) + 1
            self.claims.append(MClaim(claim_id, prover, TRAINING, block, num_segments, weights, root))
            self.by_weights[weights].append(claim_id)

    def _do_commit_inference(self, prover: str, model_id: int, value: int, cid: str) -> None:
        model = self.claims[model_id - 1] if 1 <= model_id <= len(self.claims) else None
        expect: Expect = None
        if value != INFERENCE_BOND:
            expect = err("WrongBond", expected=INFERENCE_BOND, given=value)
        elif not cid or len(cid) > MAX_CID:
            expect = err("InvalidCid")
        elif model_id != 0 and (model is None or model.kind != TRAINING):
            expect = err("UnknownModelClaim", claimId=model_id)
        elif model is not None and model.status == INVALID:
            expect = err("ModelClaimRejected", claimId=model_id)
        n = len(self.claims) + 1
        claim = (model_id, keccak256(b"vk-%d" % n), keccak256(b"proof-%d" % n), keccak256(b"inst-%d" % n), cid)
        block = self.evm.pending_block()
        if self._tx("commitInference", (claim,), prover, value, expect) is not None:
            self.claims.append(MClaim(len(self.claims) + 1, prover, INFERENCE, block, 0))

    def _do_finalize(self, claim: MClaim | None, claim_id: int, sender: str) -> None:
        block = self.evm.pending_block()
        expect: Expect = None
        if claim is None:
            expect = err("UnknownClaim", claimId=claim_id)
        elif claim.status not in (COMMITTED, VALID):
            expect = err("ClaimNotFinalizable", claimId=claim_id, status=claim.status)
        elif block <= claim.window_end:
            expect = err("ChallengeWindowOpen", claimId=claim_id, windowEnd=claim.window_end)
        elif claim.open_challenges:
            expect = err("ChallengesStillOpen", claimId=claim_id, openChallenges=claim.open_challenges)
        if self._tx("finalize", (claim_id,), sender, 0, expect) is not None:
            assert claim is not None
            STATS[f"finalized-from:{claim.status}"] += 1
            claim.status = FINALIZED
            self._credit(claim.prover, claim.bond)

    def _do_register(self, account: str, value: int) -> None:
        expect: Expect = None
        if account in self.verifiers:
            expect = err("AlreadyRegistered", verifier=account)
        elif value < MIN_STAKE:
            expect = err("InsufficientStake", required=MIN_STAKE, given=value)
        block = self.evm.pending_block()
        if self._tx("registerVerifier", (), account, value, expect) is not None:
            vid = len(self.verifier_ids)
            self.verifier_ids.append(account)
            self.verifiers[account] = MVerifier(vid, value, ACTIVE, block)
            self.active.append(account)
            assert to_checksum_address(self.evm.read("verifierAt", vid)) == account

    def _do_increase_stake(self, account: str, value: int) -> None:
        expect: Expect = None
        if not self._is_active(account):
            expect = err("NotActiveVerifier", account=account)
        elif value == 0:
            expect = err("ZeroAmount")
        if self._tx("increaseStake", (), account, value, expect) is not None:
            self.verifiers[account].stake += value

    def _do_withdraw_excess_stake(self, account: str, value: int) -> None:
        expect: Expect = None
        stake = self.verifiers[account].stake if account in self.verifiers else 0
        if not self._is_active(account):
            expect = err("NotActiveVerifier", account=account)
        elif value == 0:
            expect = err("ZeroAmount")
        elif value > stake or stake - value < MIN_STAKE:
            expect = err("InsufficientStake", required=MIN_STAKE, given=0 if value > stake else stake - value)
        if self._tx("withdrawExcessStake", (value,), account, 0, expect) is not None:
            self.verifiers[account].stake -= value
            self._credit(account, value)

    def _do_request_exit(self, account: str) -> None:
        expect = None if self._is_active(account) else err("NotActiveVerifier", account=account)
        block = self.evm.pending_block()
        if self._tx("requestExit", (), account, 0, expect) is not None:
            index = self.active.index(account)
            last = self.active.pop()
            if index < len(self.active):
                self.active[index] = last
            v = self.verifiers[account]
            v.status = EXITING
            v.since = block + DEV.exit_delay
            STATS[f"exit-with-duties:{min(v.duties, 1)}"] += 1

    def _do_complete_exit(self, account: str) -> None:
        v = self.verifiers.get(account)
        block = self.evm.pending_block()
        expect: Expect = None
        if v is None or v.status != EXITING:
            expect = err("NotExiting", account=account)
        elif block < v.since:
            expect = err("ExitNotReady", exitBlock=v.since)
        if self._tx("completeExit", (), account, 0, expect) is not None:
            assert v is not None
            STATS[f"exit-completed-with-duties:{min(v.duties, 1)}"] += 1
            del self.verifiers[account]
            self._credit(account, v.stake)

    def _do_open_challenge(self, challenger: str, claim: MClaim | None, claim_id: int, named: list[int],
                           value: int) -> None:
        block = self.evm.pending_block()
        expect: Expect = None
        if value != CHALLENGE_BOND:
            expect = err("WrongBond", expected=CHALLENGE_BOND, given=value)
        elif claim is None:
            expect = err("UnknownClaim", claimId=claim_id)
        elif claim.status not in (COMMITTED, VALID):
            expect = err("ClaimNotChallengeable", claimId=claim_id, status=claim.status)
        elif block > claim.window_end:
            expect = err("ChallengeWindowClosed", claimId=claim_id, windowEnd=claim.window_end)
        elif challenger == claim.prover:
            expect = err("SelfChallenge")
        elif len(named) > MAX_NAMED:
            expect = err("TooManyNamedSegments", given=len(named), max=MAX_NAMED)
        else:
            bad = [s for s in named if s >= claim.num_segments]
            if bad:
                expect = err("SegmentOutOfRange", index=bad[0], numSegments=claim.num_segments)
        randao = self.evm.pending_open_randao()
        if self._tx("openChallenge", (claim_id, named), challenger, value, expect) is not None:
            assert claim is not None
            seed_block = block + DEV.seed_delay
            ch = MChallenge(len(self.challenges) + 1, claim_id, challenger, list(named), seed_block,
                            seed_block + DEV.commit_period, seed_block + DEV.commit_period + DEV.reveal_period)
            ch.open_randao = randao
            assert self.evm.read("openRandaoOf", ch.id) == ch.open_randao
            self.challenges.append(ch)
            claim.open_challenges += 1
            STATS[f"challenge-on-status:{claim.status}"] += 1
            if claim.open_challenges > 1:
                STATS["concurrent-challenges"] += 1
            assert list(self.evm.read("namedSegments", ch.id)) == named

    def _open_expect(self, ch: MChallenge | None, challenge_id: int) -> Expect:
        if ch is None:
            return err("UnknownChallenge", challengeId=challenge_id)
        if ch.status != CH_OPEN:
            return err("ChallengeNotOpen", challengeId=challenge_id, status=ch.status)
        return None

    def _seed_error(self, ch: MChallenge, block: int) -> Expect:
        if block <= ch.seed_block:
            return err("SeedNotReady", seedBlock=ch.seed_block)
        if block > ch.seed_block + BLOCKHASH_WINDOW:
            return err("SeedExpired", seedBlock=ch.seed_block)
        return None

    def _expected_committee(self, ch: MChallenge) -> list[str]:
        """`_draw` recomputed: C distinct eligible verifiers, the j-th pick probing forward from its start."""
        seed = challenge_seed(self.evm.block_hash(ch.seed_block), ch.open_randao, ch.id)
        prover = self.claims[ch.claim_id - 1].prover
        n = len(self.active)
        picked: list[str] = []
        for j in range(self.committee_size):
            if n == 0:
                break
            pos = committee_start(seed, j, n)
            found = False
            for _ in range(n):
                account = self.active[pos]
                if account not in picked:
                    v = self.verifiers[account]
                    # registered before the block that opened (or last reseeded) the challenge
                    old_enough = v.since + DEV.seed_delay < ch.seed_block
                    if account not in (prover, ch.challenger) and old_enough and v.stake >= MIN_STAKE:
                        picked.append(account)
                        found = True
                        break
                pos = pos + 1 if pos + 1 < n else 0
            if not found:
                break
        return picked

    def _apply_draw(self, ch: MChallenge, expected: list[str], block: int) -> None:
        committee = [to_checksum_address(a) for a in self.evm.read("committee", ch.id)]
        assert committee == expected, f"challenge {ch.id}: committee {committee}, model {expected}"
        seed = challenge_seed(self.evm.block_hash(ch.seed_block), ch.open_randao, ch.id)
        assert self.evm.read("seedOf", ch.id) == seed
        claim = self.claims[ch.claim_id - 1]
        segments = list(self.evm.read("sampledSegments", ch.id))
        assert segments == sampled_segments(seed, DEV.samples, claim.num_segments, ch.named)
        ch.drawn = True
        ch.committee = committee
        ch.verdicts = [0] * len(committee)
        ch.commitments = [bytes(32)] * len(committee)
        ch.openings = [None] * len(committee)
        ch.member_ids = [self.verifiers[account].id for account in committee]
        for account in committee:
            self.verifiers[account].duties += 1
        STATS[f"committee-size:{len(committee)}"] += 1
        if block > ch.deadline and committee:
            STATS["drawn-after-deadline"] += 1

    def _do_reseed(self, ch: MChallenge | None, challenge_id: int, sender: str) -> None:
        block = self.evm.pending_block()
        expect = self._open_expect(ch, challenge_id)
        if expect is None:
            assert ch is not None
            if ch.drawn:
                expect = err("CommitteeAlreadyDrawn", challengeId=challenge_id)
            elif block <= ch.seed_block + BLOCKHASH_WINDOW:
                expect = err("SeedStillAvailable", seedBlock=ch.seed_block)
        randao = self.evm.pending_open_randao()
        if self._tx("reseed", (challenge_id,), sender, 0, expect) is not None:
            assert ch is not None
            ch.seed_block = block + DEV.seed_delay
            ch.commit_deadline = ch.seed_block + DEV.commit_period
            ch.deadline = ch.commit_deadline + DEV.reveal_period
            ch.open_randao = randao
            assert self.evm.read("openRandaoOf", ch.id) == ch.open_randao

    def _do_draw(self, ch: MChallenge | None, challenge_id: int, sender: str) -> None:
        block = self.evm.pending_block()
        expect = self._open_expect(ch, challenge_id)
        if expect is None and ch is not None and not ch.drawn:
            expect = self._seed_error(ch, block)
        if self._tx("drawCommittee", (challenge_id,), sender, 0, expect) is not None:
            assert ch is not None
            if ch.drawn:
                STATS["draw-noop"] += 1
            else:
                self._apply_draw(ch, self._expected_committee(ch), block)

    def _members(self, ch: MChallenge, block: int) -> list[str]:
        """The committee, or the one an attestation in `block` would draw (empty while the seed is unreadable)."""
        if ch.drawn:
            return ch.committee
        return self._expected_committee(ch) if self._seed_error(ch, block) is None else []

    def _do_commit(self, ch: MChallenge | None, challenge_id: int, account: str, verdict: int, cid: str,
                   salt: bytes, copied: bytes | None = None) -> None:
        """Commits `account` to (verdict, results, cid, salt), or sends `copied`, someone else's commitment."""
        block = self.evm.pending_block()
        expect = self._open_expect(ch, challenge_id)
        commitment = copied if copied is not None else commitment_of(
            verdict, keccak256(b"results-%d" % verdict), cid, salt, account) if verdict else bytes(32)
        committee: list[str] = []
        if expect is None:
            assert ch is not None
            if block > ch.commit_deadline:
                expect = err("CommitPhaseOver", challengeId=challenge_id, commitDeadline=ch.commit_deadline)
            elif commitment == bytes(32):
                expect = err("InvalidCommitment")
            elif not ch.drawn:
                expect = self._seed_error(ch, block)
            if expect is None:
                committee = self._members(ch, block)
                if account not in committee:
                    expect = err("NotCommitteeMember", challengeId=challenge_id, account=account)
                elif ch.drawn and ch.commitments[committee.index(account)] != bytes(32):
                    expect = err("AlreadyCommitted", challengeId=challenge_id, verifier=account)
        if self._tx("commitVerdict", (challenge_id, commitment), account, 0, expect) is not None:
            assert ch is not None
            if not ch.drawn:
                STATS["commit-draws"] += 1
                self._apply_draw(ch, committee, block)
            position = committee.index(account)
            ch.commitments[position] = commitment
            ch.openings[position] = None if copied is not None else (verdict, cid, salt)
            STATS["commit-copied" if copied is not None else f"commit:{verdict}"] += 1
            if self.verifiers[account].status == EXITING:
                STATS["commit-while-exiting"] += 1

    def _do_reveal(self, ch: MChallenge | None, challenge_id: int, account: str, verdict: int, cid: str,
                   salt: bytes) -> None:
        block = self.evm.pending_block()
        expect = self._open_expect(ch, challenge_id)
        if expect is None:
            assert ch is not None
            committee = ch.committee if ch.drawn else []
            if block > ch.deadline:
                expect = err("RevealPhaseOver", challengeId=challenge_id, deadline=ch.deadline)
            elif not ch.reveal_open(block):
                expect = err("RevealNotOpen", challengeId=challenge_id, commitDeadline=ch.commit_deadline)
            elif verdict == 0:
                expect = err("InvalidVerdict")
            elif not cid or len(cid) > MAX_CID:
                expect = err("InvalidCid")
            elif account not in committee:
                expect = err("NotCommitteeMember", challengeId=challenge_id, account=account)
            else:
                position = committee.index(account)
                if ch.commitments[position] == bytes(32):
                    expect = err("NotCommitted", challengeId=challenge_id, verifier=account)
                elif ch.verdicts[position]:
                    expect = err("AlreadyRevealed", challengeId=challenge_id, verifier=account)
                elif ch.commitments[position] != commitment_of(verdict, keccak256(b"results-%d" % verdict), cid,
                                                                salt, account):
                    expect = err("CommitmentMismatch", challengeId=challenge_id, verifier=account)
        args = (challenge_id, verdict, keccak256(b"results-%d" % verdict), cid, salt)
        if self._tx("revealVerdict", args, account, 0, expect) is not None:
            assert ch is not None
            ch.verdicts[ch.committee.index(account)] = verdict
            STATS[f"verdict:{verdict}"] += 1
            STATS["reveal-early" if block <= ch.commit_deadline else "reveal"] += 1
        elif expect is not None:
            STATS[f"reveal-refused:{expect[0]}"] += 1

    def _reveal_honestly(self, ch: MChallenge, account: str) -> None:
        opening = ch.openings[ch.committee.index(account)] if ch.drawn and account in ch.committee else None
        verdict, cid, salt = opening or (1, "bafyreport", salt_of(account, ch.id))
        self._do_reveal(ch, ch.id, account, verdict, cid, salt)

    def _outcome(self, ch: MChallenge, after_deadline: bool) -> int:
        """ChallengeStatus settle would give, 0 if not settleable: a quorum of equal verdicts; after the
        deadline the strict plurality of the verdicts given, none or a tie Expired."""
        votes = [0, 0, 0, 0]
        for v in ch.verdicts:
            votes[v] += 1
        for v in (1, 2, 3):
            if votes[v] >= self.quorum:
                return v + 1
        if not after_deadline:
            return 0
        best = max(votes[1:])
        if best == 0 or votes[1:].count(best) > 1:
            return CH_EXPIRED
        return votes[1:].index(best) + 2

    def _do_settle(self, ch: MChallenge | None, challenge_id: int, sender: str) -> None:
        block = self.evm.pending_block()
        expect = self._open_expect(ch, challenge_id)
        outcome = 0
        if expect is None:
            assert ch is not None
            outcome = self._outcome(ch, block > ch.deadline)
            if outcome == 0:
                expect = err("NotSettleable", challengeId=challenge_id, deadline=ch.deadline)
        if self._tx("settle", (challenge_id,), sender, 0, expect) is not None:
            assert ch is not None
            self._apply_settle(ch, outcome, block > ch.deadline)

    def _apply_settle(self, ch: MChallenge, outcome: int, after_deadline: bool) -> None:
        """The money of `settle` (SPEC section 5), written out from the spec rather than from the contract."""
        claim = self.claims[ch.claim_id - 1]
        STATS[f"outcome:{outcome}{'-late' if after_deadline else ''}"] += 1
        STATS[f"settled-claim-was:{claim.status}"] += 1
        ch.status = outcome
        claim.open_challenges -= 1
        pool = 0  # the losing bond
        if outcome == CH_VALID:  # the claim stands: the challenger's bond is lost
            pool, winner = CHALLENGE_BOND, claim.prover
            if claim.status == COMMITTED:
                claim.status = VALID
        else:  # the challenger gets the own bond back and, on a rejection, the prover's (unless already taken)
            winner = ch.challenger
            self._credit(winner, CHALLENGE_BOND)
            if outcome != CH_EXPIRED and claim.status != INVALID:
                pool = claim.bond
                claim.status = INVALID
        # slashing: outvoted members always, silent ones after the deadline; rewarded: the majority (on Expired
        # every member who attested); they share reward_bps of the pool plus all that was slashed
        winning = 0 if outcome == CH_EXPIRED else outcome - 1
        slashed = 0
        rewarded: list[str] = []
        exited: set[str] = set()  # members whose exit completed since the draw: nothing to slash, rewards credited
        for account, vote, vid in zip(ch.committee, ch.verdicts, ch.member_ids, strict=True):
            v = self.verifiers.get(account)
            if v is not None and v.id == vid:
                v.duties -= 1
            if v is None:
                exited.add(account)
                STATS["settled-after-member-exited"] += 1
                v = MVerifier(id=vid, stake=0, status=0, since=0)  # the deleted record the contract reads
            bps = 0
            if vote == 0:
                bps = DEV.silent_slash_bps if after_deadline else 0
            elif winning == 0 or vote == winning:
                rewarded.append(account)
            else:
                bps = DEV.minority_slash_bps
            amount = v.stake * bps // BPS
            v.stake -= amount
            slashed += amount
            if amount:
                STATS["slashed-silent" if vote == 0 else "slashed-minority"] += 1
        each = (pool * DEV.verifier_reward_bps // BPS + slashed) // len(rewarded) if rewarded else 0
        for account in rewarded:
            if account in exited:
                if each:
                    self._credit(account, each)
            else:
                self.verifiers[account].stake += each
        to_winner = pool + slashed - each * len(rewarded)
        assert to_winner >= 0
        if to_winner:
            self._credit(winner, to_winner)

    def _do_withdraw(self, account: str) -> None:
        amount = self.pending[account]
        before = self.evm.balance(account)
        receipt = self._tx("withdraw", (), account, 0, None if amount else err("NothingToWithdraw"))
        if receipt is not None:
            self.pending[account] = 0
            fee = receipt["gas_used"] * receipt["effective_gas_price"]
            assert self.evm.balance(account) == before + amount - fee, "withdraw paid the wrong amount"

    # ------------------------------------------------------------------------------------------------------
    # rules
    # ------------------------------------------------------------------------------------------------------

    @initialize(k=st.integers(0, 5))
    def register_some_verifiers(self, k: int) -> None:
        """Runs start with 5 - k verifiers (the last actors) plus the extra ones, so committees get drawn early."""
        for account in [*self.actors[N_ACTORS - (5 - k):], *self.extras]:
            self._do_register(account, MIN_STAKE)

    @rule(c=pick)
    def advance_lifecycle(self, c: int) -> None:
        """One step that moves some challenge or claim along its lifecycle: draw (or reseed), attest by a silent
        member, settle, or mine to the block where that becomes possible; with no open challenge, open one,
        finalize, or commit. The choice is driven by the state, `c` only varies it: Hypothesis favours the first
        rule in its order (fewest arguments, i.e. this one) and small values such as c = 0, so whole lifecycles
        happen often although its swarm testing switches other rules off in many examples."""
        self._step("advance_lifecycle")
        block = self.evm.pending_block()
        n = self.steps  # varies the choices when c does not (never global state: examples must replay exactly)
        sender = self.everyone[(c + n) % len(self.everyone)]
        open_ones = [ch for ch in self.challenges if ch.status == CH_OPEN]
        if (c + n) % 16 == 15:
            self._advance_verifiers(c, block)
            return
        if open_ones and (c + n) % 6 != 5:
            ch = open_ones[c % len(open_ones)]
            silent = [m for m, v in zip(ch.committee, ch.verdicts, strict=True) if v == 0]
            if not ch.drawn and block <= ch.seed_block:
                step = "to-seed"
                self._mine(ch.seed_block + 1 - block)
            elif not ch.drawn and block > ch.seed_block + BLOCKHASH_WINDOW:
                step = "reseed"
                self._do_reseed(ch, ch.id, sender)
            elif not ch.drawn and block > ch.deadline:
                if (c + n) % 4 <= 1:
                    step = "settle-undrawn"
                    self._do_settle(ch, ch.id, sender)
                elif (c + n) % 4 == 2:
                    step = "draw-late"
                    self._do_draw(ch, ch.id, sender)
                else:  # let the seed's block hash leave the 256-block window: the next step reseeds
                    step = "to-seed-expiry"
                    self._mine(ch.seed_block + BLOCKHASH_WINDOW + 1 - block)
            elif not ch.drawn and block <= ch.deadline and (c + n) % 8 == 0:
                step = "leave-undrawn"  # nobody draws in time: later an undrawn settle, a late draw or a reseed
                self._mine(ch.deadline + 1 - block)
            elif not ch.drawn and (c + n) % 2:
                step = "draw"
                self._do_draw(ch, ch.id, sender)
            elif block <= ch.deadline and (not ch.drawn or silent) and self._outcome(ch, False) == 0:
                members = self._members(ch, block)
                uncommitted = [m for p, m in enumerate(ch.committee) if ch.commitments[p] == bytes(32)] \
                    if ch.drawn else members
                unrevealed = [m for p, m in enumerate(ch.committee)
                              if ch.commitments[p] != bytes(32) and not ch.verdicts[p]] if ch.drawn else []
                if block <= ch.commit_deadline and uncommitted and (not unrevealed or (c + n) % 4):
                    step = "commit"
                    verdict = (1, 1, 2, 2, 3)[(c + n) % 5]
                    who = uncommitted[(c + n) % len(uncommitted)]
                    self._do_commit(ch, ch.id, who, verdict, "bafyreport", salt_of(who, ch.id))
                elif unrevealed and ch.reveal_open(block):
                    step = "reveal"
                    self._reveal_honestly(ch, unrevealed[(c + n) % len(unrevealed)])
                elif unrevealed and block <= ch.commit_deadline:
                    step = "to-reveal"
                    self._mine(ch.commit_deadline + 1 - block)
                else:  # no eligible verifier, or nothing left to reveal: the challenge can only expire
                    step = "no-committee" if not members else "nothing-to-reveal"
                    self._mine(ch.deadline + 1 - block)
            elif self._outcome(ch, block > ch.deadline) or (c + n) % 4 == 0:
                step = "settle"
                self._do_settle(ch, ch.id, sender)
            else:
                step = "to-deadline"
                self._mine(ch.deadline + 1 - block)
            STATS[f"lc:{step}"] += 1
            return
        challengeable = [cl for cl in self.claims if self._challengeable(cl, block)]
        finalizable = [cl for cl in self.claims if self._finalizable(cl, block)]
        waiting = [cl for cl in self.claims if cl.status in (COMMITTED, VALID) and cl.open_challenges == 0]
        if challengeable and (c + n) % 3:
            step = "open"
            busy = [cl for cl in challengeable if cl.open_challenges]  # a second challenge on a claim
            pool = busy if busy and (c + n) % 2 else challengeable
            claim = pool[(c + n) % len(pool)]
            challenger = self.actors[(c + n) % N_ACTORS]
            if challenger == claim.prover:
                challenger = self.actors[(c + n + 1) % N_ACTORS]
            named = [(c + n) % claim.num_segments] if claim.num_segments and (c + n) % 2 else []
            self._do_open_challenge(challenger, claim, claim.id, named, CHALLENGE_BOND)
        elif finalizable:
            step = "finalize"
            claim = finalizable[c % len(finalizable)]
            self._do_finalize(claim, claim.id, sender)
        elif waiting and (c + n) % 4 == 0:
            step = "to-window-end"
            self._mine(min(cl.window_end for cl in waiting) + 1 - block)
        else:
            step = "commit"
            k = len(self.claims) + c
            self._do_commit_training(self.actors[k % N_ACTORS], k % len(WEIGHTS), (k // 3) % len(ROOTS),
                                     1 + k % 16, TRAINING_BOND, CID)
        STATS[f"lc:{step}"] += 1

    def _advance_verifiers(self, c: int, block: int) -> None:
        """The verifier side of `advance_lifecycle`: complete a due exit (also with a committee unsettled past its
        deadline, which then settles without the leaver's stake), mine
        to the next exit block, leave while sitting on an open committee, or join."""
        due = [a for a in self.actors if a in self.verifiers and self.verifiers[a].status == EXITING
               and block >= self.verifiers[a].since]
        exiting = [self.verifiers[a].since for a in self.actors
                   if a in self.verifiers and self.verifiers[a].status == EXITING]
        on_duty = [a for a in self.actors if self._is_active(a) and self.verifiers[a].duties]
        outside = [a for a in self.actors if a not in self.verifiers]
        if due:
            step = "complete-exit"
            self._do_complete_exit(due[c % len(due)])
        elif exiting and c % 2:
            step = "to-exit-block"
            self._mine(min(exiting) - block)
        elif on_duty:
            step = "exit-on-duty"
            self._do_request_exit(on_duty[c % len(on_duty)])
        elif outside:
            step = "register"
            self._do_register(outside[c % len(outside)], MIN_STAKE + (c % 3) * 10**17)
        else:
            step = "nothing"
        STATS[f"lc:{step}"] += 1

    @rule(p=actor, w=st.integers(0, len(WEIGHTS) - 1), r=st.integers(0, len(ROOTS) - 1),
          num_segments=st.integers(0, 16), odd=st.integers(0, 19), c=pick)
    def commit_training(self, p: int, w: int, r: int, num_segments: int, odd: int, c: int) -> None:
        """odd 0: wrong bond, 1: no bond, 2: empty CID, 3-6: the prover of an earlier claim commits the same
        weights and segment root again, else a well-formed claim (weights and roots are shared by provers)."""
        self._step("commit_training")
        training = [cl for cl in self.claims if cl.kind == TRAINING]
        if 3 <= odd <= 6 and training:
            claim = training[c % len(training)]
            assert claim.weights is not None and claim.root is not None
            STATS["commit-again"] += 1
            self._do_commit_training(claim.prover, WEIGHTS.index(claim.weights), ROOTS.index(claim.root),
                                     claim.num_segments, TRAINING_BOND, CID)
            return
        value = TRAINING_BOND + 1 if odd == 0 else 0 if odd == 1 else TRAINING_BOND
        self._do_commit_training(self.actors[p], w, r, num_segments, value, "" if odd == 2 else CID)

    @rule(p=actor, m=pick, mode=st.integers(0, 9), odd=st.integers(0, 19))
    def commit_inference(self, p: int, m: int, mode: int, odd: int) -> None:
        """mode 0-2: no model claim, 3: a non-existent claim id, 4: mostly a rejected training claim, else an
        existing claim (mostly a training one); odd 0: wrong bond, 1: a CID over 128 bytes."""
        self._step("commit_inference")
        if mode <= 2:
            model_id = 0
        elif mode == 3 or not self.claims:
            model_id = len(self.claims) + 1 + m % 5
        elif mode == 4:
            model_id = self._prefer(self.claims, m, lambda cl: cl.kind == TRAINING and cl.status == INVALID).id
        else:
            model_id = self._prefer(self.claims, m, lambda cl: cl.kind == TRAINING).id
        value = INFERENCE_BOND - 1 if odd == 0 else INFERENCE_BOND
        self._do_commit_inference(self.actors[p], model_id, value, "x" * (MAX_CID + 1) if odd == 1 else CID)

    @rule(c=pick, caller=st.integers(0, N_ACTORS))
    def finalize(self, c: int, caller: int) -> None:
        self._step("finalize")
        block = self.evm.pending_block()
        claim = self._claim(c, lambda cl: self._finalizable(cl, block))
        self._do_finalize(claim, claim.id if claim else self._bogus_claim_id(c), self.everyone[caller])

    @rule(p=pick, extra=st.integers(0, 8), low=st.integers(0, 9))
    def register_verifier(self, p: int, extra: int, low: int) -> None:
        """low 0: below the minimum stake; else the minimum plus 0-0.8 ether."""
        self._step("register_verifier")
        value = MIN_STAKE - 1 - extra if low == 0 else MIN_STAKE + extra * 10**17
        self._do_register(self._actor(p, lambda a: a not in self.verifiers), value)

    @rule(p=pick, amount=st.integers(0, 20))
    def increase_stake(self, p: int, amount: int) -> None:
        self._step("increase_stake")
        self._do_increase_stake(self._actor(p, self._is_active), amount * 5 * 10**16)

    @rule(p=pick, how=st.integers(0, 5), amount=st.integers(1, 10**18))
    def withdraw_excess_stake(self, p: int, how: int, amount: int) -> None:
        """how: 0 zero, 1 all the excess, 2 one wei more than the excess, 3 the whole stake, else random."""
        self._step("withdraw_excess_stake")
        account = self._actor(p, lambda a: self._is_active(a) and self.verifiers[a].stake > MIN_STAKE)
        stake = self.verifiers[account].stake if account in self.verifiers else 0
        excess = max(stake - MIN_STAKE, 0)
        self._do_withdraw_excess_stake(account, [0, excess, excess + 1, stake, amount, amount][how])

    @rule(p=pick, anyone=st.integers(0, 4))
    def request_exit(self, p: int, anyone: int) -> None:
        """anyone 0: any actor (mostly not an active verifier), else an active verifier if there is one."""
        self._step("request_exit")
        self._do_request_exit(self.actors[p % N_ACTORS] if anyone == 0 else self._actor(p, self._is_active))

    @rule(p=pick, anyone=st.integers(0, 4))
    def complete_exit(self, p: int, anyone: int) -> None:
        """anyone 0: any actor, else an exiting verifier past its exit block if there is one."""
        self._step("complete_exit")
        block = self.evm.pending_block()
        def ready(a: str) -> bool:
            return a in self.verifiers and self.verifiers[a].status == EXITING and block >= self.verifiers[a].since

        account = self.actors[p % N_ACTORS] if anyone == 0 else self._actor(p, ready)
        self._do_complete_exit(account)

    @rule(p=actor, c=pick, named=st.lists(st.integers(0, 17), max_size=MAX_NAMED + 1), odd=st.integers(0, 19))
    def open_challenge(self, p: int, c: int, named: list[int], odd: int) -> None:
        """odd 0: wrong bond, 1: the named indices as drawn (up to 9 of them, up to 17), 2: the prover may
        challenge; otherwise the named indices are cut to valid ones and the challenger is not the prover."""
        self._step("open_challenge")
        block = self.evm.pending_block()
        claim = self._claim(c, lambda cl: self._challengeable(cl, block))
        challenger = self.actors[p]
        if claim is not None and odd != 1:
            named = [s % claim.num_segments for s in named[:MAX_NAMED]] if claim.num_segments else []
        if claim is not None and odd != 2 and challenger == claim.prover:
            challenger = self.actors[(p + 1) % N_ACTORS]
        value = CHALLENGE_BOND * 2 if odd == 0 else CHALLENGE_BOND
        self._do_open_challenge(challenger, claim, claim.id if claim else self._bogus_claim_id(c), named, value)

    @precondition(lambda self: self.challenges)
    @rule(c=pick, caller=st.integers(0, N_ACTORS))
    def reseed(self, c: int, caller: int) -> None:
        self._step("reseed")
        block = self.evm.pending_block()
        ch = self._challenge(c, lambda x: x.status == CH_OPEN and not x.drawn
                             and block > x.seed_block + BLOCKHASH_WINDOW)
        self._do_reseed(ch, ch.id if ch else self._bogus_challenge_id(c), self.everyone[caller])

    @precondition(lambda self: self.challenges)
    @rule(c=pick, caller=st.integers(0, N_ACTORS))
    def draw_committee(self, c: int, caller: int) -> None:
        self._step("draw_committee")
        ch = self._challenge(c)
        self._do_draw(ch, ch.id if ch else self._bogus_challenge_id(c), self.everyone[caller])

    @precondition(lambda self: self.challenges)
    @rule(c=pick, who=st.integers(0, 9), position=st.integers(0, 7), p=actor, verdict=st.integers(0, 3),
          bad_cid=st.integers(0, 19))
    def commit_verdict(self, c: int, who: int, position: int, p: int, verdict: int, bad_cid: int) -> None:
        """who 0-6: a member of the committee of an open challenge (or of the one this commitment will draw);
        7: that member sends a copy of another member's commitment (the copycat); else any actor on any
        challenge. Verdict None stands for a zero commitment."""
        self._step("commit_verdict")
        cid = "" if bad_cid == 0 else "bafyreport"
        open_ones = [x for x in self.challenges if x.status == CH_OPEN]
        if who <= 7 and open_ones:
            ch = open_ones[c % len(open_ones)]
            members = self._members(ch, self.evm.pending_block())
            account = members[position % len(members)] if members else self.actors[p]
            others = [x for x in ch.commitments if x != bytes(32)]
            if who == 7 and others:
                self._do_commit(ch, ch.id, account, verdict, cid, salt_of(account, ch.id),
                                copied=others[c % len(others)])
                return
            self._do_commit(ch, ch.id, account, verdict, cid, salt_of(account, ch.id))
            return
        ch_any = self._challenge(c, lambda x: True)
        account = self.actors[p]
        self._do_commit(ch_any, ch_any.id if ch_any else self._bogus_challenge_id(c), account, verdict, cid,
                        salt_of(account, c))

    @precondition(lambda self: self.challenges)
    @rule(c=pick, who=st.integers(0, 9), position=st.integers(0, 7), p=actor, lie=st.integers(0, 9),
          verdict=st.integers(0, 3))
    def reveal_verdict(self, c: int, who: int, position: int, p: int, lie: int, verdict: int) -> None:
        """who 0-7: a member of an open challenge's committee; else any actor on any challenge. lie 0-6: the
        member's own opening (a default one if it has none); 7: another verdict; 8: another salt; 9: someone
        else's opening (the copycat reveals the original's vote)."""
        self._step("reveal_verdict")
        open_ones = [x for x in self.challenges if x.status == CH_OPEN]
        if who <= 7 and open_ones:
            ch = open_ones[c % len(open_ones)]
            members = ch.committee if ch.drawn else []
            account = members[position % len(members)] if members else self.actors[p]
            opening = ch.openings[members.index(account)] if account in members else None
            v, cid, salt = opening or (verdict, "bafyreport", salt_of(account, ch.id))
            if lie == 7:
                v = 1 + v % 3
            elif lie == 8:
                salt = keccak256(salt)
            elif lie == 9:
                theirs = [o for o in ch.openings if o is not None and o is not opening]
                if theirs:
                    v, cid, salt = theirs[c % len(theirs)]
                    STATS["reveal-copycat"] += 1
            self._do_reveal(ch, ch.id, account, v, cid, salt)
            return
        ch_any = self._challenge(c, lambda x: True)
        account = self.actors[p]
        self._do_reveal(ch_any, ch_any.id if ch_any else self._bogus_challenge_id(c), account, verdict, "bafyreport",
                        salt_of(account, c))

    @precondition(lambda self: self.challenges)
    @rule(c=pick, caller=st.integers(0, N_ACTORS))
    def settle(self, c: int, caller: int) -> None:
        self._step("settle")
        ch = self._challenge(c)
        self._do_settle(ch, ch.id if ch else self._bogus_challenge_id(c), self.everyone[caller])

    @rule(p=pick, anyone=st.integers(0, 4))
    def withdraw(self, p: int, anyone: int) -> None:
        """anyone 0: any account, else one with a payment pending if there is one."""
        self._step("withdraw")
        account = self.everyone[p % len(self.everyone)] if anyone == 0 else self._prefer(
            self.everyone, p, lambda a: self.pending[a] > 0)
        self._do_withdraw(account)

    @rule(tier=st.integers(0, 39), n=st.integers(1, 1_000))
    def time_travel(self, tier: int, n: int) -> None:
        """Mines blocks. tier 0: past the 256-block blockhash window; 1-6: up to a challenge window; else a few."""
        self._step("time_travel")
        if tier == 0:
            self._mine(257 + n % 44)
        elif tier <= 6:
            self._mine(21 + n % 190)
        else:
            self._mine(1 + n % 20)

    @precondition(lambda self: self.claims)
    @rule(kind=st.integers(0, 11), c=pick, offset=st.integers(-1, 1))
    def probe_boundary(self, kind: int, c: int, offset: int) -> None:
        """Mines until the next transaction lands one block before, at, or after a boundary of the model, then
        does what that boundary gates. kind 0-1: a claim's window end (open a challenge, finalize); 2-3: a
        challenge's seed block (draw, commit); 4: its commit deadline (commit, reveal); 5-6: its deadline (reveal,
        settle); 7: its blockhash expiry
        (draw, reseed); 8-9: an exit block (complete the exit; if nobody leaves while on a committee, a member
        of an open committee first asks to leave); 10-11: the window end of a claim with an open
        challenge (challenge it again, finalize)."""
        self._step("probe_boundary")
        sender = self.everyone[c % len(self.everyone)]
        open_ones = [ch for ch in self.challenges if ch.status == CH_OPEN]
        undrawn = [ch for ch in open_ones if not ch.drawn]
        exiting = [a for a in self.actors if a in self.verifiers and self.verifiers[a].status == EXITING]
        on_duty = [a for a in self.actors if self._is_active(a) and self.verifiers[a].duties]
        ch = None
        account = None
        if kind in (2, 3, 7) and undrawn:
            ch = undrawn[c % len(undrawn)]
            target = ch.seed_block if kind != 7 else ch.seed_block + BLOCKHASH_WINDOW
        elif kind in (4, 5, 6) and open_ones:
            ch = open_ones[c % len(open_ones)]
            target = ch.commit_deadline if kind == 4 else ch.deadline
        elif kind in (8, 9) and (exiting or on_duty):
            if not any(self.verifiers[a].duties for a in exiting) and on_duty:
                STATS["probe:exit-on-duty"] += 1  # first someone on an open committee asks to leave
                self._do_request_exit(on_duty[c % len(on_duty)])
                return
            account = self._prefer(exiting, c, lambda a: self.verifiers[a].duties > 0)
            target = self.verifiers[account].since
        else:
            kind = 10 if kind >= 10 else kind % 2
            busy = kind == 10
            claim = self._prefer(self.claims, c, lambda cl: cl.status in (COMMITTED, VALID)
                                 and (cl.open_challenges > 0) == busy)
            target = claim.window_end
        STATS[f"probe:{kind}:{offset}"] += 1
        self._mine(target + offset - self.evm.pending_block())
        block = self.evm.pending_block()
        if ch is not None and kind in (2, 7) and (kind == 2 or c % 2):
            self._do_draw(ch, ch.id, sender)
        elif ch is not None and kind == 7:
            self._do_reseed(ch, ch.id, sender)
        elif ch is not None and (kind == 3 or (kind == 4 and c % 2)):
            members = self._members(ch, block)
            uncommitted = [m for p, m in enumerate(ch.committee) if ch.commitments[p] == bytes(32)] \
                if ch.drawn else members
            who = uncommitted[c % len(uncommitted)] if uncommitted else self.actors[c % N_ACTORS]
            self._do_commit(ch, ch.id, who, 1 + c % 3, "bafyreport", salt_of(who, ch.id))
        elif ch is not None and kind in (4, 5):
            committed = [m for p, m in enumerate(ch.committee) if ch.commitments[p] != bytes(32)]
            who = committed[c % len(committed)] if committed else self.actors[c % N_ACTORS]
            self._reveal_honestly(ch, who)
        elif ch is not None:
            self._do_settle(ch, ch.id, sender)
        elif account is not None:
            self._do_complete_exit(account)
        elif c % 2 == 0:
            challenger = self.actors[c % N_ACTORS]
            if challenger == claim.prover:
                challenger = self.actors[(c + 1) % N_ACTORS]
            self._do_open_challenge(challenger, claim, claim.id, [], CHALLENGE_BOND)
        else:
            self._do_finalize(claim, claim.id, sender)

    # ------------------------------------------------------------------------------------------------------
    # invariants, read from the chain after every step
    # ------------------------------------------------------------------------------------------------------

    @invariant()
    def chain_invariants(self) -> None:
        self._check_chain()

    def _check_chain(self) -> None:
        evm = self.evm
        state = evm.fresh_state()
        read = evm.read
        balance = int(state.get_balance(to_canonical_address(evm.address)))

        claims = [read("getClaim", c.id, state=state) for c in self.claims]
        challenges = [read("getChallenge", ch.id, state=state) for ch in self.challenges]
        verifiers = {a: read("getVerifier", a, state=state) for a in self.tracked}
        pending = {a: read("pendingWithdrawal", a, state=state) for a in self.everyone}
        assert read("claimCount", state=state) == len(self.claims)
        assert read("challengeCount", state=state) == len(self.challenges)
        assert read("verifierCount", state=state) == len(self.verifier_ids)
        assert read("activeVerifierCount", state=state) == len(self.active)

        # (1) money conservation
        locked = 0
        for c in claims:
            status, kind = c[3], c[2]
            if status in (COMMITTED, VALID):
                locked += TRAINING_BOND if kind == TRAINING else INFERENCE_BOND
        locked += CHALLENGE_BOND * sum(1 for ch in challenges if ch[2] == CH_OPEN)
        locked += sum(v[0] for v in verifiers.values() if v[2] in (ACTIVE, EXITING))
        assert balance == sum(pending.values()) + locked, (
            f"money: registry holds {balance}, pending {sum(pending.values())} + locked {locked}")

        # (2) no claim moves backwards; settled challenges stay settled
        for m, c in zip(self.claims, claims, strict=True):
            old, new = self.seen_claims.get(m.id, COMMITTED), c[3]
            assert new == old or (old, new) in CLAIM_MOVES, f"claim {m.id} moved {old} -> {new}"
            self.seen_claims[m.id] = new
        for m, ch in zip(self.challenges, challenges, strict=True):
            old, new = self.seen_challenges.get(m.id, CH_OPEN), ch[2]
            assert new != NONE_STATUS and (old == CH_OPEN or new == old), f"challenge {m.id} moved {old} -> {new}"
            self.seen_challenges[m.id] = new

        # (3) ownerOf: the earliest claim with those weights that is not Invalid
        for w in [*WEIGHTS, UNUSED_WEIGHTS]:
            expected = ZERO
            for claim_id in self.by_weights.get(w, []):
                if claims[claim_id - 1][3] != INVALID:
                    expected = self.claims[claim_id - 1].prover
                    break
            got = to_checksum_address(read("ownerOf", w, state=state))
            assert got == to_checksum_address(expected), f"ownerOf({w.hex()[:10]}) = {got}, expected {expected}"

        # (4) open challenges per claim; no member's stake can leave before its committee's reveal deadline
        open_per_claim: Counter[int] = Counter()
        block = self.evm.pending_block()
        for ch in challenges:
            if ch[2] != CH_OPEN:
                continue
            open_per_claim[ch[1]] += 1
            if ch[5]:  # drawn
                for p in range(ch[3]):
                    vid = (ch[12] >> (32 * p)) & 0xFFFFFFFF
                    v = verifiers[self.verifier_ids[vid]]
                    if v[2] == EXITING and v[1] == vid:
                        assert v[3] > ch[7], f"challenge: member {vid} may exit at {v[3]}, deadline {ch[7]}"
                    elif v[2] == NONE_STATUS or v[1] != vid:  # exited (and maybe registered again)
                        assert block > ch[7] + 1, f"member {vid} exited before the deadline {ch[7]}"
        for m, c in zip(self.claims, claims, strict=True):
            assert c[4] == open_per_claim[m.id], f"claim {m.id}: openChallenges {c[4]} != {open_per_claim[m.id]}"

        # the model agrees with the chain
        for m, c in zip(self.claims, claims, strict=True):
            assert (to_checksum_address(c[0]), c[1], c[2], c[3], c[4], c[5]) == (
                m.prover, m.committed_at, m.kind, m.status, m.open_challenges, m.num_segments), f"claim {m.id}"
        for m, ch in zip(self.challenges, challenges, strict=True):
            got = (to_checksum_address(ch[0]), ch[1], ch[2], ch[3], ch[4], ch[5], ch[6], ch[7], ch[8])
            want = (m.challenger, m.claim_id, m.status, len(m.committee), len(m.named), m.drawn, m.seed_block,
                    m.deadline, m.commit_deadline)
            assert got == want, f"challenge {m.id}: chain {got}, model {want}"
            assert ch[9] == sum(v << (2 * p) for p, v in enumerate(m.verdicts)), f"challenge {m.id} verdicts"
            assert ch[10] == m.committed_mask(), f"challenge {m.id} committed bits"
            # (5) a verdict only where a commitment was opened
            assert all(c != bytes(32) for c, v in zip(m.commitments, m.verdicts, strict=True) if v), m.id
        for m in self.challenges:
            if m.drawn and m.commitments and self.steps % 5 == 0:  # (a sample: each read is a message call)
                assert list(read("commitments", m.id, state=state)) == m.commitments, f"challenge {m.id} commitments"
        for a, v in verifiers.items():
            mv = self.verifiers.get(a)
            if mv is None:
                assert v[2] == NONE_STATUS, f"verifier {a} should not exist"
                continue
            got = (v[0], v[1], v[2], v[3])
            assert got == (mv.stake, mv.id, mv.status, mv.since), f"verifier {a}: chain {got}, model {mv}"
            if mv.status == ACTIVE:
                assert v[4] == self.active.index(a), f"verifier {a}: activeIndex"
        assert pending == self.pending, f"pending: chain {pending}, model {self.pending}"


def salt_of(account: str, tag: int) -> bytes:
    """A member's salt for a challenge: distinct per member and challenge, reproducible across replays."""
    return keccak256(b"salt" + account.encode() + tag.to_bytes(8, "big"))


# --------------------------------------------------------------------------------------------------------------
# Determinism: block hashes (hence committees) depend on the wall clock and on random mix hashes in eth-tester;
# fixing both makes every example replay exactly, which Hypothesis needs to shrink a failure.
# --------------------------------------------------------------------------------------------------------------

class _DeterministicOs:
    """Stands in for `os` inside eth-tester's py-evm backend: `urandom` (the post-merge mix hash of a mined
    block) becomes a hash of the block's parent, so equal histories give equal block hashes."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def urandom(self, n: int) -> bytes:
        parent = bytes(self._backend.chain.get_block().header.parent_hash)
        return keccak256(b"stateful-mix" + parent)[:n]

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def _make_deterministic(chain: EmbeddedChain, monkeypatch: pytest.MonkeyPatch) -> None:
    import eth._utils.headers as headers
    import eth_tester.backends.pyevm.main as pyevm_main

    if hasattr(headers, "eth_now") and hasattr(pyevm_main, "os"):
        monkeypatch.setattr(headers, "eth_now", lambda: 0)  # new block timestamp: parent + 1
        monkeypatch.setattr(pyevm_main, "os", _DeterministicOs(chain.tester.backend))


@pytest.fixture
def deterministic_blocks(chain: EmbeddedChain, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    _make_deterministic(chain, monkeypatch)
    yield


# --------------------------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------------------------

def _run_machine(machine: type[RegistryMachine], chain: EmbeddedChain, target_steps: int,
                 derandomize: bool = False) -> float:
    """Runs `machine` on `chain` until `target_steps` rule steps ran; returns the seconds it took."""
    STATS.clear()
    machine.chain = chain
    started = time.perf_counter()
    try:
        for _ in range(MAX_RUNS):
            remaining = target_steps - STATS["steps"]
            if remaining <= 0:
                break
            run_state_machine_as_test(machine, settings=settings(
                max_examples=math.ceil(remaining / STEP_COUNT),
                stateful_step_count=STEP_COUNT,
                deadline=None,
                database=None,
                derandomize=derandomize,
                suppress_health_check=list(HealthCheck),
                print_blob=True,
            ))
    finally:
        machine.chain = None
    return time.perf_counter() - started


@pytest.mark.slow
def test_registry_state_machine(chain: EmbeddedChain, deterministic_blocks: None) -> None:
    elapsed = _run_machine(RegistryMachine, chain, TARGET_STEPS)
    summary = ", ".join(f"{k}={v}" for k, v in sorted(STATS.items()))
    print(f"\nstateful registry test: {STATS['steps']} steps in {elapsed:.1f} s\n{summary}")
    assert STATS["steps"] >= TARGET_STEPS, f"only {STATS['steps']} of {TARGET_STEPS} steps ran"


# --------------------------------------------------------------------------------------------------------------
# C = 8: committee members 4..7 live in the challenge record's second committee slot
# --------------------------------------------------------------------------------------------------------------

BIG_C = 8
#: Verifiers that are never prover nor challenger, registered at the start: every draw has at least 6 eligible
#: members (fewer only once slashes take their stakes below the minimum), with the actors' up to 8.
BIG_EXTRA_VERIFIERS = 6
BIG_STEPS = int(os.environ.get("PROOFREG_STATEFUL_BIG_STEPS", "100"))  # ~30 s here


class BigCommitteeMachine(RegistryMachine):
    committee_size = BIG_C
    quorum = BIG_C // 2 + 1
    extra_verifiers = BIG_EXTRA_VERIFIERS


@pytest.fixture(scope="module")
def big_chain() -> EmbeddedChain:
    chain = EmbeddedChain(replace(DEV, committee_size=BIG_C, quorum=BigCommitteeMachine.quorum))
    missing = 1 + N_ACTORS + BIG_EXTRA_VERIFIERS - len(chain.accounts)
    for i in range(max(0, missing)):
        account = chain.tester.add_account("0x" + (0x57A7E000 + i).to_bytes(32, "big").hex())
        chain.w3.eth.wait_for_transaction_receipt(chain.w3.eth.send_transaction(
            {"from": chain.accounts[0], "to": account, "value": 10**22}))
        chain.accounts.append(to_checksum_address(account))
    return chain


@pytest.mark.slow
def test_registry_state_machine_committee_of_8(big_chain: EmbeddedChain, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same machine with C = 8 (quorum 5), at a small example count: committees of 5 to 8 get drawn, commit,
    reveal, settle and pay through positions 4..7. Derandomized (with the deterministic blocks, every run
    replays the same examples), so the check that large committees were drawn cannot flake."""
    _make_deterministic(big_chain, monkeypatch)
    elapsed = _run_machine(BigCommitteeMachine, big_chain, BIG_STEPS, derandomize=True)
    sizes = {int(k.split(":")[1]): v for k, v in STATS.items() if k.startswith("committee-size:")}
    print(f"\nstateful registry test, C = {BIG_C}: {STATS['steps']} steps in {elapsed:.1f} s, committee sizes {sizes}")
    assert STATS["steps"] >= BIG_STEPS
    assert any(size > 4 for size in sizes), f"no committee above 4 members was drawn: {sizes}"
