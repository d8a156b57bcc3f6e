"""A 10,000-segment transcript end to end: record, publish (embedded store and js-ipfs daemon, same CID),
commit, challenge, audit from the daemon, attest, settle.

Why: a run of 1,000 or more checkpoints used to be unpublishable (its flat directories would be HAMT-sharded
by IPFS daemons, and the two daemons shard differently). The transcript layout groups files 100 per
subdirectory (`checkpoints/GGGG/NNNNNN.safetensors`), so every directory stays flat on Kubo and js-ipfs.
The model is a 2x2 linear layer trained with k = 1 so the 10,001 checkpoints are cheap.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from registry.core.sampling import sampled_segments
from registry.pol.publish import publish_transcript
from registry.pol.train import train
from registry.pol.transcript import batches_path, checkpoint_path
from registry.spec.datasets import build_dataset, synthetic_arrays
from registry.store.daemon import DaemonStore
from registry.store.embedded import EmbeddedStore
from tests.ipfs_node import IpfsDaemon
from tests.registry_driver import CH_VALID, V_VALID, VALID, Driver
from verifier.audit import VALID as AUDIT_VALID
from verifier.audit import audit_training_claim
from verifier.policy import get_policy

STEPS = 10_000
LINEAR = {"in_features": 2, "hidden": [], "out_features": 2, "dropout": 0.0}


@pytest.mark.slow
def test_ten_thousand_checkpoints_end_to_end(d: Driver, ipfs_daemon: IpfsDaemon, tmp_path: Path) -> None:
    x, y = synthetic_arrays(n=64, features=2, classes=2, seed=1)
    ds = build_dataset(tmp_path / "dataset", "tiny-2d", x, y, num_classes=2)
    t0 = time.perf_counter()
    run = train(tmp_path / "run", family="mlp", family_args=LINEAR, dataset=ds, epochs=STEPS // 8 + 1, batch_size=8,
                steps_per_segment=1, max_steps=STEPS, seed=1)
    tdir = run.transcript_dir
    times = {"record": time.perf_counter() - t0}
    assert run.summary.num_segments == STEPS
    # every directory of the transcript stays under both daemons' sharding thresholds (groups of 100; 101 groups)
    assert max(sum(1 for _ in p.iterdir()) for p in [tdir, *tdir.rglob("*")] if p.is_dir()) == 101
    assert (tdir / checkpoint_path(STEPS)).is_file() and checkpoint_path(STEPS) == "checkpoints/0100/010000.safetensors"

    embedded = EmbeddedStore(tmp_path / "store")
    published = publish_transcript(tdir, embedded, dataset_dir=tmp_path / "dataset")
    times["publish embedded"] = time.perf_counter() - t0 - sum(times.values())
    daemon = DaemonStore(ipfs_daemon.api, timeout=300.0)
    # one CAR import per DAG: `ipfs add` of 20,000 small files through js-ipfs takes minutes. Not pinned:
    # js-ipfs 0.66's recursive pin of 20,000 blocks runs out of file descriptors (EMFILE) under the default
    # ulimit; the audit below reads every file it needs from the daemon, verified block by block.
    assert daemon.import_car(embedded, published.transcript_cid, pin=False) == published.transcript_cid
    assert daemon.import_car(embedded, published.dataset_cid, pin=False) == published.dataset_cid
    assert daemon.cat(f"{published.transcript_cid}/{checkpoint_path(STEPS)}") == \
        (tdir / checkpoint_path(STEPS)).read_bytes()
    # the daemon's own importer makes the same CID for one 100-file group of the transcript
    group = tdir / "checkpoints" / "0042"
    assert daemon.add_directory(group) == embedded.resolve(published.transcript_cid, "checkpoints/0042")

    times["publish daemon"] = time.perf_counter() - t0 - sum(times.values())
    print("phase seconds:", {k: round(v, 1) for k, v in times.items()}, flush=True)
    prover, challenger, verifiers = d.accounts[1], d.accounts[2], d.accounts[3:7]
    for v in verifiers:
        d.register(v)
    claim_id = d.commit(published.claim_tuple(), prover)
    assert d.claim_info(claim_id)["numSegments"] == STEPS
    ch = d.challenge(claim_id, challenger, [9_999])
    committee = d.draw(ch)
    info = d.challenge_info(ch)
    segments = [int(s) for s in d.call("sampledSegments", ch)]
    assert segments == sampled_segments(info["seed"], d.p.samples, STEPS, [9_999])

    claim = published.claim
    policy = get_policy(None).with_overrides(top_q=1, extra_samples=0)
    report = audit_training_claim(daemon, claim, segments, seed=info["seed"], samples_drawn=d.p.samples,
                                  policy=policy)
    times["audit"] = time.perf_counter() - t0 - sum(times.values())
    print("phase seconds:", {k: round(v, 1) for k, v in times.items()})
    assert report.verdict == AUDIT_VALID, report.reason
    fetched = [f for f in report.files if f.startswith(("checkpoints/", "batches/"))]
    audited = {seg.index for seg in report.segments}
    assert set(segments) <= audited  # the policy adds draws of its own on a long run
    assert {f for f in fetched if f.startswith("batches/")} == {batches_path(i) for i in audited}
    assert len(fetched) < 2 * STEPS  # the audited segments' files only, never the whole tree
    print(f"manifest {report.files['manifest.json']:,} B; {len(fetched)} segment files "
          f"{sum(report.files[f] for f in fetched):,} B; transcript "
          f"{sum(f.stat().st_size for f in tdir.rglob('*') if f.is_file()):,} B", flush=True)
    for v in committee[:2]:
        d.attest(ch, v, V_VALID)
    receipt = d.settle(ch, d.accounts[9])
    assert d.events("ChallengeSettled", receipt)[0].args.outcome == CH_VALID
    assert d.claim_info(claim_id)["status"] == VALID
