"""Readable messages for the registry's custom-error reverts, and the light-weight error types the CLI
catches (kept here so that importing the CLI does not import torch)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import to_checksum_address

from registry.core.artifact import load_artifact
from registry.core.hashing import keccak256


class PublishError(RuntimeError):
    """A transcript cannot be published; one line saying what is wrong."""


@lru_cache(maxsize=1)
def _error_table() -> dict[bytes, tuple[str, list[str], list[str]]]:
    table = {}
    for item in load_artifact().abi:
        if item.get("type") != "error":
            continue
        types = [i["type"] for i in item["inputs"]]
        names = [i["name"] for i in item["inputs"]]
        selector = keccak256(f"{item['name']}({','.join(types)})".encode())[:4]
        table[selector] = (item["name"], types, names)
    return table


def decode_revert(data: bytes | str | None) -> tuple[str, dict[str, Any]] | None:
    """(error name, arguments) of a registry custom error, or None for other revert data."""
    if data is None:
        return None
    raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else bytes(data)
    if len(raw) < 4:
        return None
    entry = _error_table().get(raw[:4])
    if entry is None:
        return None
    name, types, names = entry
    try:
        values = abi_decode(types, raw[4:])
    except Exception:  # noqa: BLE001 - malformed payload: report the name only
        return name, {}
    return name, {n: _show(t, v) for n, t, v in zip(names, types, values, strict=True)}


def _show(abi_type: str, value: Any) -> Any:
    if abi_type == "address":
        return to_checksum_address(value)
    return "0x" + value.hex() if isinstance(value, bytes) else value


def describe_revert(data: bytes | str | None) -> str:
    decoded = decode_revert(data)
    if decoded is None:
        return "reverted without a registry error"
    name, args = decoded
    return f"{name}({', '.join(f'{k}={v}' for k, v in args.items())})"


def revert_data(exc: BaseException) -> bytes | None:
    """The raw revert data carried by an exception from web3.py, eth-tester or a JSON-RPC node, if any."""
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if isinstance(data, dict) and isinstance(data.get("data"), str):
        return bytes.fromhex(data["data"].removeprefix("0x"))
    message = str(exc)
    marker = message.find("b'") if "b'" in message else message.find('b"')
    if marker >= 0:  # eth-tester shows the data as a bytes literal
        import ast

        try:
            value = ast.literal_eval(message[marker:])
        except (ValueError, SyntaxError):
            return None
        return value if isinstance(value, bytes) else None
    if isinstance(exc.args[0] if exc.args else None, dict):
        inner = exc.args[0].get("data")
        if isinstance(inner, str) and inner.startswith("0x"):
            return bytes.fromhex(inner[2:])
    return None


def describe_exception(exc: BaseException) -> str:
    """One line for a failed call or transaction: the registry error if there is one, else the message."""
    decoded = decode_revert(revert_data(exc))
    if decoded is not None:
        name, args = decoded
        return f"{name}({', '.join(f'{k}={v}' for k, v in args.items())})"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]
