"""Checkpoint files of a Proof-of-Learning transcript: safetensors only, never pickle (SPEC section 3).

`checkpoints/NNNNNN.safetensors` (format "proofreg-ckpt/1") holds everything needed to re-execute the
segment that starts at it, besides the configuration and the batches:

tensors
    ``model.<name>``          every entry of the model's ``state_dict()`` (parameters and buffers), on CPU
    ``optim.<pid>.<key>``     every tensor in the optimizer's ``state_dict()["state"][pid][key]``
    ``scaler.scale``,         the GradScaler's current scale (float32, 0-d) and growth tracker (int32, 0-d):
    ``scaler.growthTracker``  only in runs that declare ``precision.gradScaler`` (float16 autocast)
metadata
    one key, ``"proofreg"``, holding canonical JSON (one key because safetensors' own writer orders several
    metadata keys at random, which would make identical checkpoints hash differently)::

        {"format": "proofreg-ckpt/1", "index": i, "step": global step,
         "model": [state_dict names, sorted],
         "optimizer": {"paramGroups": [{...hyperparameters..., "params": [pid, ...]}],
                       "state": {"<pid>": {"<key>": {"tensor": "optim.<pid>.<key>"} | {"value": scalar}}}},
         "rng": "proofreg/pol-rng/1",
         "scaler": ["growthTracker", "scale"]}          (only with a GradScaler: older files keep their bytes)

The random draws of every step follow from the configuration's seed and the step number (`registry.pol.rng`),
so a checkpoint carries no generator state. The file layout is fixed (tensors in name order, see
`safetensors_chunks`), so the same state gives the same bytes and the same `ckptHash`.

Reading parses the safetensors file itself (bounded header, JSON only, offsets that tile the data exactly, as
strict as the official loader), so a pickle or any other hostile file fails with `TranscriptError` and runs
nothing. Decoding a writable buffer (what `read_buffer` and the stores' `cat_buffer` return) makes the tensors
views of it, so a verified checkpoint sits in memory once, not as bytes plus a parsed copy (issue 13: a
100M-parameter checkpoint is fetched and decoded at about 1x the state size in peak RSS; `bench.checkpoint_rss`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import sys
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as st_load

from registry.core import safejson
from registry.core.hashing import as_hash, canonical_json, to_hex
from registry.pol.rng import RNG_SCHEME

CKPT_FORMAT = "proofreg-ckpt/1"
METADATA_KEY = "proofreg"
#: The GradScaler state a checkpoint holds (tensor ``scaler.<key>``), with its dtype.
SCALER_STATE: dict[str, torch.dtype] = {"growthTracker": torch.int32, "scale": torch.float32}
MAX_HEADER_BYTES = 64 << 20


class TranscriptError(ValueError):
    """A transcript file that is missing, malformed, inconsistent with the manifest, or hostile."""


# ---------------------------------------------------------------------------------------------------------
# JSON values of optimizer param groups
# ---------------------------------------------------------------------------------------------------------


def json_scalar(value: Any, where: str) -> Any:
    """A param-group / optimizer-state value as JSON (tuples become lists, 0-d tensors floats)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TranscriptError(f"{where}: tensor hyperparameters are not supported")
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TranscriptError(f"{where}: non-finite value {value}")
        return value
    if isinstance(value, list | tuple):
        return [json_scalar(v, where) for v in value]
    raise TranscriptError(f"{where}: value of type {type(value).__name__} cannot be recorded")


def from_json_group_value(value: Any) -> Any:
    """Inverse of `json_scalar` for param groups: lists (e.g. Adam's betas) become tuples."""
    return tuple(value) if isinstance(value, list) else value


# ---------------------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------------------

_ST_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
_ST_CODES: dict[str, torch.dtype] = {code: dtype for dtype, code in _ST_DTYPES.items()}


def safetensors_chunks(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> list[bytes | memoryview]:
    """A safetensors file with a fixed layout: tensors in sorted name order, header keys in that order after
    `__metadata__`, header padded with spaces to a multiple of 8. Written here rather than by
    `safetensors.torch.save` because that one orders metadata keys at random and does its per-tensor work in
    Python slowly enough to stall a training thread; the result is read back by the official parser.
    The chunks (header, then each tensor's bytes, viewing the tensors' memory) concatenate to the file."""
    header: dict[str, Any] = {"__metadata__": metadata}
    chunks: list[bytes | memoryview] = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach()
        if t.device.type != "cpu":
            raise TranscriptError(f"tensor {name!r} must be on the CPU to be written")
        code = _ST_DTYPES.get(t.dtype)
        if code is None:
            raise TranscriptError(f"tensor {name!r} has unsupported dtype {t.dtype}")
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().data if t.numel() else memoryview(b"")
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + raw.nbytes]}
        chunks.append(raw)
        offset += raw.nbytes
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    head += b" " * (-len(head) % 8)
    return [struct.pack("<Q", len(head)) + head, *chunks]


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    return b"".join(safetensors_chunks(tensors, metadata))



def encode_checkpoint(index: int, step: int, model_state: dict[str, torch.Tensor],
                      optim_state: dict[str, Any], scaler: dict[str, torch.Tensor] | None = None) -> bytes:
    """The checkpoint file's bytes (module docstring). Tensors must already be CPU copies."""
    return b"".join(checkpoint_chunks(index, step, model_state, optim_state, scaler))


def checkpoint_chunks(index: int, step: int, model_state: dict[str, torch.Tensor],
                      optim_state: dict[str, Any],
                      scaler: dict[str, torch.Tensor] | None = None) -> list[bytes | memoryview]:
    """`encode_checkpoint` as pieces to write and hash one after the other (no copy of the tensors' bytes).
    `scaler`: the GradScaler state (`SCALER_STATE`), a state group of its own bound by the file hash."""
    tensors: dict[str, torch.Tensor] = {}
    if scaler is not None:
        if set(scaler) != set(SCALER_STATE):
            raise TranscriptError(f"GradScaler state must hold exactly {sorted(SCALER_STATE)}")
        for key, dtype in SCALER_STATE.items():
            tensors[f"scaler.{key}"] = scaler[key].detach().to("cpu", dtype).reshape(())
    for name, t in model_state.items():
        tensors[f"model.{name}"] = t.contiguous()
    state_layout: dict[str, dict[str, Any]] = {}
    for pid, entries in optim_state["state"].items():
        layout: dict[str, Any] = {}
        for key, value in entries.items():
            if not isinstance(key, str) or not key:
                raise TranscriptError(f"optimizer state key {key!r} cannot be recorded")
            if isinstance(value, torch.Tensor):
                name = f"optim.{int(pid)}.{key}"
                tensors[name] = value.contiguous()
                layout[key] = {"tensor": name}
            else:
                layout[key] = {"value": json_scalar(value, f"optimizer state {pid}.{key}")}
        state_layout[str(int(pid))] = layout
    groups = []
    for g in optim_state["param_groups"]:
        groups.append({k: ([int(p) for p in v] if k == "params" else json_scalar(v, f"param group {k}"))
                       for k, v in g.items()})
    meta = {
        "format": CKPT_FORMAT,
        "index": int(index),
        "step": int(step),
        "model": sorted(model_state),
        "optimizer": {"paramGroups": groups, "state": state_layout},
        "rng": RNG_SCHEME,
    }
    if scaler is not None:
        meta["scaler"] = sorted(SCALER_STATE)
    return safetensors_chunks(tensors, {METADATA_KEY: canonical_json(meta).decode()})


# ---------------------------------------------------------------------------------------------------------
# Decoding (hostile input)
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A decoded checkpoint. Tensors are CPU tensors owned by this object: views of the buffer it was decoded
    from when that was writable (handed over, so the state is in memory once), fresh copies otherwise."""

    index: int
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # torch's Optimizer.state_dict() format (int param ids)
    ckpt_hash: bytes = b""
    scaler: dict[str, torch.Tensor] | None = None  # GradScaler state (`SCALER_STATE`), float16 runs only


Buffer = bytes | bytearray | memoryview


def _header(data: memoryview) -> tuple[dict[str, Any], int]:
    """The safetensors header and the offset of the data section."""
    if len(data) < 8:
        raise TranscriptError("not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    if n < 2 or n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise TranscriptError("not a safetensors file (bad header length)")
    try:
        header = safejson.loads(bytes(data[8:8 + n]), what="safetensors header", max_depth=safejson.MANIFEST_DEPTH)
    except (UnicodeDecodeError, ValueError) as exc:
        raise TranscriptError(f"not a safetensors file (header is not JSON): {exc}") from exc
    if not isinstance(header, dict):
        raise TranscriptError("not a safetensors file (header is not an object)")
    return header, 8 + n


def _is_int(v: Any) -> bool:
    return type(v) is int and v >= 0


def _tensors(view: memoryview, header: dict[str, Any], start: int) -> dict[str, torch.Tensor]:
    """The header's tensors over the data section at `view[start:]`, checked as strictly as safetensors' loader:
    known dtypes, shapes of non-negative ints, byte ranges of the right length that tile the section exactly (no
    gap, overlap or trailing byte), BOOL bytes 0 or 1. A writable buffer is shared, not copied: the tensors are
    views of it (one copy of the state in memory); a read-only one (bytes) is copied tensor by tensor."""
    spans: list[tuple[int, int, str, torch.dtype, list[int]]] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise TranscriptError(f"checkpoint tensors cannot be read: bad header entry for {name!r}")
        dtype = _ST_CODES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        shape, offsets = info["shape"], info["data_offsets"]
        if dtype is None:
            raise TranscriptError(f"checkpoint tensors cannot be read: {name!r} has unsupported dtype "
                                  f"{info['dtype']!r}")
        if not isinstance(shape, list) or not all(_is_int(d) for d in shape) or not isinstance(offsets, list) \
                or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
            raise TranscriptError(f"checkpoint tensors cannot be read: bad shape or offsets for {name!r}")
        a, b = offsets
        if b < a or b - a != math.prod(shape) * dtype.itemsize:
            raise TranscriptError(f"checkpoint tensors cannot be read: {name!r} offsets do not match its shape")
        spans.append((a, b, name, dtype, shape))
    spans.sort(key=lambda s: (s[0], s[1]))
    pos = 0
    for a, b, name, _, _ in spans:
        if a != pos:
            raise TranscriptError(f"checkpoint tensors cannot be read: {name!r} overlaps or leaves a gap")
        pos = b
    if start + pos != len(view):
        raise TranscriptError("checkpoint tensors cannot be read: the data section is not the header's size")
    shared = not view.readonly
    out: dict[str, torch.Tensor] = {}
    for a, b, name, dtype, shape in spans:
        if a == b:
            out[name] = torch.empty(shape, dtype=dtype)
            continue
        src: Any = view if shared else bytearray(view[start + a:start + b])
        raw = torch.frombuffer(src, dtype=torch.uint8, count=b - a, offset=start + a if shared else 0)
        if raw.data_ptr() % dtype.itemsize:
            raw = raw.clone()  # misaligned (a BOOL or 8-bit tensor before it): this one tensor is copied
        if dtype == torch.bool and bool((raw > 1).any()):
            raise TranscriptError(f"checkpoint tensors cannot be read: {name!r} holds bytes that are not booleans")
        out[name] = raw.view(dtype).reshape(shape)
    return out


def read_buffer(path: str | os.PathLike[str], limit: int | None = None) -> bytearray:
    """A file's bytes in one writable buffer, read in place (no second copy), which `decode_checkpoint` then
    shares with the tensors. At most `limit` + 1 bytes are read, so that an over-long file shows as such."""
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        buf = bytearray((size if limit is None else min(size, limit)) + 1)
        view, n = memoryview(buf), 0
        while n < len(buf):
            got = f.readinto(view[n:])
            if not got:
                break
            n += got
        view.release()
    del buf[n:]
    return buf


def decode_checkpoint(data: Buffer, expected_hash: bytes | None = None) -> Checkpoint:
    """Parses checkpoint bytes; checks sha256 against `expected_hash` first when given.

    With a writable buffer (a `bytearray`), the tensors are views of `data`, which the caller hands over: it
    must not be changed or reused afterwards. With `bytes`, every tensor is a copy."""
    view = memoryview(data).cast("B")
    digest = hashlib.sha256(view).digest()
    if expected_hash is not None and digest != as_hash(expected_hash):
        raise TranscriptError(f"checkpoint hash {to_hex(digest)} is not the manifest's "
                              f"{to_hex(as_hash(expected_hash))}")
    header, start = _header(view)
    raw_meta = header.get("__metadata__")
    if not isinstance(raw_meta, dict) or not isinstance(raw_meta.get(METADATA_KEY), str):
        raise TranscriptError("checkpoint has no proofreg metadata")
    try:
        meta = safejson.loads(raw_meta[METADATA_KEY], what="checkpoint metadata", max_depth=safejson.MANIFEST_DEPTH)
    except ValueError as exc:
        raise TranscriptError(f"checkpoint metadata is not JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != CKPT_FORMAT:
        raise TranscriptError(f"checkpoint format is not {CKPT_FORMAT!r}")
    if sys.byteorder == "little":
        tensors = _tensors(view, header, start)
    else:  # safetensors data are little-endian: leave the byte swapping to the official loader (a copy)
        try:
            tensors = st_load(bytes(view))
        except Exception as exc:  # safetensors raises its own error types; all mean "malformed"
            raise TranscriptError(f"checkpoint tensors cannot be read: {exc}") from exc
    used: set[str] = set()

    def take(name: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
        if not isinstance(name, str) or name not in tensors:
            raise TranscriptError(f"checkpoint lacks tensor {name!r}")
        t = tensors[name]
        if dtype is not None and t.dtype != dtype:
            raise TranscriptError(f"checkpoint tensor {name!r} has dtype {t.dtype}, expected {dtype}")
        used.add(name)
        return t

    try:
        model = {n: take(f"model.{n}") for n in meta["model"]}
        opt = meta["optimizer"]
        state: dict[int, dict[str, Any]] = {}
        for pid, layout in opt["state"].items():
            entry: dict[str, Any] = {}
            for key, ref in layout.items():
                entry[key] = take(ref["tensor"]) if "tensor" in ref else ref["value"]
            state[int(pid)] = entry
        groups = []
        for g in opt["paramGroups"]:
            groups.append({k: ([int(p) for p in v] if k == "params" else from_json_group_value(v))
                           for k, v in g.items()})
        if meta.get("rng") != RNG_SCHEME:
            raise TranscriptError(f"checkpoint randomness scheme {meta.get('rng')!r} is not {RNG_SCHEME!r}")
        index, step = int(meta["index"]), int(meta["step"])
        scaler = None
        if "scaler" in meta:
            if meta["scaler"] != sorted(SCALER_STATE):
                raise TranscriptError(f"checkpoint scaler state must list {sorted(SCALER_STATE)}")
            scaler = {k: take(f"scaler.{k}", d) for k, d in SCALER_STATE.items()}
            if any(t.shape != () for t in scaler.values()):
                raise TranscriptError("checkpoint scaler state tensors must be 0-d")
    except TranscriptError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TranscriptError(f"checkpoint metadata is malformed: {exc!r}") from exc
    extra = set(tensors) - used
    if extra:
        raise TranscriptError(f"checkpoint has unexpected tensors {sorted(extra)[:5]}")
    return Checkpoint(index, step, model, {"state": state, "param_groups": groups}, digest, scaler)


def read_checkpoint(path: Any, expected_hash: bytes | None = None) -> Checkpoint:
    """Reads and decodes a checkpoint file (never unpickles; see `decode_checkpoint`)."""
    try:
        data = read_buffer(path)
    except OSError as exc:
        raise TranscriptError(f"cannot read checkpoint {path}: {exc}") from exc
    return decode_checkpoint(data, expected_hash)


def copy_optimizer_state(state: dict[str, Any], device: torch.device | None = None) -> dict[str, Any]:
    """A deep copy with fresh tensors: `Optimizer.load_state_dict` may keep the tensors it is given (same dtype
    and device), so the next `step()` would otherwise mutate the loaded checkpoint in place (TOOLCHAIN pitfall)."""

    def copy(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.detach().clone() if device is None else v.detach().to(device, copy=True)
        return v

    return {
        "state": {pid: {k: copy(v) for k, v in entry.items()} for pid, entry in state["state"].items()},
        "param_groups": [dict(g, params=list(g["params"])) for g in state["param_groups"]],
    }
