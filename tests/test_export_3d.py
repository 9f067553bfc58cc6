"""export_model of a 3-D SpatialTransformer: TorchScript, and ONNX (GridSample on 5-D input) in onnxruntime.

Found with torch 2.13, onnx 1.23, onnxruntime 1.32 (CPU): the exporter writes opset 20
by default, whose GridSample is N-D, and onnxruntime's CPU kernel runs it on 5-D input
(max difference to PyTorch ~5e-7). Every export is run again here on a batch size
export_model neither exported with nor checked.
"""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
import torch

from stnkit import export_model
from stnkit.nn import SpatialTransformer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

UNSEEN_BATCH = 5


def model(transform="affine", **kw):
    torch.manual_seed(0)
    st = SpatialTransformer(transform=transform, in_channels=1, in_size=(4, 6, 8), **kw).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-zero head weights: the warp depends on the input
        st.head.weight.copy_(torch.randn(st.head.weight.shape, generator=gen) * 0.05)
    return st


def rerun(info, x):
    if info["format"] == "onnx":
        sess = ort.InferenceSession(info["path"], providers=["CPUExecutionProvider"])
        return torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    return torch.jit.load(info["path"])(x)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_3d_affine_transformer_exports_and_matches_pytorch(fmt, tmp_path):
    st = model(out_size=(3, 5, 7))
    x = torch.rand(2, 1, 4, 6, 8)
    info = export_model(st, x, tmp_path / f"st3d.{fmt}", fmt)
    assert info["batch_sizes_checked"] == [1, 3, 7] and info["max_abs_diff"] < 1e-4
    xb = torch.rand(UNSEEN_BATCH, 1, 4, 6, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = st(xb)
    got = rerun(info, xb)
    assert got.shape == (UNSEEN_BATCH, 1, 3, 5, 7) and (got - ref).abs().max() < 1e-4
    with torch.no_grad():  # the warp is not the identity: the sampler was really exercised
        assert (ref - torch.nn.functional.interpolate(xb, size=(3, 5, 7), mode="trilinear")).abs().max() > 1e-3
    if fmt == "onnx":
        proto = onnx.load(info["path"])
        assert info["opset"] >= 20 and any(n.op_type == "GridSample" for n in proto.graph.node)
        assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a dynamic batch


def test_3d_projective_transformer_exports_to_onnx(tmp_path):
    info = export_model(model("projective"), torch.rand(2, 1, 4, 6, 8), tmp_path / "p.onnx")
    assert info["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("opset", [16, 18])
def test_onnxruntime_also_runs_the_5d_node_below_opset_20(opset, tmp_path):
    """As export.py documents: opsets 16-19 define GridSample on 4-D only, yet onnxruntime's CPU kernel runs 5-D."""
    info = export_model(model(), torch.rand(2, 1, 4, 6, 8), tmp_path / "o.onnx", opset=opset)
    assert info["opset"] == opset and info["max_abs_diff"] < 1e-4
