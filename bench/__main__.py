"""The benchmark suite in one command: one table of ratios, each against a baseline measured in the same run.

    python -m bench [--quick] [--device cpu|cuda] [--no-zk] [--settle] [--json FILE]     (or: make bench)

Rows (goal in brackets):
- recording overhead: recorded / plain training loop (≤ 1.05) — `bench.prover`;
- re-execution speed: replay and whole-engine steps/s over training steps/s (≥ 0.95) — `bench.verifier`;
- verifier cost vs detection: audited replay time / training time and the chance of catching 10% forged
  segments at the default policy (≤ 5% at ≥ 99%), analytic for several claim sizes and measured on one;
- bytes fetched per audit: bytes of one audited segment and of a default-policy audit / transcript bytes;
- gas per operation: gas / a 21,000-gas transfer, and / the goal — `bench.gas`;
- embedded-store CID throughput: import / sha256 of the same bytes — `registry.store.bench`;
- ZK overhead: the project's prove / verify / memory over calling ezkl directly (≤ 1.05) — `bench.zk`;
- challenge → settlement on a Hardhat node with three verifier daemons (≤ 30 s), with `--settle`.

Not in the table: peak RSS of fetching and verifying a 100M-parameter checkpoint (≤ 1.5× the state), run
apart as `python -m bench.checkpoint_rss` (it writes ~800 MB under /tmp, and deletes it).

Machines are shared and noisy: read the ratios, not the absolute times. docs/benchmarks.md keeps the latest
table, the README its headline figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

Row = tuple[str, str, str, str]  # figure, value, ratio, goal


def _machine(device: str) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    cores = len(__import__("os").sched_getaffinity(0))
    where = f"{cores}-core {cpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.startswith("cuda") and torch.cuda.is_available():
        where += f", {torch.cuda.get_device_name(0)}"
    return where


def prover_rows(quick: bool, device: str) -> tuple[list[Row], dict[str, Any]]:
    from bench.prover import measure

    f = measure(quick, device)
    rows: list[Row] = []
    for o in f["overhead"]:
        rows.append((f"recording overhead, {o['family']} k={o['k']} ({o['device']})",
                     f"{o['plain_s'] * 1e3 / o['steps']:.2f} ms/step plain", f"x{o['ratio_loop']:.3f}", "<= 1.05"))
    for r in f["store"]:
        rows.append((f"embedded store CID import, {r['settings']}", f"sha256 {r['sha256_MBps']:.0f} MB/s",
                     f"x{r['import_ratio']:.2f}", ""))
        rows.append((f"embedded store add to disk / verified cat, {r['settings']}", "",
                     f"x{r['add_ratio']:.2f} / x{r['cat_ratio']:.2f}", ""))
    for s in f["sizes"]:
        rows.append((f"transcript size, {s['family']}", f"{s['bytes_per_checkpoint']:,} B/checkpoint", "", ""))
    return rows, f


def verifier_rows(quick: bool, device: str) -> tuple[list[Row], dict[str, Any]]:
    from bench.verifier import measure

    f = measure(quick, device)
    rows: list[Row] = []
    for s in f["speed"]:
        rows.append((f"re-execution vs training, {s['family']} k={s['k']} ({s['device']})",
                     f"{s['train_steps_per_s']:.0f} train steps/s",
                     f"replay x{s['ratio_replay']:.3f}, engine x{s['ratio_engine']:.3f}", ">= 0.95"))
    b = f["bytes"]
    rows.append(("bytes fetched, one audited segment / transcript", f"{b['one_segment_bytes']:,} B",
                 f"{b['one_segment_ratio']:.3f}", ""))
    rows.append((f"bytes fetched, default-policy audit ({b['policy_segments']} segments) / transcript",
                 f"{b['policy_bytes']:,} B", f"{b['policy_ratio']:.3f}", ""))
    for a in f["analytic"]:
        rows.append((f"policy cost and detection of 10% forged, N={a['N']}", f"~{a['audited']} segments audited",
                     f"cost {a['cost']:.3f}, detect {a['detect_policy']:.4f}", "<= 0.05 at >= 0.99"))
    m = f["measured"]
    rows.append((f"measured detection, N={m['N']} with {m['forged']} forged, {m['trials']} seeds", "",
                 f"{m['caught_policy']:.2f} (analytic {m['analytic_policy']:.3f})", ""))
    return rows, f


def gas_rows() -> tuple[list[Row], list[dict[str, Any]]]:
    from bench.gas import goal_of, measure, measure_large

    measured = measure() + measure_large()
    base = next(g for op, _, g in measured if op == "transfer")
    rows: list[Row] = []
    for op, case, gas in measured:
        if op == "transfer":
            continue
        goal = goal_of(op, case)
        ratio = f"x{gas / base:.2f} transfer" + (f", {gas / goal:.2f} of goal" if goal else "")
        rows.append((f"gas {op}" + (f" ({case})" if case else ""), f"{gas:,}", ratio, f"<= {goal:,}" if goal else ""))
    return rows, [{"op": o, "case": c, "gas": g} for o, c, g in measured]


def zk_rows() -> tuple[list[Row], dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-suite-zk-") as tmp:
        out = Path(tmp) / "zk.json"
        done = subprocess.run([sys.executable, "-m", "bench.zk", "--repeat", "1", "--json", str(out)],
                              capture_output=True, text=True)  # ezkl chats on stderr: shown only on failure
        if done.returncode != 0 or not out.exists():
            print(done.stderr[-3000:], file=sys.stderr)
            return [("ZK figures", f"bench.zk failed ({done.returncode})", "", "")], {}
        f = json.loads(out.read_text())
    rows: list[Row] = []
    for name, e in f.items():
        if "ratio" not in e:
            rows.append((f"ZK {name}", "failed", "", ""))
            continue
        best, r = e["best"]["project"], e["ratio"]
        rows.append((f"ZK prove (cold) vs raw ezkl, {name}", f"{best['cold']:.2f} s", f"x{r['cold']:.3f}",
                     "<= 1.05"))
        rows.append((f"ZK verify / peak memory vs raw ezkl, {name}", f"{best['verify'] * 1e3:.0f} ms",
                     f"x{r['verify']:.2f} / x{r['peakMB']:.2f}", "<= 1.05"))
        onchain = e.get("onchain") or {}
        gas = onchain.get("verifyInferenceOnChainGas") or onchain.get("verifyProofGas")
        if gas:
            rows.append((f"ZK on-chain verification gas, {name}", f"{int(gas):,}", f"x{int(gas) / 21000:.1f} transfer",
                         ""))
    return rows, f


def settle_rows() -> tuple[list[Row], dict[str, Any]]:
    from bench.settle_latency import run

    with tempfile.TemporaryDirectory(prefix="bench-suite-settle-") as tmp:
        f = run(3, 40, 1.0, "ipfs", Path(tmp))
    return [("challenge -> settlement, Hardhat + js-ipfs + 3 daemons", f"median {f['median']} s",
             f"{f['median'] / 30:.2f} of goal", "<= 30 s")], f


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, repeats and trials")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] for the torch figures")
    parser.add_argument("--no-zk", action="store_true", help="skip the ezkl figures (the slowest part)")
    parser.add_argument("--settle", action="store_true", help="also time challenge -> settlement (Hardhat)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here too")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    sections: list[tuple[str, Any]] = [("prover", lambda: prover_rows(args.quick, args.device)),
                                       ("verifier", lambda: verifier_rows(args.quick, args.device)),
                                       ("gas", gas_rows)]
    if not args.no_zk:
        sections.append(("zk", zk_rows))
    if args.settle:
        sections.append(("settle", settle_rows))
    rows: list[Row] = []
    figures: dict[str, Any] = {"machine": _machine(args.device)}
    for name, fn in sections:
        print(f"measuring: {name} ...", file=sys.stderr, flush=True)
        section_rows, figures[name] = fn()
        rows += section_rows
    figures["seconds"] = round(time.perf_counter() - started, 1)

    widths = [max(len(r[i]) for r in [*rows, ("figure", "value", "ratio", "goal")]) for i in range(4)]
    print(f"machine: {figures['machine']}; {figures['seconds']} s")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(("figure", "value", "ratio", "goal"), widths, strict=True))
          + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
