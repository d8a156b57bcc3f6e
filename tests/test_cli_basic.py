"""`proofreg` and `proofreg-verifier` basics: bad input is one line and a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=120, env=env)


def test_params_json() -> None:
    out = run("proofreg", "params", "--preset", "dev", "--json")
    assert out.returncode == 0
    assert json.loads(out.stdout)["committee_size"] == 3


@pytest.mark.parametrize("tool", ["proofreg", "proofreg-verifier"])
def test_unreachable_rpc_is_one_line(tool: str) -> None:
    args = ["info"] if tool == "proofreg" else ["assignments", "--challenge", "1"]
    out = run(tool, *args, "--rpc", "http://127.0.0.1:9")
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0
    assert "cannot reach" in out.stderr


def test_versions() -> None:
    for tool in ("proofreg", "proofreg-verifier"):
        out = run(tool, "--version")
        assert out.returncode == 0 and "0.1.0" in out.stdout
