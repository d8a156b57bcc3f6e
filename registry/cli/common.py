"""What every `proofreg` and `proofreg-verifier` command shares: one-line errors, output, chain, signer and
store resolution (`registry.cli.config`), so that every command resolves them the same way."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from registry.chain.deployment import proofreg_home
from registry.chain.rpc import ChainError, RegistryClient, RegistryHandle, connect_rpc
from registry.chain.signer import SignerError, load_signer
from registry.cli.config import (
    ConfigError,
    ipfs_option,
    store_dir_option,
)
from registry.cli.config import (
    rpc_option as rpc_option,  # re-exported: `proofreg-verifier run` needs a real chain
)
from registry.core.errors import PublishError
from registry.store.base import StoreError

F = TypeVar("F", bound=Callable[..., Any])


class CliError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


def fail(message: str) -> NoReturn:
    """One clear line on stderr and a non-zero exit."""
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def handle_errors(fn: F) -> F:
    """Turns the project's expected failures into one line and exit 1; anything else is a bug and shows."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (CliError, ChainError, SignerError, PublishError, StoreError, ConfigError) as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(label: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, fed `(done, total)`, only when stderr is a terminal: stdout stays clean for
    results, and logs and error output stay one line (off a terminal, and with --json, it is silent)."""
    state: dict[str, Any] = {}
    enabled = enabled and sys.stderr.isatty()

    def update(done: int, total: int) -> None:
        if not enabled:
            return
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = click.progressbar(length=max(total, 1), label=label, file=sys.stderr,
                                                   show_pos=True, show_eta=True)
            bar.__enter__()
        bar.update(done - bar.pos)

    try:
        yield update
    finally:
        if "bar" in state:
            state["bar"].__exit__(None, None, None)


def emit(data: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    elif isinstance(data, dict):
        width = max((len(k) for k in data), default=0)
        for k, v in data.items():
            click.echo(f"{k:<{width}}  {v}")
    else:
        click.echo(str(data))


def wei(amount: int) -> str:
    return f"{amount / 10**18:.6g} ETH ({amount} wei)"


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def signer_options(fn: F) -> F:
    fn = click.option("--account", default=None,
                      help="ape account alias, or dev:N for the development mnemonic (local chains only).")(fn)
    fn = click.option("--keystore", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                      help="Encrypted JSON keystore (password from $PROOFREG_KEYSTORE_PASSWORD or a prompt).")(fn)
    return fn


def connect(rpc_url: str | None, deployment_path: Path | None) -> RegistryHandle:
    """A read-only handle on the resolved chain (the embedded one when no RPC URL was resolved)."""
    if rpc_url is None:
        chain = embedded_chain()
        return RegistryHandle(chain.w3, chain.registry, None)
    try:
        return connect_rpc(rpc_url, deployment_path)
    except ChainError as exc:
        fail(str(exc))


def embedded_chain() -> Any:
    """The in-process chain of a command run without a resolved RPC URL (it ends with the command)."""
    from registry.chain.local import EmbeddedChain

    click.echo("note: no --rpc, PROOFREG_RPC or rpc in proofreg.toml: using an embedded in-process chain that "
               "ends with this command", err=True)
    return EmbeddedChain()


def open_client(rpc_url: str | None, deployment_path: Path | None, account: str | None,
                keystore: Path | None) -> RegistryClient:
    if rpc_url is None:
        chain = embedded_chain()
        return RegistryClient(chain.w3, chain.registry, None, sender=chain.accounts[1])
    handle = connect_rpc(rpc_url, deployment_path)
    signer = load_signer(chain_id=int(handle.w3.eth.chain_id), account=account, keystore=keystore)
    return RegistryClient(handle.w3, handle.contract, handle.deployment, sender=signer.address, signer=signer)


def open_store(ipfs: str | None, store_dir: Path | None) -> Any:
    if ipfs:
        from registry.store.daemon import DaemonStore

        return DaemonStore(ipfs)
    from registry.store.embedded import EmbeddedStore

    return EmbeddedStore(store_dir or proofreg_home() / "store")


store_options = [ipfs_option, store_dir_option]


def with_store_options(fn: F) -> F:
    for option in reversed(store_options):
        fn = option(fn)
    return fn


def hidden_files_note(tree: Path) -> None:
    """Directory CIDs count dot-files, like `ipfs add -r --hidden` (docs/cids.md): say so when a tree has one,
    since plain `ipfs add -r --cid-version=1 --raw-leaves` would then give another CID for it."""
    dots = sorted(p for p in tree.rglob(".*"))
    if dots:
        click.echo(f"note: {tree} holds dot-files ({dots[0].relative_to(tree)}{', ...' if len(dots) > 1 else ''}): "
                   "its CID counts them; to reproduce it, use `ipfs add -r --hidden --cid-version=1 --raw-leaves`",
                   err=True)


def require_balance(client: RegistryClient, value: int, what: str) -> None:
    balance = int(client.w3.eth.get_balance(client.w3.to_checksum_address(client.sender)))
    if balance < value:
        raise CliError(f"insufficient balance for {what}: {client.sender} has {wei(balance)}, needs {wei(value)} "
                       "plus gas")


def event_args(client: RegistryClient, receipt: Any, event: str) -> Any:
    logs = getattr(client.contract.events, event)().process_receipt(receipt)
    if not logs:
        raise CliError(f"transaction {receipt['transactionHash'].hex()} emitted no {event}")
    return logs[0]["args"]
