"""The main job (`make demo`): the honest claim stands, the forged one is rejected and its bond moves."""

from __future__ import annotations

from pathlib import Path

from scripts.demo import E, run


def test_demo_end_to_end(tmp_path: Path) -> None:
    report = run(tmp_path / "demo", epochs=1)
    honest, forged = report["rows"]
    assert (honest["verdict"], honest["claimStatus"]) == ("Valid", "Valid")
    assert (forged["verdict"], forged["claimStatus"]) == ("Invalid", "Invalid")
    assert honest["maxRho"] == 0.0 and forged["maxRho"] > 0.01
    assert honest["proverCredit"] == E * 4 // 100  # 80% of the 0.05 ETH challenge bond
    assert forged["challengerCredit"] == E * 13 // 100  # own bond back + 80% of the 0.1 ETH prover bond
    assert report["ownerOfFinalWeights"] == report["honestProver"]
    for row in report["rows"]:
        assert row["bytesFetchedPerAudit"] < row["transcriptBytes"] or len(row["segmentsAudited"]) == 6
    assert (tmp_path / "demo" / "store").is_dir()
