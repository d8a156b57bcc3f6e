"""Datasets of any tensor shape and dtype: token sequences with next-token targets, images, float regression
targets, multi-label targets; round trips with membership proofs, memory-mapped builds, hostile manifests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from registry.core.hashing import canonical_json, sha256, to_hex
from registry.spec.datasets import (
    EXAMPLE_ENCODING,
    EXAMPLE_ENCODING_V2,
    Dataset,
    DatasetError,
    build_dataset,
    build_dataset_from_npy,
    canonical_example_bytes,
    example_hash,
    next_token_arrays,
    verify_membership,
)

RNG = np.random.default_rng(7)
TOKENS = RNG.integers(0, 100, size=(24, 9), dtype=np.int64)


def _cases() -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    x_lm, y_lm = next_token_arrays(TOKENS)
    return {
        "tokens": (x_lm, y_lm, EXAMPLE_ENCODING_V2),
        "images-uint8": (RNG.integers(0, 256, size=(20, 3, 4, 4), dtype=np.uint8),
                         RNG.integers(0, 10, size=20).astype(np.int32), EXAMPLE_ENCODING),
        "regression": (RNG.normal(size=(20, 6)).astype(np.float32), RNG.normal(size=20).astype(np.float32),
                       EXAMPLE_ENCODING_V2),
        "regression-2d": (RNG.normal(size=(20, 6)).astype(np.float64), RNG.normal(size=(20, 2)).astype(np.float64),
                          EXAMPLE_ENCODING_V2),
        "multi-label": (RNG.normal(size=(20, 5)).astype(np.float16), RNG.random(size=(20, 4)) < 0.3,
                        EXAMPLE_ENCODING_V2),
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_round_trip_with_membership_proofs(tmp_path: Path, case: str) -> None:
    x, y, encoding = _cases()[case]
    ds = build_dataset(tmp_path / case, case, x, y, shard_size=7)
    assert ds.encoding == encoding and len(ds) == x.shape[0]
    assert ds.feature_shape == x.shape[1:] and ds.label_shape == y.shape[1:]
    feats, labels = ds.arrays()
    assert np.array_equal(feats, x) and feats.dtype == x.dtype
    assert np.array_equal(labels, y.astype(np.int64) if encoding == EXAMPLE_ENCODING else y)
    again = Dataset.load(tmp_path / case, expected_root=ds.root)
    for i in (0, 6, 7, len(ds) - 1):  # both sides of a shard boundary
        fx, fy = again.example(i, check=True)
        proof = again.proof(i)
        assert verify_membership(again.root, i, fx, fy, proof, encoding)
        assert again.verify_example(i, fx, fy)
        # One changed target element, or a target moved to another index, is not a member.
        bad_y = (fy + 1) if encoding == EXAMPLE_ENCODING else np.logical_not(fy) if fy.dtype == bool else fy + 1
        assert not again.verify_example(i, fx, bad_y)
        assert not verify_membership(again.root, (i + 1) % len(ds), fx, fy, proof, encoding)
    bx, by = again.batch(np.array([3, 1, 15]))
    assert bx.dtype == torch.from_numpy(x[:1]).dtype and tuple(by.shape) == (3, *y.shape[1:])
    assert torch.equal(by, torch.from_numpy(np.asarray(y[[3, 1, 15]]).astype(
        np.int64 if encoding == EXAMPLE_ENCODING else y.dtype)))
    # Deterministic: the same arrays give the same root.
    assert build_dataset(tmp_path / f"{case}-again", case, x, y, shard_size=7).root == ds.root


def test_next_token_targets_are_the_inputs_shifted() -> None:
    x, y = next_token_arrays(TOKENS)
    assert x.shape == (24, 8) and y.shape == (24, 8) and x.dtype == y.dtype == np.int64
    assert np.array_equal(x[:, 1:], y[:, :-1])
    with pytest.raises(DatasetError, match="token windows"):
        next_token_arrays(np.zeros((3, 1), np.int64))
    with pytest.raises(DatasetError, match="token windows"):
        next_token_arrays(np.zeros((3, 4), np.float32))


def test_encodings_are_pinned() -> None:
    """Vectors for both example encodings (docs/protocol.md section 3): a change here changes every root."""
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    v1 = canonical_example_bytes(x, 7)
    assert v1 == (b"proofreg-example/1\0float32\0" + (2).to_bytes(8, "little") + (2).to_bytes(8, "little")
                  + (3).to_bytes(8, "little") + x.tobytes() + (7).to_bytes(8, "little"))
    y = np.array([1.5, -2.0], dtype=np.float32)
    v2 = canonical_example_bytes(x, y, EXAMPLE_ENCODING_V2)
    assert v2 == (b"proofreg-example/2\0float32\0" + (2).to_bytes(8, "little") + (2).to_bytes(8, "little")
                  + (3).to_bytes(8, "little") + x.tobytes() + b"float32\0" + (1).to_bytes(8, "little")
                  + (2).to_bytes(8, "little") + y.tobytes())
    assert to_hex(sha256(v2)) == to_hex(example_hash(x, y, EXAMPLE_ENCODING_V2))
    # A scalar target: ndim 0. A big-endian array hashes like its little-endian value.
    assert canonical_example_bytes(x, np.float32(1.0), EXAMPLE_ENCODING_V2).endswith(
        b"float32\0" + (0).to_bytes(8, "little") + np.float32(1.0).tobytes())
    assert example_hash(x.astype(">f4"), y, EXAMPLE_ENCODING_V2) == example_hash(x, y, EXAMPLE_ENCODING_V2)
    # The two encodings never collide, and version 1 refuses non-class targets.
    assert example_hash(x, np.int64(7), EXAMPLE_ENCODING_V2) != example_hash(x, 7)
    with pytest.raises(DatasetError, match="integer class label"):
        canonical_example_bytes(x, y)
    with pytest.raises(DatasetError, match="unknown example encoding"):
        canonical_example_bytes(x, y, "proofreg-example/9")
    with pytest.raises(DatasetError, match="unsupported target dtype"):
        canonical_example_bytes(x, np.array(["a"]), EXAMPLE_ENCODING_V2)
    with pytest.raises(DatasetError, match="unsupported feature dtype"):
        canonical_example_bytes(np.array([1 + 2j]), 1)


def test_build_streams_from_memory_mapped_npy(tmp_path: Path) -> None:
    x = RNG.normal(size=(50, 4, 4)).astype(np.float32)
    y = RNG.normal(size=(50, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    ds = build_dataset_from_npy(tmp_path / "mm", "mm", tmp_path / "x.npy", tmp_path / "y.npy", shard_size=16)
    assert ds.root == build_dataset(tmp_path / "mem", "mem", x, y, shard_size=16).root
    assert len(ds.manifest["shards"]) == 4
    # A pickled object array is refused, never unpickled.
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match=r"not a plain \.npy"):
        build_dataset_from_npy(tmp_path / "bad", "bad", tmp_path / "obj.npy", tmp_path / "y.npy")


def test_build_refuses_bad_inputs(tmp_path: Path) -> None:
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(DatasetError, match="same n"):
        build_dataset(tmp_path / "a", "a", x, np.zeros(3, np.int64))
    with pytest.raises(DatasetError, match="integer class labels"):
        build_dataset(tmp_path / "b", "b", x, np.zeros((4, 2), np.float32), encoding=EXAMPLE_ENCODING)
    with pytest.raises(DatasetError, match="unsupported target dtype"):
        build_dataset(tmp_path / "c", "c", x, np.zeros(4, np.complex64))
    # Class labels can opt into version 2 (their dtype is then kept).
    ds = build_dataset(tmp_path / "d", "d", x, np.arange(4, dtype=np.int16), encoding=EXAMPLE_ENCODING_V2)
    assert ds.label_dtype == np.int16 and ds.example(2)[1] == 2


def _rewrite(path: Path, **changes: object) -> None:
    m = json.loads((path / "dataset.json").read_bytes())
    m.update(changes)
    (path / "dataset.json").write_bytes(canonical_json(m))


def test_hostile_manifests_and_shards(tmp_path: Path) -> None:
    x, y = next_token_arrays(TOKENS)
    good = build_dataset(tmp_path / "lm", "lm", x, y, shard_size=10)
    for changes, match in (
        ({"labelDtype": "object"}, "bad labelDtype"),
        ({"labelShape": [-1]}, "bad labelDtype/labelShape"),
        ({"labelShape": "8"}, "bad labelDtype/labelShape"),
        ({"exampleEncoding": "proofreg-example/3"}, "unknown example encoding"),
        ({"exampleEncoding": EXAMPLE_ENCODING}, "int64 class labels and no labelShape"),
        ({"numClasses": -3}, "bad numClasses"),
    ):
        d = tmp_path / f"h{len(match)}{changes!s:.5}"
        build_dataset(d, "lm", x, y, shard_size=10)
        _rewrite(d, **changes)
        with pytest.raises(DatasetError, match=match):
            Dataset.load(d)
    # A shard whose targets have another shape than the manifest says is refused when touched.
    d = tmp_path / "shape"
    build_dataset(d, "lm", x, y, shard_size=10)
    _rewrite(d, labelShape=[4])
    bad = Dataset.load(d, verify_shards=False)
    with pytest.raises(DatasetError, match=r"not what dataset\.json says"):
        bad.example(0)
    assert good.example(0, check=True)[1].shape == (8,)
