"""`proofreg-verifier run`: the click command that starts the daemon (`verifier.daemon`).

Kept apart from `verifier.cli` so the other commands stay quick to start: the daemon's imports (torch, the
audit engine) load only when `run` runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from registry.chain.deployment import proofreg_home
from registry.cli.common import fail, signer_options, with_store_options
from registry.cli.config import deployment_option, rpc_option


@click.command("run")
@rpc_option
@deployment_option
@signer_options
@with_store_options
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="SQLite state file (default: $PROOFREG_HOME/verifier/<address>.sqlite).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Scratch space for fetched evidence (default: beside the state file).")
@click.option("--confirmations", default=2, show_default=True, type=click.IntRange(min=0),
              help="Blocks behind the head before an event is acted on.")
@click.option("--poll-interval", default=1.0, show_default=True, type=click.FloatRange(min=0.05),
              help="Seconds between polls when idle.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Audits run at once (one per GPU is the sane choice).")
@click.option("--device", default="cpu", show_default=True, help="Device for re-execution: cpu or cuda[:N].")
@click.option("--policy", "policy_name", default=None, help="Tolerance policy (default: pol-tolerance/1).")
@click.option("--threshold", default=None, type=float, help="Largest accepted rho (default: the policy's).")
@click.option("--stake", default=None, type=click.IntRange(min=1),
              help="Stake in wei when registering (default: the registry's minimum).")
@click.option("--no-register", is_flag=True, help="Never send registerVerifier (serve only if already registered).")
@click.option("--metrics-port", default=None, type=click.IntRange(min=0, max=65535),
              help="Serve /healthz and /metrics on 127.0.0.1:PORT (0: any free port, logged).")
@click.option("--from-block", default=None, type=click.IntRange(min=0),
              help="First block to scan on a fresh state file (default: the deployment block).")
@click.option("--unavailable-after", default=120.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds of retrying unfetchable evidence before attesting Unavailable.")
@click.option("--deadline-margin", default=5, show_default=True, type=click.IntRange(min=0),
              help="Blocks before the deadline at which whatever result there is gets attested.")
@click.option("--fetch-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds the IPFS daemon may look for a block before it counts as missing.")
@click.option("--rpc-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds before a JSON-RPC request counts as failed.")
@click.option("--grace", default=30.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds to let running audits finish on SIGTERM.")
def run(rpc_url: str, deployment_path: Path | None, account: str | None, keystore: Path | None, ipfs: str | None,
        store_dir: Path | None, state_path: Path | None, workdir: Path | None, confirmations: int,
        poll_interval: float, workers: int, device: str, policy_name: str | None, threshold: float | None,
        stake: int | None, no_register: bool, metrics_port: int | None, from_block: int | None,
        unavailable_after: float, deadline_margin: int, fetch_timeout: float, rpc_timeout: float, grace: float) -> None:
    """Run the verifier node: register, follow challenges, audit, attest and settle (until SIGTERM)."""
    from web3 import HTTPProvider, Web3

    from registry.chain.signer import SignerError, load_signer
    from registry.store.base import ContentStore
    from verifier.audit import DEFAULT_RHO_THRESHOLD
    from verifier.daemon import DaemonConfig, JsonLog, VerifierDaemon
    from verifier.db import StateMismatch
    from verifier.policy import PolicyError, get_policy

    try:
        get_policy(policy_name)
    except PolicyError as exc:
        fail(str(exc))

    log = JsonLog()
    # The key source may depend on the chain id (dev accounts on local chains only); a node that is down
    # now only delays that check: the daemon itself waits for the node.
    chain_id = None
    try:
        chain_id = int(Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": rpc_timeout})).eth.chain_id)
    except Exception:  # noqa: BLE001 - unreachable: decide the key source without the id
        log("rpc_unreachable_at_start", level="warning", rpc=rpc_url)
    try:
        signer = load_signer(chain_id=chain_id if chain_id is not None else -1, account=account, keystore=keystore)
    except SignerError as exc:
        fail(str(exc))
    store: ContentStore
    if ipfs:
        from registry.store.daemon import DaemonStore

        store = DaemonStore(ipfs, fetch_timeout=fetch_timeout, timeout=max(fetch_timeout, 10.0), retries=2)
    else:
        from registry.store.embedded import EmbeddedStore

        store = EmbeddedStore(store_dir or proofreg_home() / "store")
    state = state_path or proofreg_home() / "verifier" / f"{signer.address.lower()}.sqlite"
    config = DaemonConfig(
        rpc_url=rpc_url, state_path=state, store=store, workdir=workdir or state.parent / "work",
        deployment_path=deployment_path, confirmations=confirmations, poll_interval=poll_interval, workers=workers,
        device=device, threshold=threshold if threshold is not None else DEFAULT_RHO_THRESHOLD, policy=policy_name,
        stake=stake,
        register=not no_register, metrics_port=metrics_port, from_block=from_block,
        unavailable_after=unavailable_after, deadline_margin=deadline_margin, rpc_timeout=rpc_timeout, grace=grace)
    try:
        daemon = VerifierDaemon(config, signer, JsonLog(extra={"verifier": signer.address}))
        code = daemon.run()
    except StateMismatch as exc:
        fail(str(exc))
    except OSError as exc:  # the metrics port is taken, the state file's folder is not writable, ...
        fail(f"cannot start the verifier node: {exc}")
    except Exception as exc:
        from registry.chain.deployment import DeploymentError

        if isinstance(exc, DeploymentError):
            fail(str(exc))
        raise
    sys.exit(code)
