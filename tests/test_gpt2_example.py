"""The GPT-2 Trainer example (scripts/gpt2_trainer.py) end to end at its tiny size: an ordinary Hugging Face
`Trainer` run with AdamW, linear warmup, clipping, accumulation and bf16, recorded by PoLCallback, committed,
challenged on every segment, audited by three verifier daemons on the in-process EVM and settled Valid."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("accelerate")


def test_gpt2_trainer_example_settles_valid(tmp_path: Path) -> None:
    from scripts.gpt2_trainer import run

    r = run(tmp_path / "out", size="tiny", steps=16, seed=0, bf16=True)
    assert r["outcome"] == "Valid" and r["claimStatus"] == "Valid", r["reason"]
    assert r["segments"] == 8 and r["segmentsAudited"] == list(range(8))
    assert r["attestations"] and set(r["attestations"]) == {"Valid"}
    assert r["maxRho"] is not None and r["maxRho"] <= 1e-3
    assert r["ownerOfFinalWeights"] == r["prover"]
    cfg = r["config"]
    assert cfg["optimizer"]["type"] == "AdamW" and cfg["scheduler"]["type"] == "HFLinearWarmup"
    assert cfg["clip"]["maxNorm"] == 1.0 and cfg["accumulation"] == {"microBatches": 2}
    assert cfg["precision"]["autocast"] == "bfloat16" and cfg["loss"] == "causal_lm"
    assert (tmp_path / "out" / "result.json").is_file()
