"""Following the registry's events from a persisted cursor, `confirmations` blocks behind the head.

Each `poll()` first checks that the block at the cursor still has the hash recorded when it was scanned; if
not (a reorg deeper than the confirmation depth), it walks back through the recorded hashes to the fork
point, tells the state to forget what it saw above it, and scans again from there. Then it scans at most
`chunk` blocks with one `eth_getLogs`, hands every decoded event to the caller, and only then advances the
cursor, so a crash in between re-delivers events (handlers are idempotent) and never skips one. After
downtime the same loop backfills, `chunk` blocks per poll.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from web3 import Web3
from web3.contract import Contract

from verifier.db import StateDB

#: The events the daemon acts on.
EVENTS = ("TrainingClaimCommitted", "InferenceClaimCommitted", "ChallengeOpened", "ChallengeReseeded",
          "CommitteeDrawn", "ChallengeSettled")


@dataclass(frozen=True)
class Event:
    name: str
    args: dict[str, Any]
    block: int
    tx_hash: str
    log_index: int


class Follower:
    def __init__(self, w3: Web3, contract: Contract, db: StateDB, *, start_block: int, confirmations: int,
                 chunk: int = 2000, on_reorg: Callable[[int, int], None] | None = None) -> None:
        self.w3, self.contract, self.db = w3, contract, db
        self.start_block = max(0, start_block)
        self.confirmations = max(0, confirmations)
        self.chunk = max(1, chunk)
        self.on_reorg = on_reorg
        self.head = 0
        self._by_topic = {}
        for name in EVENTS:
            event = getattr(contract.events, name)
            self._by_topic[bytes(Web3.to_bytes(hexstr=event.topic))] = event()

    @property
    def cursor(self) -> int:
        """Last block scanned (start_block - 1 before the first scan)."""
        c = self.db.cursor()
        return self.start_block - 1 if c is None else c

    def _hash(self, number: int) -> str | None:
        """The chain's hash of block `number`, None past the head (a reorg to a shorter chain)."""
        if number > self.head:
            return None
        return Web3.to_hex(self.w3.eth.get_block(number)["hash"])

    def check_reorg(self) -> int | None:
        """The fork point if the recorded cursor block was replaced, after rewinding the state; else None."""
        cursor = self.db.cursor()
        if cursor is None:
            return None
        recorded = self.db.block_hash(cursor)
        if recorded is not None and self._hash(cursor) == recorded:
            return None
        fork = self.start_block - 1
        for number, block_hash in self.db.recent_blocks():
            if self._hash(number) == block_hash:
                fork = number
                break
        reset = self.db.rewind(fork)
        if self.on_reorg is not None:
            self.on_reorg(fork, reset)
        return fork

    def poll(self, handle: Callable[[Event], None]) -> int:
        """One step: reorg check, then up to `chunk` confirmed blocks. Returns how many blocks were scanned
        (0 when caught up)."""
        self.head = int(self.w3.eth.block_number)
        self.check_reorg()
        start = self.cursor + 1
        safe = self.head - self.confirmations
        if safe < start:
            return 0
        end = min(safe, start + self.chunk - 1)
        end_hash = self._hash(end)
        logs = self.w3.eth.get_logs({"address": self.contract.address, "fromBlock": start, "toBlock": end})
        # The chain may switch forks while we read: keep the logs only if every block they come from, and the
        # end block, still have the hashes we saw; otherwise try again next poll.
        for number, block_hash in {(int(log["blockNumber"]), Web3.to_hex(log["blockHash"])) for log in logs}:
            if self._hash(number) != block_hash:
                return 0
        if end_hash is None or self._hash(end) != end_hash:
            return 0
        events = []
        for log in logs:
            topics = log.get("topics") or []
            decoder = self._by_topic.get(bytes(topics[0])) if topics else None
            if decoder is None:
                continue
            decoded = decoder.process_log(log)
            events.append(Event(str(decoded["event"]), dict(decoded["args"]), int(log["blockNumber"]),
                                Web3.to_hex(log["transactionHash"]), int(log["logIndex"])))
        events.sort(key=lambda e: (e.block, e.log_index))
        for event in events:
            handle(event)
        self.db.advance(end, end_hash)
        return end - start + 1

    @property
    def lag(self) -> int:
        """Blocks between the head and the cursor (confirmations included)."""
        return max(0, self.head - self.cursor)
