"""Throughput of the embedded store against plain sha256 of the same bytes, in one run.

`python -m registry.store.bench [--mib N] [--repeats R] [--settings v1raw,v0]` prints, per setting, the
median MB/s of `hashlib.sha256` over the bytes, of the importer alone (only-hash), of `add_bytes` into a
store in a temporary directory (blocks written to disk) and of `cat` of the whole file (every block read
and verified), and each one's ratio to sha256: the importer can never beat sha256, so the ratio is the
share of time spent on hashing, the rest being protobuf, CIDs and I/O.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from registry.store.embedded import EmbeddedStore
from registry.store.unixfs import SETTINGS, import_bytes


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(mib: int = 64, repeats: int = 5, settings: tuple[str, ...] = ("v1raw", "v0")) -> list[dict[str, float | str]]:
    """One row per setting: MB/s of sha256, import (only-hash), add_bytes (to disk), cat; ratios to sha256.

    The four measurements alternate within each repeat, so drift in machine load hits them alike; each
    figure is the median over the repeats; every add goes to a fresh store so every block is written."""
    data = os.urandom(mib * 1024 * 1024)
    mb = len(data) / 1e6
    rows: list[dict[str, float | str]] = []
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        for name in settings:
            s = SETTINGS[name]
            times: dict[str, list[float]] = {"sha256": [], "import": [], "add": [], "cat": []}
            for i in range(repeats):
                store = EmbeddedStore(Path(tmp) / f"{name}-{i}", s)
                times["sha256"].append(_timed(lambda: hashlib.sha256(data).digest()))
                times["import"].append(_timed(lambda s=s: import_bytes(data, s)))  # type: ignore[misc]
                times["add"].append(_timed(lambda store=store: store.add_bytes(data)))  # type: ignore[misc]
                cid = store.add_bytes(data)  # already there: only hashed again and checked
                times["cat"].append(_timed(lambda store=store, cid=cid: store.cat(cid)))  # type: ignore[misc]
                shutil.rmtree(store.root)
            med = {k: statistics.median(v) for k, v in times.items()}
            row: dict[str, float | str] = {"settings": name, "MiB": float(mib)}
            for k in ("sha256", "import", "add", "cat"):
                row[f"{k}_MBps"] = mb / med[k]
                row[f"{k}_ratio"] = med["sha256"] / med[k]
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--mib", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--settings", default="v1raw,v0")
    args = p.parse_args(argv)
    for row in run(args.mib, args.repeats, tuple(args.settings.split(","))):
        print(f"{row['settings']:>6} {row['MiB']:.0f} MiB: sha256 {row['sha256_MBps']:.0f} MB/s | "
              f"import {row['import_MBps']:.0f} MB/s ({row['import_ratio']:.2f}x) | "
              f"add_bytes {row['add_MBps']:.0f} MB/s ({row['add_ratio']:.2f}x) | "
              f"cat {row['cat_MBps']:.0f} MB/s ({row['cat_ratio']:.2f}x)")


if __name__ == "__main__":
    main()
