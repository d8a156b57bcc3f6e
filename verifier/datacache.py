"""The node's dataset cache: the verified Merkle tree of a dataset, built once per (datasetRoot, sha256 of
dataset.json) and shared by every audit the node runs.

Building the tree of a dataset costs about 3n keccak256 (two per leaf, one per interior node); before this
cache every audit rebuilt it and then walked one membership proof per replayed example. Now:

- **in memory**: a thread-safe LRU of `StandardMerkleTree`s keyed by `(datasetRoot, sha256(dataset.json))`.
  Two jobs that ask for the same key at once build it once (a per-key lock); the key covers the exact bytes
  the tree is built from, so an entry can never stand for other example hashes;
- **on disk** (optional, `directory=`): `<datasetRoot>/<sha256>.tree`, the array-layout nodes (32 bytes each)
  then the tree position of each value (uint32 big-endian). Content-addressed and so safe to share between
  nodes, but never trusted: on load every leaf is recomputed from dataset.json's example hashes and every
  interior node from its children, and the root must be datasetRoot; a file that fails is deleted, counted
  in `stats.disk_rejected`, and the tree rebuilt.

With a verified tree, membership of a replayed example i is the equality of its recomputed exampleHash with
leaf i's exampleHash (`Dataset.example_hash`), no per-example proof walk.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from registry.core.hashing import as_hash, sha256, to_hex
from registry.core.merkle import EXAMPLE_LEAF_TYPES, StandardMerkleTree, example_leaf, hash_pair
from registry.spec.datasets import dataset_tree

Key = tuple[bytes, bytes]


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0  # trees built
    disk_hits: int = 0
    disk_rejected: int = 0


class DatasetCache:
    def __init__(self, directory: str | Path | None = None, max_entries: int = 8) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.max_entries = max_entries
        self.stats = CacheStats()
        self._trees: OrderedDict[Key, StandardMerkleTree] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Key, threading.Lock] = {}

    def tree_for(self, dataset_root: bytes) -> _TreeFor:
        """The `tree_for` callback for `Dataset.load(..., tree_for=...)` of a dataset claimed to have this root."""
        return _TreeFor(self, as_hash(dataset_root))

    def tree(self, dataset_root: bytes, manifest_raw: bytes, hashes: list[bytes]) -> StandardMerkleTree:
        """The verified tree over `hashes` (the example hashes of `manifest_raw`); its root may still differ
        from `dataset_root` (the caller compares, as `Dataset.load` does)."""
        key = (as_hash(dataset_root), sha256(manifest_raw))
        with self._lock:
            got = self._trees.get(key)
            if got is not None:
                self._trees.move_to_end(key)
                self.stats.hits += 1
                return got
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                got = self._trees.get(key)
                if got is not None:
                    self.stats.hits += 1
                    return got
            tree = self._from_disk(key, hashes)
            if tree is None:
                tree = dataset_tree(hashes)
                with self._lock:
                    self.stats.misses += 1
                if tree.root == key[0]:
                    self._to_disk(key, tree)
            with self._lock:
                if tree.root == key[0]:  # only trees of the claimed root are worth keeping
                    self._trees[key] = tree
                    while len(self._trees) > self.max_entries:
                        self._trees.popitem(last=False)
                self._key_locks.pop(key, None)
            return tree

    def __len__(self) -> int:
        return len(self._trees)

    # --- disk ---------------------------------------------------------------------------------------------
    def path(self, key: Key) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / to_hex(key[0]) / f"{key[1].hex()}.tree"

    def _from_disk(self, key: Key, hashes: list[bytes]) -> StandardMerkleTree | None:
        path = self.path(key)
        if path is None or not path.exists():
            return None
        tree = _decode(path.read_bytes(), hashes, key[0])
        with self._lock:
            if tree is None:
                self.stats.disk_rejected += 1
            else:
                self.stats.disk_hits += 1
        if tree is None:
            path.unlink(missing_ok=True)
        return tree

    def _to_disk(self, key: Key, tree: StandardMerkleTree) -> None:
        path = self.path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_bytes(b"".join(tree.tree) + struct.pack(f">{len(tree)}I", *tree.tree_index))
        os.replace(tmp, path)


class _TreeFor:
    def __init__(self, cache: DatasetCache, root: bytes) -> None:
        self.cache, self.root = cache, root

    def __call__(self, raw: bytes, hashes: list[bytes]) -> StandardMerkleTree:
        return self.cache.tree(self.root, raw, hashes)


def _decode(data: bytes, hashes: list[bytes], root: bytes) -> StandardMerkleTree | None:
    """The tree in a cache file, fully re-verified against the example hashes and `root`; None when it fails."""
    n = len(hashes)
    size = 2 * n - 1
    if n == 0 or len(data) != 32 * size + 4 * n:
        return None
    nodes = tuple(data[32 * i: 32 * i + 32] for i in range(size))
    index = struct.unpack(f">{n}I", data[32 * size:])
    if nodes[0] != root:
        return None
    first_leaf = size - n
    if sorted(index) != list(range(first_leaf, size)):
        return None
    for i, h in enumerate(hashes):
        if nodes[index[i]] != example_leaf(i, h):
            return None
    # leaves sorted by hash, as `StandardMerkleTree.of` lays them out (so proofs and dumps stay identical)
    leaves = nodes[first_leaf:]
    if any(leaves[j] < leaves[j + 1] for j in range(len(leaves) - 1)):
        return None
    for i in range(first_leaf - 1, -1, -1):
        if nodes[i] != hash_pair(nodes[2 * i + 1], nodes[2 * i + 2]):
            return None
    values = tuple((i, h) for i, h in enumerate(hashes))
    return StandardMerkleTree(nodes, values, tuple(index), EXAMPLE_LEAF_TYPES)


_SHARED = DatasetCache()


def shared_cache() -> DatasetCache:
    """The process-wide cache every Engine uses unless it is given another."""
    return _SHARED
