"""On-chain verification: the Solidity verifier ezkl renders for a circuit, compiled with the project's own solc.

`ezkl.create_evm_verifier` (async in ezkl 23) writes a `Halo2Verifier` contract with
`verifyProof(bytes proof, uint256[] instances) returns (bool)`, then tries to download a solc release list for
its ABI step, which fails offline; the written source is what we need, so that failure is ignored when the
file is complete. The source is compiled with `registry.chain.toolchain`'s solc (native, or npm solc offline), with
the optimizer tuned for size (runs = 1), because verifiers are large: EIP-170 caps deployed code at 24,576 bytes.

The verifying key is baked into the contract (`reusable=False`), so one deployed verifier serves exactly one
circuit (one vk): the registry ties an inference claim's `vkHash` to a verifier by a registration that checks
the verifier against the vk (see `ProofRegistry.registerZkVerifier`).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.zk.pipeline import ZkError, call_ezkl

EIP170_LIMIT = 24_576
VERIFIER_CONTRACT = "Halo2Verifier"
VERIFIER_SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 1},
    "evmVersion": "shanghai",
    "metadata": {"bytecodeHash": "none"},
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}


def render_verifier(vk_path: str | Path, settings_path: str | Path, srs_path: str | Path, sol_path: str | Path) -> Path:
    """Writes the Solidity verifier of the circuit with this vk and settings to `sol_path`."""
    import ezkl

    sol = Path(sol_path)
    abi = sol.with_suffix(".abi.json")

    async def run() -> Any:
        return await ezkl.create_evm_verifier(vk_path=str(vk_path), settings_path=str(settings_path),
                                              sol_code_path=str(sol), abi_path=str(abi), srs_path=str(srs_path),
                                              reusable=False)

    try:
        call_ezkl("create_evm_verifier", asyncio.run, run())
    except ZkError as exc:
        # ezkl 23 renders the source, then fails fetching a solc list for the ABI step (offline): keep the source
        text = sol.read_text() if sol.is_file() else ""
        if "function verifyProof(" not in text or not text.rstrip().endswith("}"):
            raise ZkError(f"the Solidity verifier was not written: {exc}") from None
    return sol


@dataclass(frozen=True)
class CompiledVerifier:
    abi: list[dict[str, Any]]
    bytecode: bytes
    deployed_bytecode: bytes

    @property
    def size(self) -> int:
        return len(self.deployed_bytecode)

    @property
    def fits_eip170(self) -> bool:
        return self.size <= EIP170_LIMIT


def compile_verifier(sol_path: str | Path, timeout: float = 900.0) -> CompiledVerifier:
    """Compiles the verifier with the project's solc (`make solc` installs it; offline it runs npm solc)."""
    from registry.chain.toolchain import REPO_ROOT, solc_path

    binary = solc_path()
    if not binary.exists():
        raise ZkError("no Solidity compiler: run `make solc` (python -m registry.chain.toolchain setup-solc)")
    request = {"language": "Solidity", "sources": {"Verifier.sol": {"content": Path(sol_path).read_text()}},
               "settings": VERIFIER_SETTINGS}
    try:
        proc = subprocess.run([str(binary), "--standard-json", "--base-path", str(REPO_ROOT)],
                              input=json.dumps(request), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ZkError(f"solc failed: {exc}") from None
    if proc.returncode != 0:
        raise ZkError(f"solc failed: {(proc.stderr or proc.stdout).strip()[:300]}")
    try:
        output = json.loads(proc.stdout)
    except ValueError as exc:
        raise ZkError(f"solc printed no JSON: {exc}") from None
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise ZkError("verifier compile errors: " + "; ".join(e["formattedMessage"][:200] for e in errors[:3]))
    try:
        c = output["contracts"]["Verifier.sol"][VERIFIER_CONTRACT]
    except KeyError:
        raise ZkError(f"solc output has no {VERIFIER_CONTRACT}") from None
    return CompiledVerifier(c["abi"], bytes.fromhex(c["evm"]["bytecode"]["object"]),
                            bytes.fromhex(c["evm"]["deployedBytecode"]["object"]))


def deploy_verifier(w3: Any, sender: str, compiled: CompiledVerifier) -> tuple[str, int]:
    """Deploys the verifier; returns its address and the deployment gas."""
    factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
    tx = factory.constructor().transact({"from": sender})
    receipt = w3.eth.wait_for_transaction_receipt(tx)
    if receipt["status"] != 1 or not receipt["contractAddress"]:
        raise ZkError("verifier deployment failed (over the EIP-170 size limit?)")
    return str(receipt["contractAddress"]), int(receipt["gasUsed"])


VERIFIER_SOL, VERIFIER_BIN = "Verifier.sol", "verifier.bin"


def code_hash(runtime: bytes) -> bytes:
    """EXTCODEHASH of a contract with this runtime code: the vkHash of an on-chain-verifiable claim."""
    from registry.core.hashing import keccak256

    return keccak256(runtime)


def verifier_for(vk_path: str | Path, settings_path: str | Path, srs_path: str | Path,
                 workdir: str | Path) -> tuple[Path, CompiledVerifier]:
    """Renders and compiles the verifier of (vk, settings, SRS) in `workdir`."""
    sol = render_verifier(vk_path, settings_path, srs_path, Path(workdir) / VERIFIER_SOL)
    return sol, compile_verifier(sol)


def add_evm_verifier(bundle_dir: str | Path, srs_path: str | Path | None = None) -> dict[str, Any]:
    """Adds `Verifier.sol` and `verifier.bin` (creation code) to a bundle and records the verifier's code hash in
    bundle.json (`evm.codeHash`), which an on-chain-verifiable claim commits as its vkHash. Returns `evm`."""
    from registry.core.hashing import sha256, to_hex
    from registry.zk.bundle import BUNDLE_JSON, DEV_SRS_FILE, FILES, load_local_bundle

    b = Path(bundle_dir)
    body, _ = load_local_bundle(b)
    if srs_path is None:
        if not body.get("developmentOnly"):
            raise ZkError("give the SRS file the bundle was proved with (--srs)")
        srs_path = b / DEV_SRS_FILE
    sol, compiled = verifier_for(b / FILES["vk"], b / FILES["settings"], srs_path, b)
    (b / VERIFIER_BIN).write_bytes(compiled.bytecode)
    evm = {"codeHash": to_hex(code_hash(compiled.deployed_bytecode)), "runtimeBytes": compiled.size,
           "fitsEip170": compiled.fits_eip170, "eip170Limit": EIP170_LIMIT, "solcSettings": VERIFIER_SETTINGS,
           "contract": VERIFIER_CONTRACT}
    body["evm"] = evm
    body["files"] = {**body["files"], VERIFIER_SOL: to_hex(sha256(sol.read_bytes())),
                     VERIFIER_BIN: to_hex(sha256(compiled.bytecode))}
    (b / BUNDLE_JSON).write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
    return evm
