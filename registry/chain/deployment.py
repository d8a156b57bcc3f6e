"""Deployment records: where a registry lives on a chain, written by `ape run deploy` and read by the CLI
and the verifier daemon.

Records live in `$PROOFREG_HOME/deployments/<chainId>.json` (PROOFREG_HOME defaults to ~/.proofreg) unless
a path is given.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from registry.core.params import RegistryParams


class DeploymentError(RuntimeError):
    """A missing or unusable deployment record; the message says what to run."""


def proofreg_home() -> Path:
    return Path(os.environ.get("PROOFREG_HOME") or Path.home() / ".proofreg")


def default_record_path(chain_id: int) -> Path:
    return proofreg_home() / "deployments" / f"{chain_id}.json"


@dataclass(frozen=True)
class Deployment:
    address: str
    chain_id: int
    block_number: int
    tx_hash: str
    deployer: str
    network: str
    parameters: dict[str, int] = field(default_factory=dict)
    source_digest: str = ""

    @classmethod
    def from_receipt(cls, w3: Any, receipt: Any, params: RegistryParams, network: str) -> Deployment:
        """The record of a registry that the contract-creation `receipt` deployed with `params`."""
        return cls(address=str(receipt["contractAddress"]), chain_id=int(w3.eth.chain_id),
                   block_number=int(receipt["blockNumber"]), tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
                   deployer=str(receipt["from"]), network=network, parameters=params.to_dict())

    @property
    def params(self) -> RegistryParams:
        return RegistryParams.from_dict(self.parameters)

    def save(self, path: Path | None = None) -> Path:
        target = path or default_record_path(self.chain_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        tmp.replace(target)
        return target

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Deployment:
        try:
            return cls(
                address=str(data["address"]),
                chain_id=int(data["chain_id"]),
                block_number=int(data["block_number"]),
                tx_hash=str(data["tx_hash"]),
                deployer=str(data["deployer"]),
                network=str(data["network"]),
                parameters={k: int(v) for k, v in dict(data.get("parameters", {})).items()},
                source_digest=str(data.get("source_digest", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DeploymentError(f"malformed deployment record: {exc}") from None


def load_deployment(path: Path | None = None, *, chain_id: int | None = None) -> Deployment:
    if path is None:
        if chain_id is None:
            raise DeploymentError("no deployment record given: pass --deployment PATH")
        path = default_record_path(chain_id)
    if not path.exists():
        raise DeploymentError(
            f"no deployment record at {path}: run `ape run deploy --network <network>` (or `proofreg devnet`)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DeploymentError(f"unreadable deployment record {path}: {exc}") from None
    if not isinstance(data, dict):
        raise DeploymentError(f"malformed deployment record {path}: not a JSON object")
    record = Deployment.from_dict(data)
    if chain_id is not None and record.chain_id != chain_id:
        raise DeploymentError(
            f"deployment record {path} is for chain {record.chain_id}, but the node is chain {chain_id}: "
            "wrong network or wrong record"
        )
    return record
