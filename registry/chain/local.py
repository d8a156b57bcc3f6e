"""The embedded chain: an in-process EVM (py-evm through eth-tester) with the registry deployed.

This is the default for single-process use (demos, tests, `proofreg` without `--rpc`): no daemon, real
EVM semantics, blocks mined on demand.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from eth_tester import EthereumTester, PyEVMBackend
from web3 import EthereumTesterProvider, Web3

from registry.core.artifact import ARTIFACT_PATH, load_artifact
from registry.core.params import RegistryParams, preset


def evm_version() -> str:
    """The EVM target the shipped artifact was compiled for (paris or later: the draw's seed relies on the
    post-merge header, whose `mixHash` is `prevrandao`); the embedded EVM and hardhat.config.js use it too."""
    return str(json.loads(ARTIFACT_PATH.read_text())["compiler"]["settings"]["evmVersion"])


def vm_configuration() -> tuple[tuple[int, Any], ...]:
    """py-evm's fork schedule for the artifact's EVM target, from genesis."""
    from eth.vm.forks import CancunVM, ParisVM, PragueVM, ShanghaiVM

    forks = {"paris": ParisVM, "shanghai": ShanghaiVM, "cancun": CancunVM, "prague": PragueVM}
    target = evm_version()
    if target not in forks:
        raise ValueError(f"the artifact targets EVM {target!r}; the embedded chain supports {', '.join(forks)}")
    return ((0, forks[target]),)


def deploy_registry(w3: Web3, params: RegistryParams, sender: str) -> tuple[Any, Any]:
    """Deploys the shipped artifact; returns the contract and the deployment receipt."""
    artifact = load_artifact()
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx = factory.constructor(params.as_tuple()).transact({"from": sender})
    receipt = w3.eth.wait_for_transaction_receipt(tx)
    return w3.eth.contract(address=receipt["contractAddress"], abi=artifact.abi), receipt


class _LockedTesterProvider(EthereumTesterProvider):
    """eth-tester is not thread-safe: every request over every connection to one chain holds its lock."""

    def __init__(self, tester: EthereumTester, lock: threading.RLock) -> None:
        super().__init__(tester)
        self._chain_lock = lock

    def make_request(self, method: Any, params: Any) -> Any:
        with self._chain_lock:
            return super().make_request(method, params)


@dataclass
class EmbeddedChain:
    params: RegistryParams = field(default_factory=lambda: preset("dev"))

    def __post_init__(self) -> None:
        self.tester = EthereumTester(PyEVMBackend(vm_configuration=vm_configuration()))
        self.lock = threading.RLock()
        self.w3 = self.connect()
        self.accounts: list[str] = list(self.w3.eth.accounts)
        self.registry, self.deploy_receipt = deploy_registry(self.w3, self.params, self.accounts[0])

    def connect(self) -> Web3:
        """Another connection to this chain, safe to use from its own thread (verifier nodes in the main job)."""
        return Web3(_LockedTesterProvider(self.tester, self.lock))

    def mine(self, blocks: int = 1) -> None:
        if blocks > 0:
            with self.lock:
                self.tester.mine_blocks(blocks)

    @property
    def block_number(self) -> int:
        return int(self.w3.eth.block_number)

    def snapshot(self) -> int:
        return int(self.tester.take_snapshot())

    def revert(self, snapshot_id: int) -> None:
        self.tester.revert_to_snapshot(snapshot_id)
