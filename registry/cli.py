"""`proofreg`: the command line of provers, challengers and anyone reading the registry."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from registry import __version__
from registry.chain import ChainError, RegistryHandle, connect_rpc
from registry.params import PRESETS, preset


def fail(message: str) -> None:
    """One clear line on stderr and a non-zero exit."""
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def emit(data: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    elif isinstance(data, dict):
        width = max((len(k) for k in data), default=0)
        for k, v in data.items():
            click.echo(f"{k:<{width}}  {v}")
    else:
        click.echo(str(data))


rpc_option = click.option("--rpc", "rpc_url", envvar="PROOFREG_RPC", required=True,
                          help="Ethereum JSON-RPC URL (env PROOFREG_RPC).")
deployment_option = click.option(
    "--deployment", "deployment_path", type=click.Path(path_type=Path), envvar="PROOFREG_DEPLOYMENT",
    help="Deployment record (default: $PROOFREG_HOME/deployments/<chainId>.json).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def connect(rpc_url: str, deployment_path: Path | None) -> RegistryHandle:
    try:
        return connect_rpc(rpc_url, deployment_path)
    except ChainError as exc:
        fail(str(exc))
        raise  # unreachable; keeps type checkers honest


@click.group()
@click.version_option(__version__, prog_name="proofreg")
def main() -> None:
    """Commit and challenge proofs about ML models on the proof registry."""


@main.command()
@click.option("--preset", "preset_name", type=click.Choice(sorted(PRESETS)), default="default", show_default=True)
@json_option
def params(preset_name: str, as_json: bool) -> None:
    """Show a parameter preset (what `ape run deploy --preset` deploys)."""
    emit(preset(preset_name).to_dict(), as_json)


@main.command()
@rpc_option
@deployment_option
@json_option
def info(rpc_url: str, deployment_path: Path | None, as_json: bool) -> None:
    """Show the deployed registry: address, counts and on-chain parameters."""
    emit(connect(rpc_url, deployment_path).summary(), as_json)


if __name__ == "__main__":
    main()
