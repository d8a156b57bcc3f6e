"""Connecting to a deployed registry over JSON-RPC with web3.py (runtime code never needs ape).

Every failure is a `ChainError` whose message is one line saying what to run or check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.exceptions import Web3Exception

from registry.chain.deployment import Deployment, DeploymentError, load_deployment
from registry.chain.signer import Signer
from registry.core.artifact import load_artifact
from registry.core.errors import describe_exception
from registry.core.params import RegistryParams


class ChainError(RuntimeError):
    """The chain or the registry on it is not usable; the message says why in one line."""


@dataclass
class RegistryHandle:
    w3: Web3
    contract: Contract
    deployment: Deployment | None

    @property
    def params(self) -> RegistryParams:
        return RegistryParams.from_tuple(self.contract.functions.parameters().call())

    def summary(self) -> dict[str, Any]:
        f = self.contract.functions
        return {
            "chainId": int(self.w3.eth.chain_id),
            "address": self.contract.address,
            "block": int(self.w3.eth.block_number),
            "claims": int(f.claimCount().call()),
            "challenges": int(f.challengeCount().call()),
            "verifiers": int(f.verifierCount().call()),
            "activeVerifiers": int(f.activeVerifierCount().call()),
            "parameters": self.params.to_dict(),
        }


class TransactionError(ChainError):
    """A transaction that would revert or did revert; the message names the registry error."""


#: Exceptions web3.py and JSON-RPC nodes raise for a reverting call or transaction. eth-tester's
#: TransactionFailed is matched by module and name (`_is_revert`) so that importing this module does not pull
#: in py-evm for users of real nodes.
_REVERTS: tuple[type[BaseException], ...] = (Web3Exception, ValueError)


def _is_revert(exc: BaseException) -> bool:
    cls = type(exc)
    from_tester = cls.__module__.startswith("eth_tester") and cls.__name__ == "TransactionFailed"
    return isinstance(exc, _REVERTS) or from_tester


def estimate_gas(fn: Any, params: dict[str, Any], name: str) -> int:
    """Gas estimate of a registry transaction; a revert becomes a TransactionError naming the custom error
    (so nothing is signed for a transaction that would fail)."""
    try:
        return int(fn.estimate_gas(params))
    except Exception as exc:
        if not _is_revert(exc):
            raise
        raise TransactionError(f"{name} would revert: {describe_exception(exc)}") from None


@dataclass
class RegistryClient(RegistryHandle):
    """Sends registry transactions: estimates gas, signs locally (or uses a node-managed account on the
    embedded chain), waits for the receipt, and reports reverts by their custom error."""

    sender: str = ""
    signer: Signer | None = None
    receipt_timeout: float = 120.0
    gas_margin: float = 1.2

    def call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self.contract.functions, name)(*args).call()
        except Exception as exc:
            if not _is_revert(exc):
                raise
            raise TransactionError(f"{name}: {describe_exception(exc)}") from None

    def transact(self, name: str, *args: Any, value: int = 0) -> Any:
        fn = getattr(self.contract.functions, name)(*args)
        params: dict[str, Any] = {"from": self.sender, "value": value}
        estimate = estimate_gas(fn, params, name)
        limit = int(self.w3.eth.get_block("latest")["gasLimit"])
        params["gas"] = min(int(estimate * self.gas_margin) + 10_000, limit)
        try:
            if self.signer is None:
                tx_hash = fn.transact(params)
            else:
                params["nonce"] = self.w3.eth.get_transaction_count(Web3.to_checksum_address(self.sender), "pending")
                params["chainId"] = int(self.w3.eth.chain_id)
                signed = self.signer.account.sign_transaction(fn.build_transaction(params))
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.receipt_timeout)
        except Exception as exc:
            if not _is_revert(exc):
                raise
            raise TransactionError(f"{name} failed: {describe_exception(exc)}") from None
        if receipt["status"] != 1:
            raise TransactionError(f"{name} reverted in transaction {Web3.to_hex(tx_hash)}")
        return receipt


def connect_rpc(rpc_url: str, deployment_path: Path | None = None, *, timeout: float = 10.0) -> RegistryHandle:
    """Connects to `rpc_url` and the registry named by the deployment record (default: the chain's record)."""
    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
    try:
        chain_id = int(w3.eth.chain_id)
    except Exception as exc:  # noqa: BLE001 - any transport failure means "unreachable"
        raise ChainError(f"cannot reach an Ethereum JSON-RPC node at {rpc_url}: {type(exc).__name__}") from None
    try:
        record = load_deployment(deployment_path, chain_id=chain_id)
    except DeploymentError as exc:
        raise ChainError(str(exc)) from None
    address = Web3.to_checksum_address(record.address)
    if not w3.eth.get_code(address):
        raise ChainError(
            f"no contract at {address} on chain {chain_id}: the record is stale (node restarted?); deploy again"
        )
    contract = w3.eth.contract(address=address, abi=load_artifact().abi)
    return RegistryHandle(w3, contract, record)
