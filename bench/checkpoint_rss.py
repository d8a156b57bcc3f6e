"""Peak memory of fetching and verifying one big checkpoint (issue 13: "a 100M-parameter model's checkpoint
stays at peak RSS <= 1.5x the state size").

    python -m bench.checkpoint_rss [--params 100000000] [--tensors 4] [--no-momentum] [--dir /tmp] [--json FILE]

The parent writes a checkpoint of a float32 state (`--params` parameters split over `--tensors` tensors, plus
one SGD momentum buffer per parameter unless `--no-momentum`) with the project's writer
(`registry.pol.checkpoint.checkpoint_chunks`), adds its directory to an embedded store, and then runs each
measured step in a FRESH interpreter, so that one step's allocations cannot hide in another's high-water mark:

- ``fetch``: what the verifier does (`verifier.engine.StoreSource.read` + `decode_checkpoint` with the
  manifest hash): the store walk, the hash check, the safetensors parse into tensors;
- ``publish-check``: what `registry.pol.publish.verify_transcript` does for checkpoints 0 and last (read the local
  file, check its hash, decode it);
- ``add``: `EmbeddedStore.add_file` of the checkpoint (streamed UnixFS import, CID computation).

Each child reports VmHWM (peak RSS) minus its VmRSS after imports; the figure is that growth over the state
size (model + optimizer tensor bytes). Everything big lives under a temporary directory in `--dir` and is
deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REL = "checkpoints/0000/000000.safetensors"


def _status_kib(field: str) -> int:
    """A `/proc/self/status` figure in KiB (VmRSS now, VmHWM the peak so far)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _child(mode: str, store_dir: str, cid: str, path: str, expected: str) -> None:
    """One measured step in this fresh interpreter; prints one JSON line."""
    import torch  # noqa: F401  (imported before the baseline, as every verifier has it loaded)

    from registry.core.hashing import as_hash
    from registry.pol.checkpoint import read_checkpoint
    from registry.store.embedded import EmbeddedStore
    from verifier.engine import StoreSource, decode_checkpoint

    store = EmbeddedStore(store_dir)
    base = _status_kib("VmRSS")
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    if mode == "fetch":
        source = StoreSource(store, cid)
        data = source.read_buffer(REL, 1 << 40)  # as `Engine._checkpoint` reads it
        ckpt = decode_checkpoint(data, as_hash(expected))
        del data
        out["tensors"] = len(ckpt.model) + sum(len(e) for e in ckpt.optimizer["state"].values())
    elif mode == "publish-check":
        ckpt = read_checkpoint(path, as_hash(expected))
        out["tensors"] = len(ckpt.model)
    elif mode == "add":
        out["cid"] = store.add_file(path)
    else:
        raise SystemExit(f"unknown mode {mode}")
    out.update(mode=mode, seconds=time.perf_counter() - t0, base_kib=base, peak_kib=_status_kib("VmHWM"))
    print(json.dumps(out))


def _write_checkpoint(path: Path, params: int, tensors: int, momentum: bool) -> tuple[int, str]:
    """Writes the checkpoint piece by piece (no joined copy); returns (state bytes, sha256 hex)."""
    import hashlib

    import torch

    from registry.pol.checkpoint import checkpoint_chunks

    g = torch.Generator().manual_seed(0)
    per = params // tensors
    model = {f"layer{i}.weight": torch.randn(per + (params % tensors if i == 0 else 0), generator=g)
             for i in range(tensors)}
    state = {i: {"momentum_buffer": torch.randn(t.numel(), generator=g)} for i, t in enumerate(model.values())} \
        if momentum else {}
    optim = {"state": state, "param_groups": [{"lr": 0.01, "momentum": 0.9 if momentum else 0.0, "dampening": 0,
                                               "weight_decay": 0, "nesterov": False, "maximize": False,
                                               "foreach": None, "differentiable": False, "fused": None,
                                               "params": list(range(tensors))}]}
    state_bytes = sum(t.numel() * t.element_size() for t in model.values())
    state_bytes += sum(t.numel() * t.element_size() for e in state.values() for t in e.values())
    h = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for piece in checkpoint_chunks(0, 0, model, optim):
            h.update(piece)
            f.write(piece)
    return state_bytes, h.hexdigest()


def _run_child(mode: str, *args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.checkpoint_rss", "--child", mode, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        raise RuntimeError(f"child {mode} failed: {done.stderr.strip()[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def measure(params: int = 100_000_000, tensors: int = 4, momentum: bool = True,
            where: str | None = None) -> dict[str, Any]:
    """Every figure of the module docstring, as a dict."""
    from registry.store.embedded import EmbeddedStore

    tmp = Path(tempfile.mkdtemp(prefix="proofreg-rss-", dir=where))
    try:
        tdir = tmp / "transcript"
        ckpt = tdir / REL
        state_bytes, digest = _write_checkpoint(ckpt, params, tensors, momentum)
        file_bytes = ckpt.stat().st_size
        store_dir = tmp / "store"
        t0 = time.perf_counter()
        cid = EmbeddedStore(store_dir).add_directory(tdir)
        add_dir_s = time.perf_counter() - t0
        figures: dict[str, Any] = {"params": params, "tensors": tensors, "momentum": momentum,
                                   "state_bytes": state_bytes, "file_bytes": file_bytes,
                                   "file_over_state": file_bytes / state_bytes, "add_directory_s": add_dir_s,
                                   "cid": cid, "steps": []}
        for mode in ("fetch", "publish-check", "add"):
            store_arg = tmp / "store-add" if mode == "add" else store_dir  # add: a fresh store, blocks written
            r = _run_child(mode, str(store_arg), cid, str(ckpt), "0x" + digest)
            growth = (r["peak_kib"] - r["base_kib"]) * 1024
            r.update(growth_bytes=growth, ratio=growth / state_bytes)
            figures["steps"].append(r)
        return figures
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.checkpoint_rss", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--params", type=int, default=100_000_000)
    parser.add_argument("--tensors", type=int, default=4)
    parser.add_argument("--no-momentum", action="store_true", help="no optimizer state (model tensors only)")
    parser.add_argument("--dir", default=os.environ.get("TMPDIR", "/tmp"), help="where the big files go")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=5, metavar=("MODE", "STORE", "CID", "PATH", "HASH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    f = measure(args.params, args.tensors, not args.no_momentum, args.dir)
    mib = 1 << 20
    print(f"state {f['state_bytes'] / mib:,.1f} MiB ({f['params']:,} params"
          f"{' + momentum' if f['momentum'] else ''}), checkpoint file {f['file_bytes']:,} B "
          f"(x{f['file_over_state']:.6f} of the state); add_directory {f['add_directory_s']:.1f} s")
    for s in f["steps"]:
        print(f"{s['mode']:>14}: peak RSS growth {s['growth_bytes'] / mib:8.1f} MiB = x{s['ratio']:.3f} of the state "
              f"({s['seconds']:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps(f, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
