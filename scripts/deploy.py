"""Deploy the ProofRegistry contract with ape and write its deployment record.

    ape run deploy --network ethereum:local:hardhat                       # node from `npx hardhat node`
    ape run deploy --network ethereum:local:hardhat --provider-settings '{"host": "http://127.0.0.1:8546"}'
    ape run deploy --network ethereum:local:test --preset dev --quorum 3  # in-process chain (gone on exit)
    ape run deploy --network ethereum:sepolia:... --account ALIAS --preset default --out deploy.json

Parameters come from `--preset` (registry.core.params.PRESETS) with one override option per RegistryParams field
(`--challenge-window 300`, `--training-bond "0.2 ether"`, ...). The record (registry.chain.deployment.Deployment)
goes to `--out PATH` or `$PROOFREG_HOME/deployments/<chainId>.json`.

Signing keys only come from ape's accounts: `--account ALIAS` (an `ape accounts` keyfile, which ape unlocks
with a passphrase prompt) or, on local networks only, ape's test accounts (`TEST::0`, the default there).
Every failure ends in one `Error: ...` line and exit status 1.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click
from ape.cli import ConnectedProviderCommand, account_option

from registry.chain.deployment import Deployment
from registry.core.errors import decode_revert
from registry.core.params import PRESETS, RegistryParams

CONTRACT = "ProofRegistry"
UINT256_MAX = 2**256 - 1
#: RegistryParams fields that are amounts of wei (accept "0.1 ether", "5 gwei" as well as plain integers).
WEI_FIELDS = {"training_bond", "inference_bond", "challenge_bond", "verifier_stake"}
UNITS = {"wei": 1, "gwei": 10**9, "ether": 10**18, "eth": 10**18}
_CONNECTED = "proofreg.connected"


class Amount(click.ParamType):
    """A non-negative uint256; with `wei=True`, also a decimal number followed by a unit (wei, gwei, ether)."""

    def __init__(self, wei: bool = False) -> None:
        self.wei = wei
        self.name = "WEI" if wei else "INT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            number = value
        else:
            text = str(value).strip().lower().replace("_", "")
            unit = 1
            if self.wei:
                for name, factor in UNITS.items():
                    if text.endswith(name) and text[: -len(name)].strip():
                        text, unit = text[: -len(name)].strip(), factor
                        break
            try:
                exact = Decimal(text) * unit
            except InvalidOperation:
                kind = "an integer or a number with a unit (wei, gwei, ether)" if self.wei else "an integer"
                self.fail(f"{value!r} is not {kind}", param, ctx)
            if exact != exact.to_integral_value():
                self.fail(f"{value!r} is not a whole number of wei" if self.wei else f"{value!r} is not an integer",
                          param, ctx)
            number = int(exact)
        if not 0 <= number <= UINT256_MAX:
            self.fail(f"{value!r} is out of range (0 .. 2**256-1)", param, ctx)
        return number


def _option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _param_options(func: Any) -> Any:
    """One `--<field>` override option per RegistryParams field, in ABI order."""
    for f in reversed(dataclasses.fields(RegistryParams)):
        values = {name: getattr(p, f.name) for name, p in PRESETS.items()}
        if len(set(values.values())) == 1:
            shown = f"all presets: {next(iter(values.values()))}"
        else:
            shown = ", ".join(f"{name}: {v}" for name, v in values.items())
        unit = " (wei, or e.g. '0.1 ether')" if f.name in WEI_FIELDS else ""
        func = click.option(
            _option_name(f.name), f.name, type=Amount(wei=f.name in WEI_FIELDS), default=None,
            help=f"Override {f.name}{unit}; {shown}.",
        )(func)
    return func


class DeployCommand(ConnectedProviderCommand):
    """ConnectedProviderCommand that turns a failure to connect into one clear line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as err:  # noqa: BLE001 - anything before our callback ran is a connection problem
            if ctx.meta.get(_CONNECTED):
                raise click.ClickException(f"deployment failed: {_first_line(err)}") from None
            raise click.ClickException(_unreachable_message(ctx.params.get("network"), err)) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _unreachable_message(provider: Any, err: BaseException) -> str:
    name = getattr(provider, "name", None)
    choice = getattr(provider, "network_choice", None) or str(provider or "the default network")
    uri = None
    for attr in ("_host", "uri"):
        try:
            value = getattr(provider, attr, None)
        except Exception:  # noqa: BLE001 - some providers compute uri lazily and may fail
            value = None
        if isinstance(value, str) and value.startswith("http"):
            uri = value
            break
    where = f" at {uri}" if uri else ""
    if name == "hardhat":
        port = uri.rsplit(":", 1)[-1].strip("/") if uri and uri.count(":") == 2 else "8545"
        return (
            f"cannot reach a Hardhat node{where} ({choice}): start one with "
            f"`npx hardhat node --hostname 127.0.0.1 --port {port}` in the repository, or point ape at yours "
            "with --provider-settings '{\"host\": \"http://127.0.0.1:PORT\"}'"
        )
    return f"cannot connect to {choice}{where}: {_first_line(err)}"


def _compiler_missing() -> bool:
    try:
        import solcx
        from packaging.version import Version

        from registry.chain.toolchain import SOLC_VERSION

        return Version(SOLC_VERSION) not in solcx.get_installed_solc_versions()
    except Exception:  # noqa: BLE001 - if we cannot tell, assume the compiler is the problem
        return True


def _contract_container(project: Any) -> Any:
    """The ProofRegistry container, compiling contracts/ with ape-solidity when the build cache is stale."""
    try:
        return project.get_contract(CONTRACT)
    except Exception as err:  # noqa: BLE001 - compile and install failures come in many types
        if _compiler_missing():
            raise click.ClickException(
                "no Solidity compiler 0.8.28 for ape (offline it cannot download one): run `make solc`"
            ) from None
        raise click.ClickException(f"compiling contracts/ failed: {_first_line(err)}") from None


def _check_artifact(allow_stale: bool) -> str:
    """source_digest of the shipped artifact; refuses (unless allowed) when contracts/ no longer match it."""
    from registry.chain.toolchain import source_digest, source_files
    from registry.core.artifact import load_artifact

    shipped = load_artifact().source_digest
    current = source_digest(source_files())
    if current == shipped:
        return shipped
    if not allow_stale:
        raise click.ClickException(
            "contracts/ differ from the artifact shipped in registry/artifacts (its ABI is what the proofreg "
            "clients use): run `make artifact` first, or pass --allow-stale-artifact"
        )
    click.echo(f"warning: deploying contracts/ that differ from the shipped artifact (digest {current})", err=True)
    return current


def _camel(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(w.capitalize() for w in rest)


_FIELD_BY_CONTRACT_NAME = {_camel(f.name): f.name for f in dataclasses.fields(RegistryParams)}


def _decode_revert(err: Any) -> tuple[str, dict[str, Any]] | None:
    """(error name, arguments) of a registry custom error behind an ape ContractLogicError, if recognisable."""
    if hasattr(err, "abi") and getattr(err, "name", None):  # ape decoded a CustomError itself
        return str(err.name), dict(getattr(err, "inputs", None) or {})
    texts = [getattr(err, "revert_message", None), getattr(err, "message", None), str(err)]
    for text in texts:
        if isinstance(text, str) and text.startswith("0x"):  # raw revert data (JSON-RPC nodes such as Hardhat)
            decoded = decode_revert(text)
            if decoded is not None:
                return decoded
    # eth-tester (ape's `test` provider) reduces a custom error whose only argument is a string to that string.
    for text in texts:
        if isinstance(text, str) and text.strip() in _FIELD_BY_CONTRACT_NAME:
            return "InvalidParameter", {"name": text.strip()}
    return None


def _rejected_message(err: Any, params: RegistryParams) -> str:
    """`invalid parameter quorum = 1 (--quorum): the registry constructor reverted with InvalidParameter(...)`."""
    decoded = _decode_revert(err)
    if decoded is None:
        return f"the registry constructor reverted: {_first_line(err)}"
    name, args = decoded
    reason = f"{name}({', '.join(f'{k}={v}' for k, v in args.items())})"
    field = _FIELD_BY_CONTRACT_NAME.get(str(args.get("name"))) if name == "InvalidParameter" else None
    if field is not None:
        return (f"invalid parameter {field} = {getattr(params, field)} ({_option_name(field)}): "
                f"the registry constructor reverted with {reason}")
    return f"the registry constructor rejected the parameters: {reason}"


def _choose_account(account: Any, provider: Any) -> Any:
    from ape import accounts
    from ape.api.accounts import TestAccountAPI

    is_local = provider.network.is_local
    if account is None:
        if not is_local:
            raise click.ClickException(
                f"{provider.network_choice} is not a local network: pass --account ALIAS "
                "(an account from `ape accounts list`)"
            )
        return accounts.test_accounts[0]
    if isinstance(account, TestAccountAPI) and not is_local:
        raise click.ClickException(
            f"test accounts have public keys: use --account ALIAS on {provider.network_choice}, not a TEST:: account"
        )
    return account


@click.command(cls=DeployCommand, short_help="Deploy ProofRegistry and write its deployment record")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="default", show_default=True,
              help="Parameter preset (durations in blocks; `dev` suits local chains).")
@_param_options
@account_option(prompt=False)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the deployment record (default: $PROOFREG_HOME/deployments/<chainId>.json).")
@click.option("--allow-stale-artifact", is_flag=True,
              help="Deploy even when contracts/ no longer match the shipped artifact.")
@click.pass_context
def cli(ctx: click.Context, provider: Any, preset: str, account: Any, out: Path | None,
        allow_stale_artifact: bool, **overrides: int | None) -> None:
    """Deploy ProofRegistry with the given parameters and write its deployment record."""
    ctx.meta[_CONNECTED] = True
    from ape import project
    from ape.exceptions import ContractLogicError, TransactionError

    params = PRESETS[preset].with_overrides(**overrides)
    sender = _choose_account(account, provider)
    digest = _check_artifact(allow_stale_artifact)
    container = _contract_container(project)

    try:
        instance = container.deploy(params.as_tuple(), sender=sender)
    except ContractLogicError as err:
        raise click.ClickException(_rejected_message(err, params)) from None
    except TransactionError as err:
        raise click.ClickException(f"deployment transaction failed: {_first_line(err)}") from None

    receipt = instance.creation_metadata.receipt if instance.creation_metadata else None
    if receipt is None:
        raise click.ClickException(f"deployed to {instance.address}, but its creation receipt is not available")
    onchain = RegistryParams.from_tuple(list(instance.parameters()))
    if onchain != params:
        raise click.ClickException(f"deployed {instance.address}, but parameters() returns {onchain}, not {params}")

    chain_id = int(provider.chain_id)
    record = Deployment(
        address=str(instance.address),
        chain_id=chain_id,
        block_number=int(receipt.block_number),
        tx_hash=str(receipt.txn_hash),
        deployer=str(sender.address),
        network=str(provider.network_choice),
        parameters=params.to_dict(),
        source_digest=digest,
    )
    try:
        path = record.save(out)
    except OSError as err:
        raise click.ClickException(
            f"ProofRegistry deployed at {record.address} (chain {chain_id}, tx {record.tx_hash}), but the "
            f"deployment record could not be written: {err}"
        ) from None
    click.echo(f"ProofRegistry deployed at {record.address} (chain {chain_id}, block {record.block_number})")
    click.echo(f"deployment record: {path}")
    if provider.network.is_local and provider.name == "test":
        click.echo("note: ethereum:local:test is an in-process chain that ends with this command", err=True)


for _param in cli.params:
    if _param.name == "account" and isinstance(_param, click.Option):
        _param.help = ("Signer: an alias from `ape accounts list`; on local networks also TEST::<n> "
                       "(default there: TEST::0, a test account of the ape-config.yaml mnemonic).")
