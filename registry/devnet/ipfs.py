"""A real IPFS daemon for `proofreg devnet` and tests: js-ipfs 0.66.1 (npm, in tools/ipfs), offline, on loopback.

Install once (`make setup` does): `npm ci --prefix tools/ipfs`.

Usage:

    daemon = IpfsDaemon.create(Path("tmp/ipfs"))   # fresh repo (jsipfs init), config bound to 127.0.0.1
    daemon.start()                                 # `jsipfs daemon --offline`; waits until /api/v0/id answers
    daemon.api                                     # "/ip4/127.0.0.1/tcp/PORT/http", for DaemonStore(api=...)
    daemon.stop(); daemon.start()                  # same repo, same ports, same content: a restart
    daemon.rss_bytes(), daemon.log_tail()

Pytest fixtures over these live in `tests/ipfs_node.py` (they fail, not skip, when js-ipfs is missing).

The repo config binds API, Gateway and Swarm to 127.0.0.1 on free ports, has no Bootstrap peers, no
delegates, MDNS/WebRTC-star off, and the daemon runs with `--offline --enable-preload=false`: nothing leaves
the machine. js-ipfs keeps a `repo.lock` directory after a SIGKILL that blocks the next start ("Lock already
being held"); start() removes it when no process of ours runs. No orphans: the daemon runs in its own
process group, signalled as a whole (SIGTERM, then SIGKILL), dies with the thread that started it (Linux
PR_SET_PDEATHSIG), and an atexit hook stops daemons that were never stopped. Logs go to the repo's parent
directory (pytest's tmp dir for fixtures); a daemon that does not come up raises IpfsStartError with the
end of its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any

from registry.devnet.procs import HOST, free_port, log_tail, pdeathsig_kill, stop_group, track, untrack

REPO_ROOT = Path(os.environ.get("PROOFREG_NODE_TOOLS") or Path(__file__).resolve().parents[2])
IPFS_TOOLS = REPO_ROOT / "tools" / "ipfs"
JSIPFS_BIN = IPFS_TOOLS / "node_modules" / ".bin" / "jsipfs"
INSTALL_COMMAND = "npm ci --prefix tools/ipfs"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
INIT_TIMEOUT_S = 60.0


class IpfsStartError(RuntimeError):
    """A daemon that could not be set up or did not start; the message ends with the tail of its log."""


def jsipfs_command() -> list[str]:
    """`node <ipfs cli.js>`: run with node directly (no shell, no npx), so the PID we hold is the daemon."""
    if not JSIPFS_BIN.exists():
        raise IpfsStartError(f"js-ipfs is not installed ({JSIPFS_BIN} is missing): run `{INSTALL_COMMAND}` "
                             f"in {REPO_ROOT}")
    node = shutil.which("node")
    if node is None:
        raise IpfsStartError("`node` is not on PATH: install Node.js 20 to run the js-ipfs daemon")
    return [node, str(JSIPFS_BIN.resolve())]


class IpfsDaemon:
    """A js-ipfs repo and, while started, its `jsipfs daemon` process."""

    def __init__(self, repo: Path, log_path: Path) -> None:
        self.repo = repo
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.api_port = 0
        self.gateway_port = 0
        self.swarm_port = 0
        self.peer_id = ""
        self.start_seconds: float | None = None  # how long the last start() took, for reports
        self.fixed_api_port = 0
        self._log_file: IO[bytes] | None = None

    # ---- set-up -----------------------------------------------------------------------------------------

    @classmethod
    def create(cls, base_dir: Path, *, api_port: int = 0) -> IpfsDaemon:
        """`jsipfs init` of a fresh repo at base_dir/repo, then a loopback-only, offline config."""
        base_dir.mkdir(parents=True, exist_ok=True)
        repo = base_dir / "repo"
        if repo.exists():
            raise IpfsStartError(f"{repo} already exists: give create() a fresh directory")
        daemon = cls(repo, base_dir / "daemon.log")
        command = [*jsipfs_command(), "init", "--emptyRepo", "--algorithm", "ed25519"]
        try:
            done = subprocess.run(command, env=daemon._env(), stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=INIT_TIMEOUT_S, check=False, cwd=base_dir)
        except subprocess.TimeoutExpired:
            raise IpfsStartError(f"`jsipfs init` of {repo} did not finish within {INIT_TIMEOUT_S:.0f} s") from None
        if done.returncode != 0 or not (repo / "config").is_file():
            output = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()[-20:]
            raise IpfsStartError(f"`jsipfs init` of {repo} failed with status {done.returncode}:\n"
                                 + "\n".join(output))
        daemon.peer_id = str(json.loads((repo / "config").read_text())["Identity"]["PeerID"])
        daemon._configure(api_port)
        return daemon

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("NODE_OPTIONS", "IPFS_PATH", "DEBUG")}
        env["IPFS_PATH"] = str(self.repo)
        env["IPFS_MONITORING"] = ""  # no Prometheus endpoint
        return env

    def _configure(self, api_port: int = 0) -> None:
        """Fresh free ports (the API on `api_port` when given); everything bound to loopback; no peers to
        dial, nothing announced."""
        config_path = self.repo / "config"
        config = json.loads(config_path.read_text())
        self.fixed_api_port = api_port
        self.api_port, self.gateway_port, self.swarm_port = api_port or free_port(), free_port(), free_port()
        addresses = config.setdefault("Addresses", {})
        addresses.update({
            "API": f"/ip4/{HOST}/tcp/{self.api_port}",
            "Gateway": f"/ip4/{HOST}/tcp/{self.gateway_port}",
            "Swarm": [f"/ip4/{HOST}/tcp/{self.swarm_port}"],
            "Announce": [], "NoAnnounce": [], "Delegates": [],
        })
        addresses.pop("RPC", None)  # the gRPC-over-websocket endpoint: not needed, one port less
        config["Bootstrap"] = []
        discovery = config.setdefault("Discovery", {})
        discovery["MDNS"] = {"Enabled": False, "Interval": 10}
        discovery["webRTCStar"] = {"Enabled": False}
        config.setdefault("Swarm", {})["DisableNatPortMap"] = True
        config.setdefault("Pubsub", {})["Enabled"] = False
        config_path.write_text(json.dumps(config, indent=2))

    # ---- state ------------------------------------------------------------------------------------------

    @property
    def api(self) -> str:
        """The RPC API multiaddr, as DaemonStore takes it."""
        return f"/ip4/{HOST}/tcp/{self.api_port}/http"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def rss_bytes(self) -> int:
        """Resident memory of the daemon process now (0 when not running)."""
        if not self.alive or self.process is None:
            return 0
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines, since="--- start")

    def rpc(self, command: str, *, timeout: float = 5.0, **params: str) -> Any:
        """One RPC call (POST /api/v0/<command>), JSON answer; raises OSError/URLError when unreachable."""
        query = urllib.parse.urlencode(params)
        request = urllib.request.Request(f"{self.url}/api/v0/{command}?{query}", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")

    # ---- start / stop -----------------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT_S, *, attempts: int = 3, die_with_parent: bool = True) -> None:
        """Starts the daemon on this repo and waits until `POST /api/v0/id` answers with this repo's peer
        ID. Takes new ports and retries when one was taken in the meantime. Idempotent while running."""
        if self.alive:
            return
        command = [*jsipfs_command(), "daemon", "--offline", "--enable-preload=false"]
        error: IpfsStartError | None = None
        began = time.monotonic()
        for attempt in range(attempts):
            self._clear_stale_lock()
            log_file = open(self.log_path, "ab")  # noqa: SIM115 - owned by this object, closed by stop()
            log_file.write(f"--- start (attempt {attempt + 1}, API port {self.api_port}): "
                           f"{' '.join(command)}\n".encode())
            log_file.flush()
            try:
                self.process = subprocess.Popen(
                    command, cwd=self.repo.parent, env=self._env(), stdin=subprocess.DEVNULL, stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stop() signals the whole group
                    preexec_fn=pdeathsig_kill if die_with_parent else None,
                )
            except OSError as exc:
                log_file.close()
                raise IpfsStartError(f"cannot run {command[0]}: {exc}") from exc
            self._log_file = log_file
            track(self)
            try:
                self._wait_until_ready(timeout)
                self.start_seconds = time.monotonic() - began
                return
            except IpfsStartError as exc:
                tail = self.log_tail(60).lower()
                self.stop(timeout=3.0)
                error = exc
                if self.fixed_api_port or ("eaddrinuse" not in tail and "address already in use" not in tail):
                    break
                self._configure()  # lost a port race: new ports, try again
        raise error if error is not None else IpfsStartError("js-ipfs daemon did not start")

    def _clear_stale_lock(self) -> None:
        """After a SIGKILL js-ipfs leaves repo.lock (and api) behind; no process of ours holds them now."""
        lock = self.repo / "repo.lock"
        if lock.is_dir():
            shutil.rmtree(lock, ignore_errors=True)
        elif lock.exists():
            lock.unlink()
        (self.repo / "api").unlink(missing_ok=True)

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            if not self.alive:
                code = self.process.returncode if self.process is not None else None
                raise IpfsStartError(f"js-ipfs daemon (repo {self.repo}) exited with status {code} before its "
                                     f"API answered; log {self.log_path}:\n{self.log_tail()}")
            try:
                reply = self.rpc("id", timeout=2.0)
            except (OSError, urllib.error.URLError, ValueError) as exc:
                last_error = exc
                time.sleep(0.1)
                continue
            if not isinstance(reply, dict) or reply.get("ID") != self.peer_id:
                # Someone else's daemon on that port: never mistake it for ours.
                raise IpfsStartError(f"another process answers on {self.url} (ID {reply!r:.80}), not the daemon "
                                     f"of {self.repo} (ID {self.peer_id}); address already in use")
            return
        raise IpfsStartError(f"js-ipfs daemon on {self.url} did not answer /api/v0/id within {timeout:.0f} s "
                             f"(last error: {last_error}); log {self.log_path}:\n{self.log_tail()}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM to the daemon's process group, SIGKILL after `timeout`; idempotent. Returns the exit code."""
        proc = self.process
        if proc is not None:
            stop_group(proc, timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        untrack(self)
        return proc.returncode if proc is not None else None

    def kill(self) -> None:
        """SIGKILL, as a crash would (the next start() clears the stale lock)."""
        if self.process is not None and self.alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)
        self.stop()

    def restart(self, timeout: float = START_TIMEOUT_S) -> None:
        self.stop()
        self.start(timeout)

    def __enter__(self) -> IpfsDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.alive else "stopped"
        return f"IpfsDaemon({self.api}, repo={str(self.repo)!r}, {state})"


def start_ipfs_daemon(base_dir: Path, *, timeout: float = START_TIMEOUT_S, api_port: int = 0,
                      die_with_parent: bool = True) -> IpfsDaemon:
    """create() + start(): a running daemon on a fresh repo under base_dir."""
    daemon = IpfsDaemon.create(base_dir, api_port=api_port)
    daemon.start(timeout, die_with_parent=die_with_parent)
    return daemon
