"""The verifier's re-execution engine against real transcripts (registry.pol.train) in a real embedded store:
what it fetches, honest claims, each forgery, hostile files, proofs, and an unreachable store.

Forgeries are made the way a cheating prover would: edit the transcript, then reseal every digest
(checkpoint and batch hashes, segment root, chain head, final weights hash, update norms) so that the forged
transcript passes every manifest check and only re-execution (or a proof) can catch it.
"""

from __future__ import annotations

import json
import pickle
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from registry.core.claims import TrainingClaim
from registry.core.hashing import chain_head, sha256, to_hex, weights_hash
from registry.pol.checkpoint import encode_checkpoint, read_checkpoint
from registry.pol.publish import publish_transcript
from registry.pol.recorder import update_norm
from registry.pol.replay import parameter_names
from registry.pol.train import train
from registry.pol.transcript import MANIFEST_NAME, batches_path, checkpoint_path, segment_tree, write_manifest
from registry.spec.datasets import build_builtin
from registry.store.daemon import DaemonStore
from registry.store.embedded import EmbeddedStore
from verifier.audit import INVALID, UNAVAILABLE, VALID, audit_training_claim
from verifier.engine import DirSource, Limits, audit, top_q_segments, verify_segment_proofs
from verifier.policy import get_policy

SEED = bytes(range(32))
BARE = get_policy(None).with_overrides(top_q=0, init_check=False, extra_samples=0)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("engine")
    # small shards, so that a segment touches only some of them
    build_builtin("digits", out / "dataset", shard_size=16)
    honest = train(out / "honest", epochs=1, max_steps=40, steps_per_segment=5, seed=3, dataset_dir=out / "dataset")
    other = train(out / "other", epochs=1, max_steps=40, steps_per_segment=5, seed=4, dataset_dir=out / "dataset")
    store = EmbeddedStore(out / "store")
    published = publish_transcript(honest.transcript_dir, store, out / "dataset")
    return {"out": out, "store": store, "honest": published, "tdir": honest.transcript_dir,
            "other": other.transcript_dir}


def claim_of(tdir: Path, cid: str) -> TrainingClaim:
    return TrainingClaim.from_manifest(json.loads((tdir / MANIFEST_NAME).read_text()), cid)


def reseal(tdir: Path, *, norms: bool = True) -> None:
    """What a forger does after editing files: recompute every digest so the manifest is self-consistent."""
    m = json.loads((tdir / MANIFEST_NAME).read_text())
    for c in m["checkpoints"]:
        c["ckptHash"] = to_hex(sha256((tdir / c["path"]).read_bytes()))
    for s in m["segments"]:
        s["batchesHash"] = to_hex(sha256((tdir / s["batches"]).read_bytes()))
    m["segmentRoot"] = to_hex(segment_tree(m).root)
    m["chainHead"] = to_hex(chain_head([bytes.fromhex(c["ckptHash"][2:]) for c in m["checkpoints"]]))
    ckpts = [read_checkpoint(tdir / c["path"]) for c in m["checkpoints"]] if norms else []
    if ckpts:
        m["finalWeightsHash"] = to_hex(weights_hash(ckpts[-1].model))
        names = parameter_names(m["config"])
        for i, s in enumerate(m["segments"]):
            s["updateNorm"] = update_norm(ckpts[i].model, ckpts[i + 1].model, names)
    write_manifest(tdir / MANIFEST_NAME, m)


def forged_copy(world: dict[str, Any], name: str, edit: Callable[[Path, dict[str, Any]], None], *,
                seal: bool = True) -> tuple[Path, str]:
    """A copy of the honest transcript edited by `edit(dir, manifest)`, optionally resealed, stored as is."""
    tdir = world["out"] / name
    shutil.copytree(world["tdir"], tdir)
    m = json.loads((tdir / MANIFEST_NAME).read_text())
    edit(tdir, m)
    write_manifest(tdir / MANIFEST_NAME, m)
    if seal:
        reseal(tdir)
    return tdir, world["store"].add_directory(tdir)


def run_store(world: dict[str, Any], tdir: Path, cid: str, segments: list[int], **kw: Any) -> Any:
    kw.setdefault("policy", BARE)
    return audit_training_claim(world["store"], claim_of(tdir, cid), segments, **kw)


def transcript_size(tdir: Path) -> int:
    return sum(p.stat().st_size for p in tdir.rglob("*") if p.is_file())


def test_honest_fetches_only_what_the_audit_needs(world: dict[str, Any]) -> None:
    tdir, pub = world["tdir"], world["honest"]
    report = audit_training_claim(world["store"], claim_of(tdir, pub.transcript_cid), [2], seed=SEED,
                                  samples_drawn=1, policy=get_policy(None).with_overrides(extra_samples=1))
    assert report.verdict == VALID, report.reason
    manifest = json.loads((tdir / MANIFEST_NAME).read_text())
    top = top_q_segments(manifest, 1)
    extra = [s.index for s in report.segments if "extra" in s.why]
    n = manifest["numSegments"]
    audited = sorted({0, 2, n - 1, *top, *extra})  # the first and the last segment, whatever the sample
    assert [s.index for s in report.segments] == audited
    assert all(s.rho == 0.0 and s.passed for s in report.segments)
    assert report.init is not None and report.init["method"] == "seed" and report.init["passed"]
    want = {"manifest.json", checkpoint_path(0)}
    for s in audited:
        want |= {checkpoint_path(s), checkpoint_path(s + 1), batches_path(s)}
    transcript_files = {k for k in report.files if not k.startswith("dataset/")}
    assert transcript_files == want
    assert report.bytes_fetched == sum((tdir / rel).stat().st_size for rel in want) < transcript_size(tdir)
    # dataset: dataset.json plus exactly the shards holding the replayed examples, fewer than all of them
    idx = np.unique(np.concatenate([np.load(tdir / batches_path(s)).reshape(-1) for s in audited]))
    ds_manifest = json.loads((world["out"] / "dataset" / "dataset.json").read_text())
    shards = sorted({ds_manifest["examples"][i][0] for i in idx.tolist()})
    assert report.checks["shardsFetched"] == shards
    assert report.checks["membershipProofs"] == idx.size
    # one segment's 160 shuffled examples live in fewer than all of the 113 shards: the rest stay unfetched
    one = audit_training_claim(world["store"], claim_of(tdir, pub.transcript_cid), [2], policy=BARE)
    assert len(one.checks["shardsFetched"]) < len(ds_manifest["shards"])
    assert one.dataset_bytes_fetched < transcript_size(world["out"] / "dataset")
    # the prefetching thread changes nothing in the results
    again = audit_training_claim(world["store"], claim_of(tdir, pub.transcript_cid), [2], seed=SEED,
                                 samples_drawn=1, policy=get_policy(None).with_overrides(extra_samples=1),
                                 prefetch=False)
    assert again.results_bytes() == report.results_bytes()


def test_local_directory_source_matches_the_store(world: dict[str, Any]) -> None:
    tdir = world["tdir"]
    report = audit(DirSource(tdir), None, [0, 7], policy=BARE.with_overrides(top_q=1, top_q_from_checkpoints=True),
                   dataset_source=DirSource(world["out"] / "dataset"))
    assert report.verdict == VALID, report.reason
    assert report.checks["updateNormsVerified"] == 8 and len(report.files) > 9  # every checkpoint was read
    assert report.claim["segmentRoot"] == json.loads((tdir / MANIFEST_NAME).read_text())["segmentRoot"]


def _interpolate(tdir: Path, m: dict[str, Any]) -> None:
    n = m["numSegments"]
    first = read_checkpoint(tdir / m["checkpoints"][0]["path"])
    last = read_checkpoint(tdir / m["checkpoints"][n]["path"])
    for i in range(1, n):
        honest = read_checkpoint(tdir / m["checkpoints"][i]["path"])
        model = {k: first.model[k] + (i / n) * (last.model[k] - first.model[k]) for k in first.model}
        (tdir / m["checkpoints"][i]["path"]).write_bytes(encode_checkpoint(i, honest.step, model, honest.optimizer))


def test_interpolated_checkpoints_are_invalid(world: dict[str, Any]) -> None:
    tdir, cid = forged_copy(world, "interp", _interpolate)
    report = run_store(world, tdir, cid, [3])
    assert report.verdict == INVALID and "does not reproduce" in report.reason
    assert report.segments[0].rho is not None and report.segments[0].rho > 0.1


def test_checkpoint_from_another_seed_is_invalid(world: dict[str, Any]) -> None:
    def splice(tdir: Path, m: dict[str, Any]) -> None:
        shutil.copy(world["other"] / checkpoint_path(4), tdir / checkpoint_path(4))

    tdir, cid = forged_copy(world, "splice", splice)
    report = run_store(world, tdir, cid, [3, 4, 5])
    assert report.verdict == INVALID
    by = {s.index: s for s in report.segments}
    assert not by[3].passed and not by[4].passed and by[5].passed  # both segments touching the spliced one
    assert by[3].rho is not None and by[3].rho > 0.5


def test_tampered_batch_indices_are_invalid(world: dict[str, Any]) -> None:
    def tamper(tdir: Path, m: dict[str, Any]) -> None:
        b = np.load(tdir / batches_path(2))
        b[1] = (b[1] + 7) % 1797
        np.save(tdir / batches_path(2), b, allow_pickle=False)

    tdir, cid = forged_copy(world, "tamper", tamper)
    report = run_store(world, tdir, cid, [1, 2])
    assert report.verdict == INVALID and "segment 2 does not reproduce" in report.reason
    by = {r.index: r for r in report.segments}
    assert by[1].passed and (by[2].rho or 0) > 0.01


def test_understated_update_norm_is_invalid(world: dict[str, Any]) -> None:
    """Top-Q trusts the recorded norms, so a norm that the checkpoints contradict is itself a fraud."""
    def understate(tdir: Path, m: dict[str, Any]) -> None:
        m["segments"][5]["updateNorm"] = 1e-9

    tdir, cid = forged_copy(world, "norm", understate, seal=False)
    report = run_store(world, tdir, cid, [5])
    assert report.verdict == INVALID and "updateNorm" in report.reason
    # with every norm recomputed from the checkpoints, the lie is caught even when segment 5 is not audited
    report = run_store(world, tdir, cid, [0], policy=BARE.with_overrides(top_q=1, top_q_from_checkpoints=True))
    assert report.verdict == INVALID and "segment 5 records updateNorm" in report.reason


def test_initialization_checks(world: dict[str, Any]) -> None:
    # checkpoint 0 taken from a trained model: neither the seeded init nor the declared distribution
    def pretrained(tdir: Path, m: dict[str, Any]) -> None:
        last = read_checkpoint(tdir / m["checkpoints"][-1]["path"])
        (tdir / checkpoint_path(0)).write_bytes(
            encode_checkpoint(0, 0, last.model, {"state": {}, "param_groups": last.optimizer["param_groups"]}))

    tdir, cid = forged_copy(world, "init-pretrained", pretrained)
    report = run_store(world, tdir, cid, [4], policy=get_policy(None).with_overrides(top_q=0, extra_samples=0))
    assert report.verdict == INVALID and "initialization" in report.reason and report.init is not None
    assert report.init["method"] == "seed"
    # a fresh init from another seed is plausible (a KS test would pass) but not the committed seed's: the
    # config's init.weightsHash (resealed or not) or the bit-exact re-initialization says so
    def other_init(tdir: Path, m: dict[str, Any]) -> None:
        shutil.copy(world["other"] / checkpoint_path(0), tdir / checkpoint_path(0))

    tdir, cid = forged_copy(world, "init-other", other_init)
    report = run_store(world, tdir, cid, [4], policy=get_policy(None).with_overrides(top_q=0, extra_samples=0))
    assert report.verdict == INVALID and "initialization" in report.reason, report.reason
    assert report.init is not None and not report.init["passed"]


def test_file_not_matching_its_hash_is_invalid(world: dict[str, Any]) -> None:
    def flip(tdir: Path, m: dict[str, Any]) -> None:
        data = bytearray((tdir / checkpoint_path(2)).read_bytes())
        data[-3] ^= 0xFF
        (tdir / checkpoint_path(2)).write_bytes(bytes(data))

    tdir, cid = forged_copy(world, "flip", flip, seal=False)
    report = run_store(world, tdir, cid, [2])
    assert report.verdict == INVALID and "is not the manifest's" in report.reason


def test_manifest_paths_outside_the_directory_are_invalid(world: dict[str, Any], tmp_path: Path) -> None:
    def escape(tdir: Path, m: dict[str, Any]) -> None:
        m["checkpoints"][1]["path"] = "../../../etc/passwd"

    tdir, cid = forged_copy(world, "escape", escape, seal=False)
    report = run_store(world, tdir, cid, [1])
    assert report.verdict == INVALID and "non-canonical" in report.reason
    # a local transcript whose canonical file is a symlink out of the directory: refused, not followed
    local = tmp_path / "t"
    shutil.copytree(world["tdir"], local)
    outside = tmp_path / "outside.safetensors"
    shutil.move(local / checkpoint_path(1), outside)
    (local / checkpoint_path(1)).symlink_to(outside)
    report = audit(DirSource(local), None, [1], policy=BARE, dataset_source=DirSource(world["out"] / "dataset"))
    assert report.verdict == INVALID and "outside the transcript directory" in report.reason


class _Payload:
    """Unpickling this would create a marker file: the engine must never unpickle."""

    marker = ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


def test_pickles_are_never_loaded(world: dict[str, Any], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = str(marker)

    def plant(tdir: Path, m: dict[str, Any]) -> None:
        (tdir / checkpoint_path(3)).write_bytes(pickle.dumps({"model": payload}))
        torch.save({"x": torch.zeros(2)}, tdir / checkpoint_path(6))
        np.save(tdir / batches_path(5), np.array([payload], dtype=object), allow_pickle=True)

    tdir, cid = forged_copy(world, "pickle", plant, seal=False)
    reseal(tdir, norms=False)  # hashes match the planted files: only the format check stands in the way
    cid = world["store"].add_directory(tdir)
    for seg, words in (([3], "safetensors"), ([6], "safetensors"), ([5], "plain .npy")):
        report = run_store(world, tdir, cid, seg)
        assert report.verdict == INVALID and words in report.reason, report.reason
    assert not marker.exists()


def test_malformed_and_oversize_evidence_is_invalid(world: dict[str, Any]) -> None:
    def garbage(tdir: Path, m: dict[str, Any]) -> None:
        m.clear()
        m["format"] = "proofreg-pol-transcript/1"

    _, cid = forged_copy(world, "garbage", garbage, seal=False)
    claim = claim_of(world["tdir"], cid)
    report = audit_training_claim(world["store"], claim, [0], policy=BARE)
    assert report.verdict == INVALID and "manifest" in report.reason
    report = audit_training_claim(world["store"], claim_of(world["tdir"], world["honest"].transcript_cid), [0],
                                  policy=BARE, limits=Limits(max_file_bytes=10_000))
    assert report.verdict == INVALID and "larger than the limit" in report.reason


def test_merkle_and_membership_failures_are_invalid(world: dict[str, Any], tmp_path: Path) -> None:
    manifest = json.loads((world["tdir"] / MANIFEST_NAME).read_text())
    assert verify_segment_proofs(manifest, bytes.fromhex(manifest["segmentRoot"][2:]), range(8)) == []
    assert verify_segment_proofs(manifest, bytes(32), [1, 4]) == [1, 4]  # proofs checked against the claim's root
    claim = claim_of(world["tdir"], world["honest"].transcript_cid)
    wrong = TrainingClaim(**{**claim.__dict__, "segment_root": bytes(32)})
    assert audit_training_claim(world["store"], wrong, [0], policy=BARE).verdict == INVALID
    # a dataset whose shard was swapped under an unchanged root: the shard hash is updated, the example
    # hashes (and so datasetRoot) are not, so only the membership proof of the replayed examples catches it
    ddir = tmp_path / "dataset"
    shutil.copytree(world["out"] / "dataset", ddir)
    first = int(np.load(world["tdir"] / batches_path(0))[0, 0])
    dm = json.loads((ddir / "dataset.json").read_text())
    shard, pos = dm["examples"][first][0], dm["examples"][first][1]
    x = np.load(ddir / dm["shards"][shard]["features"])
    x[pos] = 1.0 - x[pos]
    np.save(ddir / dm["shards"][shard]["features"], x, allow_pickle=False)
    dm["shards"][shard]["featuresHash"] = to_hex(sha256((ddir / dm["shards"][shard]["features"]).read_bytes()))
    (ddir / "dataset.json").write_text(json.dumps(dm))
    bad_cid = world["store"].add_directory(ddir)

    def point(tdir: Path, m: dict[str, Any]) -> None:
        m["dataset"]["cid"] = bad_cid

    tdir, cid = forged_copy(world, "membership", point, seal=False)
    report = run_store(world, tdir, cid, [0])
    assert report.verdict == INVALID and f"example {first} fails its membership proof" in report.reason


def test_store_down_and_missing_evidence_are_unavailable(world: dict[str, Any], tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on: a real connection refusal, no fake
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = DaemonStore(f"/ip4/127.0.0.1/tcp/{port}/http", retries=0, connect_timeout=0.5, timeout=1.0)
    claim = claim_of(world["tdir"], world["honest"].transcript_cid)
    report = audit_training_claim(down, claim, [0], policy=BARE)
    assert report.verdict == UNAVAILABLE and "manifest" in report.reason
    # a local transcript missing a batch file
    local = tmp_path / "t"
    shutil.copytree(world["tdir"], local)
    (local / batches_path(2)).unlink()
    report = audit(DirSource(local), None, [1, 2, 3], policy=BARE, dataset_source=DirSource(world["out"] / "dataset"))
    assert report.verdict == UNAVAILABLE and batches_path(2) in report.reason
    assert [s.index for s in report.segments] == [0, 1, 2]  # stops at the first missing file


def test_hostile_digests_and_headers_are_invalid(world: dict[str, Any], tmp_path: Path) -> None:
    """Integers where digests belong (as_hash would allocate that many bytes) and a corrupt .npy header
    (numpy's header parser raises tokenizer errors, not ValueError) end in Invalid, quickly."""
    local = tmp_path / "t"
    shutil.copytree(world["tdir"], local)
    m = json.loads((local / MANIFEST_NAME).read_text())
    m["checkpoints"][2]["ckptHash"] = 10**12
    (local / MANIFEST_NAME).write_text(json.dumps(m))
    report = audit(DirSource(local), None, [0], policy=BARE, dataset_source=DirSource(world["out"] / "dataset"))
    assert report.verdict == INVALID and "ckptHash is not" in report.reason
    ddir = tmp_path / "dataset"
    shutil.copytree(world["out"] / "dataset", ddir)
    dm = json.loads((ddir / "dataset.json").read_text())
    dm["examples"][5][2] = 10**12
    (ddir / "dataset.json").write_text(json.dumps(dm))
    report = audit(DirSource(world["tdir"]), None, [0], policy=BARE, dataset_source=DirSource(ddir))
    assert report.verdict == INVALID and "dataset.json is malformed" in report.reason
    shutil.rmtree(local)
    shutil.copytree(world["tdir"], local)
    data = bytearray((local / batches_path(1)).read_bytes())
    data[20:24] = b"(\xa0\n'"
    (local / batches_path(1)).write_bytes(bytes(data))
    reseal(local, norms=False)
    report = audit(DirSource(local), None, [1], policy=BARE, dataset_source=DirSource(world["out"] / "dataset"))
    assert report.verdict == INVALID and "plain .npy" in report.reason, report.reason
