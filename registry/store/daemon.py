"""`DaemonStore`: the `ContentStore` operations against a Kubo-compatible IPFS daemon's HTTP RPC API.

Tested against js-ipfs 0.66.1 (the daemon the project can run offline, see TOOLCHAIN.md); written to the
Kubo RPC API so a Kubo node works too. It talks plain `requests` rather than `ipfshttpclient`: every read
needs the daemon-side `timeout` option (js-ipfs waits forever for a block it does not have, even when started
with `--offline`), uploads must be streamed multipart bodies that can be rebuilt for a retry, and errors must
be told apart by status and message; ipfshttpclient 0.7 exposes none of that cleanly (its `add_bytes` takes
no import options, and its `connect()` refuses daemons newer than 0.8).

CIDs: imports use the store's `ImportSettings` (by default CIDv1, raw leaves, 256 KiB chunks), so a daemon
makes the same CIDs as `EmbeddedStore`; with `check_cids` (default) every add is also hashed locally by the
embedded importer and a daemon CID that differs is an error, not a silent divergence. Every CID returned is
CIDv1 base32 text (js-ipfs answers base58btc unless asked; CIDv0 links are reported as their CIDv1 form).

Trust: with `verify=True` (default) reads never take the daemon's word for content. `cat`, `ls`, `resolve`
and `get` fetch raw blocks (`block/get`), check each against its CID, and walk the DAG here with the same
hostile-DAG rules and `StoreLimits` as the embedded store; leaves are fetched a few at a time in parallel.
With `verify=False`, `cat` and `get` stream file bytes from the daemon's `cat` (2-3x faster on loopback),
checking only the byte count against the file's verified root block: use it for a daemon you trust.

Failures are `StoreError`s with one-line messages: a daemon that does not answer is `Unavailable` (after
`retries` attempts with exponential backoff on connection errors), content the daemon cannot produce within
`fetch_timeout` is `NotFound`, a block that does not hash to its CID is `Corrupt`.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import requests

from registry.store.base import (
    Corrupt,
    Entry,
    LimitExceeded,
    Malformed,
    NotFound,
    StoreError,
    Unavailable,
    Unsupported,
    split_path,
    valid_name,
)
from registry.store.cid import CID, RAW, encode_varint
from registry.store.dag import FILE, DagReader, Node, StoreLimits
from registry.store.embedded import EmbeddedStore
from registry.store.unixfs import (
    DEFAULT_SETTINGS,
    JS_SHARD_THRESHOLD_ENTRIES,
    MAX_IMPORT_DEPTH,
    ImportSettings,
    import_bytes,
    import_file,
    import_tree,
    shard_decision,
)

DEFAULT_API = "/ip4/127.0.0.1/tcp/5001/http"
_UPLOAD_PIECE = 1024 * 1024
NEVER_SHARD = 2**31 - 1  # a shard-split-threshold no directory reaches
_ROOT_NAME = "root"  # name of the top directory in an `add -r` upload; it does not enter any CID

#: Daemon error messages meaning "this content is not here" (js-ipfs, Kubo). A daemon-side timeout is one:
#: a local daemon that has not produced a block within `fetch_timeout` does not have it.
_NOT_FOUND_MARKERS = (
    "request timed out", "context deadline exceeded", "not found", "no link named", "does not exist",
    "could not find", "no such link", "not pinned", "key not found", "blockservice: key not found",
    "merkledag: not found", "no child under",
)
_NOT_A_FILE_MARKERS = ("is a directory", "not a file", "this dag node is a directory")


def api_base_url(api: str) -> str:
    """'http://host:port' for a multiaddr ("/ip4/127.0.0.1/tcp/5001/http", "/dns4/h/tcp/443/https") or URL."""
    text = api.strip().rstrip("/")
    if text.startswith(("http://", "https://")):
        parsed = urllib.parse.urlsplit(text)
        if not parsed.hostname or parsed.path not in ("", "/") or parsed.query:
            raise ValueError(f"IPFS API URL must be http(s)://host:port, got {api!r}")
        return f"{parsed.scheme}://{parsed.netloc}"
    parts = text.split("/")
    if len(parts) not in (5, 6) or parts[0] != "" or parts[3] != "tcp":
        raise ValueError(f"not an IPFS API multiaddr (/ip4/HOST/tcp/PORT[/http|/https]): {api!r}")
    proto, host, port = parts[1], parts[2], parts[4]
    scheme = parts[5] if len(parts) == 6 else "http"
    if proto not in ("ip4", "ip6", "dns", "dns4", "dns6") or scheme not in ("http", "https") or not host:
        raise ValueError(f"unsupported IPFS API multiaddr {api!r}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid port in IPFS API multiaddr {api!r}")
    return f"{scheme}://[{host}]:{port}" if proto == "ip6" else f"{scheme}://{host}:{port}"


def _v1(cid: CID) -> str:
    return str(cid.to_v1())


@dataclass(frozen=True, slots=True)
class _Part:
    """One part of an `add` multipart upload: a directory (no source) or a file read from `source`."""

    path: str
    source: bytes | Path | None


class DaemonStore:
    """A `ContentStore` backed by an IPFS daemon's RPC API (Kubo or js-ipfs); CIDs equal `EmbeddedStore`'s."""

    def __init__(
        self,
        api: str = DEFAULT_API,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 3.0,
        retries: int = 3,
        backoff: float = 0.25,
        fetch_timeout: float = 30.0,
        has_timeout: float = 1.0,
        offline: bool = False,
        settings: ImportSettings = DEFAULT_SETTINGS,
        limits: StoreLimits | None = None,
        verify: bool = True,
        check_cids: bool = True,
        pin_on_add: bool = True,
        parallel: int = 8,
    ) -> None:
        """`timeout`: longest wait for the daemon's next bytes; `fetch_timeout`: how long the daemon may look
        for content before it counts as missing (keep it short for an offline daemon); `has_timeout`: the
        same for `has`, which never goes to the network; `offline`: ask the daemon not to fetch from peers
        (Kubo honours it; js-ipfs only when started with --offline); `retries`/`backoff`: attempts after a
        connection error, sleeping backoff, 2*backoff, ...; `pin_on_add`: pin what is added, so a daemon's
        garbage collection cannot drop evidence; `parallel`: blocks fetched or put concurrently."""
        if retries < 0 or backoff < 0 or timeout <= 0 or fetch_timeout <= 0 or has_timeout <= 0 or parallel < 1:
            raise ValueError("timeouts must be positive, retries and backoff non-negative, parallel >= 1")
        self.api = api
        self.base_url = api_base_url(api)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retries = retries
        self.backoff = backoff
        self.fetch_timeout = fetch_timeout
        self.has_timeout = has_timeout
        self.offline = offline
        self.settings = settings
        self.limits = limits or StoreLimits()
        self.verify = verify
        self.check_cids = check_cids
        self.pin_on_add = pin_on_add
        self.parallel = parallel
        self.block_fetches = 0  # blocks fetched so far: lets tests (and operators) see what a read costs
        self._count_lock = threading.Lock()
        host = urllib.parse.urlsplit(self.base_url).hostname or ""
        self._loopback = host in ("127.0.0.1", "localhost", "::1")
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DaemonStore({self.api!r}, settings={self.settings.name!r}, verify={self.verify})"

    def close(self) -> None:
        """Stops the fetch threads (a closed store can still be used; it starts them again)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> DaemonStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- daemon ---------------------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        """The daemon's `version` answer; a cheap liveness check."""
        reply = self._json("version", [])
        if not isinstance(reply, dict) or "Version" not in reply:
            raise Unavailable(f"{self.api} answers, but not like an IPFS daemon (no Version in its reply)")
        return reply

    # ---- adding ---------------------------------------------------------------------------------------

    def add_bytes(self, data: bytes | bytearray | memoryview) -> str:
        body = data if isinstance(data, bytes) else bytes(data)  # bytes as given: no copy
        expected = import_bytes(body, self.settings).cid if self.check_cids else None
        return self._add([_Part("data", body)], expected, what="bytes")

    def add_file(self, path: str | Path) -> str:
        """Imports a regular file, streamed (symlinks are followed, like `ipfs add`; fifos are refused)."""
        p = Path(path)
        expected = import_file(p, self.settings).cid if self.check_cids else None  # also refuses non-files
        if expected is None and not stat.S_ISREG(os.stat(p).st_mode):
            raise Unsupported(f"{p} is not a regular file")
        return self._add([_Part(p.name if valid_name(p.name) else "file", p)], expected, what=str(p))

    def add_directory(self, path: str | Path) -> str:
        """Imports a directory tree (`ipfs add -r --hidden`); refuses what the embedded importer refuses
        (symlinks, special files, names that are not UTF-8, directories a daemon would HAMT-shard)."""
        root = Path(path)
        if not stat.S_ISDIR(os.lstat(root).st_mode):
            raise Unsupported(f"{root} is not a directory (symlinks are refused)")
        expected = import_tree(root, self.settings, max_depth=self.limits.max_depth).cid if self.check_cids \
            else None
        parts = [_Part(_ROOT_NAME, None)]
        dirs: list[tuple[int, bool]] = []
        self._walk_tree(root, _ROOT_NAME, parts, 0, dirs)
        return self._add(parts, expected, what=str(root), root=_ROOT_NAME, shard_threshold=_threshold(dirs, root))

    def push_from(self, source: EmbeddedStore, root_cid: str, *, pin: bool = True) -> str:
        """Copies every block of the DAG under `root_cid` from an embedded store into the daemon (`block/put`
        with the block's own codec, CIDv1, sha2-256) so the daemon serves the very same CID; pins it unless
        `pin=False` (pinning also makes the daemon check that it holds the whole DAG). Returns the CID."""
        root = CID.parse(root_cid)

        def put(item: tuple[CID, bytes]) -> None:
            cid, block = item
            fmt = "raw" if cid.codec == RAW else "dag-pb"
            params = [("format", fmt), ("mhtype", "sha2-256"), ("version", "1"), ("cid-base", "base32")]
            reply = self._json("block/put", params, subject=str(cid),
                               body=lambda: _multipart([("file", "block", block, "application/octet-stream")]))
            got = CID.parse(str(reply.get("Key", "")))
            if got.multihash != cid.multihash or got.codec != cid.codec:
                raise StoreError(f"IPFS daemon at {self.api} stored block {_v1(cid)} as {got} (codec ignored?)")

        for _ in self._map(put, source.blocks(root)):
            pass
        if pin:
            self.pin(str(root))
        return _v1(root)

    def import_car(self, source: EmbeddedStore, root_cid: str, *, pin: bool = True) -> str:
        """Copies the DAG under `root_cid` into the daemon in ONE request (`dag/import` of a CAR v1 streamed
        from the embedded store), then pins it: what `push_from` does, without a round trip per block — a
        10,000-checkpoint transcript is ~20,000 blocks. Returns the CID."""
        root = CID.parse(root_cid)
        boundary = secrets.token_hex(16)

        def body() -> tuple[Iterable[bytes], str]:
            def pieces() -> Iterator[bytes]:
                yield _part_header(boundary, "file", "dag.car", "application/vnd.ipld.car")
                yield from car_pieces(root, source.blocks(root))
                yield f"\r\n--{boundary}--\r\n".encode()
            return pieces(), f"multipart/form-data; boundary={boundary}"

        params = [("pin-roots", "false"), ("cid-base", "base32")]
        response = self._post("dag/import", params, subject=_v1(root), body=body)
        try:
            for line in response.iter_lines():
                item = _loads(line) if line.strip() else None
                if item is not None and "Message" in item and "Root" not in item:
                    raise StoreError(f"IPFS daemon at {self.api}: dag/import of {_v1(root)} failed: "
                                     f"{str(item['Message'])[:200]}")
        except requests.exceptions.RequestException as exc:
            raise Unavailable(f"IPFS daemon at {self.api} broke off importing {_v1(root)} ({_reason(exc)})") from None
        finally:
            response.close()
        if pin:
            self.pin(str(root))  # also makes the daemon check that it holds the whole DAG
        return _v1(root)

    # ---- reading --------------------------------------------------------------------------------------

    def has(self, cid: str) -> bool:
        """Whether the daemon holds the block now; never searches the network (offline, `has_timeout`)."""
        c = CID.parse(cid)
        params = [("arg", str(c)), ("offline", "true"), ("timeout", _duration(self.has_timeout))]
        try:
            self._json("block/stat", params, subject=str(c), read_timeout=self.has_timeout + self.timeout)
        except NotFound:
            return False
        return True

    def get_block(self, cid: str) -> bytes:
        """A block's bytes, checked against its CID."""
        return self._block(CID.parse(cid))

    def cat(self, ref: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes [offset, offset+length) of a file (to its end when length is None)."""
        return b"".join(self.iter_cat(ref, offset, length))

    def cat_buffer(self, ref: str, offset: int = 0, length: int | None = None) -> bytearray:
        """Like `cat`, into one writable buffer sized from the file's root block (one copy of a big file, not
        its blocks plus a joined copy)."""
        dag = self._dag
        node, start, end = dag.open_range(ref, offset, length)
        return dag.gather(node, self._file_pieces(node, start, end), end - start)

    def iter_cat(self, ref: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Like `cat`, piece by piece; at most `parallel` blocks held at a time."""
        dag = self._dag
        node, start, end = dag.open_range(ref, offset, length)
        yield from dag.checked(node, self._file_pieces(node, start, end), end - start)

    def size(self, ref: str) -> int:
        """Content size of a file (from its verified root block alone)."""
        return self._dag.load_kind(ref, FILE).size

    def resolve(self, cid: str, path: str = "") -> str:
        """CID of the entry at `path` inside directory `cid`, walking verified directory blocks."""
        return _v1(self._dag.resolve(CID.parse(cid), split_path(path)))

    def ls(self, ref: str) -> list[Entry]:
        """Entries of a directory, sorted by name (each dag-pb child's root block is read for kind and size)."""
        return self._dag.ls(ref)

    def get(self, ref: str, dest: str | Path) -> Path:
        """Writes the file or directory tree at `dest` (which must not exist); all or nothing. Directory
        blocks are always verified; file bytes too unless `verify=False` (then the daemon's `cat`, with the
        byte count checked)."""
        return self._dag.get(ref, dest)

    # ---- pins ------------------------------------------------------------------------------------------

    def pin(self, cid: str) -> None:
        """Pins the DAG recursively; `NotFound` when the daemon cannot get all of it within `fetch_timeout`."""
        c = CID.parse(cid)
        self._json("pin/add", [("arg", str(c)), ("recursive", "true"), *self._fetch_params()], subject=str(c),
                   read_timeout=self.fetch_timeout + self.timeout)

    def unpin(self, cid: str) -> None:
        """Removes a recursive pin; `NotFound` when it is not pinned."""
        c = CID.parse(cid)
        self._json("pin/rm", [("arg", str(c)), ("recursive", "true")], subject=str(c))

    def pins(self) -> list[str]:
        """Recursively pinned roots, as CIDv1 base32, sorted."""
        reply = self._json("pin/ls", [("type", "recursive"), ("cid-base", "base32")])
        keys = reply.get("Keys") or {}
        return sorted({_v1(CID.parse(k)) for k in keys})

    def is_pinned(self, cid: str) -> bool:
        """Whether `cid` is pinned recursively (an indirect pin through a parent does not count)."""
        c = CID.parse(cid)
        try:
            reply = self._json("pin/ls", [("arg", str(c)), ("type", "recursive")], subject=str(c))
        except NotFound:
            return False
        return bool(reply.get("Keys"))

    # ---- HTTP -----------------------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            if self._loopback:
                session.trust_env = False  # never send loopback RPC calls through an HTTP proxy from the env
            self._local.session = session
        return session

    def _fetch_params(self) -> list[tuple[str, str]]:
        params = [("timeout", _duration(self.fetch_timeout))]
        if self.offline:
            params.append(("offline", "true"))
        return params

    def _post(self, cmd: str, params: list[tuple[str, str]], *, subject: str = "",
              body: Callable[[], tuple[Iterable[bytes] | bytes, str]] | None = None,
              read_timeout: float | None = None, stream: bool = False) -> requests.Response:
        """One RPC call with retries on connection errors; returns a 200 response or raises a StoreError."""
        url = f"{self.base_url}/api/v0/{cmd}"
        attempt = 0
        while True:
            data: Iterable[bytes] | bytes | None = None
            headers: dict[str, str] = {}
            if body is not None:
                data, content_type = body()
                headers["Content-Type"] = content_type
            try:
                response = self._session().post(url, params=params, data=data, headers=headers, stream=stream,
                                                timeout=(self.connect_timeout, read_timeout or self.timeout))
            except requests.exceptions.ConnectionError as exc:  # includes ConnectTimeout
                if attempt < self.retries:
                    time.sleep(self.backoff * 2**attempt)
                    attempt += 1
                    continue
                raise Unavailable(f"IPFS daemon at {self.api} is not answering ({_reason(exc)}; "
                                  f"{attempt + 1} attempts)") from None
            except requests.exceptions.Timeout:
                raise Unavailable(f"IPFS daemon at {self.api} did not answer {cmd} within "
                                  f"{read_timeout or self.timeout:g} s") from None
            except requests.exceptions.RequestException as exc:
                raise Unavailable(f"IPFS daemon at {self.api}: {cmd} failed ({_reason(exc)})") from None
            if response.status_code == 200:
                return response
            try:
                self._raise_for(cmd, subject, response)
            finally:
                response.close()

    def _raise_for(self, cmd: str, subject: str, response: requests.Response) -> NoReturn:
        """Maps a daemon's error answer to a StoreError: JSON {"Message": ...} from Kubo and js-ipfs alike."""
        status = response.status_code
        try:
            reply = response.json()
        except ValueError:
            reply = None
        what = f"{cmd} {subject}".strip()
        if not isinstance(reply, dict) or "Message" not in reply:
            text = " ".join(response.text.split())[:120]
            if status == 404:  # Kubo: "404 page not found" for an unknown command
                raise Unsupported(f"{self.api} has no /api/v0/{cmd} (not a Kubo-compatible RPC API?)")
            raise Unavailable(f"{self.api} answered {what} with HTTP {status}, not like an IPFS daemon ({text})")
        message = " ".join(str(reply["Message"]).split())[:300] or f"HTTP {status}"
        low = message.lower()
        if status == 404 and low == "not found":  # js-ipfs: unknown command
            raise Unsupported(f"{self.api} has no /api/v0/{cmd} (not a Kubo-compatible RPC API?)")
        if status in (401, 403):
            raise Unavailable(f"IPFS daemon at {self.api} refused {cmd} (HTTP {status}: {message})")
        if any(m in low for m in _NOT_A_FILE_MARKERS):
            raise Malformed(f"{subject or cmd} is a directory, not a file")
        if any(m in low for m in _NOT_FOUND_MARKERS):
            raise NotFound(f"{what}: not available from the IPFS daemon at {self.api} "
                           f"within {self.fetch_timeout:g} s ({message})")
        raise StoreError(f"IPFS daemon at {self.api}: {what} failed: {message}")

    def _json(self, cmd: str, params: list[tuple[str, str]], *, subject: str = "",
              body: Callable[[], tuple[Iterable[bytes] | bytes, str]] | None = None,
              read_timeout: float | None = None) -> dict[str, Any]:
        response = self._post(cmd, params, subject=subject, body=body, read_timeout=read_timeout)
        try:
            reply = response.json()
        except ValueError:
            if not response.content.strip():
                return {}
            raise Unavailable(f"{self.api} answered {cmd} with something that is not JSON") from None
        if not isinstance(reply, dict):
            raise Unavailable(f"{self.api} answered {cmd} with an unexpected {type(reply).__name__}")
        return reply

    def _stream(self, response: requests.Response, cmd: str, subject: str, limit: int) -> Iterator[bytes]:
        """The body of a streamed response, at most `limit` bytes (one more means a LimitExceeded)."""
        got = 0
        try:
            for piece in response.iter_content(chunk_size=256 * 1024):
                got += len(piece)
                if got > limit:
                    raise LimitExceeded(f"{cmd} {subject}: the daemon sent more than the {limit} bytes expected")
                yield piece
        except requests.exceptions.RequestException as exc:
            raise Unavailable(f"IPFS daemon at {self.api} broke off {cmd} {subject} ({_reason(exc)})") from None
        finally:
            response.close()

    def _map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """fn over items, in order, with up to `parallel` calls in flight (errors surface in order)."""
        if self.parallel == 1:
            yield from map(fn, items)
            return
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="ipfs-daemon-store")
            pool = self._pool
        window: deque[Future[Any]] = deque()
        try:
            for item in items:
                window.append(pool.submit(fn, item))
                if len(window) >= self.parallel:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for future in window:
                future.cancel()

    # ---- adding (internals) ------------------------------------------------------------------------------

    def _add(self, parts: list[_Part], expected: CID | None, *, what: str, root: str | None = None,
             shard_threshold: int = JS_SHARD_THRESHOLD_ENTRIES) -> str:
        """`shard_threshold`: js-ipfs's `shard-split-threshold`, sent always, so the daemon's own sharding
        setting (off by default in js-ipfs 0.66) cannot change a CID."""
        params = [("shard-split-threshold", str(shard_threshold)),("cid-version", str(self.settings.cid_version)),
                  ("raw-leaves", "true" if self.settings.raw_leaves else "false"),
                  ("chunker", f"size-{self.settings.chunk_size}"),
                  ("cid-base", "base32"), ("pin", "true" if self.pin_on_add else "false"),
                  ("progress", "false"), ("hidden", "true"), ("wrap-with-directory", "false")]
        response = self._post("add", params, subject=what, body=lambda: _add_body(parts))
        last: dict[str, Any] | None = None
        try:
            for line in response.iter_lines():
                if not line.strip():
                    continue
                item = _loads(line)
                if item is None or "Hash" not in item:
                    message = (item or {}).get("Message", line[:200])
                    raise StoreError(f"IPFS daemon at {self.api}: add {what} failed: {message}")
                if root is None or item.get("Name") == root:
                    last = item
        except requests.exceptions.RequestException as exc:
            raise Unavailable(f"IPFS daemon at {self.api} broke off adding {what} ({_reason(exc)})") from None
        finally:
            response.close()
        if last is None:
            raise StoreError(f"IPFS daemon at {self.api}: add {what} returned no root CID")
        got = CID.parse(str(last["Hash"]))
        if expected is not None and got.to_v1() != expected.to_v1():
            raise StoreError(f"IPFS daemon at {self.api} made {_v1(got)} for {what} where the embedded importer "
                          f"makes {_v1(expected)} (import settings {self.settings.name} not honoured?)")
        return _v1(got)

    def _walk_tree(self, path: Path, rel: str, parts: list[_Part], depth: int,
                   dirs: list[tuple[int, bool]]) -> None:
        """Upload parts of a tree, parents first, refusing what the embedded importer refuses."""
        if depth > min(self.limits.max_depth, MAX_IMPORT_DEPTH):
            raise LimitExceeded(f"directory {path} is nested deeper than {self.limits.max_depth} levels")
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        estimate = 0
        for entry in entries:
            if not valid_name(entry.name):
                raise Malformed(f"invalid entry name {entry.name!r}")
            try:
                estimate += len(entry.name.encode("utf-8")) + (34 if self.settings.cid_version == 0 else 36)
            except UnicodeEncodeError:
                raise Unsupported(f"entry name {entry.name!r} is not valid UTF-8") from None
        dirs.append((len(entries), shard_decision(len(entries), estimate, self.settings.shard_rule)))
        for entry in entries:
            child = Path(entry.path)
            child_rel = f"{rel}/{entry.name}"
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                parts.append(_Part(child_rel, None))
                self._walk_tree(child, child_rel, parts, depth + 1, dirs)
            elif stat.S_ISREG(mode):
                parts.append(_Part(child_rel, child))
            else:
                kind = "a symlink" if stat.S_ISLNK(mode) else "not a regular file or directory"
                raise Unsupported(f"{child} is {kind}; only regular files and directories can be added")

    # ---- reading (internals) ---------------------------------------------------------------------------

    def _block(self, cid: CID) -> bytes:
        """A block from the daemon, checked against its CID and the block-size limit."""
        params = [("arg", str(cid)), *self._fetch_params()]
        response = self._post("block/get", params, subject=_v1(cid), stream=True,
                              read_timeout=self.fetch_timeout + self.timeout)
        limit = self.limits.max_block_size
        try:
            data = b"".join(self._stream(response, "block/get", _v1(cid), limit))
        except LimitExceeded:
            raise LimitExceeded(f"block {_v1(cid)} is over the {limit} byte limit") from None
        with self._count_lock:
            self.block_fetches += 1
        if not cid.matches(data):
            raise Corrupt(f"IPFS daemon at {self.api} returned {len(data)} bytes for block {_v1(cid)} "
                          "that do not hash to it")
        return data

    @property
    def _dag(self) -> DagReader:
        """The DAG walker over verified blocks from the daemon (children fetched `parallel` at a time)."""
        return DagReader(self._block, self.limits, name=_v1, fetch_map=self._map, file_pieces=self._file_pieces,
                         yielded="got")

    def _file_pieces(self, node: Node, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of a file: walked over verified blocks, or the daemon's `cat` (verify=False)."""
        if not self.verify:
            return self._api_cat(node, start, end)
        return (piece.tobytes() for piece in self._dag.read_range(node, start, end))

    def _api_cat(self, node: Node, start: int, end: int) -> Iterator[bytes]:
        """The daemon's own `cat` of [start, end): trusted bytes, only their count is checked (verify=False)."""
        if end <= start:
            return
        params = [("arg", str(node.cid)), ("offset", str(start)), ("length", str(end - start)),
                  *self._fetch_params()]
        response = self._post("cat", params, subject=_v1(node.cid), stream=True,
                              read_timeout=self.fetch_timeout + self.timeout)
        yield from self._stream(response, "cat", _v1(node.cid), end - start)


# ---- helpers --------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    """A Go-style duration both Kubo and js-ipfs parse ("1500ms")."""
    return f"{max(1, round(seconds * 1000))}ms"


def _reason(exc: BaseException) -> str:
    """A short, one-line cause for an exception from requests/urllib3 (their messages nest reprs)."""
    text = str(exc)
    for marker in ("Connection refused", "timed out", "Name or service not known", "Connection reset",
                   "Remote end closed connection", "No route to host", "Network is unreachable",
                   "Connection aborted", "Temporary failure in name resolution"):
        if marker.lower() in text.lower():
            return marker.lower()
    return " ".join(text.split())[:160] or type(exc).__name__


def _loads(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _multipart(fields: list[tuple[str, str, bytes, str]]) -> tuple[bytes, str]:
    """A small in-memory multipart/form-data body (name, filename, content, content type per part)."""
    boundary = secrets.token_hex(16)
    out = bytearray()
    for name, filename, content, content_type in fields:
        out += _part_header(boundary, name, filename, content_type)
        out += content
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _part_header(boundary: str, name: str, filename: str, content_type: str) -> bytes:
    # Names are percent-encoded (UTF-8), as Kubo's and js-ipfs's multipart readers decode them.
    quoted = urllib.parse.quote(filename, safe="")
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{quoted}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode()


def car_pieces(root: CID, blocks: Iterable[tuple[CID, bytes]]) -> Iterator[bytes]:
    """A CAR v1 (content-addressed archive) of `blocks` with one root: a dag-cbor header
    {"roots": [root], "version": 1} and then varint(len(cid ‖ block)) ‖ cid ‖ block per block."""
    cid = b"\x00" + root.to_v1().to_bytes()  # dag-cbor tag 42: a CID as bytes with the identity-multibase 0
    header = b"\xa2\x65roots\x81\xd8\x2a\x58" + bytes((len(cid),)) + cid + b"\x67version\x01"  # 37-byte CID
    yield encode_varint(len(header)) + header
    for c, block in blocks:
        raw = c.to_bytes()
        yield encode_varint(len(raw) + len(block)) + raw
        yield bytes(block)


def _threshold(dirs: list[tuple[int, bool]], root: Path) -> int:
    """The js-ipfs `shard-split-threshold` (an entry count) that shards exactly the directories the import
    settings' rule shards; `Unsupported` when no entry count does (the Kubo byte rule on a mixed tree: add
    it to an `EmbeddedStore` and copy it over with `push_from`)."""
    sharded = [n for n, shard in dirs if shard]
    flat = [n for n, shard in dirs if not shard]
    if not sharded:
        return NEVER_SHARD
    if flat and max(flat) >= min(sharded):
        raise Unsupported(f"{root}: the daemon cannot shard this tree's directories as the Kubo rule does "
                          "(it counts entries, not bytes); add it to an embedded store and push_from it")
    return min(sharded)


def _add_body(parts: list[_Part]) -> tuple[Iterable[bytes] | bytes, str]:
    """The multipart body of `add`, streamed from disk (parents before children, as daemons require)."""
    boundary = secrets.token_hex(16)

    def generate() -> Iterator[bytes]:
        for part in parts:
            if part.source is None:
                yield _part_header(boundary, "file", part.path, "application/x-directory") + b"\r\n"
                continue
            yield _part_header(boundary, "file", part.path, "application/octet-stream")
            if isinstance(part.source, bytes):
                data = part.source  # in pieces: chunked encoding copies each piece it frames
                for pos in range(0, len(data), _UPLOAD_PIECE):
                    yield data[pos:pos + _UPLOAD_PIECE]
            else:
                with open(part.source, "rb") as f:
                    while piece := f.read(_UPLOAD_PIECE):
                        yield piece
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    content_type = f"multipart/form-data; boundary={boundary}"
    if len(parts) == 1 and isinstance(parts[0].source, bytes) and len(parts[0].source) <= _UPLOAD_PIECE:
        return b"".join(generate()), content_type  # a plain body for small adds; big ones stream (no 2nd copy)
    return generate(), content_type


__all__ = ["DEFAULT_API", "DaemonStore", "api_base_url"]
