"""Model families (build, arguments, declared initializers, plugins) and published datasets (roots, proofs)."""

from __future__ import annotations

import pickle
import shutil
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import torch

from registry.core.hashing import sha256, sha256_file, to_hex
from registry.core.merkle import EXAMPLE_LEAF_TYPES, StandardMerkleTree, example_leaf, verify
from registry.spec import models
from registry.spec.datasets import (
    Dataset,
    DatasetError,
    build_builtin,
    build_dataset,
    canonical_example_bytes,
    example_hash,
    verify_membership,
)
from registry.spec.models import ModelFamilyError, UnknownFamilyError, build_model, get_family, init_spec

# datasetRoot of the built-in digits set: pins the example encoding and the sklearn data together.
DIGITS_ROOT = "0xd2c9d26ced5e48ee859bf63455a87b9957dca4a29b984b9906ac9b4020c3ba00"


# --- model families -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "args", "shape"),
    [
        ("mlp", {"in_features": 64, "hidden": [128], "out_features": 10, "dropout": 0.1}, (4, 1, 8, 8)),
        ("mlp", {"in_features": 16, "out_features": 4}, (4, 16)),
        ("cnn", {}, (4, 1, 8, 8)),
        ("cnn", {"in_channels": 3, "image_size": 32, "channels": [8, 16, 32], "hidden": 0}, (4, 3, 32, 32)),
        ("resnet20", {"width": 4}, (4, 3, 32, 32)),
        ("resnet20", {"width": 4, "in_channels": 1}, (4, 1, 8, 8)),
    ],
)
def test_family_builds_and_runs(family: str, args: dict, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_model(family, args)
    # Same seed, same weights: verifiers rebuild bit-identical models.
    torch.manual_seed(0)
    again = build_model(family, args)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))
    out = model(torch.randn(*shape))
    expected = args.get("out_features", args.get("num_classes", 10))
    assert out.shape == (shape[0], expected)


def test_resnet20_is_the_standard_size() -> None:
    model = build_model("resnet20", {})
    assert sum(p.numel() for p in model.parameters()) == 269_722  # He et al.'s 0.27M
    assert any(n.endswith("running_mean") for n in model.state_dict())


def test_unknown_family_and_bad_arguments() -> None:
    with pytest.raises(UnknownFamilyError, match=r"unknown model family 'transformer'.*plugin"):
        get_family("transformer")
    with pytest.raises(UnknownFamilyError, match="invalid"):
        get_family("../evil")
    with pytest.raises(ModelFamilyError, match="unknown arguments"):
        build_model("mlp", {"in_features": 4, "out_features": 2, "activation": "gelu"})
    with pytest.raises(ModelFamilyError, match="missing required"):
        build_model("mlp", {"in_features": 4})
    with pytest.raises(ModelFamilyError, match="integer"):
        build_model("mlp", {"in_features": 4.5, "out_features": 2})
    with pytest.raises(ModelFamilyError, match="dropout"):
        build_model("mlp", {"in_features": 4, "out_features": 2, "dropout": 1.5})
    with pytest.raises(ModelFamilyError, match="too small"):
        build_model("cnn", {"image_size": 4, "channels": [4, 4, 4]})
    assert models.normalize_args("mlp", {"in_features": 4, "out_features": 2}) == {
        "in_features": 4, "hidden": [], "out_features": 2, "dropout": 0.0}


@pytest.mark.parametrize(
    ("family", "args"),
    [("mlp", {"in_features": 64, "hidden": [256, 128], "out_features": 10}), ("cnn", {}), ("resnet20", {})],
)
def test_declared_initializer_matches_fresh_models(family: str, args: dict) -> None:
    torch.manual_seed(1)
    model = build_model(family, args)
    spec = init_spec(family, args, model)
    assert set(spec) == set(model.state_dict())
    for name, t in model.state_dict().items():
        d = models.ks_statistic(t, spec[name])
        if isinstance(spec[name], models.Constant):
            assert d == 0.0, name
        elif t.numel() >= 100:
            assert models.ks_pvalue(d, t.numel()) > 1e-4, (name, spec[name], d)


def test_initializer_check_catches_a_wrong_init() -> None:
    torch.manual_seed(2)
    model = build_model("mlp", {"in_features": 64, "hidden": [128], "out_features": 10})
    spec = init_spec("mlp", {"in_features": 64, "hidden": [128], "out_features": 10})
    w = model.layers[0].weight.detach()
    assert spec["layers.0.weight"] == models.Uniform(-1 / 8, 1 / 8)  # 1/sqrt(fan_in=64)
    assert models.ks_pvalue(models.ks_statistic(w * 3, spec["layers.0.weight"]), w.numel()) < 1e-6
    assert models.ks_pvalue(models.ks_statistic(torch.randn_like(w) * 0.05, spec["layers.0.weight"]),
                            w.numel()) < 1e-6
    rspec = init_spec("resnet20", {})
    assert rspec["conv1.weight"] == models.Normal(0.0, (2 / 27) ** 0.5)
    assert rspec["bn1.running_var"] == models.Constant(1.0)


PLUGIN_FAMILY = models.ModelFamily(
    name="tiny-linear",
    args={"n": models.Arg("int", default=3, minimum=1)},
    build=lambda a: torch.nn.Linear(a["n"], 2),
    init_spec=lambda m, _a: models.default_torch_init(m),
)
NOT_A_FAMILY = object()


def test_plugins_load_only_on_request_and_never_shadow_builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    requested: list[str] = []
    eps = {
        "tiny-linear": EntryPoint("tiny-linear", f"{__name__}:PLUGIN_FAMILY", models.ENTRY_POINT_GROUP),
        "bogus": EntryPoint("bogus", f"{__name__}:NOT_A_FAMILY", models.ENTRY_POINT_GROUP),
        "mlp": EntryPoint("mlp", "module_that_does_not_exist:X", models.ENTRY_POINT_GROUP),
    }

    def fake(name: str) -> list[EntryPoint]:
        requested.append(name)
        return [eps[name]] if name in eps else []

    monkeypatch.setattr(models, "_plugin_entry_points", fake)
    monkeypatch.setattr(models, "_registered", {})
    monkeypatch.setattr(models, "_plugins_loaded", {})
    monkeypatch.delenv(models.PLUGINS_ENV, raising=False)
    # Not listed by the operator: never looked up, let alone imported.
    with pytest.raises(UnknownFamilyError, match=models.PLUGINS_ENV):
        get_family("tiny-linear")
    assert requested == []
    monkeypatch.setenv(models.PLUGINS_ENV, "tiny-linear, bogus,mlp")
    assert get_family("mlp") is models.MLP_FAMILY and requested == []  # built-in wins; plugin never imported
    fam = get_family("tiny-linear")
    assert fam is PLUGIN_FAMILY and requested == ["tiny-linear"]
    assert build_model("tiny-linear", {"n": 5}).in_features == 5
    assert models.family_origin("tiny-linear") == {"family": "tiny-linear", "origin": "plugin",
                                                   "plugin": f"{__name__}:PLUGIN_FAMILY"}
    assert models.family_origin("mlp")["origin"] == "builtin"
    with pytest.raises(ModelFamilyError, match="did not provide a ModelFamily"):
        get_family("bogus")
    with pytest.raises(UnknownFamilyError):
        get_family("nothing-installed")
    with pytest.raises(ModelFamilyError, match="already defined"):
        models.register_family(models.MLP_FAMILY)


# --- datasets -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return build_builtin("digits", tmp_path_factory.mktemp("digits"))


def test_digits_builtin(digits: Dataset) -> None:
    assert len(digits) == 1797 and digits.feature_shape == (1, 8, 8) and digits.num_classes == 10
    assert to_hex(digits.root) == DIGITS_ROOT
    x, y = digits.batch([0, 1, 1796])
    assert x.dtype == torch.float32 and x.shape == (3, 1, 8, 8) and y.tolist() == [0, 1, 8]
    assert float(x.max()) <= 1.0


def test_dataset_build_is_byte_deterministic(digits: Dataset, tmp_path: Path) -> None:
    again = build_builtin("digits", tmp_path / "again")
    assert again.root == digits.root
    for f in sorted(p.relative_to(digits.path) for p in digits.path.rglob("*") if p.is_file()):
        assert sha256_file(digits.path / f) == sha256_file(again.path / f), f
    a = build_builtin("synthetic", tmp_path / "s1", n=200, features=5, seed=7)
    b = build_builtin("synthetic", tmp_path / "s2", n=200, features=5, seed=7)
    c = build_builtin("synthetic", tmp_path / "s3", n=200, features=5, seed=8)
    assert a.root == b.root != c.root
    assert a.feature_shape == (5,) and len(a) == 200


def test_example_encoding_vector() -> None:
    x = np.array([[1.0, -2.0]], dtype=np.float32)
    raw = canonical_example_bytes(x, 3)
    expected = (b"proofreg-example/1\x00float32\x00" + (2).to_bytes(8, "little") + (1).to_bytes(8, "little")
                + (2).to_bytes(8, "little") + x.astype("<f4").tobytes() + (3).to_bytes(8, "little"))
    assert raw == expected
    assert example_hash(x, 3) == sha256(expected)
    assert canonical_example_bytes(x.astype(">f4"), 3) == raw  # byte order of the array does not matter
    assert canonical_example_bytes(torch.from_numpy(x), 3) == raw


def test_membership_proofs(digits: Dataset) -> None:
    tree = StandardMerkleTree.of([(i, digits.example_hash(i)) for i in range(len(digits))], EXAMPLE_LEAF_TYPES)
    assert tree.root == digits.root
    for i in (0, 511, 512, 1796):
        feats, label = digits.example(i, check=True)
        proof = digits.proof(i)
        assert verify(digits.root, example_leaf(i, example_hash(feats, label)), proof)
        assert verify_membership(to_hex(digits.root), i, feats, label, [to_hex(p) for p in proof])
        assert digits.verify_example(i, feats, label)
        assert not digits.verify_example(i, feats, (label + 1) % 10)
        other = feats.copy()
        other.flat[0] += 1
        assert not verify_membership(digits.root, i, other, label, proof)
        assert not verify_membership(digits.root, i + 1 if i < 1796 else 0, feats, label, proof)


def test_fetching_touches_only_needed_shards(tmp_path: Path) -> None:
    x, y = np.arange(40, dtype=np.float32).reshape(10, 2, 2), np.arange(10) % 3
    ds = build_dataset(tmp_path / "d", "tiny", x, y, shard_size=4)
    assert len(ds.manifest["shards"]) == 3 and ds.shards_for([0, 9]) == [0, 2]
    (tmp_path / "d" / "shards" / "000001.x.npy").unlink()  # shard 1 missing, e.g. not fetched
    fx, fy = ds.examples([9, 0, 3])
    assert fy.tolist() == [0, 0, 0] and np.array_equal(fx[0], x[9])
    with pytest.raises(DatasetError):
        ds.example(5)


def test_tampered_or_hostile_shards_fail_cleanly(digits: Dataset, tmp_path: Path) -> None:
    d = tmp_path / "copy"
    shutil.copytree(digits.path, d)
    arr = np.load(d / "shards" / "000001.x.npy")
    arr[0, 0, 0, 0] += 1
    np.save(d / "shards" / "000001.x.npy", arr)
    ds = Dataset.load(d)
    ds.example(0)
    with pytest.raises(DatasetError, match="featuresHash"):
        ds.example(600)
    unchecked = Dataset.load(d, verify_shards=False)
    with pytest.raises(DatasetError, match="does not match its hash"):
        unchecked.example(512, check=True)

    marker = tmp_path / "pwned"
    (d / "shards" / "000002.x.npy").write_bytes(pickle.dumps(_Exploit(str(marker))))
    hostile = Dataset.load(d, verify_shards=False)
    with pytest.raises(DatasetError):
        hostile.example(1100)
    assert not marker.exists()


def test_manifest_checks(digits: Dataset, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not the expected"):
        Dataset.load(digits.path, expected_root=b"\x01" * 32)
    d = tmp_path / "copy"
    shutil.copytree(digits.path, d)
    text = (d / "dataset.json").read_text()
    (d / "dataset.json").write_text(text.replace('"shards/000000.x.npy"', '"../../etc/passwd"'))
    with pytest.raises(DatasetError, match="bad shard path"):
        Dataset.load(d)
    (d / "dataset.json").write_text(text.replace(to_hex(digits.example_hash(5)), "0x" + "11" * 32))
    with pytest.raises(DatasetError, match="do not give its datasetRoot"):
        Dataset.load(d)


class _Exploit:
    """Unpickling this would create a marker file; nothing here may ever unpickle it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))
