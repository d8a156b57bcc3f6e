"""ZK inference benchmark: the project's pipeline against calling ezkl directly, in the same run.

    python -m bench.zk [--repeat 2] [--json out.json]

For a small MLP and a small CNN (the test models), each measured in its own fresh process so peak memory
(ru_maxrss) is per measurement:
- prove, cold: project `prove_inference` (export check, calibration, compile, setup, witness, prove, bundle)
  vs the same ezkl calls made directly; and warm: a second proof (project: cache hit, setup skipped) vs
  direct witness + prove with the keys in hand;
- verify: the project's `verify_proof` vs `ezkl.verify`; and the verifier's full `audit_inference_claim`
  (digests, proof, weights and vk regeneration) for information;
- proof size (proof.json and the raw proof bytes) and bundle size;
- on-chain: the ezkl Solidity verifier compiled with the project's solc (runtime size against EIP-170) and the
  gas of `verifyProof` on the embedded EVM, plus the registry's `verifyInferenceOnChain` when available.
Ratios are project / direct; the goal is <= 1.05x. Shared machines are noisy: take the ratios.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

MODELS: dict[str, tuple[str, dict[str, Any], tuple[int, ...]]] = {
    "mlp 16-8-4": ("mlp", {"in_features": 16, "hidden": [8], "out_features": 4}, (1, 16)),
    "cnn 1x4x4 c2": ("cnn", {"image_size": 4, "channels": [2], "hidden": 0, "num_classes": 4}, (1, 1, 4, 4)),
}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _input(shape: tuple[int, ...], shift: float = 0.0) -> list[float]:
    n = 1
    for d in shape:
        n *= d
    return [((i * 7919) % 97) / 97.0 - 0.5 + shift for i in range(n)]


def _direct(onnx: str, work: str, srs: str, shape: tuple[int, ...], warm_keys: bool) -> dict[str, Any]:
    """The ezkl calls a user would make by hand, with the project's run args (same circuit)."""
    import ezkl as ezkl_module

    ezkl: Any = ezkl_module  # its type stubs mark optional arguments as required

    from registry.zk.pipeline import SMALL, run_args

    w = Path(work)
    (w / "input.json").write_text(json.dumps({"input_data": [_input(shape)]}))
    (w / "input2.json").write_text(json.dumps({"input_data": [_input(shape, 0.1)]}))
    t0 = time.perf_counter()
    ezkl.gen_settings(onnx, str(w / "settings.json"), py_run_args=run_args(SMALL))
    ezkl.calibrate_settings(str(w / "input.json"), onnx, str(w / "settings.json"), "resources",
                            scales=list(SMALL.scales or ()))
    ezkl.compile_circuit(onnx, str(w / "model.compiled"), str(w / "settings.json"))
    ezkl.setup(str(w / "model.compiled"), str(w / "vk.key"), str(w / "pk.key"), srs_path=srs)
    ezkl.gen_witness(str(w / "input.json"), str(w / "model.compiled"), str(w / "witness.json"))
    ezkl.prove(str(w / "witness.json"), str(w / "model.compiled"), str(w / "pk.key"), str(w / "proof.json"),
               srs_path=srs)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    ezkl.gen_witness(str(w / "input2.json"), str(w / "model.compiled"), str(w / "witness2.json"))
    ezkl.prove(str(w / "witness2.json"), str(w / "model.compiled"), str(w / "pk.key"), str(w / "proof2.json"),
               srs_path=srs)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    ok = ezkl.verify(str(w / "proof.json"), str(w / "settings.json"), str(w / "vk.key"), srs_path=srs)
    verify = time.perf_counter() - t0
    proof = json.loads((w / "proof.json").read_text())
    return {"cold": cold, "warm": warm, "verify": verify, "verified": bool(ok), "peakMB": _peak_mb(),
            "proofJsonBytes": (w / "proof.json").stat().st_size, "proofBytes": len(proof["proof"]),
            "logrows": json.loads((w / "settings.json").read_text())["run_args"]["logrows"]}


def _project(onnx: str, work: str, srs: str, shape: tuple[int, ...], warm_keys: bool) -> dict[str, Any]:
    from registry.zk.bundle import FILES
    from registry.zk.pipeline import SMALL, verify_proof
    from registry.zk.prover import prove_inference

    w = Path(work)
    cache = w / "cache"
    t0 = time.perf_counter()
    first = prove_inference(onnx, _input(shape), w / "bundle", srs_path=srs, cache_dir=cache, options=SMALL)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = prove_inference(onnx, _input(shape, 0.1), w / "bundle2", srs_path=srs, cache_dir=cache, options=SMALL)
    warm = time.perf_counter() - t0
    assert second.run.setup_skipped
    b = first.bundle_dir
    t0 = time.perf_counter()
    ok = verify_proof(b / FILES["proof"], b / FILES["settings"], b / FILES["vk"], srs)
    verify = time.perf_counter() - t0
    bundle_bytes = sum(p.stat().st_size for p in b.iterdir())
    return {"cold": cold, "warm": warm, "verify": verify, "verified": ok, "peakMB": _peak_mb(),
            "proofJsonBytes": (b / FILES["proof"]).stat().st_size, "proofBytes": first.bundle["proofBytes"],
            "bundleBytes": bundle_bytes, "logrows": first.run.circuit.logrows}


def _audit(onnx: str, work: str, srs: str, shape: tuple[int, ...], warm_keys: bool) -> dict[str, Any]:
    """The verifier's full audit of a stored bundle (no training claim), with a fresh verifier cache."""
    from registry.store.embedded import EmbeddedStore
    from registry.zk.pipeline import SMALL
    from registry.zk.prover import prove_inference
    from verifier.zk import InferenceClaimFields, audit_inference_claim

    w = Path(work)
    res = prove_inference(onnx, _input(shape), w / "bundle", srs_path=srs, cache_dir=w / "cache", options=SMALL)
    srs_dir = w / "trusted"
    srs_dir.mkdir()
    shutil.copyfile(srs, srs_dir / f"kzg{res.run.circuit.logrows}.srs")
    store = EmbeddedStore(w / "store")
    d = res.digests
    claim = InferenceClaimFields(0, d.vk_hash, d.proof_digest, d.instances_hash, store.add_directory(res.bundle_dir))
    t0 = time.perf_counter()
    report = audit_inference_claim(store, claim, model_claim=None, srs_dir=srs_dir, cache_dir=w / "vcache")
    return {"audit": time.perf_counter() - t0, "verdict": report.verdict, "reason": report.reason}


def _onchain(onnx: str, work: str, srs: str, shape: tuple[int, ...], warm_keys: bool) -> dict[str, Any]:
    from registry.chain.local import EmbeddedChain
    from registry.zk.bundle import FILES, parse_proof
    from registry.zk.evm import EIP170_LIMIT, compile_verifier, deploy_verifier, render_verifier
    from registry.zk.pipeline import SMALL
    from registry.zk.prover import prove_inference

    w = Path(work)
    res = prove_inference(onnx, _input(shape), w / "bundle", srs_path=srs, cache_dir=w / "cache", options=SMALL)
    b = res.bundle_dir
    sol = render_verifier(b / FILES["vk"], b / FILES["settings"], srs, w / "Verifier.sol")
    compiled = compile_verifier(sol)
    out: dict[str, Any] = {"solidityBytes": sol.stat().st_size, "runtimeBytes": compiled.size,
                           "fitsEip170": compiled.size <= EIP170_LIMIT}
    if not compiled.fits_eip170:
        return out
    chain = EmbeddedChain()
    address, deploy_gas = deploy_verifier(chain.w3, chain.accounts[0], compiled)
    proof, instances = parse_proof((b / FILES["proof"]).read_bytes())
    verifier = chain.w3.eth.contract(address=chain.w3.to_checksum_address(address), abi=compiled.abi)
    tx = verifier.functions.verifyProof(proof, instances).transact({"from": chain.accounts[0]})
    out.update({"deployGas": deploy_gas,
                "verifyProofGas": int(chain.w3.eth.wait_for_transaction_receipt(tx)["gasUsed"])})
    try:
        out.update(_registry_gas(chain, address, res, proof, instances))
    except Exception as exc:  # noqa: BLE001 - the registry path is optional in this figure
        out["registryPath"] = f"unavailable: {type(exc).__name__}: {exc}"
    return out


def _registry_gas(chain: Any, verifier: str, res: Any, proof: bytes, instances: list[int]) -> dict[str, Any]:
    """Commit a claim whose vkHash is the verifier's code hash, then verify it on-chain through the registry."""
    codehash = bytes(chain.w3.keccak(chain.w3.eth.get_code(verifier)))
    d = res.digests
    reg = chain.registry
    sender = chain.accounts[1]
    bond = reg.functions.parameters().call()[1]
    tx = reg.functions.commitInference((0, codehash, d.proof_digest, d.instances_hash, "bafy-bench")).transact(
        {"from": sender, "value": bond})
    chain.w3.eth.wait_for_transaction_receipt(tx)
    claim_id = reg.functions.claimCount().call()
    tx = reg.functions.verifyInferenceOnChain(claim_id, verifier, proof, instances).transact({"from": sender})
    return {"verifyInferenceOnChainGas": int(chain.w3.eth.wait_for_transaction_receipt(tx)["gasUsed"])}


def _logrows(onnx: Path, shape: tuple[int, ...], cache: Path) -> int:
    """The circuit's logrows (a calibration in a scratch cache), so the SRS has exactly that size."""
    from registry.zk.pipeline import SMALL, build_circuit

    cache.mkdir(exist_ok=True)
    data = cache / "input.json"
    data.write_text(json.dumps({"input_data": [_input(shape)]}))
    return build_circuit(onnx, data, cache, SMALL).logrows


def _child(fn_name: str, args: tuple[Any, ...], queue: Any) -> None:
    try:
        queue.put(globals()[fn_name](*args))
    except BaseException as exc:  # noqa: BLE001 - report, never hang the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def _run(fn_name: str, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn_name, args, queue))
    proc.start()
    result: dict[str, Any] = queue.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.zk", description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="alternating project/direct runs per model")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--no-onchain", action="store_true", help="skip the Solidity verifier (needs solc)")
    args = parser.parse_args(argv)

    import torch

    from registry.spec.models import build_model
    from registry.zk.export import export_onnx
    from registry.zk.pipeline import dev_srs

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-zk-") as tmp:
        root = Path(tmp)
        for name, (family, fargs, shape) in MODELS.items():
            torch.manual_seed(0)
            onnx = root / f"{family}.onnx"
            export_onnx(build_model(family, fargs), shape, onnx)
            runs: dict[str, list[dict[str, Any]]] = {"project": [], "direct": []}
            srs_path = None
            for r in range(args.repeat):
                order = ("project", "direct") if r % 2 == 0 else ("direct", "project")
                for who in order:
                    work = root / f"{family}-{who}-{r}"
                    work.mkdir()
                    if srs_path is None:
                        srs_path = str(dev_srs(root / "srs", _logrows(onnx, shape, root / "probe")).path)
                    runs[who].append(_run(f"_{who}", str(onnx), str(work), srs_path, shape, False))
            entry: dict[str, Any] = {"runs": runs}
            for who in runs:
                if any("error" in x for x in runs[who]):
                    entry[who] = runs[who]
            if "project" not in entry and "direct" not in entry:
                best = {who: {k: min(x[k] for x in runs[who]) for k in ("cold", "warm", "verify", "peakMB")}
                        for who in runs}
                entry["best"] = best
                entry["ratio"] = {k: round(best["project"][k] / best["direct"][k], 3)
                                  for k in ("cold", "warm", "verify", "peakMB")}
                entry["sizes"] = {k: runs["project"][0].get(k) for k in
                                  ("proofJsonBytes", "proofBytes", "bundleBytes", "logrows")}
                entry["sizes"]["directProofJsonBytes"] = runs["direct"][0]["proofJsonBytes"]
            audit_work = root / f"{family}-audit"
            audit_work.mkdir()
            assert srs_path is not None
            entry["audit"] = _run("_audit", str(onnx), str(audit_work), srs_path, shape, False)
            if not args.no_onchain:
                chain_work = root / f"{family}-chain"
                chain_work.mkdir()
                entry["onchain"] = _run("_onchain", str(onnx), str(chain_work), srs_path, shape, False)
            results[name] = entry
            print(json.dumps({name: {k: v for k, v in entry.items() if k != "runs"}}, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
