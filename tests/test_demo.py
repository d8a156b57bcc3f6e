"""The main job (`make demo`): verifier nodes settle an honest training claim Valid, a forged one Invalid (its
bond moves) and a ZK inference claim linked to the honest one Valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.demo import E, Stages, run
from tests.report_schema import validate


def test_progress_display_only_on_a_terminal(capfd: pytest.CaptureFixture[str]) -> None:
    """Off a terminal (CI, logs, pipes) the demo's progress display is off: no label, no carriage return
    can break a log's one-line errors."""
    stages = Stages()  # stderr is captured here: not a terminal
    assert not stages.enabled
    task = stages.start("training (recording every step)", 10)
    stages.update(task, 5)
    stages.finish(task)
    stages.close()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    report = run(tmp_path / "demo", epochs=1)
    honest, forged, inference = report["rows"]
    assert (honest["verdict"], honest["claimStatus"]) == ("Valid", "Valid")
    assert (forged["verdict"], forged["claimStatus"]) == ("Invalid", "Invalid")
    assert (inference["verdict"], inference["claimStatus"]) == ("Valid", "Valid")
    assert inference["developmentOnly"] is True
    assert set(honest["attestations"]) == {"Valid"} and set(forged["attestations"]) == {"Invalid"}
    assert honest["maxRho"] == 0.0 and forged["maxRho"] > 0.01
    credits = report["credits"]
    # 80% of each lost 0.05 ETH challenge bond (plus the contract's rounding dust, which goes to the winner)
    assert 0 <= credits["honest prover"] - 2 * (E * 4 // 100) < 10
    assert credits["forger"] == 0
    assert 0 <= credits["challenger"] - E * 13 // 100 < 10  # own bond back + 80% of the 0.1 ETH prover bond
    assert report["verifierStakeChange"] > 0
    assert report["ownerOfFinalWeights"] == report["honestProver"]
    for row in (honest, forged):
        assert 0 < row["evidenceBytesFetched"] <= row["evidenceBytes"]
    assert (tmp_path / "demo" / "plots" / "honest-rho.png").stat().st_size > 1000
    assert {"commitTraining", "commitInference", "openChallenge", "attest", "settle"} <= set(report["gas"])
    validate(report, "demoReport")
    for row in report["rows"]:
        # every committee member is listed, the silent ones as such
        assert len(row["committee"]) == 3
        assert row["silentMembers"] == [m["verifier"] for m in row["committee"] if m["silent"]]
        assert len(row["attestations"]) + len(row["silentMembers"]) == 3
    # the challenger names every segment (≤ 8): the audit covers all of them whatever the block hash
    assert honest["segmentsAudited"] == forged["segmentsAudited"] == list(range(len(honest["segmentsAudited"])))
    assert f"rho={forged['maxRho']:.3g}" in forged["reason"]  # the reason quotes the row's maxRho
