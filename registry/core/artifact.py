"""The compiled ProofRegistry artifact shipped inside the package, so running needs no compiler."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

CONTRACT_NAME = "ProofRegistry"
ARTIFACT_PATH = Path(__file__).resolve().parents[1] / "artifacts" / f"{CONTRACT_NAME}.json"


@dataclass(frozen=True)
class ContractArtifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    source_digest: str


@lru_cache(maxsize=1)
def load_artifact(path: Path = ARTIFACT_PATH) -> ContractArtifact:
    data = json.loads(path.read_text())
    return ContractArtifact(
        name=data["contractName"],
        abi=data["abi"],
        bytecode=data["bytecode"],
        deployed_bytecode=data["deployedBytecode"],
        source_digest=data["sourceDigest"],
    )
