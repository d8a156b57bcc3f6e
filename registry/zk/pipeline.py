"""The ezkl proving pipeline (settings, calibration, compile, setup, witness, prove) with a per-model cache.

Visibility is fixed so that a proof binds what an inference claim is about (SPEC section 2):
- parameters `hashed` — the circuit takes the weights as private witnesses and exposes their Poseidon hash,
  so one verification key serves any weights of one architecture, and the hash instance pins the weights;
- input `hashed` — the "input commitment" of the SPEC (the input itself may stay private);
- output `public`.
ezkl then orders the public instances as `[input hash, params hash, output...]` (`PARAMS_HASH_INDEX`).

Cache (default `$PROOFREG_HOME/zk-cache`), so a second proof of the same model skips calibration and setup:
    circuits/<circuit key>/   settings.json, model.compiled     key: sha256(ONNX bytes, options, ezkl version)
    keys/<keys key>/          vk.key, pk.key                     key: sha256(circuit key, SRS sha256)
    dev-srs/kzg<k>.srs        development SRS files made by `gen_srs`, one per logrows
Entries are written in a staging folder and renamed into place, so a crash never leaves half an entry.

SRS: a file the user passes (a public ceremony's, e.g. `kzg15.srs`), or a development SRS generated here.
Whoever generated an SRS can forge proofs with it, so everything made with a development SRS is marked
`developmentOnly`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from registry.core.hashing import canonical_json, sha256_file

T = TypeVar("T")

VISIBILITY = {"input": "hashed", "param": "hashed", "output": "public"}
#: Position of the Poseidon hash of the parameters among the proof's public instances (see module docstring).
PARAMS_HASH_INDEX = 1
INPUT_HASH_INDEX = 0
MAX_LOGROWS = 26
CACHE_FORMAT = "proofreg-zk-cache/1"


class ZkError(RuntimeError):
    """A proving or verification step that failed; the message is one line."""


def ezkl_version() -> str:
    try:
        from importlib.metadata import version

        return version("ezkl")
    except Exception:  # noqa: BLE001 - metadata lookup failing only loses an informational string
        return "unknown"


@contextlib.contextmanager
def stdout_to_stderr(capture: Path | None = None) -> Iterator[None]:
    """ezkl's Rust code prints tables to file descriptor 1; keep stdout clean for `--json` results (to stderr).
    With `capture`, both descriptors 1 and 2 go into that file instead: calibrate_settings writes its numerical
    fidelity table straight to descriptor 2, and it is a report to keep beside the settings, not a warning."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    fds = [fd] + ([2] if capture is not None else [])
    saved = [os.dup(f) for f in fds]
    try:
        if capture is not None:
            target = os.open(capture, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            for f in fds:
                os.dup2(target, f)
            os.close(target)
        else:
            os.dup2(sys.stderr.fileno() if _has_fileno(sys.stderr) else os.open(os.devnull, os.O_WRONLY), fd)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for f, s in zip(fds, saved, strict=True):
            os.dup2(s, f)
            os.close(s)


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


class _CalibrationTable(logging.Filter):
    """Drops the table of per-scale errors that ezkl's calibrate_settings logs as a WARNING (a report, not a
    warning: the chosen settings are in settings.json); ezkl's other warnings pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "┌" not in record.getMessage() and record.getMessage().strip() != ""


def quiet_ezkl_logs() -> None:
    """ezkl's Rust logs reach Python's `logging` (pyo3-log), and Python prints WARNINGs with no handler set.
    Two are noise for this project, silenced at their loggers: tract's "ONNX operator set is 20, tract is only
    tested against operator set 9" (the project exports opset 20 on purpose: ezkl's supported path, covered by
    the tests), and the calibration table. Idempotent."""
    logging.getLogger("tract_onnx").setLevel(logging.ERROR)
    execute = logging.getLogger("ezkl.execute")
    if not any(isinstance(f, _CalibrationTable) for f in execute.filters):
        execute.addFilter(_CalibrationTable())


def call_ezkl(what: str, fn: Callable[..., T], *args: Any, capture_stdout: Path | None = None, **kwargs: Any) -> T:
    """Runs one ezkl call; turns its exceptions (including Rust panics, which are BaseException) into ZkError.
    `capture_stdout`: a file for what ezkl prints (calibration's numerical fidelity report)."""
    quiet_ezkl_logs()
    try:
        with stdout_to_stderr(capture_stdout):
            return fn(*args, **kwargs)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - pyo3 panics derive from BaseException
        text = str(exc).strip().splitlines()
        raise ZkError(f"ezkl {what} failed: {text[-1] if text else type(exc).__name__}") from None


# ---------------------------------------------------------------------------------------------------------
# SRS
# ---------------------------------------------------------------------------------------------------------


def srs_logrows(path: str | Path) -> int:
    """The logrows k of a halo2 KZG SRS file (its first 4 bytes, little-endian u32)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise ZkError(f"cannot read SRS {path}: {exc}") from None
    if len(head) != 4:
        raise ZkError(f"{path} is not an SRS file (too short)")
    (k,) = struct.unpack("<I", head)
    if not 1 <= k <= 28:
        raise ZkError(f"{path} is not a KZG SRS file (header k={k})")
    return int(k)


@dataclass(frozen=True)
class Srs:
    """An SRS file and what it is: `dev` means generated locally (unsound, development only)."""

    path: Path
    logrows: int
    sha256: str
    dev: bool

    def to_json(self) -> dict[str, Any]:
        return {"logrows": self.logrows, "sha256": self.sha256, "developmentOnly": self.dev,
                "source": "generated locally by ezkl gen_srs (development only)" if self.dev else "file"}


def user_srs(path: str | Path, cache_dir: str | Path | None = None) -> Srs:
    """A ceremony SRS file; its sha256 is remembered in the cache by (path, size, mtime), since ceremony files
    for large logrows are hundreds of MB and a warm proof should not re-hash them."""
    p = Path(path)
    return Srs(p, srs_logrows(p), _srs_sha256(p, cache_dir), dev=False)


def _srs_sha256(path: Path, cache_dir: str | Path | None) -> str:
    st = path.stat()
    key = _sha(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    memo = Path(cache_dir) / "srs-sha256" / key if cache_dir is not None else None
    if memo is not None and memo.is_file():
        return memo.read_text().strip()
    digest = sha256_file(path).hex()
    if memo is not None:
        memo.parent.mkdir(parents=True, exist_ok=True)
        staged = memo.with_suffix(f".{os.getpid()}.tmp")
        staged.write_text(digest + "\n")
        os.replace(staged, memo)
    return digest


def dev_srs(cache_dir: str | Path, logrows: int) -> Srs:
    """A development SRS for `logrows`, generated once per cache (`gen_srs` takes seconds to minutes)."""
    if not 1 <= logrows <= MAX_LOGROWS:
        raise ZkError(f"logrows {logrows} is out of range")
    import ezkl

    folder = Path(cache_dir) / "dev-srs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"kzg{logrows}.srs"
    if not path.is_file():
        tmp = folder / f".kzg{logrows}.{os.getpid()}.tmp"
        call_ezkl("gen_srs", ezkl.gen_srs, str(tmp), logrows)
        os.replace(tmp, path)
    return Srs(path, logrows, sha256_file(path).hex(), dev=True)


# ---------------------------------------------------------------------------------------------------------
# Circuits and keys
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProveOptions:
    """What shapes the circuit besides the model: calibration target and scales, logrows bound, and the range
    check decomposition. ezkl's default decomposition (base 2^14, 2 legs) needs a 2^14-row lookup table, so
    circuits start at logrows 15; base 1024 with 3 legs lets tiny models fit logrows 12-13 (4-8x faster)."""

    calibration_target: str = "resources"
    scales: tuple[int, ...] | None = None
    max_logrows: int | None = None
    decomp_base: int | None = None
    decomp_legs: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"calibrationTarget": self.calibration_target,
                "scales": list(self.scales) if self.scales else None, "maxLogrows": self.max_logrows,
                "decompBase": self.decomp_base, "decompLegs": self.decomp_legs, "visibility": VISIBILITY}


#: Small and fast: what the tests and the benchmark use for their tiny models.
SMALL = ProveOptions(scales=(7,), decomp_base=1024, decomp_legs=3)


def run_args(options: ProveOptions | None = None) -> Any:
    import ezkl

    ra: Any = ezkl.PyRunArgs()
    ra.input_visibility = VISIBILITY["input"]
    ra.param_visibility = VISIBILITY["param"]
    ra.output_visibility = VISIBILITY["output"]
    if options is not None and options.decomp_base:
        ra.decomp_base = options.decomp_base
    if options is not None and options.decomp_legs:
        ra.decomp_legs = options.decomp_legs
    return ra


def check_visibility(settings: dict[str, Any]) -> None:
    """Refuses settings whose visibility does not bind input, weights and output the way claims need."""
    try:
        ra = settings["run_args"]
        params = ra["param_visibility"]
        ok = (ra["input_visibility"] == "Hashed" or (isinstance(ra["input_visibility"], dict)
                                                     and "Hashed" in ra["input_visibility"]))
        ok = ok and isinstance(params, dict) and params.get("Hashed", {}).get("hash_is_public") is True
        ok = ok and ra["output_visibility"] == "Public"
        logrows = int(ra["logrows"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ZkError(f"settings are malformed: {exc!r}") from None
    if not ok:
        raise ZkError("settings must use hashed input, hashed (public hash) parameters and public output")
    if not 1 <= logrows <= MAX_LOGROWS:
        raise ZkError(f"settings logrows {logrows} is out of range")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def _staging(final: Path) -> Iterator[Path]:
    """A staging folder beside `final`, renamed into place on success (another process may win the race)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Circuit:
    """A compiled circuit in the cache: `settings.json` and `model.compiled` for one ONNX file and options."""

    key: str
    folder: Path
    onnx_sha256: str
    cached: bool

    @property
    def settings_path(self) -> Path:
        return self.folder / "settings.json"

    @property
    def compiled_path(self) -> Path:
        return self.folder / "model.compiled"

    @property
    def settings(self) -> dict[str, Any]:
        from registry.core.safejson import load_file

        data: dict[str, Any] = load_file(self.settings_path)
        return data

    @property
    def logrows(self) -> int:
        return int(self.settings["run_args"]["logrows"])


def circuit_key(onnx_bytes: bytes, options: ProveOptions) -> str:
    return _sha(b"proofreg-zk-circuit/1\0" + hashlib.sha256(onnx_bytes).digest() + b"\0"
                + canonical_json({"options": options.to_json(), "ezkl": ezkl_version()}))


def build_circuit(onnx_path: str | Path, calibration_input: Path, cache_dir: str | Path,
                  options: ProveOptions | None = None, timings: dict[str, float] | None = None) -> Circuit:
    """Settings (calibrated on `calibration_input`, an ezkl input JSON) and compiled circuit, cached."""
    import ezkl

    options = options or ProveOptions()
    onnx_bytes = Path(onnx_path).read_bytes()
    key = circuit_key(onnx_bytes, options)
    folder = Path(cache_dir) / "circuits" / key
    if (folder / "model.compiled").is_file():
        return Circuit(key, folder, _sha(onnx_bytes), cached=True)
    t = timings if timings is not None else {}
    with _staging(folder) as tmp:
        onnx_copy = tmp / "model.onnx"
        onnx_copy.write_bytes(onnx_bytes)
        settings = tmp / "settings.json"
        start = time.perf_counter()
        call_ezkl("gen_settings", ezkl.gen_settings, str(onnx_copy), str(settings), py_run_args=run_args(options))
        kwargs: dict[str, Any] = {}
        if options.scales:
            kwargs["scales"] = list(options.scales)
        if options.max_logrows:
            kwargs["max_logrows"] = options.max_logrows
        call_ezkl("calibrate_settings", ezkl.calibrate_settings, str(calibration_input), str(onnx_copy),
                  str(settings), options.calibration_target, capture_stdout=tmp / "calibration-report.txt", **kwargs)
        t["calibrate"] = time.perf_counter() - start
        from registry.core.safejson import load_file

        check_visibility(load_file(settings))
        start = time.perf_counter()
        call_ezkl("compile_circuit", ezkl.compile_circuit, str(onnx_copy), str(tmp / "model.compiled"), str(settings))
        t["compile"] = time.perf_counter() - start
    return Circuit(key, folder, _sha(onnx_bytes), cached=False)


@dataclass
class Keys:
    folder: Path
    cached: bool

    @property
    def vk_path(self) -> Path:
        return self.folder / "vk.key"

    @property
    def pk_path(self) -> Path:
        return self.folder / "pk.key"


def setup_keys(circuit: Circuit, srs: Srs, cache_dir: str | Path, timings: dict[str, float] | None = None) -> Keys:
    """Proving and verification keys of a circuit under an SRS; `ezkl.setup` runs only on a cache miss."""
    import ezkl

    if srs.logrows < circuit.logrows:
        raise ZkError(f"the SRS has logrows {srs.logrows}, the circuit needs {circuit.logrows}: pass a larger SRS")
    key = _sha(f"proofreg-zk-keys/1\0{circuit.key}\0{srs.sha256}".encode())
    folder = Path(cache_dir) / "keys" / key
    if (folder / "pk.key").is_file() and (folder / "vk.key").is_file():
        return Keys(folder, cached=True)
    with _staging(folder) as tmp:
        start = time.perf_counter()
        call_ezkl("setup", ezkl.setup, str(circuit.compiled_path), str(tmp / "vk.key"), str(tmp / "pk.key"),
                  srs_path=str(srs.path))
        if timings is not None:
            timings["setup"] = time.perf_counter() - start
    return Keys(folder, cached=False)


# ---------------------------------------------------------------------------------------------------------
# Proving
# ---------------------------------------------------------------------------------------------------------


@dataclass
class ProofRun:
    """Everything one proof produced, in `workdir`, plus which cached pieces were reused."""

    workdir: Path
    onnx_path: Path
    input_path: Path
    witness_path: Path
    proof_path: Path
    circuit: Circuit
    keys: Keys
    srs: Srs
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def setup_skipped(self) -> bool:
        return self.keys.cached


def prove(onnx_path: str | Path, input_data: dict[str, Any], workdir: str | Path, *, srs_path: str | Path | None,
          dev: bool = False, cache_dir: str | Path, options: ProveOptions | None = None) -> ProofRun:
    """Proves one inference of `onnx_path` on `input_data` (ezkl input JSON) into `workdir`.

    Either `srs_path` (a ceremony file) or `dev=True` (a locally generated, development-only SRS)."""
    import ezkl

    if (srs_path is None) == (not dev):
        raise ZkError("give an SRS file or ask for a development SRS, not both or neither")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    onnx_copy = work / "model.onnx"
    if Path(onnx_path).resolve() != onnx_copy.resolve():
        shutil.copyfile(onnx_path, onnx_copy)
    input_path = work / "input.json"
    input_path.write_text(json.dumps(input_data))
    circuit = build_circuit(onnx_copy, input_path, cache_dir, options, timings)
    srs = dev_srs(cache_dir, circuit.logrows) if dev else user_srs(Path(str(srs_path)), cache_dir)
    keys = setup_keys(circuit, srs, cache_dir, timings)
    witness = work / "witness.json"
    start = time.perf_counter()
    call_ezkl("gen_witness", ezkl.gen_witness, str(input_path), str(circuit.compiled_path), str(witness))
    timings["witness"] = time.perf_counter() - start
    proof = work / "proof.json"
    start = time.perf_counter()
    call_ezkl("prove", ezkl.prove, str(witness), str(circuit.compiled_path), str(keys.pk_path), str(proof),
              srs_path=str(srs.path))
    timings["prove"] = time.perf_counter() - start
    return ProofRun(work, onnx_copy, input_path, witness, proof, circuit, keys, srs, timings)


def verify_proof(proof_path: str | Path, settings_path: str | Path, vk_path: str | Path, srs_path: str | Path) -> bool:
    """ezkl's verifier; False (not an exception) when the proof does not verify."""
    import ezkl

    try:
        return bool(call_ezkl("verify", ezkl.verify, str(proof_path), str(settings_path), str(vk_path),
                              srs_path=str(srs_path)))
    except ZkError:
        return False
