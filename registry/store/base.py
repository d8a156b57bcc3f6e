"""What every content store of the project offers, embedded or daemon-backed, and the errors it raises.

Callers (the CLI, the verifier daemon) depend only on `ContentStore` and `StoreError`: the verifier maps any
`StoreError` on a claim's evidence to the `Unavailable` verdict (SPEC section 5), so every failure mode of
fetching — missing, corrupt, malformed or hostile content, a daemon that does not answer — must surface as
one of these, with a one-line message, and never as wrong bytes.

CIDs are passed and returned as text: CIDv1 base32 ("bafy...", "bafk...") for what the project writes,
CIDv0 ("Qm...") accepted on input. A *ref* is a CID optionally followed by a path inside a directory:
"bafy.../checkpoints/000001.safetensors" (a leading "/ipfs/" is accepted too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable


class StoreError(Exception):
    """Base of every content-store failure; the message is one line, fit for logs and reports."""


class InvalidCid(StoreError, ValueError):
    """The text is not a CID this project can verify (unknown base, version, codec or hash function)."""


class NotFound(StoreError):
    """The block, or the path inside a directory, is not there."""


class Corrupt(StoreError):
    """A block's bytes do not hash to its CID."""


class Malformed(StoreError):
    """The blocks hash correctly but do not form a valid UnixFS DAG (bad protobuf, inconsistent sizes,
    hostile link names, a file where a directory is expected, ...)."""


class LimitExceeded(Malformed):
    """The DAG is deeper, wider or larger than the store's limits allow (a guard against hostile DAGs)."""


class Unsupported(StoreError):
    """Valid IPFS content that this store does not handle (HAMT-sharded directories, symlinks, ...)."""


class Unavailable(StoreError):
    """The backing service (an IPFS daemon) cannot be reached or timed out."""


class InvalidPath(StoreError, ValueError):
    """A caller's path inside a directory is not a plain relative path ("..", ".", NUL, backslash)."""


EntryKind = Literal["file", "directory"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One link of a directory listing. `size` is the byte size of a file, or None for a directory;
    `tsize` is the link's cumulative DAG size, as IPFS reports it."""

    name: str
    cid: str
    kind: EntryKind
    size: int | None
    tsize: int


@runtime_checkable
class ContentStore(Protocol):
    """Operations both the embedded store and a Kubo-compatible daemon store implement, with equal CIDs
    for equal content under equal import settings (CIDv1, raw leaves, 256 KiB chunks by default)."""

    def add_bytes(self, data: bytes) -> str:
        """Imports bytes as a UnixFS file; returns its CID."""
        ...

    def add_file(self, path: str | Path) -> str:
        """Imports a regular file, streamed; returns its CID."""
        ...

    def add_directory(self, path: str | Path) -> str:
        """Imports a directory tree (regular files and directories only); returns the root CID."""
        ...

    def cat(self, ref: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes [offset, offset+length) of a file (to its end when length is None)."""
        ...

    def resolve(self, cid: str, path: str = "") -> str:
        """CID of the entry at `path` ("a/b/c") inside the directory `cid`."""
        ...

    def ls(self, ref: str) -> list[Entry]:
        """The entries of a directory, sorted by name."""
        ...

    def get(self, ref: str, dest: str | Path) -> Path:
        """Materializes a file or directory at `dest` (which must not exist); returns `dest`."""
        ...

    def has(self, cid: str) -> bool:
        """Whether the root block is available without fetching from elsewhere."""
        ...

    def pin(self, cid: str) -> None:
        """Keeps the whole DAG from garbage collection; fails if any block is missing."""
        ...


def split_ref(ref: str) -> tuple[str, list[str]]:
    """Splits a ref ("/ipfs/CID/a/b", "CID/a/b", "CID") into the CID text and validated path components."""
    text = ref.strip()
    if text.startswith("/ipfs/"):
        text = text[len("/ipfs/"):]
    elif text.startswith("ipfs://"):
        text = text[len("ipfs://"):]
    cid, _, rest = text.partition("/")
    return cid, split_path(rest)


def split_path(path: str) -> list[str]:
    """Path components of a path inside a directory; '.', '..', NUL and backslashes are refused so a path
    can never climb out of the directory it names."""
    parts = [p for p in path.split("/") if p]
    for p in parts:
        if not valid_name(p):
            raise InvalidPath(f"invalid path component {p!r} in {path!r}")
    return parts


def valid_name(name: str) -> bool:
    """Whether `name` may be a directory entry: the names of a hostile DAG become file names on disk."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")
