"""Export: ONNX (run in onnxruntime), TorchScript tracing and torch.compile of a SpatialTransformer.

The core's data-dependent checks (isfinite) are skipped while tracing/exporting
(``_checks.is_tracing``); these tests make sure that export works and that the
exported graph computes what eager PyTorch computes, on an input other than the
one it was traced with.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from stnkit.geometry import TRANSFORMS, get_transform
from stnkit.nn import SpatialTransformer

FAMILIES = list(TRANSFORMS)
OPSET = 18

# torch's own modules still call the deprecated torch.jit.script_method internally
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def make_st(name: str, seed: int = 0, **kw) -> SpatialTransformer:
    """An eval-mode transformer whose parameters depend on the input (non-zero head)."""
    torch.manual_seed(seed)
    st = SpatialTransformer(transform=name, in_channels=3, in_size=(12, 12), **kw).eval()
    with torch.no_grad():
        st.head.weight.normal_(0, 0.05)
    return st


def run_onnx(path, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def export(st, x, path, opset=OPSET, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, tracer notes)
        torch.onnx.export(st, (x,), str(path), opset_version=opset, **kw)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert {o.domain: o.version for o in model.opset_import}[""] == opset


class TestOnnxExport:
    """torch.onnx.export (the default, torch.export-based exporter) -> onnxruntime."""

    @pytest.mark.parametrize("name", FAMILIES)
    def test_family(self, name, tmp_path):
        st = make_st(name)
        export(st, torch.rand(2, 3, 12, 12), tmp_path / "st.onnx", dynamo=True)
        x = torch.rand(2, 3, 12, 12)  # not the example input
        with torch.no_grad():
            ref = st(x)
        assert (ref - x).abs().max() > 1e-3  # the transform is not the identity
        np.testing.assert_allclose(run_onnx(tmp_path / "st.onnx", x), ref.numpy(), atol=1e-5, rtol=0)

    @pytest.mark.parametrize(
        "kw",
        [
            {"mode": "bicubic", "padding_mode": "reflection"},
            {"mode": "nearest"},
            {"align_corners": True, "padding_mode": "border", "out_size": (7, 9)},
        ],
    )
    def test_sampler_options(self, kw, tmp_path):
        st = make_st("projective", seed=1, **kw)
        export(st, torch.rand(2, 3, 12, 12), tmp_path / "st.onnx", dynamo=True)
        x = torch.rand(2, 3, 12, 12)
        with torch.no_grad():
            ref = st(x).numpy()
        np.testing.assert_allclose(run_onnx(tmp_path / "st.onnx", x), ref, atol=1e-5, rtol=0)

    def test_export_leaves_tps_cache_usable(self, tmp_path):
        # regression: exporting ran the TPS grid-weight cache on FakeTensors and stored them,
        # after which every eager forward returned a FakeTensor
        fam = get_transform("tps", grid_size=5)  # an instance no other test has warmed
        st = make_st(fam, seed=2)
        x = torch.rand(2, 3, 12, 12)
        export(st, x, tmp_path / "st.onnx", dynamo=True)
        assert all(type(t) is torch.Tensor for pair in fam._grid_cache.values() for t in pair)
        with torch.no_grad():
            y = st(x)
        assert type(y) is torch.Tensor
        np.testing.assert_allclose(run_onnx(tmp_path / "st.onnx", x), y.numpy(), atol=1e-5, rtol=0)

    @pytest.mark.parametrize(("name", "opset"), [("projective", 18), ("tps", 18), ("affine", 20)])
    def test_legacy_torchscript_exporter(self, name, opset, tmp_path):
        # the deprecated TorchScript exporter maps affine_grid to ONNX AffineGrid, which only
        # exists from opset 20: the matrix families need opset >= 20 there
        st = make_st(name, seed=3)
        export(st, torch.rand(2, 3, 12, 12), tmp_path / "st.onnx", opset=opset, dynamo=False)
        x = torch.rand(2, 3, 12, 12)
        with torch.no_grad():
            ref = st(x).numpy()
        np.testing.assert_allclose(run_onnx(tmp_path / "st.onnx", x), ref, atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")
class TestTorchScriptTrace:
    @pytest.mark.parametrize("name", FAMILIES)
    def test_trace(self, name):
        st = make_st(name)
        traced = torch.jit.trace(st, torch.rand(2, 3, 12, 12))
        x = torch.rand(2, 3, 12, 12)
        with torch.no_grad():
            torch.testing.assert_close(traced(x), st(x))


class TestTorchCompile:
    @pytest.mark.parametrize("name", ["affine", "tps"])
    def test_compile_fullgraph(self, name):
        # fullgraph: the checks must not break the graph (they are skipped while compiling)
        st = make_st(name)
        compiled = torch.compile(st, fullgraph=True)
        for _ in range(2):
            x = torch.rand(2, 3, 12, 12)
            with torch.no_grad():
                torch.testing.assert_close(compiled(x), st(x), atol=1e-5, rtol=0)
