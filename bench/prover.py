"""Prover-side figures, each a ratio against a baseline measured in the same run:
recording overhead (recorded loop / the same loop without the recorder), content-store throughput
(import, add, verified cat / plain sha256 of the same bytes), and transcript size per checkpoint.

    python -m bench.prover [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from registry.pol.bench import measure_overhead
from registry.pol.train import train
from registry.store.bench import run as store_run


def transcript_sizes(family: str, device: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        args = {"channels": [8, 16], "hidden": 32} if family == "cnn" else None
        result = train(Path(tmp), family=family, family_args=args, epochs=1, max_steps=40, device=device)
        tdir = result.transcript_dir
        ckpts = sorted((tdir / "checkpoints").rglob("*.safetensors"))
        batches = sorted((tdir / "batches").rglob("*.npy"))
        manifest = (tdir / "manifest.json").stat().st_size
        per_ckpt = sum(f.stat().st_size for f in ckpts) / len(ckpts)
        return {"family": family, "checkpoints": len(ckpts), "bytes_per_checkpoint": round(per_ckpt),
                "bytes_per_batch_file": round(sum(f.stat().st_size for f in batches) / len(batches)),
                "manifest_bytes": manifest}


def measure(quick: bool, device: str) -> dict[str, Any]:
    steps, repeats = (280, 3) if quick else (560, 5)
    overhead = [measure_overhead(steps=steps, repeats=repeats, k=k, family=fam, device=device)
                for fam, k in (("mlp", 10), ("mlp", 50), ("cnn", 10))]
    store = store_run(mib=16 if quick else 64, repeats=3 if quick else 5)
    sizes = [transcript_sizes(f, device) for f in ("mlp", "cnn")]
    return {"overhead": overhead, "store": store, "sizes": sizes}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = measure(args.quick, args.device)
    if args.json:
        print(json.dumps(figures, indent=1))
        return
    print("recording overhead (recorded / plain training loop, same run; goal <= 1.05)")
    for o in figures["overhead"]:
        print(f"  {o['family']:<4} k={o['k']:<3} {o['device']:<5} threads={o['threads']:<2} "
              f"loop x{o['ratio_loop']:.3f}  incl. finish x{o['ratio_total']:.3f}  "
              f"(plain {o['plain_s'] * 1e3 / o['steps']:.2f} ms/step)")
    print("content store (throughput / sha256 of the same bytes, same run)")
    for r in figures["store"]:
        print(f"  {r['settings']:<6} sha256 {r['sha256_MBps']:.0f} MB/s; import x{r['import_ratio']:.2f}, "
              f"add to disk x{r['add_ratio']:.2f}, verified cat x{r['cat_ratio']:.2f}")
    print("transcript size")
    for s in figures["sizes"]:
        print(f"  {s['family']:<4} {s['bytes_per_checkpoint']:,} B per checkpoint (weights + optimizer state), "
              f"{s['bytes_per_batch_file']:,} B per batch file, manifest {s['manifest_bytes']:,} B "
              f"for {s['checkpoints']} checkpoints")


if __name__ == "__main__":
    main()
