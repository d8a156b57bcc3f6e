"""The verifier's segment re-execution engine (SPEC sections 3, 5 and 6).

Given a transcript (a CID in a content store, or a local directory) and segment indices, it:

1. fetches `manifest.json` only, validates it (canonical paths, step ranges, every digest recomputed) and ties
   it to the claim (segmentRoot, chainHead, finalWeightsHash, datasetRoot, configHash, N, k);
2. derives from the committed config (never from the manifest's words) every value replay and sampling read:
   the learning rate of every step and the epoch of every segment; the manifest's `learningRates` and `epoch`
   of every segment must equal them (a lie is Invalid whatever the sample);
3. plans the segments: the assigned ones, the first and the last (always: where a thief starts and ends),
   further draws by the contract's rule when the challenge seed is known, and the top-Q largest declared
   updates of every epoch. Declared update norms are untrusted: they only add segments, the detection bound
   rests on the draws alone (docs/threat-model.md), and the norm of every segment whose two checkpoints were
   fetched is recomputed (a lie is Invalid);
4. verifies each audited segment's leaf against the claim's `segmentRoot` with its Merkle proof
   (`registry.core.merkle`, the one implementation);
5. checks initialization (`check_init_origin`): checkpoint 0 is step 0 with no optimizer state and hashes to
   the committed init weights hash, and by its committed origin is re-initialized bit-exactly from the
   committed seed (Seed), equals the final weights of a registered, not rejected parent claim (Parent), or is
   reported as "origin not verified" (External);
6. per segment, fetches only checkpoint i, checkpoint i+1, the batch file and the dataset shards holding its
   examples (the next segment's files are fetched by a background thread while the current one replays),
   checks every file against its manifest hash, both checkpoints' hyperparameters against the config, proves
   every replayed example against `datasetRoot`, replays the k steps with model, optimizer, schedule and loss
   built from the config (`registry.pol.replay`, on CUDA when asked and available) and compares the full
   state with checkpoint i+1: ρ, L∞ and cosine of the parameters, then buffers and every optimizer state
   tensor (`state_distances`), each against its own threshold; the last checkpoint's weights must hash to
   `finalWeightsHash`.

Hostile input never crashes it and never runs code: checkpoints are parsed as safetensors after a bounded
header check, batch files and shards with `np.load(allow_pickle=False)`, paths are the manifest's canonical
ones and a local directory's files must not resolve outside it, and every file has a size limit. Evidence
that cannot be fetched gives `Unavailable`; evidence that contradicts the claim gives `Invalid`.
"""

from __future__ import annotations

import math
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from registry.core import safejson
from registry.core.claims import TrainingClaim
from registry.core.hashing import as_hash, sha256, to_hex, weights_hash
from registry.core.merkle import segment_leaf, verify
from registry.core.sampling import segment_at
from registry.core.states import ORIGIN_NAMES
from registry.pol.checkpoint import Checkpoint, TranscriptError, decode_checkpoint, read_buffer
from registry.pol.config import init_spec_of, init_state, learning_rates, rebuild_model
from registry.pol.recorder import update_norm
from registry.pol.replay import (
    check_checkpoint_config,
    check_segment_declarations,
    replay_segment_state,
    segment_distance,
    state_distances,
)
from registry.pol.transcript import MANIFEST_NAME, parse_batches, segment_tree, validate_manifest
from registry.spec.datasets import MANIFEST_NAME as DATASET_MANIFEST
from registry.spec.datasets import Dataset, DatasetError
from registry.spec.models import ModelFamilyError, UnknownFamilyError
from registry.store.base import ContentStore, InvalidPath, StoreError, split_path
from verifier.datacache import DatasetCache, shared_cache
from verifier.policy import TolerancePolicy, get_policy
from verifier.report import (
    INVALID,
    UNAVAILABLE,
    VALID,
    AuditReport,
    ParentClaim,
    SegmentResult,
)

#: Looks a parent claim up on the chain: None when no such claim is registered.
ParentLookup = Callable[[int], ParentClaim | None]


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

B = TypeVar("B", bytes, bytearray)


class Source:
    """Files of one directory (a transcript or a dataset), read whole with a size limit, bytes counted."""

    label = ""

    def __init__(self) -> None:
        self.bytes_read = 0
        self.files: dict[str, int] = {}
        self._lock = threading.Lock()

    def read(self, rel: str, limit: int) -> bytes:
        self._check_path(rel)
        return self._account(rel, limit, self._read(rel, limit))

    def read_buffer(self, rel: str, limit: int) -> bytearray:
        """Like `read`, as one writable buffer filled in place: a big checkpoint is in memory once, and
        `decode_checkpoint` makes its tensors views of it (issue 13, peak RSS ~1x the state)."""
        self._check_path(rel)
        return self._account(rel, limit, self._read_buffer(rel, limit))

    @staticmethod
    def _check_path(rel: str) -> None:
        try:
            split_path(rel)
        except InvalidPath as exc:
            raise TranscriptError(f"path {rel!r} escapes the directory: {exc}") from None

    def _account(self, rel: str, limit: int, data: B) -> B:
        if len(data) > limit:
            raise TranscriptError(f"{rel} is larger than the limit of {limit} bytes")
        with self._lock:
            self.bytes_read += len(data)
            self.files[rel] = len(data)
        return data

    def _read(self, rel: str, limit: int) -> bytes:
        raise NotImplementedError

    def _read_buffer(self, rel: str, limit: int) -> bytearray:
        return bytearray(self._read(rel, limit))  # a copy: sources that can fill a buffer in place override it


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

    def _read_buffer(self, rel: str, limit: int) -> bytearray:
        # filled in place where the store offers it (both of the project's stores do)
        cat_buffer = getattr(self.store, "cat_buffer", None)
        if cat_buffer is None:
            return super()._read_buffer(rel, limit)
        try:
            buf: bytearray = cat_buffer(f"{self.cid}/{rel}", 0, limit + 1)
        except StoreError as exc:
            raise EvidenceUnavailable(f"{rel}: {exc}") from None
        return buf


class DirSource(Source):
    """A local directory; a file (or symlink) that resolves outside it is refused, not followed."""

    def __init__(self, root: str | Path) -> None:
        super().__init__()
        self.root = Path(root)
        self.label = str(root)

    def _read(self, rel: str, limit: int) -> bytes:
        path = self._file(rel, limit)
        try:
            with open(path, "rb") as f:
                return f.read(limit + 1)
        except OSError as exc:
            raise EvidenceUnavailable(f"{rel}: {exc}") from None

    def _read_buffer(self, rel: str, limit: int) -> bytearray:
        path = self._file(rel, limit)
        try:
            return read_buffer(path, limit)
        except OSError as exc:
            raise EvidenceUnavailable(f"{rel}: {exc}") from None

    def _file(self, rel: str, limit: int) -> Path:
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
        return path


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
    """The contract's draw rule continued: j = first .. first+count−1 (SPEC 5, `registry.core.sampling`)."""
    if seed is None or count <= 0:
        return []
    return [segment_at(seed, j, num_segments) for j in range(first, first + count)]


def plan_segments(manifest: dict[str, Any], assigned: Sequence[int], seed: bytes | None, drawn: int,
                  policy: TolerancePolicy) -> dict[int, list[str]]:
    """Which segments an audit re-executes, and why: the assigned ones, the first and the last (always), the
    policy's extra draws continuing the contract's rule after `drawn` draws, the top-Q declared updates of
    every epoch. Only the draws are out of the prover's reach: the detection bound rests on them alone
    (docs/threat-model.md; `verifier.calibrate.liar_detection` measures it with this very function)."""
    n = int(manifest["numSegments"])
    extra = extra_draws(seed, drawn, policy.extra_samples, n)
    top = top_q_segments(manifest, policy.top_q)
    why: dict[int, list[str]] = {}
    for label, indices in (("assigned", list(assigned)), ("first", [0]), ("last", [n - 1]), ("extra", extra),
                           ("top-q", top)):
        for s in indices:
            if label not in why.setdefault(int(s), []):
                why[int(s)].append(label)
    return why


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
        d = safejson.loads(raw, what="dataset.json", max_depth=safejson.MANIFEST_DEPTH)
    except (ValueError, RecursionError) as exc:
        raise DatasetError(f"dataset.json is not JSON: {exc}") from None
    ok = isinstance(d, dict) and _is_hex32(d.get("datasetRoot")) and isinstance(d.get("examples"), list) \
        and isinstance(d.get("shards"), list)
    ok = ok and all(isinstance(e, list) and len(e) == 3 and _is_hex32(e[2]) for e in d["examples"])
    ok = ok and all(isinstance(s, dict) and _is_hex32(s.get("featuresHash")) and _is_hex32(s.get("labelsHash"))
                    for s in d["shards"])
    if not ok:
        raise DatasetError("dataset.json is malformed (digests must be 0x-prefixed 32-byte hex strings)")


def check_manifest_against_claim(m: dict[str, Any], claim: TrainingClaim) -> str | None:
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


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> str | None:
    """None when both state_dicts are bit-identical, else the first differing entry."""
    if set(a) != set(b):
        return sorted(set(a) ^ set(b))[0]
    for n in sorted(a):
        if a[n].shape != b[n].shape or a[n].dtype != b[n].dtype or not torch.equal(a[n], b[n]):
            return n
    return None


class InitUnavailable(Exception):
    """The initialization cannot be checked here (a parent claim and no chain to look it up)."""


def check_init_origin(config: dict[str, Any], claim: TrainingClaim, ckpt0: Checkpoint,
                      parent_lookup: ParentLookup | None) -> dict[str, Any]:
    """Whether checkpoint 0 is what the claim says it is (module docstring, step 5).

    Returns {"passed", "origin", "method", "originVerified", "weightsHash", "detail", "parent"?}; raises
    `InitUnavailable` for a parent that cannot be looked up."""
    init = init_spec_of(config)
    origin = init["origin"]
    wh = weights_hash(ckpt0.model)
    out: dict[str, Any] = {"passed": False, "origin": origin, "method": origin, "originVerified": False,
                           "weightsHash": to_hex(wh)}

    def fail(detail: str) -> dict[str, Any]:
        return {**out, "detail": detail}

    if ckpt0.step != 0:
        return fail(f"checkpoint 0 is at step {ckpt0.step}, not 0")
    if any(ckpt0.optimizer["state"].values()):
        return fail("checkpoint 0 carries optimizer state (momentum/moments): not a fresh run")
    if as_hash(init["weightsHash"]) != wh:
        return fail(f"checkpoint 0 weights hash {to_hex(wh)} is not the config's init.weightsHash "
                    f"{init['weightsHash']}")
    if claim.init_weights_hash and claim.init_weights_hash != wh:  # empty or None: not committed
        return fail(f"checkpoint 0 weights hash {to_hex(wh)} is not the claim's initWeightsHash "
                    f"{to_hex(claim.init_weights_hash)}")
    if claim.origin is not None and ORIGIN_NAMES.get(claim.origin) != origin:
        return fail(f"the claim's origin {ORIGIN_NAMES.get(claim.origin, claim.origin)!r} is not the config's "
                    f"{origin!r}")
    pid = int(init.get("parentClaimId") or 0)
    if claim.origin is not None and claim.parent_claim_id != pid:
        return fail(f"the claim's parentClaimId {claim.parent_claim_id} is not the config's {pid}")
    if origin == "seed":
        fresh = init_state(config, int(init["seed"]))
        diff = _same_state(fresh, ckpt0.model)
        if diff is not None:
            return fail(f"checkpoint 0 is not {config['model']['family']} initialized on the CPU with the committed "
                        f"seed {init['seed']} (differs at {diff})")
        return {**out, "passed": True, "originVerified": True,
                "detail": f"re-initialized bit-exactly from seed {init['seed']}"}
    if origin == "parent":
        out["parent"] = {"claimId": pid}
        if parent_lookup is None:
            raise InitUnavailable(f"parent claim {pid} cannot be looked up without a chain")
        parent = parent_lookup(pid)
        if parent is None:
            return fail(f"parent claim {pid} is not registered")
        out["parent"] = {"claimId": pid, "status": parent.status, "tainted": parent.tainted,
                         "finalWeightsHash": to_hex(parent.final_weights_hash)}
        if parent.final_weights_hash != wh:
            return fail(f"checkpoint 0 is not the final weights of parent claim {pid}")
        if parent.status == INVALID or parent.tainted:
            return fail(f"parent claim {pid} was judged Invalid" + (" (tainted)" if parent.tainted else ""))
        return {**out, "passed": True, "originVerified": True,
                "detail": f"fine-tuned from parent claim {pid} ({parent.status})"}
    return {**out, "passed": True, "originVerified": False,
            "detail": f"origin not verified: checkpoint 0 is declared external weights {to_hex(wh)}"}


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
    inputs: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # each step's (x, y), gathered in the prefetch
    examples_proved: int = 0
    invalid: str | None = None
    unavailable: str | None = None


#: a segment's inputs are gathered ahead (off the replay thread, in one read) up to this size, else per step
MAX_GATHERED_INPUT_BYTES = 64 << 20


def _gather_inputs(dataset: Dataset, batches: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Every step's (x, y) of a segment in one gather, as the replay's `dataset.batch` would build them."""
    per_example = int(np.prod(dataset.feature_shape)) * np.dtype(dataset.manifest["featureDtype"]).itemsize
    if batches.size * per_example > MAX_GATHERED_INPUT_BYTES:
        return None
    feats, labels = dataset.examples(batches.reshape(-1))
    x, y = torch.from_numpy(feats), torch.from_numpy(labels)
    n = batches.shape[1]
    return [(x[j * n:(j + 1) * n], y[j * n:(j + 1) * n]) for j in range(batches.shape[0])]


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

    def __init__(self, source: Source, claim: TrainingClaim | None, segments: Sequence[int], *,
                 policy: TolerancePolicy | None = None, dataset: Dataset | None = None,
                 dataset_source: Source | None = None, store: ContentStore | None = None, device: str = "cpu",
                 workdir: Path | None = None, seed: bytes | None = None, samples_drawn: int = 0, draw: int = 0,
                 prefetch: bool = True, limits: Limits | None = None, all_segments: bool = False,
                 on_segment: Callable[[SegmentResult], None] | None = None,
                 parent_lookup: ParentLookup | None = None, dataset_cache: DatasetCache | None = None) -> None:
        self.source, self.claim, self.assigned = source, claim, [int(s) for s in segments]
        self.policy = policy or get_policy(None)
        self.dataset, self.dataset_source, self.store = dataset, dataset_source, store
        self.device = resolve_device(device)
        self.workdir, self.seed, self.samples_drawn, self.draw = workdir, seed, samples_drawn, draw
        self.prefetch, self.limits = prefetch, limits or Limits()
        self.on_segment, self.all_segments = on_segment, all_segments
        self._shards_fetched: set[int] = set()
        self._proved: set[int] = set()
        self.dataset_cache = dataset_cache if dataset_cache is not None else shared_cache()
        self._ckpts: dict[int, Checkpoint] = {}
        self._model: torch.nn.Module | None = None  # built once by _run, re-used by every segment's replay
        self._ckpt_lock = threading.Lock()
        self._ds_source: Source | None = None
        self.parent_lookup = parent_lookup
        self._lrs: list[list[float]] = []  # the committed schedule, steps 0 .. numSteps
        self._norms_checked: set[int] = set()
        self._manifest: dict[str, Any] | None = None
        self._names: list[str] = []

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
            except InitUnavailable as exc:
                report.verdict, report.reason = UNAVAILABLE, f"initialization: {exc}"
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
            manifest = validate_manifest(safejson.loads(raw, what="manifest.json", max_depth=safejson.MANIFEST_DEPTH))
            _check_segment_fields(manifest)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and TranscriptError are ValueErrors
            raise TranscriptError(f"manifest: {exc}") from None
        claim = self.claim or TrainingClaim.from_manifest(manifest, self.source.label)
        report.claim = claim.to_json()
        mismatch = check_manifest_against_claim(manifest, claim)
        if mismatch:
            raise TranscriptError(mismatch)
        # the manifest's chainHead is recomputed from its checkpoint hashes (validate_manifest), every fetched
        # checkpoint is checked against its hash, and the claim's chainHead must be the manifest's
        report.checks["chainHead"] = "matches the claim and the checkpoint hashes"
        config = manifest["config"]
        self._manifest = manifest
        # every learning rate and epoch label comes from the config; the manifest must say the same
        self._lrs = learning_rates(config, int(manifest["numSteps"]) + 1)
        for seg in manifest["segments"]:
            check_segment_declarations(config, seg, self._lrs)
        init_spec_of(config)  # the config must commit an origin, whatever the policy
        report.checks["declarations"] = "learningRates and epochs of every segment derived from the config"
        n = claim.num_segments
        if any(not 0 <= s < n for s in self.assigned):
            raise TranscriptError("assigned segment outside the claim")
        # `draw`: the caller (`check`, no chain) wants the contract's S draws made here from `seed`
        assigned = self.assigned + extra_draws(self.seed, 0, self.draw, n)
        if self.all_segments:
            assigned += list(range(n))
        drawn = max(self.samples_drawn, self.draw)
        # the replay model, built once; the parameter names (what ρ and update norms are taken over) are its own
        self._model = rebuild_model(manifest["config"], self.device)
        names = [n for n, _ in self._model.named_parameters()]
        self._names = names
        if self.policy.top_q and self.policy.top_q_from_checkpoints:
            report.checks["updateNormsVerified"] = self._verify_all_norms(manifest)
        report.checks["seed"] = to_hex(self.seed) if self.seed is not None else None
        why = plan_segments(manifest, assigned, self.seed, drawn, self.policy)
        wanted = sorted(why)
        bad = verify_segment_proofs(manifest, claim.segment_root, wanted)
        report.checks["segmentProofs"] = {"verified": len(wanted) - len(bad), "failed": bad}
        if bad:
            raise TranscriptError(f"segment {bad[0]} does not verify against the claim's segmentRoot")

        if self.policy.init_check:
            ckpt0 = self._checkpoint(manifest, 0)
            report.init = check_init_origin(config, claim, ckpt0, self.parent_lookup)
            if not report.init["passed"]:
                raise TranscriptError(f"initialization: {report.init['detail']}")

        dataset = self._open_dataset(manifest, claim, tmp / "dataset")
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
                result = SegmentResult(s, why=why[s], epoch=int(seg["epoch"]),  # checked against the config
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
                self._check_held_norms(s)
                with self._ckpt_lock:  # the prefetch thread only adds later checkpoints
                    for old in [i for i in list(self._ckpts) if i <= s]:
                        del self._ckpts[old]
        report.checks["updateNormsRecomputed"] = sorted(self._norms_checked)
        report.checks["finalWeightsHash"] = ("checked on the last checkpoint"
                                             if any(r.index == n - 1 and r.error is None and r.rho is not None
                                                    for r in results) else "not reached")
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
        elif report.checks["finalWeightsHash"] != "checked on the last checkpoint" and \
                not any(r.unavailable for r in results):
            report.verdict, report.reason = INVALID, "the last segment was not re-executed"
        elif any(r.unavailable for r in results):
            first = next(r for r in results if r.unavailable)
            report.verdict, report.reason = UNAVAILABLE, f"evidence: {first.error}"
        else:
            report.verdict = VALID
            report.reason = (f"{len(results)} segment(s) reproduce within rho <= {self.policy.threshold:g} "
                             f"with the full state" + (f"; initialization: {report.init['detail']}"
                                                       if report.init else ""))

    def _verify_all_norms(self, manifest: dict[str, Any]) -> int:
        """Every recorded update norm against its two checkpoints (fetched one after the other, not kept), so
        that the top-Q choice rests on nothing the prover merely says."""
        names = self._names
        rtol = self.policy.update_norm_rtol

        def load(i: int) -> Checkpoint:
            entry = manifest["checkpoints"][i]
            data = self.source.read_buffer(entry["path"], self.limits.max_file_bytes)
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
        data = self.source.read_buffer(entry["path"], self.limits.max_file_bytes)
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
            got.inputs = _gather_inputs(dataset, got.batches)
        except EvidenceUnavailable as exc:
            got.unavailable = str(exc)
        except (TranscriptError, DatasetError) as exc:
            got.invalid = str(exc)
        return got

    def _open_dataset(self, manifest: dict[str, Any], claim: TrainingClaim, dest: Path) -> Dataset:
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
        # the verified tree comes from the node's cache, built once per (datasetRoot, sha256(dataset.json))
        return Dataset.load(dest, expected_root=claim.dataset_root, verify_shards=False,
                            tree_for=self.dataset_cache.tree_for(claim.dataset_root))

    def _fetch_shards(self, dataset: Dataset, indices: np.ndarray) -> None:
        if self._ds_source is None:
            return  # a local Dataset given by the caller already has its shards
        for shard in dataset.shards_for(indices):
            if shard in self._shards_fetched:
                continue
            info = dataset.manifest["shards"][shard]
            for rel, key in ((info["features"], "featuresHash"), (info["labels"], "labelsHash")):
                data = self._ds_source.read_buffer(rel, self.limits.max_file_bytes)  # one copy of a big shard
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
            root = self.claim.dataset_root if self.claim is not None else dataset.root
            if dataset.root != root:
                raise TranscriptError("the dataset's root is not the claim's datasetRoot")
            # the dataset's tree is verified (built from dataset.json's hashes, or re-verified from the cache)
            # and its root is datasetRoot, so example i is a member iff it hashes to leaf i's exampleHash
            feats, labels = dataset.examples(new)
            for j, i in enumerate(new.tolist()):
                if dataset.hash_example(feats[j], labels[j]) != dataset.example_hash(i):
                    raise TranscriptError(f"segment {s}: example {i} fails its membership proof against "
                                          "datasetRoot")
                self._proved.add(i)
        return int(idx.size)

    # --- replay -----------------------------------------------------------------------------------------------
    def _replay(self, manifest: dict[str, Any], dataset: Dataset, got: _Fetched, names: list[str],
                result: SegmentResult, claim: TrainingClaim) -> None:
        assert got.start is not None and got.end is not None and got.batches is not None
        assert self._model is not None  # built once by _run, before the first segment
        s = got.index
        try:
            check_checkpoint_config(manifest["config"], got.end, self._lrs)
            replayed, optim_state = replay_segment_state("", s, dataset, device=self.device, manifest=manifest,
                                                         checkpoint=got.start, batches=got.batches,
                                                         model=self._model, lrs=self._lrs, inputs=got.inputs)
        except (TranscriptError, DatasetError) as exc:
            result.error = str(exc)
            return
        except RuntimeError as exc:  # a forward that does not fit the data/model (the transcript's doing)
            result.error = f"segment {s} replay failed: {str(exc).splitlines()[0][:200]}"
            return
        d = segment_distance(replayed, got.end.model, got.start.model, names)
        result.rho, result.linf, result.cosine, result.update_norm = d.rho, d.linf, d.cosine, d.update_norm
        self._norms_checked.add(s)
        claimed = float(manifest["segments"][s]["updateNorm"])
        tol = self.policy.update_norm_rtol * max(claimed, d.update_norm) + 1e-12
        if abs(claimed - d.update_norm) > tol:
            result.error = (f"segment {s} records updateNorm {claimed:.6g} but its checkpoints give "
                            f"{d.update_norm:.6g}")
            return
        if s + 1 == claim.num_segments and weights_hash(got.end.model) != claim.final_weights_hash:
            result.error = "the last checkpoint's weights do not hash to finalWeightsHash"
            return
        states = state_distances(replayed, optim_state, got.start, got.end, manifest["config"],
                                 self.policy.state_threshold)
        result.state = {st.name: st.to_json() for st in states}
        if math.isinf(d.rho):  # ‖W_{i+1} − W_i‖ = 0 while the replay moves: finite weights, a zero update
            result.error = (f"segment {s} records a zero update (checkpoints {s} and {s + 1} hold the same "
                            f"weights) but its replay moves them by {d.error_norm:.3g}: rho=inf")
            return
        if not math.isfinite(d.rho):
            result.error = f"segment {s} replays to non-finite weights"
            return
        if d.rho > self.policy.threshold:
            return
        bad = next((st for st in states if not st.passed), None)
        if bad is not None:
            dist = "inf" if not math.isfinite(bad.distance) else f"{bad.distance:.3g}"
            result.error = bad.error or (f"segment {s} does not reproduce {bad.worst}: {bad.name} distance {dist} > "
                                         f"{bad.threshold:g}")
            return
        result.passed = True

    def _check_held_norms(self, upto: int) -> None:
        """The declared update norm of every segment up to `upto` whose two checkpoints this audit holds
        (fetched for neighbouring segments) is recomputed; a lie is Invalid. Checkpoints the prefetch thread
        already brought for a later segment wait for that segment: checking them now would make the reason
        depend on how far the prefetch had got."""
        m = self._manifest
        if m is None:
            return
        with self._ckpt_lock:
            held = dict(self._ckpts)
        rtol = self.policy.update_norm_rtol
        for i in sorted(held):
            if i > upto or i in self._norms_checked or i + 1 not in held or i >= len(m["segments"]):
                continue
            got = update_norm(held[i].model, held[i + 1].model, self._names)
            claimed = float(m["segments"][i]["updateNorm"])
            self._norms_checked.add(i)
            if abs(got - claimed) > rtol * max(got, claimed) + 1e-12:
                raise TranscriptError(f"segment {i} records updateNorm {claimed:.6g} but its checkpoints give "
                                      f"{got:.6g}")


def audit(source: Source, claim: TrainingClaim | None, segments: Sequence[int], **kwargs: Any) -> AuditReport:
    """Runs one audit (see `Engine` for the keyword arguments)."""
    return Engine(source, claim, segments, **kwargs).run()
