"""Soundness regression suite (issue 11): a forged or stolen model is never judged Valid.

One test per forgery class. Each forges the way a cheating prover would — edit the evidence, train on from
there with the prover's own loop where that makes the forgery self-consistent (`tests.forgery.prover_continue`),
then reseal everything the prover controls: file hashes, update norms, finalWeightsHash, the config's
init.weightsHash, configHash, chainHead, segmentRoot (`tests.forgery.reseal_all`) — and asserts Invalid twice:
at the default policy (the contract's draws for a challenge seed plus, where the forgery is inside the run,
the segment a challenger names) and with every segment audited. Honest runs stay Valid.

Small on purpose (MLP 64→32→10 on the digits, 30 steps, k = 5): it runs in CI on every change.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from registry.core.claims import TrainingClaim
from registry.core.hashing import config_hash, keccak256, to_hex, weights_hash
from registry.core.params import preset
from registry.core.sampling import sampled_segments
from registry.pol.checkpoint import decode_checkpoint
from registry.pol.train import train
from registry.pol.transcript import MANIFEST_NAME, write_manifest
from registry.spec.datasets import build_builtin
from tests.forgery import prover_continue, read_manifest, reseal_all, write_checkpoint
from verifier.engine import DirSource, Engine, audit
from verifier.policy import get_policy
from verifier.report import INVALID, UNAVAILABLE, VALID, AuditReport, ParentClaim

POLICY = get_policy(None)
S = preset("default").samples
MLP = {"in_features": 64, "hidden": [32], "out_features": 10, "dropout": 0.1}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("soundness")
    ds = build_builtin("digits", out / "dataset")
    runs = {seed: train(out / f"run{seed}", family_args=MLP, epochs=1, max_steps=30, steps_per_segment=5,
                        seed=seed, dataset=ds).transcript_dir for seed in (3, 4)}
    return {"out": out, "ds": ds, "honest": runs[3], "other": runs[4]}


def claim_of(tdir: Path) -> TrainingClaim:
    return TrainingClaim.from_manifest(read_manifest(tdir), str(tdir))


def run_audit(lab: dict[str, Any], tdir: Path, *, named: list[int] | None = None, all_segments: bool = False,
              claim: TrainingClaim | None = None, seed_tag: str = "default", **kw: Any) -> AuditReport:
    claim = claim or claim_of(tdir)
    seed = keccak256(f"soundness/{seed_tag}".encode())
    segments = [] if all_segments else sampled_segments(seed, S, claim.num_segments, named or [])
    return audit(DirSource(tdir), claim, segments, dataset=lab["ds"], policy=POLICY, seed=seed,
                 samples_drawn=0 if all_segments else S, all_segments=all_segments, **kw)


def assert_invalid(lab: dict[str, Any], tdir: Path, fragment: str, named: list[int] | None = None,
                   claim: TrainingClaim | None = None, **kw: Any) -> None:
    for everything in (False, True):
        report = run_audit(lab, tdir, named=named, all_segments=everything, claim=claim, **kw)
        assert report.verdict == INVALID, (everything, report.reason)
        assert fragment in report.reason, (everything, report.reason)


def forge(lab: dict[str, Any], name: str, edit: Callable[[Path, dict[str, Any]], None],
          base: str = "honest") -> Path:
    tdir = lab["out"] / name
    if tdir.exists():
        shutil.rmtree(tdir)
    shutil.copytree(lab[base], tdir)
    edit(tdir, read_manifest(tdir))
    reseal_all(tdir)
    return tdir


def ckpt(tdir: Path, i: int) -> Any:
    m = read_manifest(tdir)
    return decode_checkpoint((tdir / m["checkpoints"][i]["path"]).read_bytes())


def test_honest_run_is_valid_at_the_default_policy_and_with_every_segment(lab: dict[str, Any]) -> None:
    for everything in (False, True):
        report = run_audit(lab, lab["honest"], all_segments=everything)
        assert report.verdict == VALID, report.reason
        assert report.init is not None and report.init["origin"] == "seed" and report.init["originVerified"]
        assert {0, 5} <= {r.index for r in report.segments}  # first and last, whatever the sample
        assert report.checks["finalWeightsHash"] == "checked on the last checkpoint"
        assert all(st["passed"] for r in report.segments for st in r.state.values())
        assert "optim.momentum_buffer" in report.segments[0].state


# 1. Forged optimizer state --------------------------------------------------------------------------------------

def test_forged_momentum_is_invalid(lab: dict[str, Any]) -> None:
    """Momentum at checkpoint 3 replaced, the rest trained on from it: every segment's parameters replay,
    the weights reached are ones no honest run produced; only the optimizer state of segment 2's end tells."""
    def edit(tdir: Path, m: dict[str, Any]) -> None:
        c = ckpt(tdir, 3)
        for entry in c.optimizer["state"].values():
            entry["momentum_buffer"] = entry["momentum_buffer"] * 5.0
        write_checkpoint(tdir, 3, c.step, c.model, c.optimizer)
        prover_continue(tdir, 3, lab["ds"])

    tdir = forge(lab, "momentum", edit)
    assert_invalid(lab, tdir, "optim.", named=[2])
    report = run_audit(lab, tdir, all_segments=True)
    bad = [r for r in report.segments if not r.passed]
    assert [r.index for r in bad] == [2] and bad[0].rho == 0.0  # parameters reproduce exactly
    assert "momentum_buffer" in (bad[0].error or "") and not bad[0].state["optim.momentum_buffer"]["passed"]


def test_clip_in_the_config_that_the_evidence_did_not_follow_is_invalid(lab: dict[str, Any]) -> None:
    """The config's `clip` is read by replay: a prover who declares clipping the run never did (configHash and
    every digest resealed) is caught wherever an audited segment's gradients exceed the declared bound."""
    def edit(tdir: Path, m: dict[str, Any]) -> None:
        m["config"]["clip"] = {"type": "norm", "maxNorm": 1e-4, "normType": 2.0}
        write_manifest(tdir / MANIFEST_NAME, m)

    tdir = forge(lab, "clip", edit)
    assert read_manifest(tdir)["config"]["clip"]["maxNorm"] == 1e-4
    assert_invalid(lab, tdir, "segment")
    report = run_audit(lab, tdir, all_segments=True)
    assert report.segments and all(not r.passed for r in report.segments)


@pytest.mark.parametrize("key, value", [
    ("precision", {"autocast": "bfloat16", "matmulPrecision": "highest", "cudnnTf32": True}),
    ("loss", {"type": "cross_entropy", "labelSmoothing": 0.5, "ignoreIndex": -100}),
    ("accumulation", {"microBatches": 3}),
    ("augment", [{"type": "gaussianNoise", "std": 0.1}]),
])
def test_step_declarations_the_evidence_did_not_follow_are_invalid(lab: dict[str, Any], key: str,
                                                                   value: Any) -> None:
    """Precision, loss options, accumulation and augmentation are read by replay: declared on a run that
    did not use them, every digest resealed, they make every audited segment diverge, or the config is
    refused as one that cannot describe the run (a batch of 32 has no 3 equal micro-batches)."""
    def edit(tdir: Path, m: dict[str, Any]) -> None:
        m["config"][key] = value
        write_manifest(tdir / MANIFEST_NAME, m)

    tdir = forge(lab, f"step-{key}", edit)
    assert read_manifest(tdir)["config"][key] == value
    for everything in (False, True):
        report = run_audit(lab, tdir, all_segments=everything)
        assert report.verdict == INVALID, (key, everything, report.reason)


# 2. Hyperparameters in a checkpoint differ from the config -----------------------------------------------------

def test_lr_zero_copy_segment_is_invalid(lab: dict[str, Any]) -> None:
    """A segment that just copies the weights: learning rate 0 declared in the manifest and carried in the
    checkpoint, checkpoint i+1 = checkpoint i."""
    def edit(tdir: Path, m: dict[str, Any]) -> None:
        c = ckpt(tdir, 2)
        for g in c.optimizer["param_groups"]:
            g["lr"], g["momentum"] = 0.0, 0.0
        write_checkpoint(tdir, 2, c.step, c.model, c.optimizer)
        write_checkpoint(tdir, 3, m["checkpoints"][3]["step"], c.model, c.optimizer)
        m["segments"][2]["learningRates"] = [[0.0]] * len(m["segments"][2]["learningRates"])
        write_manifest(tdir / MANIFEST_NAME, m)
        prover_continue(tdir, 3, lab["ds"])

    tdir = forge(lab, "lr0", edit)
    assert_invalid(lab, tdir, "learningRates differ from the committed schedule")


def test_checkpoint_hyperparameters_differing_from_config_are_invalid(lab: dict[str, Any]) -> None:
    """Checkpoint 3 carries maximize=True and weight decay 0.5 (and the prover trained on with them); the
    manifest's declarations are left honest. The report names the field."""
    def edit(tdir: Path, m: dict[str, Any]) -> None:
        c = ckpt(tdir, 3)
        for g in c.optimizer["param_groups"]:
            g["maximize"], g["weight_decay"] = True, 0.5
        write_checkpoint(tdir, 3, c.step, c.model, c.optimizer)
        prover_continue(tdir, 3, lab["ds"])

    tdir = forge(lab, "hyper", edit)
    assert_invalid(lab, tdir, "hyperparameters disagree with the config: param group 0 maximize", named=[3])


# 3. Final weights are not the last checkpoint -------------------------------------------------------------------

def test_final_weights_not_the_last_checkpoint_are_invalid(lab: dict[str, Any]) -> None:
    """The claim commits a stolen model's hash as finalWeightsHash over an honest transcript."""
    tdir = lab["out"] / "final"
    shutil.copytree(lab["honest"], tdir)
    m = read_manifest(tdir)
    stolen = {k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt(lab["other"], 6).model.items()}
    m["finalWeightsHash"] = to_hex(weights_hash(stolen))
    write_manifest(tdir / MANIFEST_NAME, m)
    assert_invalid(lab, tdir, "finalWeightsHash")


# 4. Checkpoint 0 from another seed / pre-trained ------------------------------------------------------------------

def test_checkpoint_zero_from_another_seed_is_invalid(lab: dict[str, Any]) -> None:
    """The seed-4 run claimed as seed 3's (config init seed rewritten, everything resealed): every segment
    replays exactly; only the bit-exact re-initialization tells (KS would pass: a fresh init of the family)."""
    def edit(tdir: Path, m: dict[str, Any]) -> None:
        m["config"]["init"]["seed"] = 3
        m["config"]["seed"] = 3
        write_manifest(tdir / MANIFEST_NAME, m)

    tdir = forge(lab, "other-seed", edit, base="other")
    assert_invalid(lab, tdir, "not mlp initialized on the CPU with the committed seed 3")


def test_pretrained_checkpoint_zero_is_invalid(lab: dict[str, Any]) -> None:
    """Checkpoint 0 is another run's trained model (optimizer state dropped), trained on honestly from there,
    claimed as a fresh seeded run."""
    def edit(tdir: Path, m: dict[str, Any]) -> None:
        trained = ckpt(lab["other"], 6)
        c0 = ckpt(tdir, 0)
        write_checkpoint(tdir, 0, 0, trained.model, c0.optimizer)
        prover_continue(tdir, 0, lab["ds"])

    tdir = forge(lab, "pretrained", edit)
    assert_invalid(lab, tdir, "initialization")
    # declared honestly as external weights, the same transcript is Valid as to training, origin not verified
    m = read_manifest(tdir)
    m["config"]["init"] = {"origin": "external", "weightsHash": m["config"]["init"]["weightsHash"]}
    write_manifest(tdir / MANIFEST_NAME, m)
    reseal_all(tdir)
    report = run_audit(lab, tdir, all_segments=True)
    assert report.verdict == VALID, report.reason
    assert report.init is not None and not report.init["originVerified"] and "origin not verified" in report.reason


def test_claim_init_fields_must_match_the_config(lab: dict[str, Any]) -> None:
    claim = claim_of(lab["honest"])
    lying = TrainingClaim(*claim.claim_tuple()[:8], bytes(32), 0, 0)
    assert_invalid(lab, lab["honest"], "initWeightsHash", claim=lying)
    lying = TrainingClaim(*claim.claim_tuple()[:9], 0, 2)
    assert_invalid(lab, lab["honest"], "origin", claim=lying)


# Lineage ----------------------------------------------------------------------------------------------------------

def test_fine_tuning_lineage(lab: dict[str, Any]) -> None:
    """A child run starting from the honest run's final weights, declared with parent claim 7."""
    parent_final = ckpt(lab["honest"], 6).model

    def edit(tdir: Path, m: dict[str, Any]) -> None:
        c0 = ckpt(tdir, 0)
        write_checkpoint(tdir, 0, 0, parent_final, c0.optimizer)
        m["config"]["init"] = {"origin": "parent", "parentClaimId": 7, "weightsHash": ""}
        write_manifest(tdir / MANIFEST_NAME, m)
        prover_continue(tdir, 0, lab["ds"])

    tdir = forge(lab, "child", edit, base="other")
    good = ParentClaim(7, weights_hash(parent_final), "Valid")
    report = run_audit(lab, tdir, all_segments=True, parent_lookup={7: good}.get)
    assert report.verdict == VALID, report.reason
    assert report.init is not None and report.init["parent"]["claimId"] == 7 and report.init["originVerified"]
    for lookup, fragment in (
        ({7: ParentClaim(7, weights_hash(parent_final), "Invalid")}.get, "parent claim 7 was judged Invalid"),
        ({7: ParentClaim(7, weights_hash(parent_final), "Valid", tainted=True)}.get, "tainted"),
        ({7: ParentClaim(7, bytes(32), "Valid")}.get, "not the final weights of parent claim 7"),
        ({}.get, "parent claim 7 is not registered"),
    ):
        assert_invalid(lab, tdir, fragment, parent_lookup=lookup)
    report = run_audit(lab, tdir, all_segments=True)  # no chain to look the parent up
    assert report.verdict == UNAVAILABLE and "parent claim 7" in report.reason


# 5. Lying update norms and epoch labels steering top-Q ------------------------------------------------------------

def test_lying_epoch_labels_are_invalid_whatever_the_sample(lab: dict[str, Any]) -> None:
    def edit(tdir: Path, m: dict[str, Any]) -> None:
        for i, s in enumerate(m["segments"]):
            s["epoch"] = i  # one segment per "epoch": top-Q would audit every one... or steer as it likes
        write_manifest(tdir / MANIFEST_NAME, m)

    tdir = forge(lab, "epochs", edit)
    assert_invalid(lab, tdir, "declares epoch")


def test_lying_update_norms_steering_top_q_are_invalid(lab: dict[str, Any]) -> None:
    """Segment 2 forged (checkpoint 3's weights perturbed, trained on from there), its declared norm made
    tiny and segment 4's huge so that top-Q looks at 4. Caught where segment 2 is audited or its two
    checkpoints are held; the bound never relied on top-Q."""
    def edit(tdir: Path, m: dict[str, Any]) -> None:
        c = ckpt(tdir, 3)
        model = {k: v + 0.02 * torch.randn_like(v) if v.is_floating_point() else v for k, v in c.model.items()}
        write_checkpoint(tdir, 3, c.step, model, c.optimizer)
        prover_continue(tdir, 3, lab["ds"])

    tdir = forge(lab, "norms", edit)
    m = read_manifest(tdir)
    m["segments"][2]["updateNorm"] = 1e-6
    m["segments"][4]["updateNorm"] = 1e3
    write_manifest(tdir / MANIFEST_NAME, m)
    assert_invalid(lab, tdir, "segment 2", named=[2])
    # segments 1 and 3 audited, 2 not: checkpoints 2 and 3 are both held, so 2's lie is recomputed
    report = audit(DirSource(tdir), claim_of(tdir), [1, 3], dataset=lab["ds"],
                   policy=POLICY.with_overrides(top_q=0, extra_samples=0))
    assert report.verdict == INVALID and "segment 2 records updateNorm" in report.reason, report.reason
    # the reason does not depend on how far the prefetch got: held here until segment 4's checkpoints are in
    # (a delay induced on purpose), segment 2's lie is still the one reported, never 4's from the prefetch
    engine_replay = Engine._replay

    def late_replay(self: Engine, manifest: dict[str, Any], dataset: Any, got: Any, *args: Any) -> None:
        deadline = time.monotonic() + 30
        while got.index == 2 and 5 not in self._ckpts and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got.index != 2 or 5 in self._ckpts, "the prefetch of segment 4 never arrived"
        engine_replay(self, manifest, dataset, got, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Engine, "_replay", late_replay)
        report = audit(DirSource(tdir), claim_of(tdir), [2, 4], dataset=lab["ds"],
                       policy=POLICY.with_overrides(top_q=0, extra_samples=0))
    assert report.verdict == INVALID and report.reason.startswith("segment 2 "), report.reason
    assert {r.index for r in report.segments} >= {2, 4}


# Chain head -------------------------------------------------------------------------------------------------------

def test_chain_head_mismatch_is_invalid(lab: dict[str, Any]) -> None:
    # the claim commits another chain head than the (self-consistent) manifest
    claim = claim_of(lab["honest"])
    other = claim_of(lab["other"])
    lying = TrainingClaim(*claim.claim_tuple()[:2], other.chain_head, *claim.claim_tuple()[3:])
    assert_invalid(lab, lab["honest"], "chainHead", claim=lying)
    # a manifest whose chainHead is not its checkpoints' chain (the claim follows the manifest)
    tdir = lab["out"] / "chain"
    shutil.copytree(lab["honest"], tdir)
    m = read_manifest(tdir)
    m["chainHead"] = to_hex(other.chain_head)
    write_manifest(tdir / MANIFEST_NAME, m)
    assert_invalid(lab, tdir, "chainHead")


def test_config_without_init_origin_is_invalid(lab: dict[str, Any]) -> None:
    tdir = lab["out"] / "noinit"
    shutil.copytree(lab["honest"], tdir)
    m = read_manifest(tdir)
    del m["config"]["init"]
    m["configHash"] = to_hex(config_hash(m["config"]))
    write_manifest(tdir / MANIFEST_NAME, m)
    reseal_all(tdir)
    claim = TrainingClaim(*claim_of(tdir).claim_tuple()[:8])
    assert_invalid(lab, tdir, "initialization origin", claim=claim)


def test_reports_carry_every_state_distance(lab: dict[str, Any]) -> None:
    report = run_audit(lab, lab["honest"], all_segments=True)
    body = json.loads(json.dumps(report.to_json()))
    seg = body["segments"][0]
    assert set(seg["state"]) == {"optim.momentum_buffer"}
    assert seg["state"]["optim.momentum_buffer"]["threshold"] == POLICY.state_threshold
    assert body["checks"]["chainHead"] and body["checks"]["updateNormsRecomputed"] == list(range(6))
    assert body["claim"]["origin"] == "seed" and body["init"]["originVerified"]


# Sampling against a liar -------------------------------------------------------------------------------------------

def test_detection_against_a_prover_who_lies_in_every_declared_field(lab: dict[str, Any]) -> None:
    """20 segments, 2 forged (10%), the forged ones declared as the smallest updates and two honest ones as
    huge (top-Q steered away), epochs as the config says (a lie there is Invalid outright). The audit plan of
    the engine hits a forged segment in >= 99% of challenges, as the draws alone promise; real audits of a
    few challenges are Invalid."""
    from verifier.calibrate import liar_detection

    base = lab["out"] / "long"
    run = train(base, family_args=MLP, epochs=2, max_steps=100, steps_per_segment=5, seed=5, dataset=lab["ds"])
    lab["long"] = run.transcript_dir

    def edit(tdir: Path, m: dict[str, Any]) -> None:
        for i in (5, 15):  # segments 4 and 14 end on weights their replay does not reach
            c = ckpt(tdir, i)
            model = {k: v + 0.02 * torch.randn_like(v) if v.is_floating_point() else v for k, v in c.model.items()}
            write_checkpoint(tdir, i, c.step, model, c.optimizer)
            prover_continue(tdir, i, lab["ds"])

    tdir = forge(lab, "liar", edit, base="long")
    m = read_manifest(tdir)
    for i, s in enumerate(m["segments"]):
        s["updateNorm"] = 1e-9 if i in (4, 14) else (1e3 if i in (7, 17) else s["updateNorm"])
    write_manifest(tdir / MANIFEST_NAME, m)
    result = liar_detection(m, [4, 14], trials=2000, samples=S, policy=POLICY)
    assert result["bound"] >= 0.99 and result["rate"] >= 0.99, result
    print(f"liar detection: {result['detected']}/{result['trials']} = {result['rate']:.4f} "
          f"(bound {result['bound']:.4f})")
    report = run_audit(lab, tdir, seed_tag="liar/0")
    assert report.verdict == INVALID, report.reason


def test_parent_lookup_on_the_real_contract(lab: dict[str, Any], d: Any, tmp_path: Path) -> None:
    """The parent claim's final weights, status and taint come from the embedded chain's registry; the child
    is committed with origin Parent and audited Valid against it."""
    from registry.pol.publish import publish_transcript
    from registry.store.embedded import EmbeddedStore
    from verifier.audit import chain_parent_lookup

    store = EmbeddedStore(tmp_path / "store")
    parent = publish_transcript(lab["honest"], store, lab["ds"].path)
    parent_id = d.commit(parent.claim_tuple(), d.accounts[1])
    lookup = chain_parent_lookup(d.reg)
    assert lookup(parent_id + 5) is None
    got = lookup(parent_id)
    assert got is not None and got.final_weights_hash == parent.summary.final_weights_hash
    assert got.status == "Committed" and not got.tainted

    def edit(tdir: Path, m: dict[str, Any]) -> None:
        c0 = ckpt(tdir, 0)
        write_checkpoint(tdir, 0, 0, ckpt(lab["honest"], 6).model, c0.optimizer)
        m["config"]["init"] = {"origin": "parent", "parentClaimId": parent_id, "weightsHash": ""}
        m["dataset"]["cid"] = None
        write_manifest(tdir / MANIFEST_NAME, m)
        prover_continue(tdir, 0, lab["ds"])

    tdir = forge(lab, "chain-child", edit, base="other")
    child = publish_transcript(tdir, store, lab["ds"].path)
    assert child.claim_tuple()[8:] == (parent.summary.final_weights_hash, parent_id, 1)
    d.commit(child.claim_tuple(), d.accounts[2])
    report = run_audit(lab, tdir, all_segments=True, parent_lookup=lookup)
    assert report.verdict == VALID, report.reason
    assert report.init is not None and report.init["parent"]["status"] == "Committed"


@pytest.mark.parametrize("threads", [1, 2])
def test_honest_runs_stay_valid_across_thread_counts(lab: dict[str, Any], threads: int) -> None:
    """Both honest runs, every segment, the full state compared, replayed at 1 and 2 threads (the figures
    over 20 runs are from `proofreg-verifier calibrate --train 20 --mix --threads 1,2`, README)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for run in ("honest", "other"):
            report = run_audit(lab, lab[run], all_segments=True)
            assert report.verdict == VALID, (run, threads, report.reason)
    finally:
        torch.set_num_threads(before)
