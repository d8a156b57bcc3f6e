"""`proofreg` and `proofreg-verifier` basics: bad input is one line and a non-zero exit."""

from __future__ import annotations

import json
import os
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


def test_train_and_commit_on_the_embedded_chain(tmp_path: Path) -> None:
    env = {**os.environ, "PROOFREG_HOME": str(tmp_path / "home")}
    env.pop("PROOFREG_RPC", None)
    out = run("proofreg", "train", "--out", str(tmp_path / "run"), "--max-steps", "25", "--json", env=env)
    assert out.returncode == 0, out.stderr
    trained = json.loads(out.stdout)
    out = run("proofreg", "commit", str(tmp_path / "run" / "transcript"), "--json", env=env)
    assert out.returncode == 0, out.stderr
    committed = json.loads(out.stdout)
    assert committed["claimId"] == 1 and committed["segmentRoot"] == trained["segmentRoot"]
    assert "embedded in-process chain" in out.stderr
    assert (tmp_path / "home" / "store" / "blocks").is_dir()


def test_train_progress_goes_to_stderr_and_json_stays_clean(tmp_path: Path) -> None:
    env = {**os.environ, "PROOFREG_HOME": str(tmp_path / "home")}
    out = run("proofreg", "train", "--out", str(tmp_path / "a"), "--max-steps", "12", "-k", "4", env=env)
    assert out.returncode == 0, out.stderr
    assert "training (recording every step)" in out.stderr  # off a terminal: the label, once
    assert "numSegments" in out.stdout and "training" not in out.stdout
    out = run("proofreg", "commit", str(tmp_path / "a" / "transcript"), env=env)
    assert out.returncode == 0, out.stderr
    assert "verifying transcript files" in out.stderr
    out = run("proofreg", "train", "--out", str(tmp_path / "b"), "--max-steps", "12", "-k", "4", "--json", env=env)
    assert out.returncode == 0 and "training" not in out.stderr
    assert json.loads(out.stdout)["numSegments"] == 3


def test_train_reports_progress_per_step(tmp_path: Path) -> None:
    from registry.pol.train import train

    calls: list[tuple[int, int]] = []
    train(tmp_path, epochs=1, batch_size=64, steps_per_segment=5, progress=lambda d, t: calls.append((d, t)))
    per_epoch = 1797 // 64  # the bundled digits, drop_last
    assert calls == [(n, per_epoch) for n in range(1, per_epoch + 1)]
