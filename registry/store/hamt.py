"""UnixFS HAMT-sharded directories, byte-exact with js-ipfs 0.66 (and Go's go-unixfs/boxo layout).

Why: IPFS daemons turn a large directory into a HAMT (hash array mapped trie) instead of one flat node, so
an importer that must reproduce a daemon's CID for such a directory has to build the very same trie.

The layout (js `ipfs-unixfs-importer` dir-sharded + `hamt-sharding`; Go `go-unixfs/hamt`):
- fanout 256, so each level consumes one byte of the name's hash;
- the hash is murmur3-x64-64: the first 64 bits (h1, big-endian) of murmur3-x64-128 with seed 0 over the
  UTF-8 name; deeper than 8 levels the bytes of murmur3(name ‖ depth byte) follow (never reached in practice);
- a slot holding exactly one entry is a link named `"%02X" % slot + name` to the entry itself; a slot holding
  several is a link named `"%02X" % slot` to a sub-shard built the same way one byte further down;
- links are in slot order; each node's UnixFS Data is {Type=HAMTShard, Data=bitfield of occupied slots as a
  big-endian integer with leading zero bytes dropped (at least one byte), hashType=0x22, fanout=256};
- Tsize of a link is the child's cumulative DAG size (block length plus its links' Tsizes), as elsewhere.

When a directory becomes a HAMT is the importer's *shard rule* (`unixfs.ImportSettings.shard_rule`):
"js" (js-ipfs 0.66: 1,000 entries or more), "kubo" (Kubo: estimated link bytes — name length plus binary
CID length summed over the entries — of 256 KiB or more) or "portable" (refuse a directory the two rules
disagree on, so its CID is the same on either daemon).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator, Sequence

from registry.store.base import LimitExceeded, Malformed, Unsupported, valid_name
from registry.store.cid import CID, DAG_PB
from registry.store.dagpb import T_HAMT_SHARD, Link, encode_node, encode_varint

HAMT_FANOUT = 256
HASH_MURMUR3_X64_64 = 0x22
#: levels a shard may nest (8 per 64-bit hash; beyond that further hashes of the name are consumed)
MAX_HAMT_DEPTH = 16

_M = (1 << 64) - 1
_C1 = 0x87C37B91114253D5
_C2 = 0x4CF5AD432745937F


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M


def _fmix(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _M
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _M
    return k ^ (k >> 33)


def murmur3_x64_128(data: bytes, seed: int = 0) -> tuple[int, int]:
    """MurmurHash3 x64 128-bit (Appleby's reference), as the two 64-bit halves (h1, h2)."""
    h1 = h2 = seed & _M
    n = len(data)
    nblocks = n // 16
    for i in range(nblocks):
        k1 = int.from_bytes(data[16 * i:16 * i + 8], "little")
        k2 = int.from_bytes(data[16 * i + 8:16 * i + 16], "little")
        k1 = (_rotl((k1 * _C1) & _M, 31) * _C2) & _M
        h1 ^= k1
        h1 = (_rotl(h1, 27) + h2) & _M
        h1 = (h1 * 5 + 0x52DCE729) & _M
        k2 = (_rotl((k2 * _C2) & _M, 33) * _C1) & _M
        h2 ^= k2
        h2 = (_rotl(h2, 31) + h1) & _M
        h2 = (h2 * 5 + 0x38495AB5) & _M
    tail = data[16 * nblocks:]
    if len(tail) > 8:
        k2 = int.from_bytes(tail[8:], "little")
        h2 ^= (_rotl((k2 * _C2) & _M, 33) * _C1) & _M
    if tail:
        k1 = int.from_bytes(tail[:8], "little")
        h1 ^= (_rotl((k1 * _C1) & _M, 31) * _C2) & _M
    h1 ^= n
    h2 ^= n
    h1 = (h1 + h2) & _M
    h2 = (h2 + h1) & _M
    h1, h2 = _fmix(h1), _fmix(h2)
    h1 = (h1 + h2) & _M
    h2 = (h2 + h1) & _M
    return h1, h2


def murmur3_x64_64(data: bytes) -> bytes:
    """The HAMT hash of a name: the first 64 bits of murmur3-x64-128, big-endian (what Go's `Sum64` gives)."""
    return murmur3_x64_128(data)[0].to_bytes(8, "big")


def slot_of(name: bytes, depth: int) -> int:
    """The slot (0..255) of `name` at shard level `depth`."""
    block, pos = divmod(depth, 8)
    digest = murmur3_x64_64(name if block == 0 else name + bytes((block,)))
    return digest[pos]


def _slots(name: bytes, levels: int) -> bytes:
    """Slots of `name` at levels 0..levels-1 (hashing once per 8 levels)."""
    out = bytearray()
    block = 0
    while len(out) < levels:
        out += murmur3_x64_64(name if block == 0 else name + bytes((block,)))
        block += 1
    return bytes(out[:levels])


def shard_data(slots: Sequence[int]) -> bytes:
    """The UnixFS Data of a shard node whose occupied slots are `slots`."""
    bits = 0
    for s in slots:
        bits |= 1 << s
    bitfield = bits.to_bytes(max(1, (bits.bit_length() + 7) // 8), "big")
    return (b"\x08" + encode_varint(T_HAMT_SHARD) + b"\x12" + encode_varint(len(bitfield)) + bitfield
            + b"\x28" + encode_varint(HASH_MURMUR3_X64_64) + b"\x30" + encode_varint(HAMT_FANOUT))


Sink = Callable[[CID, bytes], None] | None


def build_shard(links: Sequence[tuple[bytes, Link]], cid_version: int, sink: Sink) -> tuple[CID, int]:
    """A HAMT over the directory entries `links` ((UTF-8 name, link to the child) pairs, names distinct);
    returns the root's CID and Tsize. Every shard block goes to `sink`."""
    keyed = [(_slots(key, 8), key, link) for key, link in links]
    return _build(keyed, 0, cid_version, sink)


def _build(entries: list[tuple[bytes, bytes, Link]], depth: int, cid_version: int, sink: Sink) -> tuple[CID, int]:
    if depth >= MAX_HAMT_DEPTH:
        raise LimitExceeded(f"HAMT deeper than {MAX_HAMT_DEPTH} levels (colliding name hashes)")
    groups: dict[int, list[tuple[bytes, bytes, Link]]] = {}
    for item in entries:
        slots, key, link = item
        if len(slots) <= depth:
            slots = _slots(key, depth + 8)
            item = (slots, key, link)
        groups.setdefault(slots[depth], []).append(item)
    out: list[Link] = []
    for slot in sorted(groups):
        group = groups[slot]
        prefix = f"{slot:02X}"
        if len(group) == 1:
            _, key, link = group[0]
            out.append(Link(link.cid, prefix + key.decode("utf-8"), link.tsize))
        else:
            cid, tsize = _build(group, depth + 1, cid_version, sink)
            out.append(Link(cid, prefix, tsize))
    block = encode_node(shard_data(sorted(groups)), out)
    cid = CID.from_digest(hashlib.sha256(block).digest(), DAG_PB, cid_version)
    if sink is not None:
        sink(cid, block)
    return cid, len(block) + sum(link.tsize for link in out)


# ---- reading ------------------------------------------------------------------------------------------------


def check_shard_header(where: str, data: bytes, hash_type: int | None, fanout: int | None,
                       links: Sequence[Link]) -> None:
    """Refuses a shard node this reader cannot follow, or whose bitfield and links disagree."""
    if hash_type != HASH_MURMUR3_X64_64 or fanout != HAMT_FANOUT:
        raise Unsupported(f"{where}: HAMT with hash {hash_type} and fanout {fanout} (only murmur3-x64-64, 256)")
    slots = [link_slot(where, link) for link in links]
    if any(b <= a for a, b in itertools.pairwise(slots)):
        raise Malformed(f"{where}: HAMT links out of slot order or repeated")
    bits = int.from_bytes(data, "big")
    want = 0
    for s in slots:
        want |= 1 << s
    if bits != want:
        raise Malformed(f"{where}: HAMT bitfield does not match its links")


def link_slot(where: str, link: Link) -> int:
    prefix = link.name[:2]
    if len(prefix) != 2 or prefix.upper() != prefix or any(c not in "0123456789ABCDEF" for c in prefix):
        raise Malformed(f"{where}: HAMT link name {link.name!r} lacks a slot prefix")
    return int(prefix, 16)


def shard_entries(root: CID, links: Sequence[Link], load: Callable[[CID], tuple[bytes, int | None, int | None,
                  Sequence[Link]]], where: Callable[[CID], str]) -> Iterator[Link]:
    """The directory entries of a shard (links renamed to the entries' names), walking sub-shards through
    `load(cid) -> (bitfield, hashType, fanout, links)`; each entry's name must hash to the slots it sits in,
    so that listing and path lookup agree on a hostile shard."""
    stack: list[tuple[CID, Sequence[Link], bytes]] = [(root, links, b"")]
    while stack:
        cid, node_links, path = stack.pop()
        depth = len(path)
        if depth >= MAX_HAMT_DEPTH:
            raise LimitExceeded(f"{where(root)}: HAMT deeper than {MAX_HAMT_DEPTH} levels")
        subs: list[tuple[CID, Sequence[Link], bytes]] = []
        for link in node_links:
            slot = link_slot(where(cid), link)
            name = link.name[2:]
            if not name:
                data, hash_type, fanout, sub_links = load(link.cid)
                check_shard_header(where(link.cid), data, hash_type, fanout, sub_links)
                subs.append((link.cid, sub_links, path + bytes((slot,))))
                continue
            if not valid_name(name):
                raise Malformed(f"{where(cid)}: directory entry with a forbidden name {name!r}")
            if _slots(name.encode("utf-8"), depth + 1) != path + bytes((slot,)):
                raise Malformed(f"{where(cid)}: HAMT entry {name!r} sits in a slot its name does not hash to")
            yield Link(link.cid, name, link.tsize)
        stack.extend(reversed(subs))


def shard_lookup(name: str, links: Sequence[Link], load: Callable[[CID], tuple[bytes, int | None, int | None,
                 Sequence[Link]]], where: CID, fmt: Callable[[CID], str]) -> Link | None:
    """The link of entry `name` in a shard, reading only the sub-shards on its hash path."""
    key = name.encode("utf-8")
    slots = _slots(key, MAX_HAMT_DEPTH)
    cid = where
    for depth in range(MAX_HAMT_DEPTH):
        want = slots[depth]
        for link in links:
            if link_slot(fmt(cid), link) != want:
                continue
            rest = link.name[2:]
            if not rest:
                data, hash_type, fanout, sub = load(link.cid)
                check_shard_header(fmt(link.cid), data, hash_type, fanout, sub)
                cid, links = link.cid, sub
                break
            return Link(link.cid, rest, link.tsize) if rest == name else None
        else:
            return None
    raise LimitExceeded(f"{fmt(where)}: HAMT deeper than {MAX_HAMT_DEPTH} levels")


__all__ = [
    "HAMT_FANOUT",
    "HASH_MURMUR3_X64_64",
    "build_shard",
    "murmur3_x64_64",
    "murmur3_x64_128",
    "shard_data",
    "shard_entries",
    "shard_lookup",
    "slot_of",
]
