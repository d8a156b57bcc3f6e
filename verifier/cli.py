"""`proofreg-verifier`: the verifier node's command line."""

from __future__ import annotations

from pathlib import Path

import click
from web3.exceptions import ContractCustomError, ContractLogicError

from registry import __version__
from registry.cli.common import connect, emit, fail, json_option
from registry.cli.config import config_option, deployment_option, optional_rpc_option
from registry.core.errors import describe_revert


@click.group()
@click.version_option(__version__, prog_name="proofreg-verifier")
@config_option
def main() -> None:
    """Verifier node of the proof registry."""


@main.command()
@optional_rpc_option
@deployment_option
@click.option("--challenge", "challenge_id", type=click.IntRange(min=1), required=True)
@json_option
def assignments(rpc_url: str | None, deployment_path: Path | None, challenge_id: int, as_json: bool) -> None:
    """Show a drawn challenge's committee and the segments it must check (from the contract's views)."""
    handle = connect(rpc_url, deployment_path)
    f = handle.contract.functions
    try:
        committee = f.committee(challenge_id).call()
        segments = f.sampledSegments(challenge_id).call()
        verdicts = f.verdicts(challenge_id).call()
    except (ContractCustomError, ContractLogicError) as exc:
        fail(describe_revert(exc.data if isinstance(exc.data, str) else None))
        return
    emit({"challenge": challenge_id, "committee": committee, "verdicts": verdicts, "segments": segments}, as_json)


from verifier.daemon_cli import run as _run_command  # noqa: E402 - `run` (the node daemon) lives apart

main.add_command(_run_command)

from verifier.check_cli import calibrate as _calibrate_command  # noqa: E402 - engine commands live apart
from verifier.check_cli import check as _check_command  # noqa: E402

main.add_command(_check_command)
main.add_command(_calibrate_command)


if __name__ == "__main__":
    main()
