"""The inference bundle (an IPFS directory) and the digests an inference claim commits (SPEC section 2).

Digests, precisely:
- `vkHash`        = sha256(bytes of `vk.key`), the file ezkl's `setup` writes.
- `proofDigest`   = keccak256(raw proof bytes): `proof.json`'s `proof` byte array (= its `hex_proof`), the bytes
                    an EVM verifier takes as its `proof` argument.
- `instancesHash` = keccak256(abi.encode(uint256[] instances)): every public instance of `proof.json`, column
                    after column, each field element as a uint256 (ezkl stores them as 32-byte little-endian
                    hex). The same array is the EVM verifier's `instances` argument, so the contract can
                    recompute both digests from the calldata it verifies.
With the project's visibility the instances are `[input hash, params hash, output...]` (`registry.zk.pipeline`).

Layout of the bundle directory::

    bundle.json       format "proofreg-zk-bundle/1": digests, SRS description, files, model link, output
    proof.json        ezkl proof (instances inside)
    vk.key            verification key
    settings.json     circuit settings (visibility, scales, logrows)
    model.compiled    compiled circuit
    model.onnx        the model
    input.json        the input (absent with --private-input; its Poseidon hash is the first instance)
    dev-srs.srs       only for development bundles: the locally generated SRS (unsound; never in production)

`developmentOnly: true` in bundle.json marks everything made with a development SRS.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi import encode as abi_encode

from registry.core.hashing import as_hash, keccak256, sha256, to_hex
from registry.core.safejson import JsonError, loads, read_bounded

BUNDLE_FORMAT = "proofreg-zk-bundle/1"
BUNDLE_JSON = "bundle.json"
FILES = {"proof": "proof.json", "vk": "vk.key", "settings": "settings.json", "circuit": "model.compiled",
         "onnx": "model.onnx"}
INPUT_FILE = "input.json"
DEV_SRS_FILE = "dev-srs.srs"
FIELD_MODULUS = 0x30644E72E131A029B85045B68181585D2833E84879B9709143E1F593F0000001
MAX_INSTANCES = 1 << 16
MAX_JSON_BYTES = 64 << 20
MAX_FILE_BYTES = 512 << 20
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class BundleError(ValueError):
    """A bundle or proof file that is malformed; one-line message."""


def check_file_name(name: Any) -> str:
    """A bundle file name: one plain path component (no '/', no '..', not absolute, no leading dot)."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise BundleError(f"bundle file name {str(name)[:80]!r} is not a plain file name inside the bundle")
    return name


def read_file(folder: str | Path, name: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """A file of a local bundle: a plain name, a regular file (never a symlink or a device), bounded."""
    try:
        return read_bounded(Path(folder) / check_file_name(name), max_bytes, what=name, follow_symlinks=False)
    except JsonError as exc:
        raise BundleError(f"bundle {exc}") from None


def parse_proof(proof_json: bytes | str | dict[str, Any]) -> tuple[bytes, list[int]]:
    """(raw proof bytes, flat instances as ints) of an ezkl `proof.json` (bytes are parsed with safejson)."""
    try:
        data = loads(proof_json, what="proof.json", max_bytes=MAX_JSON_BYTES) \
            if isinstance(proof_json, bytes | str) else proof_json
        if not isinstance(data, dict):
            raise BundleError("proof.json is not a JSON object")
        raw = data["proof"]
        if isinstance(raw, str):
            proof = bytes.fromhex(raw.removeprefix("0x"))
        else:
            if not isinstance(raw, list) or not all(isinstance(b, int) and 0 <= b < 256 for b in raw):
                raise BundleError("proof.json 'proof' is not a byte array")
            proof = bytes(raw)
        hex_proof = data.get("hex_proof")
        if isinstance(hex_proof, str) and bytes.fromhex(hex_proof.removeprefix("0x")) != proof:
            raise BundleError("proof.json 'hex_proof' disagrees with 'proof'")
        columns = data["instances"]
        if not isinstance(columns, list) or not all(isinstance(c, list) for c in columns):
            raise BundleError("proof.json 'instances' is not a list of columns")
        instances = [field_element(v) for col in columns for v in col]
    except BundleError:
        raise
    except JsonError as exc:
        raise BundleError(str(exc)) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"proof.json is malformed: {exc!r}") from None
    if not proof:
        raise BundleError("proof.json holds an empty proof")
    if len(instances) > MAX_INSTANCES:
        raise BundleError(f"proof.json has {len(instances)} instances, over {MAX_INSTANCES}")
    return proof, instances


def field_element(value: Any) -> int:
    """An ezkl field element (64 hex chars, little-endian) as an int below the BN254 scalar modulus."""
    if not isinstance(value, str) or len(value.removeprefix("0x")) != 64:
        raise BundleError(f"instance {value!r} is not a 32-byte hex field element")
    n = int.from_bytes(bytes.fromhex(value.removeprefix("0x")), "little")
    if n >= FIELD_MODULUS:
        raise BundleError("instance is not a reduced field element")
    return n


def proof_digest(proof: bytes) -> bytes:
    return keccak256(proof)


def instances_hash(instances: list[int]) -> bytes:
    return keccak256(abi_encode(["uint256[]"], [instances]))


def vk_hash(vk: bytes) -> bytes:
    return sha256(vk)


@dataclass(frozen=True)
class Digests:
    """The three digests of an inference claim."""

    vk_hash: bytes
    proof_digest: bytes
    instances_hash: bytes

    def to_json(self) -> dict[str, str]:
        return {"vkHash": to_hex(self.vk_hash), "proofDigest": to_hex(self.proof_digest),
                "instancesHash": to_hex(self.instances_hash)}

    @classmethod
    def of(cls, vk: bytes, proof_json: bytes) -> Digests:
        proof, instances = parse_proof(proof_json)
        return cls(vk_hash(vk), proof_digest(proof), instances_hash(instances))


def write_bundle(out_dir: str | Path, *, proof_path: Path, vk_path: Path, settings_path: Path,
                 compiled_path: Path, onnx_path: Path, input_path: Path | None, dev_srs_path: Path | None,
                 meta: dict[str, Any]) -> dict[str, Any]:
    """Writes the bundle directory (which must not exist or be empty); returns bundle.json's content."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out} is not empty: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    sources = {FILES["proof"]: proof_path, FILES["vk"]: vk_path, FILES["settings"]: settings_path,
               FILES["circuit"]: compiled_path, FILES["onnx"]: onnx_path}
    if input_path is not None:
        sources[INPUT_FILE] = input_path
    if dev_srs_path is not None:
        sources[DEV_SRS_FILE] = dev_srs_path
    for name, src in sources.items():
        shutil.copyfile(src, out / name)
    vk = (out / FILES["vk"]).read_bytes()
    proof_json = (out / FILES["proof"]).read_bytes()
    proof, instances = parse_proof(proof_json)
    digests = Digests.of(vk, proof_json)
    body = {
        "format": BUNDLE_FORMAT,
        **digests.to_json(),
        "instances": [to_hex(i.to_bytes(32, "big")) for i in instances],
        "proofBytes": len(proof),
        "files": {name: to_hex(sha256((out / name).read_bytes())) for name in sorted(sources)},
        **meta,
    }
    (out / BUNDLE_JSON).write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
    return body


def read_bundle_json(data: bytes) -> dict[str, Any]:
    """Parses and shape-checks bundle.json (hostile input)."""
    try:
        body = loads(data, what="bundle.json", max_bytes=MAX_JSON_BYTES)
    except JsonError as exc:
        raise BundleError(str(exc)) from None
    if not isinstance(body, dict) or body.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"bundle.json format is not {BUNDLE_FORMAT!r}")
    try:
        for key in ("vkHash", "proofDigest", "instancesHash"):
            as_hash(body[key])
        if not isinstance(body.get("files"), dict) or not isinstance(body.get("srs"), dict):
            raise BundleError("bundle.json lacks files or srs")
        for name, digest in body["files"].items():
            check_file_name(name)
            as_hash(digest)
        int(body["srs"]["logrows"])
    except BundleError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"bundle.json is malformed: {exc!r}") from None
    return body


def load_local_bundle(bundle_dir: str | Path) -> tuple[dict[str, Any], Digests]:
    """bundle.json of a local bundle and the digests recomputed from its files (checked against bundle.json)."""
    d = Path(bundle_dir)
    body = read_bundle_json(read_file(d, BUNDLE_JSON, MAX_JSON_BYTES))
    digests = Digests.of(read_file(d, FILES["vk"]), read_file(d, FILES["proof"], MAX_JSON_BYTES))
    for name, expected in body["files"].items():
        if to_hex(sha256(read_file(d, name))) != str(expected).lower():
            raise BundleError(f"{name} does not match its sha256 in bundle.json")
    if digests.to_json() != {k: body[k] for k in ("vkHash", "proofDigest", "instancesHash")}:
        raise BundleError("bundle.json digests differ from its files")
    return body, digests
