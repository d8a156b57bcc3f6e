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

from registry.core.hashing import as_hash, keccak256, to_hex

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

    def multi_proof(self, value_indices: Sequence[int]) -> MultiProof:
        """One multiproof for several values (`getMultiProof`); its leaves come in descending tree position."""
        return multi_proof(self.tree, [self.tree_index[i] for i in value_indices])

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


# --- multiproofs (OpenZeppelin `getMultiProof` / `MerkleProof.multiProofVerify`) ------------------------------
@dataclass(frozen=True)
class MultiProof:
    """Leaves (in the order `process_multi_proof` consumes them: descending tree position), the sibling hashes
    not derivable from them, and one flag per interior hash (True: both children come from leaves/hashes)."""

    leaves: tuple[bytes, ...]
    proof: tuple[bytes, ...]
    flags: tuple[bool, ...]


def multi_proof(tree: Sequence[bytes], positions: Sequence[int]) -> MultiProof:
    """`getMultiProof` of `@openzeppelin/merkle-tree` core: the multiproof of the leaves at these tree positions."""
    n = len(tree)
    first_leaf = n // 2  # nodes n//2 .. n-1 are the leaves of the array layout
    stack = sorted({int(p) for p in positions}, reverse=True)
    if len(stack) != len(positions):
        raise ValueError("a multiproof cannot hold the same leaf twice")
    for p in stack:
        if not first_leaf <= p < n:
            raise ValueError(f"tree position {p} is not a leaf")
    leaves = tuple(tree[p] for p in stack)
    proof: list[bytes] = []
    flags: list[bool] = []
    queue = list(stack)
    head = 0
    while head < len(queue) and queue[head] > 0:
        j = queue[head]
        head += 1
        sibling = j - 1 if j % 2 == 0 else j + 1
        if head < len(queue) and queue[head] == sibling:
            flags.append(True)
            head += 1
        else:
            flags.append(False)
            proof.append(tree[sibling])
        queue.append((j - 1) // 2)
    if not positions:
        proof.append(tree[0])
    return MultiProof(leaves, tuple(proof), tuple(flags))


def process_multi_proof(leaves: Sequence[bytes], proof: Sequence[bytes], flags: Sequence[bool]) -> bytes:
    """`MerkleProof.processMultiProof` (OpenZeppelin 5): the root these leaves and proof give. Raises ValueError
    on a malformed proof (wrong length, a flag reading a hash not yet computed, an unused proof node)."""
    n_leaves, n_flags = len(leaves), len(flags)
    if n_leaves + len(proof) != n_flags + 1:
        raise ValueError("multiproof: leaves + proof must be flags + 1")
    hashes: list[bytes] = []
    leaf_pos = hash_pos = proof_pos = 0

    def take() -> bytes:
        nonlocal leaf_pos, hash_pos
        if leaf_pos < n_leaves:
            leaf_pos += 1
            return leaves[leaf_pos - 1]
        if hash_pos >= len(hashes):
            raise ValueError("multiproof: a flag reads a hash not yet computed")
        hash_pos += 1
        return hashes[hash_pos - 1]

    for flag in flags:
        a = take()
        if flag:
            b = take()
        else:
            if proof_pos >= len(proof):
                raise ValueError("multiproof: too few proof nodes")
            b = proof[proof_pos]
            proof_pos += 1
        hashes.append(hash_pair(a, b))
    if n_flags:
        if proof_pos != len(proof) or hash_pos != n_flags - 1 or leaf_pos != n_leaves:
            raise ValueError("multiproof: not every leaf, hash and proof node is used exactly once")
        return hashes[-1]
    if n_leaves:
        return leaves[0]
    return proof[0]


def verify_multi(root: bytes, leaves: Sequence[bytes], proof: Sequence[bytes], flags: Sequence[bool]) -> bool:
    """Whether these leaves all belong to the tree of `root` (False, never an exception, for a bad proof)."""
    try:
        return process_multi_proof(leaves, proof, flags) == root
    except ValueError:
        return False
