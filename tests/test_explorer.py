"""`proofreg explorer` in a real headless browser (Debian's Chromium driven by Playwright): an embedded chain
with a real training claim, a hostile claim whose CID is markup, a challenge whose committee of three has
two attestations (real reports from the engine, one with a hostile reason) and one silent member, and
ownerOf by hash and by uploaded checkpoint. Skips with a reason when Chromium or Playwright is missing
(`make browser` installs Chromium on Debian as root; `make test` runs it)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from registry.chain.local import EmbeddedChain
from registry.cli.explorer import Explorer, serve, url_of, weights_hash_of_upload
from registry.core.hashing import keccak256, to_hex
from registry.pol.publish import publish_transcript
from registry.pol.train import train
from registry.store.embedded import EmbeddedStore
from tests.registry_driver import V_VALID, Driver

CHROMIUM = "/usr/bin/chromium"
HOSTILE_CID = "<script>window.__xss=1</script>\"'><img src=x onerror=\"window.__xss=2\">"
HOSTILE_REASON = "<img src=x onerror=\"window.__xss=3\"><script>window.__xss=4</script>"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from verifier.engine import DirSource, audit

    out = tmp_path_factory.mktemp("explorer")
    chain = EmbeddedChain()
    d = Driver(chain)
    a = chain.accounts
    for v in a[3:6]:
        d.register(v)
    run = train(out / "run", epochs=1, max_steps=10, steps_per_segment=5, seed=2)
    store = EmbeddedStore(out / "store")
    published = publish_transcript(run.transcript_dir, store)
    honest = d.commit(published.claim_tuple(), a[1])
    s = published.summary
    hostile = d.commit(replace(published.claim, transcript_cid=HOSTILE_CID, segment_root=keccak256(b"r"),
                               chain_head=keccak256(b"c"), final_weights_hash=keccak256(b"w"), num_segments=2,
                               steps_per_segment=5, init_weights_hash=keccak256(b"i"), parent_claim_id=0,
                               origin=2).claim_tuple(), a[7])
    challenge = d.challenge(honest, a[2])
    committee = d.draw(challenge)
    report = audit(DirSource(run.transcript_dir), None, [0, 1], dataset_source=DirSource(run.dataset_dir),
                   device="cpu", workdir=out)
    assert report.verdict == "Valid", report.reason
    cids: list[str] = []
    for n, member in enumerate(committee[:2]):
        doc = {"format": "proofreg-verifier-report/1", "challengeId": challenge, "claimId": honest,
               "verifier": member, "audit": report.to_json()}
        if n == 1:
            doc["audit"]["reason"] = HOSTILE_REASON
        cid = store.add_bytes(json.dumps(doc).encode())
        cids.append(cid)
        d.commit_verdict(challenge, member, V_VALID, cid)
    d.to_reveal(challenge)  # commit-reveal: the verdicts (and their reports) become public at the reveal
    for member, cid in zip(committee[:2], cids, strict=True):
        d.reveal(challenge, member, V_VALID, cid)
    server = serve(Explorer(chain.w3, chain.registry, store), "127.0.0.1", 0)
    yield {"url": url_of(server), "chain": chain, "committee": committee, "run": run, "prover": a[1],
           "weights": to_hex(s.final_weights_hash), "hostile": hostile, "challenge": challenge, "out": out}
    server.shutdown()


def test_http_errors_and_headers(world: Any) -> None:
    with urllib.request.urlopen(world["url"]) as r:
        assert "script-src" not in r.headers["Content-Security-Policy"]
        assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
        page = r.read().decode()
    assert HOSTILE_CID not in page and "&lt;script&gt;window.__xss=1&lt;/script&gt;" in page
    for path, code in (("claim/99", 404), ("challenge/abc", 404), ("report/1/2", 404), ("nope", 404)):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(world["url"] + path)
        assert e.value.code == code, path


def test_upload_hash_rules(world: Any) -> None:
    run = world["run"]
    manifest = (run.transcript_dir / "manifest.json").read_bytes()
    last = sorted((run.transcript_dir / "checkpoints").rglob("*.safetensors"))[-1].read_bytes()
    assert to_hex(weights_hash_of_upload("manifest.json", manifest)) == world["weights"]
    assert to_hex(weights_hash_of_upload("last", last)) == world["weights"]
    with pytest.raises(Exception, match="neither a checkpoint"):
        weights_hash_of_upload("junk.bin", b"\x80\x03pickle")


def _browser() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: `make browser` (root, Debian) runs apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="python package playwright is not installed")
    return sync_api


def test_explorer_in_a_real_browser(world: Any, tmp_path: Path) -> None:
    sync_api = _browser()
    url = world["url"]
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            assert page.locator("h1").inner_text() == "proof registry"
            rows = page.locator("table.claims tr")
            assert rows.count() == 3  # header + two claims
            honest, hostile = rows.nth(1).inner_text(), rows.nth(2).inner_text()
            assert "training" in honest and "Committed" in honest and world["prover"] in honest
            assert HOSTILE_CID in hostile  # shown as text, literally
            assert page.evaluate("window.__xss") is None
            challenges = page.locator("table.challenges tr").nth(1).inner_text().split("\t")
            assert challenges[:6] == ["1", "1", "Open", "3", "2", "1"]

            page.click("table.challenges a[href='/challenge/1']")
            page.wait_for_url("**/challenge/1")  # the load event: count() below does not wait for the table
            members = page.locator("table.committee tr")
            texts = [members.nth(i).inner_text() for i in range(1, members.count())]
            assert len(texts) == 3
            assert sum("Valid" in t for t in texts) == 2 and sum("silent: no attestation" in t for t in texts) == 1
            assert [t.split("\t")[0] for t in texts] == world["committee"]

            shots = os.environ.get("PROOFREG_SCREENSHOTS")  # a folder: keep what the browser showed, to look at
            if shots:
                page.screenshot(path=str(Path(shots) / "challenge.png"), full_page=True)
            page.click("table.committee a >> nth=1")  # the report with the hostile reason
            assert "report of challenge 1, member 1" in page.locator("h1").inner_text()
            assert HOSTILE_REASON in page.locator("table.report").inner_text()
            assert page.evaluate("window.__xss") is None
            img = page.locator("img[alt='per-segment rho']")
            img.wait_for()
            page.wait_for_function("document.querySelector(\"img[alt='per-segment rho']\").complete")
            assert page.evaluate("document.querySelector(\"img[alt='per-segment rho']\").naturalWidth") > 300
            assert '"verdict": "Valid"' in page.locator("pre").inner_text()
            if shots:
                page.screenshot(path=str(Path(shots) / "report.png"))

            page.goto(url + "owner")
            page.fill("input[name=hash]", world["weights"])
            page.click("form[method=get] button")
            owner = page.locator("table.owner").inner_text()
            assert world["prover"] in owner and world["weights"] in owner

            ckpt = sorted((world["run"].transcript_dir / "checkpoints").rglob("*.safetensors"))[-1]
            page.goto(url + "owner")
            page.set_input_files("input[type=file]", str(ckpt))
            page.click("form[method=post] button")
            assert world["prover"] in page.locator("table.owner").inner_text()
            assert f"weights hash of {ckpt.name}" in page.content()

            junk = tmp_path / "junk.bin"
            junk.write_bytes(b"not weights")
            page.goto(url + "owner")
            page.set_input_files("input[type=file]", str(junk))
            page.click("form[method=post] button")
            assert "neither a checkpoint" in page.locator("p.error").inner_text()

            page.goto(url + "claim/2")
            assert HOSTILE_CID in page.locator("table.claim").inner_text()
            assert page.evaluate("window.__xss") is None
        finally:
            browser.close()
    assert errors == []


def test_explorer_command_serves_the_embedded_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`proofreg explorer --port 0 --for 1 --json` prints its URL and serves until the time is up."""
    from click.testing import CliRunner

    from registry.cli import main

    monkeypatch.setenv("PROOFREG_HOME", str(tmp_path))
    monkeypatch.delenv("PROOFREG_RPC", raising=False)
    res = CliRunner(mix_stderr=False).invoke(main, ["explorer", "--port", "0", "--for", "0.5", "--json"])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["url"].startswith("http://127.0.0.1:")
