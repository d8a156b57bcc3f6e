"""`proofreg explorer`: a small read-only web page over a chain and a content store.

It shows the registry (claims, challenges, committees and their verdicts, the verifiers' published reports
with a per-segment ρ plot) and answers `ownerOf` for a weights hash or an uploaded file (a checkpoint, a
safetensors file of weights, or a transcript's manifest.json). It sends no transaction and holds no key.

Why it is careful: every string it shows comes from the chain or the store, and a prover or verifier writes
those (a CID or a report's reason is attacker-controlled). So every value is HTML-escaped, values in links are
URL-quoted, reports are fetched only by the CIDs that `Attested` events name (the explorer is no open
gateway), fetched reports are size-capped and parsed as JSON only, uploads are size-capped and decoded with
safetensors (never unpickled), and each page carries a Content-Security-Policy without scripts. It binds
127.0.0.1 unless told otherwise. Standard library `http.server` only.
"""

from __future__ import annotations

import email.parser
import email.policy
import html
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from registry.core.hashing import as_hash, to_hex, weights_hash
from registry.core.states import CHALLENGE_STATUS, CLAIM_STATUS, KIND

VERDICT = {0: "none", 1: "Valid", 2: "Invalid", 3: "Unavailable"}
MAX_REPORT_BYTES = 4 << 20
MAX_UPLOAD_BYTES = 64 << 20
CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'"
STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:70em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;font-size:.9em}code,pre{font-size:.85em}
pre{background:#f6f6f6;padding:.5em;overflow:auto;max-height:40em}.Valid{color:#070}.Invalid{color:#b00}
.silent{color:#888}nav a{margin-right:1em}"""


def esc(value: Any) -> str:
    """Text for HTML (element content and quoted attributes)."""
    return html.escape(str(value), quote=True)


def _hex(value: Any) -> Any:
    return to_hex(bytes(value)) if isinstance(value, bytes | bytearray) else value


class NotFound(Exception):
    """A page for something the chain does not hold (404)."""


class BadRequest(Exception):
    """An input the explorer refuses (400, one line)."""


@dataclass
class Explorer:
    """The data behind the pages: contract views and events, reports from the store (read-only)."""

    w3: Any
    contract: Any
    store: Any | None = None
    from_block: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _logs(self, event: str, **filters: Any) -> list[Any]:
        kwargs: dict[str, Any] = {"from_block": self.from_block}
        if filters:
            kwargs["argument_filters"] = filters
        return list(getattr(self.contract.events, event)().get_logs(**kwargs))

    def summary(self) -> dict[str, Any]:
        f = self.contract.functions
        with self.lock:
            return {"chainId": int(self.w3.eth.chain_id), "registry": self.contract.address,
                    "block": int(self.w3.eth.block_number), "claims": int(f.claimCount().call()),
                    "challenges": int(f.challengeCount().call()), "verifiers": int(f.verifierCount().call())}

    def claim(self, claim_id: int) -> dict[str, Any]:
        f = self.contract.functions
        with self.lock:
            if not 1 <= claim_id <= int(f.claimCount().call()):
                raise NotFound(f"no claim {claim_id}")
            c = f.getClaim(claim_id).call()
            kind = int(c[2])
            event = "TrainingClaimCommitted" if kind == 1 else "InferenceClaimCommitted"
            logs = self._logs(event, claimId=claim_id)
            committed = {k: _hex(v) for k, v in dict(logs[0]["args"]["claim"]).items()} if logs else {}
            challenges = [int(log["args"]["challengeId"]) for log in self._logs("ChallengeOpened", claimId=claim_id)]
        return {"claimId": claim_id, "kind": KIND.get(kind, str(kind)), "status": CLAIM_STATUS.get(int(c[3]), c[3]),
                "prover": c[0], "committedAt": int(c[1]), "openChallenges": int(c[4]), "numSegments": int(c[5]),
                "committed": committed, "challenges": challenges}

    def claims(self) -> list[dict[str, Any]]:
        return [self.claim(i) for i in range(1, self.summary()["claims"] + 1)]

    def challenge(self, challenge_id: int) -> dict[str, Any]:
        f = self.contract.functions
        with self.lock:
            if not 1 <= challenge_id <= int(f.challengeCount().call()):
                raise NotFound(f"no challenge {challenge_id}")
            ch = f.getChallenge(challenge_id).call()
            drawn = bool(ch[5])
            committee = list(f.committee(challenge_id).call()) if drawn else []
            sampled = [int(s) for s in f.sampledSegments(challenge_id).call()] if drawn else []
            attested = self._logs("Attested", challengeId=challenge_id)
        by_member = {str(a["args"]["verifier"]).lower(): a["args"] for a in attested}
        members = []
        for pos, member in enumerate(committee):
            a = by_member.get(str(member).lower())
            members.append({"verifier": member, "attested": a is not None,
                            "verdict": VERDICT.get(int(a["verdict"]), "?") if a is not None else None,
                            "reportCid": str(a["reportCid"]) if a is not None else None, "index": pos})
        return {"challengeId": challenge_id, "claimId": int(ch[1]), "challenger": ch[0],
                "status": CHALLENGE_STATUS.get(int(ch[2]), ch[2]), "drawn": drawn, "seedBlock": int(ch[6]),
                "commitDeadline": int(ch[8]), "deadline": int(ch[7]), "committee": members, "sampledSegments": sampled,
                "silent": [m["verifier"] for m in members if not m["attested"]]}

    def challenges(self) -> list[dict[str, Any]]:
        return [self.challenge(i) for i in range(1, self.summary()["challenges"] + 1)]

    def report(self, challenge_id: int, member: int) -> tuple[str, dict[str, Any]]:
        """The report a committee member published (by the CID of its `Attested` event only)."""
        ch = self.challenge(challenge_id)
        if not 0 <= member < len(ch["committee"]) or not ch["committee"][member]["attested"]:
            raise NotFound(f"challenge {challenge_id} has no report from committee member {member}")
        cid = str(ch["committee"][member]["reportCid"])
        if self.store is None:
            raise NotFound("no content store configured")
        try:
            data = self.store.cat(cid, 0, MAX_REPORT_BYTES + 1)
        except Exception as exc:  # noqa: BLE001 - a missing or hostile CID is shown as such, not a crash
            raise NotFound(f"report {cid} cannot be fetched: {type(exc).__name__}: {str(exc)[:200]}") from None
        if len(data) > MAX_REPORT_BYTES:
            raise NotFound(f"report {cid} is larger than {MAX_REPORT_BYTES} bytes")
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            raise NotFound(f"report {cid} is not JSON") from None
        if not isinstance(doc, dict):
            raise NotFound(f"report {cid} is not a JSON object")
        return cid, doc

    def owner(self, weights: bytes) -> dict[str, Any]:
        f = self.contract.functions
        with self.lock:
            owner = f.ownerOf(weights).call()
            claim = int(f.ownerClaimOf(weights).call())
        return {"finalWeightsHash": to_hex(weights), "owner": None if int(owner, 16) == 0 else owner,
                "claimId": claim or None}


def weights_hash_of_upload(name: str, data: bytes) -> bytes:
    """The weights hash an uploaded file stands for: a transcript checkpoint, a safetensors file of weights,
    or a manifest.json (its finalWeightsHash, as the prover wrote it). No pickle is ever loaded."""
    if data.lstrip()[:1] == b"{":
        try:
            doc = json.loads(data)
            return as_hash(str(doc["finalWeightsHash"]))
        except (ValueError, KeyError, TypeError, RecursionError):
            raise BadRequest(f"{name}: JSON without a finalWeightsHash (expected a transcript's manifest.json)") \
                from None
    from registry.pol.checkpoint import TranscriptError, decode_checkpoint

    try:
        return weights_hash(decode_checkpoint(data).model)
    except (TranscriptError, ValueError, KeyError):
        pass
    try:
        from safetensors.torch import load

        return weights_hash(load(data))
    except Exception:  # noqa: BLE001 - any undecodable upload is the user's input error
        raise BadRequest(f"{name}: neither a checkpoint, a safetensors file nor a manifest.json") from None


# ------------------------------------------------------------------------------------------------------------
# pages
# ------------------------------------------------------------------------------------------------------------


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{STYLE}</style>"
            f"</head><body><nav><a href='/'>registry</a><a href='/owner'>ownerOf</a></nav><h1>{esc(title)}</h1>"
            f"{body}</body></html>")


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='{esc(cls)}'><tr>{head}</tr>{body}</table>"


def _link(path: str, text: Any) -> str:
    return f"<a href='{esc(path)}'>{esc(text)}</a>"


def _status(s: Any) -> str:
    return f"<span class='{esc(s)}'>{esc(s)}</span>"


def _owner_form(value: str = "") -> str:
    return ("<form method='get' action='/owner'><label>finalWeightsHash <input name='hash' size='70' "
            f"value='{esc(value)}' placeholder='0x...'></label> <button type='submit'>look up</button></form>"
            "<form method='post' action='/owner' enctype='multipart/form-data'><label>or a file (checkpoint, "
            "safetensors weights, manifest.json) <input type='file' name='file'></label> "
            "<button type='submit'>hash and look up</button></form>")


def index_page(ex: Explorer) -> str:
    s = ex.summary()
    info = _table(["chain id", "registry", "block", "claims", "challenges", "verifiers"],
                  [[esc(s["chainId"]), f"<code>{esc(s['registry'])}</code>", esc(s["block"]), esc(s["claims"]),
                    esc(s["challenges"]), esc(s["verifiers"])]])
    claims = _table(["claim", "kind", "status", "prover", "evidence CID", "segments", "challenges"], [
        [_link(f"/claim/{c['claimId']}", c["claimId"]), esc(c["kind"]), _status(c["status"]),
         f"<code>{esc(c['prover'])}</code>",
         f"<code>{esc(c['committed'].get('transcriptCid') or c['committed'].get('bundleCid') or '')}</code>",
         esc(c["numSegments"]), " ".join(_link(f"/challenge/{x}", x) for x in c["challenges"])]
        for c in ex.claims()], "claims")
    challenges = _table(["challenge", "claim", "status", "committee", "attested", "silent"], [
        [_link(f"/challenge/{c['challengeId']}", c["challengeId"]), _link(f"/claim/{c['claimId']}", c["claimId"]),
         _status(c["status"]), esc(len(c["committee"])), esc(sum(m["attested"] for m in c["committee"])),
         esc(len(c["silent"]))] for c in ex.challenges()], "challenges")
    return _page("proof registry", f"{info}<h2>Claims</h2>{claims}<h2>Challenges</h2>{challenges}"
                                   f"<h2>ownerOf</h2>{_owner_form()}")


def claim_page(ex: Explorer, claim_id: int) -> str:
    c = ex.claim(claim_id)
    rows = [[esc(k), f"<code>{esc(v)}</code>"] for k, v in c.items() if k not in ("committed", "challenges")]
    rows += [[esc(k), f"<code>{esc(v)}</code>"] for k, v in c["committed"].items()]
    chs = " ".join(_link(f"/challenge/{x}", x) for x in c["challenges"]) or "none"
    return _page(f"claim {claim_id}", _table(["field", "value"], rows, "claim") + f"<p>challenges: {chs}</p>")


def challenge_page(ex: Explorer, challenge_id: int) -> str:
    c = ex.challenge(challenge_id)
    rows = [[esc(k), f"<code>{esc(c[k])}</code>"] for k in ("claimId", "challenger", "status", "drawn", "seedBlock",
                                                           "commitDeadline", "deadline", "sampledSegments")]
    members = []
    for m in c["committee"]:
        if m["attested"]:
            members.append([f"<code>{esc(m['verifier'])}</code>", _status(m["verdict"]),
                            _link(f"/report/{challenge_id}/{m['index']}", m["reportCid"])])
        else:
            members.append([f"<code>{esc(m['verifier'])}</code>",
                            "<span class='silent'>silent: no attestation</span>", ""])
    committee = _table(["committee member", "verdict", "report"], members, "committee") if members else \
        "<p>committee not drawn yet</p>"
    return _page(f"challenge {challenge_id}", _table(["field", "value"], rows, "challenge") +
                 f"<h2>Committee</h2>{committee}")


def _audit(doc: dict[str, Any]) -> dict[str, Any]:
    """The audit inside a verifier's report (`proofreg-verifier-report/1`), or {} when it is not an object."""
    audit = doc.get("audit")
    return audit if isinstance(audit, dict) else {}


def report_page(ex: Explorer, challenge_id: int, member: int) -> str:
    cid, doc = ex.report(challenge_id, member)
    audit = _audit(doc)
    head = _table(["field", "value"], [[esc(k), f"<code>{esc(v)}</code>"] for k, v in (
        ("report CID", cid), ("format", doc.get("format")), ("verifier", doc.get("verifier")),
        ("verdict", audit.get("verdict")), ("reason", audit.get("reason")), ("threshold δ", audit.get("threshold")))],
        "report")
    plot = (f"<p><img alt='per-segment rho' src='/plot/{challenge_id}/{member}.png'></p>"
            if audit.get("segments") else "<p>no per-segment results (a ZK audit or an early verdict)</p>")
    body = esc(json.dumps(doc, indent=1, sort_keys=True)[:MAX_REPORT_BYTES])
    return _page(f"report of challenge {challenge_id}, member {member}",
                 f"{head}{plot}<h2>Report</h2><pre>{body}</pre>")


def plot_png(ex: Explorer, challenge_id: int, member: int) -> bytes:
    from registry.cli.plots import RhoPoint, png_bytes, rho_plot

    _cid, doc = ex.report(challenge_id, member)
    audit = _audit(doc)
    points = []
    for s in audit.get("segments") or []:
        if not isinstance(s, dict):
            continue
        try:
            rho = None if s.get("rho") is None else float(s["rho"])
            points.append(RhoPoint(int(s["index"]), rho, bool(s.get("passed"))))
        except (KeyError, TypeError, ValueError):
            continue
    try:
        threshold = float(audit.get("threshold") or 0)
    except (TypeError, ValueError):
        threshold = 0.0
    return png_bytes(rho_plot, points, threshold, title=f"challenge {challenge_id}: {audit.get('verdict')}")


def owner_page(ex: Explorer, weights: bytes | None, note: str = "", error: str = "") -> str:
    body = _owner_form(to_hex(weights) if weights else "")
    if error:
        body += f"<p class='Invalid error'>{esc(error)}</p>"
    if weights is not None:
        o = ex.owner(weights)
        owner = f"<code>{esc(o['owner'])}</code>" if o["owner"] else "nobody: no standing claim has these weights"
        claim = _link(f"/claim/{o['claimId']}", o["claimId"]) if o["claimId"] else "-"
        body += _table(["finalWeightsHash", "owner", "claim"],
                       [[f"<code>{esc(o['finalWeightsHash'])}</code>", owner, claim]], "owner")
        if note:
            body += f"<p>{esc(note)}</p>"
    return _page("ownerOf", body)


# ------------------------------------------------------------------------------------------------------------
# server
# ------------------------------------------------------------------------------------------------------------


def _int(text: str) -> int:
    if not text.isdigit() or len(text) > 12:
        raise NotFound(f"not an id: {text[:40]}")
    return int(text)


def make_handler(ex: Explorer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "proofreg-explorer"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: no request log on stderr."""

        def _send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.end_headers()
            self.wfile.write(body)

        def _route(self, fn: Callable[[], str | bytes]) -> None:
            try:
                out = fn()
            except NotFound as exc:
                self._send(HTTPStatus.NOT_FOUND, _page("not found", f"<p>{esc(exc)}</p>").encode())
                return
            except BadRequest as exc:
                self._send(HTTPStatus.BAD_REQUEST, _page("bad request", f"<p>{esc(exc)}</p>").encode())
                return
            if isinstance(out, bytes):
                self._send(HTTPStatus.OK, out, "image/png")
            else:
                self._send(HTTPStatus.OK, out.encode())

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]
            query = parse_qs(url.query)
            if not parts:
                self._route(lambda: index_page(ex))
            elif parts[0] == "claim" and len(parts) == 2:
                self._route(lambda: claim_page(ex, _int(parts[1])))
            elif parts[0] == "challenge" and len(parts) == 2:
                self._route(lambda: challenge_page(ex, _int(parts[1])))
            elif parts[0] == "report" and len(parts) == 3:
                self._route(lambda: report_page(ex, _int(parts[1]), _int(parts[2])))
            elif parts[0] == "plot" and len(parts) == 3 and parts[2].endswith(".png"):
                self._route(lambda: plot_png(ex, _int(parts[1]), _int(parts[2].removesuffix(".png"))))
            elif parts == ["owner"]:
                self._route(lambda: self._owner_get(query))
            else:
                self._route(lambda: (_ for _ in ()).throw(NotFound(f"no page {url.path[:80]}")))

        def _owner_get(self, query: dict[str, list[str]]) -> str:
            text = (query.get("hash") or [""])[0].strip()
            if not text:
                return owner_page(ex, None)
            try:
                return owner_page(ex, as_hash(text))
            except ValueError:
                return owner_page(ex, None, error=f"not a 32-byte hash: {text[:80]}")

        def do_POST(self) -> None:
            if urlsplit(self.path).path != "/owner":
                self._route(lambda: (_ for _ in ()).throw(NotFound("read-only: nothing to post here")))
                return
            self._route(self._owner_post)

        def _owner_post(self) -> str:
            try:
                length = int(self.headers.get("Content-Length") or "0")
            except ValueError:
                raise BadRequest("bad Content-Length") from None
            if not 0 < length <= MAX_UPLOAD_BYTES:
                raise BadRequest(f"upload must be 1 byte to {MAX_UPLOAD_BYTES >> 20} MiB")
            body = self.rfile.read(length)
            ctype = self.headers.get("Content-Type") or ""
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {ctype}\r\n\r\n".encode("latin-1", "replace") + body)
            if not msg.is_multipart():
                raise BadRequest("expected a multipart/form-data upload")
            for part in msg.iter_parts():
                if part.get_param("name", header="content-disposition") == "file":
                    name = part.get_filename() or "upload"
                    payload = part.get_payload(decode=True)
                    data = payload if isinstance(payload, bytes) else b""
                    if not data:
                        return owner_page(ex, None, error="no file chosen")
                    try:
                        weights = weights_hash_of_upload(name, data)
                    except BadRequest as exc:
                        return owner_page(ex, None, error=str(exc))
                    return owner_page(ex, weights, note=f"weights hash of {name} ({len(data)} bytes)")
            raise BadRequest("no file field in the upload")

    return Handler


def serve(ex: Explorer, host: str = "127.0.0.1", port: int = 8600) -> ThreadingHTTPServer:
    """A started server (in a daemon thread); `.server_address` gives the port, `.shutdown()` stops it."""
    server = ThreadingHTTPServer((host, port), make_handler(ex))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="explorer", daemon=True).start()
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{quote(str(host))}:{port}/"


__all__ = ["Explorer", "esc", "serve", "url_of", "weights_hash_of_upload"]
