"""A local multi-process network for trying the registry by hand: `proofreg devnet`.

It starts a Hardhat JSON-RPC node and a js-ipfs daemon on loopback, deploys the registry with a preset
(`dev`: short windows), registers verifier accounts with stake, writes the deployment record where the CLI and
the verifier daemon look for it (`$PROOFREG_HOME/deployments/31337.json`) and a `devnet.json` that says
where everything is, then waits until it is told to stop (Ctrl-C or SIGTERM) and stops both processes.

The accounts are the development mnemonic's (Hardhat's): `dev:0` deploys and proves, `dev:1`..`dev:N` are
the registered verifiers and `dev:N+1` is a challenger. The chain lives in the Hardhat process's memory, so
each start is a fresh network; the IPFS repo is recreated too, so nothing from an earlier run can be mistaken
for this one's.

Modules: `procs` (process-group helpers), `hardhat` (the node launcher), `ipfs` (the js-ipfs launcher); the
test fixtures in `tests/` use the same launchers.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.chain.deployment import Deployment, default_record_path
from registry.core.params import RegistryParams

DEFAULT_RPC_PORT = 8545
DEFAULT_IPFS_PORT = 5001
DEVNET_FILE = "devnet.json"


class DevnetError(RuntimeError):
    """The devnet could not start; one line saying why (logs are named in it)."""


@dataclass
class Devnet:
    """The processes and facts of a running devnet."""

    base_dir: Path
    params: RegistryParams
    verifiers: int = 3
    rpc_port: int = DEFAULT_RPC_PORT
    ipfs_port: int = DEFAULT_IPFS_PORT
    block_time: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)
    _node: Any = None
    _ipfs: Any = None

    def start(self) -> dict[str, Any]:
        """Starts both processes, deploys, registers verifiers; returns what `devnet.json` holds."""
        from web3 import HTTPProvider, Web3

        from registry.chain.local import deploy_registry
        from registry.devnet.hardhat import NodeStartError, start_hardhat_node
        from registry.devnet.ipfs import IpfsStartError, start_ipfs_daemon

        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / DEVNET_FILE).unlink(missing_ok=True)
        try:
            self._node = start_hardhat_node(port=self.rpc_port or None, log_path=self.base_dir / "hardhat.log")
        except NodeStartError as exc:
            raise DevnetError(f"Hardhat node: {_first_line(exc)} (log: {self.base_dir / 'hardhat.log'})") from None
        if self.block_time > 0:  # verifiers wait for seed blocks and deadlines: let time pass without txs
            self._node.rpc("evm_setIntervalMining", [max(1, round(self.block_time * 1000))])
        shutil.rmtree(self.base_dir / "verifiers", ignore_errors=True)  # their cursors were for the old chain
        ipfs_dir = self.base_dir / "ipfs"
        shutil.rmtree(ipfs_dir, ignore_errors=True)
        try:
            self._ipfs = start_ipfs_daemon(ipfs_dir, api_port=self.ipfs_port)
        except IpfsStartError as exc:
            self.stop()
            raise DevnetError(f"IPFS daemon: {_first_line(exc)} (log: {ipfs_dir / 'daemon.log'})") from None

        w3 = Web3(HTTPProvider(self._node.url))
        accounts = list(w3.eth.accounts)
        if self.verifiers + 2 > len(accounts):
            self.stop()
            raise DevnetError(f"--verifiers {self.verifiers}: the node has only {len(accounts) - 2} spare accounts")
        registry, receipt = deploy_registry(w3, self.params, accounts[0])
        record = Deployment.from_receipt(w3, receipt, self.params, "devnet")
        record_path = record.save(default_record_path(record.chain_id))
        stake = self.params.verifier_stake
        hashes = [registry.functions.registerVerifier().transact({"from": a, "value": stake})
                  for a in accounts[1:self.verifiers + 1]]
        for h in hashes:
            if w3.eth.wait_for_transaction_receipt(h)["status"] != 1:
                self.stop()
                raise DevnetError("registering a verifier failed")
        self.info = {
            "rpc": self._node.url,
            "ipfs": self._ipfs.api,
            "chainId": record.chain_id,
            "registry": registry.address,
            "deployment": str(record_path),
            "prover": {"account": "dev:0", "address": accounts[0]},
            "verifiers": [{"account": f"dev:{i}", "address": accounts[i],
                           "state": str(self.base_dir / "verifiers" / f"dev-{i}.sqlite")}
                          for i in range(1, self.verifiers + 1)],
            "blockTime": self.block_time,
            "challenger": {"account": f"dev:{self.verifiers + 1}", "address": accounts[self.verifiers + 1]},
            "logs": {"hardhat": str(self._node.log_path), "ipfs": str(self._ipfs.log_path)},
            "pids": {"hardhat": self._node.process.pid, "ipfs": self._ipfs.pid},
        }
        tmp = self.base_dir / (DEVNET_FILE + ".tmp")
        tmp.write_text(json.dumps(self.info, indent=2) + "\n")
        tmp.replace(self.base_dir / DEVNET_FILE)
        return self.info

    def healthy(self) -> str | None:
        """None while both processes run, else which one died."""
        if self._node is not None and not self._node.alive:
            return f"the Hardhat node exited (log: {self._node.log_path})"
        if self._ipfs is not None and not self._ipfs.alive:
            return f"the IPFS daemon exited (log: {self._ipfs.log_path})"
        return None

    def stop(self) -> None:
        """Stops both processes (idempotent) and removes `devnet.json`, which would otherwise point at nothing."""
        for proc in (self._ipfs, self._node):
            if proc is not None:
                proc.stop()
        (self.base_dir / DEVNET_FILE).unlink(missing_ok=True)

    def serve(self, duration: float | None = None) -> str | None:
        """Blocks until SIGINT/SIGTERM, `duration` seconds, or a process dying (returned as the reason)."""
        stop = threading.Event()
        previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while not stop.wait(0.5):
                problem = self.healthy()
                if problem is not None:
                    return problem
                if deadline is not None and time.monotonic() >= deadline:
                    return None
            return None
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def walkthrough(info: dict[str, Any]) -> str:
    """What to type in other terminals, with this devnet's addresses."""
    v = info["verifiers"]
    lines = [
        f"devnet ready: RPC {info['rpc']}, IPFS API {info['ipfs']}, registry {info['registry']}",
        f"deployment record: {info['deployment']}",
        "",
        "In other terminals (PROOFREG_RPC saves typing --rpc):",
        f"  export PROOFREG_RPC={info['rpc']}",
    ]
    lines += [f"  proofreg-verifier run --account {x['account']} --ipfs {info['ipfs']} --state {x['state']}"
              for x in v]
    lines += [
        "  proofreg train --out run1",
        f"  proofreg commit run1/transcript --ipfs {info['ipfs']} --account dev:0",
        f"  proofreg challenge 1 --account {info['challenger']['account']}",
        "  proofreg status 1            # the committee attests within a few blocks, then settles",
        "",
        "Ctrl-C stops the node and the daemon.",
    ]
    return "\n".join(lines)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
