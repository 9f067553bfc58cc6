"""stnkit.nn: SpatialTransformer and its parallel/series stacks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stnkit.geometry import TRANSFORMS, get_transform
from stnkit.nn import IdentityHead, ParallelTransformers, SeriesTransformers, SpatialTransformer

FAMILIES = list(TRANSFORMS)
ATOL = 5e-6  # float32 sampling at the identity (affine_grid's own rounding; see test_geometry)


def perturb_head(st: SpatialTransformer, std: float = 0.05, seed: int = 0) -> None:
    """Give the head non-zero weights so the transform depends on the input."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        st.head.weight.copy_(torch.randn(st.head.weight.shape, generator=gen) * std)


def reference_matrix(name: str, p: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) output->input matrix written from the documented parameterisations."""
    b = p.shape[0]
    m = torch.eye(3, dtype=p.dtype).repeat(b, 1, 1)
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
    ys = (2 * torch.arange(h, dtype=m.dtype) + 1) / h - 1
    xs = (2 * torch.arange(w, dtype=m.dtype) + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx, gy, torch.ones_like(gx)], -1).view(1, -1, 3)
    q = pts @ m.transpose(1, 2)
    grid = (q[..., :2] / q[..., 2:]).view(-1, h, w, 2)
    return F.grid_sample(x, grid.to(x.dtype), align_corners=False)


class TestIdentityAtInit:
    @pytest.mark.parametrize("name", FAMILIES)
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_default_localization(self, name, align_corners):
        st = SpatialTransformer(transform=name, in_channels=3, in_size=(12, 10), align_corners=align_corners)
        x = torch.rand(4, 3, 12, 10)
        y, p = st(x, return_params=True)
        torch.testing.assert_close(y, x, atol=ATOL, rtol=0)
        torch.testing.assert_close(p, get_transform(name).identity(4), atol=0, rtol=0)

    def test_float64_exact(self):
        for name in FAMILIES:
            st = SpatialTransformer(transform=name, in_channels=1, in_size=9).double()
            x = torch.rand(2, 1, 9, 9, dtype=torch.float64)
            torch.testing.assert_close(st(x), x, atol=1e-12, rtol=0)

    def test_identity_head(self):
        head = IdentityHead(7, get_transform("affine"))
        assert torch.count_nonzero(head.weight) == 0
        torch.testing.assert_close(head(torch.randn(3, 7)), get_transform("affine").identity(3))
        head.reset_parameters()  # re-initialising keeps the identity
        torch.testing.assert_close(head.bias, get_transform("affine").identity(1)[0])


class TestReturnParams:
    @pytest.mark.parametrize("name", FAMILIES)
    def test_shapes(self, name):
        fam = get_transform(name)
        st = SpatialTransformer(transform=name, in_channels=2, in_size=(16, 16), out_size=(8, 6))
        y, p = st(torch.rand(5, 2, 16, 16), return_params=True)
        assert y.shape == (5, 2, 8, 6)
        assert p.shape == (5, fam.num_params) == (5, st.num_params)
        assert st(torch.rand(5, 2, 16, 16)).shape == (5, 2, 8, 6)

    def test_tps_grid_size_option(self):
        st = SpatialTransformer(transform=get_transform("tps", grid_size=3), in_channels=1, in_size=8)
        _, p = st(torch.rand(2, 1, 8, 8), return_params=True)
        assert p.shape == (2, 18)
        assert st.transform == "tps"

    def test_params_drive_the_warp(self):
        # the returned params are the ones the output was sampled with
        st = SpatialTransformer(transform="affine", in_channels=1, in_size=10)
        perturb_head(st, 0.2)
        x = torch.rand(3, 1, 10, 10)
        y, p = st(x, return_params=True)
        ref = F.grid_sample(x, F.affine_grid(p.view(3, 2, 3), [3, 1, 10, 10], align_corners=False), align_corners=False)
        torch.testing.assert_close(y, ref)
        assert (y - x).abs().max() > 1e-2  # really transformed


class TestChannels:
    @pytest.mark.parametrize("channels", [1, 3, 16])
    def test_any_channel_count(self, channels):
        st = SpatialTransformer(transform="similarity", in_channels=channels, in_size=(9, 11))
        perturb_head(st, 0.1)
        x = torch.rand(2, channels, 9, 11)
        y, p = st(x, return_params=True)
        assert y.shape == x.shape
        # every channel is sampled at the same points: warping channel by channel agrees
        m = reference_matrix("similarity", p.detach().double()).float()
        for c in range(channels):
            torch.testing.assert_close(
                y[:, c : c + 1], sample_with_matrix(x[:, c : c + 1], m, (9, 11)), atol=1e-5, rtol=0
            )

    def test_feature_map_in_the_middle_of_a_conv_net(self):
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


class TestOutSize:
    def test_downsample_identity_is_2x2_average(self):
        # identity grid at half resolution (align_corners=False): each output centre lies
        # between four input centres, so bilinear sampling is exactly a 2x2 average
        st = SpatialTransformer(transform="tps", in_channels=2, in_size=(14, 14), out_size=(7, 7))
        x = torch.rand(3, 2, 14, 14)
        torch.testing.assert_close(st(x), F.avg_pool2d(x, 2), atol=1e-6, rtol=0)

    def test_int_out_size_and_upsampling(self):
        # F.interpolate clamps at the edges, which is padding_mode="border"
        st = SpatialTransformer(transform="affine", in_channels=1, in_size=6, out_size=12, padding_mode="border")
        assert st.out_size == (12, 12)
        x = torch.rand(1, 1, 6, 6)
        ref = F.interpolate(x, size=(12, 12), mode="bilinear", align_corners=False)
        torch.testing.assert_close(st(x), ref, atol=1e-6, rtol=0)


class TestCustomLocalization:
    @staticmethod
    def _loc():
        return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten())

    @pytest.mark.parametrize("name", FAMILIES)
    def test_with_in_size(self, name):
        st = SpatialTransformer(self._loc(), transform=name, in_channels=3, in_size=(10, 10))
        assert isinstance(st.head, IdentityHead) and st.head.in_features == 54
        x = torch.rand(2, 3, 10, 10)
        torch.testing.assert_close(st(x), x, atol=ATOL, rtol=0)

    @pytest.mark.parametrize("name", FAMILIES)
    def test_lazy_head(self, name):
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

    def test_lazy_head_bounded(self):
        st = SpatialTransformer(self._loc(), transform="similarity", bounded=True)
        x = torch.rand(2, 3, 10, 10)
        y, p = st(x, return_params=True)
        torch.testing.assert_close(p, get_transform("similarity").identity(2), atol=1e-7, rtol=0)
        torch.testing.assert_close(y, x, atol=ATOL, rtol=0)

    def test_localization_mode_restored(self):
        loc = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten())
        loc.train()
        st = SpatialTransformer(loc, in_channels=1, in_size=6)
        assert loc.training and st.head.in_features == 2 * 4 * 4


class TestBounded:
    @pytest.mark.parametrize("name", FAMILIES)
    def test_identity_at_init(self, name):
        st = SpatialTransformer(transform=name, in_channels=1, in_size=8, bounded=True)
        x = torch.rand(2, 1, 8, 8)
        y, p = st(x, return_params=True)
        torch.testing.assert_close(p, get_transform(name).identity(2), atol=1e-7, rtol=0)
        torch.testing.assert_close(y, x, atol=ATOL, rtol=0)

    @pytest.mark.parametrize("name", FAMILIES)
    def test_huge_features_stay_in_range(self, name):
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


class TestGradients:
    @pytest.mark.parametrize("name", FAMILIES)
    def test_localization_receives_gradients(self, name):
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

    def test_gradient_reaches_the_input(self):
        st = SpatialTransformer(transform="projective", in_channels=2, in_size=8)
        perturb_head(st)
        x = torch.rand(2, 2, 8, 8, requires_grad=True)
        st(x).square().sum().backward()
        assert x.grad.abs().sum() > 0


class TestParallel:
    def test_channels_concatenated_and_params_list(self):
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

    def test_shared_out_size(self):
        sts = [SpatialTransformer(in_channels=1, in_size=16, out_size=8) for _ in range(4)]
        out = ParallelTransformers(*sts)(torch.rand(2, 1, 16, 16))
        assert out.shape == (2, 4, 8, 8)


class TestSeries:
    @pytest.mark.parametrize("names", [("affine", "tps"), ("similarity", "projective", "attention")])
    def test_identity_at_init(self, names):
        ser = SeriesTransformers(*(SpatialTransformer(transform=n, in_channels=1, in_size=10) for n in names))
        x = torch.rand(3, 1, 10, 10)
        out, params = ser(x, return_params=True)
        torch.testing.assert_close(out, x, atol=ATOL, rtol=0)
        assert len(params) == len(names)

    def test_samples_once_with_the_composed_matrix(self):
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

    def test_downsampling_stage(self):
        a = SpatialTransformer(transform="attention", in_channels=1, in_size=16, out_size=8)
        b = SpatialTransformer(transform="tps", in_channels=1, in_size=8)
        x = torch.rand(2, 1, 16, 16)
        out = SeriesTransformers(a, b)(x)
        assert out.shape == (2, 1, 8, 8)
        torch.testing.assert_close(out, F.avg_pool2d(x, 2), atol=1e-6, rtol=0)

    def test_mixed_align_corners_are_refused(self):
        stages = [SpatialTransformer(in_channels=1, in_size=10, align_corners=ac) for ac in (False, True, False)]
        with pytest.raises(ValueError, match=r"share one align_corners, got \[False, True, False\]"):
            SeriesTransformers(*stages)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_shared_align_corners_is_used(self, align_corners):
        a, b = (
            SpatialTransformer(transform="affine", in_channels=1, in_size=9, align_corners=align_corners) for _ in "ab"
        )
        perturb_head(a, 0.05, seed=0)
        ser = SeriesTransformers(a, b)  # b is the identity: the chain is stage a alone
        x = torch.rand(2, 1, 9, 9)
        torch.testing.assert_close(ser(x), a(x), atol=1e-5, rtol=0)


class TestLocSize:
    """The localisation net reads a downsampled copy; the sampler reads the full input."""

    class Spy(nn.Module):
        def __init__(self, in_ch, size):
            super().__init__()
            self.seen = None
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_ch * size[0] * size[1], 4))

        def forward(self, x):
            self.seen = x
            return self.body(x)

    def test_loc_net_sees_the_block_average(self):
        spy = self.Spy(2, (7, 5))
        st = SpatialTransformer(spy, "affine", in_channels=2, in_size=(14, 15), loc_size=(7, 5))
        x = torch.rand(3, 2, 14, 15)
        y = st(x)
        # written out by hand: mean of each 2x3 block
        ref = x.view(3, 2, 7, 2, 5, 3).mean(dim=(3, 5))
        torch.testing.assert_close(spy.seen, ref, atol=1e-6, rtol=0)
        # the output is still the full-resolution input at the identity
        torch.testing.assert_close(y, x, atol=ATOL, rtol=0)

    def test_uneven_sizes_use_area_averaging(self):
        spy = self.Spy(1, (4, 4))
        st = SpatialTransformer(spy, "affine", in_channels=1, in_size=(10, 10), loc_size=4)
        x = torch.rand(2, 1, 10, 10)
        st(x)
        torch.testing.assert_close(spy.seen, F.interpolate(x, size=(4, 4), mode="area"), atol=1e-6, rtol=0)

    def test_default_localization_sized_to_loc_size(self):
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

    def test_too_large_loc_size_refused(self):
        with pytest.raises(ValueError, match=r"loc_size must not exceed in_size \(8, 8\), got \(9, 8\)"):
            SpatialTransformer(transform="affine", in_channels=1, in_size=8, loc_size=(9, 8))
        st = SpatialTransformer(nn.Flatten(), "affine", loc_size=6)
        with pytest.raises(ValueError, match=r"x must be at least loc_size \(6, 6\), got shape \(1, 1, 5, 5\)"):
            st(torch.rand(1, 1, 5, 5))
        with pytest.raises(ValueError, match="loc_size must be positive"):
            SpatialTransformer(transform="affine", in_channels=1, in_size=8, loc_size=0)
