"""Pytest fixtures for a real js-ipfs daemon (the launcher is `registry.devnet.ipfs`, shared with `proofreg devnet`).

Install once (CI does): `npm ci --prefix tools/ipfs`. Without it the fixtures FAIL, saying so (they are not
skipped: a silently skipped daemon test hides a broken setup). Load with `pytest_plugins = ["tests.ipfs_node"]`:

    ipfs_daemon          session-scoped running daemon shared by the whole session (do not stop it)
    ipfs_daemon_factory  session-scoped factory: `ipfs_daemon_factory()` creates and starts another daemon
                         on a fresh repo, for tests that stop/restart it; all are stopped at session end

Tests using them are marked `ipfs` (`-m "not ipfs"` deselects them).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from registry.devnet.ipfs import (
    INSTALL_COMMAND,
    IPFS_TOOLS,
    JSIPFS_BIN,
    IpfsDaemon,
    IpfsStartError,
    jsipfs_command,
    start_ipfs_daemon,
)
from registry.devnet.procs import free_port

__all__ = [
    "INSTALL_COMMAND",
    "IPFS_TOOLS",
    "JSIPFS_BIN",
    "IpfsDaemon",
    "IpfsStartError",
    "free_port",
    "jsipfs_command",
    "start_ipfs_daemon",
]

# --- pytest integration ---------------------------------------------------------------------------------

_IPFS_FIXTURES = {"ipfs_daemon", "ipfs_daemon_factory"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"ipfs: needs the js-ipfs daemon ({INSTALL_COMMAND})")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks every test that uses an IPFS daemon fixture with `ipfs`."""
    for item in items:
        if _IPFS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ipfs)


@pytest.fixture(scope="session")
def ipfs_daemon_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], IpfsDaemon]]:
    """Creates and starts daemons on fresh repos on demand; stops them all at the end of the session."""
    started: list[IpfsDaemon] = []

    def start() -> IpfsDaemon:
        try:
            daemon = IpfsDaemon.create(tmp_path_factory.mktemp("ipfs"))
            started.append(daemon)
            daemon.start()
        except IpfsStartError as exc:
            pytest.fail(str(exc), pytrace=False)
        return daemon

    yield start
    for daemon in reversed(started):
        daemon.stop()


@pytest.fixture(scope="session")
def ipfs_daemon(ipfs_daemon_factory: Callable[[], IpfsDaemon]) -> IpfsDaemon:
    """One daemon for the whole session; tests share its content (content addressing keeps them apart)."""
    return ipfs_daemon_factory()
