"""Pytest fixtures for a real Hardhat node (the launcher is `registry.devnet.hardhat`, shared with `proofreg devnet`).

Load as a plugin (`pytest_plugins = ["tests.nodes"]` in tests/conftest.py):

    hardhat_node          session-scoped HardhatNode shared by the whole session (`.url` is its URL)
    hardhat_url           the same node's URL as a string
    hardhat_node_factory  session-scoped factory: `hardhat_node_factory(**kwargs)` starts another node
                          (same keyword arguments as start_hardhat_node); all are stopped at session end

Tests that use any of them are marked `hardhat` automatically (`-m "not hardhat"` deselects them).

PYTEST_DONT_REWRITE (no asserts here; test modules may import this before pytest loads it as a plugin)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from registry.devnet.hardhat import (
    HARDHAT_BIN,
    HARDHAT_CHAIN_ID,
    REPO_ROOT,
    TEST_MNEMONIC,
    HardhatNode,
    NodeStartError,
    rpc_call,
    start_hardhat_node,
)
from registry.devnet.procs import free_port

__all__ = [
    "HARDHAT_BIN",
    "HARDHAT_CHAIN_ID",
    "REPO_ROOT",
    "TEST_MNEMONIC",
    "HardhatNode",
    "NodeStartError",
    "free_port",
    "rpc_call",
    "start_hardhat_node",
]

# --- pytest integration ---------------------------------------------------------------------------------

_NODE_FIXTURES = {"hardhat_node", "hardhat_url", "hardhat_node_factory"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks every test that uses a Hardhat fixture with `hardhat`."""
    for item in items:
        if _NODE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.hardhat)


@pytest.fixture(scope="session")
def hardhat_node_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., HardhatNode]]:
    """Starts Hardhat nodes on demand (keyword arguments of start_hardhat_node); stops them all at the end."""
    started: list[HardhatNode] = []

    def start(**kwargs: Any) -> HardhatNode:
        if "log_path" not in kwargs:
            kwargs["log_path"] = tmp_path_factory.mktemp("hardhat") / "node.log"
        try:
            node = start_hardhat_node(**kwargs)
        except NodeStartError as exc:
            pytest.fail(str(exc), pytrace=False)
        started.append(node)
        return node

    yield start
    for node in reversed(started):
        node.stop()


@pytest.fixture(scope="session")
def hardhat_node(hardhat_node_factory: Callable[..., HardhatNode]) -> HardhatNode:
    """One Hardhat node for the whole session (tests share its chain: use snapshot()/revert() to isolate)."""
    return hardhat_node_factory()


@pytest.fixture(scope="session")
def hardhat_url(hardhat_node: HardhatNode) -> str:
    return hardhat_node.url
