"""The verifier's segment re-execution engine (SPEC sections 3, 5 and 6).

Given a transcript (a CID in a content store, or a local directory) and segment indices, it:

1. fetches `manifest.json` only, validates it (canonical paths, step ranges, every digest recomputed) and ties
   it to the claim (segmentRoot, chainHead, finalWeightsHash, datasetRoot, configHash, N, k);
2. adds the policy's segments: further draws by the contract's rule when the challenge seed is known, and the
   top-Q largest updates of every epoch (by the manifest's `updateNorm`, which is re-checked from the two
   checkpoints of every audited segment, so understating a norm is caught whenever that segment is audited);
3. verifies each audited segment's leaf against the claim's `segmentRoot` with its Merkle proof
   (`registry.merkle`, the one implementation);
4. checks initialization: checkpoint 0 must be step 0 with an empty optimizer state, and either equal to the
   family re-initialized with the config's `seed` (when the config records one and it reproduces), or pass a
   Kolmogorov–Smirnov test per tensor against the family's declared initializer (`registry.models`);
5. per segment, fetches only checkpoint i, checkpoint i+1, the batch file and the dataset shards holding its
   examples (the next segment's files are fetched by a background thread while the current one replays),
   checks every file against its manifest hash, proves every replayed example against `datasetRoot`,
   replays the k steps (`registry.pol.replay`, on CUDA when asked and available) and measures ρ, L∞ and
   cosine distance against checkpoint i+1; the recorded update norm must match the checkpoints', and the
   last checkpoint's weights must hash to `finalWeightsHash`.

Hostile input never crashes it and never runs code: checkpoints are parsed as safetensors after a bounded
header check, batch files and shards with `np.load(allow_pickle=False)`, paths are the manifest's canonical
ones and a local directory's files must not resolve outside it, and every file has a size limit. Evidence
that cannot be fetched gives `Unavailable`; evidence that contradicts the claim gives `Invalid`.
"""

from __future__ import annotations

import json
import math
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from registry.datasets import MANIFEST_NAME as DATASET_MANIFEST
from registry.datasets import Dataset, DatasetError, example_hash
from registry.hashing import as_hash, sha256, to_hex, weights_hash
from registry.merkle import example_leaf, hash_pair, segment_leaf, verify
from registry.models import Constant as ConstantInit
from registry.models import ModelFamilyError, UnknownFamilyError, build_model, init_spec, ks_pvalue, ks_statistic
from registry.pol.checkpoint import Checkpoint, TranscriptError, decode_checkpoint
from registry.pol.config import rebuild_model
from registry.pol.recorder import update_norm
from registry.pol.replay import parameter_names, replay_segment, segment_distance
from registry.pol.rng import GLOBAL_RNG_LOCK
from registry.pol.transcript import MANIFEST_NAME, parse_batches, segment_tree, validate_manifest
from registry.sampling import segment_at
from registry.store.base import ContentStore, InvalidPath, StoreError, split_path
from verifier.policy import TolerancePolicy, get_policy
from verifier.report import (
    INVALID,
    UNAVAILABLE,
    VALID,
    AuditReport,
    SegmentResult,
    TrainingClaimFields,
)


class EvidenceUnavailable(Exception):
    """A file the audit needs could not be fetched (store down, block or file missing)."""


@dataclass(frozen=True)
class Limits:
    """Largest files the engine reads: a hostile transcript cannot make a verifier read without bound."""

    max_manifest_bytes: int = 64 << 20
    max_dataset_manifest_bytes: int = 512 << 20
    max_file_bytes: int = 8 << 30


# ---------------------------------------------------------------------------------------------------------
# Where the evidence comes from
# ---------------------------------------------------------------------------------------------------------


class Source:
    """Files of one directory (a transcript or a dataset), read whole with a size limit, bytes counted."""

    label = ""

    def __init__(self) -> None:
        self.bytes_read = 0
        self.files: dict[str, int] = {}
        self._lock = threading.Lock()

    def read(self, rel: str, limit: int) -> bytes:
        try:
            split_path(rel)
        except InvalidPath as exc:
            raise TranscriptError(f"path {rel!r} escapes the directory: {exc}") from None
        data = self._read(rel, limit)
        if len(data) > limit:
            raise TranscriptError(f"{rel} is larger than the limit of {limit} bytes")
        with self._lock:
            self.bytes_read += len(data)
            self.files[rel] = len(data)
        return data

    def _read(self, rel: str, limit: int) -> bytes:
        raise NotImplementedError


class StoreSource(Source):
    """A directory in a content store, by CID; reads only the blocks of the files asked for."""

    def __init__(self, store: ContentStore, cid: str) -> None:
        super().__init__()
        self.store, self.cid, self.label = store, cid, cid

    def _read(self, rel: str, limit: int) -> bytes:
        try:
            return self.store.cat(f"{self.cid}/{rel}", 0, limit + 1)
        except StoreError as exc:
            raise EvidenceUnavailable(f"{rel}: {exc}") from None


class DirSource(Source):
    """A local directory; a file (or symlink) that resolves outside it is refused, not followed."""

    def __init__(self, root: str | Path) -> None:
        super().__init__()
        self.root = Path(root)
        self.label = str(root)

    def _read(self, rel: str, limit: int) -> bytes:
        try:
            base = self.root.resolve(strict=True)
            path = (self.root / rel).resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise EvidenceUnavailable(f"{rel}: missing from {self.root} ({exc.__class__.__name__})") from None
        if not path.is_relative_to(base):
            raise TranscriptError(f"{rel} resolves outside the transcript directory")
        if not path.is_file():
            raise TranscriptError(f"{rel} is not a regular file")
        if path.stat().st_size > limit:
            raise TranscriptError(f"{rel} is larger than the limit of {limit} bytes")
        try:
            with open(path, "rb") as f:
                return f.read(limit + 1)
        except OSError as exc:
            raise EvidenceUnavailable(f"{rel}: {exc}") from None


# ---------------------------------------------------------------------------------------------------------
# Planning: which segments
# ---------------------------------------------------------------------------------------------------------


def top_q_segments(manifest: dict[str, Any], q: int) -> list[int]:
    """The Q segments of every epoch with the largest recorded update norm (ties: lower index first)."""
    if q <= 0:
        return []
    by_epoch: dict[int, list[tuple[float, int]]] = {}
    for s in manifest["segments"]:
        by_epoch.setdefault(int(s["epoch"]), []).append((-float(s["updateNorm"]), int(s["index"])))
    out: list[int] = []
    for epoch in sorted(by_epoch):
        out += [i for _, i in sorted(by_epoch[epoch])[:q]]
    return sorted(out)


def extra_draws(seed: bytes | None, first: int, count: int, num_segments: int) -> list[int]:
    """The contract's draw rule continued: j = first .. first+count−1 (SPEC 5, `registry.sampling`)."""
    if seed is None or count <= 0:
        return []
    return [segment_at(seed, j, num_segments) for j in range(first, first + count)]


def _check_segment_fields(manifest: dict[str, Any]) -> None:
    """The manifest fields `validate_manifest` leaves to the verifier: per-segment epoch and update norm."""
    for s in manifest["segments"]:
        norm, epoch = s.get("updateNorm"), s.get("epoch")
        if isinstance(norm, bool) or not isinstance(norm, int | float) or not math.isfinite(norm) or norm < 0:
            raise TranscriptError(f"manifest segment {s['index']} has a bad updateNorm {norm!r}")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise TranscriptError(f"manifest segment {s['index']} has a bad epoch {epoch!r}")


def _is_hex32(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 66


def _check_dataset_digests(raw: bytes) -> None:
    """Every digest in dataset.json must be 0x-hex text before `Dataset.load` turns them into bytes (an int
    there would make `as_hash` allocate that many bytes)."""
    try:
        d = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise DatasetError(f"dataset.json is not JSON: {exc}") from None
    ok = isinstance(d, dict) and _is_hex32(d.get("datasetRoot")) and isinstance(d.get("examples"), list) \
        and isinstance(d.get("shards"), list)
    ok = ok and all(isinstance(e, list) and len(e) == 3 and _is_hex32(e[2]) for e in d["examples"])
    ok = ok and all(isinstance(s, dict) and _is_hex32(s.get("featuresHash")) and _is_hex32(s.get("labelsHash"))
                    for s in d["shards"])
    if not ok:
        raise DatasetError("dataset.json is malformed (digests must be 0x-prefixed 32-byte hex strings)")


def check_manifest_against_claim(m: dict[str, Any], claim: TrainingClaimFields) -> str | None:
    pairs = [("segmentRoot", claim.segment_root), ("chainHead", claim.chain_head),
             ("finalWeightsHash", claim.final_weights_hash), ("configHash", claim.config_hash)]
    for key, value in pairs:
        if as_hash(m[key]) != value:
            return f"manifest {key} {m[key]} differs from the claim's {to_hex(value)}"
    if as_hash(m["dataset"]["datasetRoot"]) != claim.dataset_root:
        return "manifest datasetRoot differs from the claim's"
    if int(m["numSegments"]) != claim.num_segments or int(m["stepsPerSegment"]) != claim.steps_per_segment:
        return "manifest segment count or steps per segment differ from the claim's"
    return None


def verify_segment_proofs(manifest: dict[str, Any], segment_root: bytes, segments: Iterable[int]) -> list[int]:
    """Segments whose leaf (i, ckptHash_i, ckptHash_{i+1}, batchesHash_i) does not verify against
    `segment_root` with its Merkle proof from the manifest's tree; empty when all do."""
    tree = segment_tree(manifest)
    ck, segs = manifest["checkpoints"], manifest["segments"]
    bad = []
    for i in segments:
        leaf = segment_leaf(i, as_hash(ck[i]["ckptHash"]), as_hash(ck[i + 1]["ckptHash"]),
                            as_hash(segs[i]["batchesHash"]))
        if not verify(segment_root, leaf, tree.proof(i)):
            bad.append(i)
    return bad


# ---------------------------------------------------------------------------------------------------------
# Initialization check
# ---------------------------------------------------------------------------------------------------------


def check_initialization(config: dict[str, Any], ckpt0: Checkpoint, alpha: float) -> dict[str, Any]:
    """Whether checkpoint 0 is a plausible fresh model of the config's family (module docstring, step 4).

    Returns {"passed", "method": "reinit" | "ks", "detail", "tensors": [...]}."""
    if ckpt0.step != 0:
        return {"passed": False, "method": "step", "detail": f"checkpoint 0 is at step {ckpt0.step}, not 0"}
    if any(ckpt0.optimizer["state"].values()):
        return {"passed": False, "method": "optimizer",
                "detail": "checkpoint 0 carries optimizer state (momentum/moments): not a fresh run"}
    family, args = config["model"]["family"], config["model"]["args"]
    seed = config.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 1 << 63:
        with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = build_model(family, args).state_dict()
        if set(fresh) == set(ckpt0.model) and all(
                fresh[n].shape == ckpt0.model[n].shape
                and torch.equal(fresh[n].to(ckpt0.model[n].dtype), ckpt0.model[n]) for n in fresh):
            return {"passed": True, "method": "reinit", "detail": f"equals {family} initialized with seed {seed}"}
    spec = init_spec(family, args)
    if set(spec) != set(ckpt0.model):
        return {"passed": False, "method": "ks", "detail": "checkpoint 0 tensors are not the family's"}
    tested = [n for n, d in spec.items() if not isinstance(d, ConstantInit)]
    level = alpha / max(len(tested), 1)
    rows = []
    failed = []
    for name in sorted(spec):
        dist, values = spec[name], ckpt0.model[name]
        d = ks_statistic(values, dist)
        p = (1.0 if d == 0.0 else 0.0) if isinstance(dist, ConstantInit) else ks_pvalue(d, values.numel())
        rows.append({"tensor": name, "n": int(values.numel()), "D": round(d, 6), "p": p, "dist": dist.to_json()})
        if p < level:
            failed.append(name)
    if failed:
        return {"passed": False, "method": "ks", "tensors": rows,
                "detail": f"checkpoint 0 is not drawn from the declared initializer: {failed[:3]} "
                          f"(p < {level:.2g})"}
    return {"passed": True, "method": "ks", "tensors": rows,
            "detail": f"{len(tested)} tensors pass KS at family-wise level {alpha:g}"}


# ---------------------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Fetched:
    """One segment's evidence, fetched and checked (or why not)."""

    index: int
    start: Checkpoint | None = None
    end: Checkpoint | None = None
    batches: np.ndarray | None = None
    examples_proved: int = 0
    invalid: str | None = None
    unavailable: str | None = None


def resolve_device(device: str) -> str:
    """ "auto" → "cuda" when available, else "cpu"; "cuda" without a GPU falls back to the CPU."""
    if device in ("auto", "") or (device.startswith("cuda") and not torch.cuda.is_available()):
        return "cuda" if torch.cuda.is_available() and device != "cpu" else "cpu"
    return device


def environment(device: str) -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "numpy": np.__version__, "machine": platform.machine(), "device": device,
                           "threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


class Engine:
    """One audit: `run()` returns an `AuditReport`, never raises for bad evidence."""

    def __init__(self, source: Source, claim: TrainingClaimFields | None, segments: Sequence[int], *,
                 policy: TolerancePolicy | None = None, dataset: Dataset | None = None,
                 dataset_source: Source | None = None, store: ContentStore | None = None, device: str = "cpu",
                 workdir: Path | None = None, seed: bytes | None = None, samples_drawn: int = 0, draw: int = 0,
                 prefetch: bool = True, limits: Limits | None = None, all_segments: bool = False,
                 on_segment: Callable[[SegmentResult], None] | None = None) -> None:
        self.source, self.claim, self.assigned = source, claim, [int(s) for s in segments]
        self.policy = policy or get_policy(None)
        self.dataset, self.dataset_source, self.store = dataset, dataset_source, store
        self.device = resolve_device(device)
        self.workdir, self.seed, self.samples_drawn, self.draw = workdir, seed, samples_drawn, draw
        self.prefetch, self.limits = prefetch, limits or Limits()
        self.on_segment, self.all_segments = on_segment, all_segments
        self._shards_fetched: set[int] = set()
        self._proved: set[int] = set()
        self._on_path: set[bytes] = set()  # dataset tree nodes proven to hash up to datasetRoot
        self._ckpts: dict[int, Checkpoint] = {}
        self._model: torch.nn.Module | None = None  # rebuilt once, re-used by every segment's replay
        self._ckpt_lock = threading.Lock()
        self._ds_source: Source | None = None

    # --- the report -----------------------------------------------------------------------------------------
    def run(self) -> AuditReport:
        started = time.perf_counter()
        report = AuditReport(VALID, "", self.policy.threshold, policy=self.policy.to_json(),
                             environment=environment(self.device))
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            try:
                self._run(report, Path(tmp))
            except EvidenceUnavailable as exc:
                report.verdict, report.reason = UNAVAILABLE, str(exc)
            except (TranscriptError, DatasetError) as exc:
                report.verdict, report.reason = INVALID, str(exc)
            except UnknownFamilyError as exc:
                report.verdict, report.reason = UNAVAILABLE, f"cannot rebuild the model here: {exc}"
            except ModelFamilyError as exc:
                report.verdict, report.reason = INVALID, f"model: {exc}"
            except Exception as exc:  # noqa: BLE001 - hostile input must end in a verdict, never a crash
                report.verdict = INVALID
                report.reason = f"malformed evidence ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        report.bytes_fetched = self.source.bytes_read
        report.files = dict(self.source.files)
        if self._ds_source is not None:
            report.dataset_bytes_fetched = self._ds_source.bytes_read
            report.files.update({f"dataset/{k}": v for k, v in self._ds_source.files.items()})
        report.seconds = time.perf_counter() - started
        return report

    def _run(self, report: AuditReport, tmp: Path) -> None:
        try:
            raw = self.source.read(MANIFEST_NAME, self.limits.max_manifest_bytes)
        except EvidenceUnavailable as exc:
            raise EvidenceUnavailable(f"manifest: {exc}") from None
        try:
            manifest = validate_manifest(json.loads(raw))
            _check_segment_fields(manifest)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and TranscriptError are ValueErrors
            raise TranscriptError(f"manifest: {exc}") from None
        claim = self.claim or TrainingClaimFields.from_manifest(manifest, self.source.label)
        report.claim = claim.to_json()
        mismatch = check_manifest_against_claim(manifest, claim)
        if mismatch:
            raise TranscriptError(mismatch)
        n = claim.num_segments
        if any(not 0 <= s < n for s in self.assigned):
            raise TranscriptError("assigned segment outside the claim")
        # `draw`: the caller (`check`, no chain) wants the contract's S draws made here from `seed`
        assigned = self.assigned + extra_draws(self.seed, 0, self.draw, n)
        if self.all_segments:
            assigned += list(range(n))
        drawn = max(self.samples_drawn, self.draw)
        why: dict[int, list[str]] = {}
        extra = extra_draws(self.seed, drawn, self.policy.extra_samples, n)
        if self.policy.top_q and self.policy.top_q_from_checkpoints:
            report.checks["updateNormsVerified"] = self._verify_all_norms(manifest)
        top = top_q_segments(manifest, self.policy.top_q)
        report.checks["seed"] = to_hex(self.seed) if self.seed is not None else None
        for label, indices in (("assigned", assigned), ("extra", extra), ("top-q", top)):
            for s in indices:
                if label not in why.setdefault(s, []):
                    why[s].append(label)
        wanted = sorted(why)
        bad = verify_segment_proofs(manifest, claim.segment_root, wanted)
        report.checks["segmentProofs"] = {"verified": len(wanted) - len(bad), "failed": bad}
        if bad:
            raise TranscriptError(f"segment {bad[0]} does not verify against the claim's segmentRoot")

        if self.policy.init_check:
            ckpt0 = self._checkpoint(manifest, 0)
            report.init = check_initialization(manifest["config"], ckpt0, self.policy.init_alpha)
            if not report.init["passed"]:
                raise TranscriptError(f"initialization: {report.init['detail']}")

        dataset = self._open_dataset(manifest, claim, tmp / "dataset")
        names = parameter_names(manifest["config"])
        results: list[SegmentResult] = []
        report.segments = results
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
            fetch = (lambda s: pool.submit(self._fetch_segment, manifest, dataset, s)) if self.prefetch else None
            pending: Future[_Fetched] | None = fetch(wanted[0]) if fetch and wanted else None
            for pos, s in enumerate(wanted):
                t0 = time.perf_counter()
                if pending is not None:
                    got = pending.result()
                    nxt = wanted[pos + 1] if pos + 1 < len(wanted) else None
                    pending = fetch(nxt) if fetch is not None and nxt is not None and got.unavailable is None \
                        else None
                else:
                    got = self._fetch_segment(manifest, dataset, s)
                seg = manifest["segments"][s]
                result = SegmentResult(s, why=why[s], epoch=int(seg["epoch"]),
                                       claimed_update_norm=float(seg["updateNorm"]),
                                       steps=int(seg["endStep"]) - int(seg["startStep"]),
                                       examples_proved=got.examples_proved)
                results.append(result)
                if got.unavailable is not None:
                    result.error, result.unavailable = got.unavailable, True
                    break  # the store is down or the prover withheld data: no point waiting on more fetches
                if got.invalid is not None:
                    result.error = got.invalid
                else:
                    self._replay(manifest, dataset, got, names, result, claim)
                result.seconds = time.perf_counter() - t0
                if self.on_segment is not None:
                    self.on_segment(result)
                with self._ckpt_lock:  # the prefetch thread only adds later checkpoints
                    for old in [i for i in list(self._ckpts) if i <= s]:
                        del self._ckpts[old]
        report.checks["membershipProofs"] = len(self._proved)
        report.checks["shardsFetched"] = sorted(self._shards_fetched)
        failed = [r for r in results if not r.passed and not r.unavailable]
        if failed:
            # the reason quotes what a reader compares it with: the first error, else the largest ρ (maxRho)
            errored = [r for r in failed if r.error]
            worst = errored[0] if errored else max(failed, key=lambda r: r.rho if r.rho is not None else -1.0)
            rho = "nan" if worst.rho is None else f"{worst.rho:.3g}"
            report.verdict = INVALID
            report.reason = worst.error or (f"segment {worst.index} does not reproduce: rho={rho} > "
                                            f"{self.policy.threshold:g}")
        elif any(r.unavailable for r in results):
            first = next(r for r in results if r.unavailable)
            report.verdict, report.reason = UNAVAILABLE, f"evidence: {first.error}"
        else:
            report.verdict = VALID
            report.reason = (f"{len(results)} segment(s) reproduce within rho <= {self.policy.threshold:g}"
                             + (f"; initialization {report.init['method']} ok" if report.init else ""))

    def _verify_all_norms(self, manifest: dict[str, Any]) -> int:
        """Every recorded update norm against its two checkpoints (fetched one after the other, not kept), so
        that the top-Q choice rests on nothing the prover merely says."""
        names = parameter_names(manifest["config"])
        rtol = self.policy.update_norm_rtol

        def load(i: int) -> Checkpoint:
            entry = manifest["checkpoints"][i]
            data = self.source.read(entry["path"], self.limits.max_file_bytes)
            return decode_checkpoint(data, as_hash(entry["ckptHash"]))

        prev = load(0)
        for i, seg in enumerate(manifest["segments"]):
            nxt = load(i + 1)
            got = update_norm(prev.model, nxt.model, names)
            claimed = float(seg["updateNorm"])
            if abs(got - claimed) > rtol * max(got, claimed) + 1e-12:
                raise TranscriptError(f"segment {i} records updateNorm {claimed:.6g} but its checkpoints give "
                                      f"{got:.6g}")
            prev = nxt
        return len(manifest["segments"])

    # --- fetching ---------------------------------------------------------------------------------------------
    def _checkpoint(self, manifest: dict[str, Any], i: int) -> Checkpoint:
        cached = self._ckpts.get(i)
        if cached is not None:
            return cached
        entry = manifest["checkpoints"][i]
        data = self.source.read(entry["path"], self.limits.max_file_bytes)
        ckpt = decode_checkpoint(data, as_hash(entry["ckptHash"]))
        if ckpt.index != i or ckpt.step != entry["step"]:
            raise TranscriptError(f"checkpoint {i} says it is index {ckpt.index} at step {ckpt.step}")
        with self._ckpt_lock:
            self._ckpts[i] = ckpt
        return ckpt

    def _fetch_segment(self, manifest: dict[str, Any], dataset: Dataset, s: int) -> _Fetched:
        got = _Fetched(s)
        try:
            seg = manifest["segments"][s]
            steps = int(seg["endStep"]) - int(seg["startStep"])
            data = self.source.read(seg["batches"], self.limits.max_file_bytes)
            got.batches = parse_batches(data, seg["batchesHash"], (steps, int(manifest["batchSize"])),
                                        where=seg["batches"])
            if int(got.batches.min()) < 0 or int(got.batches.max()) >= len(dataset):
                raise TranscriptError(f"segment {s} uses example indices outside the dataset")
            got.start = self._checkpoint(manifest, s)
            got.end = self._checkpoint(manifest, s + 1)
            got.examples_proved = self._prove_examples(dataset, got.batches, s)
        except EvidenceUnavailable as exc:
            got.unavailable = str(exc)
        except (TranscriptError, DatasetError) as exc:
            got.invalid = str(exc)
        return got

    def _open_dataset(self, manifest: dict[str, Any], claim: TrainingClaimFields, dest: Path) -> Dataset:
        if self.dataset is not None:
            if self.dataset.root != claim.dataset_root:
                raise TranscriptError("the given dataset's root is not the claim's datasetRoot")
            return self.dataset
        source = self.dataset_source
        if source is None:
            cid = manifest["dataset"].get("cid")
            if not isinstance(cid, str) or not cid:
                raise TranscriptError("the transcript names no dataset CID")
            if self.store is None:
                raise EvidenceUnavailable(f"dataset {cid}: no content store to fetch it from")
            source = StoreSource(self.store, cid)
        self._ds_source = source
        try:
            raw = source.read(DATASET_MANIFEST, self.limits.max_dataset_manifest_bytes)
        except EvidenceUnavailable as exc:
            raise EvidenceUnavailable(f"dataset manifest: {exc}") from None
        _check_dataset_digests(raw)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / DATASET_MANIFEST).write_bytes(raw)
        # shards are hash-checked as they are fetched (`_fetch_shards`), not again on every load
        return Dataset.load(dest, expected_root=claim.dataset_root, verify_shards=False)

    def _fetch_shards(self, dataset: Dataset, indices: np.ndarray) -> None:
        if self._ds_source is None:
            return  # a local Dataset given by the caller already has its shards
        for shard in dataset.shards_for(indices):
            if shard in self._shards_fetched:
                continue
            info = dataset.manifest["shards"][shard]
            for rel, key in ((info["features"], "featuresHash"), (info["labels"], "labelsHash")):
                data = self._ds_source.read(rel, self.limits.max_file_bytes)
                if sha256(data) != as_hash(info[key]):
                    raise DatasetError(f"dataset {rel} does not match its {key}")
                path = dataset.path / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            self._shards_fetched.add(shard)

    def _prove_examples(self, dataset: Dataset, batches: np.ndarray, s: int) -> int:
        """Fetches the shards these examples live in and proves each new one against datasetRoot."""
        idx = np.unique(batches.reshape(-1))
        self._fetch_shards(dataset, idx)
        if not self.policy.membership:
            return 0
        new = np.array([i for i in idx.tolist() if i not in self._proved], dtype=np.int64)
        if new.size:
            feats, labels = dataset.examples(new)
            root = self.claim.dataset_root if self.claim is not None else dataset.root
            self._on_path.add(root)
            for j, i in enumerate(new.tolist()):
                leaf = example_leaf(i, example_hash(feats[j], int(labels[j])))
                if not self._prove(leaf, dataset.proof(i)):
                    raise TranscriptError(f"segment {s}: example {i} fails its membership proof against "
                                          "datasetRoot")
                self._proved.add(i)
        return int(idx.size)

    def _prove(self, leaf: bytes, proof: Sequence[bytes]) -> bool:
        """`registry.merkle.verify` of one example's proof, stopping at the first node already shown to lie on
        a path to the root (sound: from an equal hash the rest of the path is the one already checked). Later
        examples share the upper levels, so most proofs cost a few hashes instead of log2(n)."""
        node, path = leaf, []
        for sibling in proof:
            if node in self._on_path:
                break
            path.append(node)
            node = hash_pair(node, sibling)
        if node not in self._on_path:
            return False
        self._on_path.update(path)
        return True

    # --- replay -----------------------------------------------------------------------------------------------
    def _replay(self, manifest: dict[str, Any], dataset: Dataset, got: _Fetched, names: list[str],
                result: SegmentResult, claim: TrainingClaimFields) -> None:
        assert got.start is not None and got.end is not None and got.batches is not None
        s = got.index
        try:
            if self._model is None:
                self._model = rebuild_model(manifest["config"], self.device)
            replayed = replay_segment("", s, dataset, device=self.device, manifest=manifest, checkpoint=got.start,
                                      batches=got.batches, model=self._model)
        except (TranscriptError, DatasetError) as exc:
            result.error = str(exc)
            return
        except RuntimeError as exc:  # a forward that does not fit the data/model (the transcript's doing)
            result.error = f"segment {s} replay failed: {str(exc).splitlines()[0][:200]}"
            return
        d = segment_distance(replayed, got.end.model, got.start.model, names)
        result.rho, result.linf, result.cosine, result.update_norm = d.rho, d.linf, d.cosine, d.update_norm
        claimed = float(manifest["segments"][s]["updateNorm"])
        tol = self.policy.update_norm_rtol * max(claimed, d.update_norm) + 1e-12
        if abs(claimed - d.update_norm) > tol:
            result.error = (f"segment {s} records updateNorm {claimed:.6g} but its checkpoints give "
                            f"{d.update_norm:.6g}")
            return
        if s + 1 == claim.num_segments and weights_hash(got.end.model) != claim.final_weights_hash:
            result.error = "the last checkpoint's weights do not hash to finalWeightsHash"
            return
        result.passed = math.isfinite(d.rho) and d.rho <= self.policy.threshold
        if math.isinf(d.rho):  # ‖W_{i+1} − W_i‖ = 0 while the replay moves: finite weights, a zero update
            result.error = (f"segment {s} records a zero update (checkpoints {s} and {s + 1} hold the same "
                            f"weights) but its replay moves them by {d.error_norm:.3g}: rho=inf")
        elif not math.isfinite(d.rho):
            result.error = f"segment {s} replays to non-finite weights"


def audit(source: Source, claim: TrainingClaimFields | None, segments: Sequence[int], **kwargs: Any) -> AuditReport:
    """Runs one audit (see `Engine` for the keyword arguments)."""
    return Engine(source, claim, segments, **kwargs).run()
