"""OpenZeppelin StandardMerkleTree in Python (SPEC section 4).

Leaves are `keccak256(keccak256(abi.encode(values)))`, sorted by hash; the tree is the array layout of
`@openzeppelin/merkle-tree` (leaves at the end in reverse order, node i has children 2i+1 and 2i+2) and
interior nodes hash the sorted pair. Roots, proofs and `dump()` match the JS library byte for byte
(`tests/vectors/merkle.json` comes from it), and proofs verify with `MerkleProof.verify` and the
registry's `verifySegment` / `verifyExample`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import encode as abi_encode

from registry.hashing import as_hash, keccak256, to_hex

SEGMENT_LEAF_TYPES = ("uint256", "bytes32", "bytes32", "bytes32")
EXAMPLE_LEAF_TYPES = ("uint256", "bytes32")


def _normalize(types: Sequence[str], value: Sequence[Any]) -> tuple[Any, ...]:
    if len(types) != len(value):
        raise ValueError(f"leaf has {len(value)} fields, encoding has {len(types)}")
    out: list[Any] = []
    for t, v in zip(types, value, strict=True):
        if t.startswith("uint") or t.startswith("int"):
            out.append(int(v, 0) if isinstance(v, str) else int(v))
        elif t.startswith("bytes") and t != "bytes":
            out.append(bytes.fromhex(v.removeprefix("0x")) if isinstance(v, str) else bytes(v))
        else:
            out.append(v)
    return tuple(out)


def _encode_static(types: Sequence[str], value: tuple[Any, ...]) -> bytes | None:
    """abi.encode of uint256/bytes32-only leaves is plain concatenation; skip eth_abi on the hot path."""
    parts = []
    for t, v in zip(types, value, strict=True):
        if t == "uint256":
            parts.append(v.to_bytes(32, "big"))
        elif t == "bytes32":
            parts.append(as_hash(v))
        else:
            return None
    return b"".join(parts)


def leaf_hash(types: Sequence[str], value: Sequence[Any]) -> bytes:
    norm = _normalize(types, value)
    encoded = _encode_static(types, norm)
    if encoded is None:
        encoded = abi_encode(list(types), list(norm))
    return keccak256(keccak256(encoded))


def hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak256(a + b if a < b else b + a)


def process_proof(leaf: bytes, proof: Sequence[bytes]) -> bytes:
    node = leaf
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node


def verify(root: bytes, leaf: bytes, proof: Sequence[bytes]) -> bool:
    return process_proof(leaf, proof) == root


def segment_leaf(index: int, ckpt_hash: bytes, next_ckpt_hash: bytes, batches_hash: bytes) -> bytes:
    return leaf_hash(SEGMENT_LEAF_TYPES, (index, ckpt_hash, next_ckpt_hash, batches_hash))


def example_leaf(index: int, example_hash: bytes) -> bytes:
    return leaf_hash(EXAMPLE_LEAF_TYPES, (index, example_hash))


@dataclass(frozen=True)
class StandardMerkleTree:
    tree: tuple[bytes, ...]
    values: tuple[tuple[Any, ...], ...]  # in the order given to `of`
    tree_index: tuple[int, ...]  # tree position of each value
    leaf_encoding: tuple[str, ...]

    @classmethod
    def of(cls, values: Sequence[Sequence[Any]], leaf_encoding: Sequence[str]) -> StandardMerkleTree:
        if not values:
            raise ValueError("a Merkle tree needs at least one leaf")
        types = tuple(leaf_encoding)
        normalized = [_normalize(types, v) for v in values]
        hashed = sorted(((leaf_hash(types, v), i) for i, v in enumerate(normalized)), key=lambda x: x[0])
        n = len(hashed)
        tree: list[bytes] = [b""] * (2 * n - 1)
        positions = [0] * n
        for leaf_index, (h, value_index) in enumerate(hashed):
            pos = len(tree) - 1 - leaf_index
            tree[pos] = h
            positions[value_index] = pos
        for i in range(len(tree) - 1 - n, -1, -1):
            tree[i] = hash_pair(tree[2 * i + 1], tree[2 * i + 2])
        return cls(tuple(tree), tuple(normalized), tuple(positions), types)

    @property
    def root(self) -> bytes:
        return self.tree[0]

    def __len__(self) -> int:
        return len(self.values)

    def leaf(self, value_index: int) -> bytes:
        return self.tree[self.tree_index[value_index]]

    def proof(self, value_index: int) -> list[bytes]:
        """Sibling hashes from the leaf of `values[value_index]` up to the root."""
        i = self.tree_index[value_index]
        out = []
        while i > 0:
            sibling = i - 1 if i % 2 == 0 else i + 1
            out.append(self.tree[sibling])
            i = (i - 1) // 2
        return out

    def dump(self) -> dict[str, Any]:
        """The `standard-v1` JSON of `@openzeppelin/merkle-tree` (`StandardMerkleTree.load` reads it)."""

        def show(v: Any) -> Any:
            return to_hex(v) if isinstance(v, bytes) else str(v) if isinstance(v, int) else v

        return {
            "format": "standard-v1",
            "leafEncoding": list(self.leaf_encoding),
            "tree": [to_hex(n) for n in self.tree],
            "values": [
                {"value": [show(x) for x in v], "treeIndex": self.tree_index[i]} for i, v in enumerate(self.values)
            ],
        }

    @classmethod
    def load(cls, data: dict[str, Any]) -> StandardMerkleTree:
        """Reads a `standard-v1` dump and checks that every node is consistent (a hostile dump fails)."""
        if data.get("format") != "standard-v1":
            raise ValueError(f"unknown Merkle tree format {data.get('format')!r}")
        types = tuple(data["leafEncoding"])
        tree = tuple(as_hash(n) for n in data["tree"])
        values = tuple(_normalize(types, v["value"]) for v in data["values"])
        index = tuple(int(v["treeIndex"]) for v in data["values"])
        loaded = cls(tree, values, index, types)
        rebuilt = cls.of(values, types)
        if rebuilt.root != loaded.root or sorted(rebuilt.tree) != sorted(tree):
            raise ValueError("Merkle tree dump is inconsistent with its values")
        return loaded
