"""HAMT-sharded directories: CIDs pinned by the real js-ipfs daemon, reading them back, hostile shards.

The vectors were measured from the js-ipfs 0.66.1 daemon (tools/ipfs, `registry.devnet.ipfs`):
`POST /api/v0/add?cid-version=1&raw-leaves=true&shard-split-threshold=1000` of one directory holding
N files named f"{i:06d}.bin" with content sha256(f"hamt-{i}") (32 bytes each). Without
`shard-split-threshold` js-ipfs 0.66 never shards (its `EXPERIMENTAL.sharding` is off by default); the
DaemonStore always sends it, so the daemon's own configuration cannot change a CID.
The 999-entry one is flat (below the threshold), the others HAMTs (fanout 256, murmur3-x64-64).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from registry.store import EmbeddedStore, ImportSettings, Malformed, NotFound, Unsupported
from registry.store.cid import CID, DAG_PB
from registry.store.daemon import DaemonStore
from registry.store.dagpb import T_HAMT_SHARD, Link, decode_node, decode_unixfs, encode_node
from registry.store.hamt import murmur3_x64_64, murmur3_x64_128, shard_data, slot_of
from registry.store.unixfs import Imported, directory_node, import_bytes, shard_decision
from tests.ipfs_node import IpfsDaemon

JS_HAMT_VECTORS = {
    999: "bafybeid5pmfqbeyzagpmbb4spizzyhlysepgvafruwnhp6r4otcwrkgam4",
    1000: "bafybeidwhc45j3mdq4rrepf7j7unwgyyxc63fs6djaykz6hps5mjgjlv4u",
    1001: "bafybeiewd3kp275skregtfoz45s55f544gczkppgvikeyfmfaz76gwej3i",
    5000: "bafybeicic5dhm4crg7a36rezo3jn6h43i2fgkejwmne5nh6y4n6w3z2r5q",
}
JS_HAMT_20000 = "bafybeicx465hqd7fjvxk74ofxbkp6le4535lrurux3jj7rgge36qpxtn2y"  # slow to build: the slow test
#: the same 1,000-entry input added to js-ipfs without `shard-split-threshold` (sharding off): one flat node
JS_FLAT_1000 = "bafybeifazsiwgthwazvjy7ewgrffvazuqyyciwq62wbr7nf3rnny5ivtoi"


def entries(n: int) -> list[tuple[str, bytes]]:
    return [(f"{i:06d}.bin", hashlib.sha256(f"hamt-{i}".encode()).digest()) for i in range(n)]


def build(n: int, settings: ImportSettings | None = None,
          blocks: dict[CID, bytes] | None = None) -> Imported:
    sink = None if blocks is None else (lambda cid, block: blocks.__setitem__(cid, bytes(block)))
    kids = [(name, import_bytes(data, sink=sink)) for name, data in entries(n)]
    return directory_node(kids, settings or ImportSettings("v1raw"), sink)


def write_tree(root: Path, n: int) -> Path:
    root.mkdir()
    for name, data in entries(n):
        (root / name).write_bytes(data)
    return root


def test_murmur3_matches_the_reference() -> None:
    # mmh3.hash64(b"hello") and js `@multiformats/murmur3` murmur3128 of "hello": cbd8a7b341bd9b02 5b1e906a48ae1d19
    assert murmur3_x64_128(b"hello") == (0xCBD8A7B341BD9B02, 0x5B1E906A48AE1D19)
    assert murmur3_x64_128(b"") == (0, 0)
    assert murmur3_x64_64(b"hello") == bytes.fromhex("cbd8a7b341bd9b02")
    assert slot_of(b"hello", 0) == 0xCB and slot_of(b"hello", 1) == 0xD8


@pytest.mark.parametrize("n", sorted(JS_HAMT_VECTORS))
def test_hamt_cids_equal_the_js_ipfs_daemon(n: int) -> None:
    assert str(build(n).cid) == JS_HAMT_VECTORS[n]


def test_flat_and_sharded_rules() -> None:
    assert str(build(1000, ImportSettings("v1raw", shard_rule="kubo")).cid) == JS_FLAT_1000  # 46 KB of links
    with pytest.raises(Unsupported, match="js-ipfs only"):
        build(1000, ImportSettings("v1raw", shard_rule="portable"))
    assert str(build(999, ImportSettings("v1raw", shard_rule="portable")).cid) == JS_HAMT_VECTORS[999]
    # Kubo's rule: estimated link bytes (name + binary CID) reaching 256 KiB
    assert not shard_decision(999, 256 * 1024 - 1, "kubo") and shard_decision(10, 256 * 1024, "kubo")
    assert shard_decision(1000, 0, "js") and not shard_decision(999, 10**9, "js")
    with pytest.raises(Unsupported, match="Kubo only"):
        shard_decision(999, 256 * 1024, "portable")
    assert shard_decision(20_000, 20_000 * 46, "portable")  # both shard: portable
    with pytest.raises(ValueError):
        ImportSettings("x", shard_rule="sometimes")


def test_sharded_directory_reads_back(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "s")
    cid = store.add_directory(write_tree(tmp_path / "wide", 1500))
    assert CID.parse(cid).codec == DAG_PB
    data, _ = decode_node(store.get_block(cid))
    assert data is not None and decode_unixfs(data).type == T_HAMT_SHARD
    listing = store.ls(cid)
    assert [e.name for e in listing] == [name for name, _ in entries(1500)]
    assert all(e.kind == "file" and e.size == 32 for e in listing)
    want = dict(entries(1500))
    assert store.cat(f"{cid}/000777.bin") == want["000777.bin"]
    assert store.resolve(cid, "001499.bin") == listing[-1].cid
    with pytest.raises(NotFound):
        store.resolve(cid, "001500.bin")
    out = store.get(cid, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == sorted(want)
    assert (out / "000123.bin").read_bytes() == want["000123.bin"]
    store.pin(cid)


def test_sharded_subdirectory_inside_a_tree(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    write_tree(root / "many", 1200)
    (root / "manifest.json").write_bytes(b"{}")
    store = EmbeddedStore(tmp_path / "s")
    cid = store.add_directory(root)
    assert [e.name for e in store.ls(cid)] == ["manifest.json", "many"]
    assert store.cat(f"{cid}/many/000042.bin") == dict(entries(43))["000042.bin"]


# ---- hostile shards ---------------------------------------------------------------------------------------


def _put(store: EmbeddedStore, data: bytes, links: list[Link]) -> str:
    block = encode_node(data, links)
    return store.put_block(CID.from_digest(hashlib.sha256(block).digest(), DAG_PB, 1), block)


def _leaf(store: EmbeddedStore, name: str) -> Link:
    cid = CID.parse(store.add_bytes(name.encode()))
    return Link(cid, f"{slot_of(name.encode(), 0):02X}{name}", len(name))


def test_hostile_shards_are_refused(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "s")
    a, b = _leaf(store, "a"), _leaf(store, "b")
    links = sorted([a, b], key=lambda lk: lk.name)
    slots = [int(lk.name[:2], 16) for lk in links]
    good = _put(store, shard_data(slots), links)
    assert [e.name for e in store.ls(good)] == ["a", "b"]
    assert store.cat(f"{good}/b") == b"b"

    with pytest.raises(Malformed, match="bitfield"):  # bitfield names a slot no link fills
        store.ls(_put(store, shard_data([*slots, 7 if 7 not in slots else 8]), links))
    with pytest.raises(Malformed, match="slot order"):
        store.ls(_put(store, shard_data(slots), list(reversed(links))))
    wrong = Link(a.cid, f"{(slots[0] + 1) % 256:02X}a", 1)  # "a" filed under a slot it does not hash to
    with pytest.raises(Malformed, match="does not hash"):
        store.ls(_put(store, shard_data([int(wrong.name[:2], 16)]), [wrong]))
    with pytest.raises(Malformed, match="slot prefix"):
        store.ls(_put(store, shard_data([0]), [Link(a.cid, "zz", 1)]))
    other_fanout = shard_data(slots).replace(b"\x30\x80\x02", b"\x30\x10")
    with pytest.raises(Unsupported, match="fanout"):
        store.ls(_put(store, other_fanout, links))
    # a sub-shard link pointing at a plain directory
    sub = _put(store, b"\x08\x01", [])
    with pytest.raises(Malformed, match="sub-shard"):
        store.ls(_put(store, shard_data([5]), [Link(CID.parse(sub), "05", 2)]))
    with pytest.raises(Malformed, match="forbidden"):
        bad = Link(a.cid, f"{slot_of(b'..', 0):02X}..", 1)
        store.ls(_put(store, shard_data([slot_of(b"..", 0)]), [bad]))


@pytest.mark.slow
def test_twenty_thousand_entries(tmp_path: Path) -> None:
    blocks: dict[CID, bytes] = {}
    root = build(20_000, blocks=blocks)
    assert str(root.cid) == JS_HAMT_20000
    store = EmbeddedStore(tmp_path / "s")
    for cid, block in blocks.items():
        store.put_block(cid, block)
    assert len(store.ls(str(root.cid))) == 20_000
    assert store.cat(f"{root.cid}/019999.bin") == hashlib.sha256(b"hamt-19999").digest()


# ---- the daemon: same CIDs through the DaemonStore, and it reads a daemon-made HAMT ------------------------


def test_daemon_shards_as_the_embedded_importer(ipfs_daemon: IpfsDaemon, tmp_path: Path) -> None:
    daemon = DaemonStore(ipfs_daemon.api, check_cids=True, timeout=120.0)  # check_cids: compared locally too
    tree = write_tree(tmp_path / "wide", 1001)
    cid = daemon.add_directory(tree)
    assert cid == JS_HAMT_VECTORS[1001]
    assert daemon.cat(f"{cid}/000500.bin") == dict(entries(501))["000500.bin"]  # verified through the shard
    assert len(daemon.ls(cid)) == 1001
    # the Kubo rule leaves these 46 KB of links flat: the daemon is told never to shard this tree
    kubo = DaemonStore(ipfs_daemon.api, settings=ImportSettings("v1raw", shard_rule="kubo"), check_cids=True,
                       timeout=120.0)
    assert kubo.add_directory(tree) == str(build(1001, ImportSettings("v1raw", shard_rule="kubo")).cid)


def test_car_import_serves_the_embedded_dag(ipfs_daemon: IpfsDaemon, tmp_path: Path) -> None:
    """`import_car`: the whole DAG in one `dag/import` request; the daemon then serves and pins that CID."""
    embedded = EmbeddedStore(tmp_path / "s")
    cid = embedded.add_directory(write_tree(tmp_path / "wide", 1000))
    daemon = DaemonStore(ipfs_daemon.api, timeout=120.0)
    assert daemon.import_car(embedded, cid) == cid == JS_HAMT_VECTORS[1000]
    assert daemon.is_pinned(cid)
    assert daemon.cat(f"{cid}/000999.bin") == dict(entries(1000))["000999.bin"]
