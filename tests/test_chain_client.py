"""The web3.py chain client: key sources, local signing, gas estimation and readable reverts."""

from __future__ import annotations

import json

import pytest
from eth_account import Account

from registry.chain.local import EmbeddedChain
from registry.chain.rpc import RegistryClient, TransactionError
from registry.chain.signer import KEY_ENV, PASSWORD_ENV, SignerError, dev_signer, load_signer
from tests.conftest import training_claim

KEY = "0x" + "42" * 32


def client(chain: EmbeddedChain, sender: str, signer: object = None) -> RegistryClient:
    return RegistryClient(chain.w3, chain.registry, None, sender=sender, signer=signer)  # type: ignore[arg-type]


def test_node_managed_account_transacts(chain: EmbeddedChain) -> None:
    c = client(chain, chain.accounts[1])
    receipt = c.transact("commitTraining", training_claim(), value=chain.params.training_bond)
    assert receipt["status"] == 1 and c.call("claimCount") == 1


def test_reverts_become_readable(chain: EmbeddedChain) -> None:
    c = client(chain, chain.accounts[1])
    with pytest.raises(TransactionError, match=r"commitTraining would revert: WrongBond\(expected=\d+, given=1\)"):
        c.transact("commitTraining", training_claim(), value=1)
    with pytest.raises(TransactionError, match=r"getClaim: UnknownClaim\(claimId=99\)"):
        c.call("getClaim", 99)
    assert c.call("claimCount") == 0  # nothing was sent


def test_local_signing(chain: EmbeddedChain, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    signer = load_signer(chain_id=1)
    chain.w3.eth.send_transaction({"from": chain.accounts[0], "to": signer.address, "value": 10**18})
    c = client(chain, signer.address, signer)
    c.transact("commitTraining", training_claim(), value=chain.params.training_bond)
    c.transact("commitTraining", training_claim(1), value=chain.params.training_bond)  # nonce advances
    assert chain.registry.functions.getClaim(2).call()[0] == signer.address
    with pytest.raises(TransactionError, match="ClaimAlreadyCommitted"):
        c.transact("commitTraining", training_claim(), value=chain.params.training_bond)


def test_key_sources(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv("APE_DATA_FOLDER", str(tmp_path / "ape"))
    expected = Account.from_key(KEY).address
    keystore = tmp_path / "key.json"
    keystore.write_text(json.dumps(Account.encrypt(KEY, "hunter2", iterations=2)))
    monkeypatch.setenv(PASSWORD_ENV, "hunter2")
    assert load_signer(chain_id=1, keystore=keystore).address == expected
    (tmp_path / "ape" / "accounts").mkdir(parents=True)
    (tmp_path / "ape" / "accounts" / "alice.json").write_text(keystore.read_text())
    alice = load_signer(chain_id=1, account="alice")
    assert alice.address == expected and KEY[2:] not in repr(alice) and "alice" in repr(alice)
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with pytest.raises(SignerError, match="wrong password"):
        load_signer(chain_id=1, keystore=keystore)
    with pytest.raises(SignerError, match="no ape account 'bob'"):
        load_signer(chain_id=1, account="bob")
    # the development mnemonic signs on local chains only; Hardhat's first account is its #0
    assert load_signer(chain_id=31337).address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert load_signer(chain_id=31337, account="dev:1").address == dev_signer(1).address
    with pytest.raises(SignerError, match="only signs on local chains"):
        load_signer(chain_id=1, account="dev:0")
    with pytest.raises(SignerError, match="no key"):
        load_signer(chain_id=1)
    monkeypatch.setenv(KEY_ENV, "not-a-key")
    with pytest.raises(SignerError, match="not a valid private key") as info:
        load_signer(chain_id=1)
    assert "not-a-key" not in str(info.value)
