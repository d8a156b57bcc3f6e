"""A real local Hardhat JSON-RPC node (npm `hardhat`, offline) in a subprocess, for `proofreg devnet` and tests.

Plain helpers (usable outside pytest, e.g. by multi-process tests and tools):

    node = start_hardhat_node(log_path=Path("hh.log"))   # free port on 127.0.0.1, waits until RPC answers
    node.url, node.port, node.rpc("eth_blockNumber"), node.snapshot(), node.revert(snap)
    node.stop()                                          # SIGTERM to its process group, then SIGKILL

    with start_hardhat_node() as node: ...               # stops on exit

Pytest fixtures over these live in `tests/nodes.py`.

No orphans: each node runs in its own process group, which stop() signals as a whole; the node gets
SIGKILL if the process that started it dies (Linux PR_SET_PDEATHSIG), and an atexit hook stops nodes that
were never stopped. A node's stdout and stderr go to a log file (under pytest's tmp dir for fixtures); a
node that does not come up raises NodeStartError with the end of that log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from registry.devnet.procs import HOST, free_port, log_tail, pdeathsig_kill, stop_group, track, untrack

REPO_ROOT = Path(os.environ.get("PROOFREG_NODE_TOOLS") or Path(__file__).resolve().parents[2])
HARDHAT_BIN = REPO_ROOT / "node_modules" / ".bin" / "hardhat"
HARDHAT_CHAIN_ID = 31337
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
#: The mnemonic of hardhat.config.js and ape-config.yaml; account i is m/44'/60'/0'/0/i.
TEST_MNEMONIC = "test test test test test test test test test test test junk"


class NodeStartError(RuntimeError):
    """A node that did not start; the message ends with the tail of its log."""


def rpc_call(url: str, method: str, params: list[Any] | None = None, *, timeout: float = 10.0) -> Any:
    """One JSON-RPC call; raises RuntimeError on a JSON-RPC error, OSError/URLError when unreachable."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply = json.loads(response.read())
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


@dataclass
class HardhatNode:
    """A running `hardhat node` subprocess."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def chain_id(self) -> int:
        return HARDHAT_CHAIN_ID

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def rpc(self, method: str, params: list[Any] | None = None, *, timeout: float = 10.0) -> Any:
        return rpc_call(self.url, method, params, timeout=timeout)

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def accounts(self) -> list[str]:
        return list(self.rpc("eth_accounts"))

    def mine(self, blocks: int = 1) -> None:
        if blocks > 0:
            self.rpc("hardhat_mine", [hex(blocks)])

    def snapshot(self) -> str:
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> bool:
        """Returns the chain to a snapshot (each snapshot id can be reverted to once)."""
        return bool(self.rpc("evm_revert", [snapshot_id]))

    def announced(self) -> bool:
        """Whether this process logged that it listens on its URL (Hardhat prints it once it is bound)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return False
        return f"JSON-RPC server at {self.url}/" in text.rsplit("--- attempt", 1)[-1]

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM to the node's process group, SIGKILL after `timeout`; idempotent. Returns the exit code."""
        proc = self.process
        stop_group(proc, timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        untrack(self)
        return proc.returncode

    def __enter__(self) -> HardhatNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __hash__(self) -> int:  # for the set of live nodes
        return id(self)


def _hardhat_command(port: int, extra_args: tuple[str, ...]) -> list[str]:
    if not HARDHAT_BIN.exists():
        raise NodeStartError(f"{HARDHAT_BIN} not found: run `npm ci` (or `make npm`) in {REPO_ROOT}")
    node = shutil.which("node")
    if node is None:
        raise NodeStartError("`node` is not on PATH: install Node.js 20 to run the Hardhat node")
    # Run the JS entry point with node directly (no npx, no shell): the PID we hold is the node itself.
    return [node, str(HARDHAT_BIN.resolve()), "node", "--hostname", HOST, "--port", str(port), *extra_args]


def _wait_until_ready(node: HardhatNode, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if not node.alive:
            raise NodeStartError(
                f"hardhat node on port {node.port} exited with status {node.process.returncode} before "
                f"answering JSON-RPC; log {node.log_path}:\n{node.log_tail()}"
            )
        if not node.announced():
            # Not yet listening; or another process holds the port and ours is about to exit (EADDRINUSE):
            # never mistake someone else's node on that port for ours.
            time.sleep(0.1)
            continue
        try:
            version = str(node.rpc("web3_clientVersion", timeout=2.0))
            chain_id = int(node.rpc("eth_chainId", timeout=2.0), 16)
        except (OSError, urllib.error.URLError, RuntimeError, ValueError) as exc:
            last_error = exc
            time.sleep(0.1)
            continue
        if "hardhat" not in version.lower() or chain_id != HARDHAT_CHAIN_ID:
            raise NodeStartError(
                f"something else answers on {node.url}: {version!r}, chain id {chain_id} "
                f"(expected a Hardhat node with chain id {HARDHAT_CHAIN_ID})"
            )
        return
    raise NodeStartError(
        f"hardhat node on {node.url} did not answer JSON-RPC within {timeout:.0f} s "
        f"(last error: {last_error}); log {node.log_path}:\n{node.log_tail()}"
    )


def start_hardhat_node(
    *,
    port: int | None = None,
    log_path: Path | None = None,
    timeout: float = START_TIMEOUT_S,
    extra_args: tuple[str, ...] = (),
    attempts: int = 3,
    die_with_parent: bool = True,
) -> HardhatNode:
    """Starts `hardhat node` on 127.0.0.1 (cwd: the repository, so hardhat.config.js applies) and waits
    until it answers JSON-RPC. With no `port`, picks a free one, and retries on another port when the
    chosen one was taken in the meantime. Raises NodeStartError (with the node's log) on failure.

    With `die_with_parent` (default) the node is killed when the *thread* that started it exits: start
    nodes from the main thread or a thread that lives as long as the node should, or pass False (then only
    stop() and the atexit hook end it)."""
    if log_path is None:
        log_path = Path(tempfile.mkdtemp(prefix="hardhat-")) / "node.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true", "HARDHAT_HIDE_SOLIDITY_SURVEY_MESSAGE": "true"}
    env.pop("NODE_OPTIONS", None)
    tries = attempts if port is None else 1
    error: NodeStartError | None = None
    for attempt in range(tries):
        chosen = port if port is not None else free_port()
        command = _hardhat_command(chosen, extra_args)
        log_file = open(log_path, "ab")  # noqa: SIM115 - owned by the HardhatNode, closed by stop()
        log_file.write(f"--- attempt {attempt + 1}: {' '.join(command)}\n".encode())
        log_file.flush()
        try:
            process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() signals the whole group
                preexec_fn=pdeathsig_kill if die_with_parent else None,
            )
        except OSError as exc:
            log_file.close()
            raise NodeStartError(f"cannot run {command[0]}: {exc}") from exc
        node = HardhatNode(url=f"http://{HOST}:{chosen}", port=chosen, process=process, log_path=log_path,
                           _log_file=log_file)
        track(node)
        try:
            _wait_until_ready(node, timeout)
            return node
        except NodeStartError as exc:
            node.stop(timeout=3.0)
            error = exc
            in_use = "EADDRINUSE" in node.log_tail(60) or "address already in use" in node.log_tail(60).lower()
            if port is not None or not in_use:
                break
    raise error if error is not None else NodeStartError("hardhat node did not start")
