"""Scale curves, measured in one run and printed as ratios against a baseline of the same run.

`python -m bench.scale [--segments 10,100,1000] [--entries 999,5000,20000] [--params 100000,1000000,10000000]
[--verify-n 10,100,1000,10000] [--rss-params 1000000,10000000,100000000] [--plots DIR] [--only NAME,...]`

- recording overhead against model size: the digits MLP widened to P parameters (one hidden layer), SGD with
  momentum, k = 10, recorded against the same loop unrecorded (alternating runs, medians); with the
  checkpoint's bytes against the raw state (weights + momentum, float32);
- verification cost against N: the default policy's expected audited segments for a claim of N segments
  (`bench.verifier.analytic`, the contract's sampling rule plus the policy's draws and top-Q), divided by the
  engine's speed against training measured in this run on the digits MLP;
- peak memory against checkpoint size: `bench.checkpoint_rss` (fetch and verify one checkpoint in a fresh
  interpreter) for states of P parameters plus momentum;
- publish time against transcript size: a 2x2 linear model recorded with k = 1 for N segments, published to
  an embedded store; the baseline is sha256 over the same bytes (the floor any content addressing pays);
- HAMT import time against directory size: `directory_node` over N imported 32-byte files, per entry, against
  the 999-entry flat directory.
Plots (PNG, matplotlib) go to `--plots` when given: one per curve.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

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


def _width(params: int) -> int:
    """The hidden width that gives the 64-feature, 10-class digits MLP about `params` parameters."""
    return max(1, round((params - 10) / 75))  # 64h + h + 10h + 10


def recording_curve(params: list[int], steps: int, repeats: int, k: int = 10) -> list[dict[str, Any]]:
    from registry.pol.bench import measure_overhead

    rows = []
    for p in params:
        fa = {"in_features": 64, "hidden": [_width(p)], "out_features": 10, "dropout": 0.0}
        r = measure_overhead(steps=steps, repeats=repeats, k=k, family="mlp", family_args=fa)
        n = 75 * _width(p) + 10
        r.update(params=n, state_bytes=2 * 4 * n)  # weights + SGD momentum, float32
        rows.append(r)
    return rows


def verification_curve(ns: list[int], engine_ratio: float) -> list[dict[str, Any]]:
    from bench.verifier import analytic

    # one epoch per 56 segments, as the digits runs (1,797 examples, batch 32, k = 1)
    return [analytic(n, max(1, n // 56), engine_ratio) for n in ns]


def rss_curve(params: list[int]) -> list[dict[str, Any]]:
    from bench.checkpoint_rss import measure

    return [measure(p) for p in params]


def _plot(path: Path, xlabel: str, ylabel: str, series: list[tuple[str, list[float], list[float], str]],
          *, logx: bool = True, logy: bool = False, hline: tuple[float, str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for label, xs, ys, style in series:
        ax.plot(xs, ys, style, label=label)
    if hline is not None:
        ax.axhline(hline[0], color="grey", linestyle=":", label=hline[1])
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", default="10,100,1000")
    ap.add_argument("--entries", default="999,5000,20000")
    ap.add_argument("--params", default="100000,1000000,10000000")
    ap.add_argument("--steps", type=int, default=200, help="training steps per recording-overhead run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--verify-n", default="10,100,1000,10000")
    ap.add_argument("--rss-params", default="1000000,10000000,100000000")
    ap.add_argument("--plots", type=Path, default=None)
    ap.add_argument("--only", default="publish,hamt,recording,verification,rss",
                    help="comma-separated curves to measure")
    a = ap.parse_args(argv)
    only = set(a.only.split(","))
    torch.set_num_threads(1)  # as bench.verifier: one thread, so that the 2-core machine's noise is halved
    if a.plots is not None:
        a.plots.mkdir(parents=True, exist_ok=True)
    if "recording" in only:
        rec = recording_curve([int(s) for s in a.params.split(",")], a.steps, a.repeats)
        print("recording overhead vs model size (digits MLP, SGD momentum, k = 10, 1 thread; baseline: the same "
              "loop unrecorded)")
        print(f"{'params':>11} {'ms/step':>8} {'loop':>7} {'w/ finish':>9} {'ckpt bytes':>12} {'vs state':>9}")
        for r in rec:
            over = r["checkpoint_bytes"] / r["state_bytes"]
            print(f"{r['params']:>11,} {1e3 * r['plain_s'] / r['steps']:>8.2f} {r['ratio_loop']:>6.3f}x "
                  f"{r['ratio_total']:>8.3f}x {r['checkpoint_bytes']:>12,} {over:>8.4f}x")
        if a.plots is not None:
            xs = [r["params"] for r in rec]
            _plot(a.plots / "recording_vs_params.png", "model parameters", "recorded time / plain time",
                  [("training loop", xs, [r["ratio_loop"] for r in rec], "o-"),
                   ("incl. finish()", xs, [r["ratio_total"] for r in rec], "s--")], hline=(1.05, "goal 1.05"))
    if "verification" in only:
        from bench.verifier import speed

        sp = speed("mlp", 280, 10, 2, "cpu")
        ratio = sp["ratio_engine"]
        ver = verification_curve([int(s) for s in a.verify_n.split(",")], ratio)
        print(f"verification cost vs N (default policy; engine at x{ratio:.2f} of training speed, measured now on "
              "the digits MLP; cost = audited share / engine speed)")
        print(f"{'N':>7} {'audited':>8} {'share':>7} {'cost':>7} {'detect 10% forged':>18}")
        for v in ver:
            print(f"{v['N']:>7,} {v['audited']:>8.1f} {v['audited'] / v['N']:>7.3f} {v['cost']:>7.3f} "
                  f"{v['detect_policy']:>18.4f}")
        if a.plots is not None:
            xs = [v["N"] for v in ver]
            _plot(a.plots / "verification_vs_segments.png", "segments in the claim (N)",
                  "verification time / training time",
                  [("default policy", xs, [v["cost"] for v in ver], "o-")], logy=True,
                  hline=(0.05, "goal 0.05 at N = 10,000"))
    if "rss" in only:
        rss = rss_curve([int(s) for s in a.rss_params.split(",")])
        print("peak memory vs checkpoint size (fresh interpreter per step; peak RSS growth / state bytes)")
        print(f"{'state MiB':>10} {'fetch':>7} {'publish-check':>14} {'add':>7}")
        for f in rss:
            by = {s['mode']: s['ratio'] for s in f['steps']}
            print(f"{f['state_bytes'] / 2**20:>10,.1f} {by['fetch']:>6.3f}x {by['publish-check']:>13.3f}x "
                  f"{by['add']:>6.3f}x")
        if a.plots is not None:
            xs = [f["state_bytes"] / 2**20 for f in rss]
            _plot(a.plots / "memory_vs_checkpoint.png", "state size (MiB)", "peak RSS growth / state size",
                  [(mode, xs, [next(s['ratio'] for s in f['steps'] if s['mode'] == mode) for f in rss], style)
                   for mode, style in (("fetch", "o-"), ("publish-check", "s--"), ("add", "^:"))],
                  hline=(1.5, "goal 1.5"))
    if "publish" in only:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            pub = publish_curve([int(s) for s in a.segments.split(",")], Path(tmp))
        print("publish time vs transcript size (embedded store; baseline: sha256 of the same bytes)")
        print(f"{'N':>7} {'bytes':>11} {'record s':>9} {'publish s':>10} {'ms/segment':>11} {'vs sha256':>10}")
        for n, size, rec_s, publish, sha in pub:
            print(f"{n:>7} {size:>11,} {rec_s:>9.2f} {publish:>10.2f} {1e3 * publish / n:>11.2f} "
                  f"{publish / sha:>9.1f}x")
        if a.plots is not None:
            xs = [r[1] for r in pub]
            _plot(a.plots / "publish_vs_size.png", "transcript bytes", "seconds",
                  [("publish (embedded)", xs, [r[3] for r in pub], "o-"),
                   ("sha256 baseline", xs, [r[4] for r in pub], "s--")], logy=True)
    if "hamt" in only:
        hamt = hamt_curve([int(s) for s in a.entries.split(",")])
        base_n, base_t = hamt[0]
        print("directory build time vs entries (per entry, against the first row)")
        for n, t in hamt:
            print(f"{n:>7} {t:>8.3f} s  {1e6 * t / n:>7.1f} µs/entry  {(t / n) / (base_t / base_n):>5.2f}x")
    if a.plots is not None:
        print(f"plots in {a.plots}")

if __name__ == "__main__":
    main()
