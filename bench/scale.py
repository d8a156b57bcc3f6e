"""Scale curves, measured in one run and printed as ratios against a baseline of the same run.

`python -m bench.scale [--segments 10,100,1000] [--entries 999,5000,20000] [--plots DIR]`

- publish time against transcript size: a 2x2 linear model recorded with k = 1 for N segments, published to
  an embedded store; the baseline is sha256 over the same bytes (the floor any content addressing pays);
- HAMT import time against directory size: `directory_node` over N imported 32-byte files, per entry, against
  the 999-entry flat directory.
Plots (PNG, matplotlib) go to `--plots` when given.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from registry.pol.publish import publish_transcript
from registry.pol.train import train
from registry.spec.datasets import build_dataset, synthetic_arrays
from registry.store.embedded import EmbeddedStore
from registry.store.unixfs import directory_node, import_bytes

LINEAR = {"in_features": 2, "hidden": [], "out_features": 2, "dropout": 0.0}


def publish_curve(segments: list[int], work: Path) -> list[tuple[int, int, float, float, float]]:
    """(N, transcript bytes, record s, publish s, sha256 s) per N."""
    x, y = synthetic_arrays(n=64, features=2, classes=2, seed=1)
    rows = []
    for n in segments:
        base = work / f"n{n}"
        ds = build_dataset(base / "dataset", "tiny-2d", x, y, num_classes=2)
        t = time.perf_counter()
        run = train(base / "run", family="mlp", family_args=LINEAR, dataset=ds, epochs=n // 8 + 1, batch_size=8,
                    steps_per_segment=1, max_steps=n, seed=1)
        record = time.perf_counter() - t
        files = sorted(f for f in run.transcript_dir.rglob("*") if f.is_file())
        t = time.perf_counter()
        size = 0
        for f in files:
            data = f.read_bytes()
            size += len(data)
            hashlib.sha256(data).digest()
        sha = time.perf_counter() - t
        t = time.perf_counter()
        publish_transcript(run.transcript_dir, EmbeddedStore(base / "store"), dataset_dir=base / "dataset")
        rows.append((n, size, record, time.perf_counter() - t, sha))
    return rows


def hamt_curve(entries: list[int]) -> list[tuple[int, float]]:
    """(N, seconds) to build a directory of N 32-byte files (flat below 1,000 entries, a HAMT from 1,000)."""
    rows = []
    for n in entries:
        kids = [(f"{i:06d}.bin", import_bytes(hashlib.sha256(f"hamt-{i}".encode()).digest())) for i in range(n)]
        t = time.perf_counter()
        directory_node(kids)
        rows.append((n, time.perf_counter() - t))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", default="10,100,1000")
    ap.add_argument("--entries", default="999,5000,20000")
    ap.add_argument("--plots", type=Path, default=None)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        pub = publish_curve([int(s) for s in a.segments.split(",")], Path(tmp))
    print("publish time vs transcript size (embedded store; baseline: sha256 of the same bytes)")
    print(f"{'N':>7} {'bytes':>11} {'record s':>9} {'publish s':>10} {'ms/segment':>11} {'vs sha256':>10}")
    for n, size, rec, publish, sha in pub:
        print(f"{n:>7} {size:>11,} {rec:>9.2f} {publish:>10.2f} {1e3 * publish / n:>11.2f} {publish / sha:>9.1f}x")
    hamt = hamt_curve([int(s) for s in a.entries.split(",")])
    base_n, base_t = hamt[0]
    print("directory build time vs entries (per entry, against the first row)")
    for n, t in hamt:
        print(f"{n:>7} {t:>8.3f} s  {1e6 * t / n:>7.1f} µs/entry  {(t / n) / (base_t / base_n):>5.2f}x")
    if a.plots is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        a.plots.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.loglog([r[1] for r in pub], [r[3] for r in pub], "o-", label="publish (embedded)")
        ax.loglog([r[1] for r in pub], [r[4] for r in pub], "s--", label="sha256 baseline")
        ax.set_xlabel("transcript bytes")
        ax.set_ylabel("seconds")
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.plots / "publish_vs_size.png", dpi=120)
        print(f"plots in {a.plots}")


if __name__ == "__main__":
    main()
