"""Attack suite: the adversaries of the Proof-of-Learning registry, against the real audit engine and contract.

Every transcript here is a real torch run published to a real embedded content store; each attack is what a
forger would do to the files, resealing the manifest wherever that makes the forgery self-consistent. The
audit is the verifier's own (`verifier.audit.audit_training_claim`) at the default tolerance policy, with the
segments the contract's sampling rule assigns for a challenge seed (`registry.core.sampling`), so the detection
rates below are those of the deployed protocol:

- interpolation spoof, checkpoint splice from another run, data substitution (a run trained on other data,
  claimed against the committed dataset), a fine-tuned copy of a stolen model with a fabricated short history:
  detected in every trial;
- replay of someone else's transcript under a new prover: the evidence is genuine, so the audit accepts it;
  the contract's `ownerOf` keeps naming the earlier prover;
- an adversary who forges a fraction f of the segments: the measured detection rate over many challenge
  seeds matches the policy's analytic rate;
- 20 honest runs with different seeds: no false reject.

The figures are printed as a table and written to `$PROOFREG_ATTACK_REPORT` (JSON) when set; the README
records the latest ones.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from registry.chain.local import EmbeddedChain
from registry.core.claims import TrainingClaim
from registry.core.hashing import as_hash, config_hash, keccak256, to_hex
from registry.core.params import preset
from registry.core.sampling import sampled_segments
from registry.pol.batches import epoch_batches
from registry.pol.publish import publish_transcript
from registry.pol.recorder import Recorder
from registry.pol.train import DEFAULT_MLP_ARGS, train
from registry.pol.transcript import MANIFEST_NAME, write_manifest
from registry.spec.datasets import Dataset, build_builtin, build_dataset
from registry.spec.models import build_model
from registry.store.embedded import EmbeddedStore
from tests.forgery import claim_tuple, forge_interpolated, forge_spliced, read_manifest, reseal
from verifier.audit import INVALID, VALID, audit_training_claim
from verifier.engine import plan_segments, top_q_segments
from verifier.policy import get_policy

pytestmark = pytest.mark.slow

POLICY = get_policy(None)
PARAMS = preset("default")
S = PARAMS.samples  # the contract's draws per challenge
RESULTS: dict[str, Any] = {"policy": POLICY.name, "samples": S, "attacks": {}}


@dataclass
class Lab:
    root: Path
    store: EmbeddedStore
    digits: Dataset

    def publish(self, tdir: Path, dataset_dir: Path | None = None) -> TrainingClaim:
        """Stores a transcript (dataset too, if its manifest names no CID yet); the claim a prover commits."""
        cid = publish_transcript(tdir, self.store, dataset_dir or self.digits.path).transcript_cid
        return TrainingClaim(*claim_tuple(tdir, cid))

    def audit(self, claim: TrainingClaim, seed: bytes) -> Any:
        """What a committee member audits for a challenge with this seed: the contract's S draws + the policy."""
        segments = sampled_segments(seed, S, claim.num_segments)
        return audit_training_claim(self.store, claim, segments, seed=seed, samples_drawn=S, policy=POLICY,
                                    workdir=self.root)


def _seed(tag: str, t: int) -> bytes:
    return keccak256(f"attack-suite/{tag}/{t}".encode())


def _record(name: str, trials: int, detected: int, **extra: Any) -> None:
    RESULTS["attacks"][name] = {"trials": trials, "detected": detected, "rate": detected / trials, **extra}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    root = tmp_path_factory.mktemp("attacks")
    return Lab(root, EmbeddedStore(root / "store"), build_builtin("digits", root / "digits"))


@pytest.fixture(scope="module")
def honest(lab: Lab) -> Path:
    """The victim's run: 2 epochs of the default MLP on the digits, k = 4 (28 segments)."""
    result = train(lab.root / "honest", dataset=lab.digits, epochs=2, batch_size=32, steps_per_segment=4, seed=0)
    lab.publish(result.transcript_dir)
    return result.transcript_dir


def _audit_trials(lab: Lab, claim: TrainingClaim, tag: str, trials: int) -> list[Any]:
    return [lab.audit(claim, _seed(tag, t)) for t in range(trials)]


def test_interpolation_spoof_is_caught(lab: Lab, honest: Path) -> None:
    forged = forge_interpolated(honest, lab.root / "interpolated")
    claim = lab.publish(forged.path)
    reports = _audit_trials(lab, claim, "interp", 3)
    assert all(r.verdict == INVALID for r in reports), [r.reason for r in reports]
    rhos = [s.rho for r in reports for s in r.segments if s.rho is not None]
    _record("interpolation spoof", len(reports), sum(r.verdict == INVALID for r in reports), min_rho=min(rhos))


def test_checkpoint_splice_from_another_run_is_caught(lab: Lab, honest: Path) -> None:
    other = train(lab.root / "other-seed", dataset=lab.digits, epochs=2, batch_size=32, steps_per_segment=4,
                  seed=1).transcript_dir
    forged = forge_spliced(honest, other, lab.root / "spliced", index=9)
    claim = lab.publish(forged.path)
    reports = _audit_trials(lab, claim, "splice", 3)
    assert all(r.verdict == INVALID for r in reports), [r.reason for r in reports]
    # The splice makes the largest update of its epoch: top-Q alone finds it, whatever the seed.
    assert 8 in top_q_segments(read_manifest(forged.path), POLICY.top_q) or 9 in top_q_segments(
        read_manifest(forged.path), POLICY.top_q)
    _record("checkpoint splice", len(reports), sum(r.verdict == INVALID for r in reports))


def test_data_substitution_is_caught(lab: Lab, honest: Path) -> None:
    """The forger trains on data it does not disclose (here: the digits with shuffled labels) and claims the
    public dataset: manifest pointed at the committed dataset and resealed, every file self-consistent."""
    x, y = lab.digits.arrays()
    private = build_dataset(lab.root / "private", "digits-private", x, np.random.default_rng(5).permutation(y),
                            num_classes=10)
    run = train(lab.root / "substituted", dataset=private, epochs=2, batch_size=32, steps_per_segment=4, seed=0)
    tdir = run.transcript_dir
    m = read_manifest(tdir)
    public = read_manifest(honest)["dataset"]
    m["dataset"] = dict(public)
    m["config"]["dataset"] = {"datasetRoot": public["datasetRoot"], "numExamples": public["numExamples"]}
    m["configHash"] = to_hex(config_hash(m["config"]))
    write_manifest(tdir / MANIFEST_NAME, m)
    reseal(tdir, checkpoints=False, batches=False)
    claim = lab.publish(tdir)
    assert claim.dataset_root == as_hash(public["datasetRoot"])
    reports = _audit_trials(lab, claim, "substitution", 3)
    assert all(r.verdict == INVALID for r in reports), [r.reason for r in reports]
    _record("data substitution", len(reports), sum(r.verdict == INVALID for r in reports))


def _fine_tune_from(stolen: Path, out: Path, dataset: Dataset, steps: int, seed: int) -> Path:
    """The thief's "training run": starts from the victim's final weights, fine-tunes a few steps with the
    recorder on, and declares no seed, so no re-initialization can be compared with its checkpoint 0."""
    final = sorted((stolen / "checkpoints").rglob("*.safetensors"))[-1]
    from registry.pol.checkpoint import decode_checkpoint

    weights = decode_checkpoint(final.read_bytes()).model
    model = build_model("mlp", DEFAULT_MLP_ARGS)
    model.load_state_dict(weights)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rec = Recorder(out, model, opt, family="mlp", family_args=DEFAULT_MLP_ARGS, dataset=dataset,
                   steps_per_segment=4, config={"note": "fine-tuned"}, rng_seed=seed)
    model.train()
    with rec:
        for n, (epoch, idx) in enumerate(epoch_batches(len(dataset), 32, 1, seed)):
            if n >= steps:
                break
            x, y = dataset.batch(idx)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            rec.step(idx, epoch=epoch)
        rec.finish()
    return out


def test_fine_tuned_copy_with_fabricated_history_is_caught(lab: Lab, honest: Path) -> None:
    """The thief claims its fine-tuned copy as a fresh run from a seed (config init rewritten, resealed): the
    bit-exact re-initialization fails. Declared honestly as external weights (what the recorder writes for a
    model that no seed reproduces), the training is real and the claim is Valid, but its report says the
    origin is not verified (docs/threat-model.md)."""
    tdir = _fine_tune_from(honest, lab.root / "fine-tuned" / "transcript", lab.digits, steps=16, seed=3)
    external = lab.publish(tdir)
    report = lab.audit(external, _seed("finetune-external", 0))
    assert report.verdict == VALID and "origin not verified" in report.reason, report.reason
    assert report.init is not None and not report.init["originVerified"]
    m = read_manifest(tdir)
    m["config"]["init"] = {"origin": "seed", "seed": 3, "weightsHash": m["config"]["init"]["weightsHash"]}
    m["configHash"] = to_hex(config_hash(m["config"]))
    write_manifest(tdir / MANIFEST_NAME, m)
    claim = lab.publish(tdir)
    reports = _audit_trials(lab, claim, "finetune", 3)
    assert all(r.verdict == INVALID for r in reports), [r.reason for r in reports]
    assert all("initialization" in r.reason for r in reports), reports[0].reason
    _record("fine-tuned stolen model claimed as seeded", len(reports), sum(r.verdict == INVALID for r in reports))


def test_replayed_transcript_loses_ownership(lab: Lab, honest: Path) -> None:
    """Ownership theft: a second prover commits the victim's genuine transcript. Its evidence replays (there
    is nothing to detect in the files), so the earlier claim must win `ownerOf`."""
    claim = lab.publish(honest)
    assert lab.audit(claim, _seed("replay", 0)).verdict == VALID
    chain = EmbeddedChain(preset("dev"))
    reg, (victim, thief) = chain.registry, chain.accounts[1:3]
    bond = chain.params.training_bond
    struct = claim_tuple(honest, claim.transcript_cid)
    for who in (victim, thief):
        tx = reg.functions.commitTraining(struct).transact({"from": who, "value": bond})
        assert chain.w3.eth.get_transaction_receipt(tx)["status"] == 1
    owner = reg.functions.ownerOf(claim.final_weights_hash).call()
    assert owner == victim
    assert reg.functions.ownerClaimOf(claim.final_weights_hash).call() == 1
    _record("transcript replay (ownership theft)", 1, int(owner == victim), note="earlier claim keeps ownerOf")


def _selection(manifest: dict[str, Any], seed: bytes, n: int) -> set[int]:
    """The segments a default-policy audit replays for this seed (the engine's own planning functions)."""
    return set(plan_segments(manifest, sampled_segments(seed, S, n), seed, S, POLICY))


@pytest.mark.parametrize("fraction", [0.1, 0.04])
def test_fraction_of_forged_segments_detection_matches_the_policy(lab: Lab, fraction: float) -> None:
    """The adversary forges a fraction f of the segments (batch files of those segments swapped for other
    examples, resealed). Every segment is audited once for real; then, over many challenge seeds, a claim is
    caught when the policy's selection contains a forged segment that failed. A few seeds run the whole audit
    end to end to show that the selection model is the engine's."""
    key = f"fraction-{fraction}"
    run = train(lab.root / key, dataset=lab.digits, epochs=2, batch_size=32, steps_per_segment=2, seed=11)
    tdir = run.transcript_dir
    m = read_manifest(tdir)
    n = int(m["numSegments"])
    rng = np.random.default_rng(int(fraction * 1000))
    forged = sorted(int(i) for i in rng.choice(n, size=max(1, round(fraction * n)), replace=False))
    for s in forged:
        path = tdir / m["segments"][s]["batches"]
        arr = np.load(path, allow_pickle=False)
        arr[-1] = rng.integers(0, len(lab.digits), size=arr.shape[1])
        np.save(path, arr, allow_pickle=False)
    reseal(tdir, checkpoints=False)
    claim = lab.publish(tdir)

    full = audit_training_claim(lab.store, claim, list(range(n)), policy=POLICY, workdir=lab.root)
    failed = {s.index for s in full.segments if not s.passed}
    assert failed == set(forged), f"forged {forged}, failing {sorted(failed)}"

    manifest = read_manifest(tdir)
    trials = 400
    caught = sum(bool(_selection(manifest, _seed(key, t), n) & failed) for t in range(trials))
    for t in range(3):  # end to end: the engine audits exactly the modelled selection
        seed = _seed(key, t)
        report = lab.audit(claim, seed)
        assert {s.index for s in report.segments} == _selection(manifest, seed, n)
        assert report.verdict == (INVALID if _selection(manifest, seed, n) & failed else VALID)

    draws = S + POLICY.extra_samples
    analytic = 1 - (1 - len(forged) / n) ** draws  # draws with replacement; top-Q can only add to it
    rate = caught / trials
    sigma = math.sqrt(max(analytic * (1 - analytic), 1e-4) / trials)
    assert rate >= analytic - 4 * sigma, f"detection {rate:.3f} below the analytic {analytic:.3f}"
    cost = len(_selection(manifest, _seed(key, 0), n)) / n
    _record(f"forged fraction f={len(forged) / n:.3f} ({len(forged)}/{n} segments)", trials, caught,
            analytic=round(analytic, 4), audited_fraction=round(cost, 3))


def test_honest_runs_are_not_rejected(lab: Lab) -> None:
    """False rejects: 20 honest runs (different seeds, dropout on), every segment replayed."""
    runs, rejected, worst = 20, 0, 0.0
    for seed in range(runs):
        result = train(lab.root / f"honest-{seed}", dataset=lab.digits, epochs=1, batch_size=32,
                       steps_per_segment=5, seed=100 + seed, max_steps=15)
        claim = lab.publish(result.transcript_dir)
        report = audit_training_claim(lab.store, claim, list(range(claim.num_segments)), policy=POLICY,
                                      workdir=lab.root)
        rejected += report.verdict != VALID
        worst = max([worst, *(s.rho for s in report.segments if s.rho is not None)])
    assert rejected == 0, f"{rejected} of {runs} honest runs rejected"
    RESULTS["honest"] = {"runs": runs, "rejected": rejected, "false_reject_rate": rejected / runs, "max_rho": worst}


def test_zz_report(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints the table (and writes $PROOFREG_ATTACK_REPORT); runs last in this module."""
    assert RESULTS["attacks"], "no attack ran"
    lines = [f"attack suite, policy {POLICY.name} (S={S} contract draws + {POLICY.extra_samples} extra, "
             f"top-{POLICY.top_q} per epoch, delta={POLICY.threshold:g})"]
    for name, r in RESULTS["attacks"].items():
        extra = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("trials", "detected", "rate"))
        lines.append(f"  {name:<48} detected {r['detected']}/{r['trials']} = {r['rate']:.3f}  {extra}")
    if "honest" in RESULTS:
        h = RESULTS["honest"]
        lines.append(f"  honest runs: {h['rejected']}/{h['runs']} rejected (false-reject rate "
                     f"{h['false_reject_rate']:.3f}), max rho {h['max_rho']:.2g}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    target = os.environ.get("PROOFREG_ATTACK_REPORT")
    if target:
        Path(target).write_text(json.dumps(RESULTS, indent=2) + "\n")
