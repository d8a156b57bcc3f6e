"""Checkpoints held once in memory (issue 13): one-copy reads from the stores, tensors that are views of the
buffer, and a strict safetensors parse in place of the official loader. Tiny states; the 100M-parameter
measurement is `python -m bench.checkpoint_rss`."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load

from registry.pol.checkpoint import TranscriptError, decode_checkpoint, encode_checkpoint, read_buffer
from registry.store.base import Malformed
from registry.store.embedded import EmbeddedStore
from registry.store.unixfs import ImportSettings
from verifier.engine import DirSource, StoreSource


def _state() -> tuple[dict[str, torch.Tensor], dict]:
    g = torch.Generator().manual_seed(1)
    model = {"w": torch.randn(5, 7, generator=g), "mask": torch.tensor([True, False, True]),
             "count": torch.arange(3, dtype=torch.int64), "empty": torch.zeros(0, 2),
             "d": torch.randn(4, dtype=torch.float64, generator=g), "h": torch.randn(3, generator=g).half()}
    optim = {"state": {0: {"step": torch.tensor(3.0), "momentum_buffer": torch.randn(5, 7, generator=g)}},
             "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0]}]}
    return model, optim


def test_views_of_a_writable_buffer_copies_of_bytes() -> None:
    model, optim = _state()
    data = encode_checkpoint(2, 9, model, optim)
    official = st_load(data)
    for buf in (data, bytearray(data)):
        ck = decode_checkpoint(buf)
        assert (ck.index, ck.step) == (2, 9)
        for name, t in model.items():
            got = ck.model[name]
            assert got.dtype == t.dtype and got.shape == t.shape and torch.equal(got, official[f"model.{name}"])
        assert torch.equal(ck.optimizer["state"][0]["momentum_buffer"], optim["state"][0]["momentum_buffer"])
    shared = bytearray(data)
    ck = decode_checkpoint(shared)
    base = memoryview(shared)
    lo, hi = _address(base), _address(base) + len(shared)
    assert lo <= ck.model["count"].data_ptr() < hi  # a view, not a copy (the first tensor: aligned)
    assert ck.model["w"].data_ptr() % 4 == 0  # after the 9 bytes of "h" and "mask": a copy, aligned
    copied = decode_checkpoint(data)
    assert not lo <= copied.model["count"].data_ptr() < hi


def _address(view: memoryview) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def _resealed(header: dict, body: bytes) -> bytearray:
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    return bytearray(struct.pack("<Q", len(head)) + head + body)


@pytest.mark.parametrize("mutate", ["gap", "overlap", "trailing", "short", "dtype", "shape", "bool", "extra-key"])
def test_hostile_tensor_tables_are_refused(mutate: str) -> None:
    model, optim = _state()
    data = encode_checkpoint(0, 0, model, optim)
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    w = header["model.w"]
    if mutate == "gap":
        w["data_offsets"] = [w["data_offsets"][0] + 4, w["data_offsets"][1] + 4]
    elif mutate == "overlap":
        header["model.mask"]["data_offsets"] = [0, 3]
    elif mutate == "trailing":
        body += b"\0"
    elif mutate == "short":
        body = body[:-1]
    elif mutate == "dtype":
        w["dtype"] = "F8_E9"
    elif mutate == "shape":
        w["shape"] = [5, -7]
    elif mutate == "bool":
        a, _ = header["model.mask"]["data_offsets"]
        body = body[:a] + b"\x02" + body[a + 1:]
    else:
        w["extra"] = 1
    with pytest.raises(TranscriptError, match="cannot be read"):
        decode_checkpoint(_resealed(header, body))


def test_one_copy_reads_from_store_and_directory(tmp_path: Path) -> None:
    model, optim = _state()
    data = encode_checkpoint(0, 0, model, optim)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "c.safetensors").write_bytes(data)
    small = ImportSettings("small", chunk_size=64, max_links=3)  # a deep DAG out of a tiny file
    store = EmbeddedStore(tmp_path / "store", small)
    cid = store.add_directory(tmp_path / "t")
    buf = store.cat_buffer(f"{cid}/c.safetensors")
    assert isinstance(buf, bytearray) and buf == data
    assert store.cat_buffer(f"{cid}/c.safetensors", 10, 100) == data[10:110]
    for source in (StoreSource(store, cid), DirSource(tmp_path / "t")):
        got = source.read_buffer("c.safetensors", len(data))
        assert isinstance(got, bytearray) and got == data
        assert source.read("c.safetensors", len(data)) == data
        with pytest.raises(TranscriptError, match="larger than the limit"):
            source.read_buffer("c.safetensors", len(data) - 1)
    assert read_buffer(tmp_path / "t" / "c.safetensors") == data
    assert read_buffer(tmp_path / "t" / "c.safetensors", 10) == data[:11]


def test_gather_refuses_a_wrong_byte_count(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    cid = store.add_bytes(b"x" * 1000)
    dag = store._dag
    node, _, _ = dag.open_range(cid, 0, None)
    with pytest.raises(Malformed):
        dag.gather(node, [b"x" * 999], 1000)
    with pytest.raises(Malformed):
        dag.gather(node, [b"x" * 1000, b"y"], 1000)
