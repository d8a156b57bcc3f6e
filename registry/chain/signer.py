"""Where transaction keys come from: an environment variable, a keystore file, an ape account, or (on local
development chains only) the well-known development mnemonic. Keys are never printed or logged; a `Signer`'s
repr shows its address only."""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

DEV_MNEMONIC = "test test test test test test test test test test test junk"
#: Chains where the development mnemonic may sign: Hardhat/anvil (31337), ganache/geth dev (1337), eth-tester.
LOCAL_CHAIN_IDS = frozenset({31337, 1337, 131277322940537})
KEY_ENV = "PROOFREG_PRIVATE_KEY"
PASSWORD_ENV = "PROOFREG_KEYSTORE_PASSWORD"


class SignerError(RuntimeError):
    """No usable key; the message says which source failed and why, never the key."""


@dataclass(frozen=True)
class Signer:
    account: LocalAccount = field(repr=False)
    source: str

    @property
    def address(self) -> str:
        return str(self.account.address)

    def __repr__(self) -> str:
        return f"Signer({self.address}, from {self.source})"


def ape_data_folder() -> Path:
    return Path(os.environ.get("APE_DATA_FOLDER") or Path.home() / ".ape")


def _password(prompt: str) -> str:
    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        return env
    if not os.isatty(0):
        raise SignerError(f"keystore is encrypted: set {PASSWORD_ENV} (no terminal to ask for the password)")
    return getpass.getpass(prompt)


def _from_keystore(path: Path, source: str) -> Signer:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SignerError(f"unreadable keystore {path}: {type(exc).__name__}") from None
    try:
        key = Account.decrypt(data, _password(f"password for {path.name}: "))
    except ValueError:
        raise SignerError(f"wrong password for keystore {path}") from None
    return Signer(Account.from_key(key), source)


def dev_signer(index: int = 0) -> Signer:
    Account.enable_unaudited_hdwallet_features()
    account = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return Signer(account, f"development mnemonic #{index}")


def load_signer(*, chain_id: int, account: str | None = None, keystore: Path | None = None,
                dev_index: int | None = None) -> Signer:
    """Picks the key source: `--keystore`, then `--account` (an ape account alias, or `dev:N` for the
    development mnemonic), then $PROOFREG_PRIVATE_KEY, then the development mnemonic on local chains."""
    if keystore is not None:
        return _from_keystore(keystore, f"keystore {keystore}")
    if account is not None:
        if account.startswith("dev:") or account.startswith("TEST::"):
            index = int(account.split(":")[-1] or 0)
            return _local_dev(chain_id, index)
        path = ape_data_folder() / "accounts" / f"{account}.json"
        if not path.exists():
            raise SignerError(f"no ape account {account!r} (looked for {path}); `ape accounts import {account}`")
        return _from_keystore(path, f"ape account {account}")
    key = os.environ.get(KEY_ENV)
    if key:
        try:
            return Signer(Account.from_key(key.strip()), f"${KEY_ENV}")
        except (ValueError, TypeError):
            raise SignerError(f"${KEY_ENV} is not a valid private key") from None
    if dev_index is not None or chain_id in LOCAL_CHAIN_IDS:
        return _local_dev(chain_id, dev_index or 0)
    raise SignerError(f"no key: pass --account ALIAS or --keystore FILE, or set ${KEY_ENV}")


def _local_dev(chain_id: int, index: int) -> Signer:
    if chain_id not in LOCAL_CHAIN_IDS:
        raise SignerError(f"the development mnemonic only signs on local chains, not on chain {chain_id}")
    return dev_signer(index)
