"""One resolution rule for chain, deployment and store in every command (flag, env, proofreg.toml, embedded
default), `proofreg config` showing it, and input errors as one line with a non-zero exit (click's runner,
in process; the embedded chain where a chain is needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from registry.cli import main
from verifier.cli import main as verifier_main


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("PROOFREG_RPC", "PROOFREG_IPFS", "PROOFREG_DEPLOYMENT", "PROOFREG_STORE_DIR", "PROOFREG_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PROOFREG_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


def invoke(*args: str, cli: Any = main, env: dict[str, str] | None = None) -> Any:
    return CliRunner(mix_stderr=False).invoke(cli, list(args), env=env, catch_exceptions=False)


def config(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    res = invoke(*args, "config", "--json", env=env) if args and args[0] == "--config" else \
        invoke("config", *args, "--json", env=env)
    assert res.exit_code == 0, res.stderr
    return dict(json.loads(res.stdout))


def one_line_error(res: Any, *fragments: str) -> None:
    assert res.exit_code == 1, (res.exit_code, res.stdout, res.stderr)
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    for f in fragments:
        assert f in res.stderr, res.stderr


def test_defaults_then_file_then_env_then_flag(tmp_path: Path) -> None:
    got = config()
    assert got["rpc"] == {"value": "embedded", "source": "default"}
    assert got["store-dir"] == {"value": str(tmp_path / "home" / "store"), "source": "default"}
    (tmp_path / "proofreg.toml").write_text('rpc = "http://127.0.0.1:8545"\nstore-dir = "st"\n'
                                            'deployment = "d/31337.json"\nipfs = "/ip4/127.0.0.1/tcp/5001/http"\n')
    got = config()
    here = str(tmp_path / "proofreg.toml")
    assert got["rpc"] == {"value": "http://127.0.0.1:8545", "source": f"config {here}"}
    assert got["store-dir"]["value"] == str(tmp_path / "st")  # relative to the file
    assert got["deployment"]["value"] == str(tmp_path / "d" / "31337.json")
    assert got["ipfs"]["source"] == f"config {here}" and got["config"]["value"] == here
    got = config(env={"PROOFREG_RPC": "http://10.0.0.1:8545", "PROOFREG_STORE_DIR": "/srv/store"})
    assert got["rpc"] == {"value": "http://10.0.0.1:8545", "source": "env PROOFREG_RPC"}
    assert got["store-dir"] == {"value": "/srv/store", "source": "env PROOFREG_STORE_DIR"}
    got = config("--rpc", "https://node.example:443", "--store-dir", "x", env={"PROOFREG_RPC": "http://a:1"})
    assert got["rpc"] == {"value": "https://node.example:443", "source": "flag"}
    assert got["store-dir"] == {"value": "x", "source": "flag"}
    # an explicit --config (before the command) wins over ./proofreg.toml; so does PROOFREG_CONFIG
    other = tmp_path / "other.toml"
    other.write_text('rpc = "embedded"\n')
    assert config("--config", str(other))["rpc"] == {"value": "embedded", "source": f"config {other}"}
    assert config(env={"PROOFREG_CONFIG": str(other)})["config"]["source"] == "env PROOFREG_CONFIG"


def test_config_text_output_names_sources(tmp_path: Path) -> None:
    res = invoke("config", "--ipfs", "/ip4/127.0.0.1/tcp/5001/http")
    assert res.exit_code == 0
    lines = {line.split()[0]: line for line in res.stdout.splitlines()}
    assert "(flag)" in lines["ipfs"] and "(default)" in lines["rpc"] and "(env PROOFREG_HOME)" in lines["home"]


@pytest.mark.parametrize(("args", "fragments"), [
    (["info", "--rpc", "notaurl"], ["--rpc 'notaurl' is not a URL"]),
    (["status", "1", "--rpc", "ftp://x"], ["is not a URL"]),
    (["ownerof", "0x12", "--rpc", "localhost:8545"], ["is not a URL"]),
    (["commit", "nope-dir"], ["nope-dir"]),
    (["config", "--ipfs", "127.0.0.1:5001"], ["is not a multiaddr"]),
    (["--config", "missing.toml", "config"], ["--config missing.toml: no such file"]),
])
def test_input_errors_are_one_line(args: list[str], fragments: list[str]) -> None:
    res = invoke(*args)
    if args[0] == "commit":  # click's own usage error for a path that does not exist: exit 2, still one line
        assert res.exit_code == 2 and "nope-dir" in res.stderr
        return
    one_line_error(res, *fragments)


def test_env_and_file_values_are_checked_too(tmp_path: Path) -> None:
    one_line_error(invoke("info", env={"PROOFREG_RPC": "notaurl"}), "PROOFREG_RPC 'notaurl' is not a URL")
    (tmp_path / "proofreg.toml").write_text('rpc = "notaurl"\n')
    one_line_error(invoke("info"), "rpc in ", "proofreg.toml 'notaurl' is not a URL")
    (tmp_path / "proofreg.toml").write_text("rpc = \n")
    one_line_error(invoke("config"), "proofreg.toml: not valid TOML", "line 1, column 7")
    (tmp_path / "proofreg.toml").write_text('chain = "x"\n')
    one_line_error(invoke("config"), "unknown key 'chain'")
    (tmp_path / "proofreg.toml").write_text("rpc = 5\n")
    one_line_error(invoke("config"), "rpc must be a non-empty string")


def test_verifier_cli_resolves_the_same_way(tmp_path: Path) -> None:
    one_line_error(invoke("assignments", "--challenge", "1", "--rpc", "notaurl", cli=verifier_main), "not a URL")
    (tmp_path / "proofreg.toml").write_text('rpc = "notaurl"\n')
    one_line_error(invoke("assignments", "--challenge", "1", cli=verifier_main), "not a URL")
    one_line_error(invoke("--config", "nope.toml", "assignments", "--challenge", "1", cli=verifier_main),
                   "no such file")


def test_status_without_rpc_uses_the_embedded_chain_like_commit() -> None:
    res = invoke("status", "1", "--json")
    note, error = res.stderr.splitlines()  # the note that says which chain, then the one-line error
    assert res.exit_code == 1 and note.startswith("note: no --rpc") and res.stdout == ""
    assert error == "error: no claim 1 on the embedded chain (it holds only what this command commits)"
    info = invoke("info", "--json")
    assert info.exit_code == 0, info.stderr
    assert json.loads(info.stdout)["claims"] == 0 and "embedded in-process chain" in info.stderr


def test_malformed_manifest_is_one_line_with_position(tmp_path: Path) -> None:
    tdir = tmp_path / "t"
    tdir.mkdir()
    (tdir / "manifest.json").write_text('{"format": "proofreg-transcript/1",\n "config": {')
    res = invoke("check", str(tdir), "--report", str(tmp_path / "r.json"), cli=verifier_main)
    one_line_error(res, f"{tdir / 'manifest.json'}: line 2 column", "not valid JSON: Expecting")
    res = invoke("commit", str(tdir))
    one_line_error(res, str(tdir / "manifest.json"), "line 2 column")


def test_commit_says_how_to_reproduce_a_cid_with_dot_files(tmp_path: Path) -> None:
    """Directory CIDs count dot-files (`ipfs add -r --hidden`): commit says so when the tree holds one."""
    from registry.pol.train import train

    run = train(tmp_path / "run", epochs=1, max_steps=5, steps_per_segment=5, seed=3)
    plain = invoke("commit", str(run.transcript_dir), "--json")
    assert plain.exit_code == 0, plain.stderr
    assert "dot-files" not in plain.stderr
    run2 = train(tmp_path / "run2", epochs=1, max_steps=5, steps_per_segment=5, seed=4)
    (run2.transcript_dir / ".notes").write_text("mine\n")
    res = invoke("commit", str(run2.transcript_dir), "--json")
    assert res.exit_code == 0, res.stderr
    assert "holds dot-files (.notes)" in res.stderr and "ipfs add -r --hidden" in res.stderr
    assert json.loads(res.stdout)["transcriptCid"] != json.loads(plain.stdout)["transcriptCid"]


def test_every_command_that_prints_results_takes_json() -> None:
    """`--json` everywhere results are printed (`proofreg-verifier run` logs JSON lines instead)."""
    import click

    def commands(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
        out: list[tuple[str, click.Command]] = []
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                out += commands(cmd, f"{prefix}{name} ")
            else:
                out.append((f"{prefix}{name}", cmd))
        return out

    found = commands(main, "proofreg ") + commands(verifier_main, "proofreg-verifier ")
    missing = [name for name, cmd in found if name != "proofreg-verifier run"
               and not any("--json" in p.opts for p in cmd.params)]
    assert len(found) > 15 and missing == []
