"""`proofreg` end to end against a real Hardhat node, as separate processes: train, commit, status,
challenge, ownerof, settle, finalize, withdraw; and every bad input is one line, exit 1, nothing committed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from web3 import HTTPProvider, Web3

from registry.chain.deployment import Deployment
from registry.chain.local import deploy_registry
from registry.chain.signer import dev_signer
from registry.core.params import preset
from registry.pol.transcript import batches_path, checkpoint_path

BIN = Path(sys.executable).parent
DEV = preset("dev")


def proofreg(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(BIN / "proofreg"), *args], capture_output=True, text=True, timeout=300, env=env)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def one_line_error(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert out.returncode == 1, out
    lines = [line for line in out.stderr.strip().splitlines() if not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def world(hardhat_node: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A fresh registry on the node, its record in a private PROOFREG_HOME, and a small trained transcript."""
    home = tmp_path_factory.mktemp("home")
    w3 = Web3(HTTPProvider(hardhat_node.url))
    deployer = w3.eth.accounts[0]
    reg, receipt = deploy_registry(w3, DEV, deployer)
    record = Deployment.from_receipt(w3, receipt, DEV, "hardhat")
    record.save(home / "deployments" / f"{record.chain_id}.json")
    env = {**os.environ, "PROOFREG_HOME": str(home), "PROOFREG_RPC": hardhat_node.url}
    env.pop("PROOFREG_PRIVATE_KEY", None)
    run_dir = tmp_path_factory.mktemp("run")
    proofreg("train", "--out", str(run_dir), "--epochs", "1", "--max-steps", "30", env=env)
    return {"w3": w3, "reg": reg, "env": env, "home": home, "run": run_dir, "node": hardhat_node}


def test_commit_status_challenge_ownership(world: dict[str, Any]) -> None:
    env, reg, run = world["env"], world["reg"], world["run"]
    prover, challenger = dev_signer(1).address, dev_signer(2).address
    out = proofreg("commit", str(run / "transcript"), "--account", "dev:1", "--json", env=env)
    committed = json.loads(out.stdout)
    claim_id = committed["claimId"]
    assert committed["prover"] == prover and committed["numSegments"] == 3
    assert reg.functions.getClaim(claim_id).call()[0] == prover
    manifest = json.loads((run / "transcript" / "manifest.json").read_text())
    assert manifest["dataset"]["cid"] == committed["datasetCid"]  # the dataset was published first

    status = json.loads(proofreg("status", str(claim_id), "--json", env=env).stdout)
    assert status["status"] == "Committed" and status["committed"]["transcriptCid"] == committed["transcriptCid"]
    assert status["committed"]["segmentRoot"] == committed["segmentRoot"]

    owner = json.loads(proofreg("ownerof", "--transcript", str(run / "transcript"), "--json", env=env).stdout)
    assert owner == {"finalWeightsHash": committed["finalWeightsHash"], "owner": prover, "claimId": claim_id}

    # committing the same transcript again is refused before anything is sent
    count = reg.functions.claimCount().call()
    one_line_error(proofreg("commit", str(run / "transcript"), "--account", "dev:1", env=env, check=False),
                   "ClaimAlreadyCommitted")
    assert reg.functions.claimCount().call() == count

    ch = json.loads(proofreg("challenge", str(claim_id), "--segment", "2", "--account", "dev:2", "--json",
                             env=env).stdout)
    assert ch["namedSegments"] == [2]
    status = json.loads(proofreg("status", str(claim_id), "--json", env=env).stdout)
    assert status["openChallenges"] == 1 and status["challenges"][0]["challenger"] == challenger
    one_line_error(proofreg("challenge", str(claim_id), "--segment", "3", "--account", "dev:2", env=env,
                            check=False), "SegmentOutOfRange")

    # nobody serves on the committee: after the deadline the challenge expires and the bond comes back
    node = world["node"]
    node.mine(DEV.seed_delay + DEV.commit_period + DEV.reveal_period + 2)
    proofreg("settle", str(ch["challengeId"]), "--account", "dev:3", env=env)
    node.mine(DEV.challenge_window)
    proofreg("finalize", str(claim_id), "--account", "dev:3", env=env)
    assert json.loads(proofreg("status", str(claim_id), "--json", env=env).stdout)["status"] == "Finalized"
    paid = json.loads(proofreg("withdraw", "--account", "dev:1", "--json", env=env).stdout)
    assert paid["amount"] == DEV.training_bond
    one_line_error(proofreg("withdraw", "--account", "dev:1", env=env, check=False), "nothing to withdraw")
    refund = json.loads(proofreg("withdraw", "--account", "dev:2", "--json", env=env).stdout)
    assert refund["amount"] == DEV.challenge_bond


def test_half_written_transcript_commits_nothing(world: dict[str, Any], tmp_path: Path) -> None:
    env, reg = world["env"], world["reg"]
    broken = tmp_path / "run"
    shutil.copytree(world["run"], broken)
    (broken / "transcript" / checkpoint_path(2)).unlink()
    count = reg.functions.claimCount().call()
    store = tmp_path / "store"
    one_line_error(proofreg("commit", str(broken / "transcript"), "--account", "dev:4", "--store-dir", str(store),
                            env=env, check=False), "checkpoint 2 is missing")
    assert reg.functions.claimCount().call() == count
    assert not store.exists()  # nothing was stored either
    # a file edited after recording
    shutil.copytree(world["run"], tmp_path / "run2")
    batch = tmp_path / "run2" / "transcript" / batches_path(1)
    batch.write_bytes(batch.read_bytes()[:-8] + b"\0" * 8)
    one_line_error(proofreg("commit", str(tmp_path / "run2" / "transcript"), "--account", "dev:4", env=env,
                            check=False), "does not match its hash")
    one_line_error(proofreg("commit", str(tmp_path), "--account", "dev:4", env=env, check=False),
                   "not a transcript directory")
    assert reg.functions.claimCount().call() == count


def test_insufficient_balance(world: dict[str, Any], tmp_path: Path) -> None:
    env = {**world["env"], "PROOFREG_PRIVATE_KEY": "0x" + "17" * 32}  # an account that holds nothing
    count = world["reg"].functions.claimCount().call()
    one_line_error(proofreg("commit", str(world["run"] / "transcript"), "--store-dir", str(tmp_path), env=env,
                            check=False), "insufficient balance for the training bond")
    assert world["reg"].functions.claimCount().call() == count


def test_missing_record_wrong_network_and_stale_record(world: dict[str, Any], tmp_path: Path) -> None:
    env = {**world["env"], "PROOFREG_HOME": str(tmp_path / "empty")}
    one_line_error(proofreg("info", env=env, check=False), "no deployment record", "ape run deploy")
    other = Deployment(address=world["reg"].address, chain_id=1, block_number=0, tx_hash="0x", deployer="0x",
                       network="mainnet")
    path = other.save(tmp_path / "mainnet.json")
    one_line_error(proofreg("info", "--deployment", str(path), env=env, check=False), "wrong network")
    stale = Deployment(address="0x" + "12" * 20, chain_id=31337, block_number=0, tx_hash="0x", deployer="0x",
                       network="hardhat")
    path = stale.save(tmp_path / "stale.json")
    one_line_error(proofreg("info", "--deployment", str(path), env=env, check=False), "stale")
    info = json.loads(proofreg("info", "--json", env=world["env"]).stdout)
    assert info["address"] == world["reg"].address and info["parameters"] == DEV.to_dict()


def test_bad_arguments_are_one_line(world: dict[str, Any]) -> None:
    env = world["env"]
    one_line_error(proofreg("ownerof", "0x1234", env=env, check=False), "not a 32-byte hash")
    one_line_error(proofreg("ownerof", env=env, check=False), "either a finalWeightsHash")
    one_line_error(proofreg("status", "999", env=env, check=False), "UnknownClaim(claimId=999)")
    one_line_error(proofreg("challenge", "1", "--account", "dev:0", "--rpc", "http://127.0.0.1:9", env=env,
                            check=False), "cannot reach")
    one_line_error(proofreg("train", "--out", str(world["run"]), env=env, check=False), "already holds a transcript")


def test_commit_through_an_ipfs_daemon(world: dict[str, Any], ipfs_daemon: Any, tmp_path: Path) -> None:
    """Publishing to a real js-ipfs daemon gives the embedded store's CIDs; a daemon that is down commits
    nothing."""
    env, reg = world["env"], world["reg"]
    run = tmp_path / "run"
    proofreg("train", "--out", str(run), "--epochs", "1", "--max-steps", "20", "--seed", "9", env=env)
    count = reg.functions.claimCount().call()
    one_line_error(proofreg("commit", str(run / "transcript"), "--ipfs", "/ip4/127.0.0.1/tcp/9/http",
                            "--account", "dev:5", env=env, check=False), "not answering")
    assert reg.functions.claimCount().call() == count
    out = proofreg("commit", str(run / "transcript"), "--ipfs", ipfs_daemon.api, "--account", "dev:5", "--json",
                   env=env)
    committed = json.loads(out.stdout)
    from registry.store.embedded import EmbeddedStore

    local = EmbeddedStore(tmp_path / "local")
    assert local.add_directory(run / "transcript") == committed["transcriptCid"]
    assert local.add_directory(run / "dataset") == committed["datasetCid"]
    assert ipfs_daemon.rpc("pin/ls", arg=committed["transcriptCid"])  # pinned on the daemon
