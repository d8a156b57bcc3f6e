"""`registry.core.safejson`: untrusted JSON with bounded size and depth, safe in a process that has py-evm/py_ecc
loaded (they raise the recursion limit to 100,000, and a deep `json.loads` then overflows the C stack), and
bounded reads of regular files only."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from registry.core.safejson import JsonError, load_file, loads, nesting_depth, read_bounded

DEEP = 200_000
REPO = Path(__file__).resolve().parent.parent


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_deep_json_kills_a_py_ecc_process_with_plain_json_but_not_with_safejson() -> None:
    # the fault: plain json.loads in a process whose recursion limit py_ecc raised dies by a signal
    crashed = _python(f"""
        import json, sys
        import py_ecc  # noqa: F401
        assert sys.getrecursionlimit() >= 100_000, sys.getrecursionlimit()
        json.loads("[" * {DEEP} + "]" * {DEEP})
        print("survived")
    """)
    assert crashed.returncode < 0 and "survived" not in crashed.stdout, (crashed.returncode, crashed.stderr[-300:])
    # the fix: the same document, same process state (py-evm loaded too), one clean error
    clean = _python(f"""
        import sys
        import eth, py_ecc  # noqa: F401
        assert sys.getrecursionlimit() >= 100_000
        from registry.core.safejson import JsonError, loads
        for doc in ("[" * {DEEP} + "]" * {DEEP}, '{{"a":' * {DEEP} + "1" + "}}" * {DEEP}):
            try:
                loads(doc.encode(), what="bundle.json")
            except JsonError as exc:
                print("refused:", exc)
    """)
    assert clean.returncode == 0, clean.stderr[-500:]
    lines = clean.stdout.strip().splitlines()
    assert len(lines) == 2 and all(f"bundle.json nests {DEEP} levels deep" in line for line in lines)


def test_depth_ignores_brackets_inside_strings_and_counts_exactly() -> None:
    assert nesting_depth('[1, [2, {"a": "[[[\\"[{"}]]') == 3
    assert nesting_depth('"a\\\\"[[]]') == 2  # an escaped backslash ends the string before the brackets
    assert nesting_depth('"[[[[ unterminated') == 0  # json.loads rejects the unterminated string itself
    assert nesting_depth("[]" * 1000) == 1
    assert loads("[" * 64 + "]" * 64) == loads("[" * 64 + "]" * 64)
    with pytest.raises(JsonError, match="65 levels deep"):
        loads("[" * 65 + "]" * 65)
    with pytest.raises(JsonError, match="Unterminated string"):
        loads('"[[[[' + "[" * 1000)


@pytest.mark.parametrize(("doc", "message"), [
    (b"NaN", "non-standard JSON constant NaN"),
    (b"[1, Infinity]", "non-standard JSON constant Infinity"),
    (b"[1,", "is not JSON"),
    (b"\xff\xfe[]", "not UTF-8"),
    (b"", "is not JSON"),
    (b'{"a": 1} x', "Extra data"),
])
def test_malformed_json_is_one_line_json_error(doc: bytes, message: str) -> None:
    with pytest.raises(JsonError, match=message) as info:
        loads(doc, what="x.json")
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)


def test_size_bound() -> None:
    assert loads(b"[1,2]", max_bytes=5) == [1, 2]
    with pytest.raises(JsonError, match="over the 4 byte limit"):
        loads(b"[1,2]", max_bytes=4)


def test_read_bounded_refuses_devices_fifos_symlinks_and_oversize(tmp_path: Path) -> None:
    f = tmp_path / "a.json"
    f.write_bytes(b'{"x": 1}')
    assert read_bounded(f, 8) == b'{"x": 1}' and load_file(f) == {"x": 1}
    with pytest.raises(JsonError, match="over the 7 byte limit"):
        read_bounded(f, 7)
    with pytest.raises(JsonError, match="not a regular file"):
        read_bounded("/dev/zero", 1 << 20)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(JsonError, match="not a regular file"):
        read_bounded(fifo, 100)  # opened non-blocking: no hang waiting for a writer
    with pytest.raises(JsonError, match="not a regular file"):
        read_bounded(tmp_path, 100)
    link = tmp_path / "link.json"
    link.symlink_to(f)
    assert read_bounded(link, 100) == f.read_bytes()
    with pytest.raises(JsonError, match="symbolic link"):
        read_bounded(link, 100, follow_symlinks=False)
    with pytest.raises(JsonError, match="cannot read missing"):
        read_bounded(tmp_path / "missing", 100)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * DEEP + "]" * DEEP)
    with pytest.raises(JsonError, match=r"deep\.json nests"):
        load_file(deep)
