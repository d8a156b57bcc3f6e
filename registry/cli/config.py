"""Where every command line takes its chain, store and deployment from: one rule for `proofreg` and
`proofreg-verifier`, so that no two commands disagree about which chain they talk to.

For each setting the first of these that gives a value wins:
1. the flag (`--rpc`, `--deployment`, `--ipfs`, `--store-dir`);
2. the environment (`PROOFREG_RPC`, `PROOFREG_DEPLOYMENT`, `PROOFREG_IPFS`, `PROOFREG_STORE_DIR`);
3. the project config file: `--config FILE` (before the command: `proofreg --config FILE status 1`), else
   `$PROOFREG_CONFIG`, else `proofreg.toml` in the working directory, with the keys `rpc`, `deployment`,
   `ipfs` and `store-dir` (relative paths are relative to the file);
4. the embedded default: an in-process chain that ends with the command, the chain's own deployment record
   `$PROOFREG_HOME/deployments/<chainId>.json`, and the embedded store in `$PROOFREG_HOME/store`.

`proofreg config` prints what was resolved and from where. Every problem here is a `ConfigError`, one line.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import click

from registry.chain.deployment import proofreg_home

F = TypeVar("F", bound=Callable[..., Any])
CONFIG_FILE = "proofreg.toml"
EMBEDDED = "embedded"  # `--rpc embedded`: the in-process chain, named explicitly


class ConfigError(click.ClickException):
    """A setting that cannot be used: one line, exit 1 (click prints ClickException as `Error: ...`)."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@dataclass(frozen=True)
class Setting:
    key: str  # the config file's key
    flag: str
    env: str
    kind: str  # "url", "multiaddr" or "path"
    default: str  # what the embedded default means, in words (for `proofreg config`)


SETTINGS = {
    "rpc": Setting("rpc", "--rpc", "PROOFREG_RPC", "url", "embedded in-process chain (ends with the command)"),
    "deployment": Setting("deployment", "--deployment", "PROOFREG_DEPLOYMENT", "path",
                          "$PROOFREG_HOME/deployments/<chainId>.json"),
    "ipfs": Setting("ipfs", "--ipfs", "PROOFREG_IPFS", "multiaddr", "none: the embedded store"),
    "store-dir": Setting("store-dir", "--store-dir", "PROOFREG_STORE_DIR", "path", "$PROOFREG_HOME/store"),
}


@dataclass(frozen=True)
class Resolved:
    value: Any
    source: str  # "flag", "env PROOFREG_RPC", "config /path/proofreg.toml", "default"


def config_path(explicit: Path | None = None) -> Path | None:
    """The project config file in force (module docstring, step 3), or None."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"--config {explicit}: no such file")
        return explicit
    env = os.environ.get("PROOFREG_CONFIG")
    if env:
        if not Path(env).is_file():
            raise ConfigError(f"PROOFREG_CONFIG={env}: no such file")
        return Path(env)
    local = Path.cwd() / CONFIG_FILE
    return local if local.is_file() else None


def read_config(path: Path) -> dict[str, Any]:
    """The file's settings, checked: TOML syntax (with line and column), known keys, string values."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text") from None
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (expected one of {', '.join(SETTINGS)})")
    for key, value in data.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: {key} must be a non-empty string, got {value!r}")
    return dict(data)


def check_value(setting: Setting, value: str, where: str) -> str:
    """The shape checks that give "not a URL" instead of a transport error three layers down."""
    if setting.kind == "url" and value != EMBEDDED:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"{where} {value!r} is not a URL (expected http://HOST:PORT or https://..., "
                              f"or '{EMBEDDED}')")
    if setting.kind == "multiaddr" and not value.startswith("/"):
        raise ConfigError(f"{where} {value!r} is not a multiaddr (expected e.g. /ip4/127.0.0.1/tcp/5001/http)")
    return value


def _meta(ctx: click.Context) -> dict[str, Any]:
    return ctx.meta.setdefault("proofreg.resolved", {})


def _config(ctx: click.Context) -> tuple[Path | None, dict[str, Any]]:
    if "proofreg.config" not in ctx.meta:
        path = config_path(ctx.meta.get("proofreg.config-flag"))
        ctx.meta["proofreg.config"] = (path, read_config(path) if path is not None else {})
    return ctx.meta["proofreg.config"]


def resolve(ctx: click.Context, key: str, flag_value: Any) -> Resolved:
    """Flag, then environment, then config file, then default (module docstring); remembered on `ctx`."""
    setting = SETTINGS[key]
    resolved: Resolved
    if flag_value is not None:
        resolved, where = Resolved(flag_value, "flag"), setting.flag
    elif os.environ.get(setting.env):
        resolved, where = Resolved(os.environ[setting.env], f"env {setting.env}"), setting.env
    else:
        path, data = _config(ctx)
        if path is not None and key in data:
            value: Any = data[key]
            if setting.kind == "path" and not Path(value).is_absolute():
                value = path.parent / value
            resolved, where = Resolved(value, f"config {path}"), f"{key} in {path}"
        else:
            resolved, where = Resolved(None, "default"), ""
    if resolved.value is not None:
        if setting.kind == "path":
            resolved = Resolved(Path(resolved.value), resolved.source)
        else:
            value = check_value(setting, str(resolved.value), where)
            resolved = Resolved(None if setting.kind == "url" and value == EMBEDDED else value, resolved.source)
    _meta(ctx)[key] = resolved
    return resolved


def _callback(key: str, required: bool = False) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        resolved = resolve(ctx, key, value)
        if required and resolved.value is None:
            setting = SETTINGS[key]
            raise ConfigError(f"this command needs a real chain: give {setting.flag} URL, {setting.env}, or "
                              f"'{key} = \"http://...\"' in {CONFIG_FILE}")
        return resolved.value

    return callback


def config_option(fn: F) -> F:
    """`--config FILE` on the command groups (it must come before the command)."""

    def remember(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
        ctx.meta["proofreg.config-flag"] = value

    return click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        expose_value=False, is_eager=True, callback=remember,
                        help=f"Project config file (default: $PROOFREG_CONFIG, else ./{CONFIG_FILE}).")(fn)


# The option set every command uses. Envvars are read by `resolve`, not by click, so one rule decides.
rpc_option = click.option("--rpc", "rpc_url", default=None, callback=_callback("rpc", required=True),
                          help="Ethereum JSON-RPC URL (else PROOFREG_RPC, else rpc in proofreg.toml).")
optional_rpc_option = click.option(
    "--rpc", "rpc_url", default=None, callback=_callback("rpc"),
    help="Ethereum JSON-RPC URL, or 'embedded' (else PROOFREG_RPC, else rpc in proofreg.toml, else the embedded "
         "in-process chain, which ends with the command).")
deployment_option = click.option(
    "--deployment", "deployment_path", type=click.Path(path_type=Path), default=None,
    callback=_callback("deployment"),
    help="Deployment record (else PROOFREG_DEPLOYMENT, else deployment in proofreg.toml, else "
         "$PROOFREG_HOME/deployments/<chainId>.json).")
ipfs_option = click.option(
    "--ipfs", "ipfs", default=None, callback=_callback("ipfs"),
    help="Kubo-compatible RPC API multiaddr, e.g. /ip4/127.0.0.1/tcp/5001/http (else PROOFREG_IPFS, else ipfs in "
         "proofreg.toml, else the embedded store).")
store_dir_option = click.option(
    "--store-dir", "store_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    callback=_callback("store-dir"),
    help="Embedded store directory (else PROOFREG_STORE_DIR, else store-dir in proofreg.toml, else "
         "$PROOFREG_HOME/store).")


def resolved_report(ctx: click.Context) -> dict[str, dict[str, Any]]:
    """What `proofreg config` prints: each setting's value (or what the default means) and its source."""
    out: dict[str, dict[str, Any]] = {}
    for key, setting in SETTINGS.items():
        r = _meta(ctx).get(key) or Resolved(None, "default")
        value = r.value
        if value is None:
            value = {"rpc": EMBEDDED, "store-dir": str(proofreg_home() / "store")}.get(key, setting.default)
        out[key] = {"value": str(value), "source": r.source}
    path, _ = _config(ctx)
    out["config"] = {"value": str(path) if path else f"none (no ./{CONFIG_FILE})",
                     "source": "--config" if ctx.meta.get("proofreg.config-flag") else
                     ("env PROOFREG_CONFIG" if os.environ.get("PROOFREG_CONFIG") else
                      ("cwd" if path else "none"))}
    out["home"] = {"value": str(proofreg_home()),
                   "source": "env PROOFREG_HOME" if os.environ.get("PROOFREG_HOME") else "default"}
    return out
