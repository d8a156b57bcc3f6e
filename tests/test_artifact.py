"""The artifact shipped in the package is what contracts/ compiles to."""

from __future__ import annotations

import json

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


def test_setup_solc_is_idempotent() -> None:
    first = toolchain.setup_solc(allow_native=False)
    assert "already installed" in toolchain.setup_solc(allow_native=False) or first == "native (already installed)"
    assert toolchain._reports_version(toolchain.solc_path())
