"""Training sets published as shards with a manifest and a Merkle root over per-example hashes (SPEC 2-3).

A dataset directory (what gets published to IPFS) holds::

    dataset.json              the manifest (format "proofreg-dataset/1", canonical JSON, see below)
    shards/NNNNNN.x.npy       features of shard N: numpy .npy, shape [count, *featureShape], featureDtype
    shards/NNNNNN.y.npy       targets of shard N: numpy .npy, shape [count, *labelShape], labelDtype

Shards are read with `np.load(..., mmap_mode="r", allow_pickle=False)` only, so a hostile shard cannot run
code and a dataset larger than memory is read one example range at a time. Features and targets are tensors of
any shape and of the dtypes in `DTYPES` (bool, uint8, int8/16/32/64, float16/32/64): token sequences [N, T]
with next-token targets (`next_token_arrays`), images, float regression targets, multi-label 0/1 vectors.

**Canonical example bytes** (`exampleEncoding` "proofreg-example/1"), for features `x` and integer label `y`::

    b"proofreg-example/1" 0x00
    dtype name (numpy's, ASCII: "float32", "uint8", ...) 0x00
    ndim as uint64 little-endian, then each dimension of x's shape as uint64 little-endian
    x's elements in C order, each little-endian
    y as int64 little-endian

This encoding is used for integer class labels (labels of shape [n], any integer dtype, stored as int64), so
every dataset built before version 2 keeps its root. Any other target (a float, a vector, a token sequence,
another dtype) uses **"proofreg-example/2"**, which encodes the target as a tensor too::

    b"proofreg-example/2" 0x00
    tensor(x) tensor(y)       where tensor(t) = dtype name 0x00, ndim uint64 LE, dims uint64 LE, C-order LE data

`exampleHash = sha256(canonical bytes)` and `datasetRoot` is the OpenZeppelin StandardMerkleTree root over
the leaves `(uint256 index, bytes32 exampleHash)` for index 0..n-1 in dataset order (`registry.core.merkle`,
`EXAMPLE_LEAF_TYPES`), so the contract's `verifyExample` accepts the proofs made here.

**Manifest** (`dataset.json`): `format`, `name`, `source` (how the data was made: builder and its arguments),
`exampleEncoding`, `numExamples`, `featureDtype`, `featureShape`, `labelDtype` ("int64" under version 1),
`labelShape` (version 2 only; [] for a scalar target), `numClasses` (null when the targets are not classes),
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from registry.core import safejson
from registry.core.hashing import as_hash, canonical_json, sha256, sha256_file, to_hex
from registry.core.merkle import EXAMPLE_LEAF_TYPES, StandardMerkleTree, example_leaf, verify

DATASET_FORMAT = "proofreg-dataset/1"
EXAMPLE_ENCODING = "proofreg-example/1"
EXAMPLE_ENCODING_V2 = "proofreg-example/2"
EXAMPLE_ENCODINGS = (EXAMPLE_ENCODING, EXAMPLE_ENCODING_V2)
#: The dtypes a feature or target may have (numpy names): what torch can hold without a copy or a cast.
DTYPES = ("bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float16", "float32",
          "float64")
MANIFEST_NAME = "dataset.json"
DEFAULT_SHARD_SIZE = 512
_SHARD_PATH = re.compile(r"^shards/\d{6}\.[xy]\.npy$")


class DatasetError(ValueError):
    """A dataset directory or example that is malformed, inconsistent with its manifest, or hostile."""


def _tensor_bytes(value: np.ndarray | torch.Tensor, what: str, v1: bool = False) -> tuple[str, bytes]:
    """(dtype name, shape + C-order little-endian data) of one feature or target tensor.

    Version 1 wrote a 0-d feature as shape [1] (numpy's `ascontiguousarray`); kept so that its roots stand.
    Version 2 writes the shape as it is (ndim 0 for a scalar target)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    t = np.asarray(value)
    if t.dtype.name not in DTYPES:
        raise DatasetError(f"unsupported {what} dtype {t.dtype}; supported: {', '.join(DTYPES)}")
    t = (np.ascontiguousarray(t, dtype=t.dtype.newbyteorder("<")) if v1
         else t.astype(t.dtype.newbyteorder("<"), order="C", copy=False))
    dims = len(t.shape).to_bytes(8, "little") + b"".join(int(d).to_bytes(8, "little") for d in t.shape)
    return t.dtype.name, dims + t.tobytes(order="C")


def canonical_example_bytes(features: np.ndarray | torch.Tensor, label: Any,
                            encoding: str = EXAMPLE_ENCODING) -> bytes:
    """The bytes an example hash is taken over (module docstring: "proofreg-example/1" or "/2")."""
    name, xb = _tensor_bytes(features, "feature", v1=encoding == EXAMPLE_ENCODING)
    if encoding == EXAMPLE_ENCODING:
        y = np.asarray(label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else label)
        if y.ndim != 0 or y.dtype.kind not in "iu":
            raise DatasetError(f"{EXAMPLE_ENCODING} needs an integer class label, got {y.dtype} {y.shape}")
        return EXAMPLE_ENCODING.encode() + b"\0" + name.encode() + b"\0" + xb + int(y).to_bytes(
            8, "little", signed=True)
    if encoding == EXAMPLE_ENCODING_V2:
        yname, yb = _tensor_bytes(label, "target")
        return (EXAMPLE_ENCODING_V2.encode() + b"\0" + name.encode() + b"\0" + xb
                + yname.encode() + b"\0" + yb)
    raise DatasetError(f"unknown example encoding {encoding!r}; known: {list(EXAMPLE_ENCODINGS)}")


def example_hash(features: np.ndarray | torch.Tensor, label: Any, encoding: str = EXAMPLE_ENCODING) -> bytes:
    return sha256(canonical_example_bytes(features, label, encoding))


def verify_membership(dataset_root: bytes | str, index: int, features: np.ndarray | torch.Tensor, label: Any,
                      proof: Sequence[bytes | str], encoding: str = EXAMPLE_ENCODING) -> bool:
    """Whether (features, label) is example `index` of the dataset with this root, given its Merkle proof."""
    leaf = example_leaf(index, example_hash(features, label, encoding))
    return verify(as_hash(dataset_root), leaf, [as_hash(p) for p in proof])


def next_token_arrays(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Language-model examples from token windows [N, T+1]: inputs [N, T] and next-token targets [N, T]."""
    t = np.asarray(tokens)
    if t.ndim != 2 or t.shape[1] < 2 or t.dtype.kind not in "iu":
        raise DatasetError(f"next_token_arrays needs integer token windows [N, T+1], got {t.dtype} {t.shape}")
    t = t.astype(np.int64, copy=False)
    return np.ascontiguousarray(t[:, :-1]), np.ascontiguousarray(t[:, 1:])


def is_class_labels(labels: np.ndarray) -> bool:
    """Labels that version 1 encodes (one integer class per example, stored as int64)."""
    return labels.ndim == 1 and labels.dtype.kind in "iu"


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
                  num_classes: int | None = None, encoding: str | None = None) -> Dataset:
    """Writes shards and `dataset.json` for these examples (in this order) and returns the loaded dataset.

    `features` [n, ...] and `labels` [n, ...] may be memory-mapped (`open_npy`): they are read one shard at a
    time. Integer class labels [n] use encoding version 1 (unchanged roots); any other target version 2.
    """
    x, y = features, labels
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        x, y = np.asarray(x), np.asarray(y)
    for what, t in (("feature", x), ("target", y)):
        if t.dtype.name not in DTYPES:
            raise DatasetError(f"unsupported {what} dtype {t.dtype}; supported: {', '.join(DTYPES)}")
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0] or y.shape[0] == 0:
        raise DatasetError(f"need features [n, ...] and targets [n, ...] for the same n > 0, got {x.shape} and "
                           f"{y.shape}")
    if shard_size < 1:
        raise DatasetError("shard_size must be positive")
    classes = is_class_labels(y)
    encoding = encoding or (EXAMPLE_ENCODING if classes else EXAMPLE_ENCODING_V2)
    if encoding == EXAMPLE_ENCODING and not classes:
        raise DatasetError(f"{EXAMPLE_ENCODING} holds integer class labels [n] only, got {y.dtype} {y.shape}")
    if encoding not in EXAMPLE_ENCODINGS:
        raise DatasetError(f"unknown example encoding {encoding!r}; known: {list(EXAMPLE_ENCODINGS)}")
    x_dtype = x.dtype.newbyteorder("<")
    y_dtype = np.dtype("<i8") if encoding == EXAMPLE_ENCODING else y.dtype.newbyteorder("<")
    out = Path(out_dir)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    examples: list[list[Any]] = []
    hashes: list[bytes] = []
    top = None
    for s, start in enumerate(range(0, x.shape[0], shard_size)):
        xs = np.ascontiguousarray(x[start:start + shard_size], dtype=x_dtype)
        ys = np.ascontiguousarray(y[start:start + shard_size], dtype=y_dtype)
        if classes and ys.size:
            top = max(int(ys.max()), top if top is not None else -1)
        fx, fy = f"shards/{s:06d}.x.npy", f"shards/{s:06d}.y.npy"
        bx, by = _npy_bytes(xs), _npy_bytes(ys)
        _write_atomic(out / fx, bx)
        _write_atomic(out / fy, by)
        shards.append({"features": fx, "labels": fy, "count": int(xs.shape[0]),
                       "featuresHash": to_hex(sha256(bx)), "labelsHash": to_hex(sha256(by))})
        for p in range(xs.shape[0]):
            h = example_hash(xs[p], int(ys[p]) if encoding == EXAMPLE_ENCODING else ys[p], encoding)
            hashes.append(h)
            examples.append([s, p, to_hex(h)])
    root = dataset_tree(hashes).root
    if num_classes is None and classes and top is not None:
        num_classes = top + 1
    manifest = {
        "format": DATASET_FORMAT,
        "name": name,
        "source": dict(source or {}),
        "exampleEncoding": encoding,
        "numExamples": int(x.shape[0]),
        "featureDtype": x_dtype.name,
        "featureShape": [int(d) for d in x.shape[1:]],
        "labelDtype": y_dtype.name,
        "numClasses": None if num_classes is None else int(num_classes),
        "shardSize": int(shard_size),
        "shards": shards,
        "examples": examples,
        "datasetRoot": to_hex(root),
    }
    if encoding == EXAMPLE_ENCODING_V2:
        manifest["labelShape"] = [int(d) for d in y.shape[1:]]
    _write_atomic(out / MANIFEST_NAME, canonical_json(manifest) + b"\n")
    return Dataset.load(out, expected_root=root)


def open_npy(path: str | Path) -> np.ndarray:
    """A plain .npy file memory-mapped read-only (never unpickled), to build a dataset larger than memory."""
    try:
        arr = np.load(Path(path), mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} is not a plain .npy array: {exc}") from exc
    if not isinstance(arr, np.ndarray):
        raise DatasetError(f"{path} is not a single .npy array")
    return arr


def build_dataset_from_npy(out_dir: str | Path, name: str, features_path: str | Path, labels_path: str | Path,
                           **kwargs: Any) -> Dataset:
    """`build_dataset` over two .npy files read through memory maps, one shard at a time."""
    return build_dataset(out_dir, name, open_npy(features_path), open_npy(labels_path), **kwargs)


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
             verify_shards: bool = True,
             tree_for: Callable[[bytes, list[bytes]], StandardMerkleTree] | None = None) -> Dataset:
        """Reads and checks `dataset.json` (format, paths, counts, and that the example hashes give its root).
        `tree_for(raw dataset.json, example hashes)` may supply the already-verified tree of these exact bytes
        (`verifier.datacache`) instead of rebuilding it."""
        root_dir = Path(path)
        try:
            raw = (root_dir / MANIFEST_NAME).read_bytes()
        except OSError as exc:
            raise DatasetError(f"cannot read {root_dir / MANIFEST_NAME}: {exc}") from exc
        manifest = _parse_manifest(raw)
        hashes = [as_hash(e[2]) for e in manifest["examples"]]
        tree = dataset_tree(hashes) if tree_for is None else tree_for(raw, hashes)
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
    def num_classes(self) -> int | None:
        n = self.manifest.get("numClasses")
        return None if n is None else int(n)

    @property
    def encoding(self) -> str:
        return str(self.manifest["exampleEncoding"])

    @property
    def label_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest.get("labelShape", []))

    @property
    def label_dtype(self) -> np.dtype:
        return np.dtype(self.manifest["labelDtype"])

    def hash_example(self, features: np.ndarray | torch.Tensor, label: Any) -> bytes:
        """exampleHash of (features, target) under this dataset's encoding (what its root is built from)."""
        if self.encoding == EXAMPLE_ENCODING:
            return example_hash(features, int(np.asarray(label)), EXAMPLE_ENCODING)
        return example_hash(features, np.asarray(label, dtype=self.label_dtype), self.encoding)

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

    def verify_example(self, index: int, features: np.ndarray | torch.Tensor, label: Any,
                       proof: Sequence[bytes] | None = None) -> bool:
        """Whether these are example `index`'s contents (by its proof, computed here if not given)."""
        i = self._check_index(index)
        leaf = example_leaf(i, self.hash_example(features, label))
        return verify(self.root, leaf, list(self.tree.proof(i) if proof is None else proof))

    def shards_for(self, indices: Sequence[int] | np.ndarray) -> list[int]:
        """The shard numbers that fetching these examples touches."""
        idx = self._check_indices(indices)
        return sorted({int(s) for s in np.unique(self._shard_of[idx])})

    # --- data access --------------------------------------------------------------------------------------
    def example(self, index: int, *, check: bool = False) -> tuple[np.ndarray, Any]:
        """(features, target) of example `index` (an int class label under version 1, else an array); with
        `check`, also against its manifest hash."""
        i = self._check_index(index)
        x, y = self._shard(int(self._shard_of[i]))
        feat = np.array(x[self._pos_of[i]])
        label: Any = int(y[self._pos_of[i]]) if self.encoding == EXAMPLE_ENCODING else np.array(y[self._pos_of[i]])
        if check and self.hash_example(feat, label) != self._hashes[i]:
            raise DatasetError(f"example {i} does not match its hash in dataset.json")
        return feat, label

    def examples(self, indices: Sequence[int] | np.ndarray, *, check: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Stacked features [len, *shape] and targets [len, *labelShape] of these examples, touching only their
        shards."""
        idx = self._check_indices(indices)
        shard_of, pos_of = self._shard_of[idx], self._pos_of[idx]
        dtype = np.dtype(self.manifest["featureDtype"])
        feats = np.empty((idx.size, *self.feature_shape), dtype=dtype)
        labels = np.empty((idx.size, *self.label_shape), dtype=self.label_dtype)
        for s in np.unique(shard_of):
            sel = shard_of == s
            x, y = self._shard(int(s))
            feats[sel] = x[pos_of[sel]]
            labels[sel] = y[pos_of[sel]]
        if check:
            for j, i in enumerate(idx.tolist()):
                if self.hash_example(feats[j], labels[j]) != self._hashes[i]:
                    raise DatasetError(f"example {i} does not match its hash in dataset.json")
        return feats, labels

    def batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor,
              device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) tensors for a training step: features and targets as stored (class labels int64)."""
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
                or y.shape != (info["count"], *self.label_shape) or y.dtype != self.label_dtype):
            raise DatasetError(f"shard {s} has shape/dtype {x.shape} {x.dtype}, {y.shape} {y.dtype}, "
                               "not what dataset.json says")
        self._shards[s] = (x, y)
        return x, y


def _is_shape(shape: Any) -> bool:
    return (isinstance(shape, list) and len(shape) <= 16
            and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 32 for d in shape))


def _parse_manifest(raw: bytes) -> dict[str, Any]:
    """Structural checks of dataset.json so that later indexing cannot go out of bounds or outside the dir."""

    try:
        m = safejson.loads(raw, what="dataset.json", max_depth=safejson.MANIFEST_DEPTH)
    except ValueError as exc:
        raise DatasetError(f"dataset.json is not JSON: {exc}") from exc
    if not isinstance(m, dict) or m.get("format") != DATASET_FORMAT:
        raise DatasetError(f"dataset.json: expected format {DATASET_FORMAT!r}")
    encoding = m.get("exampleEncoding")
    if encoding not in EXAMPLE_ENCODINGS:
        raise DatasetError(f"dataset.json: unknown example encoding {encoding!r}")
    try:
        shards, examples = m["shards"], m["examples"]
        if m["featureDtype"] not in DTYPES or not _is_shape(m["featureShape"]):
            raise DatasetError("dataset.json: bad featureDtype/featureShape")
        if encoding == EXAMPLE_ENCODING and (m["labelDtype"] != "int64" or "labelShape" in m):
            raise DatasetError(f"dataset.json: {EXAMPLE_ENCODING} has int64 class labels and no labelShape")
        if m["labelDtype"] not in DTYPES or not _is_shape(m.get("labelShape", [])):
            raise DatasetError("dataset.json: bad labelDtype/labelShape")
        if m.get("numClasses") is not None and not (isinstance(m["numClasses"], int) and m["numClasses"] >= 0):
            raise DatasetError("dataset.json: bad numClasses")
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
