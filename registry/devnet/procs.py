"""Process helpers shared by the local node launchers (`registry.devnet.hardhat`, `registry.devnet.ipfs`).

- `free_port()`: a loopback TCP port that was free a moment ago.
- `pdeathsig_kill`: a `preexec_fn` that makes the child get SIGKILL when the thread that started it exits
  (Linux PR_SET_PDEATHSIG; a no-op elsewhere).
- `log_tail(path)`: the end of a log file, optionally only what follows the last start marker.
- `stop_group(proc)`: SIGTERM to a process group, SIGKILL after a timeout, then SIGKILL to whatever is left.
- `track(x)` / `untrack(x)`: the set of started, not yet stopped processes that an atexit hook stops.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Protocol

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A TCP port that was free on `host` a moment ago (the caller must tolerate losing a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _load_libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()  # loaded here, not in the forked child


def pdeathsig_kill() -> None:
    """preexec_fn: the child gets SIGKILL when the thread that started it exits (Linux PR_SET_PDEATHSIG)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)


def log_tail(path: Path, lines: int = 30, *, since: str | None = None) -> str:
    """The last `lines` lines of a log (of what follows the last `since` marker, when given)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    if since is not None:
        text = text.rsplit(since, 1)[-1]
    tail = text.strip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(empty log)"


def stop_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to the process group led by `proc`, SIGKILL after `timeout`; then SIGKILL to the group, so
    nothing the leader spawned survives it. Idempotent."""
    if proc.poll() is None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
    # The group leader is gone; make sure nothing it spawned survives in its group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class Stoppable(Protocol):
    def stop(self, timeout: float = ...) -> int | None: ...


#: Processes started and not yet stopped (strong references, so the atexit hook always finds them).
_LIVE: set[Stoppable] = set()
_LIVE_LOCK = threading.Lock()


def track(live: Stoppable) -> None:
    """Registers a started process for the atexit hook (its stop() must call untrack)."""
    with _LIVE_LOCK:
        _LIVE.add(live)


def untrack(live: Stoppable) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(live)


def _stop_all_live() -> None:
    with _LIVE_LOCK:
        items = list(_LIVE)
    for item in items:
        with contextlib.suppress(Exception):
            item.stop(timeout=3.0)


atexit.register(_stop_all_live)
