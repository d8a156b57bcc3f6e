"""A thin test driver over the registry contract on the embedded chain: send, read, mine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from registry.chain.local import EmbeddedChain
from registry.core.hashing import keccak256
from registry.core.params import RegistryParams
from registry.core.sampling import commitment_of

SALT = b"\x5a" * 32

# Enum values of ProofRegistry.sol
COMMITTED, VALID, INVALID, FINALIZED = 1, 2, 3, 4
CH_OPEN, CH_VALID, CH_INVALID, CH_UNAVAILABLE, CH_EXPIRED = 1, 2, 3, 4, 5
V_NONE, V_VALID, V_INVALID, V_UNAVAILABLE = 0, 1, 2, 3
ACTIVE, EXITING = 1, 2


@dataclass
class Driver:
    chain: EmbeddedChain
    _unrevealed: dict[int, list[tuple[str, int, str]]] = field(default_factory=dict)

    @property
    def reg(self) -> Any:
        return self.chain.registry

    @property
    def p(self) -> RegistryParams:
        return self.chain.params

    @property
    def w3(self) -> Any:
        return self.chain.w3

    @property
    def accounts(self) -> list[str]:
        return self.chain.accounts

    def send(self, fn: Any, sender: str, value: int = 0) -> Any:
        tx = fn.transact({"from": sender, "value": value})
        return self.w3.eth.wait_for_transaction_receipt(tx)

    def call(self, name: str, *args: Any) -> Any:
        return getattr(self.reg.functions, name)(*args).call()

    def commit(self, claim: tuple[Any, ...], prover: str, value: int | None = None) -> int:
        self.send(self.reg.functions.commitTraining(claim), prover, self.p.training_bond if value is None else value)
        return int(self.call("claimCount"))

    def commit_inference(self, claim: tuple[Any, ...], prover: str) -> int:
        self.send(self.reg.functions.commitInference(claim), prover, self.p.inference_bond)
        return int(self.call("claimCount"))

    def register(self, verifier: str, stake: int | None = None) -> None:
        self.send(self.reg.functions.registerVerifier(), verifier, self.p.verifier_stake if stake is None else stake)

    def challenge(self, claim_id: int, challenger: str, named: list[int] | None = None) -> int:
        self.send(self.reg.functions.openChallenge(claim_id, named or []), challenger, self.p.challenge_bond)
        return int(self.call("challengeCount"))

    def to_seed(self, challenge_id: int) -> None:
        """Mines until the challenge's seed block is readable."""
        seed_block = self.challenge_info(challenge_id)["seedBlock"]
        self.chain.mine(max(0, seed_block - self.chain.block_number + 1))

    def draw(self, challenge_id: int, sender: str | None = None) -> list[str]:
        self.to_seed(challenge_id)
        self.send(self.reg.functions.drawCommittee(challenge_id), sender or self.accounts[0])
        return list(self.call("committee", challenge_id))

    def commitment(self, verifier: str, verdict: int, report: str = "bafyreport", salt: bytes = SALT) -> bytes:
        return commitment_of(verdict, keccak256(b"results"), report, salt, verifier)

    def commit_verdict(self, challenge_id: int, verifier: str, verdict: int, report: str = "bafyreport",
                       salt: bytes = SALT) -> Any:
        return self.send(self.reg.functions.commitVerdict(challenge_id, self.commitment(verifier, verdict, report,
                                                                                         salt)), verifier)

    def reveal(self, challenge_id: int, verifier: str, verdict: int, report: str = "bafyreport",
               salt: bytes = SALT) -> Any:
        return self.send(self.reg.functions.revealVerdict(challenge_id, verdict, keccak256(b"results"), report, salt),
                         verifier)

    def to_reveal(self, challenge_id: int) -> None:
        """Mines past the commit deadline."""
        end = self.challenge_info(challenge_id)["commitDeadline"]
        self.chain.mine(max(0, end - self.chain.block_number + 1))

    def attest(self, challenge_id: int, verifier: str, verdict: int, report: str = "bafyreport") -> Any:
        """Commits now; the reveal follows at the next `flush`, `settle` or `past_deadline` of this challenge
        (so tests can attest member after member within the commit phase)."""
        receipt = self.commit_verdict(challenge_id, verifier, verdict, report)
        self._unrevealed.setdefault(challenge_id, []).append((verifier, verdict, report))
        return receipt

    def flush(self, challenge_id: int) -> list[Any]:
        """Reveals every commitment `attest` made for this challenge (mining past the commit deadline first
        unless every member has committed)."""
        pending = self._unrevealed.pop(challenge_id, [])
        if not pending:
            return []
        info = self.challenge_info(challenge_id)
        if info["committed"] != (1 << info["committeeSize"]) - 1:
            self.to_reveal(challenge_id)
        return [self.reveal(challenge_id, v, verdict, report) for v, verdict, report in pending]

    def vote(self, challenge_id: int, verdict: int, count: int | None = None) -> list[str]:
        """Draws the committee (if needed) and has its first `count` (default: quorum) members vote `verdict`."""
        info = self.challenge_info(challenge_id)
        committee = list(self.call("committee", challenge_id)) if info["drawn"] else self.draw(challenge_id)
        voters = committee[: self.p.quorum if count is None else count]
        for v in voters:
            self.commit_verdict(challenge_id, v, verdict)
        self.to_reveal(challenge_id)
        for v in voters:
            self.reveal(challenge_id, v, verdict)
        return voters

    def settle(self, challenge_id: int, sender: str | None = None) -> Any:
        self.flush(challenge_id)
        return self.send(self.reg.functions.settle(challenge_id), sender or self.accounts[0])

    def past_deadline(self, challenge_id: int) -> None:
        self.flush(challenge_id)
        deadline = self.challenge_info(challenge_id)["deadline"]
        self.chain.mine(max(0, deadline - self.chain.block_number + 1))

    def claim_info(self, claim_id: int) -> dict[str, Any]:
        c = self.call("getClaim", claim_id)
        keys = ("prover", "committedAt", "kind", "status", "openChallenges", "numSegments", "root", "nextSameWeights",
                "modelClaimId", "parentClaimId", "origin")
        return dict(zip(keys, c, strict=True))

    def challenge_info(self, challenge_id: int) -> dict[str, Any]:
        c = self.call("getChallenge", challenge_id)
        keys = ("challenger", "claimId", "status", "committeeSize", "namedCount", "drawn", "seedBlock", "deadline",
                "commitDeadline", "verdicts", "committed", "seed", "committee", "named")
        return dict(zip(keys, c, strict=True))

    def verifier_info(self, account: str) -> dict[str, Any]:
        v = self.call("getVerifier", account)
        return dict(zip(("stake", "id", "status", "since", "activeIndex"), v, strict=True))

    def pending(self, account: str) -> int:
        return int(self.call("pendingWithdrawal", account))

    def stake(self, account: str) -> int:
        return int(self.verifier_info(account)["stake"])

    def events(self, name: str, receipt: Any) -> list[Any]:
        return list(getattr(self.reg.events, name)().process_receipt(receipt))
