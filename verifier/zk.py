"""Auditing an inference claim (SPEC section 5): fetch the bundle, check its digests against the claim, verify
the proof with ezkl, and check the link to the training claim.

The link has two halves, because the circuit takes the weights as hashed private parameters:
- **weights**: the bundle's ONNX holds, under the family's `state_dict` names, tensors whose canonical weights
  hash is the training claim's `finalWeightsHash`; the proof's params-hash instance equals the Poseidon hash
  this verifier computes from those weights with the bundle's settings;
- **graph**: this verifier exports the claim's model family (from the project's registry, never from bundle
  code) holding those weights, compiles it with the bundle's settings and runs `setup`: the verification key
  must be the claim's (`vkHash`). So the proof is about the family's architecture with the claimed weights,
  not about some other graph that hashes the same numbers.
Without a model claim (`modelClaimId` 0) the graph is the bundle's own ONNX.

SRS: a production verifier verifies with its own trusted SRS files, `kzg<logrows>.srs` in `srs_dir` (default
`$PROOFREG_SRS_DIR`, else `$PROOFREG_HOME/srs`): a proof made with any other SRS fails. A bundle marked
`developmentOnly` (made with a locally generated SRS, which its maker can forge proofs with) is `Invalid` unless
development SRSs are allowed (`allow_dev_srs`, default `$PROOFREG_ALLOW_DEV_SRS=1`), as in tests and demos.

Verdicts: `Valid`; `Invalid` when the evidence contradicts the claim; `Unavailable` when it cannot be fetched
(or no trusted SRS of the right size is installed). `audit_inference_claim` never raises.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.hashing import as_hash, to_hex
from registry.store.base import ContentStore, StoreError
from verifier.audit import INVALID, UNAVAILABLE, VALID, AuditReport, TrainingClaimFields

MAX_FILE_BYTES = 512 << 20
#: Largest circuit (2^k rows) this verifier sets up; bigger claims are Unavailable here rather than a way to make
#: every committee member spend hours and tens of GB ($PROOFREG_ZK_MAX_LOGROWS overrides).
DEFAULT_MAX_LOGROWS = 22


@dataclass(frozen=True)
class InferenceClaimFields:
    """What the chain says about an inference claim (from its `InferenceClaimCommitted` event)."""

    model_claim_id: int
    vk_hash: bytes
    proof_digest: bytes
    instances_hash: bytes
    bundle_cid: str

    @classmethod
    def from_event(cls, args: dict[str, Any]) -> InferenceClaimFields:
        """From the event's `claim` struct (a dict with the Solidity field names); the whole event args
        (with the struct under "claim") are accepted too."""
        if "claim" in args and "vkHash" not in args:
            args = args["claim"]
        return cls(int(args["modelClaimId"]), as_hash(args["vkHash"]), as_hash(args["proofDigest"]),
                   as_hash(args["instancesHash"]), str(args["bundleCid"]))

    def claim_tuple(self) -> tuple[Any, ...]:
        """The `InferenceClaim` struct in ABI order, for `commitInference`."""
        return (self.model_claim_id, self.vk_hash, self.proof_digest, self.instances_hash, self.bundle_cid)


class _Verdict(Exception):
    def __init__(self, verdict: str, reason: str) -> None:
        super().__init__(reason)
        self.verdict, self.reason = verdict, reason


def _invalid(reason: str) -> _Verdict:
    return _Verdict(INVALID, reason)


def default_srs_dir() -> Path:
    from registry.deployment import proofreg_home

    env = os.environ.get("PROOFREG_SRS_DIR")
    return Path(env) if env else proofreg_home() / "srs"


def default_cache_dir() -> Path:
    from registry.deployment import proofreg_home

    return proofreg_home() / "zk-cache" / "verifier"


class _Bundle:
    """Files of a stored bundle, fetched one by one into a local folder (byte-counted)."""

    def __init__(self, store: ContentStore, cid: str, dest: Path) -> None:
        self.store, self.cid, self.dest = store, cid, dest
        self.bytes = 0
        self.files: dict[str, int] = {}
        dest.mkdir(parents=True, exist_ok=True)

    def fetch(self, name: str) -> Path:
        try:
            data = self.store.cat(f"{self.cid}/{name}", 0, MAX_FILE_BYTES + 1)
        except StoreError as exc:
            raise _Verdict(UNAVAILABLE, f"bundle {name}: {exc}") from None
        if len(data) > MAX_FILE_BYTES:
            raise _invalid(f"bundle {name} is over {MAX_FILE_BYTES} bytes")
        self.bytes += len(data)
        self.files[name] = len(data)
        path = self.dest / name
        path.write_bytes(data)
        return path


def audit_inference_claim(store: ContentStore, claim: InferenceClaimFields, *,
                          model_claim: TrainingClaimFields | None, workdir: Path | None = None,
                          srs_dir: Path | None = None, allow_dev_srs: bool | None = None,
                          cache_dir: Path | None = None) -> AuditReport:
    """Audits an inference claim; `model_claim` is the training claim `claim.model_claim_id` names (None when it
    is 0, or when the caller could not find it: then the verdict is Unavailable)."""
    started = time.perf_counter()
    files: dict[str, int] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="proofreg-zk-audit-", dir=workdir) as tmp:
            bundle = _Bundle(store, claim.bundle_cid, Path(tmp) / "bundle")
            try:
                reason = _audit(store, claim, model_claim, bundle, Path(tmp),
                                srs_dir if srs_dir is not None else default_srs_dir(),
                                allow_dev_srs if allow_dev_srs is not None
                                else os.environ.get("PROOFREG_ALLOW_DEV_SRS") == "1",
                                cache_dir if cache_dir is not None else default_cache_dir())
                verdict = VALID
            except _Verdict as v:
                verdict, reason = v.verdict, v.reason
            finally:
                files = dict(bundle.files)
    except Exception as exc:  # noqa: BLE001 - the contract of this function: a verdict, never an exception
        verdict, reason = INVALID, f"unexpected error while auditing: {type(exc).__name__}: {exc}"
    from registry.zk.pipeline import ezkl_version

    return AuditReport(verdict=verdict, reason=reason, threshold=0.0, bytes_fetched=sum(files.values()),
                       seconds=time.perf_counter() - started, files=files,
                       claim={"kind": "inference", "modelClaimId": claim.model_claim_id,
                              "vkHash": to_hex(claim.vk_hash), "proofDigest": to_hex(claim.proof_digest),
                              "instancesHash": to_hex(claim.instances_hash), "bundleCid": claim.bundle_cid},
                       environment={"ezkl": ezkl_version()})


def _audit(store: ContentStore, claim: InferenceClaimFields, model_claim: TrainingClaimFields | None,
           bundle: _Bundle, tmp: Path, srs_dir: Path, allow_dev: bool, cache_dir: Path) -> str:
    from registry.zk.bundle import (
        BUNDLE_JSON,
        DEV_SRS_FILE,
        FILES,
        INPUT_FILE,
        BundleError,
        instances_hash,
        parse_proof,
        proof_digest,
        read_bundle_json,
        vk_hash,
    )
    from registry.zk.pipeline import PARAMS_HASH_INDEX, ZkError, check_visibility, srs_logrows, verify_proof

    if claim.model_claim_id != 0 and model_claim is None:
        raise _Verdict(UNAVAILABLE, f"the fields of model claim {claim.model_claim_id} were not found")
    # 1. the bundle and the claim's digests
    try:
        body = read_bundle_json(bundle.fetch(BUNDLE_JSON).read_bytes())
    except BundleError as exc:
        raise _invalid(str(exc)) from None
    settings_path = bundle.fetch(FILES["settings"])
    try:
        settings = json.loads(settings_path.read_bytes())
        check_visibility(settings)
        logrows = int(settings["run_args"]["logrows"])
        n_out = sum(int(_prod(s)) for s in settings["model_instance_shapes"])
    except (ValueError, KeyError, TypeError, ZkError) as exc:
        raise _invalid(f"settings.json: {exc}") from None
    max_logrows = int(os.environ.get("PROOFREG_ZK_MAX_LOGROWS") or DEFAULT_MAX_LOGROWS)
    if logrows > max_logrows:
        raise _Verdict(UNAVAILABLE, f"the circuit has 2^{logrows} rows, over this verifier's 2^{max_logrows} limit")

    # the SRS: the verifier's own trusted file, or (where allowed) the bundle's development SRS
    dev = body.get("developmentOnly") is True
    if dev:
        if not allow_dev:
            raise _invalid("the bundle was made with a development SRS (generated locally, forgeable); "
                           "this verifier accepts only its trusted SRS")
        srs_path = bundle.fetch(DEV_SRS_FILE)
    else:
        srs_path = srs_dir / f"kzg{logrows}.srs"
        if not srs_path.is_file():
            raise _Verdict(UNAVAILABLE, f"no trusted SRS for logrows {logrows}: install the ceremony's as {srs_path}")
    try:
        if srs_logrows(srs_path) < logrows:
            raise _invalid(f"the SRS has fewer than the circuit's 2^{logrows} rows")
    except ZkError as exc:
        raise _invalid(str(exc)) from None

    # the claim's digests: vkHash is sha256(vk.key), or for on-chain claims the EVM verifier's code hash
    vk_path = bundle.fetch(FILES["vk"])
    expected_vk = claim.vk_hash
    onchain_note = ""
    if vk_hash(vk_path.read_bytes()) != claim.vk_hash:
        if not isinstance(body.get("evm"), dict):
            raise _invalid(f"vk.key hashes to {to_hex(vk_hash(vk_path.read_bytes()))}, not the claim's vkHash")
        _check_evm_verifier(claim, vk_path, settings_path, srs_path, tmp)
        expected_vk = vk_hash(vk_path.read_bytes())
        onchain_note = "; vkHash is the code hash of the vk's EVM verifier"
    proof_path = bundle.fetch(FILES["proof"])
    try:
        proof, instances = parse_proof(proof_path.read_bytes())
    except BundleError as exc:
        raise _invalid(str(exc)) from None
    if proof_digest(proof) != claim.proof_digest:
        raise _invalid("the proof bytes do not match the claim's proofDigest")
    if instances_hash(instances) != claim.instances_hash:
        raise _invalid("the proof's public instances do not match the claim's instancesHash")
    if len(instances) != 2 + n_out:
        raise _invalid(f"the proof has {len(instances)} instances; the settings' layout needs {2 + n_out}")

    if not verify_proof(proof_path, settings_path, vk_path, srs_path):
        raise _invalid("the proof does not verify against vk.key and settings.json")

    # 3. the model: which graph and weights the circuit must be
    onnx_path = bundle.fetch(FILES["onnx"])
    model_note = "no training claim linked (modelClaimId 0)"
    own_onnx = onnx_path
    if model_claim is not None:
        own_onnx = tmp / "own.onnx"
        family = _link_weights(store, model_claim, onnx_path, own_onnx)
        model_note = f"the {family} final weights of training claim {claim.model_claim_id}"
    input_path = None
    if body.get("files", {}).get(INPUT_FILE):
        input_path = bundle.fetch(INPUT_FILE)
    hashes = _own_circuit_hashes(own_onnx, settings_path, input_path, tmp)
    if hashes["params"] != instances[PARAMS_HASH_INDEX]:
        raise _invalid("the proof's params-hash instance is not the Poseidon hash of the model's weights")
    if input_path is not None:
        if hashes["input"] != instances[0]:
            raise _invalid("the bundle's input.json is not the input the proof commits to")
        if hashes["outputs"] != instances[2:]:
            raise _invalid("the proof's outputs are not what the circuit computes on input.json")
    own_vk = _own_vk_hash(tmp, srs_path, settings_path, own_onnx, cache_dir)
    if own_vk != expected_vk:
        raise _invalid("the verification key is not the one the model's graph and the settings produce")
    srs_note = "development SRS (tests and demos only)" if dev else f"trusted SRS {srs_path.name}"
    return f"proof verifies with the {srs_note}; circuit and params hash are {model_note}{onchain_note}"


def _check_evm_verifier(claim: InferenceClaimFields, vk_path: Path, settings_path: Path, srs_path: Path,
                        tmp: Path) -> None:
    """For on-chain claims: the claim's vkHash must be the code hash of the verifier ezkl renders for this vk
    (compiled here with the project's solc and settings), so the on-chain check used exactly this vk."""
    from registry.zk.evm import code_hash, verifier_for
    from registry.zk.pipeline import ZkError

    try:
        _, compiled = verifier_for(vk_path, settings_path, srs_path, tmp)
    except ZkError as exc:
        raise _Verdict(UNAVAILABLE, f"cannot build the EVM verifier to check the claim's code hash: {exc}") from None
    if code_hash(compiled.deployed_bytecode) != claim.vk_hash:
        raise _invalid("the claim's vkHash is neither sha256(vk.key) nor the code hash of the vk's EVM verifier")


def _prod(shape: Any) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _link_weights(store: ContentStore, model_claim: TrainingClaimFields, onnx_path: Path, own_onnx: Path) -> str:
    """Checks the ONNX weights against the training claim; writes the verifier's own export of the family."""
    from registry.pol.checkpoint import TranscriptError
    from registry.pol.transcript import MANIFEST_NAME, validate_manifest
    from registry.zk.export import (
        ExportError,
        export_onnx,
        family_input_shape,
        model_from_weights,
        onnx_weights_hash,
    )

    try:
        raw = store.cat(f"{model_claim.transcript_cid}/{MANIFEST_NAME}")
    except StoreError as exc:
        raise _Verdict(UNAVAILABLE, f"training claim manifest: {exc}") from None
    try:
        manifest = validate_manifest(json.loads(raw))
    except (TranscriptError, ValueError) as exc:
        raise _invalid(f"training claim manifest: {exc}") from None
    if as_hash(manifest["finalWeightsHash"]) != model_claim.final_weights_hash or \
            as_hash(manifest["configHash"]) != model_claim.config_hash:
        raise _invalid("the training claim's manifest differs from the claim (finalWeightsHash or configHash)")
    try:
        spec = manifest["config"]["model"]
        family, args = str(spec["family"]), dict(spec["args"])
        if manifest["config"].get("dtype", "float32") != "float32":
            raise _invalid("only float32 models can be linked")
        got, weights = onnx_weights_hash(onnx_path, family, args)
    except ExportError as exc:
        raise _invalid(f"the bundle's ONNX is not a {manifest['config']['model'].get('family')} model "
                       f"of the training claim: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise _invalid(f"training claim config: {exc!r}") from None
    if got != model_claim.final_weights_hash:
        raise _invalid(f"the ONNX weights hash to {to_hex(got)}, not the training claim's finalWeightsHash "
                       f"{to_hex(model_claim.final_weights_hash)}")
    try:
        export_onnx(model_from_weights(family, args, weights), family_input_shape(family, args), own_onnx)
    except ExportError as exc:
        raise _invalid(str(exc)) from None
    return family


def _own_circuit_hashes(onnx_path: Path, settings_path: Path, input_path: Path | None, tmp: Path) -> dict[str, Any]:
    """Compiles the verifier's own circuit and runs it on input.json (or zeros): Poseidon hashes and outputs."""
    import ezkl

    from registry.zk.bundle import BundleError, field_element
    from registry.zk.export import ExportError, input_json, onnx_input_shape, read_input
    from registry.zk.pipeline import ZkError, call_ezkl

    compiled = tmp / "own.compiled"
    try:
        shape = onnx_input_shape(onnx_path)
        values: Any = read_input(input_path) if input_path is not None else [0.0] * _prod(shape)
        data = tmp / "own-input.json"
        data.write_text(json.dumps(input_json(values, shape)))
        call_ezkl("compile_circuit", ezkl.compile_circuit, str(onnx_path), str(compiled), str(settings_path))
        witness = tmp / "own-witness.json"
        call_ezkl("gen_witness", ezkl.gen_witness, str(data), str(compiled), str(witness))
        w = json.loads(witness.read_text())
        return {"params": field_element(w["processed_params"]["poseidon_hash"][0]),
                "input": field_element(w["processed_inputs"]["poseidon_hash"][0]),
                "outputs": [field_element(v) for col in w["outputs"] for v in col]}
    except (ZkError, ExportError, BundleError, KeyError, TypeError, ValueError) as exc:
        raise _invalid(f"the model does not compile with the bundle's settings: {exc}") from None


def _own_vk_hash(tmp: Path, srs_path: Path, settings_path: Path, onnx_path: Path, cache_dir: Path) -> bytes:
    """sha256 of the vk that `setup` gives for the verifier's own circuit, cached by (ONNX, settings, SRS)."""
    import ezkl

    from registry.hashing import sha256_file
    from registry.zk.pipeline import ZkError, call_ezkl

    key = hashlib.sha256(b"proofreg-zk-verifier-vk/1\0" + sha256_file(onnx_path) + sha256_file(settings_path)
                         + sha256_file(srs_path)).hexdigest()
    entry = cache_dir / "vk" / f"{key}.sha256"
    if entry.is_file():
        return bytes.fromhex(entry.read_text().strip())
    try:
        call_ezkl("setup", ezkl.setup, str(tmp / "own.compiled"), str(tmp / "own-vk.key"), str(tmp / "own-pk.key"),
                  srs_path=str(srs_path))
    except ZkError as exc:
        raise _invalid(f"setup of the model's circuit failed: {exc}") from None
    digest = hashlib.sha256((tmp / "own-vk.key").read_bytes()).digest()
    (tmp / "own-pk.key").unlink(missing_ok=True)
    entry.parent.mkdir(parents=True, exist_ok=True)
    staged = entry.with_suffix(f".{os.getpid()}.tmp")
    staged.write_text(digest.hex() + "\n")
    os.replace(staged, entry)
    return digest
