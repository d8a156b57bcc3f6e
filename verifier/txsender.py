"""The transport of the attest stage (follow -> schedule -> audit -> **attest**): transactions signed
locally and written to the state file before they are broadcast, re-broadcast with the same bytes when
dropped, abandoned only after re-checking the chain."""

from __future__ import annotations

import time
from typing import Any

from web3 import Web3
from web3.contract import Contract
from web3.exceptions import TransactionNotFound

from registry.chain.rpc import TransactionError, _is_revert, estimate_gas
from registry.chain.signer import Signer
from registry.core.errors import describe_exception
from verifier.db import StateDB
from verifier.jsonlog import JsonLog
from verifier.metrics import Metrics


class TxSender:
    """Signs locally, writes the signed bytes to the state file, then broadcasts; finds what happened to
    pending transactions after a timeout or a restart (mined, dropped and re-broadcast, or replaced)."""

    def __init__(self, w3: Web3, contract: Contract, signer: Signer, db: StateDB, metrics: Metrics, log: JsonLog,
                 *, receipt_timeout: float, resend_after: float, gas_margin: float = 1.3) -> None:
        self.w3, self.contract, self.signer, self.db = w3, contract, signer, db
        self.metrics, self.log = metrics, log
        self.receipt_timeout, self.resend_after, self.gas_margin = receipt_timeout, resend_after, gas_margin
        self.address = Web3.to_checksum_address(signer.address)
        self._chain_id: int | None = None

    def pending_for(self, challenge_id: int, purpose: str | None = None) -> bool:
        """Whether a transaction of ours for this challenge (of this purpose, if given) is still pending."""
        return any(t.challenge_id == challenge_id and purpose in (None, t.purpose) for t in self.db.pending_txs())

    def send(self, purpose: str, challenge_id: int | None, fn_name: str, *args: Any, value: int = 0) -> Any | None:
        """Estimates (a revert raises TransactionError before anything is signed), signs, records, broadcasts
        and waits up to `receipt_timeout`; returns the receipt, or None if still pending (then `recover`
        follows it up)."""
        fn = getattr(self.contract.functions, fn_name)(*args)
        params: dict[str, Any] = {"from": self.address, "value": value}
        estimate = estimate_gas(fn, params, fn_name)
        if self._chain_id is None:
            self._chain_id = int(self.w3.eth.chain_id)
        nonce = int(self.w3.eth.get_transaction_count(self.address, "pending"))
        recorded = [t.nonce for t in self.db.pending_txs()]
        if recorded:
            nonce = max(nonce, max(recorded) + 1)
        params.update(gas=int(estimate * self.gas_margin) + 10_000, nonce=nonce, chainId=self._chain_id)
        tx = fn.build_transaction(params)
        signed = self.signer.account.sign_transaction(tx)
        tx_hash = Web3.to_hex(signed.hash)
        raw = bytes(signed.raw_transaction)
        self.db.add_tx(tx_hash, purpose, challenge_id, nonce, raw)  # written before it leaves the process
        self._broadcast(tx_hash, raw)
        self.metrics.inc("tx_sent_total", purpose=purpose)
        self.log("tx_sent", purpose=purpose, challenge=challenge_id, tx=tx_hash, nonce=nonce)
        return self._wait(tx_hash, purpose, challenge_id, self.receipt_timeout)

    def _broadcast(self, tx_hash: str, raw: bytes) -> None:
        try:
            self.w3.eth.send_raw_transaction(raw)
        except Exception as exc:
            text = str(exc).lower()
            if "already known" in text or "known transaction" in text or "already imported" in text:
                return
            if "nonce too low" in text or "nonce has already been used" in text:
                return  # mined already, or replaced: `recover` finds out which
            if _is_revert(exc):
                self.db.set_tx_state(tx_hash, "failed")
                raise TransactionError(f"transaction {tx_hash} rejected: {describe_exception(exc)}") from None
            raise

    def _receipt(self, tx_hash: str) -> Any | None:
        try:
            return self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            return None

    def _wait(self, tx_hash: str, purpose: str, challenge_id: int | None, timeout: float) -> Any | None:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            receipt = self._receipt(tx_hash)
            if receipt is not None:
                ok = int(receipt["status"]) == 1
                self.db.set_tx_state(tx_hash, "mined" if ok else "failed")
                if not ok:
                    self.metrics.inc("tx_failed_total", purpose=purpose)
                    self.log("tx_failed", level="warning", purpose=purpose, challenge=challenge_id, tx=tx_hash)
                return receipt
            if time.monotonic() >= deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def recover(self) -> None:
        """Settles the fate of every pending transaction: mined (or failed), still in the node's pool,
        dropped (re-broadcast, same bytes), or its nonce used by another transaction (abandoned)."""
        for tx in self.db.pending_txs():
            receipt = self._receipt(tx.hash)
            if receipt is not None:
                self._wait(tx.hash, tx.purpose, tx.challenge_id, 0)
                continue
            latest_nonce = int(self.w3.eth.get_transaction_count(self.address, "latest"))
            if latest_nonce > tx.nonce:
                self.db.set_tx_state(tx.hash, "replaced")
                self.log("tx_replaced", level="warning", purpose=tx.purpose, challenge=tx.challenge_id, tx=tx.hash)
                continue
            try:
                known = self.w3.eth.get_transaction(tx.hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                known = None
            if known is None or time.time() - tx.created > self.resend_after:
                self.log("tx_resent", level="warning", purpose=tx.purpose, challenge=tx.challenge_id, tx=tx.hash,
                         dropped=known is None)
                self.metrics.inc("tx_resent_total", purpose=tx.purpose)
                try:
                    self._broadcast(tx.hash, tx.raw)
                except TransactionError as exc:
                    self.log("tx_rejected", level="warning", tx=tx.hash, error=str(exc))
                    continue
                self._wait(tx.hash, tx.purpose, tx.challenge_id, min(self.receipt_timeout, 5.0))
