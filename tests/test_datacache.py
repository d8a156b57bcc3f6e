"""verifier.datacache: the dataset tree built once per (datasetRoot, sha256(dataset.json)), shared between jobs,
and an on-disk copy that is re-verified on load (a poisoned file is rejected and the tree rebuilt)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from registry.spec.datasets import MANIFEST_NAME, Dataset, DatasetError, build_builtin
from verifier.datacache import DatasetCache


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "digits"
    build_builtin("digits", out)
    return out


def _load(path: Path, cache: DatasetCache, root: bytes | None = None) -> Dataset:
    base = Dataset.load(path, verify_shards=False) if root is None else None
    want = root if root is not None else base.root  # type: ignore[union-attr]
    return Dataset.load(path, expected_root=want, verify_shards=False, tree_for=cache.tree_for(want))


def test_hit_and_miss(digits: Path) -> None:
    ref = Dataset.load(digits)
    cache = DatasetCache()
    a = _load(digits, cache, ref.root)
    assert (cache.stats.misses, cache.stats.hits) == (1, 0)
    b = _load(digits, cache, ref.root)
    assert (cache.stats.misses, cache.stats.hits) == (1, 1)
    assert a.tree is b.tree and a.tree == ref.tree
    assert a.proof(17) == ref.proof(17)


def test_wrong_dataset_root_is_refused_and_not_cached(digits: Path) -> None:
    cache = DatasetCache()
    with pytest.raises(DatasetError, match="not the expected"):
        _load(digits, cache, b"\x11" * 32)
    assert len(cache) == 0


def test_disk_cache_round_trip_and_poisoning(digits: Path, tmp_path: Path) -> None:
    ref = Dataset.load(digits)
    first = DatasetCache(tmp_path / "cache")
    _load(digits, first, ref.root)
    files = list((tmp_path / "cache").rglob("*.tree"))
    assert len(files) == 1
    # a fresh node (empty memory) reads the disk copy after re-verifying it
    second = DatasetCache(tmp_path / "cache")
    got = _load(digits, second, ref.root)
    assert (second.stats.disk_hits, second.stats.misses) == (1, 0)
    assert got.tree == ref.tree
    # poison: flip one interior node, then one leaf; each is rejected, deleted and rebuilt
    for offset in (32 * 5, len(files[0].read_bytes()) - 4 * len(ref) - 32):
        data = bytearray(files[0].read_bytes())
        data[offset] ^= 1
        files[0].write_bytes(bytes(data))
        node = DatasetCache(tmp_path / "cache")
        got = _load(digits, node, ref.root)
        assert (node.stats.disk_rejected, node.stats.misses) == (1, 1)
        assert got.tree == ref.tree
        assert files[0].read_bytes() == _cache_file_bytes(tmp_path / "cache")
    # truncated file
    files[0].write_bytes(files[0].read_bytes()[:-1])
    node = DatasetCache(tmp_path / "cache")
    assert _load(digits, node, ref.root).tree == ref.tree
    assert node.stats.disk_rejected == 1


def _cache_file_bytes(directory: Path) -> bytes:
    (f,) = list(directory.rglob("*.tree"))
    return f.read_bytes()


def test_other_manifest_bytes_are_another_entry(digits: Path, tmp_path: Path) -> None:
    ref = Dataset.load(digits)
    cache = DatasetCache()
    _load(digits, cache, ref.root)
    other = tmp_path / "digits2"
    other.mkdir()
    raw = (digits / MANIFEST_NAME).read_bytes()
    (other / MANIFEST_NAME).write_bytes(raw + b"\n")
    for p in digits.iterdir():
        if p.name != MANIFEST_NAME:
            (other / p.name).symlink_to(p)
    _load(other, cache, ref.root)
    assert cache.stats.misses == 2 and len(cache) == 2


def test_concurrent_jobs_build_once(digits: Path) -> None:
    ref = Dataset.load(digits)
    cache = DatasetCache()
    trees: list[object] = []
    errors: list[Exception] = []

    def job() -> None:
        try:
            trees.append(_load(digits, cache, ref.root).tree)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.stats.misses == 1 and cache.stats.hits == 5
    assert all(t is trees[0] for t in trees)


def test_lru_bound(digits: Path) -> None:
    ref = Dataset.load(digits)
    cache = DatasetCache(max_entries=1)
    raw = (digits / MANIFEST_NAME).read_bytes()
    hashes = [ref.example_hash(i) for i in range(len(ref))]
    cache.tree(ref.root, raw, hashes)
    cache.tree(ref.root, raw + b" ", hashes)
    assert len(cache) == 1
