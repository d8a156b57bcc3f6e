"""ZK inference claims end to end with real ezkl proofs: a small MLP and a small CNN trained with Proof-of-Learning,
proved from their transcripts, stored, committed on the embedded chain, and audited by the verifier (Valid);
then tampered proofs, swapped keys, mismatched instances and the wrong model (Invalid).

CI time: the development SRS and every circuit/key are made once per session in a temporary cache (nothing is
written to the repository), and the models are tiny (logrows 12-13 with `pipeline.SMALL`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from registry.chain.local import EmbeddedChain
from registry.chain.rpc import RegistryClient
from registry.cli.zk import commit_stored_bundle
from registry.core.claims import TrainingClaim
from registry.core.hashing import keccak256
from registry.core.params import preset
from registry.core.sampling import commitment_of
from registry.pol.publish import publish_transcript
from registry.pol.train import train
from registry.store.embedded import EmbeddedStore
from registry.zk.bundle import BUNDLE_JSON, Digests, parse_proof
from registry.zk.pipeline import SMALL
from registry.zk.prover import prove_inference
from verifier.audit import INVALID, UNAVAILABLE, VALID
from verifier.zk import InferenceClaimFields, audit_inference_claim

MLP_ARGS = {"in_features": 16, "hidden": [8], "out_features": 4}
CNN_ARGS = {"image_size": 4, "channels": [2], "hidden": 0, "num_classes": 4}


def _tiny_image_dataset(out: Path) -> Any:
    """4x4 one-channel images (the synthetic blobs reshaped) for the small CNN."""
    from registry.spec.datasets import build_dataset, synthetic_arrays

    x, y = synthetic_arrays(n=256, features=16, classes=4, seed=5)
    return build_dataset(out, "synthetic-4x4", x.reshape(-1, 1, 4, 4), y, num_classes=4,
                         source={"builder": "synthetic reshaped to 1x4x4"})


def _training_claim(client: RegistryClient, store: EmbeddedStore, transcript: Path,
                    dataset_dir: Path | None = None) -> tuple[int, TrainingClaim]:
    published = publish_transcript(transcript, store, dataset_dir)
    receipt = client.transact("commitTraining", published.claim_tuple(), value=client.params.training_bond)
    logs = client.contract.events.TrainingClaimCommitted().process_receipt(receipt)
    return int(logs[0]["args"]["claimId"]), TrainingClaim.from_event(logs[0]["args"]["claim"])


@pytest.fixture(scope="module")
def zk_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("zk")
    chain = EmbeddedChain(preset("dev"))
    client = RegistryClient(chain.w3, chain.registry, None, sender=chain.accounts[1])
    store = EmbeddedStore(out / "store")
    cache = out / "prover-cache"

    mlp = train(out / "mlp", family="mlp", family_args=MLP_ARGS, dataset="synthetic", epochs=1, max_steps=20,
                steps_per_segment=10, seed=1)
    mlp_other = train(out / "mlp-other", family="mlp", family_args=MLP_ARGS, dataset="synthetic",
                      dataset_dir=mlp.dataset_dir, epochs=1, max_steps=20, steps_per_segment=10, seed=2)
    images = _tiny_image_dataset(out / "images")
    cnn = train(out / "cnn", family="cnn", family_args=CNN_ARGS, dataset=images, epochs=1, max_steps=20,
                steps_per_segment=10, seed=3)
    mlp_id, mlp_claim = _training_claim(client, store, mlp.transcript_dir)
    other_id, other_claim = _training_claim(client, store, mlp_other.transcript_dir, mlp.dataset_dir)
    cnn_id, cnn_claim = _training_claim(client, store, cnn.transcript_dir, images.path)

    x_mlp = np.linspace(-1.0, 1.0, 16, dtype=np.float32)
    x_cnn = np.linspace(0.0, 1.0, 16, dtype=np.float32).reshape(1, 1, 4, 4)
    mlp_proof = prove_inference(mlp.transcript_dir, x_mlp, out / "bundle-mlp", dev=True, cache_dir=cache,
                                options=SMALL)
    cnn_proof = prove_inference(cnn.transcript_dir, x_cnn, out / "bundle-cnn", dev=True, cache_dir=cache,
                                options=SMALL)
    return {"out": out, "chain": chain, "client": client, "store": store, "cache": cache,
            "mlp": mlp, "cnn": cnn, "mlp_id": mlp_id, "cnn_id": cnn_id, "other_id": other_id,
            "claims": {mlp_id: mlp_claim, cnn_id: cnn_claim, other_id: other_claim},
            "mlp_proof": mlp_proof, "cnn_proof": cnn_proof, "x_mlp": x_mlp}


def _audit(world: dict[str, Any], commit: dict[str, Any], **kwargs: Any) -> Any:
    """Reads the claim back from its event (as the daemon does) and audits it."""
    logs = world["chain"].registry.events.InferenceClaimCommitted().get_logs(
        from_block=0, argument_filters={"claimId": commit["claimId"]})
    claim = InferenceClaimFields.from_event(logs[0]["args"]["claim"])
    model_claim = world["claims"].get(claim.model_claim_id)
    options = {"allow_dev_srs": True, "srs_dir": world["out"] / "no-srs", "cache_dir": world["out"] / "verifier"}
    return audit_inference_claim(world["store"], claim, model_claim=model_claim, **{**options, **kwargs})


def _copy(world: dict[str, Any], src: Path, name: str) -> Path:
    dest = world["out"] / name
    shutil.copytree(src, dest)
    return dest


def _reseal(bundle: Path) -> None:
    """Rewrites bundle.json's digests and file hashes after an edit, as a cheating prover would."""
    from registry.core.hashing import sha256, to_hex

    body = json.loads((bundle / BUNDLE_JSON).read_text())
    digests = Digests.of((bundle / "vk.key").read_bytes(), (bundle / "proof.json").read_bytes())
    body.update(digests.to_json())
    proof, instances = parse_proof((bundle / "proof.json").read_bytes())
    body["instances"], body["proofBytes"] = [to_hex(i.to_bytes(32, "big")) for i in instances], len(proof)
    body["files"] = {name: to_hex(sha256((bundle / name).read_bytes())) for name in body["files"]}
    (bundle / BUNDLE_JSON).write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")


def _commit(world: dict[str, Any], bundle: Path, model_claim: int) -> dict[str, Any]:
    """Commits as a (possibly cheating) prover would: without the CLI's local model check."""
    return commit_stored_bundle(world["client"], world["store"], bundle, model_claim, check_model=False)


# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_real_proof_committed_and_audited_valid(zk_world: dict[str, Any], model: str) -> None:
    result = zk_world[f"{model}_proof"]
    body = result.bundle
    assert body["developmentOnly"] is True and body["srs"]["developmentOnly"] is True
    assert body["model"]["family"] == model and body["logrows"] <= 13
    assert body["model"]["finalWeightsHash"] == "0x" + zk_world["claims"][zk_world[f"{model}_id"]] \
        .final_weights_hash.hex()
    commit = _commit(zk_world, result.bundle_dir, zk_world[f"{model}_id"])
    assert commit["vkHash"] == body["vkHash"] and commit["developmentOnly"] is True
    assert zk_world["store"].cat(f"{commit['bundleCid']}/proof.json") == (result.bundle_dir / "proof.json").read_bytes()
    report = _audit(zk_world, commit)
    assert report.verdict == VALID, report.reason
    assert "training claim" in report.reason and report.bytes_fetched > 0


def test_second_proof_of_the_same_model_skips_setup(zk_world: dict[str, Any]) -> None:
    first = zk_world["mlp_proof"]
    again = prove_inference(zk_world["mlp"].transcript_dir, zk_world["x_mlp"][::-1].copy(),
                            zk_world["out"] / "bundle-mlp-2", dev=True, cache_dir=zk_world["cache"], options=SMALL)
    assert again.run.setup_skipped and "setup" not in again.run.timings and "calibrate" not in again.run.timings
    assert again.digests.vk_hash == first.digests.vk_hash
    assert again.digests.instances_hash != first.digests.instances_hash
    report = _audit(zk_world, _commit(zk_world, again.bundle_dir, 0))
    assert report.verdict == VALID and "no training claim" in report.reason


def test_tampered_proof_is_invalid(zk_world: dict[str, Any]) -> None:
    bundle = _copy(zk_world, zk_world["mlp_proof"].bundle_dir, "tampered-proof")
    proof = json.loads((bundle / "proof.json").read_text())
    raw = bytearray(proof["proof"])
    raw[100] ^= 0x01
    proof["proof"], proof["hex_proof"] = list(raw), "0x" + bytes(raw).hex()
    (bundle / "proof.json").write_text(json.dumps(proof))
    _reseal(bundle)
    report = _audit(zk_world, _commit(zk_world, bundle, zk_world["mlp_id"]))
    assert report.verdict == INVALID and "does not verify" in report.reason


def test_swapped_vk_is_invalid(zk_world: dict[str, Any]) -> None:
    bundle = _copy(zk_world, zk_world["mlp_proof"].bundle_dir, "swapped-vk")
    shutil.copyfile(zk_world["cnn_proof"].bundle_dir / "vk.key", bundle / "vk.key")
    _reseal(bundle)
    report = _audit(zk_world, _commit(zk_world, bundle, zk_world["mlp_id"]))
    assert report.verdict == INVALID and "does not verify" in report.reason


def test_instances_that_do_not_match_are_invalid(zk_world: dict[str, Any]) -> None:
    # a claimed output the proof does not prove: edit the last output instance, reseal the digests
    bundle = _copy(zk_world, zk_world["mlp_proof"].bundle_dir, "edited-output")
    proof = json.loads((bundle / "proof.json").read_text())
    last = proof["instances"][0][-1]
    proof["instances"][0][-1] = ("01" if last[:2] != "01" else "02") + last[2:]
    (bundle / "proof.json").write_text(json.dumps(proof))
    _reseal(bundle)
    report = _audit(zk_world, _commit(zk_world, bundle, zk_world["mlp_id"]))
    assert report.verdict == INVALID and "does not verify" in report.reason
    # an honest bundle, but the claim commits other instances than its proof's
    honest = zk_world["mlp_proof"]
    claim = InferenceClaimFields(zk_world["mlp_id"], honest.digests.vk_hash, honest.digests.proof_digest,
                                 zk_world["cnn_proof"].digests.instances_hash,
                                 zk_world["store"].add_directory(honest.bundle_dir))
    report = audit_inference_claim(zk_world["store"], claim, model_claim=zk_world["claims"][zk_world["mlp_id"]],
                                   allow_dev_srs=True, cache_dir=zk_world["out"] / "verifier")
    assert report.verdict == INVALID and "instancesHash" in report.reason


def test_model_that_is_not_the_training_claims_is_invalid(zk_world: dict[str, Any]) -> None:
    # the CLI refuses to commit it ...
    from registry.cli import CliError

    with pytest.raises(CliError, match="not training claim"):
        commit_stored_bundle(zk_world["client"], zk_world["store"], zk_world["mlp_proof"].bundle_dir,
                             zk_world["other_id"])
    # ... a cheating prover commits anyway: same architecture, other weights (another training run)
    report = _audit(zk_world, _commit(zk_world, zk_world["mlp_proof"].bundle_dir, zk_world["other_id"]))
    assert report.verdict == INVALID and "finalWeightsHash" in report.reason
    # another family altogether
    report = _audit(zk_world, _commit(zk_world, zk_world["cnn_proof"].bundle_dir, zk_world["mlp_id"]))
    assert report.verdict == INVALID and "not a mlp model" in report.reason


def test_weights_swapped_inside_the_onnx_are_invalid(zk_world: dict[str, Any]) -> None:
    # the claimed training run's weights in model.onnx, but the proof was made for other weights
    import onnx
    from onnx import numpy_helper

    from registry.zk.export import export_transcript

    bundle = _copy(zk_world, zk_world["mlp_proof"].bundle_dir, "swapped-onnx")
    other = zk_world["out"] / "other.onnx"
    export_transcript(zk_world["out"] / "mlp-other" / "transcript", other)
    shutil.copyfile(other, bundle / "model.onnx")
    _reseal(bundle)
    report = _audit(zk_world, _commit(zk_world, bundle, zk_world["other_id"]))
    assert report.verdict == INVALID and "params-hash" in report.reason
    assert numpy_helper.to_array(onnx.load(str(other)).graph.initializer[0]).size > 0


def test_development_srs_is_refused_by_production_verifiers(zk_world: dict[str, Any], tmp_path: Path) -> None:
    commit = _commit(zk_world, zk_world["cnn_proof"].bundle_dir, zk_world["cnn_id"])
    report = _audit(zk_world, commit, allow_dev_srs=False)
    assert report.verdict == INVALID and "development SRS" in report.reason
    # a production bundle checked by a verifier without the ceremony file for its size: Unavailable
    bundle = _copy(zk_world, zk_world["cnn_proof"].bundle_dir, "claims-production")
    body = json.loads((bundle / BUNDLE_JSON).read_text())
    body["developmentOnly"] = False
    (bundle / BUNDLE_JSON).write_text(json.dumps(body))
    report = _audit(zk_world, _commit(zk_world, bundle, zk_world["cnn_id"]), srs_dir=tmp_path)
    assert report.verdict == UNAVAILABLE and "trusted SRS" in report.reason
    # ... and with a trusted SRS that is not the one the prover used: the proof fails
    from registry.zk.pipeline import dev_srs

    trusted = dev_srs(tmp_path / "other-ceremony", body["logrows"])
    shutil.copyfile(trusted.path, tmp_path / f"kzg{body['logrows']}.srs")
    report = _audit(zk_world, _commit(zk_world, bundle, zk_world["cnn_id"]), srs_dir=tmp_path)
    assert report.verdict == INVALID and "does not verify" in report.reason


def test_missing_bundle_is_unavailable_and_missing_model_claim_too(zk_world: dict[str, Any], tmp_path: Path) -> None:
    honest = zk_world["mlp_proof"]
    cid = zk_world["store"].add_directory(honest.bundle_dir)
    claim = InferenceClaimFields(0, honest.digests.vk_hash, honest.digests.proof_digest,
                                 honest.digests.instances_hash, cid)
    report = audit_inference_claim(EmbeddedStore(tmp_path / "empty"), claim, model_claim=None, allow_dev_srs=True)
    assert report.verdict == UNAVAILABLE
    linked = InferenceClaimFields(zk_world["mlp_id"], claim.vk_hash, claim.proof_digest, claim.instances_hash, cid)
    assert audit_inference_claim(zk_world["store"], linked, model_claim=None).verdict == UNAVAILABLE
    garbage = InferenceClaimFields(0, claim.vk_hash, claim.proof_digest, claim.instances_hash,
                                   zk_world["store"].add_bytes(b"not a bundle"))
    assert audit_inference_claim(zk_world["store"], garbage, model_claim=None).verdict in (INVALID, UNAVAILABLE)


def test_digest_definitions(zk_world: dict[str, Any]) -> None:
    from eth_abi import encode

    from registry.core.hashing import keccak256, sha256

    bundle = zk_world["mlp_proof"].bundle_dir
    proof_json = json.loads((bundle / "proof.json").read_text())
    proof, instances = parse_proof((bundle / "proof.json").read_bytes())
    assert proof == bytes.fromhex(proof_json["hex_proof"].removeprefix("0x"))
    assert instances[0] == int.from_bytes(bytes.fromhex(proof_json["instances"][0][0]), "little")
    d = zk_world["mlp_proof"].digests
    assert d.vk_hash == sha256((bundle / "vk.key").read_bytes())
    assert d.proof_digest == keccak256(proof)
    assert d.instances_hash == keccak256(encode(["uint256[]"], [instances]))


def test_cli_prove_commit_verify(zk_world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from registry.cli import main

    monkeypatch.setenv("PROOFREG_HOME", str(tmp_path / "home"))
    x = tmp_path / "x.json"
    x.write_text(json.dumps({"input_data": [zk_world["x_mlp"].tolist()]}))
    runner = CliRunner(mix_stderr=False)
    args = ["zk", "prove", str(zk_world["mlp"].transcript_dir), "--input", str(x), "--out", str(tmp_path / "b"),
            "--dev-srs", "--scales", "7", "--decomp-base", "1024", "--decomp-legs", "3",
            "--cache-dir", str(zk_world["cache"]), "--json", "--commit", "--store-dir", str(tmp_path / "store")]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["setupSkipped"] is True and out["developmentOnly"] is True
    assert out["vkHash"] == zk_world["mlp_proof"].bundle["vkHash"]
    assert out["commit"]["claimId"] >= 1 and out["commit"]["bundleCid"].startswith("bafy")
    assert "DEVELOPMENT-ONLY" in result.stderr
    monkeypatch.setenv("PROOFREG_ALLOW_DEV_SRS", "1")
    result = runner.invoke(main, ["zk", "verify", str(tmp_path / "b"), "--offline", "--json"])
    assert result.exit_code == 0, result.stderr
    verified = json.loads(result.stdout)
    assert verified["verified"] is True and verified["output"] == out["output"] and verified["linked"] is False
    # neither or both SRS choices: one line, exit 1
    result = runner.invoke(main, ["zk", "prove", str(zk_world["mlp"].transcript_dir), "--input", str(x),
                                  "--out", str(tmp_path / "c")])
    assert result.exit_code == 1 and "--dev-srs" in result.stderr
    # an edited bundle is refused before anything is stored or committed
    (tmp_path / "b" / "vk.key").write_bytes(b"x")
    result = runner.invoke(main, ["zk", "commit", str(tmp_path / "b"), "--store-dir", str(tmp_path / "store2")])
    assert result.exit_code == 1 and "sha256" in result.stderr
    assert not (tmp_path / "store2").exists()


def test_real_verifier_on_chain_finalizes_and_rejects_a_bad_proof(zk_world: dict[str, Any]) -> None:
    """The ezkl Solidity verifier, compiled with the project's solc, deployed on the embedded chain: the registry
    finalizes an unlinked claim whose vkHash is its code hash, leaves a linked one Valid, and rejects a bad proof."""
    from registry.chain.rpc import TransactionError
    from registry.zk.evm import EIP170_LIMIT, VERIFIER_BIN, add_evm_verifier

    client, w3 = zk_world["client"], zk_world["chain"].w3
    bundle = _copy(zk_world, zk_world["mlp_proof"].bundle_dir, "onchain")
    evm = add_evm_verifier(bundle)
    assert evm["fitsEip170"] and evm["runtimeBytes"] <= EIP170_LIMIT
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction(
        {"from": client.sender, "data": (bundle / VERIFIER_BIN).read_bytes(), "gas": 8_000_000}))
    verifier = receipt["contractAddress"]
    assert "0x" + bytes(w3.keccak(w3.eth.get_code(verifier))).hex() == evm["codeHash"]
    proof, instances = parse_proof((bundle / "proof.json").read_bytes())

    def verify_onchain(claim_id: int) -> Any:  # a fixed gas limit: py-evm's pairing is slow, skip the estimate
        tx = zk_world["chain"].registry.functions.verifyInferenceOnChain(claim_id, verifier, proof, instances)
        return w3.eth.wait_for_transaction_receipt(tx.transact({"from": client.sender, "gas": 3_000_000}))

    unlinked = commit_stored_bundle(client, zk_world["store"], bundle, 0, onchain=True)
    receipt = verify_onchain(unlinked["claimId"])
    assert receipt["status"] == 1 and 300_000 < receipt["gasUsed"] < 1_500_000
    assert client.call("getClaim", unlinked["claimId"])[3] == 4  # Finalized
    linked = commit_stored_bundle(client, zk_world["store"], bundle, zk_world["mlp_id"], onchain=True)
    verify_onchain(linked["claimId"])
    assert client.call("getClaim", linked["claimId"])[3] == 2  # Valid: the model link stays challengeable
    # the committee's audit of the on-chain claim: vkHash is the verifier's code hash for the bundle's vk
    report = _audit(zk_world, linked)
    assert report.verdict == VALID and "code hash" in report.reason, report.reason

    # a bad proof committed consistently (digests of the bad bytes): the verifier contract rejects it
    bad = _copy(zk_world, bundle, "onchain-bad")
    data = json.loads((bad / "proof.json").read_text())
    raw = bytearray(data["proof"])
    raw[200] ^= 0x01
    data["proof"], data["hex_proof"] = list(raw), "0x" + bytes(raw).hex()
    (bad / "proof.json").write_text(json.dumps(data))
    _reseal(bad)
    claim = commit_stored_bundle(client, zk_world["store"], bad, 0, onchain=True)
    with pytest.raises(TransactionError, match="ProofRejected"):
        client.transact("verifyInferenceOnChain", claim["claimId"], verifier, bytes(raw), instances)
    assert client.call("getClaim", claim["claimId"])[3] == 1  # still Committed


def test_cli_onchain_verification_on_a_hardhat_node(zk_world: dict[str, Any], hardhat_node: Any,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`zk evm-verifier`, `zk commit --onchain` and `zk verify-onchain` against a real JSON-RPC node with a
    locally signed deployment and transactions (the development mnemonic's accounts)."""
    from web3 import HTTPProvider, Web3

    from registry.chain.deployment import Deployment
    from registry.chain.local import deploy_registry
    from registry.cli import main

    w3 = Web3(HTTPProvider(hardhat_node.url))
    reg, receipt = deploy_registry(w3, preset("dev"), w3.eth.accounts[0])
    record = Deployment.from_receipt(w3, receipt, preset("dev"), "hardhat")
    record.save(tmp_path / "home" / "deployments" / f"{record.chain_id}.json")
    monkeypatch.setenv("PROOFREG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PROOFREG_RPC", hardhat_node.url)
    monkeypatch.delenv("PROOFREG_PRIVATE_KEY", raising=False)
    bundle = _copy(zk_world, zk_world["cnn_proof"].bundle_dir, "hardhat-onchain")
    runner = CliRunner(mix_stderr=False)

    def run(*args: str) -> dict[str, Any]:
        result = runner.invoke(main, ["zk", *args, "--json"])
        assert result.exit_code == 0, result.stderr
        out: dict[str, Any] = json.loads(result.stdout)
        return out

    evm = run("evm-verifier", str(bundle))
    assert evm["fitsEip170"] is True
    commit = run("commit", str(bundle), "--onchain", "--account", "dev:1", "--store-dir", str(tmp_path / "store"))
    assert commit["vkHash"] == evm["codeHash"]
    out = run("verify-onchain", str(commit["claimId"]), str(bundle), "--account", "dev:1")
    assert out["finalized"] is True and out["deployGas"] > 1_000_000 and 300_000 < out["gasUsed"] < 1_500_000
    assert reg.functions.getClaim(commit["claimId"]).call()[3] == 4  # Finalized
    assert reg.functions.pendingWithdrawal(commit["prover"]).call() == preset("dev").inference_bond
    # again: the claim is final, one line and exit 1
    result = runner.invoke(main, ["zk", "verify-onchain", str(commit["claimId"]), str(bundle), "--account", "dev:1",
                                  "--verifier", out["verifier"]])
    assert result.exit_code == 1 and "ClaimNotFinalizable" in result.stderr


def test_claim_fields_from_event_struct_or_event_args() -> None:
    struct = {"modelClaimId": 3, "vkHash": b"\x01" * 32, "proofDigest": "0x" + "02" * 32,
              "instancesHash": b"\x03" * 32, "bundleCid": "bafyb"}
    fields = InferenceClaimFields.from_event(struct)
    assert fields == InferenceClaimFields.from_event({"claimId": 9, "claim": struct})
    assert fields.model_claim_id == 3 and fields.proof_digest == b"\x02" * 32
    assert fields.claim_tuple() == (3, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, "bafyb")


def test_circuits_over_the_verifiers_size_limit_are_unavailable(zk_world: dict[str, Any],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROOFREG_ZK_MAX_LOGROWS", "10")
    report = _audit(zk_world, _commit(zk_world, zk_world["cnn_proof"].bundle_dir, zk_world["cnn_id"]))
    assert report.verdict == UNAVAILABLE and "limit" in report.reason


def test_private_input_bundle_has_no_input_and_still_verifies(zk_world: dict[str, Any]) -> None:
    result = prove_inference(zk_world["cnn"].transcript_dir, np.full((1, 1, 4, 4), 0.25, np.float32),
                             zk_world["out"] / "bundle-private", dev=True, cache_dir=zk_world["cache"], options=SMALL,
                             private_input=True)
    assert not (result.bundle_dir / "input.json").exists() and "input.json" not in result.bundle["files"]
    report = _audit(zk_world, _commit(zk_world, result.bundle_dir, zk_world["cnn_id"]))
    assert report.verdict == VALID, report.reason
    assert "input.json" not in report.files


@pytest.mark.parametrize("case", ["mlp", "cnn", "tampered"])
def test_challenged_inference_claim_settles_through_the_committee(zk_world: dict[str, Any], case: str) -> None:
    """The whole lifecycle on the chain: commit, challenge, committee drawn, each member audits the bundle
    (the daemon's inference handler is this same audit) and attests, settle. An honest proof settles Valid and
    the challenger loses its bond; a tampered one settles Invalid and the prover's bond goes to the challenger."""
    chain, store = zk_world["chain"], zk_world["store"]
    reg, p, acct = chain.registry, chain.params, chain.accounts
    w3 = chain.w3
    snapshot = chain.snapshot()
    try:
        for v in acct[3:6]:
            w3.eth.wait_for_transaction_receipt(reg.functions.registerVerifier().transact({"from": v,
                                                                                         "value": p.verifier_stake}))
        model = "mlp" if case == "tampered" else case
        bundle = zk_world[f"{model}_proof"].bundle_dir
        if case == "tampered":
            bundle = _copy(zk_world, bundle, "tampered-for-challenge")
            proof = json.loads((bundle / "proof.json").read_text())
            raw = bytearray(proof["proof"])
            raw[64] ^= 0x01
            proof["proof"], proof["hex_proof"] = list(raw), "0x" + bytes(raw).hex()
            (bundle / "proof.json").write_text(json.dumps(proof))
            _reseal(bundle)
        commit = _commit(zk_world, bundle, zk_world[f"{model}_id"])
        challenger = acct[2]
        tx = reg.functions.openChallenge(commit["claimId"], []).transact({"from": challenger,
                                                                          "value": p.challenge_bond})
        ch = int(reg.events.ChallengeOpened().process_receipt(w3.eth.wait_for_transaction_receipt(tx))[0]
                 ["args"]["challengeId"])
        chain.mine(p.seed_delay + 1)
        w3.eth.wait_for_transaction_receipt(reg.functions.drawCommittee(ch).transact({"from": acct[0]}))
        committee = reg.functions.committee(ch).call()
        verdicts = []
        reveals = []
        for member in committee[:p.quorum]:
            report = _audit(zk_world, commit)
            verdicts.append(report.verdict)
            code = {VALID: 1, INVALID: 2, UNAVAILABLE: 3}[report.verdict]
            report_cid = store.add_bytes(json.dumps(report.to_json(), sort_keys=True).encode())
            salt = keccak256(member.encode())  # commit-reveal: commit now, reveal after the commit deadline
            args = (code, keccak256(report.results_bytes()), report_cid, salt)
            w3.eth.wait_for_transaction_receipt(reg.functions.commitVerdict(
                ch, commitment_of(*args, member)).transact({"from": member}))
            reveals.append((member, args))
        chain.mine(p.commit_period)
        for member, args in reveals:
            w3.eth.wait_for_transaction_receipt(reg.functions.revealVerdict(ch, *args).transact({"from": member}))
        before = {a: reg.functions.pendingWithdrawal(a).call() for a in (acct[1], challenger)}
        w3.eth.wait_for_transaction_receipt(reg.functions.settle(ch).transact({"from": acct[0]}))
        outcome = reg.functions.getChallenge(ch).call()[2]
        status = reg.functions.getClaim(commit["claimId"]).call()[3]
        gained = {a: reg.functions.pendingWithdrawal(a).call() - before[a] for a in before}
        if case == "tampered":
            assert verdicts == [INVALID] * p.quorum and (outcome, status) == (3, 3)  # Invalid, Invalid
            assert gained[challenger] >= p.challenge_bond + p.inference_bond * 8 // 10 and gained[acct[1]] == 0
        else:
            assert verdicts == [VALID] * p.quorum and (outcome, status) == (2, 2)  # Valid, Valid
            assert gained[acct[1]] >= p.challenge_bond * 8 // 10 and gained[challenger] == 0
    finally:
        chain.revert(snapshot)
