"""The artifact shipped in the package is what contracts/ compiles to."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from registry.chain import toolchain
from registry.core.artifact import ARTIFACT_PATH, load_artifact


def test_shipped_artifact_matches_sources() -> None:
    shipped = json.loads(ARTIFACT_PATH.read_text())
    assert shipped["sourceDigest"] == toolchain.source_digest(toolchain.source_files()), (
        "contracts/ changed since the artifact was built: run `make artifact`"
    )


def test_recompiling_gives_the_shipped_bytecode() -> None:
    fresh = toolchain.build_artifact_data()
    shipped = load_artifact()
    assert fresh["abi"] == shipped.abi
    assert fresh["bytecode"] == shipped.bytecode
    assert fresh["deployedBytecode"] == shipped.deployed_bytecode


def test_check_artifact_detects_a_stale_artifact(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    stale = json.loads(ARTIFACT_PATH.read_text())
    stale["deployedBytecode"] = stale["deployedBytecode"][:-2] + "00"
    fake = tmp_path / "ProofRegistry.json"
    fake.write_text(json.dumps(stale))
    monkeypatch.setattr(toolchain, "ARTIFACT_PATH", fake)
    assert toolchain.main(["check-artifact"]) == 1
    monkeypatch.setattr(toolchain, "ARTIFACT_PATH", ARTIFACT_PATH)
    assert toolchain.main(["check-artifact"]) == 0


def test_missing_compiler_is_one_clear_line(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SOLCX_BINARY_PATH", str(tmp_path))
    assert toolchain.main(["build-artifact"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "make solc" in err


def test_setup_solc_replaces_another_checkouts_launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One home, two clones: the launcher written by the other clone still runs (its shim is there), but it
    compiles that clone's node_modules; setup-solc here points it at this one, natively offline or not."""
    monkeypatch.setenv("SOLCX_BINARY_PATH", str(tmp_path / "solcx"))
    other = tmp_path / "other-clone" / "scripts"
    other.mkdir(parents=True)
    shutil.copy(toolchain.SHIM, other / toolchain.SHIM.name)
    (other.parent / "node_modules").symlink_to(toolchain.REPO_ROOT / "node_modules")
    stale = toolchain._launcher_text().replace(str(toolchain.SHIM), str(other / toolchain.SHIM.name))
    target = toolchain.solc_path()
    target.write_text(stale)
    target.chmod(0o755)
    assert toolchain._reports_version(target)  # it works, for the other clone
    assert toolchain.setup_solc(allow_native=True) in ("solcjs", "native")
    text = target.read_text(errors="replace") if target.stat().st_size < 4096 else ""
    assert str(other) not in text and toolchain._reports_version(target)
    # a launcher whose checkout is gone is replaced too
    target.write_text(stale.replace(str(other), str(tmp_path / "deleted")))
    assert not toolchain._reports_version(target)
    assert toolchain.setup_solc(allow_native=False) == "solcjs"
    assert target.read_text() == toolchain._launcher_text()


def test_setup_solc_is_idempotent() -> None:
    first = toolchain.setup_solc(allow_native=False)
    assert "already installed" in toolchain.setup_solc(allow_native=False) or first == "native (already installed)"
    assert toolchain._reports_version(toolchain.solc_path())
