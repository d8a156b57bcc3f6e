"""Training sets published as shards with a manifest and a Merkle root over per-example hashes (SPEC 2-3).

A dataset directory (what gets published to IPFS) holds::

    dataset.json              the manifest (format "proofreg-dataset/1", canonical JSON, see below)
    shards/NNNNNN.x.npy       features of shard N: numpy .npy, shape [count, *featureShape], featureDtype
    shards/NNNNNN.y.npy       labels of shard N: numpy .npy, int64, shape [count]

Shards are read with `np.load(..., allow_pickle=False)` only, so a hostile shard cannot run code.

**Canonical example bytes** (`exampleEncoding` "proofreg-example/1"), for features `x` and integer label `y`::

    b"proofreg-example/1" 0x00
    dtype name (numpy's, ASCII: "float32", "uint8", ...) 0x00
    ndim as uint64 little-endian, then each dimension of x's shape as uint64 little-endian
    x's elements in C order, each little-endian
    y as int64 little-endian

`exampleHash = sha256(canonical bytes)` and `datasetRoot` is the OpenZeppelin StandardMerkleTree root over
the leaves `(uint256 index, bytes32 exampleHash)` for index 0..n-1 in dataset order (`registry.merkle`,
`EXAMPLE_LEAF_TYPES`), so the contract's `verifyExample` accepts the proofs made here.

**Manifest** (`dataset.json`): `format`, `name`, `source` (how the data was made: builder and its arguments),
`exampleEncoding`, `numExamples`, `featureDtype`, `featureShape`, `labelDtype` ("int64"), `numClasses`,
`shardSize`, `shards` (list of `{"features", "labels", "count", "featuresHash", "labelsHash"}`: relative paths,
example count and sha256 of each file's bytes), `examples` (list indexed by example index of
`[shard, position, exampleHash]`) and `datasetRoot`. All hashes are 0x-hex. Same arrays and shard size →
byte-identical files → the same root.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from registry.hashing import as_hash, canonical_json, sha256, sha256_file, to_hex
from registry.merkle import EXAMPLE_LEAF_TYPES, StandardMerkleTree, example_leaf, verify

DATASET_FORMAT = "proofreg-dataset/1"
EXAMPLE_ENCODING = "proofreg-example/1"
MANIFEST_NAME = "dataset.json"
DEFAULT_SHARD_SIZE = 512
_SHARD_PATH = re.compile(r"^shards/\d{6}\.[xy]\.npy$")
_ALLOWED_KINDS = "biuf"  # bool, signed, unsigned, float: no objects, strings or complex


class DatasetError(ValueError):
    """A dataset directory or example that is malformed, inconsistent with its manifest, or hostile."""


def canonical_example_bytes(features: np.ndarray | torch.Tensor, label: int) -> bytes:
    """The bytes an example hash is taken over (module docstring, "proofreg-example/1")."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    x = np.asarray(features)
    if x.dtype.kind not in _ALLOWED_KINDS:
        raise DatasetError(f"unsupported feature dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<"))
    header = EXAMPLE_ENCODING.encode() + b"\0" + x.dtype.name.encode() + b"\0"
    dims = len(x.shape).to_bytes(8, "little") + b"".join(int(d).to_bytes(8, "little") for d in x.shape)
    return header + dims + x.tobytes(order="C") + int(label).to_bytes(8, "little", signed=True)


def example_hash(features: np.ndarray | torch.Tensor, label: int) -> bytes:
    return sha256(canonical_example_bytes(features, label))


def verify_membership(dataset_root: bytes | str, index: int, features: np.ndarray | torch.Tensor, label: int,
                      proof: Sequence[bytes | str]) -> bool:
    """Whether (features, label) is example `index` of the dataset with this root, given its Merkle proof."""
    leaf = example_leaf(index, example_hash(features, label))
    return verify(as_hash(dataset_root), leaf, [as_hash(p) for p in proof])


def dataset_tree(hashes: Sequence[bytes]) -> StandardMerkleTree:
    """The StandardMerkleTree over (index, exampleHash) whose root is `datasetRoot`."""
    return StandardMerkleTree.of([(i, h) for i, h in enumerate(hashes)], EXAMPLE_LEAF_TYPES)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_dataset(out_dir: str | Path, name: str, features: np.ndarray, labels: np.ndarray, *,
                  shard_size: int = DEFAULT_SHARD_SIZE, source: Mapping[str, Any] | None = None,
                  num_classes: int | None = None) -> Dataset:
    """Writes shards and `dataset.json` for these examples (in this order) and returns the loaded dataset."""
    x = np.asarray(features)
    y = np.asarray(labels)
    if x.dtype.kind not in _ALLOWED_KINDS:
        raise DatasetError(f"unsupported feature dtype {x.dtype}")
    if y.ndim != 1 or y.dtype.kind not in "iu" or x.ndim < 1 or x.shape[0] != y.shape[0] or y.size == 0:
        raise DatasetError(f"need features [n, ...] and integer labels [n], got {x.shape} and {y.shape} {y.dtype}")
    if shard_size < 1:
        raise DatasetError("shard_size must be positive")
    x = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<"))
    y = np.ascontiguousarray(y, dtype="<i8")
    out = Path(out_dir)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    examples: list[list[Any]] = []
    hashes: list[bytes] = []
    for s, start in enumerate(range(0, x.shape[0], shard_size)):
        xs, ys = x[start:start + shard_size], y[start:start + shard_size]
        fx, fy = f"shards/{s:06d}.x.npy", f"shards/{s:06d}.y.npy"
        bx, by = _npy_bytes(xs), _npy_bytes(ys)
        _write_atomic(out / fx, bx)
        _write_atomic(out / fy, by)
        shards.append({"features": fx, "labels": fy, "count": int(xs.shape[0]),
                       "featuresHash": to_hex(sha256(bx)), "labelsHash": to_hex(sha256(by))})
        for p in range(xs.shape[0]):
            h = example_hash(xs[p], int(ys[p]))
            hashes.append(h)
            examples.append([s, p, to_hex(h)])
    root = dataset_tree(hashes).root
    manifest = {
        "format": DATASET_FORMAT,
        "name": name,
        "source": dict(source or {}),
        "exampleEncoding": EXAMPLE_ENCODING,
        "numExamples": int(x.shape[0]),
        "featureDtype": x.dtype.name,
        "featureShape": [int(d) for d in x.shape[1:]],
        "labelDtype": "int64",
        "numClasses": int(num_classes if num_classes is not None else int(y.max()) + 1),
        "shardSize": int(shard_size),
        "shards": shards,
        "examples": examples,
        "datasetRoot": to_hex(root),
    }
    _write_atomic(out / MANIFEST_NAME, canonical_json(manifest) + b"\n")
    return Dataset.load(out, expected_root=root)


@dataclass
class Dataset:
    """A loaded dataset directory. Shards are opened lazily (memory-mapped), each at most once, and checked
    against the manifest's file hash when first touched, so fetching example i reads only its shard."""

    path: Path
    manifest: dict[str, Any]
    tree: StandardMerkleTree
    verify_shards: bool = True

    def __post_init__(self) -> None:
        ex = self.manifest["examples"]
        self._shard_of = np.fromiter((e[0] for e in ex), dtype=np.int64, count=len(ex))
        self._pos_of = np.fromiter((e[1] for e in ex), dtype=np.int64, count=len(ex))
        self._hashes = [as_hash(e[2]) for e in ex]
        self._shards: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def load(cls, path: str | Path, *, expected_root: bytes | str | None = None,
             verify_shards: bool = True) -> Dataset:
        """Reads and checks `dataset.json` (format, paths, counts, and that the example hashes give its root)."""
        root_dir = Path(path)
        try:
            manifest = _parse_manifest((root_dir / MANIFEST_NAME).read_bytes())
        except OSError as exc:
            raise DatasetError(f"cannot read {root_dir / MANIFEST_NAME}: {exc}") from exc
        hashes = [as_hash(e[2]) for e in manifest["examples"]]
        tree = dataset_tree(hashes)
        if tree.root != as_hash(manifest["datasetRoot"]):
            raise DatasetError("dataset.json: example hashes do not give its datasetRoot")
        if expected_root is not None and tree.root != as_hash(expected_root):
            raise DatasetError(f"dataset root {to_hex(tree.root)} is not the expected {to_hex(as_hash(expected_root))}")
        return cls(root_dir, manifest, tree, verify_shards)

    # --- what the protocol needs -------------------------------------------------------------------------
    @property
    def root(self) -> bytes:
        return self.tree.root

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["featureShape"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest["numClasses"])

    def __len__(self) -> int:
        return len(self._hashes)

    def reference(self, cid: str | None = None) -> dict[str, Any]:
        """What a transcript manifest records about its training set."""
        return {"name": self.name, "cid": cid, "datasetRoot": to_hex(self.root), "numExamples": len(self)}

    def example_hash(self, index: int) -> bytes:
        return self._hashes[self._check_index(index)]

    def proof(self, index: int) -> list[bytes]:
        """Merkle proof of example `index` against `datasetRoot` (OpenZeppelin format, leaf first)."""
        return self.tree.proof(self._check_index(index))

    def verify_example(self, index: int, features: np.ndarray | torch.Tensor, label: int,
                       proof: Sequence[bytes] | None = None) -> bool:
        """Whether these are example `index`'s contents (by its proof, computed here if not given)."""
        i = self._check_index(index)
        return verify_membership(self.root, i, features, label, self.tree.proof(i) if proof is None else proof)

    def shards_for(self, indices: Sequence[int] | np.ndarray) -> list[int]:
        """The shard numbers that fetching these examples touches."""
        idx = self._check_indices(indices)
        return sorted({int(s) for s in np.unique(self._shard_of[idx])})

    # --- data access --------------------------------------------------------------------------------------
    def example(self, index: int, *, check: bool = False) -> tuple[np.ndarray, int]:
        """(features, label) of example `index`; with `check`, also against its manifest hash."""
        i = self._check_index(index)
        x, y = self._shard(int(self._shard_of[i]))
        feat, label = np.array(x[self._pos_of[i]]), int(y[self._pos_of[i]])
        if check and example_hash(feat, label) != self._hashes[i]:
            raise DatasetError(f"example {i} does not match its hash in dataset.json")
        return feat, label

    def examples(self, indices: Sequence[int] | np.ndarray, *, check: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Stacked features [len, *shape] and int64 labels of these examples, touching only their shards."""
        idx = self._check_indices(indices)
        shard_of, pos_of = self._shard_of[idx], self._pos_of[idx]
        dtype = np.dtype(self.manifest["featureDtype"])
        feats = np.empty((idx.size, *self.feature_shape), dtype=dtype)
        labels = np.empty(idx.size, dtype=np.int64)
        for s in np.unique(shard_of):
            sel = shard_of == s
            x, y = self._shard(int(s))
            feats[sel] = x[pos_of[sel]]
            labels[sel] = y[pos_of[sel]]
        if check:
            for j, i in enumerate(idx.tolist()):
                if example_hash(feats[j], int(labels[j])) != self._hashes[i]:
                    raise DatasetError(f"example {i} does not match its hash in dataset.json")
        return feats, labels

    def batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor,
              device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) tensors for a training step: features as stored, labels int64."""
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        feats, labels = self.examples(indices)
        x, y = torch.from_numpy(feats), torch.from_numpy(labels)
        if device is not None and torch.device(device).type != "cpu":
            x, y = x.to(device, non_blocking=False), y.to(device, non_blocking=False)
        return x, y

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All features and labels (loads every shard)."""
        return self.examples(np.arange(len(self), dtype=np.int64))

    # --- internals ----------------------------------------------------------------------------------------
    def _check_index(self, index: int) -> int:
        i = int(index)
        if not 0 <= i < len(self._hashes):
            raise IndexError(f"example index {i} out of range [0, {len(self._hashes)})")
        return i

    def _check_indices(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise DatasetError(f"example indices must be a 1-d integer array, got {idx.dtype} {idx.shape}")
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= len(self._hashes)):
            raise IndexError(f"example index out of range [0, {len(self._hashes)})")
        return idx

    def _shard(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        cached = self._shards.get(s)
        if cached is not None:
            return cached
        info = self.manifest["shards"][s]
        fx, fy = self.path / info["features"], self.path / info["labels"]
        try:
            if self.verify_shards:
                for f, key in ((fx, "featuresHash"), (fy, "labelsHash")):
                    if sha256_file(f) != as_hash(info[key]):
                        raise DatasetError(f"{f} does not match its {key} in dataset.json")
            x = np.load(fx, mmap_mode="r", allow_pickle=False)
            y = np.load(fy, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"shard {s} is not a plain .npy array: {exc}") from exc
        if (x.shape != (info["count"], *self.feature_shape) or x.dtype != np.dtype(self.manifest["featureDtype"])
                or y.shape != (info["count"],) or y.dtype != np.dtype("<i8")):
            raise DatasetError(f"shard {s} has shape/dtype {x.shape} {x.dtype}, {y.shape} {y.dtype}, "
                               "not what dataset.json says")
        self._shards[s] = (x, y)
        return x, y


def _parse_manifest(raw: bytes) -> dict[str, Any]:
    """Structural checks of dataset.json so that later indexing cannot go out of bounds or outside the dir."""
    import json

    try:
        m = json.loads(raw)
    except ValueError as exc:
        raise DatasetError(f"dataset.json is not JSON: {exc}") from exc
    if not isinstance(m, dict) or m.get("format") != DATASET_FORMAT:
        raise DatasetError(f"dataset.json: expected format {DATASET_FORMAT!r}")
    if m.get("exampleEncoding") != EXAMPLE_ENCODING:
        raise DatasetError(f"dataset.json: unknown example encoding {m.get('exampleEncoding')!r}")
    try:
        dtype = np.dtype(m["featureDtype"])
        shards, examples = m["shards"], m["examples"]
        if dtype.kind not in _ALLOWED_KINDS or not all(isinstance(d, int) and d >= 0 for d in m["featureShape"]):
            raise DatasetError("dataset.json: bad featureDtype/featureShape")
        for s, info in enumerate(shards):
            for key in ("features", "labels"):
                if not _SHARD_PATH.match(info[key]) or not info[key].startswith(f"shards/{s:06d}."):
                    raise DatasetError(f"dataset.json: bad shard path {info[key]!r}")
            as_hash(info["featuresHash"])
            as_hash(info["labelsHash"])
        if len(examples) != m["numExamples"] or not examples:
            raise DatasetError("dataset.json: numExamples does not match the example list")
        for e in examples:
            s, p = e[0], e[1]
            if not (isinstance(s, int) and isinstance(p, int) and 0 <= s < len(shards)
                    and 0 <= p < shards[s]["count"]):
                raise DatasetError(f"dataset.json: example entry {e!r} points outside its shards")
            as_hash(e[2])
        as_hash(m["datasetRoot"])
    except (KeyError, TypeError, IndexError) as exc:
        raise DatasetError(f"dataset.json is malformed: {exc!r}") from exc
    except ValueError as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"dataset.json is malformed: {exc}") from exc
    return m


# ---------------------------------------------------------------------------------------------------------
# Built-in datasets (no download)
# ---------------------------------------------------------------------------------------------------------


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1,797 examples), read from its packaged CSV without importing sklearn.

    Features are float32 pixel values / 16 (exact in float32), shape [1, 8, 8]; labels int64 in 0..9.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the digits dataset needs scikit-learn installed (its wheel ships the data file)")
    csv = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(csv, "rt") as f:
        data = np.loadtxt(f, delimiter=",", dtype=np.float64)
    if data.shape != (1797, 65):
        raise DatasetError(f"unexpected digits data shape {data.shape}")
    x = (data[:, :64] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = data[:, 64].astype(np.int64)
    return x, y


def synthetic_arrays(n: int = 1024, features: int = 16, classes: int = 4, seed: int = 0, noise: float = 1.0,
                     separation: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded Gaussian-blobs classification set: class centers N(0, separation²), examples center + N(0, noise²).

    Uses numpy's PCG64 Generator (normal, integers); the published files and root are what count, the seed
    only makes them reproducible with the same numpy.
    """
    if n < 1 or features < 1 or classes < 1:
        raise DatasetError("synthetic: n, features and classes must be positive")
    rng = np.random.Generator(np.random.PCG64(seed))
    centers = rng.normal(0.0, separation, size=(classes, features))
    y = rng.integers(0, classes, size=n, dtype=np.int64)
    x = (centers[y] + rng.normal(0.0, noise, size=(n, features))).astype(np.float32)
    return x, y


BUILTIN_DATASETS = ("digits", "synthetic")


def build_builtin(name: str, out_dir: str | Path, *, shard_size: int = DEFAULT_SHARD_SIZE,
                  **args: Any) -> Dataset:
    """Builds built-in dataset `name` ("digits", or "synthetic" with `synthetic_arrays`' arguments)."""
    if name == "digits":
        if args:
            raise DatasetError(f"digits takes no arguments, got {sorted(args)}")
        x, y = digits_arrays()
        return build_dataset(out_dir, "digits", x, y, shard_size=shard_size, num_classes=10,
                             source={"builder": "digits", "origin": "scikit-learn digits.csv.gz", "scale": "1/16"})
    if name == "synthetic":
        params: dict[str, Any] = {"n": 1024, "features": 16, "classes": 4, "seed": 0, "noise": 1.0, "separation": 2.0}
        unknown = set(args) - set(params)
        if unknown:
            raise DatasetError(f"synthetic: unknown arguments {sorted(unknown)}")
        params.update(args)
        x, y = synthetic_arrays(**params)
        return build_dataset(out_dir, "synthetic", x, y, shard_size=shard_size, num_classes=int(params["classes"]),
                             source={"builder": "synthetic", **params})
    raise DatasetError(f"unknown built-in dataset {name!r}; built-ins are {list(BUILTIN_DATASETS)}")


def load_dataset(path: str | Path, *, expected_root: bytes | str | None = None) -> Dataset:
    return Dataset.load(path, expected_root=expected_root)
