"""The built wheel carries every subpackage and the contract artifact (an installed CLI must not need the repo)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_holds_every_package_and_the_artifact(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = sorted(p.parent.relative_to(ROOT).as_posix() for top in ("registry", "verifier")
                      for p in (ROOT / top).rglob("__init__.py"))
    assert "registry/store" in packages and "registry/devnet" in packages
    missing = [p for p in packages if f"{p}/__init__.py" not in names]
    assert not missing, f"packages missing from the wheel: {missing}"
    assert "registry/artifacts/ProofRegistry.json" in names
    assert not any(n.startswith(("tests/", "scripts/", "bench/")) for n in names)
