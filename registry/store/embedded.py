"""The embedded content store: real IPFS blocks in a local directory, no daemon (SPEC section 7).

Layout under `root`::

    blocks/<xx>/<multihash base32>   one file per block, keyed by multihash like Kubo's flatfs
                                     (<xx> = next-to-last two characters), written atomically
    pins/<cid>                       empty marker per pinned root (nothing is ever garbage-collected here)
    tmp/                             staging for atomic writes (same filesystem as blocks/)

Every block read is hashed and compared to the CID it was asked for, so a corrupted or swapped file is a
`Corrupt` error and never wrong bytes. Reads walk the DAG and touch only the blocks a byte range needs:
a verifier reading `manifest.json` and one checkpoint out of a transcript directory reads the directory
nodes on the path, that file's root and the leaves covering the range. A block key holds no codec, so a
raw block and a dag-pb block with equal bytes share one file (as in Kubo).

Blocks are not fsync'ed unless `fsync=True`: a crash can lose recent blocks, never turn them into wrong
ones (a torn or empty file fails its hash check and reads as corrupt; re-adding the content repairs it).

Everything read is treated as hostile (transcripts come from provers): DAG depth, block size, bytes
returned by `cat`, bytes and entries written by `get` are bounded by `StoreLimits`; directory entry names
with '/', '\\', NUL, '.' or '..' are refused; `get` creates files with O_EXCL|O_NOFOLLOW inside a staging
directory that is renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from registry.store.base import (
    Corrupt,
    Entry,
    EntryKind,
    LimitExceeded,
    Malformed,
    NotFound,
    Unsupported,
    split_path,
    split_ref,
    valid_name,
)
from registry.store.cid import CID, DAG_PB, RAW, b32encode
from registry.store.dagpb import T_DIRECTORY, T_FILE, T_RAW, TYPE_NAMES, Link, decode_node, decode_unixfs
from registry.store.unixfs import (
    DEFAULT_SETTINGS,
    ImportSettings,
    import_bytes,
    import_file,
    import_stream,
    import_tree,
)

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
class _Node:
    """A decoded, verified block: a file node (own bytes plus sized children) or a directory."""

    cid: CID
    kind: EntryKind
    data: bytes
    links: tuple[Link, ...]
    blocksizes: tuple[int, ...]
    size: int


class EmbeddedStore:
    """A `ContentStore` over a local block directory; CIDs equal Kubo's under the same import settings."""

    def __init__(self, root: str | Path, settings: ImportSettings = DEFAULT_SETTINGS, *,
                 limits: StoreLimits | None = None, fsync: bool = False) -> None:
        self.root = Path(root)
        self.settings = settings
        self.limits = limits or StoreLimits()
        self.fsync = fsync
        self.block_reads = 0  # blocks read from disk so far: lets tests (and operators) see what a read costs
        self._blocks = self.root / "blocks"
        self._pins = self.root / "pins"
        self._tmp = self.root / "tmp"
        for d in (self._blocks, self._pins, self._tmp):
            d.mkdir(parents=True, exist_ok=True)
        self._known_dirs: set[str] = set()
        self._counter = itertools.count()
        self._token = secrets.token_hex(4)

    def __repr__(self) -> str:
        return f"EmbeddedStore({str(self.root)!r}, settings={self.settings.name!r})"

    # ---- adding ---------------------------------------------------------------------------------------

    def add_bytes(self, data: bytes | bytearray | memoryview, *, settings: ImportSettings | None = None) -> str:
        return str(import_bytes(data, settings or self.settings, self._write_block).cid)

    def add_stream(self, pieces: Iterable[bytes | bytearray | memoryview], *,
                   settings: ImportSettings | None = None) -> str:
        """Adds a file given as pieces of any sizes, never holding more than one chunk."""
        return str(import_stream(pieces, settings or self.settings, self._write_block).cid)

    def add_file(self, path: str | Path, *, settings: ImportSettings | None = None) -> str:
        return str(import_file(path, settings or self.settings, self._write_block).cid)

    def add_directory(self, path: str | Path, *, settings: ImportSettings | None = None) -> str:
        return str(import_tree(path, settings or self.settings, self._write_block,
                               max_depth=self.limits.max_depth).cid)

    def put_block(self, cid: str | CID, data: bytes | memoryview) -> str:
        """Stores a block fetched from elsewhere after checking that it hashes to `cid` (and, for dag-pb,
        that it decodes), so nothing unverified ever lands in the store."""
        c = CID.parse(cid)
        if len(data) > self.limits.max_block_size:
            raise LimitExceeded(f"block {c} is {len(data)} bytes, over the {self.limits.max_block_size} limit")
        if not c.matches(data):
            raise Corrupt(f"block data does not hash to {c}")
        if c.codec == DAG_PB:
            decode_node(bytes(data))
        self._write_block(c, data)
        return str(c)

    # ---- reading ------------------------------------------------------------------------------------

    def has(self, cid: str | CID) -> bool:
        """Whether the block is present (not verified; reading it verifies)."""
        return self._path(CID.parse(cid)).is_file()

    def get_block(self, cid: str | CID) -> bytes:
        """A block's verified bytes."""
        return self._read_block(CID.parse(cid))

    def resolve(self, cid: str | CID, path: str = "") -> str:
        """CID of the entry at `path` inside directory `cid`; reads only the directories on the way."""
        return str(self._resolve(CID.parse(cid), split_path(path)))

    def cat(self, ref: str | CID, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes [offset, offset+length) of a file ("CID" or "CID/path/in/dir"), verified block by block."""
        return b"".join(self.iter_cat(ref, offset, length))

    def iter_cat(self, ref: str | CID, offset: int = 0, length: int | None = None,
                 *, max_bytes: int | None = None) -> Iterator[memoryview]:
        """Like `cat`, but yields the range piece by piece (at most one block held at a time). Bad arguments,
        a missing path and a root that is not a file raise here; errors in later blocks raise while iterating."""
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must be non-negative")
        node = self._load(self._ref(ref))
        if node.kind != FILE:
            raise Malformed(f"{node.cid} is a {node.kind}, not a file")
        start = min(offset, node.size)
        end = node.size if length is None else min(node.size, offset + length)
        limit = self.limits.max_cat_bytes if max_bytes is None else max_bytes
        if end - start > limit:
            raise LimitExceeded(f"{node.cid}: reading {end - start} bytes exceeds the limit of {limit}")
        return self._checked_range(node, start, end)

    def _checked_range(self, node: _Node, start: int, end: int) -> Iterator[memoryview]:
        got = 0
        for piece in self._read_range(node, start, end, 0):
            got += len(piece)
            yield piece
        if got != end - start:
            raise Malformed(f"{node.cid}: file DAG yielded {got} bytes where {end - start} were expected")

    def size(self, ref: str | CID) -> int:
        """Content size of a file (from its root block alone)."""
        node = self._load(self._ref(ref))
        if node.kind != FILE:
            raise Malformed(f"{node.cid} is a {node.kind}, not a file")
        return node.size

    def ls(self, ref: str | CID) -> list[Entry]:
        """Entries of a directory, sorted by name; reads the directory and each dag-pb child's root block."""
        node = self._load(self._ref(ref))
        if node.kind != DIRECTORY:
            raise Malformed(f"{node.cid} is a {node.kind}, not a directory")
        out = []
        for link in node.links:
            if link.cid.codec == RAW:  # a raw block is a file whose size is its Tsize: no need to read it
                out.append(Entry(link.name, str(link.cid), FILE, link.tsize, link.tsize))
                continue
            child = self._load(link.cid)
            size = child.size if child.kind == FILE else None
            out.append(Entry(link.name, str(link.cid), child.kind, size, link.tsize))
        return sorted(out, key=lambda e: e.name.encode())

    def get(self, ref: str | CID, dest: str | Path) -> Path:
        """Writes the file or directory tree at `dest` (which must not exist); all or nothing."""
        target = Path(dest)
        if os.path.lexists(target):
            raise FileExistsError(f"{target} already exists")
        root = self._load(self._ref(ref))
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

    def blocks(self, ref: str | CID) -> Iterator[tuple[CID, bytes]]:
        """Every block of a DAG once, verified, parents before children: what `ipfs block put` needs to
        reproduce the same CIDs in a daemon."""
        root = self._ref(ref)
        seen = {(root.codec, root.multihash)}
        stack: list[tuple[CID, int]] = [(root, 0)]
        while stack:
            cid, depth = stack.pop()
            if depth > self.limits.max_depth:
                raise LimitExceeded(f"DAG under {root} is deeper than {self.limits.max_depth}")
            block = self._read_block(cid)
            yield cid, block
            if cid.codec == DAG_PB:
                _, links = decode_node(block)
                for link in reversed(links):
                    if (link.cid.codec, link.cid.multihash) not in seen:
                        seen.add((link.cid.codec, link.cid.multihash))
                        stack.append((link.cid, depth + 1))

    def pin(self, cid: str | CID) -> None:
        """Checks the whole DAG is present and intact, then records the pin (this store never collects)."""
        c = CID.parse(cid)
        for _ in self.blocks(c):
            pass
        (self._pins / str(c)).touch()

    def pins(self) -> list[str]:
        return sorted(p.name for p in self._pins.iterdir())

    # ---- internals ----------------------------------------------------------------------------------

    def _ref(self, ref: str | CID) -> CID:
        if isinstance(ref, CID):
            return ref
        cid_text, parts = split_ref(ref)
        cid = CID.parse(cid_text)
        return self._resolve(cid, parts) if parts else cid

    def _path(self, cid: CID) -> Path:
        key = b32encode(cid.multihash)
        return self._blocks / key[-3:-1] / key

    def _write_block(self, cid: CID, data: bytes | memoryview) -> None:
        key = b32encode(cid.multihash)
        shard = key[-3:-1]
        path = self._blocks / shard / key
        if self._intact(path, cid, len(data)):
            return  # already there; a damaged copy is replaced, so re-adding content repairs the store
        if shard not in self._known_dirs:
            (self._blocks / shard).mkdir(exist_ok=True)
            self._known_dirs.add(shard)
        tmp = self._tmp / f"{key}.{os.getpid()}.{self._token}.{next(self._counter)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            with open(fd, "wb", closefd=True) as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @staticmethod
    def _intact(path: Path, cid: CID, size: int) -> bool:
        try:
            with open(path, "rb", buffering=0) as f:
                if os.fstat(f.fileno()).st_size != size:
                    return False
                return hashlib.sha256(f.read()).digest() == cid.digest
        except OSError:
            return False

    def _read_block(self, cid: CID) -> bytes:
        path = self._path(cid)
        try:
            with open(path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                if size > self.limits.max_block_size:
                    raise LimitExceeded(f"block {cid} is {size} bytes, over the {self.limits.max_block_size} limit")
                data = f.read()
        except FileNotFoundError:
            raise NotFound(f"block {cid} is not in the embedded store at {self.root}") from None
        except IsADirectoryError:
            raise Corrupt(f"block {cid}: {path} is not a file") from None
        self.block_reads += 1
        digest = hashlib.sha256(data).digest()
        if digest != cid.digest:
            raise Corrupt(f"block {cid} is corrupt: its {len(data)} bytes hash to {digest.hex()[:16]}..., "
                          f"not to the CID's digest")
        return data

    def _load(self, cid: CID) -> _Node:
        block = self._read_block(cid)
        if cid.codec == RAW:
            return _Node(cid, FILE, block, (), (), len(block))
        data, links = decode_node(block)
        if data is None:
            raise Malformed(f"{cid}: dag-pb node without UnixFS data")
        u = decode_unixfs(data)
        if u.type in (T_FILE, T_RAW):
            if len(links) != len(u.blocksizes):
                raise Malformed(f"{cid}: file node with {len(links)} links but {len(u.blocksizes)} blocksizes")
            total = len(u.data) + sum(u.blocksizes)
            if u.filesize is not None and u.filesize != total:
                raise Malformed(f"{cid}: filesize {u.filesize} differs from the {total} bytes its parts hold")
            return _Node(cid, FILE, u.data, tuple(links), tuple(u.blocksizes), total)
        if u.type == T_DIRECTORY:
            names: set[str] = set()
            for link in links:
                if not valid_name(link.name):
                    raise Malformed(f"{cid}: directory entry with a forbidden name {link.name!r}")
                if link.name in names:
                    raise Malformed(f"{cid}: duplicate directory entry {link.name!r}")
                names.add(link.name)
            return _Node(cid, DIRECTORY, b"", tuple(links), (), 0)
        raise Unsupported(f"{cid}: UnixFS {TYPE_NAMES[u.type]} nodes are not supported")

    def _resolve(self, cid: CID, parts: list[str]) -> CID:
        root = cid
        if len(parts) > self.limits.max_depth:
            raise LimitExceeded(f"path of {len(parts)} components exceeds the depth limit")
        for i, part in enumerate(parts):
            node = self._load(cid)
            if node.kind != DIRECTORY:
                raise NotFound(f"{'/'.join(parts[:i]) or cid} is not a directory")
            for link in node.links:
                if link.name == part:
                    cid = link.cid
                    break
            else:
                raise NotFound(f"no entry {'/'.join(parts[:i + 1])!r} in the directory tree {root}")
        return cid

    def _read_range(self, node: _Node, start: int, end: int, depth: int) -> Iterator[memoryview]:
        """Content [start, end) of a file node, loading only the children that overlap the range."""
        if depth > self.limits.max_depth:
            raise LimitExceeded(f"file DAG deeper than {self.limits.max_depth} at {node.cid}")
        data = node.data
        if start < len(data):
            yield memoryview(data)[start:min(end, len(data))]
        pos = len(data)
        for link, bsize in zip(node.links, node.blocksizes, strict=True):
            if pos >= end:
                break
            child_end = pos + bsize
            if child_end > start and bsize:
                child = self._load(link.cid)
                if child.kind != FILE:
                    raise Malformed(f"{node.cid}: file links to a {child.kind} ({link.cid})")
                if child.size != bsize:
                    raise Malformed(f"{node.cid}: child {link.cid} holds {child.size} bytes, parent says {bsize}")
                yield from self._read_range(child, max(start - pos, 0), min(end, child_end) - pos, depth + 1)
            pos = child_end

    def _materialize_file(self, node: _Node, path: Path, budget: _Budget) -> None:
        budget.entry(path)
        budget.spend(node.size, path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags, 0o644)
        with open(fd, "wb") as f:
            for piece in self._read_range(node, 0, node.size, 0):
                f.write(piece)
            if f.tell() != node.size:
                raise Malformed(f"{node.cid}: file DAG yielded {f.tell()} bytes where {node.size} were expected")

    def _materialize_dir(self, node: _Node, path: Path, depth: int, budget: _Budget) -> None:
        if depth > self.limits.max_depth:
            raise LimitExceeded(f"directory tree deeper than {self.limits.max_depth} at {node.cid}")
        budget.entry(path)
        os.mkdir(path, 0o755)
        for link in node.links:  # names validated in _load
            child = self._load(link.cid)
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

