"""One EVM target (paris or later) for the artifact, ape, Hardhat and the embedded EVM (issue 14)."""

from __future__ import annotations

import re
from pathlib import Path

from registry.chain.local import EmbeddedChain, evm_version
from registry.chain.toolchain import COMPILER_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
POST_MERGE = ("paris", "shanghai", "cancun", "prague")


def test_artifact_ape_and_hardhat_agree_on_the_evm_target() -> None:
    target = evm_version()
    assert target in POST_MERGE  # the seed's block hash covers prevrandao from paris on
    assert COMPILER_SETTINGS["evmVersion"] == target
    ape = re.search(r"^\s*evm_version:\s*(\w+)", (ROOT / "ape-config.yaml").read_text(), re.M)
    hardhat = re.search(r'hardfork:\s*"(\w+)"', (ROOT / "hardhat.config.js").read_text())
    assert ape is not None and ape.group(1) == target
    assert hardhat is not None and hardhat.group(1) == target


def test_embedded_evm_runs_the_artifact_target() -> None:
    chain = EmbeddedChain()
    vm = chain.tester.backend.chain.get_vm()
    assert vm.fork == evm_version()
