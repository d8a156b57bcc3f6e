"""`ape compile` and `ape run deploy` (scripts/deploy.py), run as subprocesses from the repository root.

Every ape process runs with outbound HTTP(S) pointed at a closed local port, so a test passes only if
nothing tries to download (a compiler, a solc release list, ...).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from eth_typing import HexStr
from web3 import Web3

from registry.chain.deployment import load_deployment
from registry.chain.toolchain import COMPILER_SETTINGS, SOLC_VERSION
from registry.core.artifact import ARTIFACT_PATH, load_artifact
from registry.core.params import RegistryParams, preset
from tests.nodes import HardhatNode, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
APE = Path(sys.executable).parent / "ape"
TEST_ACCOUNT_0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # m/44'/60'/0'/0/0 of the test mnemonic
APE_TEST_CHAIN_ID = 1337
HARDHAT_CHAIN_ID = 31337
OFFLINE_ENV = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
               "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
               "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def run_ape(*args: str, home: Path, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **OFFLINE_ENV, "PROOFREG_HOME": str(home), "NO_COLOR": "1", **(env or {})}
    return subprocess.run([str(APE), *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def strip_metadata(code: str) -> tuple[bytes, bytes]:
    """(code, CBOR metadata trailer): solc appends CBOR metadata whose length is in the last two bytes."""
    raw = bytes.fromhex(code.removeprefix("0x"))
    n = int.from_bytes(raw[-2:], "big")
    return raw[: -2 - n], raw[-2 - n:]


def deploy(*args: str, home: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return run_ape("run", "deploy", *args, home=home, **kwargs)


@pytest.fixture(scope="module")
def ape_available() -> None:
    if not APE.exists():
        pytest.fail(f"{APE} not found: install the dev extras (`make venv`)", pytrace=False)


def copy_project(dst: Path, *, with_scripts: bool = False) -> Path:
    """The parts of the repository that ape compiles, in a fresh folder (no .build cache)."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "ape-config.yaml", dst / "ape-config.yaml")
    shutil.copytree(REPO_ROOT / "contracts", dst / "contracts")
    if with_scripts:
        (dst / "scripts").mkdir()
        shutil.copy(REPO_ROOT / "scripts" / "deploy.py", dst / "scripts" / "deploy.py")
    return dst


def test_ape_compile_offline_matches_the_shipped_artifact(ape_available: None, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    proc = run_ape("compile", home=tmp_path / "home", cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((project / ".build" / "__local__.json").read_text())
    ape_type = manifest["contractTypes"]["ProofRegistry"]
    shipped = json.loads(ARTIFACT_PATH.read_text())

    # Same compiler and settings as registry/chain/toolchain.py ...
    (compiler,) = manifest["compilers"]
    assert compiler["version"].startswith(SOLC_VERSION + "+")
    assert compiler["settings"]["optimizer"] == COMPILER_SETTINGS["optimizer"]
    assert compiler["settings"]["evmVersion"] == COMPILER_SETTINGS["evmVersion"]
    # ... hence the same ABI and the same runtime code. Only the metadata trailer differs: the artifact is
    # built with metadata.bytecodeHash "none" (CBOR {solc}), which ape-solidity cannot set, so ape's code
    # ends in CBOR {ipfs: <metadata hash>, solc}. (The creation code differs too, since it embeds the
    # runtime's length.)
    key = lambda item: json.dumps(item, sort_keys=True)  # noqa: E731
    assert sorted(map(key, ape_type["abi"])) == sorted(map(key, shipped["abi"]))
    ape_code, ape_trailer = strip_metadata(ape_type["runtimeBytecode"]["bytecode"])
    shipped_code, shipped_trailer = strip_metadata(shipped["deployedBytecode"])
    assert ape_code == shipped_code
    assert b"ipfs" in ape_trailer and b"ipfs" not in shipped_trailer and b"solc" in shipped_trailer


def test_deploy_on_ape_local_test_network_writes_the_record(ape_available: None, tmp_path: Path) -> None:
    out = tmp_path / "records" / "local.json"
    proc = deploy("--network", "ethereum:local:test", "--preset", "dev", "--challenge-window", "321",
                  "--training-bond", "0.2 ether", "--out", str(out), home=tmp_path / "home")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    record = load_deployment(out, chain_id=APE_TEST_CHAIN_ID)
    expected = preset("dev").with_overrides(challenge_window=321, training_bond=2 * 10**17)
    assert record.params == expected  # deploy.py also reads parameters() back on-chain before writing
    assert record.network == "ethereum:local:test"
    assert record.deployer == TEST_ACCOUNT_0
    assert Web3.is_checksum_address(record.address)
    assert record.tx_hash.startswith("0x") and len(record.tx_hash) == 66
    assert record.block_number >= 1
    assert record.source_digest == load_artifact().source_digest
    assert record.address in proc.stdout and str(out) in proc.stdout
    assert not (tmp_path / "home" / "deployments").exists()  # --out replaces the default location


def test_invalid_parameter_is_one_clear_line(ape_available: None, tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = deploy("--network", "ethereum:local:test", "--quorum", "1", "--committee-size", "3", home=home)
    assert proc.returncode != 0
    assert error_lines(proc) == [
        "Error: invalid parameter quorum = 1 (--quorum): "
        "the registry constructor reverted with InvalidParameter(name=quorum)"
    ]
    assert not (home / "deployments").exists()


def test_malformed_option_value_is_rejected_before_connecting(ape_available: None, tmp_path: Path) -> None:
    proc = deploy("--network", "ethereum:local:test", "--samples", "-1", home=tmp_path)
    assert proc.returncode != 0
    assert "Invalid value for '--samples'" in proc.stderr


def test_hardhat_network_without_a_node_is_one_clear_line(ape_available: None, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    proc = deploy("--network", "ethereum:local:hardhat",
                  "--provider-settings", json.dumps({"host": f"http://127.0.0.1:{port}"}), home=tmp_path)
    assert proc.returncode != 0
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"Error: cannot reach a Hardhat node at http://127.0.0.1:{port}")
    assert f"npx hardhat node --hostname 127.0.0.1 --port {port}" in lines[0]


def test_missing_compiler_says_make_solc(ape_available: None, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project", with_scripts=True)  # no .build: ape must compile
    empty = tmp_path / "no-solc"
    empty.mkdir()
    proc = deploy("--network", "ethereum:local:test", home=tmp_path / "home", cwd=project,
                  env={"SOLCX_BINARY_PATH": str(empty)})
    assert proc.returncode != 0
    lines = error_lines(proc)
    assert len(lines) == 1 and "run `make solc`" in lines[0], proc.stderr


@pytest.mark.hardhat
def test_deploy_to_hardhat_node_and_read_it_with_web3(ape_available: None, hardhat_node: HardhatNode,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("PROOFREG_HOME", str(home))
    settings = json.dumps({"host": hardhat_node.url})
    proc = deploy("--network", "ethereum:local:hardhat", "--provider-settings", settings,
                  "--preset", "dev", "--samples", "5", home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    w3 = Web3(Web3.HTTPProvider(hardhat_node.url))
    assert w3.eth.chain_id == HARDHAT_CHAIN_ID
    record = load_deployment(chain_id=w3.eth.chain_id)  # default path under PROOFREG_HOME ...
    assert record.network == "ethereum:local:hardhat"
    assert str(home / "deployments" / f"{HARDHAT_CHAIN_ID}.json") in proc.stdout

    artifact = load_artifact()
    address = Web3.to_checksum_address(record.address)
    registry = w3.eth.contract(address=address, abi=artifact.abi)
    onchain = RegistryParams.from_tuple(registry.functions.parameters().call())
    assert onchain == record.params == preset("dev").with_overrides(samples=5)

    receipt = w3.eth.get_transaction_receipt(HexStr(record.tx_hash))
    assert receipt["contractAddress"] == record.address
    assert receipt["blockNumber"] == record.block_number
    assert receipt["from"] == record.deployer == TEST_ACCOUNT_0
    # Same code as the artifact up to the immutables (filled in by the constructor) and the metadata trailer.
    code, _ = strip_metadata(w3.eth.get_code(address).hex())
    assert len(code) == len(strip_metadata(artifact.deployed_bytecode)[0])


@pytest.mark.hardhat
def test_invalid_parameter_on_hardhat_is_decoded(ape_available: None, hardhat_node: HardhatNode,
                                                 tmp_path: Path) -> None:
    # Hardhat returns the raw revert data (eth-tester reduces it to a string): both must read the same.
    settings = json.dumps({"host": hardhat_node.url})
    proc = deploy("--network", "ethereum:local:hardhat", "--provider-settings", settings,
                  "--silent-slash-bps", "10001", home=tmp_path)
    assert proc.returncode != 0
    assert error_lines(proc) == [
        "Error: invalid parameter silent_slash_bps = 10001 (--silent-slash-bps): "
        "the registry constructor reverted with InvalidParameter(name=silentSlashBps)"
    ]
