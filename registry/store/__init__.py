"""Content storage (IPFS): the embedded block store and the interface a daemon-backed store shares with it.

- `base`: the `ContentStore` protocol, `Entry`, and the `StoreError` hierarchy.
- `cid`: CIDv0/CIDv1 text and binary forms (sha2-256; raw and dag-pb codecs).
- `dagpb`: dag-pb and UnixFS protobuf encoding/decoding, byte-exact with Kubo and js-ipfs.
- `unixfs`: the `ipfs add` importer (256 KiB chunks, balanced DAG of 174 links), files and directories.
- `dag`: `DagReader`, UnixFS DAG walking over verified blocks under `StoreLimits` (shared by the stores).
- `embedded`: `EmbeddedStore`, blocks in a local directory, verified reads of byte ranges.
- `bench`: add throughput against plain sha256 (`python -m registry.store.bench`).
"""

from registry.store.base import (
    ContentStore,
    Corrupt,
    Entry,
    InvalidCid,
    InvalidPath,
    LimitExceeded,
    Malformed,
    NotFound,
    StoreError,
    Unavailable,
    Unsupported,
)
from registry.store.cid import CID
from registry.store.embedded import EmbeddedStore, StoreLimits
from registry.store.unixfs import DEFAULT_SETTINGS, SETTINGS, V0, V1, V1RAW, Imported, ImportSettings

__all__ = [
    "CID",
    "DEFAULT_SETTINGS",
    "SETTINGS",
    "V0",
    "V1",
    "V1RAW",
    "ContentStore",
    "Corrupt",
    "EmbeddedStore",
    "Entry",
    "ImportSettings",
    "Imported",
    "InvalidCid",
    "InvalidPath",
    "LimitExceeded",
    "Malformed",
    "NotFound",
    "StoreError",
    "StoreLimits",
    "Unavailable",
    "Unsupported",
]
