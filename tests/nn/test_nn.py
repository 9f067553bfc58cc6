"""stnkit.nn: one class per public module or function.

As in test_geometry.py, each class has the same small set of checks where they apply:
smoke (shapes, dtypes, devices), exceptions (one-line messages naming the argument),
gradcheck in float64, export (ONNX in onnxruntime, TorchScript tracing, torch.compile),
and regressions for the identity at initialisation and for the convention. References
are computed without stnkit (F.affine_grid/grid_sample, pooling, matrices written out
from the documented parameterisations).
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck

import stnkit
from stnkit.geometry import TRANSFORMS, get_transform
from stnkit.models.backbones import resnet18
from stnkit.nn import (
    IdentityHead,
    ParallelTransformers,
    SeriesTransformers,
    SpatialTransformer,
    STClassifier,
    default_loc_size,
    default_localization,
    with_transformer,
)

FAMILIES = list(TRANSFORMS)
F64 = torch.float64
ATOL = 5e-6  # float32 sampling at the identity (affine_grid's own rounding; see test_geometry)
OPSET = 18

# torch's own modules still call the deprecated torch.jit.script_method internally
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def esc(s: str) -> str:
    return re.escape(s)


def perturb_head(st: SpatialTransformer, std: float = 0.05, seed: int = 0) -> None:
    """Give the head non-zero weights so the transform depends on the input."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        st.head.weight.copy_(torch.randn(st.head.weight.shape, generator=gen) * std)


def rand(*shape: int, seed: int = 0, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Uniform [0, 1) drawn on the CPU, so every device sees the same values."""
    return torch.rand(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed)).to(device)


def reference_matrix(name: str, p: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) output->input matrix written from the documented parameterisations."""
    b = p.shape[0]
    m = torch.eye(3, dtype=p.dtype, device=p.device).repeat(b, 1, 1)
    if name == "affine":
        m[:, :2] = p.view(b, 2, 3)
    elif name == "projective":
        m.view(b, 9)[:, :8] = p
    elif name == "similarity":
        s, a, tx, ty = p.unbind(1)
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = s * a.cos(), -s * a.sin(), s * a.sin(), s * a.cos()
        m[:, 0, 2], m[:, 1, 2] = tx, ty
    else:
        raise AssertionError(name)
    return m


def sample_with_matrix(x: torch.Tensor, m: torch.Tensor, out_size) -> torch.Tensor:
    """Sample x through a homogeneous matrix, computed without stnkit."""
    h, w = out_size
    ys = (2 * torch.arange(h, dtype=m.dtype, device=m.device) + 1) / h - 1
    xs = (2 * torch.arange(w, dtype=m.dtype, device=m.device) + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx, gy, torch.ones_like(gx)], -1).view(1, -1, 3)
    q = pts @ m.transpose(1, 2)
    grid = (q[..., :2] / q[..., 2:]).view(-1, h, w, 2)
    return F.grid_sample(x, grid.to(x.dtype), align_corners=False)


def check_gradients(fn, *inputs: torch.Tensor) -> None:
    """float64 gradcheck; CUDA's grid_sample backward adds atomically, so re-runs may differ by rounding."""
    on_cuda = any(t.is_cuda for t in inputs)
    assert gradcheck(fn, inputs, nondet_tol=1e-12 if on_cuda else 0.0)


def flat_transformer(name: str, device, seed: int = 0, **kw) -> SpatialTransformer:
    """A float64 transformer on 1x4x4 input whose localisation net is a flatten: cheap to gradcheck."""
    st = SpatialTransformer(nn.Flatten(), transform=name, in_channels=1, in_size=4, **kw).double()
    perturb_head(st, 0.1, seed=seed)
    return st.to(device)


# export: an eval-mode transformer whose parameters depend on the input (non-zero head)
def make_st(name, seed: int = 0, **kw) -> SpatialTransformer:
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


# ----------------------------------------------------------------------------------------
class TestIdentityHead:
    def test_smoke(self, device, dtype):
        head = IdentityHead(7, get_transform("projective")).to(device, dtype)
        out = head(rand(3, 7, dtype=dtype, device=device))
        assert out.shape == (3, 8) and out.dtype == dtype and out.device.type == device.type

    @pytest.mark.parametrize("name", FAMILIES)
    def test_identity(self, name):
        fam = get_transform(name)
        head = IdentityHead(7, fam)
        assert torch.count_nonzero(head.weight) == 0
        torch.testing.assert_close(head(torch.randn(3, 7)), fam.identity(3), atol=0, rtol=0)
        with torch.no_grad():
            head.bias.zero_()
        head.reset_parameters()  # re-initialising restores the identity
        torch.testing.assert_close(head.bias, fam.identity(1)[0], atol=0, rtol=0)

    def test_identity_bounded(self):
        # with bounded=True the output goes through family.bound, whose identity is at zero
        fam = get_transform("similarity")
        head = IdentityHead(7, fam, bounded=True)
        assert torch.count_nonzero(head.weight) == 0 and torch.count_nonzero(head.bias) == 0
        torch.testing.assert_close(fam.bound(head(torch.randn(3, 7))), fam.identity(3), atol=0, rtol=0)


# ----------------------------------------------------------------------------------------
class TestDefaultLocalization:
    @pytest.mark.parametrize(("in_size", "flat"), [((28, 28), 20 * 7 * 7), ((42, 30), 20 * 10 * 7), (3, 20 * 3 * 3)])
    def test_smoke(self, in_size, flat, device):
        # two 2x pools when the input is at least 4 px, none on a 3x3 input
        net, features = default_localization(2, in_size)
        size = (in_size, in_size) if isinstance(in_size, int) else in_size
        assert features == 50 and net[-2].in_features == flat
        assert net.to(device)(rand(5, 2, *size, device=device)).shape == (5, 50)

    def test_size_capped_past_the_sequence_canvas(self):
        # before the cap: 785k (96x128), 3.1M (224), 16M (512) parameters, growing with the input
        counts = {s: sum(p.numel() for p in default_localization(3, s)[0].parameters()) for s in [224, 512, 104]}
        assert counts[224] == counts[512] == counts[104] == 636_590
        net, _ = default_localization(3, (96, 128))  # 24 x 32 features: only the long side is averaged
        assert [type(m).__name__ for m in net[-4:]] == ["AdaptiveAvgPool2d", "Flatten", "Linear", "ReLU"]
        assert net[-4].output_size == (24, 25) and net[-2].in_features == 20 * 24 * 25
        assert net(rand(2, 3, 96, 128)).shape == (2, 50)

    @pytest.mark.parametrize("side", [28, 42, 60, 84, 100, 103])
    def test_no_pooling_layer_up_to_103_px(self, side):
        # 103 // 4 = 25, the cap: every model stnkit builds keeps its layers (and state_dict keys)
        net, _ = default_localization(1, side)
        assert len(net) == 9 and not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in net)
        assert net[-2].in_features == 20 * (side // 4) ** 2

    def test_exceptions(self):
        with pytest.raises(ValueError, match="in_channels must be a positive int, got 0"):
            default_localization(0, 8)
        with pytest.raises(ValueError, match="in_size must be positive"):
            default_localization(1, (8, 0))


# ----------------------------------------------------------------------------------------
class TestSpatialTransformer:
    # -- smoke ----------------------------------------------------------------------------
    @pytest.mark.parametrize("name", FAMILIES)
    def test_smoke(self, name, device, dtype):
        fam = get_transform(name)
        st = SpatialTransformer(transform=name, in_channels=2, in_size=(16, 16), out_size=(8, 6)).to(device, dtype)
        y, p = st(rand(5, 2, 16, 16, dtype=dtype, device=device), return_params=True)
        assert y.shape == (5, 2, 8, 6) and y.dtype == dtype and y.device.type == device.type
        assert p.shape == (5, fam.num_params) == (5, st.num_params) and p.dtype == dtype
        assert st(rand(5, 2, 16, 16, dtype=dtype, device=device)).shape == (5, 2, 8, 6)

    def test_smoke_tps_grid_size_option(self):
        st = SpatialTransformer(transform=get_transform("tps", grid_size=3), in_channels=1, in_size=8)
        _, p = st(torch.rand(2, 1, 8, 8), return_params=True)
        assert p.shape == (2, 18)
        assert st.transform == "tps"

    # -- exceptions -----------------------------------------------------------------------
    @pytest.mark.parametrize(
        ("kw", "got"),
        [
            ({}, "in_channels=None, in_size=None"),
            ({"in_channels": 1}, "in_channels=1, in_size=None"),
            ({"in_size": 28}, "in_channels=None, in_size=28"),
        ],
    )
    def test_exception_default_localization_needs_channels_and_size(self, kw, got):
        with pytest.raises(
            ValueError, match=esc(f"the default localisation net needs in_channels and in_size; got {got}")
        ):
            SpatialTransformer(**kw)

    def test_exception_in_channels(self):
        with pytest.raises(ValueError, match="in_channels must be a positive int, got 0"):
            SpatialTransformer(in_channels=0, in_size=8)

    def test_exception_localization(self):
        with pytest.raises(TypeError, match="localization must be an nn.Module or None, got function"):
            SpatialTransformer(lambda t: t, in_channels=1, in_size=8)

    def test_exception_options(self):
        with pytest.raises(ValueError, match="mode must be one of"):
            SpatialTransformer(in_channels=1, in_size=8, mode="area")
        with pytest.raises(ValueError, match="padding_mode must be one of"):
            SpatialTransformer(in_channels=1, in_size=8, padding_mode="circular")
        with pytest.raises(ValueError, match="out_size must be positive"):
            SpatialTransformer(in_channels=1, in_size=8, out_size=(0, 4))
        with pytest.raises(ValueError, match="unknown transform 'rigid'; valid names"):
            SpatialTransformer(in_channels=1, in_size=8, transform="rigid")

    def test_exception_loc_size(self):
        with pytest.raises(ValueError, match=r"loc_size must not exceed in_size \(8, 8\), got \(9, 8\)"):
            SpatialTransformer(transform="affine", in_channels=1, in_size=8, loc_size=(9, 8))
        st = SpatialTransformer(nn.Flatten(), "affine", loc_size=6)
        with pytest.raises(ValueError, match=r"x must be at least loc_size \(6, 6\), got shape \(1, 1, 5, 5\)"):
            st(torch.rand(1, 1, 5, 5))
        with pytest.raises(ValueError, match="loc_size must be positive"):
            SpatialTransformer(transform="affine", in_channels=1, in_size=8, loc_size=0)

    def test_exception_forward_input(self):
        st = SpatialTransformer(in_channels=1, in_size=8)
        with pytest.raises(ValueError, match=esc("x must have shape (B, C, H, W), got shape (1, 8, 8)")):
            st(torch.rand(1, 8, 8))
        with pytest.raises(TypeError, match="x must have a floating dtype"):
            st(torch.zeros(1, 1, 8, 8, dtype=torch.long))

    def test_exception_forward_channels_and_size(self):
        st = SpatialTransformer(in_channels=1, in_size=(28, 28))
        with pytest.raises(
            ValueError, match=r"x must have shape \(B, 1, 28, 28\) for this transformer, got shape \(2, 3, 28, 28\)"
        ):
            st(torch.rand(2, 3, 28, 28))
        with pytest.raises(ValueError, match=r"got shape \(2, 1, 20, 20\)"):
            st(torch.rand(2, 1, 20, 20))

    def test_exception_nan_params_from_localization(self):
        st = SpatialTransformer(nn.Flatten(), in_channels=1, in_size=4)
        with torch.no_grad():
            st.head.bias.fill_(math.nan)
        with pytest.raises(ValueError, match="params must be finite"):
            st(torch.rand(1, 1, 4, 4))

    # -- identity at initialisation -------------------------------------------------------
    @pytest.mark.parametrize("name", FAMILIES)
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_identity_default_localization(self, name, align_corners, device):
        st = SpatialTransformer(transform=name, in_channels=3, in_size=(12, 10), align_corners=align_corners)
        st = st.to(device)
        x = rand(4, 3, 12, 10, device=device)
        y, p = st(x, return_params=True)
        torch.testing.assert_close(y, x, atol=ATOL, rtol=0)
        torch.testing.assert_close(p, get_transform(name).identity(4, device=device), atol=0, rtol=0)

    def test_identity_float64_exact(self, device):
        for name in FAMILIES:
            st = SpatialTransformer(transform=name, in_channels=1, in_size=9).to(device, F64)
            x = rand(2, 1, 9, 9, dtype=F64, device=device)
            torch.testing.assert_close(st(x), x, atol=1e-12, rtol=0)

    @pytest.mark.parametrize("name", FAMILIES)
    def test_identity_bounded(self, name):
        st = SpatialTransformer(transform=name, in_channels=1, in_size=8, bounded=True)
        x = torch.rand(2, 1, 8, 8)
        y, p = st(x, return_params=True)
        torch.testing.assert_close(p, get_transform(name).identity(2), atol=1e-7, rtol=0)
        torch.testing.assert_close(y, x, atol=ATOL, rtol=0)

    @staticmethod
    def _loc():
        return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten())

    @pytest.mark.parametrize("name", FAMILIES)
    def test_identity_custom_localization(self, name):
        st = SpatialTransformer(self._loc(), transform=name, in_channels=3, in_size=(10, 10))
        assert isinstance(st.head, IdentityHead) and st.head.in_features == 54
        x = torch.rand(2, 3, 10, 10)
        torch.testing.assert_close(st(x), x, atol=ATOL, rtol=0)

    @pytest.mark.parametrize("name", FAMILIES)
    def test_identity_lazy_head(self, name):
        # without in_channels/in_size the head's input size is found at the first forward
        st = SpatialTransformer(self._loc(), transform=name)
        assert st.head.has_uninitialized_params()
        x = torch.rand(2, 3, 10, 10)
        y, p = st(x, return_params=True)
        assert isinstance(st.head, IdentityHead) and st.head.in_features == 54
        assert torch.count_nonzero(st.head.weight) == 0
        torch.testing.assert_close(p, get_transform(name).identity(2), atol=0, rtol=0)
        torch.testing.assert_close(y, x, atol=ATOL, rtol=0)
        # and it trains: an optimiser created after the first forward sees the head
        assert any(q is st.head.weight for q in st.parameters())

    def test_identity_lazy_head_bounded(self):
        st = SpatialTransformer(self._loc(), transform="similarity", bounded=True)
        x = torch.rand(2, 3, 10, 10)
        y, p = st(x, return_params=True)
        torch.testing.assert_close(p, get_transform("similarity").identity(2), atol=1e-7, rtol=0)
        torch.testing.assert_close(y, x, atol=ATOL, rtol=0)

    def test_identity_in_the_middle_of_a_conv_net(self):
        torch.manual_seed(0)
        conv1 = nn.Conv2d(3, 16, 3, padding=1)
        conv2 = nn.Conv2d(16, 4, 3, padding=1)
        st = SpatialTransformer(transform="affine", in_channels=16, in_size=(12, 12))
        net = nn.Sequential(conv1, nn.ReLU(), st, conv2, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        plain = nn.Sequential(conv1, nn.ReLU(), conv2, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        x = torch.rand(3, 3, 12, 12)
        out = net(x)
        assert out.shape == (3, 4)
        torch.testing.assert_close(out, plain(x), atol=1e-5, rtol=0)  # identity at init
        out.sum().backward()
        assert conv1.weight.grad is not None and torch.isfinite(conv1.weight.grad).all()
        assert st.head.weight.grad.abs().sum() > 0

    # -- convention -----------------------------------------------------------------------
    def test_convention_params_drive_the_warp(self, device):
        # the returned params are the ones the output was sampled with, as F.affine_grid reads them
        st = SpatialTransformer(transform="affine", in_channels=1, in_size=10)
        perturb_head(st, 0.2)
        st = st.to(device)
        x = rand(3, 1, 10, 10, device=device)
        y, p = st(x, return_params=True)
        grid = F.affine_grid(p.view(3, 2, 3), [3, 1, 10, 10], align_corners=False)
        torch.testing.assert_close(y, F.grid_sample(x, grid, align_corners=False))
        assert (y - x).abs().max() > 1e-2  # really transformed

    @pytest.mark.parametrize("channels", [1, 3, 16])
    def test_convention_every_channel_at_the_same_points(self, channels):
        st = SpatialTransformer(transform="similarity", in_channels=channels, in_size=(9, 11))
        perturb_head(st, 0.1)
        x = torch.rand(2, channels, 9, 11)
        y, p = st(x, return_params=True)
        assert y.shape == x.shape
        # warping channel by channel with the documented matrix agrees
        m = reference_matrix("similarity", p.detach().double()).float()
        for c in range(channels):
            torch.testing.assert_close(
                y[:, c : c + 1], sample_with_matrix(x[:, c : c + 1], m, (9, 11)), atol=1e-5, rtol=0
            )

    def test_convention_downsample_identity_is_2x2_average(self, device):
        # identity grid at half resolution (align_corners=False): each output centre lies
        # between four input centres, so bilinear sampling is exactly a 2x2 average
        st = SpatialTransformer(transform="tps", in_channels=2, in_size=(14, 14), out_size=(7, 7)).to(device)
        x = rand(3, 2, 14, 14, device=device)
        torch.testing.assert_close(st(x), F.avg_pool2d(x, 2), atol=1e-6, rtol=0)

    def test_convention_int_out_size_and_upsampling(self):
        # F.interpolate clamps at the edges, which is padding_mode="border"
        st = SpatialTransformer(transform="affine", in_channels=1, in_size=6, out_size=12, padding_mode="border")
        assert st.out_size == (12, 12)
        x = torch.rand(1, 1, 6, 6)
        ref = F.interpolate(x, size=(12, 12), mode="bilinear", align_corners=False)
        torch.testing.assert_close(st(x), ref, atol=1e-6, rtol=0)

    def test_localization_mode_restored(self):
        loc = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten())
        loc.train()
        st = SpatialTransformer(loc, in_channels=1, in_size=6)
        assert loc.training and st.head.in_features == 2 * 4 * 4

    # -- bounded --------------------------------------------------------------------------
    @pytest.mark.parametrize("name", FAMILIES)
    def test_bounded_huge_features_stay_in_range(self, name):
        # every parameter stays within 1 of its identity value (the similarity angle within pi)
        st = SpatialTransformer(nn.Flatten(), transform=name, in_channels=1, in_size=4, bounded=True)
        with torch.no_grad():
            st.head.weight.copy_(torch.randn(st.head.weight.shape) * 1e6)
        x = torch.randn(8, 1, 4, 4) * 1e6
        y, p = st(x, return_params=True)
        dev = (p - get_transform(name).identity(8)).abs()
        limit = torch.ones(p.shape[1])
        if name == "similarity":
            limit[1] = math.pi
        assert (dev <= limit).all()
        assert dev.max() > 0.99  # saturated, so the bound really was exercised
        assert torch.isfinite(y).all()

    def test_unbounded_is_not_limited(self):
        # control for the test above: without bounded the same head gives huge params
        st = SpatialTransformer(nn.Flatten(), transform="affine", in_channels=1, in_size=4)
        with torch.no_grad():
            st.head.weight.fill_(1e3)
        _, p = st(torch.ones(1, 1, 4, 4), return_params=True)
        assert p.abs().max() > 100

    # -- loc_size: the localisation net reads a downsampled copy, the sampler the full input --
    class Spy(nn.Module):
        def __init__(self, in_ch, size):
            super().__init__()
            self.seen = None
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_ch * size[0] * size[1], 4))

        def forward(self, x):
            self.seen = x
            return self.body(x)

    def test_loc_size_block_average(self):
        spy = self.Spy(2, (7, 5))
        st = SpatialTransformer(spy, "affine", in_channels=2, in_size=(14, 15), loc_size=(7, 5))
        x = torch.rand(3, 2, 14, 15)
        y = st(x)
        # written out by hand: mean of each 2x3 block
        ref = x.view(3, 2, 7, 2, 5, 3).mean(dim=(3, 5))
        torch.testing.assert_close(spy.seen, ref, atol=1e-6, rtol=0)
        # the output is still the full-resolution input at the identity
        torch.testing.assert_close(y, x, atol=ATOL, rtol=0)

    def test_loc_size_uneven_uses_area_averaging(self):
        spy = self.Spy(1, (4, 4))
        st = SpatialTransformer(spy, "affine", in_channels=1, in_size=(10, 10), loc_size=4)
        x = torch.rand(2, 1, 10, 10)
        st(x)
        torch.testing.assert_close(spy.seen, F.interpolate(x, size=(4, 4), mode="area"), atol=1e-6, rtol=0)

    def test_loc_size_default_localization_sized_to_it(self):
        st = SpatialTransformer(transform="projective", in_channels=1, in_size=42, loc_size=21)
        full = SpatialTransformer(transform="projective", in_channels=1, in_size=42)
        assert st.head.in_features == full.head.in_features == 50
        assert st.localization[-2].in_features == 20 * 5 * 5 and full.localization[-2].in_features == 20 * 10 * 10
        x = torch.rand(2, 1, 42, 42)
        perturb_head(st)
        y, p = st(x, return_params=True)
        assert y.shape == x.shape
        # gradients reach the localisation net through the downsampled copy
        y.sum().backward()
        assert st.localization[0].weight.grad.abs().sum() > 0

    # -- gradients ------------------------------------------------------------------------
    @pytest.mark.parametrize("name", FAMILIES)
    def test_gradients_reach_the_localization(self, name):
        torch.manual_seed(0)
        st = SpatialTransformer(transform=name, in_channels=1, in_size=12)
        x = torch.rand(4, 1, 12, 12)
        target = torch.roll(x, 1, dims=-1)
        opt = torch.optim.SGD(st.parameters(), lr=0.1)
        F.mse_loss(st(x), target).backward()
        # at init the head's weights are zero, so only the head gets a gradient ...
        assert st.head.weight.grad.abs().sum() > 0 and st.head.bias.grad.abs().sum() > 0
        opt.step()
        opt.zero_grad()
        # ... and after one step the gradient reaches every localisation layer
        F.mse_loss(st(x), target).backward()
        for n, q in st.localization.named_parameters():
            assert q.grad is not None and q.grad.abs().sum() > 0, n

    def test_gradients_reach_the_input(self):
        st = SpatialTransformer(transform="projective", in_channels=2, in_size=8)
        perturb_head(st)
        x = torch.rand(2, 2, 8, 8, requires_grad=True)
        st(x).square().sum().backward()
        assert x.grad.abs().sum() > 0

    @pytest.mark.parametrize("name", FAMILIES)
    def test_gradcheck(self, name, device):
        # the input reaches the output twice: sampled, and through the predicted parameters
        st = flat_transformer(name, device, bounded=name == "similarity")
        check_gradients(st, rand(1, 1, 4, 4, dtype=F64, device=device).requires_grad_())

    # -- export ---------------------------------------------------------------------------
    # The core's data-dependent checks (isfinite) are skipped while tracing/exporting
    # (_checks.is_tracing); the exported graph must compute what eager PyTorch computes,
    # on an input other than the one it was traced with.
    @pytest.mark.parametrize("name", FAMILIES)
    def test_export_onnx(self, name, tmp_path):
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
    def test_export_onnx_sampler_options(self, kw, tmp_path):
        st = make_st("projective", seed=1, **kw)
        export(st, torch.rand(2, 3, 12, 12), tmp_path / "st.onnx", dynamo=True)
        x = torch.rand(2, 3, 12, 12)
        with torch.no_grad():
            ref = st(x).numpy()
        np.testing.assert_allclose(run_onnx(tmp_path / "st.onnx", x), ref, atol=1e-5, rtol=0)

    def test_export_onnx_leaves_tps_cache_usable(self, tmp_path):
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
    def test_export_onnx_legacy_torchscript_exporter(self, name, opset, tmp_path):
        # the deprecated TorchScript exporter maps affine_grid to ONNX AffineGrid, which only
        # exists from opset 20: the matrix families need opset >= 20 there
        st = make_st(name, seed=3)
        export(st, torch.rand(2, 3, 12, 12), tmp_path / "st.onnx", opset=opset, dynamo=False)
        x = torch.rand(2, 3, 12, 12)
        with torch.no_grad():
            ref = st(x).numpy()
        np.testing.assert_allclose(run_onnx(tmp_path / "st.onnx", x), ref, atol=1e-5, rtol=0)

    @pytest.mark.filterwarnings(
        "ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning", "ignore::FutureWarning"
    )
    @pytest.mark.parametrize("name", FAMILIES)
    def test_trace(self, name, device):
        st = make_st(name).to(device)
        traced = torch.jit.trace(st, rand(2, 3, 12, 12, device=device))
        x = rand(2, 3, 12, 12, seed=1, device=device)
        with torch.no_grad():
            torch.testing.assert_close(traced(x), st(x))

    @pytest.mark.parametrize("name", ["affine", "tps"])
    def test_compile_fullgraph(self, name):
        # fullgraph: the checks must not break the graph (they are skipped while compiling)
        st = make_st(name)
        compiled = torch.compile(st, fullgraph=True)
        for _ in range(2):
            x = torch.rand(2, 3, 12, 12)
            with torch.no_grad():
                torch.testing.assert_close(compiled(x), st(x), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------
class TestParallelTransformers:
    def test_smoke(self, device, dtype):
        sts = [SpatialTransformer(in_channels=1, in_size=16, out_size=8) for _ in range(4)]
        par = ParallelTransformers(*sts).to(device, dtype)
        out, params = par(rand(2, 1, 16, 16, dtype=dtype, device=device), return_params=True)
        assert out.shape == (2, 4, 8, 8) and out.dtype == dtype and out.device.type == device.type
        assert [p.shape for p in params] == [(2, 6)] * 4

    def test_exceptions(self):
        a = SpatialTransformer(in_channels=1, in_size=8)
        b = SpatialTransformer(in_channels=1, in_size=8, out_size=4)
        with pytest.raises(ValueError, match="ParallelTransformers needs at least one transformer"):
            ParallelTransformers()
        with pytest.raises(ValueError, match="parallel transformers must share out_size"):
            ParallelTransformers(a, b)
        with pytest.raises(TypeError, match=r"transformers\[1\] must be a SpatialTransformer, got Linear"):
            ParallelTransformers(a, nn.Linear(2, 2))

    def test_identity(self, device):
        par = ParallelTransformers(*(SpatialTransformer(transform=n, in_channels=2, in_size=8) for n in FAMILIES))
        x = rand(2, 2, 8, 8, device=device)
        torch.testing.assert_close(par.to(device)(x), x.repeat(1, len(FAMILIES), 1, 1), atol=ATOL, rtol=0)

    def test_convention_channels_concatenated_and_params_list(self):
        a = SpatialTransformer(transform="affine", in_channels=3, in_size=10)
        b = SpatialTransformer(transform="tps", in_channels=3, in_size=10)
        perturb_head(a, seed=1)
        perturb_head(b, seed=2)
        par = ParallelTransformers(a, b)
        x = torch.rand(2, 3, 10, 10)
        out, params = par(x, return_params=True)
        assert out.shape == (2, 6, 10, 10)
        assert isinstance(params, list) and [p.shape for p in params] == [(2, 6), (2, 32)]
        torch.testing.assert_close(out[:, :3], a(x))
        torch.testing.assert_close(out[:, 3:], b(x))
        assert par(x).shape == (2, 6, 10, 10)

    def test_gradcheck(self, device):
        par = ParallelTransformers(flat_transformer("affine", device, 1), flat_transformer("tps", device, 2))
        check_gradients(par, rand(1, 1, 4, 4, dtype=F64, device=device).requires_grad_())


# ----------------------------------------------------------------------------------------
class TestSeriesTransformers:
    def test_smoke(self, device, dtype):
        a = SpatialTransformer(transform="attention", in_channels=2, in_size=16, out_size=8)
        b = SpatialTransformer(transform="tps", in_channels=2, in_size=8, out_size=(5, 6))
        out, params = SeriesTransformers(a, b).to(device, dtype)(
            rand(3, 2, 16, 16, dtype=dtype, device=device), return_params=True
        )
        assert out.shape == (3, 2, 5, 6) and out.dtype == dtype and out.device.type == device.type
        assert [p.shape for p in params] == [(3, 3), (3, 32)]

    def test_exceptions(self):
        with pytest.raises(ValueError, match="SeriesTransformers needs at least one transformer"):
            SeriesTransformers()
        with pytest.raises(TypeError, match=r"transformers\[0\] must be a SpatialTransformer, got Identity"):
            SeriesTransformers(nn.Identity())
        stages = [SpatialTransformer(in_channels=1, in_size=10, align_corners=ac) for ac in (False, True, False)]
        with pytest.raises(ValueError, match=r"share one align_corners, got \[False, True, False\]"):
            SeriesTransformers(*stages)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_convention_shared_align_corners_is_used(self, align_corners):
        a, b = (
            SpatialTransformer(transform="affine", in_channels=1, in_size=9, align_corners=align_corners) for _ in "ab"
        )
        perturb_head(a, 0.05, seed=0)
        ser = SeriesTransformers(a, b)  # b is the identity: the chain is stage a alone
        x = torch.rand(2, 1, 9, 9)
        torch.testing.assert_close(ser(x), a(x), atol=1e-5, rtol=0)

    @pytest.mark.parametrize("names", [("affine", "tps"), ("similarity", "projective", "attention")])
    def test_identity(self, names, device):
        ser = SeriesTransformers(*(SpatialTransformer(transform=n, in_channels=1, in_size=10) for n in names))
        x = rand(3, 1, 10, 10, device=device)
        out, params = ser.to(device)(x, return_params=True)
        torch.testing.assert_close(out, x, atol=ATOL, rtol=0)
        assert len(params) == len(names)

    def test_identity_downsampling_stage(self):
        a = SpatialTransformer(transform="attention", in_channels=1, in_size=16, out_size=8)
        b = SpatialTransformer(transform="tps", in_channels=1, in_size=8)
        x = torch.rand(2, 1, 16, 16)
        out = SeriesTransformers(a, b)(x)
        assert out.shape == (2, 1, 8, 8)
        torch.testing.assert_close(out, F.avg_pool2d(x, 2), atol=1e-6, rtol=0)

    def test_convention_samples_once_with_the_composed_matrix(self):
        a = SpatialTransformer(transform="affine", in_channels=1, in_size=12)
        b = SpatialTransformer(transform="projective", in_channels=1, in_size=12)
        c = SpatialTransformer(transform="similarity", in_channels=1, in_size=12)
        for i, t in enumerate((a, b, c)):
            perturb_head(t, 0.03, seed=i)
        ser = SeriesTransformers(a, b, c)
        seen = []
        b.localization.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
        x = torch.rand(2, 1, 12, 12)
        out, (pa, pb, pc) = ser(x, return_params=True)
        # the output samples x once through T_a o T_b o T_c (points go through c first)
        m = reference_matrix("affine", pa) @ reference_matrix("projective", pb) @ reference_matrix("similarity", pc)
        torch.testing.assert_close(out, sample_with_matrix(x, m, (12, 12)), atol=1e-5, rtol=0)
        # the second stage's localisation net saw the first stage's output
        torch.testing.assert_close(seen[0], a(x))
        # one sampling is not the same as warping three times (which blurs)
        seq = c(b(a(x)))
        assert not torch.allclose(out, seq, atol=1e-4)

    def test_gradcheck(self, device):
        ser = SeriesTransformers(flat_transformer("similarity", device, 1), flat_transformer("projective", device, 2))
        check_gradients(ser, rand(1, 1, 4, 4, dtype=F64, device=device).requires_grad_())


# ----------------------------------------------------------------------------------------
class TestWithTransformer:
    def test_exported(self):
        assert stnkit.with_transformer is with_transformer and "with_transformer" in stnkit.__all__

    @pytest.mark.parametrize(
        ("in_size", "loc"), [((224, 224), (56, 56)), ((64, 64), None), ((65, 30), (32, 15)), ((100, 300), (20, 60))]
    )
    def test_default_loc_size_rule(self, in_size, loc):
        # the input itself up to 64 px on the longest side, else divided by ceil(max(H, W) / 64)
        assert default_loc_size(in_size) == loc
        model = with_transformer(nn.Identity(), in_channels=1, in_size=in_size)
        assert model.transformer.loc_size == loc
        h, w = loc or in_size
        assert model.transformer.localization[0].in_channels == 1
        assert model.transformer.localization[-2].in_features == 20 * (h // 4) * (w // 4)

    def test_identity_at_init_in_front_of_any_backbone(self):
        model = with_transformer(nn.Identity(), in_size=(96, 128)).double()
        assert isinstance(model, STClassifier) and model.transformer.loc_size == (48, 64)
        x = rand(2, 3, 96, 128, dtype=F64)
        out, params = model.warp_input(x)
        torch.testing.assert_close(out, x, atol=1e-12, rtol=0)
        torch.testing.assert_close(params[0], get_transform("affine").identity(2, dtype=F64), atol=0, rtol=0)
        assert {k.split(".")[0] for k in model.state_dict()} == {"transformer"}

    def test_resnet_backbone_trains_the_head(self):
        torch.manual_seed(0)
        model = with_transformer(resnet18(num_classes=4, small_input=True), in_size=(72, 72), out_size=(48, 48))
        x = rand(2, 3, 72, 72)
        logits = model(x)
        assert logits.shape == (2, 4)
        F.cross_entropy(logits, torch.tensor([0, 3])).backward()
        # at the identity the head's weights get gradient from the sampler (its bias too)
        assert torch.any(model.transformer.head.weight.grad != 0)
        assert all(p.grad is not None for p in model.classifier.parameters())

    def test_parallel_transformers_concatenate_channels(self):
        model = with_transformer(nn.Identity(), transform="tps", grid_size=3, in_size=48, num_transformers=2)
        assert isinstance(model.transformer, ParallelTransformers)
        assert [t.family.name for t in model.transformer.transformers] == ["tps", "tps"]
        assert model.transformer.transformers[0].family.grid_size == 3
        a, b = (t.localization for t in model.transformer.transformers)
        assert a is not b and not torch.equal(a[0].weight, b[0].weight)  # independent localisation nets
        x = rand(2, 3, 48, 48)
        out = model(x)
        assert out.shape == (2, 6, 48, 48)
        torch.testing.assert_close(out, torch.cat([x, x], 1), atol=ATOL, rtol=0)

    def test_custom_localization(self):
        loc = nn.Sequential(nn.Flatten(), nn.Linear(3 * 14 * 14, 5))
        model = with_transformer(nn.Identity(), in_size=(56, 56), loc_size=14, localization=loc)
        assert model.transformer.localization is loc and model.transformer.head.in_features == 5
        locs = [nn.Flatten(), nn.Flatten()]
        model = with_transformer(nn.Identity(), in_size=8, localization=locs, num_transformers=2)
        assert [t.head.in_features for t in model.transformer.transformers] == [192, 192]

    def test_errors(self):
        with pytest.raises(TypeError, match="backbone must be an nn.Module .*, got str"):
            with_transformer("resnet18")
        with pytest.raises(ValueError, match="localization must be a sequence of num_transformers=2 distinct modules"):
            with_transformer(nn.Identity(), in_size=8, localization=nn.Flatten(), num_transformers=2)
        shared = nn.Flatten()
        with pytest.raises(
            ValueError, match=esc("localization must be 2 distinct modules (num_transformers), got 2 (1 distinct)")
        ):
            with_transformer(nn.Identity(), in_size=8, localization=[shared, shared], num_transformers=2)
        with pytest.raises(ValueError, match=esc("loc_size must not exceed in_size (8, 8), got (9, 9)")):
            with_transformer(nn.Identity(), in_size=8, loc_size=9)
        with pytest.raises(ValueError, match="num_transformers must be a positive int, got 0"):
            with_transformer(nn.Identity(), num_transformers=0)
        with pytest.raises(TypeError, match="in_size must be an int or a pair"):
            with_transformer(nn.Identity(), in_size="224")
