"""Models as ONNX for the ZK circuit: exporting a training claim's final checkpoint, and reading weights back.

The project exports with `torch.onnx.export(dynamo=False, opset_version=20)` (the TorchScript exporter; ezkl's
ONNX reader is tested against it), batch size 1, input named `input`, output `output`. Initializers keep the
`state_dict` names (`layers.0.weight`, `convs.0.bias`, ...), so a verifier can take the weights out of an ONNX
file by name and compare them with a training claim's `finalWeightsHash` (the canonical weights hash).

An ONNX file is only ever parsed as data (protobuf, by `onnx` and by ezkl), never executed as Python; files from
the network are size-checked first and may not reference external data files.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from registry.core.hashing import as_hash, weights_hash

if TYPE_CHECKING:
    from torch import nn

OPSET = 20
INPUT_NAME, OUTPUT_NAME = "input", "output"
MAX_ONNX_BYTES = 256 << 20
MAX_INPUT_BYTES = 64 << 20


class ExportError(ValueError):
    """A model that cannot be exported or an ONNX file that is not what the caller needs; one-line message."""


def family_input_shape(family: str, args: Mapping[str, Any]) -> tuple[int, ...]:
    """The single-example input shape of a built-in family (batch dimension 1)."""
    from registry.spec.models import normalize_args

    a = normalize_args(family, args)
    if family == "mlp":
        return (1, int(a["in_features"]))
    if family == "cnn":
        return (1, int(a["in_channels"]), int(a["image_size"]), int(a["image_size"]))
    if family == "resnet20":
        return (1, int(a["in_channels"]), 32, 32)
    raise ExportError(f"no known input shape for family {family!r}: export the model to ONNX yourself")


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """Exports `model` (in eval mode, float32) to `path` with the project's fixed exporter settings."""
    import torch

    path = Path(path)
    model = model.eval().to(torch.float32)
    example = torch.zeros(input_shape, dtype=torch.float32)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True)
    return path


@dataclass(frozen=True)
class ExportedModel:
    """An ONNX file made from a training transcript's final checkpoint, and what ties it to the claim."""

    onnx_path: Path
    family: str
    args: dict[str, Any]
    input_shape: tuple[int, ...]
    final_weights_hash: bytes

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "args": self.args, "inputShape": list(self.input_shape),
                "finalWeightsHash": "0x" + self.final_weights_hash.hex()}


def model_from_weights(family: str, args: Mapping[str, Any], weights: Mapping[str, Any]) -> nn.Module:
    """A family model (rebuilt from the project's registry, never from transcript code) holding `weights`."""
    import torch

    from registry.spec.models import GLOBAL_RNG_LOCK, build_model

    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        model = build_model(family, args)
    state = {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.array(v, copy=True))
             for k, v in weights.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ExportError(f"weights do not fit family {family!r}: {str(exc).splitlines()[0]}") from None
    return model.eval()


def export_transcript(transcript_dir: str | Path, out_path: str | Path) -> ExportedModel:
    """Exports the final checkpoint of a local transcript to ONNX, after checking it against the manifest's
    `finalWeightsHash` (so the ONNX weights are exactly the training claim's final weights)."""
    from registry.pol.checkpoint import TranscriptError, read_checkpoint
    from registry.pol.transcript import load_manifest

    tdir = Path(transcript_dir)
    try:
        manifest = load_manifest(tdir)
        last = manifest["checkpoints"][-1]
        final = read_checkpoint(tdir / last["path"], as_hash(last["ckptHash"]))
        spec = manifest["config"]["model"]
        family, args = str(spec["family"]), dict(spec["args"])
    except (TranscriptError, KeyError, TypeError) as exc:
        raise ExportError(f"cannot read the final checkpoint of {tdir}: {exc}") from None
    expected = as_hash(manifest["finalWeightsHash"])
    if weights_hash(final.model) != expected:
        raise ExportError(f"{tdir}: the last checkpoint's weights do not give the manifest's finalWeightsHash")
    shape = family_input_shape(family, args)
    export_onnx(model_from_weights(family, args, final.model), shape, out_path)
    return ExportedModel(Path(out_path), family, args, shape, expected)


# ---------------------------------------------------------------------------------------------------------
# Reading ONNX files (hostile input)
# ---------------------------------------------------------------------------------------------------------


def load_onnx(path: str | Path) -> Any:
    """Parses an ONNX file as data; refuses oversized files and external-data references anywhere in it."""
    import onnx

    from registry.core.safejson import JsonError, read_bounded

    p = Path(path)
    try:
        data = read_bounded(p, MAX_ONNX_BYTES, what=p.name)
    except JsonError as exc:
        raise ExportError(str(exc)) from None
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types; all mean "not ONNX"
        raise ExportError(f"{p.name} is not an ONNX model: {type(exc).__name__}") from None
    where = external_data_reference(model)
    if where is not None:
        raise ExportError(f"{p.name}: {where} references external data")
    return model


def external_data_reference(model: Any) -> str | None:
    """Where a model refers to external data, or None: every tensor of every graph (the main graph, the
    subgraphs in If/Loop/Scan attributes, functions), as initializers, sparse initializers and attributes of
    any node (Constant's `value`, `sparse_value`, ...). Walks iteratively (no recursion on nested graphs)."""
    import onnx

    def external(t: Any) -> bool:
        return bool(t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data))

    def sparse_external(s: Any) -> bool:
        return external(s.values) or external(s.indices)

    graphs: list[tuple[str, Any]] = [("graph", model.graph)]
    nodes: list[tuple[str, Any]] = []
    for fn in model.functions:
        nodes.extend((f"function {fn.name!r} node {n.name or n.op_type!r}", n) for n in fn.node)
    while graphs or nodes:
        if graphs:
            gname, g = graphs.pop()
            for init in g.initializer:
                if external(init):
                    return f"{gname} initializer {init.name!r}"
            for sp in g.sparse_initializer:
                if sparse_external(sp):
                    return f"{gname} sparse initializer {sp.values.name!r}"
            nodes.extend((f"{gname} node {n.name or n.op_type!r}", n) for n in g.node)
            continue
        nname, node = nodes.pop()
        for attr in node.attribute:
            label = f"{nname} attribute {attr.name!r}"
            if attr.HasField("t") and external(attr.t):
                return label
            if any(external(t) for t in attr.tensors):
                return label
            if attr.HasField("sparse_tensor") and sparse_external(attr.sparse_tensor):
                return label
            if any(sparse_external(t) for t in attr.sparse_tensors):
                return label
            if attr.HasField("g"):
                graphs.append((f"{label} subgraph", attr.g))
            graphs.extend((f"{label} subgraph", sub) for sub in attr.graphs)
    return None


def onnx_input_shape(path: str | Path) -> tuple[int, ...]:
    """The static shape of the model's single graph input (the project exports batch 1, static shapes)."""
    model = load_onnx(path)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ExportError(f"the model must have exactly one input, found {len(inputs)}")
    dims = []
    for d in inputs[0].type.tensor_type.shape.dim:
        if not d.HasField("dim_value") or d.dim_value < 1:
            dims.append(1)  # a symbolic (batch) dimension: prove one example at a time
        else:
            dims.append(int(d.dim_value))
    return tuple(dims)


def onnx_weights(path: str | Path, names: Mapping[str, tuple[tuple[int, ...], str]]) -> dict[str, np.ndarray]:
    """The initializers named in `names` ({name: (shape, dtype name)}), checked for shape and dtype."""
    from onnx import numpy_helper

    model = load_onnx(path)
    inits = {i.name: i for i in model.graph.initializer}
    out: dict[str, np.ndarray] = {}
    for name, (shape, dtype) in names.items():
        if name not in inits:
            raise ExportError(f"the ONNX model has no initializer {name!r}")
        arr = numpy_helper.to_array(inits[name])
        if tuple(arr.shape) != tuple(shape) or arr.dtype.name != dtype:
            raise ExportError(f"ONNX initializer {name!r} is {arr.dtype.name}{list(arr.shape)}, "
                              f"expected {dtype}{list(shape)}")
        out[name] = np.ascontiguousarray(arr)
    return out


def family_layout(family: str, args: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    """{state_dict name: (shape, dtype)} of a family model in float32, the layout its ONNX must carry."""
    import torch

    from registry.spec.models import GLOBAL_RNG_LOCK, build_model

    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        model = build_model(family, args)
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}


def onnx_weights_hash(path: str | Path, family: str, args: Mapping[str, Any]) -> tuple[bytes, dict[str, np.ndarray]]:
    """Canonical weights hash of the family's tensors as stored in an ONNX file, and the tensors."""
    weights = onnx_weights(path, family_layout(family, args))
    return weights_hash(weights), weights


def input_json(values: Any, shape: tuple[int, ...]) -> dict[str, Any]:
    """ezkl's input file for one example: {"input_data": [flat list]}; the element count must fit `shape`."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    need = int(np.prod(shape))
    if flat.size != need:
        raise ExportError(f"the input has {flat.size} values, the model takes {need} (shape {list(shape)})")
    if not np.all(np.isfinite(flat)):
        raise ExportError("the input holds NaN or infinite values")
    return {"input_data": [[float(v) for v in flat]]}


def read_input(path: str | Path) -> Any:
    """An input file: `.npy` (never unpickled), or JSON — ezkl's {"input_data": [...]} or a (nested) list."""
    from registry.core.safejson import JsonError, load_file

    p = Path(path)
    try:
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False)
        data = load_file(p, what=f"input {p.name}", max_bytes=MAX_INPUT_BYTES)
    except JsonError as exc:
        raise ExportError(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read input {p}: {exc}") from None
    if isinstance(data, dict):
        if "input_data" not in data:
            raise ExportError(f"{p}: a JSON input object needs an 'input_data' key")
        data = data["input_data"]
    return data
