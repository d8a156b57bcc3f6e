"""Reading UnixFS DAGs block by block under hostile-DAG rules: what `EmbeddedStore` and `DaemonStore` share.

A `DagReader` walks a DAG whose blocks come from a `get_block(cid) -> bytes` function that has already
checked the bytes against the CID (and the block-size limit). It decodes nodes (with the consistency checks
that keep a malformed or lying DAG from yielding wrong bytes), resolves paths, reads byte ranges touching
only the blocks they need, lists directories and materializes files and trees, all bounded by `StoreLimits`.

Hooks let a store keep what is its own: `name` formats CIDs in messages and entries (the daemon store speaks
CIDv1), `fetch_map` loads a batch of children (the daemon store fetches them in parallel; by default one by
one, lazily), and `file_pieces` gives a file's bytes when materializing (the daemon store's `verify=False`
path streams them from the daemon's own `cat`).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from registry.store.base import (
    Entry,
    EntryKind,
    LimitExceeded,
    Malformed,
    NotFound,
    Unsupported,
    split_ref,
    valid_name,
)
from registry.store.cid import CID, DAG_PB, RAW
from registry.store.dagpb import (
    T_DIRECTORY,
    T_FILE,
    T_HAMT_SHARD,
    T_RAW,
    TYPE_NAMES,
    Link,
    decode_node,
    decode_unixfs,
)
from registry.store.hamt import check_shard_header, shard_entries, shard_lookup

FILE: EntryKind = "file"
DIRECTORY: EntryKind = "directory"


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """Bounds on what reading a (possibly hostile) DAG may cost."""

    max_depth: int = 64
    max_block_size: int = 2 * 1024 * 1024
    max_cat_bytes: int = 4 * 1024**3
    max_get_bytes: int = 256 * 1024**3
    max_get_entries: int = 1_000_000


@dataclass(frozen=True, slots=True)
class Node:
    """A decoded, verified block: a file node (own bytes plus sized children) or a directory."""

    cid: CID
    kind: EntryKind
    data: bytes
    links: tuple[Link, ...]
    blocksizes: tuple[int, ...]
    size: int
    #: a HAMT shard as stored (links named by slot); `DagReader.load` returns it flattened, with shard False
    shard: bool = False


#: A piece of file content.
P = TypeVar("P", bound=bytes | memoryview)
#: Loads nodes for a list of CIDs, yielding them in order (lazily or ahead, e.g. in parallel).
FetchMap = Callable[[Callable[[CID], Node], list[CID]], Iterable[Node]]
#: The bytes [start, end) of a file node, piece by piece.
FilePieces = Callable[[Node, int, int], Iterable[bytes | memoryview]]


class DagReader:
    """UnixFS DAG walking over verified blocks from `get_block`, bounded by `limits`."""

    def __init__(self, get_block: Callable[[CID], bytes], limits: StoreLimits, *,
                 name: Callable[[CID], str] = str, fetch_map: FetchMap | None = None,
                 file_pieces: FilePieces | None = None, yielded: str = "file DAG yielded") -> None:
        """`yielded`: the verb of the message when a file's bytes do not add up to its size."""
        self.get_block = get_block
        self.limits = limits
        self.name = name
        self.fetch_map: FetchMap = fetch_map or map
        self.file_pieces: FilePieces = file_pieces or self.read_range
        self.yielded = yielded

    # ---- nodes and paths ----------------------------------------------------------------------------------

    def load(self, cid: CID) -> Node:
        """The node of `cid`; a HAMT-sharded directory comes back as one flat directory of its entries."""
        node = self.decode(cid, self.get_block(cid))
        if node.shard:
            entries = sorted(shard_entries(cid, node.links, self._shard_node, self.name),
                             key=lambda link: link.name.encode())
            if len(entries) > self.limits.max_get_entries:
                raise LimitExceeded(f"{self.name(cid)}: HAMT of more than {self.limits.max_get_entries} entries")
            return Node(cid, DIRECTORY, b"", tuple(entries), (), 0)
        return node

    def _shard_node(self, cid: CID) -> tuple[bytes, int | None, int | None, tuple[Link, ...]]:
        """A sub-shard's bitfield, hash type, fanout and links (`Malformed` when it is not a shard node)."""
        if cid.codec != DAG_PB:
            raise Malformed(f"{self.name(cid)}: HAMT sub-shard is not a dag-pb node")
        data, links = decode_node(self.get_block(cid))
        u = decode_unixfs(data) if data is not None else None
        if u is None or u.type != T_HAMT_SHARD:
            raise Malformed(f"{self.name(cid)}: HAMT sub-shard is not a shard node")
        return u.data, u.hash_type, u.fanout, tuple(links)

    def decode(self, cid: CID, block: bytes) -> Node:
        """A verified block as a file or directory node, checked for consistency."""
        if cid.codec == RAW:
            return Node(cid, FILE, block, (), (), len(block))
        if cid.codec != DAG_PB:  # CID.parse accepts only raw and dag-pb; kept for clarity
            raise Unsupported(f"{self.name(cid)}: codec {cid.codec_name} is not UnixFS")
        data, links = decode_node(block)
        if data is None:
            raise Malformed(f"{self.name(cid)}: dag-pb node without UnixFS data")
        u = decode_unixfs(data)
        if u.type in (T_FILE, T_RAW):
            if len(links) != len(u.blocksizes):
                raise Malformed(f"{self.name(cid)}: file node with {len(links)} links but "
                                f"{len(u.blocksizes)} blocksizes")
            total = len(u.data) + sum(u.blocksizes)
            if u.filesize is not None and u.filesize != total:
                raise Malformed(f"{self.name(cid)}: filesize {u.filesize} differs from the {total} bytes "
                                "its parts hold")
            return Node(cid, FILE, u.data, tuple(links), tuple(u.blocksizes), total)
        if u.type == T_DIRECTORY:
            names: set[str] = set()
            for link in links:
                if not valid_name(link.name):
                    raise Malformed(f"{self.name(cid)}: directory entry with a forbidden name {link.name!r}")
                if link.name in names:
                    raise Malformed(f"{self.name(cid)}: duplicate directory entry {link.name!r}")
                names.add(link.name)
            return Node(cid, DIRECTORY, b"", tuple(links), (), 0)
        if u.type == T_HAMT_SHARD:
            check_shard_header(self.name(cid), u.data, u.hash_type, u.fanout, links)
            return Node(cid, DIRECTORY, u.data, tuple(links), (), 0, shard=True)
        raise Unsupported(f"{self.name(cid)}: UnixFS {TYPE_NAMES.get(u.type, str(u.type))} nodes are not supported")

    def resolve(self, cid: CID, parts: list[str]) -> CID:
        """CID of the entry at path `parts` under directory `cid`; reads only the directories on the way."""
        root = cid
        if len(parts) > self.limits.max_depth:
            raise LimitExceeded(f"path of {len(parts)} components exceeds the depth limit")
        for i, part in enumerate(parts):
            node = self.decode(cid, self.get_block(cid))
            if node.kind != DIRECTORY:
                raise NotFound(f"{'/'.join(parts[:i]) or self.name(cid)} is not a directory")
            if node.shard:  # follow the name's hash: only the sub-shards on its path are read
                found = shard_lookup(part, node.links, self._shard_node, cid, self.name)
            else:
                found = next((link for link in node.links if link.name == part), None)
            if found is None:
                raise NotFound(f"no entry {'/'.join(parts[:i + 1])!r} in the directory tree {self.name(root)}")
            cid = found.cid
        return cid

    def ref(self, ref: str | CID) -> CID:
        """The CID a reference ("CID" or "CID/path/in/dir") names."""
        if isinstance(ref, CID):
            return ref
        cid_text, parts = split_ref(ref)
        cid = CID.parse(cid_text)
        return self.resolve(cid, parts) if parts else cid

    def load_kind(self, ref: str | CID, kind: EntryKind) -> Node:
        """The node `ref` names, which must be a `kind`."""
        node = self.load(self.ref(ref))
        if node.kind != kind:
            raise Malformed(f"{self.name(node.cid)} is a {node.kind}, not a {kind}")
        return node

    # ---- files --------------------------------------------------------------------------------------------

    def open_range(self, ref: str | CID, offset: int, length: int | None,
                   max_bytes: int | None = None) -> tuple[Node, int, int]:
        """The file node of `ref` and the clamped [start, end) of a read, checked against the cat limit."""
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must be non-negative")
        node = self.load_kind(ref, FILE)
        start = min(offset, node.size)
        end = node.size if length is None else min(node.size, offset + length)
        limit = self.limits.max_cat_bytes if max_bytes is None else max_bytes
        if end - start > limit:
            raise LimitExceeded(f"{self.name(node.cid)}: reading {end - start} bytes exceeds the limit of {limit}")
        return node, start, end

    def checked(self, node: Node, pieces: Iterable[P], expected: int) -> Iterator[P]:
        """`pieces`, then a `Malformed` if they did not add up to `expected` bytes."""
        got = 0
        for piece in pieces:
            got += len(piece)
            yield piece
        if got != expected:
            raise Malformed(f"{self.name(node.cid)}: {self.yielded} {got} bytes where {expected} were expected")

    def gather(self, node: Node, pieces: Iterable[bytes | memoryview], expected: int) -> bytearray:
        """`pieces` copied into one buffer allocated up front: one copy of the content, where `b"".join` holds
        every block and the joined copy at once (2x a big checkpoint). `Malformed` if they are not `expected`
        bytes; the buffer is writable, so a checkpoint's tensors can be views of it."""
        buf = bytearray(expected)
        view = memoryview(buf)
        pos = 0
        try:
            for piece in pieces:
                n = len(piece)
                if pos + n > expected:
                    raise Malformed(f"{self.name(node.cid)}: {self.yielded} more than the {expected} bytes expected")
                view[pos:pos + n] = piece
                pos += n
        finally:
            view.release()
        if pos != expected:
            raise Malformed(f"{self.name(node.cid)}: {self.yielded} {pos} bytes where {expected} were expected")
        return buf

    def read_range(self, node: Node, start: int, end: int, depth: int = 0) -> Iterator[memoryview]:
        """Content [start, end) of a file node, loading only the children that overlap the range."""
        if depth > self.limits.max_depth:
            raise LimitExceeded(f"file DAG deeper than {self.limits.max_depth} at {self.name(node.cid)}")
        data = node.data
        if start < len(data):
            yield memoryview(data)[start:min(end, len(data))]
        wanted: list[tuple[Link, int, int]] = []
        pos = len(data)
        for link, bsize in zip(node.links, node.blocksizes, strict=True):
            if pos >= end:
                break
            if pos + bsize > start and bsize:
                wanted.append((link, bsize, pos))
            pos += bsize
        children = self.fetch_map(self.load, [w[0].cid for w in wanted])
        for (link, bsize, child_pos), child in zip(wanted, children, strict=True):
            if child.kind != FILE:
                raise Malformed(f"{self.name(node.cid)}: file links to a {child.kind} ({self.name(link.cid)})")
            if child.size != bsize:
                raise Malformed(f"{self.name(node.cid)}: child {self.name(link.cid)} holds {child.size} bytes, "
                                f"parent says {bsize}")
            yield from self.read_range(child, max(start - child_pos, 0), min(end, child_pos + bsize) - child_pos,
                                       depth + 1)

    # ---- directories --------------------------------------------------------------------------------------

    def ls(self, ref: str | CID) -> list[Entry]:
        """Entries of a directory, sorted by name; reads the directory and each dag-pb child's root block."""
        node = self.load_kind(ref, DIRECTORY)
        pending = [link for link in node.links if link.cid.codec != RAW]
        children = dict(zip((link.name for link in pending), self.fetch_map(self.load, [lk.cid for lk in pending]),
                            strict=True))
        out: list[Entry] = []
        for link in node.links:
            if link.cid.codec == RAW:  # a raw block is a file whose size is its Tsize: no need to read it
                out.append(Entry(link.name, self.name(link.cid), FILE, link.tsize, link.tsize))
                continue
            child = children[link.name]
            out.append(Entry(link.name, self.name(link.cid), child.kind, child.size if child.kind == FILE else None,
                             link.tsize))
        return sorted(out, key=lambda e: e.name.encode())

    def get(self, ref: str | CID, dest: str | Path) -> Path:
        """Writes the file or directory tree at `dest` (which must not exist); all or nothing."""
        target = Path(dest)
        if os.path.lexists(target):
            raise FileExistsError(f"{target} already exists")
        root = self.load(self.ref(ref))
        staging = target.parent / f".{target.name}.partial-{secrets.token_hex(4)}"
        budget = _Budget(self.limits.max_get_bytes, self.limits.max_get_entries)
        try:
            if root.kind == DIRECTORY:
                self._materialize_dir(root, staging, 0, budget)
            else:
                self._materialize_file(root, staging, budget)
            os.rename(staging, target)
        except BaseException:
            if staging.is_dir() and not staging.is_symlink():
                shutil.rmtree(staging, ignore_errors=True)
            elif os.path.lexists(staging):
                staging.unlink()
            raise
        return target

    def _materialize_file(self, node: Node, path: Path, budget: _Budget) -> None:
        budget.entry(path)
        budget.spend(node.size, path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags, 0o644)
        with open(fd, "wb") as f:
            for piece in self.file_pieces(node, 0, node.size):
                f.write(piece)
            if f.tell() != node.size:
                raise Malformed(f"{self.name(node.cid)}: {self.yielded} {f.tell()} bytes where {node.size} "
                                "were expected")

    def _materialize_dir(self, node: Node, path: Path, depth: int, budget: _Budget) -> None:
        if depth > self.limits.max_depth:
            raise LimitExceeded(f"directory tree deeper than {self.limits.max_depth} at {self.name(node.cid)}")
        budget.entry(path)
        os.mkdir(path, 0o755)
        for link in node.links:  # names validated in decode
            child = self.load(link.cid)
            target = path / link.name
            if child.kind == DIRECTORY:
                self._materialize_dir(child, target, depth + 1, budget)
            else:
                self._materialize_file(child, target, budget)


class _Budget:
    """Running totals of what `get` has written, against the store's limits."""

    def __init__(self, max_bytes: int, max_entries: int) -> None:
        self.bytes_left = max_bytes
        self.entries_left = max_entries

    def spend(self, n: int, path: Path) -> None:
        self.bytes_left -= n
        if self.bytes_left < 0:
            raise LimitExceeded(f"get: writing {path} exceeds the byte limit")

    def entry(self, path: Path) -> None:
        self.entries_left -= 1
        if self.entries_left < 0:
            raise LimitExceeded(f"get: {path} exceeds the entry limit")


__all__ = ["DIRECTORY", "FILE", "DagReader", "Node", "StoreLimits"]
