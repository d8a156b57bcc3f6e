"""`proofreg-verifier check` and `calibrate` through the real CLI (click's runner, in process): local
directories and CIDs in a real embedded store, report JSON and PNG written, exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from registry.pol.checkpoint import decode_checkpoint, encode_checkpoint
from registry.pol.publish import publish_transcript
from registry.pol.train import train
from registry.pol.transcript import batches_path
from registry.store.embedded import EmbeddedStore
from tests.report_schema import validate
from tests.test_verifier_engine import reseal
from verifier.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("check")
    result = train(out / "run", epochs=1, max_steps=30, steps_per_segment=5, seed=1)
    forged = out / "forged" / "transcript"
    shutil.copytree(result.transcript_dir, forged)
    b = np.load(forged / batches_path(3))
    b[0] = (b[0] + 11) % 1797
    np.save(forged / batches_path(3), b, allow_pickle=False)
    reseal(forged)
    shutil.copytree(result.dataset_dir, out / "forged" / "dataset")
    # a zero recorded update: checkpoint 3 carries checkpoint 2's weights (so ρ of segment 2 is infinite)
    zero = out / "zero" / "transcript"
    shutil.copytree(result.transcript_dir, zero)
    m = json.loads((zero / "manifest.json").read_text())
    c2 = decode_checkpoint((zero / m["checkpoints"][2]["path"]).read_bytes())
    c3 = decode_checkpoint((zero / m["checkpoints"][3]["path"]).read_bytes())
    (zero / m["checkpoints"][3]["path"]).write_bytes(encode_checkpoint(c3.index, c3.step, c2.model, c3.optimizer))
    reseal(zero)
    shutil.copytree(result.dataset_dir, out / "zero" / "dataset")
    store = EmbeddedStore(out / "store")
    published = publish_transcript(result.transcript_dir, store)
    return {"out": out, "tdir": result.transcript_dir, "forged": forged, "zero": zero,
            "cid": published.transcript_cid}


def invoke(*args: str) -> Any:
    return CliRunner(mix_stderr=False).invoke(main, list(args), catch_exceptions=False)


def test_check_local_directory_writes_report_and_plot(run: dict[str, Any], tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    res = invoke("check", str(run["tdir"]), "--report", str(report), "--seed", "0x" + "22" * 32, "--json",
                 "--device", "cpu")
    assert res.exit_code == 0, res.output + res.stderr
    summary = json.loads(res.stdout)
    assert summary["verdict"] == "Valid" and summary["maxRho"] == 0.0 and summary["init"] == "seed"
    body = json.loads(report.read_text())
    assert body["verdict"] == "Valid" and body["policy"]["name"] == "pol-tolerance/1"
    assert {s["index"] for s in body["segments"]} == set(summary["segments"])
    assert report.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC
    validate(body, "auditReport")
    validate(summary, "checkSummary")


def test_check_forged_directory_exits_invalid(run: dict[str, Any], tmp_path: Path) -> None:
    res = invoke("check", str(run["forged"]), "--segment", "3", "--report", str(tmp_path / "f.json"),
                 "--plot", str(tmp_path / "f.png"), "--json")
    assert res.exit_code == 3, res.output + res.stderr
    assert json.loads(res.stdout)["verdict"] == "Invalid"
    seg3 = next(s for s in json.loads((tmp_path / "f.json").read_text())["segments"] if s["index"] == 3)
    assert not seg3["passed"] and seg3["rho"] > 0.01
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG_MAGIC


def test_check_zero_recorded_update_is_invalid_and_plots(run: dict[str, Any], tmp_path: Path) -> None:
    """ρ = ∞ (recorded update of zero, replay moves the weights): the verdict's exit code, a reason that says
    what happened (not "non-finite weights": the weights are finite), a plot with the segment in its band."""
    res = invoke("check", str(run["zero"]), "--segment", "2", "--segment", "0", "--report",
                 str(tmp_path / "z.json"), "--json")
    assert res.exit_code == 3, res.output + res.stderr
    summary = json.loads(res.stdout)
    assert summary["verdict"] == "Invalid"
    assert "segment 2 records a zero update" in summary["reason"] and "rho=inf" in summary["reason"]
    assert "non-finite" not in summary["reason"]
    body = json.loads((tmp_path / "z.json").read_text())
    seg2 = next(s for s in body["segments"] if s["index"] == 2)
    assert seg2["rho"] is None and not seg2["passed"] and seg2["updateNorm"] == 0.0
    finite = [s["rho"] for s in body["segments"] if s["rho"] is not None]
    assert summary["maxRho"] == max(finite)  # the finite ρ; the infinite one is in the reason
    assert (tmp_path / "z.png").read_bytes()[:8] == PNG_MAGIC
    validate(body, "auditReport")
    validate(summary, "checkSummary")


def test_schema_rejects_what_the_docs_rule_out(run: dict[str, Any], tmp_path: Path) -> None:
    """The schema is not vacuous: a report with a renamed or mistyped field fails it."""
    import jsonschema

    res = invoke("check", str(run["tdir"]), "--segment", "1", "--report", str(tmp_path / "r.json"), "--json")
    body, summary = json.loads((tmp_path / "r.json").read_text()), json.loads(res.stdout)
    validate(body, "auditReport")
    for bad, definition in (({**summary, "bytesFetchedPerAudit": 1}, "checkSummary"),
                            ({**body, "verdict": "Maybe"}, "auditReport"),
                            ({**body, "segments": [{**body["segments"][0], "rho": -1.0}]}, "auditReport")):
        with pytest.raises(jsonschema.ValidationError):
            validate(bad, definition)


def test_check_cid_from_the_store(run: dict[str, Any], tmp_path: Path) -> None:
    res = invoke("check", run["cid"], "--store-dir", str(run["out"] / "store"), "--all", "--report",
                 str(tmp_path / "c.json"), "--json")
    assert res.exit_code == 0, res.output + res.stderr
    assert json.loads(res.stdout)["segments"] == list(range(6))
    # an empty store: the evidence is not there
    res = invoke("check", run["cid"], "--store-dir", str(tmp_path / "empty"), "--segment", "0", "--report",
                 str(tmp_path / "u.json"), "--json")
    assert res.exit_code == 4 and json.loads(res.stdout)["verdict"] == "Unavailable"


def test_check_usage_errors_are_one_line(run: dict[str, Any], tmp_path: Path) -> None:
    for args in (["check", str(tmp_path / "nope" / "x")],
                 ["check", str(run["tdir"]), "--seed", "0x12"],
                 ["check", str(run["tdir"]), "--policy", "pol-tolerance/99"],
                 ["check", str(run["tdir"]), "--report", str(tmp_path / "no" / "dir" / "r.json")],
                 ["calibrate"]):
        res = invoke(*args)
        assert res.exit_code == 1, (args, res.output)
        assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr


def test_calibrate_reports_rho_distribution_and_policy_rates(run: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "cal.json"
    res = invoke("calibrate", str(run["tdir"]), "--train", "1", "--max-steps", "10", "-k", "5", "--threads", "1,2",
                 "--max-segments", "2", "--out", str(out), "--json")
    assert res.exit_code == 0, res.output + res.stderr
    brief = json.loads(res.stdout)
    assert set(brief["honest"]) == {"threads=1", "threads=2"} and brief["honestAll"]["count"] == 8
    assert brief["honestAll"]["max"] < 1e-5 and brief["forgedAll"]["min"] > 1e-2
    default = next(p for p in brief["policies"] if p["policy"] == "pol-tolerance/1")
    assert default["falseRejectRate"] == 0.0 and default["falseAcceptRate"] == 0.0
    assert json.loads(out.read_text())["samples"]["forged"]["tampered-batch"]
    assert out.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC


def test_default_policy_detection_and_cost_analytic() -> None:
    """The bench's analytic rule: ≥ 99% detection of 10% forged segments from the contract's S draws plus the
    policy's extra draws, at ≤ 5% of training compute once a claim has thousands of segments."""
    from bench.verifier import analytic

    big = analytic(5000, 20, replay_ratio=0.9)
    assert big["detect_policy"] >= 0.99 and big["cost"] <= 0.05 and big["detect_contract_only"] < 0.6
    assert analytic(100, 5, replay_ratio=1.0)["cost"] > 0.05  # small claims cost more than the goal
