"""Every custom error of the registry is provoked by at least one test (the issue asks for every revert)."""

from __future__ import annotations

import re
from pathlib import Path

from registry.core.artifact import load_artifact


def test_every_custom_error_is_tested() -> None:
    errors = {item["name"] for item in load_artifact().abi if item.get("type") == "error"}
    assert len(errors) > 30
    tested: set[str] = set()
    for path in Path(__file__).parent.glob("test_contract*.py"):
        tested |= set(re.findall(r"""reverts\(\s*["'](\w+)["']""", path.read_text()))
    missing = sorted(errors - tested)
    assert not missing, f"custom errors no test provokes: {missing}"
    assert not tested - errors, f"tests expect errors the contract lacks: {sorted(tested - errors)}"
