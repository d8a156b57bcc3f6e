"""Offline Solidity toolchain: make `ape compile` and py-solc-x work without internet, build the artifact.

py-solc-x and ape-solidity look for an executable `solc-v<version>` in py-solc-x's install folder. With
internet we install the native binary there; without it we install a small launcher that runs the npm
`solc` package (WebAssembly) through `scripts/solcjs-shim.js`. Both produce the same bytecode for the same
compiler version and settings, so the shipped artifact does not depend on which one built it.

    python -m registry.chain.toolchain setup-solc       # idempotent
    python -m registry.chain.toolchain build-artifact   # rewrites registry/artifacts/ProofRegistry.json
    python -m registry.chain.toolchain check-artifact   # exit 1 when the artifact is stale
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from registry.core.artifact import ARTIFACT_PATH, CONTRACT_NAME

SOLC_VERSION = "0.8.28"
REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = REPO_ROOT / "contracts"
SHIM = REPO_ROOT / "scripts" / "solcjs-shim.js"

#: Compiler settings of the shipped artifact; ape-config.yaml mirrors them for `ape compile`.
COMPILER_SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "shanghai",
    "metadata": {"bytecodeHash": "none"},
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}


class ToolchainError(RuntimeError):
    """A missing or broken compiler; the message says what to run."""


def solcx_folder() -> Path:
    env = os.environ.get("SOLCX_BINARY_PATH")
    folder = Path(env) if env else Path.home() / ".solcx"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def solc_path() -> Path:
    return solcx_folder() / f"solc-v{SOLC_VERSION}"


def _reports_version(binary: Path) -> bool:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and f"Version: {SOLC_VERSION}" in out.stdout


def _launcher_text() -> str:
    node = shutil.which("node") or "node"
    header = f"# proof-registry: offline solc {SOLC_VERSION} (npm solc via {SHIM.name})"
    return f'#!/bin/sh\n{header}\nexec "{node}" "{SHIM}" "$@"\n'


def _try_native() -> bool:
    """Native solc through py-solc-x; needs internet, fails fast without it."""
    try:
        import solcx

        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(10)
        try:
            solcx.install_solc(SOLC_VERSION, show_progress=False)
        finally:
            socket.setdefaulttimeout(old)
    except Exception:  # noqa: BLE001 - any failure means "no native compiler here"
        return False
    return _reports_version(solc_path())


def setup_solc(*, allow_native: bool = True) -> str:
    """Make `solc-v0.8.28` runnable for py-solc-x and ape; returns which kind is installed."""
    target = solc_path()
    if target.exists():
        text = target.read_text(errors="replace") if target.stat().st_size < 4096 else ""
        ours = "solcjs-shim" in text
        if not ours and _reports_version(target):
            return "native (already installed)"
        if ours and text == _launcher_text() and _reports_version(target):
            return "solcjs (already installed)"
        if ours:
            # another checkout's launcher (one home, several clones), or one that no longer runs: py-solc-x
            # would take the file for an installed native compiler, so it goes before anything is tried
            target.unlink()
    if allow_native and _try_native():
        return "native"
    if not (REPO_ROOT / "node_modules" / "solc").is_dir():
        raise ToolchainError("npm solc is missing: run `npm ci` in the repository first")
    if shutil.which("node") is None:
        raise ToolchainError("node is not on PATH: install Node.js 20 (the offline compiler runs on it)")
    target.write_text(_launcher_text())
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    if not _reports_version(target):
        raise ToolchainError(f"{target} does not run: check `node {SHIM} --version`")
    return "solcjs"


def source_files() -> dict[str, str]:
    """Every Solidity source under contracts/, keyed by its path relative to the repository."""
    files = sorted(CONTRACTS_DIR.rglob("*.sol"))
    return {str(f.relative_to(REPO_ROOT)): f.read_text() for f in files}


def source_digest(sources: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(sources):
        h.update(name.encode() + b"\0" + hashlib.sha256(sources[name].encode()).digest())
    return h.hexdigest()


def compile_sources(sources: dict[str, str]) -> dict[str, Any]:
    binary = solc_path()
    if not binary.exists():
        raise ToolchainError("no Solidity compiler: run `make solc` (python -m registry.chain.toolchain setup-solc)")
    request = {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sources.items()},
        "settings": COMPILER_SETTINGS,
    }
    proc = subprocess.run(
        [str(binary), "--standard-json", "--base-path", str(REPO_ROOT)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise ToolchainError(f"solc failed: {proc.stderr.strip() or proc.stdout.strip()}")
    output: dict[str, Any] = json.loads(proc.stdout)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise ToolchainError("compile errors:\n" + "\n".join(e["formattedMessage"] for e in errors))
    return output


def build_artifact_data() -> dict[str, Any]:
    sources = source_files()
    output = compile_sources(sources)
    contract = output["contracts"][f"contracts/{CONTRACT_NAME}.sol"][CONTRACT_NAME]
    return {
        "contractName": CONTRACT_NAME,
        "abi": contract["abi"],
        "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + contract["evm"]["deployedBytecode"]["object"],
        "compiler": {"version": SOLC_VERSION, "settings": COMPILER_SETTINGS},
        "sourceDigest": source_digest(sources),
    }


def write_artifact(data: dict[str, Any], path: Path = ARTIFACT_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m registry.chain.toolchain", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    setup = sub.add_parser("setup-solc", help="install solc for py-solc-x/ape (native if online, else npm solc)")
    setup.add_argument("--offline", action="store_true", help="do not try to download the native compiler")
    sub.add_parser("build-artifact", help="compile contracts/ and rewrite the shipped artifact")
    sub.add_parser("check-artifact", help="fail when the shipped artifact does not match contracts/")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "setup-solc":
            kind = setup_solc(allow_native=not args.offline)
            print(f"solc {SOLC_VERSION}: {kind} at {solc_path()}")
        elif args.cmd == "build-artifact":
            write_artifact(build_artifact_data())
            print(f"wrote {ARTIFACT_PATH.relative_to(REPO_ROOT)}")
        else:
            shipped = json.loads(ARTIFACT_PATH.read_text())
            fresh = build_artifact_data()
            keys = ("abi", "bytecode", "deployedBytecode", "sourceDigest")
            stale = [k for k in keys if shipped.get(k) != fresh[k]]
            if stale:
                names = ", ".join(stale)
                print(f"error: {ARTIFACT_PATH.name} is stale ({names}): run `make artifact`", file=sys.stderr)
                return 1
            print("artifact is up to date")
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
