"""From a model and an input to an inference bundle: what `proofreg zk prove` does.

The model is an ONNX file, or a local training transcript directory whose final checkpoint the project exports
to ONNX (after checking it against the manifest's `finalWeightsHash`), so the bundle's ONNX weights are exactly
the training claim's final weights.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.zk.bundle import Digests, write_bundle
from registry.zk.export import export_transcript, input_json, onnx_input_shape
from registry.zk.pipeline import VISIBILITY, ProofRun, ProveOptions, ezkl_version, prove


@dataclass
class ProveResult:
    bundle_dir: Path
    bundle: dict[str, Any]
    digests: Digests
    run: ProofRun
    seconds: float

    @property
    def development_only(self) -> bool:
        return bool(self.bundle["developmentOnly"])

    def to_json(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle_dir), **self.digests.to_json(), "developmentOnly": self.development_only,
                "setupSkipped": self.run.setup_skipped, "logrows": self.run.circuit.logrows,
                "output": self.bundle.get("output"), "model": self.bundle.get("model"),
                "timings": {k: round(v, 3) for k, v in self.run.timings.items()}, "seconds": round(self.seconds, 3)}


def is_transcript(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "manifest.json").is_file()


def _rescaled_outputs(witness_path: Path) -> list[float] | None:
    from registry.core.safejson import load_file

    try:
        pretty = load_file(witness_path, max_bytes=512 << 20)["pretty_elements"]["rescaled_outputs"]
        return [float(v) for col in pretty for v in col]
    except (KeyError, TypeError, ValueError, OSError):
        return None


def prove_inference(model: str | Path, input_values: Any, out_dir: str | Path, *, srs_path: str | Path | None = None,
                    dev: bool = False, cache_dir: str | Path, options: ProveOptions | None = None,
                    private_input: bool = False) -> ProveResult:
    """Proves one inference and writes the bundle directory `out_dir` (which must not exist or be empty)."""
    started = time.perf_counter()
    options = options or ProveOptions()
    model_path = Path(model)
    with tempfile.TemporaryDirectory(prefix="proofreg-zk-") as tmp:
        work = Path(tmp)
        if is_transcript(model_path):
            exported = export_transcript(model_path, work / "model.onnx")
            onnx_path = exported.onnx_path
            model_meta: dict[str, Any] = {"source": "transcript", **exported.to_json()}
        else:
            onnx_path = model_path
            model_meta = {"source": "onnx", "inputShape": None}
        shape = onnx_input_shape(onnx_path)
        model_meta["inputShape"] = list(shape)
        run = prove(onnx_path, input_json(input_values, shape), work, srs_path=srs_path, dev=dev,
                    cache_dir=cache_dir, options=options)
        meta = {
            "developmentOnly": run.srs.dev,
            "srs": {**run.srs.to_json(), "file": "dev-srs.srs" if run.srs.dev else None},
            "ezkl": ezkl_version(),
            "visibility": VISIBILITY,
            "instanceLayout": ["input hash", "params hash", "output..."],
            "logrows": run.circuit.logrows,
            "model": model_meta,
            "output": _rescaled_outputs(run.witness_path),
            "options": options.to_json(),
        }
        body = write_bundle(out_dir, proof_path=run.proof_path, vk_path=run.keys.vk_path,
                            settings_path=run.circuit.settings_path, compiled_path=run.circuit.compiled_path,
                            onnx_path=run.onnx_path, input_path=None if private_input else run.input_path,
                            dev_srs_path=run.srs.path if run.srs.dev else None, meta=meta)
    digests = Digests.of((Path(out_dir) / "vk.key").read_bytes(), (Path(out_dir) / "proof.json").read_bytes())
    return ProveResult(Path(out_dir), body, digests, run, time.perf_counter() - started)
