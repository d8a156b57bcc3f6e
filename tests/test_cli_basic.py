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


def _run_with_tty_stderr(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Runs with stderr on a pseudo-terminal (as in a user's shell); returns (code, stdout, terminal output)."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=subprocess.PIPE, stderr=slave, text=True,
                            env=env)
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out, _ = proc.communicate(timeout=120)
    os.close(master)
    return proc.returncode, out, b"".join(chunks).decode(errors="replace")


def test_progress_bars_on_a_terminal_only(tmp_path: Path) -> None:
    env = {**os.environ, "PROOFREG_HOME": str(tmp_path / "home")}
    code, out, term = _run_with_tty_stderr("proofreg", "train", "--out", str(tmp_path / "a"), "--max-steps", "12",
                                           "-k", "4", env=env)
    assert code == 0, term
    assert "training (recording every step)" in term and "12/12" in term
    assert "numSegments" in out and "training" not in out
    code, out, term = _run_with_tty_stderr("proofreg", "commit", str(tmp_path / "a" / "transcript"), env=env)
    assert code == 0, term
    assert "verifying transcript files" in term and "3/3" not in out
    code, out, term = _run_with_tty_stderr("proofreg", "train", "--out", str(tmp_path / "b"), "--max-steps", "12",
                                           "-k", "4", "--json", env=env)
    assert code == 0 and "training" not in term  # --json: nothing but the JSON
    assert json.loads(out)["numSegments"] == 3
    plain = run("proofreg", "train", "--out", str(tmp_path / "c"), "--max-steps", "12", "-k", "4", env=env)
    assert plain.returncode == 0 and plain.stderr == ""  # off a terminal: no bar, no label


def test_train_reports_progress_per_step(tmp_path: Path) -> None:
    from registry.pol.train import train

    calls: list[tuple[int, int]] = []
    train(tmp_path, epochs=1, batch_size=64, steps_per_segment=5, progress=lambda d, t: calls.append((d, t)))
    per_epoch = 1797 // 64  # the bundled digits, drop_last
    assert calls == [(n, per_epoch) for n in range(1, per_epoch + 1)]
