"""stnkit.export.export_model: ONNX and TorchScript with a dynamic batch, checked against PyTorch.

Every export is run here again, independently of export_model's own check, on a
batch size that export_model neither exported with nor checked, and compared with
eager PyTorch.
"""

from __future__ import annotations

import re
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import stnkit
from stnkit.export import MIN_GRID_SAMPLE_OPSET, export_model
from stnkit.models import create
from stnkit.nn import SeriesTransformers, SpatialTransformer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

UNSEEN_BATCH = 5  # export with 2, check with 1, 3, 7: 5 is new to both


def perturb(st: SpatialTransformer, std: float = 0.05, seed: int = 0) -> None:
    """Non-zero head weights: the warp depends on the input (the identity would hide a broken sampler)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        st.head.weight.copy_(torch.randn(st.head.weight.shape, generator=gen) * std)


def st_cnn(transform: str) -> nn.Module:
    torch.manual_seed(0)
    model = create("st-cnn", in_size=42, transform=transform)
    perturb(model.transformer)
    return model


def st_rgb_net(**kw) -> nn.Module:
    """A spatial transformer in front of a small 3-channel conv net."""
    torch.manual_seed(1)
    st = SpatialTransformer(transform="affine", in_channels=3, in_size=16, **kw)
    perturb(st, 0.1, seed=1)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4)
    )
    return nn.Sequential(st, net)


MODELS = {
    "st-cnn-affine": (lambda: st_cnn("affine"), (1, 42, 42)),
    "st-cnn-projective": (lambda: st_cnn("projective"), (1, 42, 42)),
    "st-cnn-tps": (lambda: st_cnn("tps"), (1, 42, 42)),
    "cnn": (lambda: create("cnn"), (1, 28, 28)),
    "st-rgb-net": (st_rgb_net, (3, 16, 16)),
}


def rerun(info: dict, x: torch.Tensor) -> torch.Tensor:
    if info["format"] == "onnx":
        sess = ort.InferenceSession(info["path"], providers=["CPUExecutionProvider"])
        return torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    return torch.jit.load(info["path"])(x)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", MODELS)
def test_export_matches_pytorch(name, fmt, tmp_path):
    make, shape = MODELS[name]
    model = make().train()  # export_model must switch to eval and back
    path = tmp_path / f"{name}.{fmt}"
    info = export_model(model, torch.rand(2, *shape), path, format=fmt)
    assert model.training
    assert info["format"] == fmt and info["path"] == str(path) and path.is_file()
    assert info["export_batch_size"] == 2 and info["batch_sizes_checked"] == [1, 3, 7]
    assert info["max_abs_diff"] < 1e-4
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.data"))  # one file, no leftovers
    if fmt == "onnx":
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
        assert info["opset"] == {o.domain: o.version for o in proto.opset_import}[""]
    else:
        assert info["opset"] is None
    x = torch.rand(UNSEEN_BATCH, *shape, generator=torch.Generator().manual_seed(9))
    model.eval()
    with torch.no_grad():
        ref = model(x)
    if name.startswith("st-"):  # the transformer is not the identity, so the warp is exercised
        st = model.transformer if hasattr(model, "transformer") else model[0]
        with torch.no_grad():
            assert (st(x) - x).abs().max() > 1e-3
    got = rerun(info, x)
    assert got.shape == ref.shape
    assert (got - ref).abs().max() < 1e-4


def series_net() -> nn.Module:
    torch.manual_seed(2)
    a = SpatialTransformer(transform="attention", in_channels=1, in_size=16, out_size=12)
    b = SpatialTransformer(transform="tps", in_channels=1, in_size=12)
    perturb(a, seed=2)
    perturb(b, seed=3)
    return SeriesTransformers(a, b)


def ic_stn() -> nn.Module:
    torch.manual_seed(3)
    model = create("ic-stn", in_size=16, transform="projective", ic_steps=2)
    perturb(model.transformer, seed=4)
    return model


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("make", [series_net, ic_stn])
def test_series_and_inverse_compositional_export(make, fmt, tmp_path):
    # regression: tracing the IC-STN failed, step_params turned the input size into a tuple of 0-dim tensors
    model = make()
    info = export_model(model, torch.rand(2, 1, 16, 16), tmp_path / "m", format=fmt)
    x = torch.rand(UNSEEN_BATCH, 1, 16, 16)
    with torch.no_grad():
        assert (rerun(info, x) - model.eval()(x)).abs().max() < 1e-4


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("transform", ["translation", "attention", "similarity", "projective", "tps"])
def test_every_family_and_padding_exports_to_onnx(transform, padding_mode, tmp_path):
    torch.manual_seed(0)
    st = SpatialTransformer(transform=transform, in_channels=3, in_size=12, padding_mode=padding_mode)
    perturb(st, 0.2)  # large enough that points read the padding
    info = export_model(st, torch.rand(2, 3, 12, 12), tmp_path / "st.onnx", opset=MIN_GRID_SAMPLE_OPSET)
    assert info["opset"] == MIN_GRID_SAMPLE_OPSET and info["max_abs_diff"] < 1e-4
    x = torch.rand(UNSEEN_BATCH, 3, 12, 12)
    with torch.no_grad():
        np.testing.assert_allclose(rerun(info, x).numpy(), st.eval()(x).numpy(), atol=1e-4, rtol=0)


def test_opset_below_grid_sample_is_refused_in_one_line(tmp_path):
    st = SpatialTransformer(in_channels=1, in_size=8)
    path = tmp_path / "st.onnx"
    with pytest.raises(ValueError, match=r"^opset must be >= 16 .*GridSample.*got opset=15$"):
        export_model(st, torch.rand(2, 1, 8, 8), path, opset=15)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_example_batch_of_one_still_gives_a_dynamic_batch(tmp_path):
    info = export_model(st_rgb_net(), torch.rand(1, 3, 16, 16), tmp_path / "m.onnx")
    assert info["export_batch_size"] == 2 and info["max_abs_diff"] < 1e-4
    assert rerun(info, torch.rand(UNSEEN_BATCH, 3, 16, 16)).shape == (UNSEEN_BATCH, 4)


def test_overwrites_atomically_and_keeps_the_old_file_on_a_failed_check(tmp_path):
    path = tmp_path / "m.pt"
    path.write_bytes(b"old")
    export_model(create("cnn"), torch.rand(2, 1, 28, 28), path, "torchscript")
    assert path.read_bytes() != b"old"
    before = path.read_bytes()
    # a mismatch: tracing freezes the branch the example took (sum > 100), the check's inputs take the other
    with pytest.raises(RuntimeError, match=r"differs from PyTorch by .* was not written$"):
        export_model(Branchy(), torch.full((2, 3), 100.0), path, "torchscript", batch_sizes=[2])
    assert path.read_bytes() == before and not list(tmp_path.glob("*.part"))


class Branchy(nn.Module):
    """A data-dependent branch, which tracing freezes (constant examples are checked on inputs in [0, 1))."""

    def forward(self, x):
        return x * 2 if float(x.sum()) > 100 else x - 1


class FixedBatch(nn.Module):
    """Reads the batch size as a Python int: tracing freezes it, torch.export specialises it."""

    def forward(self, x):
        return x.reshape(int(x.shape[0]), -1).sum(1)


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("onnx", r"^ONNX export of FixedBatch kept a fixed batch size for input 'input': forward fixes"),
        ("torchscript", r"^the exported torchscript model failed at batch size 1 \(is the batch dimension fixed"),
    ],
)
def test_a_fixed_batch_is_a_one_line_error(fmt, message, tmp_path):
    with pytest.raises(RuntimeError, match=message) as err:
        export_model(FixedBatch(), torch.rand(2, 3), tmp_path / "m", format=fmt)
    assert "\n" not in str(err.value) and not list(tmp_path.iterdir())


def test_a_model_failing_at_a_check_batch_size_is_named(tmp_path):
    class Pairs(nn.Module):
        def forward(self, x):
            return x.reshape(-1, 2, 3).sum(1)  # needs an even batch

    with pytest.raises(RuntimeError, match=r"^the PyTorch model itself failed at batch size 1: RuntimeError: "):
        export_model(Pairs(), torch.rand(2, 3), tmp_path / "m.pt", "torchscript")
    assert (
        export_model(Pairs(), torch.rand(2, 3), tmp_path / "m.pt", "torchscript", batch_sizes=[4, 6])["max_abs_diff"]
        == 0
    )


def test_check_false_skips_the_comparison(tmp_path):
    info = export_model(Branchy(), torch.ones(2, 3), tmp_path / "b.pt", "torchscript", check=False)
    assert info["max_abs_diff"] is None and info["batch_sizes_checked"] == []


def test_tuple_outputs_and_inputs(tmp_path):
    class Two(nn.Module):
        def forward(self, a, b):
            return a + b.sum(1, keepdim=True), a * 2

    info = export_model(Two(), (torch.rand(2, 3), torch.rand(2, 4)), tmp_path / "two.onnx")
    assert info["max_abs_diff"] < 1e-5


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"format": "tflite"}, ValueError, "format must be one of 'onnx', 'torchscript', got 'tflite'"),
        ({"model": "cnn"}, TypeError, "model must be a torch.nn.Module, got str"),
        ({"example": [1, 2]}, TypeError, "example must be a torch.Tensor or a tuple of them, got list"),
        ({"example": torch.rand(0, 3)}, ValueError, "example[0] must have a non-empty batch dimension first"),
        ({"opset": 18, "format": "torchscript"}, ValueError, "opset only applies to format='onnx'"),
        ({"opset": "18"}, ValueError, "opset must be a positive int or None, got '18'"),
        ({"batch_sizes": [0]}, ValueError, "batch_sizes must be a non-empty sequence of positive ints, got [0]"),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs, exc, message, tmp_path):
    args = {"model": nn.Linear(3, 2), "example": torch.rand(2, 3), "path": tmp_path / "m.onnx"} | kwargs
    with pytest.raises(exc, match="^" + re.escape(message)) as err:
        export_model(**args)
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())


def test_a_directory_path_is_refused(tmp_path):
    with pytest.raises(
        ValueError, match=rf"^path must be a file to write, got the directory '{re.escape(str(tmp_path))}'$"
    ):
        export_model(nn.Linear(3, 2), torch.rand(2, 3), tmp_path)


@pytest.mark.parametrize(("missing", "check"), [("onnx", False), ("onnxscript", False), ("onnxruntime", True)])
def test_missing_onnx_packages_are_named(missing, check, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, missing, None)  # import raises ImportError
    with pytest.raises(ImportError, match=rf"needs the '{missing}' package, which is not installed") as err:
        export_model(nn.Linear(3, 2), torch.rand(2, 3), tmp_path / "m.onnx", check=check)
    assert "\n" not in str(err.value) and not list(tmp_path.iterdir())


def test_onnxruntime_is_not_needed_without_the_check(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    info = export_model(nn.Linear(3, 2), torch.rand(2, 3), tmp_path / "m.onnx", check=False)
    assert (tmp_path / "m.onnx").is_file() and info["max_abs_diff"] is None


def test_exported_from_the_package():
    assert stnkit.export_model is export_model
