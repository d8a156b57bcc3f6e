"""Forged inference bundles, made as a cheating model owner would: edit what decides the claim's meaning, then
RESEAL every digest the owner controls (the files' sha256 in bundle.json, vkHash, proofDigest, instancesHash,
the instances bundle.json states). Each forgery must be Invalid (or a one-line error) through both paths that
judge a bundle: the node's audit (`verifier.zk.audit_inference_claim`, bundle from the content store, linked to
the training claim) and the local check (`proofreg zk verify --offline`). The honest bundle stays Valid.

Cost: one tiny MLP trained (20 steps) and ONE real ezkl proof for the module (plus one for the fixed-params
forgery); each case copies the honest bundle. The module loads py-evm and py_ecc, whose import raises the
recursion limit to 100,000: deep JSON would SIGSEGV this very process if any parse were unbounded.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import eth  # noqa: F401 - loaded on purpose: raises the recursion limit, as in the main job and the daemon
import numpy as np
import py_ecc  # noqa: F401
import pytest
from click.testing import CliRunner

from registry.core.claims import TrainingClaim
from registry.core.hashing import sha256, to_hex
from registry.core.safejson import JsonError
from registry.core.safejson import loads as safe_loads
from registry.pol.publish import publish_transcript
from registry.pol.train import train
from registry.pol.transcript import load_manifest
from registry.store.embedded import EmbeddedStore
from registry.zk.audit import INVALID, VALID, ClaimDigests, DirSource, audit_bundle
from registry.zk.bundle import BUNDLE_JSON, Digests, parse_proof
from registry.zk.pipeline import SMALL
from registry.zk.prover import prove_inference
from verifier.zk import InferenceClaimFields, audit_inference_claim

MLP_ARGS = {"in_features": 16, "hidden": [8], "out_features": 4}
DEEP = 200_000


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("zk-forgery")
    store = EmbeddedStore(out / "store")
    run = train(out / "mlp", family="mlp", family_args=MLP_ARGS, dataset="synthetic", epochs=1, max_steps=20,
                steps_per_segment=10, seed=11)
    published = publish_transcript(run.transcript_dir, store)
    claim = TrainingClaim.from_manifest(load_manifest(run.transcript_dir), published.transcript_cid)
    x = np.linspace(-1.0, 1.0, 16, dtype=np.float32)
    honest = prove_inference(run.transcript_dir, x, out / "honest", dev=True, cache_dir=out / "cache", options=SMALL)
    return {"out": out, "store": store, "run": run, "claim": claim, "honest": honest.bundle_dir, "x": x,
            "cache": out / "cache", "n": 0}


def reseal(bundle: Path) -> None:
    """What a cheating owner recomputes after an edit: digests, stated instances, every file's sha256."""
    body = json.loads((bundle / BUNDLE_JSON).read_text())
    body.update(Digests.of((bundle / "vk.key").read_bytes(), (bundle / "proof.json").read_bytes()).to_json())
    proof, instances = parse_proof((bundle / "proof.json").read_bytes())
    body["instances"], body["proofBytes"] = [to_hex(i.to_bytes(32, "big")) for i in instances], len(proof)
    body["files"] = {name: to_hex(sha256((bundle / name).read_bytes())) if (bundle / name).is_file() else digest
                     for name, digest in body["files"].items()}
    (bundle / BUNDLE_JSON).write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")


def forge(world: dict[str, Any], edit: Callable[[Path], None], *, resealed: bool = True) -> Path:
    world["n"] += 1
    bundle = world["out"] / f"forged-{world['n']}"
    shutil.copytree(world["honest"], bundle, symlinks=True)
    edit(bundle)
    if resealed:
        reseal(bundle)
    return bundle


def node_audit(world: dict[str, Any], bundle: Path, *, linked: bool = True, allow_dev: bool = True) -> Any:
    """The verifier node's audit: bundle stored, claim committing the bundle's (resealed) digests."""
    try:  # (a plain json.loads of a deep bundle.json would SIGSEGV this process: the point of safejson)
        body = safe_loads((bundle / BUNDLE_JSON).read_bytes())
    except JsonError:  # the forged bundle.json is unreadable: the claim commits the honest digests
        body = safe_loads((world["honest"] / BUNDLE_JSON).read_bytes())
    cid = world["store"].add_directory(bundle)
    fields = InferenceClaimFields(1 if linked else 0, bytes.fromhex(body["vkHash"][2:]),
                                  bytes.fromhex(body["proofDigest"][2:]), bytes.fromhex(body["instancesHash"][2:]),
                                  cid)
    return audit_inference_claim(world["store"], fields, model_claim=world["claim"] if linked else None,
                                 allow_dev_srs=allow_dev, srs_dir=world["out"] / "no-srs",
                                 cache_dir=world["out"] / "home" / "zk-cache" / "verifier")


def cli_verify(world: dict[str, Any], bundle: Path, monkeypatch: pytest.MonkeyPatch, *,
               allow_dev: bool = True) -> Any:
    from registry.cli import main

    monkeypatch.setenv("PROOFREG_HOME", str(world["out"] / "home"))
    if allow_dev:
        monkeypatch.setenv("PROOFREG_ALLOW_DEV_SRS", "1")
    else:
        monkeypatch.delenv("PROOFREG_ALLOW_DEV_SRS", raising=False)
    return CliRunner(mix_stderr=False).invoke(main, ["zk", "verify", str(bundle), "--offline", "--json"])


def assert_refused(world: dict[str, Any], bundle: Path, monkeypatch: pytest.MonkeyPatch, match: str, *,
                   allow_dev: bool = True, store: bool = True) -> None:
    """Invalid through the node's audit (when the bundle can be stored) and through `zk verify --offline`."""
    if store:
        report = node_audit(world, bundle, allow_dev=allow_dev)
        assert report.verdict == INVALID, report.reason
        assert match in report.reason and "\n" not in report.reason, report.reason
        assert "output" not in report.checks
    result = cli_verify(world, bundle, monkeypatch, allow_dev=allow_dev)
    assert result.exit_code == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Invalid:") and match in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


# ---------------------------------------------------------------------------------------------------------


def test_honest_bundle_is_valid_and_reports_the_output_as_proven(world: dict[str, Any],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert sys.getrecursionlimit() >= 100_000  # the state the main job and the daemon audit in
    body = json.loads((world["honest"] / BUNDLE_JSON).read_text())
    report = node_audit(world, world["honest"])
    assert report.verdict == VALID, report.reason
    assert report.checks["output"] == body["output"] and len(body["output"]) == 4
    assert report.checks["outputScales"] == [21] and report.checks["inputScales"] == [7]
    assert "training claim 1" in report.reason and repr(body["output"][0]) in report.reason
    assert report.to_json()["checks"]["output"] == body["output"]
    result = cli_verify(world, world["honest"], monkeypatch)
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["verified"] is True and out["output"] == body["output"] and out["linked"] is False
    assert "no training claim linked" in out["reason"]


def _settings_edit(fn: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def edit(bundle: Path) -> None:
        s = json.loads((bundle / "settings.json").read_text())
        fn(s)
        (bundle / "settings.json").write_text(json.dumps(s))
    return edit


def test_edited_output_scale_is_invalid(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    def edit(bundle: Path) -> None:
        _settings_edit(lambda s: s.update(model_output_scales=[18]))(bundle)
        body = json.loads((bundle / BUNDLE_JSON).read_text())  # and restate the output, 8x larger, consistently
        body["output"] = [v * 8 for v in body["output"]]
        (bundle / BUNDLE_JSON).write_text(json.dumps(body))
    assert_refused(world, forge(world, edit), monkeypatch, "model_output_scales")


def test_edited_input_scale_is_invalid(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = forge(world, _settings_edit(lambda s: s.update(model_input_scales=[9])))
    assert_refused(world, bundle, monkeypatch, "model_input_scales")


def test_param_visibility_edited_to_fixed_is_invalid(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = forge(world, _settings_edit(lambda s: s["run_args"].update(param_visibility="Fixed")))
    assert_refused(world, bundle, monkeypatch, "hashed (public hash) parameters")


def test_fixed_params_circuit_over_other_weights_is_invalid(world: dict[str, Any],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A real proof of a circuit with OTHER weights baked in as fixed columns (no params-hash instance), shipped
    with the honest model.onnx and bundle.json's model statement: ezkl verify accepts it; the audit must not."""
    import registry.zk.pipeline as pipeline
    from registry.spec.models import build_model
    from registry.zk.export import export_onnx

    other = world["out"] / "other.onnx"
    export_onnx(build_model("mlp", MLP_ARGS), (1, 16), other)  # fresh random weights
    with monkeypatch.context() as m:  # fault induced: the prover's pipeline with fixed params, as a cheater runs it
        m.setattr(pipeline, "VISIBILITY", {"input": "hashed", "param": "fixed", "output": "public"})
        m.setattr(pipeline, "check_visibility", lambda settings: None)
        fixed = prove_inference(other, world["x"], world["out"] / "fixed-proof", dev=True,
                                cache_dir=world["cache"], options=SMALL)
    assert pipeline.verify_proof(fixed.bundle_dir / "proof.json", fixed.bundle_dir / "settings.json",
                                 fixed.bundle_dir / "vk.key", fixed.bundle_dir / "dev-srs.srs")

    def edit(bundle: Path) -> None:
        for name in ("proof.json", "vk.key", "settings.json", "model.compiled", "dev-srs.srs"):
            shutil.copyfile(fixed.bundle_dir / name, bundle / name)
        body = json.loads((bundle / BUNDLE_JSON).read_text())
        body["output"], body["logrows"] = fixed.bundle["output"], fixed.bundle["logrows"]
        body["srs"] = {**body["srs"], **fixed.bundle["srs"]}
        (bundle / BUNDLE_JSON).write_text(json.dumps(body))
    assert_refused(world, forge(world, edit), monkeypatch, "hashed (public hash) parameters")


def test_changed_input_is_invalid(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    def edit(bundle: Path) -> None:
        data = json.loads((bundle / "input.json").read_text())
        data["input_data"][0][3] += 0.5
        (bundle / "input.json").write_text(json.dumps(data))
    assert_refused(world, forge(world, edit), monkeypatch, "input.json is not the input the proof commits to")


def test_stated_output_negated_is_invalid(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    def edit(bundle: Path) -> None:
        body = json.loads((bundle / BUNDLE_JSON).read_text())
        body["output"] = [-v for v in body["output"]]
        (bundle / BUNDLE_JSON).write_text(json.dumps(body))
    assert_refused(world, forge(world, edit), monkeypatch, "bundle.json's output is not the output the proof proves")


@pytest.mark.parametrize("field", ["instances", "model", "logrows"])
def test_other_stated_fields_that_disagree_are_invalid(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                       field: str) -> None:
    def edit(bundle: Path) -> None:
        body = json.loads((bundle / BUNDLE_JSON).read_text())
        if field == "instances":
            body["instances"] = body["instances"][::-1]
        elif field == "model":
            body["model"]["finalWeightsHash"] = "0x" + "11" * 32
        else:
            body["logrows"] += 1
        (bundle / BUNDLE_JSON).write_text(json.dumps(body))
    bundle = forge(world, edit, resealed=False)  # reseal would restate the instances honestly
    reseal_files_only(bundle)
    assert_refused(world, bundle, monkeypatch, f"bundle.json's {field}")


def reseal_files_only(bundle: Path) -> None:
    body = json.loads((bundle / BUNDLE_JSON).read_text())
    body["files"] = {n: to_hex(sha256((bundle / n).read_bytes())) for n in body["files"]}
    (bundle / BUNDLE_JSON).write_text(json.dumps(body))


def test_development_srs_without_permission_is_invalid(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    assert_refused(world, world["honest"], monkeypatch, "development SRS", allow_dev=False)


@pytest.mark.parametrize("name", ["/etc/passwd", "../honest/vk.key", "sub/../vk.key", ".hidden"])
def test_paths_outside_the_bundle_are_invalid(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                              name: str) -> None:
    def edit(bundle: Path) -> None:
        body = json.loads((bundle / BUNDLE_JSON).read_text())
        body["files"][name] = to_hex(sha256(b"whatever"))
        (bundle / BUNDLE_JSON).write_text(json.dumps(body))
    assert_refused(world, forge(world, edit), monkeypatch, "not a plain file name inside the bundle")


def test_symlinked_file_is_invalid_locally(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    outside = world["out"] / "outside-input.json"
    shutil.copyfile(world["honest"] / "input.json", outside)

    def edit(bundle: Path) -> None:
        (bundle / "input.json").unlink()
        (bundle / "input.json").symlink_to(outside)  # same bytes, same sha256: only the link is wrong
    bundle = forge(world, edit)
    assert_refused(world, bundle, monkeypatch, "input.json is a symbolic link", store=False)
    outcome = audit_bundle(DirSource(bundle), _digests(bundle), None, srs_dir=world["out"], allow_dev_srs=True,
                           cache_dir=world["out"] / "home" / "zk-cache" / "verifier")
    assert outcome.verdict == INVALID and "symbolic link" in outcome.reason


def _digests(bundle: Path) -> ClaimDigests:
    body = json.loads((bundle / BUNDLE_JSON).read_text())
    return ClaimDigests(0, *(bytes.fromhex(body[k][2:]) for k in ("vkHash", "proofDigest", "instancesHash")))


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "sparse-oversize"])
def test_endless_or_oversize_files_are_one_line_errors(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                       kind: str) -> None:
    def edit(bundle: Path) -> None:
        target = bundle / "model.compiled"
        target.unlink()
        if kind == "dev-zero":
            target.symlink_to("/dev/zero")
        elif kind == "fifo":
            os.mkfifo(target)
        else:
            with open(target, "wb") as f:  # sparse: 600 MB long, no disk used
                f.truncate(600 << 20)
    bundle = forge(world, edit, resealed=False)
    match = {"dev-zero": "symbolic link", "fifo": "not a regular file", "sparse-oversize": "byte limit"}[kind]
    assert_refused(world, bundle, monkeypatch, match, store=False)


@pytest.mark.parametrize("name", ["bundle.json", "settings.json", "proof.json", "input.json"])
def test_deep_json_is_invalid_not_a_crash(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    assert sys.getrecursionlimit() >= 100_000

    def edit(bundle: Path) -> None:
        (bundle / name).write_text("[" * DEEP + "]" * DEEP)
    bundle = forge(world, edit, resealed=False)
    if name != "bundle.json":
        reseal_files_only(bundle)
    assert_refused(world, bundle, monkeypatch, f"{name} nests {DEEP} levels deep")


def test_external_data_in_a_constant_node_is_invalid(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    def edit(bundle: Path) -> None:
        model = onnx.load(str(bundle / "model.onnx"))
        model.graph.node.insert(0, _external_constant("sneaky"))
        onnx.save(model, str(bundle / "model.onnx"))
    assert_refused(world, forge(world, edit), monkeypatch, "references external data")


def _external_constant(name: str) -> Any:
    from onnx import TensorProto, helper

    t = TensorProto(name=f"{name}_value", data_type=TensorProto.FLOAT, dims=[4],
                    data_location=TensorProto.EXTERNAL)
    t.external_data.add(key="location", value="/etc/passwd")
    return helper.make_node("Constant", [], [name], name=name, value=t)


def test_external_data_is_refused_anywhere_in_the_graph(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, save

    from registry.zk.export import ExportError, load_onnx

    def model_with(nodes: list[Any], inits: list[Any] | None = None, sparse: list[Any] | None = None) -> Path:
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], initializer=inits or [],
                                  sparse_initializer=sparse or [])
        path = tmp_path / f"m{len(list(tmp_path.iterdir()))}.onnx"
        save(helper.make_model(graph), str(path))
        return path

    ok = model_with([helper.make_node("Identity", ["x"], ["y"])])
    assert load_onnx(ok).graph.node[0].op_type == "Identity"
    with pytest.raises(ExportError, match="node 'c' attribute 'value' references external data"):
        load_onnx(model_with([_external_constant("c"), helper.make_node("Identity", ["x"], ["y"])]))
    # inside an If's branch, two subgraphs deep
    inner = helper.make_graph([_external_constant("deep")], "inner", [],
                              [helper.make_tensor_value_info("deep", TensorProto.FLOAT, [4])])
    middle_if = helper.make_node("If", ["cond"], ["deep"], name="inner_if", then_branch=inner, else_branch=inner)
    middle = helper.make_graph([middle_if], "middle", [], [helper.make_tensor_value_info("deep", TensorProto.FLOAT,
                                                                                         [4])])
    outer_if = helper.make_node("If", ["cond"], ["y"], name="outer_if", then_branch=middle, else_branch=middle)
    with pytest.raises(ExportError, match=r"subgraph .*node 'deep' attribute 'value' references external data"):
        load_onnx(model_with([outer_if]))
    # initializers and sparse initializers
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    t.external_data.add(key="location", value="w.bin")
    with pytest.raises(ExportError, match="initializer 'w' references external data"):
        load_onnx(model_with([helper.make_node("Identity", ["x"], ["y"])], inits=[t]))
    values = TensorProto(name="sv", data_type=TensorProto.FLOAT, dims=[1])
    values.external_data.add(key="location", value="v.bin")
    sp = helper.make_sparse_tensor(values, helper.make_tensor("si", TensorProto.INT64, [1], [0]), [4])
    with pytest.raises(ExportError, match="sparse initializer 'sv' references external data"):
        load_onnx(model_with([helper.make_node("Identity", ["x"], ["y"])], sparse=[sp]))


def test_local_verify_with_a_claim_runs_the_linked_audit(world: dict[str, Any],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`zk verify --claim ID`: digests and training claim from the chain (an embedded chain wired in place of an
    RPC node), the manifest from the store: Valid for the honest bundle, Invalid for a resealed forgery."""
    import registry.cli.zk as zk_cli
    from registry.chain.local import EmbeddedChain
    from registry.chain.rpc import RegistryClient
    from registry.core.params import preset

    chain = EmbeddedChain(preset("dev"))
    client = RegistryClient(chain.w3, chain.registry, None, sender=chain.accounts[1])
    published = publish_transcript(world["run"].transcript_dir, world["store"])
    client.transact("commitTraining", published.claim_tuple(), value=client.params.training_bond)
    monkeypatch.setattr(zk_cli, "open_client", lambda *a, **k: client)
    monkeypatch.setenv("PROOFREG_ALLOW_DEV_SRS", "1")
    honest = zk_cli.commit_stored_bundle(client, world["store"], world["honest"], 1)
    forged = forge(world, _settings_edit(lambda s: s.update(model_output_scales=[18])))
    cheat = zk_cli.commit_stored_bundle(client, world["store"], forged, 1, check_model=False)

    def verify(bundle: Path, claim_id: int) -> dict[str, Any]:
        return zk_cli.verify_local_bundle(bundle, claim_id=claim_id, store_dir=world["out"] / "store",
                                          cache_dir=world["out"] / "verifier", srs_dir=world["out"] / "no-srs")

    out = verify(world["honest"], honest["claimId"])
    assert out["verdict"] == VALID and out["linked"] is True and "training claim 1" in out["reason"], out
    forged_out = verify(forged, cheat["claimId"])
    assert forged_out["verdict"] == INVALID and "model_output_scales" in forged_out["reason"], forged_out


def test_the_daemons_inference_handler_survives_hostile_json(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    """The verifier daemon (and the main job's in-process nodes) audit through `CLAIM_HANDLERS[2]`: in this
    py-evm process, deep JSON in any bundle file gives Invalid, and the process lives on."""
    from verifier.handlers import CLAIM_HANDLERS, Assignment, AuditContext

    monkeypatch.setenv("PROOFREG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PROOFREG_ALLOW_DEV_SRS", "1")
    body = safe_loads((world["honest"] / BUNDLE_JSON).read_bytes())
    ctx = AuditContext(store=world["store"], workdir=tmp_path)
    for name in ("bundle.json", "settings.json", "proof.json", "input.json"):
        bundle = forge(world, lambda b, n=name: (b / n).write_text("[" * DEEP + "]" * DEEP), resealed=False)
        if name != "bundle.json":
            reseal_files_only(bundle)
        claim = {"modelClaimId": 0, "vkHash": body["vkHash"], "proofDigest": body["proofDigest"],
                 "instancesHash": body["instancesHash"], "bundleCid": world["store"].add_directory(bundle)}
        report = CLAIM_HANDLERS[2](ctx, claim, Assignment(1, []))
        assert report.verdict == INVALID and f"{name} nests {DEEP} levels deep" in report.reason, report.reason


def test_verify_needs_a_claim_or_offline(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from registry.cli import main

    monkeypatch.delenv("PROOFREG_RPC", raising=False)
    runner = CliRunner(mix_stderr=False)
    for args, message in ([[], "give --claim ID"], [["--claim", "1", "--offline"], "give --claim ID"],
                          [["--claim", "1"], "--claim needs the chain"]):
        result = runner.invoke(main, ["zk", "verify", str(world["honest"]), *args])
        assert result.exit_code == 1 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
