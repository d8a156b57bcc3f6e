"""`proofreg zk`: prove an inference with ezkl, store the bundle, commit the inference claim.

    proofreg zk prove MODEL --input x.json --out bundle/ (--srs kzg15.srs | --dev-srs) [--commit ...]
    proofreg zk commit bundle/ [--model-claim ID] [--ipfs ...] [--rpc ...]
    proofreg zk verify bundle/ (--claim ID --rpc URL | --offline) [--srs-dir DIR]   # the node's audit, locally
    proofreg zk evm-verifier bundle/ --out Verifier.sol   # Solidity verifier, compiled with the project's solc

MODEL is an ONNX file or a local training transcript directory (its final checkpoint is exported to ONNX).
Heavy imports (torch, ezkl) happen inside the commands, so `proofreg --help` stays fast.
"""

from __future__ import annotations

import click


@click.group()
def zk() -> None:
    """ZK inference proofs (ezkl): prove, store and commit inference claims."""


import os  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from web3 import Web3  # noqa: E402

from registry.chain.deployment import proofreg_home  # noqa: E402
from registry.cli.common import (  # noqa: E402
    CliError,
    emit,
    event_args,
    handle_errors,
    json_option,
    open_client,
    open_store,
    require_balance,
    signer_options,
    with_store_options,
)
from registry.cli.config import deployment_option, optional_rpc_option  # noqa: E402

DEV_WARNING = ("warning: DEVELOPMENT-ONLY proof: made with a locally generated SRS, whose maker can forge proofs; "
               "the bundle and the claim are marked developmentOnly")


def default_cache_dir() -> Path:
    return Path(os.environ.get("PROOFREG_ZK_CACHE") or proofreg_home() / "zk-cache")


cache_option = click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                            help="Circuit/key cache (default: $PROOFREG_ZK_CACHE or $PROOFREG_HOME/zk-cache).")
model_claim_option = click.option("--model-claim", "model_claim", type=click.IntRange(min=0), default=0,
                                  show_default=True, help="Training claim whose final weights the model is (0: none).")


def _zk_errors() -> tuple[type[BaseException], ...]:
    from registry.zk.bundle import BundleError
    from registry.zk.export import ExportError
    from registry.zk.pipeline import ZkError

    return (BundleError, ExportError, ZkError)


def commit_bundle(bundle_dir: Path, model_claim: int, *, ipfs: str | None, store_dir: Path | None,
                  rpc_url: str | None, deployment_path: Path | None, account: str | None,
                  keystore: Path | None, onchain: bool = False) -> dict[str, Any]:
    """`zk commit` on the chain and store the options name; the bundle is checked before either is opened."""
    from registry.zk.bundle import load_local_bundle

    load_local_bundle(bundle_dir)
    client = open_client(rpc_url, deployment_path, account, keystore)
    return commit_stored_bundle(client, open_store(ipfs, store_dir), bundle_dir, model_claim, onchain=onchain)


def commit_stored_bundle(client: Any, store: Any, bundle_dir: Path, model_claim: int, *,
                         check_model: bool = True, onchain: bool = False) -> dict[str, Any]:
    """Checks the bundle, stores it completely (every block present, bundle.json read back), then commits.
    `check_model=False` skips the local check that the bundle's model is the model claim's (tests use it to
    play a cheating prover; verifiers catch it). `onchain=True` commits the verifier contract's code hash as
    vkHash (`zk evm-verifier` first), so `zk verify-onchain` can finalize the claim without a committee."""
    from registry.store.base import StoreError
    from registry.zk.bundle import BUNDLE_JSON, load_local_bundle

    body, digests = load_local_bundle(bundle_dir)
    bond = client.params.inference_bond
    require_balance(client, bond, "the inference bond")
    if model_claim and check_model:
        _check_model_claim(client, model_claim, body)
    try:
        cid = store.add_directory(bundle_dir)
        store.pin(cid)
        stored = store.cat(f"{cid}/{BUNDLE_JSON}")
    except StoreError as exc:
        raise CliError(f"content store failed, nothing committed: {exc}") from None
    if stored != (Path(bundle_dir) / BUNDLE_JSON).read_bytes():
        raise CliError(f"the store returned a different bundle.json for {cid}; nothing committed")
    vk = digests.vk_hash
    if onchain:
        if not isinstance(body.get("evm"), dict):
            raise CliError("the bundle has no EVM verifier: run `proofreg zk evm-verifier BUNDLE` first")
        vk = bytes.fromhex(str(body["evm"]["codeHash"]).removeprefix("0x"))
    claim = (model_claim, vk, digests.proof_digest, digests.instances_hash, cid)
    receipt = client.transact("commitInference", claim, value=bond)
    args = event_args(client, receipt, "InferenceClaimCommitted")
    return {"claimId": int(args["claimId"]), "prover": client.sender, "bundleCid": cid, "modelClaimId": model_claim,
            **digests.to_json(), "vkHash": Web3.to_hex(vk), "developmentOnly": bool(body.get("developmentOnly")),
            "bond": bond,
            "txHash": Web3.to_hex(receipt["transactionHash"]), "gasUsed": int(receipt["gasUsed"])}


def _check_model_claim(client: Any, model_claim: int, body: dict[str, Any]) -> None:
    """When the bundle came from a transcript, its finalWeightsHash must be the model claim's."""
    expected = (body.get("model") or {}).get("finalWeightsHash")
    if not expected:
        return
    start = client.deployment.block_number if client.deployment else 0
    logs = client.contract.events.TrainingClaimCommitted().get_logs(from_block=start,
                                                                    argument_filters={"claimId": model_claim})
    if logs and Web3.to_hex(logs[0]["args"]["finalWeightsHash"]) != expected.lower():
        raise CliError(f"the bundle's model is not training claim {model_claim}'s final model "
                       f"(finalWeightsHash {expected} vs {Web3.to_hex(logs[0]['args']['finalWeightsHash'])})")


@zk.command("prove")
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="One example: JSON ({\"input_data\": [...]} or a nested list) or .npy.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Bundle directory to write (must not exist or be empty).")
@click.option("--srs", "srs_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="KZG SRS file from a public ceremony (e.g. kzg15.srs).")
@click.option("--dev-srs", is_flag=True, help="Generate a local SRS: development only (marked so everywhere).")
@click.option("--private-input", is_flag=True, help="Leave input.json out of the bundle (only its hash is public).")
@click.option("--scales", default=None, help="Calibration scales to try, comma-separated (default: ezkl's).")
@click.option("--decomp-base", type=click.IntRange(min=2), default=None,
              help="Range-check decomposition base (ezkl's default 16384; 1024 with 3 legs suits tiny models).")
@click.option("--decomp-legs", type=click.IntRange(min=1), default=None, help="Range-check decomposition legs.")
@cache_option
@click.option("--commit", "do_commit", is_flag=True, help="Store the bundle and commit the claim afterwards.")
@model_claim_option
@with_store_options
@optional_rpc_option
@deployment_option
@signer_options
@json_option
@handle_errors
def prove_cmd(model: Path, input_path: Path, out_dir: Path, srs_path: Path | None, dev_srs: bool,
              private_input: bool, scales: str | None, decomp_base: int | None, decomp_legs: int | None,
              cache_dir: Path | None, do_commit: bool, model_claim: int,
              ipfs: str | None, store_dir: Path | None, rpc_url: str | None, deployment_path: Path | None,
              account: str | None, keystore: Path | None, as_json: bool) -> None:
    """Prove one inference of MODEL (ONNX file or training transcript directory) and write the bundle."""
    if (srs_path is None) == (not dev_srs):
        raise CliError("give --srs FILE (a public ceremony's SRS) or --dev-srs (development only)")
    try:
        from registry.zk.export import read_input
        from registry.zk.pipeline import ProveOptions
        from registry.zk.prover import prove_inference

        options = ProveOptions(scales=tuple(int(s) for s in scales.split(",")) if scales else None,
                               decomp_base=decomp_base, decomp_legs=decomp_legs)
        result = prove_inference(model, read_input(input_path), out_dir, srs_path=srs_path, dev=dev_srs,
                                 cache_dir=cache_dir or default_cache_dir(), options=options,
                                 private_input=private_input)
        out = result.to_json()
        if result.development_only:
            click.echo(DEV_WARNING, err=True)
        if do_commit:
            out["commit"] = commit_bundle(out_dir, model_claim, ipfs=ipfs, store_dir=store_dir, rpc_url=rpc_url,
                                          deployment_path=deployment_path, account=account, keystore=keystore)
    except _zk_errors() as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(f"bad option: {exc}") from None
    emit(out, as_json)


@zk.command("commit")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@model_claim_option
@click.option("--onchain", is_flag=True, help="Commit the EVM verifier's code hash as vkHash (for verify-onchain).")
@with_store_options
@optional_rpc_option
@deployment_option
@signer_options
@json_option
@handle_errors
def commit_cmd(bundle: Path, model_claim: int, onchain: bool, ipfs: str | None, store_dir: Path | None,
               rpc_url: str | None, deployment_path: Path | None, account: str | None, keystore: Path | None,
               as_json: bool) -> None:
    """Store a bundle, then commit its inference claim (nothing is committed unless the bundle is stored)."""
    try:
        out = commit_bundle(bundle, model_claim, ipfs=ipfs, store_dir=store_dir, rpc_url=rpc_url,
                            deployment_path=deployment_path, account=account, keystore=keystore, onchain=onchain)
    except _zk_errors() as exc:
        raise CliError(str(exc)) from None
    if out["developmentOnly"]:
        click.echo(DEV_WARNING, err=True)
    emit(out, as_json)


@zk.command("verify")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--claim", "claim_id", type=click.IntRange(min=1), default=None,
              help="Inference claim to check the bundle against: its digests and model claim from the chain (--rpc).")
@click.option("--offline", "--no-link", "offline", is_flag=True,
              help="No chain: check the bundle against its own bundle.json digests, as an unlinked claim "
                   "(the bundle's ONNX is the model; no training claim is checked).")
@click.option("--srs-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Trusted SRS files kzg<logrows>.srs (default: $PROOFREG_SRS_DIR or $PROOFREG_HOME/srs). "
                   "A development bundle passes only with PROOFREG_ALLOW_DEV_SRS=1.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Verifier cache (default: $PROOFREG_HOME/zk-cache/verifier).")
@with_store_options
@optional_rpc_option
@deployment_option
@json_option
@handle_errors
def verify_cmd(bundle: Path, claim_id: int | None, offline: bool, srs_dir: Path | None, cache_dir: Path | None,
               ipfs: str | None, store_dir: Path | None, rpc_url: str | None, deployment_path: Path | None,
               as_json: bool) -> None:
    """Audit a local bundle with the verifier node's own checks (registry.zk.audit), SRS policy included."""
    if offline == (claim_id is not None):
        raise CliError("give --claim ID (checked against the chain, with --rpc) or --offline (no chain, unlinked)")
    if claim_id is not None and rpc_url is None:
        raise CliError("--claim needs the chain: give --rpc URL (or PROOFREG_RPC), or use --offline")
    result = verify_local_bundle(bundle, claim_id=claim_id, srs_dir=srs_dir, cache_dir=cache_dir, ipfs=ipfs,
                                 store_dir=store_dir, rpc_url=rpc_url, deployment_path=deployment_path)
    if result["verdict"] != "Valid":
        raise CliError(f"{result['verdict']}: {result['reason']}")
    emit(result, as_json)


def verify_local_bundle(bundle: Path, *, claim_id: int | None = None, srs_dir: Path | None = None,
                        cache_dir: Path | None = None, ipfs: str | None = None, store_dir: Path | None = None,
                        rpc_url: str | None = None, deployment_path: Path | None = None) -> dict[str, Any]:
    """`zk verify`: the audit of `registry.zk.audit` on a local directory. Offline (`claim_id` None) the claim is
    what bundle.json says, unlinked; with a claim, its digests and training claim come from the chain."""
    from registry.core.hashing import as_hash
    from registry.zk.audit import UNAVAILABLE, ClaimDigests, DirSource, ModelLink, audit_bundle, unavailable
    from registry.zk.bundle import MAX_JSON_BYTES, BundleError, load_local_bundle

    link: ModelLink | None = None
    try:  # every listed file, even those the audit does not read: regular, bounded, its sha256
        body, _ = load_local_bundle(bundle)
    except BundleError as exc:
        return {"verdict": "Invalid", "reason": str(exc)}
    if claim_id is None:
        claim = ClaimDigests(0, as_hash(body["vkHash"]), as_hash(body["proofDigest"]), as_hash(body["instancesHash"]))
    else:
        client = open_client(rpc_url, deployment_path, None, None)
        start = client.deployment.block_number if client.deployment else 0
        logs = client.contract.events.InferenceClaimCommitted().get_logs(from_block=start,
                                                                        argument_filters={"claimId": claim_id})
        if not logs:
            raise CliError(f"no inference claim {claim_id} on this registry")
        c = logs[0]["args"]["claim"]
        claim = ClaimDigests(int(c["modelClaimId"]), as_hash(c["vkHash"]), as_hash(c["proofDigest"]),
                             as_hash(c["instancesHash"]))
        if claim.model_claim_id:
            tlogs = client.contract.events.TrainingClaimCommitted().get_logs(
                from_block=start, argument_filters={"claimId": claim.model_claim_id})
            if tlogs:
                t = tlogs[0]["args"]["claim"]
                store = open_store(ipfs, store_dir)
                cid = str(t["transcriptCid"])

                def manifest() -> bytes:
                    from registry.store.base import StoreError

                    try:
                        data: bytes = store.cat(f"{cid}/manifest.json", 0, MAX_JSON_BYTES + 1)
                    except StoreError as exc:
                        raise unavailable(f"training claim manifest: {exc}") from None
                    return data

                link = ModelLink(claim.model_claim_id, as_hash(t["finalWeightsHash"]), as_hash(t["configHash"]),
                                 manifest)
    srs = srs_dir or (Path(os.environ["PROOFREG_SRS_DIR"]) if os.environ.get("PROOFREG_SRS_DIR")
                      else proofreg_home() / "srs")
    outcome = audit_bundle(DirSource(bundle), claim, link, srs_dir=srs,
                           allow_dev_srs=os.environ.get("PROOFREG_ALLOW_DEV_SRS") == "1",
                           cache_dir=cache_dir or proofreg_home() / "zk-cache" / "verifier")
    out = {"verified": outcome.verdict == "Valid", **outcome.to_json(), "claimId": claim_id,
           "modelClaimId": claim.model_claim_id, "linked": link is not None,
           "developmentOnly": body.get("developmentOnly") is True}
    if outcome.verdict == UNAVAILABLE and claim_id is None and "SRS" in outcome.reason:
        out["reason"] += " (or --srs-dir DIR)"
    return out


@zk.command("evm-verifier")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--srs", "srs_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The SRS the bundle was proved with (default: its development SRS).")
@json_option
@handle_errors
def evm_verifier_cmd(bundle: Path, srs_path: Path | None, as_json: bool) -> None:
    """Render the circuit's Solidity verifier (ezkl), compile it with the project's solc, add it to the bundle."""
    try:
        from registry.zk.evm import add_evm_verifier

        evm = add_evm_verifier(bundle, srs_path)
    except _zk_errors() as exc:
        raise CliError(str(exc)) from None
    if not evm["fitsEip170"]:
        click.echo(f"warning: the verifier's runtime code is {evm['runtimeBytes']} bytes, over EIP-170's "
                   f"{evm['eip170Limit']}: it cannot be deployed on mainnet-like chains", err=True)
    emit(evm, as_json)


@zk.command("verify-onchain")
@click.argument("claim_id", type=click.IntRange(min=1))
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--verifier", "verifier_address", default=None, help="Deployed verifier (default: deploy verifier.bin).")
@optional_rpc_option
@deployment_option
@signer_options
@json_option
@handle_errors
def verify_onchain_cmd(claim_id: int, bundle: Path, verifier_address: str | None, rpc_url: str | None,
                       deployment_path: Path | None, account: str | None, keystore: Path | None,
                       as_json: bool) -> None:
    """Verify an inference claim's proof with its verifier contract through the registry (no committee)."""
    try:
        from registry.zk.bundle import FILES, MAX_JSON_BYTES, parse_proof, read_file
        from registry.zk.evm import VERIFIER_BIN

        proof, instances = parse_proof(read_file(bundle, FILES["proof"], MAX_JSON_BYTES))
        code = read_file(bundle, VERIFIER_BIN) if verifier_address is None else b""
        client = open_client(rpc_url, deployment_path, account, keystore)
        deploy_gas = None
        if verifier_address is None:
            receipt = client.w3.eth.wait_for_transaction_receipt(client.w3.eth.send_transaction(
                {"from": client.sender, "data": code})) if client.signer is None \
                else _deploy_signed(client, code)
            if receipt["status"] != 1 or not receipt["contractAddress"]:
                raise CliError("deploying the verifier failed (over the EIP-170 size limit?)")
            verifier_address, deploy_gas = str(receipt["contractAddress"]), int(receipt["gasUsed"])
        receipt = client.transact("verifyInferenceOnChain", claim_id, Web3.to_checksum_address(verifier_address),
                                  proof, instances)
        args = event_args(client, receipt, "InferenceVerifiedOnChain")
    except OSError as exc:
        raise CliError(str(exc)) from None
    except _zk_errors() as exc:
        raise CliError(str(exc)) from None
    emit({"claimId": claim_id, "verifier": verifier_address, "finalized": bool(args["finalized"]),
          "status": "Finalized" if args["finalized"] else "Valid", "deployGas": deploy_gas,
          "gasUsed": int(receipt["gasUsed"]), "txHash": Web3.to_hex(receipt["transactionHash"])}, as_json)


def _deploy_signed(client: Any, code: bytes) -> Any:
    w3 = client.w3
    tx = {"from": client.sender, "data": code, "value": 0, "chainId": int(w3.eth.chain_id),
          "nonce": w3.eth.get_transaction_count(Web3.to_checksum_address(client.sender), "pending")}
    tx["gas"] = min(int(w3.eth.estimate_gas(tx) * 1.2), int(w3.eth.get_block("latest")["gasLimit"]))
    tx["gasPrice"] = w3.eth.gas_price
    signed = client.signer.account.sign_transaction(tx)
    return w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))
