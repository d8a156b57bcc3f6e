"""DaemonStore against a real js-ipfs 0.66.1 daemon (tests/ipfs_node.py; `npm ci --prefix tools/ipfs`).

No mocks: CIDs made by the daemon must equal the shared vectors and the embedded store's, reads must be
verified block by block, and every failure (daemon stopped, address unreachable, content missing, block
corrupted on the daemon's disk) must be the store's own error, quickly, with a one-line message.
Stores here use `check_cids=False` so that the daemon's own CIDs are what gets compared.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from registry.store import (
    CID,
    ContentStore,
    Corrupt,
    EmbeddedStore,
    InvalidPath,
    Malformed,
    NotFound,
    StoreError,
    Unavailable,
    Unsupported,
)
from registry.store.cid import b32encode
from registry.store.daemon import DaemonStore, api_base_url
from tests.ipfs_node import IpfsDaemon, free_port

REPO = Path(__file__).resolve().parents[1]
_LOCAL_VECTORS = REPO / "tests" / "vectors" / "ipfs-cid-vectors.json"
VECTORS_FILE = _LOCAL_VECTORS if _LOCAL_VECTORS.exists() else REPO.parent / "shared" / "ipfs-cid-vectors.json"
VECTORS = {v["name"]: v for v in json.loads(VECTORS_FILE.read_text())["vectors"]}
CHUNK = 256 * 1024


#: Calls must fail within their own short timeouts (about 0.5-5 s with retries here), not hang until the
#: store's 20 s general timeout; the bound sits between the two, with room for a loaded 2-core machine.
HANG = 10.0


def fast(api: str, *, check_cids: bool = False, verify: bool = True, pin_on_add: bool = True) -> DaemonStore:
    """A store with short timeouts: the daemon is offline, so missing content must fail fast."""
    return DaemonStore(api, fetch_timeout=1.5, has_timeout=0.5, retries=2, backoff=0.1, timeout=20.0,
                       check_cids=check_cids, verify=verify, pin_on_add=pin_on_add)


def vector_data(name: str, size: int) -> bytes:
    """The vectors' "how_data_is_made": sha256(f'{name}-{i}') digests for i = 0, 1, ..., truncated."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(f"{name}-{i}".encode()).digest()
        i += 1
    return bytes(out[:size])


def unique(size: int) -> bytes:
    """Content no other test (or earlier run) has added."""
    return os.urandom(size)


@pytest.fixture(scope="module")
def store(ipfs_daemon: IpfsDaemon) -> DaemonStore:
    return fast(ipfs_daemon.api)


@pytest.fixture(scope="module")
def trusting(ipfs_daemon: IpfsDaemon) -> DaemonStore:
    """The same daemon read through its own `cat` (verify=False)."""
    return fast(ipfs_daemon.api, verify=False)


@pytest.fixture
def embedded(tmp_path: Path) -> EmbeddedStore:
    return EmbeddedStore(tmp_path / "embedded")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A transcript-like tree with the awkward cases: empty dir and file, dot-file, non-ASCII and
    percent/plus/space names, a multi-chunk file."""
    root = tmp_path / "tree"
    (root / "checkpoints").mkdir(parents=True)
    (root / "batches" / "empty").mkdir(parents=True)
    (root / "manifest.json").write_bytes(b'{"format": 1}')
    (root / ".hidden").write_bytes(b"dot")
    (root / "empty.bin").write_bytes(b"")
    (root / "ünïcödé näme").write_bytes(b"u")
    (root / "a+b %20 c").write_bytes(b"p")
    (root / "checkpoints" / "000001.safetensors").write_bytes(vector_data("ckpt", 2 * CHUNK + 123))
    (root / "batches" / "000000.npy").write_bytes(vector_data("batch", 1000))
    return root


def test_satisfies_protocol(store: DaemonStore) -> None:
    assert isinstance(store, ContentStore)
    assert store.version()["Version"]


@pytest.mark.parametrize("name", ["b0", "b100", "b256k1", "b1m", "b5m"])
def test_file_cids_equal_vectors_and_embedded(store: DaemonStore, embedded: EmbeddedStore, name: str) -> None:
    vector = VECTORS[name]
    data = vector_data(name, vector["size"])
    cid = store.add_bytes(data)
    assert cid == vector["v1raw"] == embedded.add_bytes(data)
    assert cid.startswith("baf")  # CIDv1 base32, though js-ipfs answers base58btc by default
    assert store.cat(cid) == data
    assert store.cat_buffer(cid) == data  # one preallocated buffer; b5m's add streamed in 1 MiB pieces


def test_add_file_streams_and_matches_embedded(store: DaemonStore, embedded: EmbeddedStore, tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(vector_data("b1m", VECTORS["b1m"]["size"]))
    assert store.add_file(path) == VECTORS["b1m"]["v1raw"] == embedded.add_file(path)


def test_directory_cid_equals_embedded(store: DaemonStore, embedded: EmbeddedStore, tree: Path) -> None:
    cid = store.add_directory(tree)
    assert cid == embedded.add_directory(tree)
    assert store.ls(cid) == embedded.ls(cid)
    names = [e.name for e in store.ls(cid)]
    assert ".hidden" in names and "ünïcödé näme" in names and "a+b %20 c" in names
    assert store.ls(f"{cid}/batches")[1].name == "empty" and store.ls(f"{cid}/batches/empty") == []


def test_checked_add_agrees_with_the_importer(ipfs_daemon: IpfsDaemon, tree: Path) -> None:
    checked = fast(ipfs_daemon.api, check_cids=True)
    assert checked.add_directory(tree) == EmbeddedStore(tree.parent / "e").add_directory(tree)


def test_add_refuses_what_the_embedded_importer_refuses(store: DaemonStore, tree: Path) -> None:
    (tree / "link").symlink_to(tree / "manifest.json")
    with pytest.raises(Unsupported, match="symlink"):
        store.add_directory(tree)


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "trusting"])
def test_partial_cat_across_chunk_boundaries(store: DaemonStore, trusting: DaemonStore, verify: bool) -> None:
    reader = store if verify else trusting
    data = unique(4 * CHUNK + 1000)
    cid = store.add_bytes(data)
    size = len(data)
    for offset, length in [(0, 10), (CHUNK - 5, 10), (CHUNK, 1), (CHUNK - 1, CHUNK + 2), (3 * CHUNK + 7, None),
                           (size - 3, 100), (size, 5), (size + 10, None), (0, None), (2 * CHUNK, 0)]:
        expected = data[offset:] if length is None else data[offset:offset + length]
        assert reader.cat(cid, offset, length) == expected, (offset, length)
        assert reader.cat_buffer(cid, offset, length) == expected, (offset, length)
    assert reader.size(cid) == size


def test_partial_read_fetches_only_the_blocks_it_needs(ipfs_daemon: IpfsDaemon) -> None:
    reader = fast(ipfs_daemon.api)
    data = unique(20 * CHUNK)
    cid = reader.add_bytes(data)
    before = reader.block_fetches
    assert reader.cat(cid, 5 * CHUNK - 1, 2) == data[5 * CHUNK - 1:5 * CHUNK + 1]
    assert reader.block_fetches - before == 3  # the root and the two leaves around the boundary


def test_resolve_ls_get_in_a_directory(store: DaemonStore, embedded: EmbeddedStore, tree: Path,
                                       tmp_path: Path) -> None:
    root = store.add_directory(tree)
    ckpt = (tree / "checkpoints" / "000001.safetensors").read_bytes()
    leaf = store.resolve(root, "checkpoints/000001.safetensors")
    assert leaf == embedded.add_bytes(ckpt) == embedded.resolve(embedded.add_directory(tree),
                                                                "checkpoints/000001.safetensors")
    assert store.resolve(root) == root
    assert store.cat(f"{root}/checkpoints/000001.safetensors", CHUNK - 3, 6) == ckpt[CHUNK - 3:CHUNK + 3]
    assert store.cat(f"/ipfs/{root}/manifest.json") == b'{"format": 1}'
    with pytest.raises(NotFound, match="nope"):
        store.resolve(root, "checkpoints/nope")
    with pytest.raises(NotFound):
        store.cat(f"{root}/manifest.json/deeper")
    with pytest.raises(Malformed, match="directory"):
        store.cat(f"{root}/checkpoints")
    with pytest.raises(InvalidPath):
        store.resolve(root, "../etc")
    out = store.get(root, tmp_path / "out")
    for path in tree.rglob("*"):
        twin = out / path.relative_to(tree)
        assert twin.is_dir() if path.is_dir() else twin.read_bytes() == path.read_bytes(), path
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == sorted(p.relative_to(tree) for p in tree.rglob("*"))
    assert EmbeddedStore(tmp_path / "again").add_directory(out) == root  # the materialized tree re-imports
    with pytest.raises(FileExistsError):
        store.get(root, out)


def test_get_without_verification(trusting: DaemonStore, tree: Path, tmp_path: Path) -> None:
    root = trusting.add_directory(tree)
    out = trusting.get(f"{root}/checkpoints", tmp_path / "ck")
    assert (out / "000001.safetensors").read_bytes() == (tree / "checkpoints" / "000001.safetensors").read_bytes()


def test_push_from_embedded_then_read_from_daemon(store: DaemonStore, embedded: EmbeddedStore, tree: Path) -> None:
    (tree / "checkpoints" / "000002.safetensors").write_bytes(unique(3 * CHUNK + 5))  # new to the daemon
    root = embedded.add_directory(tree)
    part = embedded.resolve(root, "checkpoints/000002.safetensors")
    assert not store.has(part)
    assert store.push_from(embedded, root) == root
    assert store.has(root) and store.has(part)
    assert store.is_pinned(root)
    assert store.cat(part) == embedded.cat(part)
    assert store.ls(root) == embedded.ls(root)
    assert store.add_directory(tree) == root  # the daemon's own import agrees with what was pushed


def test_pin_and_unpin(ipfs_daemon: IpfsDaemon) -> None:
    unpinned = fast(ipfs_daemon.api, pin_on_add=False)
    cid = unpinned.add_bytes(unique(CHUNK + 1))
    assert not unpinned.is_pinned(cid)
    unpinned.pin(cid)
    assert unpinned.is_pinned(cid) and cid in unpinned.pins()
    unpinned.pin(cid)  # idempotent
    unpinned.unpin(cid)
    assert not unpinned.is_pinned(cid) and cid not in unpinned.pins()
    with pytest.raises(NotFound, match="not pinned"):
        unpinned.unpin(cid)
    assert unpinned.has(cid)  # unpinned is not deleted (until the daemon's GC runs)


def test_missing_content_is_not_found_quickly(store: DaemonStore) -> None:
    missing = str(CID.of(unique(64)))
    missing_dir = str(CID.of(unique(64), codec=0x70))
    started = time.monotonic()
    assert store.has(missing) is False
    assert time.monotonic() - started < HANG
    for call in (lambda: store.cat(missing), lambda: store.cat(missing_dir, 10, 10),
                 lambda: store.ls(missing_dir), lambda: store.resolve(missing_dir, "a/b"),
                 lambda: store.pin(missing_dir)):
        started = time.monotonic()
        with pytest.raises(NotFound) as info:
            call()
        assert time.monotonic() - started < HANG
        message = str(info.value)
        assert "\n" not in message and store.api in message


def test_corrupt_block_on_the_daemon_is_detected(ipfs_daemon: IpfsDaemon, store: DaemonStore,
                                                 trusting: DaemonStore) -> None:
    data = unique(2 * CHUNK)
    cid = store.add_bytes(data)
    leaf = CID.of(data[CHUNK:])
    blocks = list((ipfs_daemon.repo / "blocks").rglob(f"{b32encode(leaf.multihash).upper()}.data"))
    assert len(blocks) == 1, "js-ipfs flatfs layout changed?"
    blocks[0].write_bytes(b"x" * CHUNK)
    with pytest.raises(Corrupt, match="do not hash"):
        store.cat(cid, CHUNK, 10)
    assert store.cat(cid, 0, 10) == data[:10]  # the intact leaf still reads
    assert trusting.cat(cid, CHUNK, 10) == b"x" * 10  # what verify=False would have trusted


def test_unreachable_address_is_unavailable() -> None:
    api = f"/ip4/127.0.0.1/tcp/{free_port()}/http"
    dead = DaemonStore(api, retries=2, backoff=0.05)
    started = time.monotonic()
    for call in (lambda: dead.add_bytes(b"x"), lambda: dead.cat(str(CID.of(b"x"))), lambda: dead.has(str(CID.of(b"x"))),
                 lambda: dead.pins()):
        with pytest.raises(Unavailable, match="not answering") as info:
            call()
        assert api in str(info.value) and "\n" not in str(info.value)
    assert time.monotonic() - started < HANG


def test_api_addresses() -> None:
    assert api_base_url("/ip4/127.0.0.1/tcp/5001/http") == "http://127.0.0.1:5001"
    assert api_base_url("/ip4/127.0.0.1/tcp/5001") == "http://127.0.0.1:5001"
    assert api_base_url("/dns4/ipfs.example/tcp/443/https") == "https://ipfs.example:443"
    assert api_base_url("/ip6/::1/tcp/5001/http") == "http://[::1]:5001"
    assert api_base_url("http://localhost:5001/") == "http://localhost:5001"
    for bad in ("/ip4/127.0.0.1/udp/5001", "localhost:5001", "/ip4/1.2.3.4/tcp/x/http", "http://h:1/api/v0"):
        with pytest.raises(ValueError):
            api_base_url(bad)


def test_daemon_stopped_during_an_audit_and_restarted(ipfs_daemon_factory: Callable[[], IpfsDaemon]) -> None:
    daemon = ipfs_daemon_factory()
    audit = fast(daemon.api)
    data = unique(3 * CHUNK)
    cid = audit.add_bytes(data)
    assert audit.cat(cid, CHUNK, 4) == data[CHUNK:CHUNK + 4]
    daemon.stop()
    for call in (lambda: audit.cat(cid, 2 * CHUNK, 4), lambda: audit.has(cid), lambda: audit.add_bytes(b"y")):
        started = time.monotonic()
        with pytest.raises(Unavailable) as info:
            call()
        assert time.monotonic() - started < HANG
        assert daemon.api in str(info.value) and "not answering" in str(info.value)
    assert isinstance(info.value, StoreError)
    daemon.start()
    assert audit.cat(cid, 2 * CHUNK, 4) == data[2 * CHUNK:2 * CHUNK + 4]  # same repo: content survived
    assert audit.is_pinned(cid)
    daemon.kill()  # a crash leaves js-ipfs's repo.lock behind; start() must still work
    daemon.start()
    assert audit.cat(cid) == data
