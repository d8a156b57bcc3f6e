"""Digests of the protocol (SPEC sections 2-4): keccak/sha256, the checkpoint chain, canonical JSON and the
canonical weights hash. Pinned by `tests/vectors/hashing.json`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from eth_hash.auto import keccak as _keccak

HASH_SIZE = 32


def keccak256(data: bytes) -> bytes:
    return bytes(_keccak(data))


def sha256(data: bytes | bytearray | memoryview) -> bytes:
    return hashlib.sha256(data).digest()


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> bytes:
    """sha256 of a file's bytes, streamed so large checkpoints never sit in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.digest()


def as_hash(value: bytes | str) -> bytes:
    """A 32-byte hash from bytes or 0x-hex; anything else is a ValueError."""
    raw = bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else bytes(value)
    if len(raw) != HASH_SIZE:
        raise ValueError(f"expected a 32-byte hash, got {len(raw)} bytes")
    return raw


def to_hex(value: bytes) -> str:
    return "0x" + value.hex()


def chain_hashes(ckpt_hashes: Sequence[bytes]) -> list[bytes]:
    """Every link of the checkpoint chain: h_0 = c_0, h_i = keccak256(h_{i-1} || c_i)."""
    if not ckpt_hashes:
        raise ValueError("a checkpoint chain needs at least one checkpoint")
    links = [as_hash(ckpt_hashes[0])]
    for c in ckpt_hashes[1:]:
        links.append(keccak256(links[-1] + as_hash(c)))
    return links


def chain_head(ckpt_hashes: Sequence[bytes]) -> bytes:
    return chain_hashes(ckpt_hashes)[-1]


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN/Infinity: the bytes that `configHash` is taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def config_hash(config: Mapping[str, Any]) -> bytes:
    return keccak256(canonical_json(config))


def _tensor_parts(value: Any) -> tuple[str, tuple[int, ...], bytes | memoryview]:
    """(dtype name, shape, little-endian raw bytes) of a numpy array or torch tensor."""
    import numpy as np

    if type(value).__module__.startswith("torch"):
        import torch

        t = value.detach().to("cpu").contiguous()
        dtype = str(t.dtype).removeprefix("torch.")
        raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else np.zeros(0, np.uint8)
        return dtype, tuple(t.shape), raw.data
    arr = np.asarray(value)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    shape = tuple(arr.shape)  # before any copy: np.ascontiguousarray would turn a 0-d scalar into shape (1,)
    flat = arr.reshape(-1) if arr.flags.c_contiguous else arr.copy(order="C").reshape(-1)
    return arr.dtype.name, shape, flat.view(np.uint8).data


def weights_hash(tensors: Mapping[str, Any]) -> bytes:
    """Canonical weights hash: for each tensor in sorted name order, sha256 over name, 0x00, dtype name,
    0x00, shape as little-endian uint64s, raw little-endian data. Dtype names are torch's without the
    `torch.` prefix (`float32`, `bfloat16`, `int64`, ...), which equal numpy's names where both exist."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        dtype, shape, raw = _tensor_parts(tensors[name])
        h.update(name.encode() + b"\0" + dtype.encode() + b"\0")
        h.update(b"".join(int(d).to_bytes(8, "little") for d in shape))
        h.update(raw)
    return h.digest()


def hashes_hex(values: Iterable[bytes]) -> list[str]:
    return [to_hex(v) for v in values]
