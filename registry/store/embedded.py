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
from collections.abc import Iterable, Iterator
from pathlib import Path

from registry.store.base import Corrupt, Entry, LimitExceeded, NotFound, split_path
from registry.store.cid import CID, DAG_PB, b32encode
from registry.store.dag import FILE, DagReader, StoreLimits
from registry.store.dagpb import decode_node
from registry.store.unixfs import (
    DEFAULT_SETTINGS,
    ImportSettings,
    import_bytes,
    import_file,
    import_stream,
    import_tree,
)


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
        return str(self._dag.resolve(CID.parse(cid), split_path(path)))

    def cat(self, ref: str | CID, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes [offset, offset+length) of a file ("CID" or "CID/path/in/dir"), verified block by block."""
        return b"".join(self.iter_cat(ref, offset, length))

    def cat_buffer(self, ref: str | CID, offset: int = 0, length: int | None = None,
                   *, max_bytes: int | None = None) -> bytearray:
        """Like `cat`, into one writable buffer sized from the file's root block: a big file is in memory
        once, not as its blocks plus a joined copy (what the verifier uses for checkpoints)."""
        dag = self._dag
        node, start, end = dag.open_range(ref, offset, length, max_bytes)
        return dag.gather(node, dag.read_range(node, start, end), end - start)

    def iter_cat(self, ref: str | CID, offset: int = 0, length: int | None = None,
                 *, max_bytes: int | None = None) -> Iterator[memoryview]:
        """Like `cat`, but yields the range piece by piece (at most one block held at a time). Bad arguments,
        a missing path and a root that is not a file raise here; errors in later blocks raise while iterating."""
        dag = self._dag
        node, start, end = dag.open_range(ref, offset, length, max_bytes)
        return dag.checked(node, dag.read_range(node, start, end), end - start)

    def size(self, ref: str | CID) -> int:
        """Content size of a file (from its root block alone)."""
        return self._dag.load_kind(ref, FILE).size

    def ls(self, ref: str | CID) -> list[Entry]:
        """Entries of a directory, sorted by name; reads the directory and each dag-pb child's root block."""
        return self._dag.ls(ref)

    def get(self, ref: str | CID, dest: str | Path) -> Path:
        """Writes the file or directory tree at `dest` (which must not exist); all or nothing."""
        return self._dag.get(ref, dest)

    def blocks(self, ref: str | CID) -> Iterator[tuple[CID, bytes]]:
        """Every block of a DAG once, verified, parents before children: what `ipfs block put` needs to
        reproduce the same CIDs in a daemon."""
        root = self._dag.ref(ref)
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

    @property
    def _dag(self) -> DagReader:
        """The DAG walker over this store's verified blocks."""
        return DagReader(self._read_block, self.limits)

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
