"""The one audit of an inference bundle (protocol section 5): what the verifier node (`verifier.zk`) and the
local check (`proofreg zk verify`) both run. Details and guarantees: docs/zk.md.

A cheating prover controls every byte of the bundle and can reseal every digest it commits. So nothing the
bundle says is taken on trust; every number that decides what the claim means is either recomputed here or
required to equal what this verifier derives itself:

1. `bundle.json`, `settings.json`, `proof.json`, `input.json` are parsed with `registry.core.safejson` (bounded size
   and depth), every file is read bounded, names are plain file names (no paths, no `..`; locally no symlinks),
   and every file read must match its sha256 in `bundle.json`.
2. The SRS policy: the verifier's own trusted `kzg<logrows>.srs`; a development bundle only where allowed.
3. The claim's digests (`vkHash`, `proofDigest`, `instancesHash`) against the files; `ezkl verify`.
4. The model: the training claim's final weights (the family re-exported by this verifier), or, unlinked, the
   bundle's ONNX. **Settings are derived, not trusted**: `gen_settings` on that ONNX with the bundle's run
   arguments must give the bundle's `settings.json` exactly (all but its timestamp): input and output scales,
   visibility, shapes, rows. `setup` on the verifier's own compiled circuit must give the claim's vk, and its
   witness the params hash (and, with `input.json`, the input hash and outputs) of the proof.
5. The statement: the output decoded from the proven instances with the derived output scales is the
   report's output, and `bundle.json`'s `output`, `instances`, digests, `model`, `logrows`, `visibility`,
   `developmentOnly` must agree with what was checked, or the claim is Invalid.

`audit_bundle` never raises: it returns an `AuditOutcome` with a verdict and a one-line reason.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from registry.core.hashing import as_hash, sha256, to_hex
from registry.core.safejson import JsonError, loads, read_bounded
from registry.zk.bundle import MAX_FILE_BYTES, MAX_JSON_BYTES  # bounds of a file / of a JSON file of a bundle

VALID, INVALID, UNAVAILABLE = "Valid", "Invalid", "Unavailable"  # the contract's verdicts (verifier.report)

#: Largest circuit (2^k rows) this verifier sets up; bigger claims are Unavailable here rather than a way to make
#: every committee member spend hours and tens of GB ($PROOFREG_ZK_MAX_LOGROWS overrides).
DEFAULT_MAX_LOGROWS = 22
#: The instance layout of the project's visibility (registry.zk.pipeline).
INSTANCE_LAYOUT = ["input hash", "params hash", "output..."]
#: settings.json keys a verifier does not re-derive: when it was written.
UNDERIVED_SETTINGS = ("timestamp",)
#: settings.json lists that ezkl fills from hash sets (their order varies from run to run).
UNORDERED_SETTINGS = ("required_lookups", "required_range_checks")


class Verdict(Exception):
    """Ends the audit with a verdict and a one-line reason."""

    def __init__(self, verdict: str, reason: str) -> None:
        super().__init__(reason)
        self.verdict, self.reason = verdict, " ".join(str(reason).split())


def invalid(reason: str) -> Verdict:
    return Verdict(INVALID, reason)


def unavailable(reason: str) -> Verdict:
    return Verdict(UNAVAILABLE, reason)


def check_name(name: Any) -> str:
    """A bundle file name: one plain path component (no '/', no '..', not absolute, no leading dot)."""
    from registry.zk.bundle import BundleError, check_file_name

    try:
        return check_file_name(name)
    except BundleError as exc:
        raise invalid(str(exc)) from None


@dataclass(frozen=True)
class ClaimDigests:
    """What an inference claim commits (on-chain), or, offline, what bundle.json says it commits."""

    model_claim_id: int
    vk_hash: bytes
    proof_digest: bytes
    instances_hash: bytes


@dataclass(frozen=True)
class ModelLink:
    """The training claim an inference claim names: its committed fields and how to fetch its manifest (bytes;
    raising `Verdict` Unavailable when it cannot be fetched)."""

    claim_id: int
    final_weights_hash: bytes
    config_hash: bytes
    manifest: Callable[[], bytes]


class BundleSource(Protocol):
    """Where the bundle's files come from: a content store directory, or a local directory."""

    def read(self, name: str, max_bytes: int) -> bytes:
        """The bytes of file `name` (at most `max_bytes`, else Invalid); raises `Verdict`."""
        ...


class DirSource:
    """A local bundle directory: regular files only, never through a symlink, bounded."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def read(self, name: str, max_bytes: int) -> bytes:
        path = self.folder / check_name(name)
        if not path.exists() and not path.is_symlink():
            raise invalid(f"the bundle has no {name}")
        try:
            return read_bounded(path, max_bytes, what=name, follow_symlinks=False)
        except JsonError as exc:
            raise invalid(f"bundle {exc}") from None


class StoreSource:
    """A bundle directory in a content store (`registry.store`), by CID."""

    def __init__(self, store: Any, cid: str) -> None:
        self.store, self.cid = store, cid

    def read(self, name: str, max_bytes: int) -> bytes:
        from registry.store.base import StoreError

        try:
            data: bytes = self.store.cat(f"{self.cid}/{check_name(name)}", 0, max_bytes + 1)
        except StoreError as exc:
            raise unavailable(f"bundle {name}: {exc}") from None
        if len(data) > max_bytes:
            raise invalid(f"bundle {name} is over {max_bytes} bytes")
        return data


@dataclass
class AuditOutcome:
    """The verdict, its reason, what was fetched, and on Valid the decoded output exactly as proven."""

    verdict: str
    reason: str
    files: dict[str, int] = field(default_factory=dict)
    output: list[float] | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.reason, "files": self.files, "output": self.output,
                "checks": self.checks, "seconds": round(self.seconds, 3)}


class _Fetcher:
    """Reads bundle files once each into the work folder, checked against bundle.json's sha256s."""

    def __init__(self, source: BundleSource, dest: Path) -> None:
        self.source, self.dest = source, dest
        self.files: dict[str, int] = {}
        self.listed: dict[str, str] | None = None
        dest.mkdir(parents=True, exist_ok=True)

    def bytes(self, name: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
        data = self.source.read(name, max_bytes)
        self.files[name] = len(data)
        if self.listed is not None:
            if name not in self.listed:
                raise invalid(f"bundle.json does not list {name}")
            if to_hex(sha256(data)) != str(self.listed[name]).lower():
                raise invalid(f"{name} does not match its sha256 in bundle.json")
        (self.dest / name).write_bytes(data)
        return data

    def path(self, name: str, max_bytes: int = MAX_FILE_BYTES) -> Path:
        self.bytes(name, max_bytes)
        return self.dest / name

    def json(self, name: str) -> Any:
        try:
            return loads(self.bytes(name, MAX_JSON_BYTES), what=name, max_bytes=MAX_JSON_BYTES)
        except JsonError as exc:
            raise invalid(str(exc)) from None


def default_max_logrows() -> int:
    try:
        return int(os.environ.get("PROOFREG_ZK_MAX_LOGROWS") or DEFAULT_MAX_LOGROWS)
    except ValueError:
        return DEFAULT_MAX_LOGROWS


def audit_bundle(source: BundleSource, claim: ClaimDigests, link: ModelLink | None, *, srs_dir: Path,
                 allow_dev_srs: bool, cache_dir: Path, workdir: Path | None = None,
                 max_logrows: int | None = None) -> AuditOutcome:
    """Audits one inference bundle against the claim's digests and (when linked) its training claim."""
    started = time.perf_counter()
    outcome = AuditOutcome(INVALID, "")
    try:
        with tempfile.TemporaryDirectory(prefix="proofreg-zk-audit-", dir=workdir) as tmp:
            fetch = _Fetcher(source, Path(tmp) / "bundle")
            try:
                outcome.reason = _audit(fetch, claim, link, Path(tmp), srs_dir, allow_dev_srs, cache_dir,
                                        max_logrows if max_logrows is not None else default_max_logrows(),
                                        outcome)
                outcome.verdict = VALID
            except Verdict as v:
                outcome.verdict, outcome.reason, outcome.output = v.verdict, v.reason, None
            finally:
                outcome.files = dict(fetch.files)
    except Exception as exc:  # noqa: BLE001 - the contract of this function: a verdict, never an exception
        outcome.verdict, outcome.output = INVALID, None
        outcome.reason = " ".join(f"unexpected error while auditing: {type(exc).__name__}: {exc}".split())[:500]
    outcome.seconds = time.perf_counter() - started
    return outcome


def _audit(fetch: _Fetcher, claim: ClaimDigests, link: ModelLink | None, tmp: Path, srs_dir: Path,
           allow_dev: bool, cache_dir: Path, max_logrows: int, outcome: AuditOutcome) -> str:
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
    from registry.zk.export import ExportError, load_onnx
    from registry.zk.pipeline import VISIBILITY, ZkError, check_visibility, ezkl_version, srs_logrows, verify_proof

    if claim.model_claim_id != 0 and link is None:
        raise unavailable(f"the fields of model claim {claim.model_claim_id} were not found")
    # 1. bundle.json and settings.json
    try:
        body = read_bundle_json(fetch.bytes(BUNDLE_JSON, MAX_JSON_BYTES))
    except BundleError as exc:
        raise invalid(str(exc)) from None
    fetch.listed = {check_name(k): str(v) for k, v in body["files"].items()}
    settings = fetch.json(FILES["settings"])
    settings_path = fetch.dest / FILES["settings"]
    try:
        check_visibility(settings)
        logrows = int(settings["run_args"]["logrows"])
        shapes = [[int(d) for d in s] for s in settings["model_instance_shapes"]]
        out_scales = [int(s) for s in settings["model_output_scales"]]
        n_out = sum(_prod(s) for s in shapes)
    except (ValueError, KeyError, TypeError, ZkError) as exc:
        raise invalid(f"settings.json: {exc}") from None
    if len(out_scales) != len(shapes):
        raise invalid("settings.json has not one output scale per output shape")
    if logrows > max_logrows:
        raise unavailable(f"the circuit has 2^{logrows} rows, over this verifier's 2^{max_logrows} limit")
    if settings.get("version") != ezkl_version():
        raise unavailable(f"the bundle was made with ezkl {str(settings.get('version'))[:40]}, this verifier runs "
                          f"ezkl {ezkl_version()}")

    # 2. the SRS: the verifier's own trusted file, or (where allowed) the bundle's development SRS
    dev = body.get("developmentOnly") is True
    if dev:
        if not allow_dev:
            raise invalid("the bundle was made with a development SRS (generated locally, forgeable); "
                          "this verifier accepts only its trusted SRS (PROOFREG_ALLOW_DEV_SRS=1 allows it)")
        srs_path = fetch.path(DEV_SRS_FILE)
    else:
        srs_path = srs_dir / f"kzg{logrows}.srs"
        if not srs_path.is_file():
            raise unavailable(f"no trusted SRS for logrows {logrows}: install the ceremony's as {srs_path}")
    try:
        if srs_logrows(srs_path) < logrows:
            raise invalid(f"the SRS has fewer than the circuit's 2^{logrows} rows")
    except ZkError as exc:
        raise invalid(str(exc)) from None

    # 3. the claim's digests: vkHash is sha256(vk.key), or for on-chain claims the EVM verifier's code hash
    vk = fetch.bytes(FILES["vk"])
    vk_path = fetch.dest / FILES["vk"]
    own_vk_hash = vk_hash(vk)
    onchain_note = ""
    if own_vk_hash != claim.vk_hash:
        if not isinstance(body.get("evm"), dict):
            raise invalid(f"vk.key hashes to {to_hex(own_vk_hash)}, not the claim's vkHash")
        _check_evm_verifier(claim, vk_path, settings_path, srs_path, tmp)
        onchain_note = "; vkHash is the code hash of the vk's EVM verifier"
    proof_bytes = fetch.bytes(FILES["proof"], MAX_JSON_BYTES)
    try:
        proof, instances = parse_proof(_json(proof_bytes, FILES["proof"]))
    except BundleError as exc:
        raise invalid(str(exc)) from None
    if proof_digest(proof) != claim.proof_digest:
        raise invalid("the proof bytes do not match the claim's proofDigest")
    if instances_hash(instances) != claim.instances_hash:
        raise invalid("the proof's public instances do not match the claim's instancesHash")
    if len(instances) != 2 + n_out:
        raise invalid(f"the proof has {len(instances)} instances; the settings' layout needs {2 + n_out}")
    stated = {"vkHash": to_hex(own_vk_hash), "proofDigest": to_hex(proof_digest(proof)),
              "instancesHash": to_hex(instances_hash(instances))}
    for key, value in stated.items():
        if str(body[key]).lower() != value:
            raise invalid(f"bundle.json's {key} is not the digest of its files")
    if body.get("instances") != [to_hex(i.to_bytes(32, "big")) for i in instances]:
        raise invalid("bundle.json's instances are not the proof's public instances")
    if "proofBytes" in body and body["proofBytes"] != len(proof):
        raise invalid("bundle.json's proofBytes is not the proof's length")

    if not verify_proof(fetch.dest / FILES["proof"], settings_path, vk_path, srs_path):
        raise invalid("the proof does not verify against vk.key and settings.json")

    # 4. the model: which graph and weights the circuit must be; settings derived from it
    onnx_path = fetch.path(FILES["onnx"])
    try:
        load_onnx(onnx_path)  # before ezkl reads it: size, and no external data anywhere in the graph
    except ExportError as exc:
        raise invalid(str(exc)) from None
    model_note = "no training claim linked (modelClaimId 0)"
    own_onnx = onnx_path
    manifest_model: dict[str, Any] | None = None
    if link is not None:
        own_onnx = tmp / "own.onnx"
        manifest_model = _link_weights(link, onnx_path, own_onnx)
        model_note = f"the {manifest_model['family']} final weights of training claim {link.claim_id}"
    _derive_settings(own_onnx, settings, tmp)  # from here on settings.json is the verifier's own (but for its time)
    input_path = None
    if INPUT_FILE in fetch.listed:
        fetch.json(INPUT_FILE)  # parsed bounded here first; ezkl and read_input read it after
        input_path = fetch.dest / INPUT_FILE
    hashes = _own_circuit_hashes(own_onnx, settings_path, input_path, tmp)
    if hashes["params"] != instances[1]:
        raise invalid("the proof's params-hash instance is not the Poseidon hash of the model's weights")
    if input_path is not None:
        if hashes["input"] != instances[0]:
            raise invalid("the bundle's input.json is not the input the proof commits to")
        if hashes["outputs"] != instances[2:]:
            raise invalid("the proof's outputs are not what the circuit computes on input.json")
    if _own_vk_hash(tmp, srs_path, settings_path, own_onnx, cache_dir) != own_vk_hash:
        raise invalid("the verification key is not the one the model's graph and the settings produce")

    # 5. the statement: the decoded output and what bundle.json says
    output = decode_outputs(instances[2:], shapes, out_scales)
    if body.get("output") != output:
        raise invalid("bundle.json's output is not the output the proof proves (decoded with the circuit's "
                      "output scales)")
    _check_model_statement(body, own_onnx, onnx_path, link, manifest_model)
    if body.get("logrows") != logrows:
        raise invalid("bundle.json's logrows is not the circuit's")
    if body.get("visibility") != VISIBILITY or body.get("instanceLayout", INSTANCE_LAYOUT) != INSTANCE_LAYOUT:
        raise invalid("bundle.json's visibility or instance layout is not the project's")
    srs_meta = body["srs"]
    if srs_meta.get("developmentOnly") is not dev:
        raise invalid("bundle.json's srs.developmentOnly disagrees with its developmentOnly")
    if dev and str(srs_meta.get("sha256", "")).lower().removeprefix("0x") != hashlib.sha256(
            (fetch.dest / DEV_SRS_FILE).read_bytes()).hexdigest():
        raise invalid("bundle.json's srs.sha256 is not the development SRS's")
    outcome.output = output
    outcome.checks = {"output": output, "outputShapes": shapes, "outputScales": out_scales,
                      "inputScales": settings.get("model_input_scales"), "logrows": logrows,
                      "inputHash": to_hex(instances[0].to_bytes(32, "big")),
                      "paramsHash": to_hex(instances[1].to_bytes(32, "big")),
                      "inputPublished": input_path is not None, "developmentOnly": dev,
                      "modelClaimId": claim.model_claim_id}
    srs_note = "development SRS (tests and demos only)" if dev else f"trusted SRS {srs_path.name}"
    return (f"proof verifies with the {srs_note}; circuit, settings and params hash are {model_note}"
            f"{onchain_note}; output {_short(output)}")


def _short(values: list[float]) -> str:
    return "[" + ", ".join(repr(v) for v in values[:8]) + (", ...]" if len(values) > 8 else "]")


def _json(data: bytes, what: str) -> Any:
    try:
        return loads(data, what=what, max_bytes=MAX_JSON_BYTES)
    except JsonError as exc:
        raise invalid(str(exc)) from None


def _prod(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def decode_outputs(values: list[int], shapes: list[list[int]], scales: list[int]) -> list[float]:
    """Output field elements as ezkl decodes them: signed (p - x is -x), divided by 2^scale of their tensor."""
    from registry.zk.bundle import FIELD_MODULUS

    out: list[float] = []
    i = 0
    for shape, scale in zip(shapes, scales, strict=True):
        for _ in range(_prod(shape)):
            n = values[i]
            signed = n - FIELD_MODULUS if n > FIELD_MODULUS // 2 else n
            out.append(float(signed) / float(2.0 ** scale))
            i += 1
    return out


def _run_args_from(ra: dict[str, Any]) -> Any:
    """ezkl run arguments holding the bundle's values (visibility is the project's, checked before); fields
    ezkl does not accept keep their defaults, so the derived settings then differ and the bundle is refused."""
    from registry.zk.pipeline import run_args

    args = run_args()
    for key, value in ra.items():
        if key.endswith("_visibility") or not isinstance(key, str):
            continue
        try:
            if key == "variables":
                value = [tuple(v) for v in value]
            elif key == "lookup_range":
                value = tuple(value)
            setattr(args, key, value)
        except (TypeError, ValueError, AttributeError, OverflowError):
            continue
    return args


def _canonical(key: str, value: Any) -> Any:
    """ezkl writes some settings from hash sets, in no fixed order: compare those as sorted lists."""
    if key in UNORDERED_SETTINGS and isinstance(value, list):
        import json

        return sorted(value, key=lambda v: json.dumps(v, sort_keys=True))
    return value


def _derive_settings(onnx_path: Path, settings: dict[str, Any], tmp: Path) -> None:
    """`gen_settings` on the verifier's model with the bundle's run arguments; must equal the bundle's settings
    except `UNDERIVED_SETTINGS`, so scales, shapes and visibility are the circuit's, not the prover's word."""
    import ezkl

    from registry.zk.pipeline import ZkError, call_ezkl

    own = tmp / "own-settings.json"
    try:
        call_ezkl("gen_settings", ezkl.gen_settings, str(onnx_path), str(own), py_run_args=_run_args_from(
            settings["run_args"]))
        derived = loads(read_bounded(own, MAX_JSON_BYTES), what="derived settings")
    except (ZkError, JsonError, KeyError, TypeError) as exc:
        raise invalid(f"the model's settings cannot be derived from the bundle's run arguments: {exc}") from None
    differ = sorted(k for k in set(settings) | set(derived)
                    if k not in UNDERIVED_SETTINGS and _canonical(k, settings.get(k)) != _canonical(k, derived.get(k)))
    if differ:
        raise invalid(f"settings.json disagrees with the settings this verifier derives from the model and its "
                      f"run arguments: {', '.join(differ[:6])}")


def _check_model_statement(body: dict[str, Any], own_onnx: Path, onnx_path: Path, link: ModelLink | None,
                           manifest_model: dict[str, Any] | None) -> None:
    """bundle.json's `model` must describe what was checked: input shape; family, args and finalWeightsHash."""
    from registry.zk.export import ExportError, onnx_input_shape, onnx_weights_hash

    model = body.get("model")
    if not isinstance(model, dict):
        raise invalid("bundle.json has no model description")
    try:
        shape = list(onnx_input_shape(own_onnx))
    except ExportError as exc:
        raise invalid(str(exc)) from None
    if model.get("inputShape") != shape:
        raise invalid(f"bundle.json's model inputShape is not the model's {shape}")
    source = model.get("source")
    if source == "onnx":
        if any(k in model for k in ("family", "finalWeightsHash")):
            raise invalid("bundle.json's model says it is a plain ONNX file but names a family")
        return
    if source != "transcript":
        raise invalid("bundle.json's model source is neither 'onnx' nor 'transcript'")
    try:
        family, args, stated = str(model["family"]), dict(model["args"]), as_hash(model["finalWeightsHash"])
    except (KeyError, TypeError, ValueError) as exc:
        raise invalid(f"bundle.json's model is malformed: {exc!r}") from None
    if link is not None and manifest_model is not None:
        if (family, args) != (manifest_model["family"], manifest_model["args"]):
            raise invalid("bundle.json's model family or args are not the training claim's")
        if stated != link.final_weights_hash:
            raise invalid("bundle.json's model finalWeightsHash is not the training claim's")
        return
    try:
        got, _ = onnx_weights_hash(onnx_path, family, args)
    except (ExportError, KeyError, TypeError, ValueError) as exc:
        raise invalid(f"bundle.json's model is not a {family[:40]} model: {exc}") from None
    if got != stated:
        raise invalid("bundle.json's model finalWeightsHash is not the hash of the ONNX weights")


def _check_evm_verifier(claim: ClaimDigests, vk_path: Path, settings_path: Path, srs_path: Path, tmp: Path) -> None:
    """For on-chain claims: the claim's vkHash must be the code hash of the verifier ezkl renders for this vk
    (compiled here with the project's solc and settings), so the on-chain check used exactly this vk."""
    from registry.zk.evm import code_hash, verifier_for
    from registry.zk.pipeline import ZkError

    try:
        _, compiled = verifier_for(vk_path, settings_path, srs_path, tmp)
    except ZkError as exc:
        raise unavailable(f"cannot build the EVM verifier to check the claim's code hash: {exc}") from None
    if code_hash(compiled.deployed_bytecode) != claim.vk_hash:
        raise invalid("the claim's vkHash is neither sha256(vk.key) nor the code hash of the vk's EVM verifier")


def _link_weights(link: ModelLink, onnx_path: Path, own_onnx: Path) -> dict[str, Any]:
    """Checks the ONNX weights against the training claim; writes the verifier's own export of the family.
    Returns the manifest's model spec ({"family", "args"})."""
    from registry.pol.checkpoint import TranscriptError
    from registry.pol.transcript import validate_manifest
    from registry.zk.export import (
        ExportError,
        export_onnx,
        family_input_shape,
        model_from_weights,
        onnx_weights_hash,
    )

    raw = link.manifest()
    try:
        manifest = validate_manifest(loads(raw, what="training claim manifest", max_bytes=MAX_JSON_BYTES))
    except (TranscriptError, ValueError) as exc:
        raise invalid(f"training claim manifest: {exc}") from None
    if as_hash(manifest["finalWeightsHash"]) != link.final_weights_hash or \
            as_hash(manifest["configHash"]) != link.config_hash:
        raise invalid("the training claim's manifest differs from the claim (finalWeightsHash or configHash)")
    try:
        spec = manifest["config"]["model"]
        family, args = str(spec["family"]), dict(spec["args"])
        if manifest["config"].get("dtype", "float32") != "float32":
            raise invalid("only float32 models can be linked")
        got, weights = onnx_weights_hash(onnx_path, family, args)
    except ExportError as exc:
        raise invalid(f"the bundle's ONNX is not a {manifest['config']['model'].get('family')} model "
                      f"of the training claim: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise invalid(f"training claim config: {exc!r}") from None
    if got != link.final_weights_hash:
        raise invalid(f"the ONNX weights hash to {to_hex(got)}, not the training claim's finalWeightsHash "
                      f"{to_hex(link.final_weights_hash)}")
    try:
        export_onnx(model_from_weights(family, args, weights), family_input_shape(family, args), own_onnx)
    except ExportError as exc:
        raise invalid(str(exc)) from None
    return {"family": family, "args": args}


def _own_circuit_hashes(onnx_path: Path, settings_path: Path, input_path: Path | None, tmp: Path) -> dict[str, Any]:
    """Compiles the verifier's own circuit and runs it on input.json (or zeros): Poseidon hashes and outputs."""
    import ezkl

    from registry.zk.bundle import BundleError, field_element
    from registry.zk.export import ExportError, input_json, onnx_input_shape, read_input
    from registry.zk.pipeline import ZkError, call_ezkl

    compiled = tmp / "own.compiled"
    try:
        shape = onnx_input_shape(onnx_path)
        values: Any = read_input(input_path) if input_path is not None else [0.0] * _prod(list(shape))
        data = tmp / "own-input.json"
        import json

        data.write_text(json.dumps(input_json(values, shape)))
        call_ezkl("compile_circuit", ezkl.compile_circuit, str(onnx_path), str(compiled), str(settings_path))
        witness = tmp / "own-witness.json"
        call_ezkl("gen_witness", ezkl.gen_witness, str(data), str(compiled), str(witness))
        w = loads(read_bounded(witness, MAX_FILE_BYTES), what="witness", max_bytes=MAX_FILE_BYTES)
        return {"params": field_element(w["processed_params"]["poseidon_hash"][0]),
                "input": field_element(w["processed_inputs"]["poseidon_hash"][0]),
                "outputs": [field_element(v) for col in w["outputs"] for v in col]}
    except (ZkError, ExportError, BundleError, JsonError, KeyError, TypeError, ValueError) as exc:
        raise invalid(f"the model does not compile with the bundle's settings: {exc}") from None


def _own_vk_hash(tmp: Path, srs_path: Path, settings_path: Path, onnx_path: Path, cache_dir: Path) -> bytes:
    """sha256 of the vk that `setup` gives for the verifier's own circuit, cached by (ONNX, settings, SRS)."""
    import ezkl

    from registry.core.hashing import sha256_file
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
        raise invalid(f"setup of the model's circuit failed: {exc}") from None
    digest = hashlib.sha256((tmp / "own-vk.key").read_bytes()).digest()
    (tmp / "own-pk.key").unlink(missing_ok=True)
    entry.parent.mkdir(parents=True, exist_ok=True)
    staged = entry.with_suffix(f".{os.getpid()}.tmp")
    staged.write_text(digest.hex() + "\n")
    os.replace(staged, entry)
    return digest
