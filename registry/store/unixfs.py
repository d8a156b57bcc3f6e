"""UnixFS importer that yields the CIDs of `ipfs add` (Kubo and js-ipfs), streamed, without a daemon.

What `ipfs add` does, and so what this does:
- fixed-size chunks of 256 KiB (the last one shorter; an empty file is one empty chunk);
- leaves: raw blocks (CIDv1, codec raw) with raw leaves, otherwise dag-pb nodes holding UnixFS
  {Type=File, Data=chunk, filesize=len} (no Data field for the empty chunk, as Go's nil slice);
- balanced layout: leaves are grouped 174 per parent, parents 174 per grandparent, ... until one node is
  left; a file of one chunk is that chunk's leaf itself (so a small file with raw leaves is a bare raw
  block, "bafkrei..."). Parents are dag-pb UnixFS {Type=File, filesize, blocksizes=[content bytes of each
  child]} with unnamed links in chunk order, each with Tsize = the child's cumulative DAG size
  (its block's length plus its links' Tsizes);
- directories are dag-pb UnixFS {Type=Directory} with links sorted by the UTF-8 bytes of their names.
  Kubo and js-ipfs switch to HAMT-sharded directories past a threshold (Kubo: estimated links ≥ 256 KiB;
  js-ipfs 0.66: ≥ 1000 entries) and disagree with each other there; the importer builds the HAMT
  (`registry.store.hamt`) under the rule `ImportSettings.shard_rule` names: "js" (the default: the daemon
  this project runs), "kubo", or "portable" (refuse a directory the two rules disagree on).

Settings are named as in the shared vectors: "v0" (`ipfs add`), "v1raw" (`--cid-version=1 --raw-leaves`,
the project's default) and "v1" (`--cid-version=1 --raw-leaves=false`).

Blocks go to a `sink(cid, block)` callback as they are made; memory stays at one chunk plus one pending
link list per tree level. The block passed to the sink may be a view of a reused buffer: the sink must
consume it before returning. With `sink=None` only the CID is computed (`ipfs add --only-hash`).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from registry.store.base import LimitExceeded, Malformed, Unsupported, valid_name
from registry.store.cid import CID, DAG_PB, RAW
from registry.store.dagpb import DIRECTORY_DATA, T_FILE, Link, encode_node, encode_unixfs, file_leaf
from registry.store.hamt import build_shard

DEFAULT_CHUNK_SIZE = 256 * 1024
DEFAULT_MAX_LINKS = 174
KUBO_SHARD_THRESHOLD_BYTES = 256 * 1024
JS_SHARD_THRESHOLD_ENTRIES = 1000
MAX_IMPORT_DEPTH = 64

BlockSink = Callable[[CID, bytes | memoryview], None]
SHARD_RULES = ("js", "kubo", "portable")


@dataclass(frozen=True, slots=True)
class ImportSettings:
    """How content becomes blocks; CIDs are equal to a daemon's only under equal settings."""

    name: str
    cid_version: int = 1
    raw_leaves: bool = True
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_links: int = DEFAULT_MAX_LINKS
    #: when a directory becomes a HAMT: "js" (≥ 1,000 entries), "kubo" (≥ 256 KiB of estimated link
    #: bytes: name length plus binary CID length per entry) or "portable" (refuse where they disagree)
    shard_rule: str = "js"

    def __post_init__(self) -> None:
        if self.shard_rule not in SHARD_RULES:
            raise ValueError(f"shard_rule must be one of {', '.join(SHARD_RULES)}")
        if self.cid_version not in (0, 1):
            raise ValueError("cid_version must be 0 or 1")
        if self.cid_version == 0 and self.raw_leaves:
            raise ValueError("raw leaves need CIDv1 (as `ipfs add --raw-leaves` implies)")
        if not 1 <= self.chunk_size <= 1024 * 1024:
            raise ValueError("chunk_size must be within 1 B .. 1 MiB (larger blocks do not travel)")
        if self.max_links < 2:
            raise ValueError("max_links must be at least 2")


V0 = ImportSettings("v0", cid_version=0, raw_leaves=False)
V1RAW = ImportSettings("v1raw", cid_version=1, raw_leaves=True)
V1 = ImportSettings("v1", cid_version=1, raw_leaves=False)
SETTINGS: dict[str, ImportSettings] = {s.name: s for s in (V0, V1RAW, V1)}
DEFAULT_SETTINGS = V1RAW


@dataclass(frozen=True, slots=True)
class Imported:
    """An imported node: its CID, `tsize` (cumulative DAG size, the Tsize of a link to it) and `size`
    (content bytes of a file; 0 for a directory)."""

    cid: CID
    tsize: int
    size: int


class FileImporter:
    """Builds one file's DAG from pieces of any size, written in order; `finish()` returns the root."""

    def __init__(self, settings: ImportSettings = DEFAULT_SETTINGS, sink: BlockSink | None = None) -> None:
        self.settings = settings
        self._sink = sink
        self._buf = bytearray()
        self._levels: list[list[Imported]] = [[]]
        self._chunks = 0
        self._leaf_version = 1 if settings.raw_leaves else settings.cid_version
        self._done = False

    def write(self, piece: bytes | bytearray | memoryview) -> None:
        """Adds content; full chunks are cut from it directly, the rest waits for the next piece."""
        if self._done:
            raise RuntimeError("write after finish")
        size = self.settings.chunk_size
        view = memoryview(piece).cast("B")
        pos = 0
        if self._buf:
            take = min(size - len(self._buf), len(view))
            self._buf += view[:take]
            pos = take
            if len(self._buf) < size:
                return
            self._leaf(bytes(self._buf))
            self._buf.clear()
        while len(view) - pos >= size:
            self._leaf(view[pos:pos + size])
            pos += size
        if pos < len(view):
            self._buf += view[pos:]

    def write_chunk(self, chunk: bytes | memoryview) -> None:
        """Adds exactly one full chunk (or the last, shorter one) without copying: the fast path of files."""
        if self._buf:
            self.write(chunk)
        elif len(chunk) == self.settings.chunk_size:
            self._leaf(chunk)
        else:
            self.write(chunk)

    def finish(self) -> Imported:
        if self._done:
            raise RuntimeError("finish called twice")
        self._done = True
        if self._buf or self._chunks == 0:
            self._leaf(bytes(self._buf))
            self._buf.clear()
        levels = self._levels
        k = 0
        while True:
            items = levels[k]
            top = all(not levels[j] for j in range(k + 1, len(levels)))
            if top and len(items) == 1:
                return items[0]
            if items:
                levels[k] = []
                self._push(k + 1, self._parent(items))
            k += 1

    # ---- internals -----------------------------------------------------------------------------------

    def _emit(self, cid: CID, block: bytes | memoryview) -> None:
        if self._sink is not None:
            self._sink(cid, block)

    def _leaf(self, chunk: bytes | memoryview) -> None:
        self._chunks += 1
        n = len(chunk)
        if self.settings.raw_leaves:
            cid = CID.from_digest(hashlib.sha256(chunk).digest(), RAW, 1)
            self._emit(cid, chunk)
            self._push(0, Imported(cid, n, n))
        else:
            block = file_leaf(chunk)
            cid = CID.from_digest(hashlib.sha256(block).digest(), DAG_PB, self._leaf_version)
            self._emit(cid, block)
            self._push(0, Imported(cid, len(block), n))

    def _push(self, level: int, item: Imported) -> None:
        if level == len(self._levels):
            self._levels.append([])
        items = self._levels[level]
        items.append(item)
        if len(items) == self.settings.max_links:
            self._levels[level] = []
            self._push(level + 1, self._parent(items))

    def _parent(self, children: list[Imported]) -> Imported:
        sizes = [c.size for c in children]
        total = sum(sizes)
        data = encode_unixfs(T_FILE, None, total, sizes)
        block = encode_node(data, [Link(c.cid, "", c.tsize) for c in children])
        cid = CID.from_digest(hashlib.sha256(block).digest(), DAG_PB, self.settings.cid_version)
        self._emit(cid, block)
        return Imported(cid, len(block) + sum(c.tsize for c in children), total)


def import_bytes(data: bytes | bytearray | memoryview, settings: ImportSettings = DEFAULT_SETTINGS,
                 sink: BlockSink | None = None) -> Imported:
    imp = FileImporter(settings, sink)
    view = memoryview(data).cast("B")
    size = settings.chunk_size
    for pos in range(0, len(view), size):
        imp.write_chunk(view[pos:pos + size])
    return imp.finish()


def import_stream(pieces: Iterable[bytes | bytearray | memoryview], settings: ImportSettings = DEFAULT_SETTINGS,
                  sink: BlockSink | None = None) -> Imported:
    """Imports a file given as pieces of any sizes (a generator, a socket reader, ...)."""
    imp = FileImporter(settings, sink)
    for piece in pieces:
        imp.write(piece)
    return imp.finish()


def import_file(path: str | Path, settings: ImportSettings = DEFAULT_SETTINGS,
                sink: BlockSink | None = None, *, follow_symlinks: bool = True) -> Imported:
    """Imports a regular file, reading one chunk at a time into a reused buffer.

    With `follow_symlinks=False` a symlink is refused at open (no check-then-open race); a fifo, device or
    socket is always refused without blocking on it.
    """
    imp = FileImporter(settings, sink)
    size = settings.chunk_size
    buf = bytearray(size)
    view = memoryview(buf)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if not follow_symlinks and os.path.islink(path):
            raise Unsupported(f"{path} is a symlink; only regular files and directories can be added") from None
        raise exc
    with open(fd, "rb", buffering=0) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Unsupported(f"{path} is not a regular file")
        while True:
            n = 0
            while n < size:
                got = f.readinto(view[n:])
                if not got:
                    break
                n += got
            if n:
                imp.write_chunk(view[:n])
            if n < size:
                break
    return imp.finish()


def directory_node(entries: Iterable[tuple[str, Imported]], settings: ImportSettings = DEFAULT_SETTINGS,
                   sink: BlockSink | None = None) -> Imported:
    """A flat UnixFS directory over already imported children, links sorted by name bytes as Kubo does."""
    links: list[tuple[bytes, Link]] = []
    for name, child in entries:
        if not valid_name(name):
            raise Malformed(f"invalid entry name {name!r}")
        try:
            key = name.encode("utf-8")
        except UnicodeEncodeError:
            raise Unsupported(f"entry name {name!r} is not valid UTF-8") from None
        links.append((key, Link(child.cid, name, child.tsize)))
    links.sort(key=lambda kv: kv[0])
    for (a, _), (b, _) in itertools.pairwise(links):
        if a == b:
            raise Malformed(f"duplicate entry name {a.decode()!r}")
    estimate = sum(len(key) + len(link.cid.to_bytes()) for key, link in links)
    if shard_decision(len(links), estimate, settings.shard_rule):
        cid, tsize = build_shard(links, settings.cid_version, sink)
        return Imported(cid, tsize, 0)
    block = encode_node(DIRECTORY_DATA, [link for _, link in links])
    cid = CID.from_digest(hashlib.sha256(block).digest(), DAG_PB, settings.cid_version)
    if sink is not None:
        sink(cid, block)
    return Imported(cid, len(block) + sum(link.tsize for _, link in links), 0)


def shard_decision(entries: int, estimate: int, rule: str) -> bool:
    """Whether a directory of `entries` links (`estimate` = Σ name bytes + binary CID bytes) is a HAMT."""
    js = entries >= JS_SHARD_THRESHOLD_ENTRIES
    kubo = estimate >= KUBO_SHARD_THRESHOLD_BYTES
    if rule == "portable" and js != kubo:
        raise Unsupported(f"directory of {entries} entries (~{estimate} B of links) would be HAMT-sharded by "
                          f"{'js-ipfs' if js else 'Kubo'} only, so its CID would differ between the two: "
                          "split it into subdirectories")
    return kubo if rule == "kubo" else js


def import_tree(path: str | Path, settings: ImportSettings = DEFAULT_SETTINGS, sink: BlockSink | None = None,
                *, max_depth: int = MAX_IMPORT_DEPTH) -> Imported:
    """Imports a directory recursively (what `ipfs add -r --hidden` makes of it; dot-files are included).

    Only regular files and directories are accepted: a symlink or a device/fifo/socket anywhere in the
    tree is an `Unsupported` error, so publishing never follows links out of the tree or blocks on a fifo.
    """
    root = Path(path)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode):
        raise Unsupported(f"{root} is not a directory (symlinks are refused)")
    return _import_dir(root, settings, sink, 0, max_depth)


def _import_dir(path: Path, settings: ImportSettings, sink: BlockSink | None, depth: int,
                max_depth: int) -> Imported:
    if depth > max_depth:
        raise LimitExceeded(f"directory {path} is nested deeper than {max_depth} levels")
    children: list[tuple[str, Imported]] = []
    with os.scandir(path) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        child_path = Path(entry.path)
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISLNK(mode):
            raise Unsupported(f"{child_path} is a symlink; only regular files and directories can be added")
        if stat.S_ISDIR(mode):
            children.append((entry.name, _import_dir(child_path, settings, sink, depth + 1, max_depth)))
        elif stat.S_ISREG(mode):
            children.append((entry.name, import_file(child_path, settings, sink, follow_symlinks=False)))
        else:
            raise Unsupported(f"{child_path} is not a regular file or directory")
    return directory_node(children, settings, sink)
