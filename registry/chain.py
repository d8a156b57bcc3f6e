"""Connecting to a deployed registry over JSON-RPC with web3.py (runtime code never needs ape).

Every failure is a `ChainError` whose message is one line saying what to run or check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web3 import HTTPProvider, Web3
from web3.contract import Contract

from registry.artifact import load_artifact
from registry.deployment import Deployment, DeploymentError, load_deployment
from registry.params import RegistryParams


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
