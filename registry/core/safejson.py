"""Parsing untrusted JSON (and reading untrusted files) with bounds, safe in any process.

Why: Python's `json` parser recurses once per nested `[`/`{`. py-evm and py_ecc raise the interpreter's
recursion limit to 100,000 when imported, so in a process that has them loaded (the main job, the verifier
daemon, the chain client) a file of 200,000 nested brackets overflows the C stack and kills the process with
SIGSEGV instead of raising `RecursionError`. `loads` therefore measures the nesting depth first, without
recursion (strings removed by one regular expression, brackets counted by a running sum), and only then
hands the text to `json.loads`; the check does not depend on `sys.getrecursionlimit()`.

`read_bounded` reads at most `max_bytes` of a regular file (never a device such as /dev/zero, a FIFO or a
socket; optionally never through a symlink), so an oversize or endless file is a one-line error, not a
MemoryError or a hang.

Every error is `JsonError` (a `ValueError`) with a one-line message.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np

#: Default bounds: far above what the project writes (bundle.json, settings.json, proof.json are kilobytes).
MAX_BYTES = 64 << 20
MAX_DEPTH = 64
#: Manifests and configs nest deeper (a declarative model spec tree may be 32 modules deep).
MANIFEST_DEPTH = 256

# A JSON string as the JSON lexer delimits it: a quote, runs of ordinary characters or backslash escapes (DOTALL:
# a backslash takes the next character, whatever it is), then the closing quote, or the end of the text for an
# unterminated string (which json.loads rejects at its start, before reading any bracket inside it). Every quote
# starts a match that ends, so one pass is linear in the size of the text.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_CHUNK = 1 << 20


class JsonError(ValueError):
    """Untrusted JSON or an untrusted file that is refused: malformed, too large, too deep, not a regular file."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text` (outside strings), computed without recursion."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii")
    depth = deepest = 0
    for start in range(0, len(brackets), _CHUNK):  # chunks: bounded memory for megabytes of brackets
        chunk = np.frombuffer(brackets, dtype=np.uint8, count=min(_CHUNK, len(brackets) - start), offset=start)
        running = np.cumsum(np.where((chunk == ord("[")) | (chunk == ord("{")), 1, -1), dtype=np.int64) + depth
        deepest = max(deepest, int(running.max()))
        depth = int(running[-1])
    return deepest


def _reject_constant(name: str) -> Any:
    raise JsonError(f"non-standard JSON constant {name}")


def loads(data: bytes | str, *, what: str = "JSON", max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parses untrusted JSON (UTF-8) with bounded size and nesting depth; NaN/Infinity are refused.

    `what` names the input in the error message (for example "bundle.json")."""
    if len(data) > max_bytes:
        raise JsonError(f"{what} is {len(data)} bytes, over the {max_bytes} byte limit")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else str(data)
    except UnicodeDecodeError as exc:
        raise JsonError(f"{what} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    depth = nesting_depth(text)
    if depth > max_depth:
        raise JsonError(f"{what} nests {depth} levels deep, over the limit of {max_depth}")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except JsonError as exc:
        raise JsonError(f"{what} is not JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # RecursionError: a low recursion limit, below max_depth
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise JsonError(f"{what} is not JSON: {first}") from None


def read_bounded(path: str | Path, max_bytes: int = MAX_BYTES, *, what: str | None = None,
                 follow_symlinks: bool = True) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; devices, FIFOs, sockets and directories are refused
    (opened non-blocking, so a FIFO never hangs), and with `follow_symlinks=False` so is a symlink."""
    p = Path(path)
    name = what or p.name
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
        try:
            if stat.S_ISLNK(os.lstat(p).st_mode):
                raise JsonError(f"{name} is a symbolic link")
        except OSError as exc:
            raise JsonError(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        raise JsonError(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise JsonError(f"{name} is not a regular file")
        if st.st_size > max_bytes:
            raise JsonError(f"{name} is {st.st_size} bytes, over the {max_bytes} byte limit")
        chunks: list[bytes] = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise JsonError(f"cannot read {name}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise JsonError(f"{name} is over the {max_bytes} byte limit")
    return data


def load_file(path: str | Path, *, what: str | None = None, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
              follow_symlinks: bool = True) -> Any:
    """`loads(read_bounded(path))`: an untrusted JSON file, bounded in size and depth."""
    name = what or Path(path).name
    return loads(read_bounded(path, max_bytes, what=name, follow_symlinks=follow_symlinks), what=name,
                 max_bytes=max_bytes, max_depth=max_depth)
