"""`proofreg devnet` as users run it: a separate process, driven by the CLI from other processes, then stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "proofreg"), *args], capture_output=True, text=True, timeout=180, env=env)


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 150.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"devnet exited early ({proc.returncode}): {err}")
        if path.exists():
            return dict(json.loads(path.read_text()))
        time.sleep(0.2)
    raise AssertionError("devnet did not become ready")


def test_devnet_walkthrough_then_clean_stop(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "PROOFREG_HOME": str(home)}
    for key in ("PROOFREG_RPC", "PROOFREG_PRIVATE_KEY"):
        env.pop(key, None)
    proc = subprocess.Popen([str(BIN / "proofreg"), "devnet", "--rpc-port", "0", "--ipfs-port", "0",
                             "--verifiers", "3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = _wait_for(home / "devnet" / "devnet.json", proc)
        assert info["chainId"] == 31337 and len(info["verifiers"]) == 3
        assert (home / "deployments" / "31337.json").is_file()
        env["PROOFREG_RPC"] = info["rpc"]

        out = _cli("info", "--json", env=env)
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        assert summary["address"] == info["registry"]
        assert summary["activeVerifiers"] == 3

        out = _cli("train", "--out", str(tmp_path / "run1"), "--max-steps", "20", "-k", "5", "--json", env=env)
        assert out.returncode == 0, out.stderr
        out = _cli("commit", str(tmp_path / "run1" / "transcript"), "--ipfs", info["ipfs"], "--account", "dev:0",
                   "--json", env=env)
        assert out.returncode == 0, out.stderr
        committed = json.loads(out.stdout)
        assert committed["claimId"] == 1 and committed["prover"] == info["prover"]["address"]
        out = _cli("challenge", "1", "--account", info["challenger"]["account"], "--json", env=env)
        assert out.returncode == 0, out.stderr
        out = _cli("status", "1", "--json", env=env)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["openChallenges"] == 1

        # The verifiers of the walk-through, each its own process, as in separate terminals.
        daemons = [subprocess.Popen([str(BIN / "proofreg-verifier"), "run", "--account", v["account"], "--ipfs",
                                     info["ipfs"], "--state", v["state"], "--no-register"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{v['account']}.log", "w"))  # noqa: SIM115
                   for v in info["verifiers"]]
        try:
            status: dict[str, Any] = {}
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                out = _cli("status", "1", "--json", env=env)
                assert out.returncode == 0, out.stderr
                status = json.loads(out.stdout)
                if status["openChallenges"] == 0:
                    break
                assert all(d.poll() is None for d in daemons), "a verifier daemon died"
                time.sleep(2)
            assert status["status"] == "Valid", (status, (tmp_path / "dev:1.log").read_text()[-2000:])
            assert status["challenges"][0]["status"] == "Valid"
        finally:
            for d in daemons:
                d.send_signal(signal.SIGTERM)
            for d in daemons:
                assert d.wait(timeout=60) == 0

        pids = dict(info["pids"])
        assert all(_alive(p) for p in pids.values())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        for name, pid in pids.items():
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _alive(pid), f"{name} survived the devnet"
        assert not (home / "devnet" / "devnet.json").exists()
        out = _cli("info", env=env)
        assert out.returncode == 1 and "cannot reach" in out.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_devnet_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "PROOFREG_HOME": str(tmp_path / "home")}
        out = subprocess.run([str(BIN / "proofreg"), "devnet", "--rpc-port", str(port), "--ipfs-port", "0",
                              "--for", "1"], capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 1
    assert out.stderr.startswith("error: Hardhat node") and out.stderr.strip().count("\n") == 0, out.stderr
    assert not (tmp_path / "home" / "devnet" / "devnet.json").exists()
