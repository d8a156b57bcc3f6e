"""`proofreg`: the command line of provers, challengers and anyone reading the registry.

Chain, deployment and store are resolved the same way by every command (`registry.cli.config`): flag, then
environment variable, then the project config file (`--config FILE` or ./proofreg.toml), then the embedded
default: an in-process chain that lives only as long as the command (useful for `train`, dry runs and the
demo; a claim committed there is gone when the command ends, and the CLI says so) and the embedded store in
$PROOFREG_HOME/store. `proofreg config` shows what was resolved and from where.
Every failure is one line on stderr and exit code 1; `--json` gives machine-readable results.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from web3 import Web3

from registry import __version__
from registry.chain.deployment import proofreg_home
from registry.chain.rpc import RegistryClient, RegistryHandle
from registry.cli.common import (  # noqa: F401  (re-exported names)
    CliError,
    connect,
    embedded_chain,
    emit,
    event_args,
    fail,
    handle_errors,
    hidden_files_note,
    json_option,
    open_client,
    open_store,
    progress_bar,
    require_balance,
    signer_options,
    store_options,
    wei,
    with_store_options,
)
from registry.cli.config import (
    config_option,
    deployment_option,
    optional_rpc_option,
    resolved_report,
)
from registry.cli.config import (
    rpc_option as rpc_option,  # re-exported: `proofreg-verifier run` needs a real chain
)
from registry.cli.zk import zk
from registry.core.hashing import as_hash, to_hex
from registry.core.params import PRESETS, preset
from registry.core.states import CHALLENGE_STATUS, CLAIM_STATUS, KIND

# ------------------------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------------------------

@click.group()
@click.version_option(__version__, prog_name="proofreg")
@config_option
def main() -> None:
    """Commit and challenge proofs about ML models on the proof registry."""


@main.command("config")
@optional_rpc_option
@deployment_option
@with_store_options
@json_option
@click.pass_context
def config_command(ctx: click.Context, rpc_url: str | None, deployment_path: Path | None, ipfs: str | None,
                   store_dir: Path | None, as_json: bool) -> None:
    """Show the chain, deployment and store every command would use here, and where each came from."""
    report = resolved_report(ctx)
    if as_json:
        emit(report, True)
        return
    width = max(len(k) for k in report)
    for key, r in report.items():
        click.echo(f"{key:<{width}}  {r['value']}  ({r['source']})")


@main.command()
@click.option("--preset", "preset_name", type=click.Choice(sorted(PRESETS)), default="default", show_default=True)
@json_option
def params(preset_name: str, as_json: bool) -> None:
    """Show a parameter preset (what `ape run deploy --preset` deploys)."""
    emit(preset(preset_name).to_dict(), as_json)


@main.command()
@optional_rpc_option
@deployment_option
@json_option
def info(rpc_url: str | None, deployment_path: Path | None, as_json: bool) -> None:
    """Show the deployed registry: address, counts and on-chain parameters."""
    emit(connect(rpc_url, deployment_path).summary(), as_json)


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: transcript/ and dataset/ are written inside.")
@click.option("--family", default="mlp", show_default=True, help="Model family (mlp, cnn, resnet20, plugins).")
@click.option("--dataset", default="digits", show_default=True, help="Built-in dataset (digits, synthetic).")
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=0.05, show_default=True, type=float)
@click.option("--steps-per-segment", "-k", "k", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--max-steps", default=None, type=click.IntRange(min=1), help="Stop after this many steps.")
@json_option
@handle_errors
def train(out_dir: Path, family: str, dataset: str, epochs: int, batch_size: int, lr: float, k: int, seed: int,
          device: str, max_steps: int | None, as_json: bool) -> None:
    """Train a built-in model family on a built-in dataset with Proof-of-Learning recording on."""
    from registry.pol.train import train as run_training

    if (out_dir / "transcript" / "manifest.json").exists():
        raise CliError(f"{out_dir / 'transcript'} already holds a transcript: choose another --out")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CliError("--device cuda: no CUDA device is available here (use --device cpu)")
    try:
        with progress_bar("training (recording every step)", not as_json) as update:
            result = run_training(out_dir, family=family, dataset=dataset, epochs=epochs, batch_size=batch_size,
                                  lr=lr, steps_per_segment=k, seed=seed, device=device, max_steps=max_steps,
                                  progress=update)
    except (ValueError, KeyError) as exc:
        raise CliError(str(exc).strip("'\"")) from None
    emit({"transcript": str(result.transcript_dir), "dataset": str(result.dataset_dir),
          "finalLoss": round(result.final_loss, 6), "accuracy": round(result.accuracy, 6),
          **result.summary.to_json()}, as_json)


@main.command()
@click.argument("transcript", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dataset", "dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Dataset folder if the manifest has no dataset CID yet (default: ../dataset).")
@with_store_options
@optional_rpc_option
@deployment_option
@signer_options
@json_option
@handle_errors
def commit(transcript: Path, dataset_dir: Path | None, ipfs: str | None, store_dir: Path | None,
           rpc_url: str | None, deployment_path: Path | None, account: str | None, keystore: Path | None,
           as_json: bool) -> None:
    """Publish a transcript (and its dataset) to the content store, then commit its training claim.

    The transcript CID is that of `ipfs add -r --hidden --cid-version=1 --raw-leaves TRANSCRIPT` (dot-files
    count; docs/cids.md)."""
    from registry.pol.publish import publish_transcript, verify_transcript

    with progress_bar("verifying transcript files", not as_json) as update:
        verified = verify_transcript(transcript, update)  # fail fast, before touching the chain or the store
    client = open_client(rpc_url, deployment_path, account, keystore)
    bond = client.params.training_bond
    require_balance(client, bond, "the training bond")
    published = publish_transcript(transcript, open_store(ipfs, store_dir), dataset_dir, verified=verified)
    hidden_files_note(transcript)
    receipt = client.transact("commitTraining", published.claim_tuple(), value=bond)
    args = event_args(client, receipt, "TrainingClaimCommitted")
    emit({"claimId": int(args["claimId"]), "prover": client.sender, "transcriptCid": published.transcript_cid,
          "datasetCid": published.dataset_cid, "finalWeightsHash": to_hex(published.summary.final_weights_hash),
          "segmentRoot": to_hex(published.summary.segment_root), "numSegments": published.summary.num_segments,
          "bond": bond, "txHash": Web3.to_hex(receipt["transactionHash"]), "gasUsed": int(receipt["gasUsed"])}, as_json)


def _claim_event(client: RegistryHandle, claim_id: int, kind: int) -> dict[str, Any]:
    events = client.contract.events
    event = events.TrainingClaimCommitted if kind == 1 else events.InferenceClaimCommitted
    start = client.deployment.block_number if client.deployment else 0
    logs = event().get_logs(from_block=start, argument_filters={"claimId": claim_id})
    if not logs:
        return {}
    fields = dict(logs[0]["args"]["claim"])
    return {k: (to_hex(v) if isinstance(v, bytes) else v) for k, v in fields.items()}


@main.command()
@click.argument("claim_id", type=click.IntRange(min=1))
@optional_rpc_option
@deployment_option
@json_option
@handle_errors
def status(claim_id: int, rpc_url: str | None, deployment_path: Path | None, as_json: bool) -> None:
    """Show a claim: status, committed fields (from its event) and its challenges."""
    handle = connect(rpc_url, deployment_path)
    client = RegistryClient(handle.w3, handle.contract, handle.deployment)
    if rpc_url is None and claim_id > int(client.call("claimCount")):  # a real chain's revert says UnknownClaim
        raise CliError(f"no claim {claim_id} on the embedded chain (it holds only what this command commits)")
    c = client.call("getClaim", claim_id)
    prover, committed_at, kind, state, open_challenges, num_segments = c[0], c[1], c[2], c[3], c[4], c[5]
    start = handle.deployment.block_number if handle.deployment else 0
    challenges = []
    for log in handle.contract.events.ChallengeOpened().get_logs(from_block=start,
                                                                  argument_filters={"claimId": claim_id}):
        cid = int(log["args"]["challengeId"])
        ch = client.call("getChallenge", cid)
        challenges.append({"challengeId": cid, "challenger": ch[0], "status": CHALLENGE_STATUS.get(ch[2], ch[2]),
                           "commitDeadline": int(ch[8]), "deadline": int(ch[7])})
    emit({"claimId": claim_id, "kind": KIND.get(kind, kind), "status": CLAIM_STATUS.get(state, state),
          "prover": prover, "committedAt": int(committed_at), "numSegments": int(num_segments),
          "challengeWindowEnd": int(client.call("challengeWindowEnd", claim_id)),
          "openChallenges": int(open_challenges), "committed": _claim_event(handle, claim_id, kind),
          "challenges": challenges}, as_json)


@main.command()
@click.argument("claim_id", type=click.IntRange(min=1))
@click.option("--segment", "segments", type=click.IntRange(min=0), multiple=True,
              help="Name a segment the committee must check (repeatable, at most 8).")
@optional_rpc_option
@deployment_option
@signer_options
@json_option
@handle_errors
def challenge(claim_id: int, segments: tuple[int, ...], rpc_url: str | None, deployment_path: Path | None,
              account: str | None, keystore: Path | None, as_json: bool) -> None:
    """Challenge a claim with the challenge bond."""
    client = open_client(rpc_url, deployment_path, account, keystore)
    bond = client.params.challenge_bond
    require_balance(client, bond, "the challenge bond")
    receipt = client.transact("openChallenge", claim_id, list(segments), value=bond)
    args = event_args(client, receipt, "ChallengeOpened")
    emit({"challengeId": int(args["challengeId"]), "claimId": claim_id, "seedBlock": int(args["seedBlock"]),
          "commitDeadline": int(args["commitDeadline"]), "deadline": int(args["deadline"]),
          "namedSegments": list(args["namedSegments"]), "bond": bond,
          "txHash": Web3.to_hex(receipt["transactionHash"])}, as_json)


def _simple_tx(name: str, help_text: str) -> None:
    @main.command(name=name, help=help_text)
    @click.argument("target_id", type=click.IntRange(min=1))
    @optional_rpc_option
    @deployment_option
    @signer_options
    @json_option
    @handle_errors
    def command(target_id: int, rpc_url: str | None, deployment_path: Path | None, account: str | None,
                keystore: Path | None, as_json: bool) -> None:
        client = open_client(rpc_url, deployment_path, account, keystore)
        fn = {"settle": "settle", "finalize": "finalize", "draw": "drawCommittee"}[name]
        receipt = client.transact(fn, target_id)
        emit({"id": target_id, "txHash": Web3.to_hex(receipt["transactionHash"]), "gasUsed": int(receipt["gasUsed"])},
             as_json)


_simple_tx("settle", "Settle a challenge (quorum reached or deadline passed).")
_simple_tx("finalize", "Finalize a claim whose window has passed with no open challenge; credits its bond back.")
_simple_tx("draw", "Draw a challenge's committee once its seed block is mined.")


@main.command()
@click.argument("weights", required=False)
@click.option("--transcript", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Take finalWeightsHash from this transcript's manifest.")
@optional_rpc_option
@deployment_option
@json_option
@handle_errors
def ownerof(weights: str | None, transcript: Path | None, rpc_url: str | None, deployment_path: Path | None,
            as_json: bool) -> None:
    """Who owns a model: the prover of the earliest standing claim with these final weights."""
    if (weights is None) == (transcript is None):
        raise CliError("give either a finalWeightsHash (0x...) or --transcript DIR")
    if transcript is not None:
        from registry.pol.publish import verify_transcript

        weights_hash = verify_transcript(transcript)[1].final_weights_hash
    else:
        try:
            weights_hash = as_hash(str(weights))
        except ValueError as exc:
            raise CliError(f"not a 32-byte hash: {weights} ({exc})") from None
    handle = connect(rpc_url, deployment_path)
    client = RegistryClient(handle.w3, handle.contract, handle.deployment)
    owner = client.call("ownerOf", weights_hash)
    emit({"finalWeightsHash": to_hex(weights_hash), "owner": None if int(owner, 16) == 0 else owner,
          "claimId": int(client.call("ownerClaimOf", weights_hash)) or None}, as_json)


@main.command()
@optional_rpc_option
@deployment_option
@signer_options
@json_option
@handle_errors
def withdraw(rpc_url: str | None, deployment_path: Path | None, account: str | None, keystore: Path | None,
             as_json: bool) -> None:
    """Withdraw everything credited to your account (bonds, rewards, exited stake)."""
    client = open_client(rpc_url, deployment_path, account, keystore)
    amount = int(client.call("pendingWithdrawal", client.sender))
    if amount == 0:
        raise CliError(f"nothing to withdraw for {client.sender}")
    receipt = client.transact("withdraw")
    emit({"account": client.sender, "amount": amount, "txHash": Web3.to_hex(receipt["transactionHash"])}, as_json)


@main.command()
@click.option("--verifiers", default=3, show_default=True, type=click.IntRange(min=0, max=15),
              help="Verifier accounts (dev:1..dev:N) registered with stake.")
@click.option("--preset", "preset_name", type=click.Choice(sorted(PRESETS)), default="dev", show_default=True)
@click.option("--rpc-port", default=8545, show_default=True, type=click.IntRange(min=0, max=65535),
              help="Hardhat JSON-RPC port on 127.0.0.1 (0: any free port).")
@click.option("--ipfs-port", default=5001, show_default=True, type=click.IntRange(min=0, max=65535),
              help="IPFS RPC API port on 127.0.0.1 (0: any free port).")
@click.option("--dir", "base_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="State and logs (default: $PROOFREG_HOME/devnet).")
@click.option("--block-time", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds between blocks mined without transactions (0: only on transactions).")
@click.option("--for", "duration", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds (default: run until Ctrl-C or SIGTERM).")
@json_option
@handle_errors
def devnet(verifiers: int, preset_name: str, rpc_port: int, ipfs_port: int, base_dir: Path | None,
           block_time: float, duration: float | None, as_json: bool) -> None:
    """Run a local Hardhat node and IPFS daemon with the registry deployed and verifiers registered."""
    from registry.devnet import DEVNET_FILE, Devnet, DevnetError, walkthrough

    net = Devnet(base_dir or proofreg_home() / "devnet", preset(preset_name), verifiers, rpc_port, ipfs_port,
                 block_time)
    try:
        info = net.start()
        click.echo(json.dumps(info, indent=2, sort_keys=True, default=str) if as_json else walkthrough(info))
        click.echo(f"(this is also in {net.base_dir / DEVNET_FILE})", err=True)
        sys.stdout.flush()
        problem = net.serve(duration)
    except DevnetError as exc:
        raise CliError(str(exc)) from None
    finally:
        net.stop()
    if problem is not None:
        raise CliError(problem)
    click.echo("devnet stopped", err=True)


@main.command()
@optional_rpc_option
@deployment_option
@with_store_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", default=8600, show_default=True, type=click.IntRange(min=0, max=65535),
              help="Port (0: any free port).")
@click.option("--for", "duration", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds (default: until Ctrl-C).")
@json_option
@handle_errors
def explorer(rpc_url: str | None, deployment_path: Path | None, ipfs: str | None, store_dir: Path | None, host: str,
             port: int, duration: float | None, as_json: bool) -> None:
    """Serve a read-only web page of the registry: claims, challenges, committees, reports, ownerOf."""
    import time

    from registry.cli.explorer import Explorer, serve, url_of

    handle = connect(rpc_url, deployment_path)
    start = handle.deployment.block_number if handle.deployment else 0
    ex = Explorer(handle.w3, handle.contract, open_store(ipfs, store_dir), from_block=start)
    try:
        server = serve(ex, host, port)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    emit({"url": url_of(server), "registry": handle.contract.address}, as_json)
    sys.stdout.flush()
    try:
        deadline = None if duration is None else time.monotonic() + duration
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()


# `proofreg zk ...` (ZK inference), built on registry.cli.common like every other command.
main.add_command(zk)


if __name__ == "__main__":
    main()
