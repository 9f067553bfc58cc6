"""SpatialTransformer on volumes (B, C, D, H, W): a 3-tuple in_size makes a 3-D transformer."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck

from stnkit.geometry import get_transform, warp
from stnkit.nn import SpatialTransformer, default_localization_3d

F64 = torch.float64


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def perturb_head(st, std=0.05, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        st.head.weight.copy_(torch.randn(st.head.weight.shape, generator=gen) * std)


class TestDefaultLocalization3D:
    @pytest.mark.parametrize(("size", "flat"), [((8, 8, 8), 20 * 2 * 2 * 2), ((4, 6, 8), 20 * 2 * 3 * 4), (3, 20 * 27)])
    def test_structure(self, size, flat):  # a pool is skipped once the smallest side is below 4
        net, features = default_localization_3d(2, size)
        assert features == 50 and net[-2].in_features == flat
        d, h, w = (size,) * 3 if isinstance(size, int) else size
        assert net(rand(2, 2, d, h, w)).shape == (2, 50)

    def test_the_feature_map_is_capped(self):
        net, _ = default_localization_3d(1, (32, 32, 28))  # 8 x 8 x 7 after two pools -> 6^3
        assert isinstance(net[-4], nn.AdaptiveAvgPool3d) and net[-4].output_size == (6, 6, 6)
        assert net[-2].in_features == 20 * 216

    def test_bad_size_is_one_line(self):
        with pytest.raises(ValueError, match=r"^in_size must be positive, got \(0, 4, 4\)$"):
            default_localization_3d(1, (0, 4, 4))


class TestSpatialTransformer3D:
    def test_family_and_shapes(self):
        st = SpatialTransformer(transform="affine", in_channels=2, in_size=(4, 6, 8), out_size=(3, 5, 7))
        assert st.dims == 3 and st.family is get_transform("affine", dims=3) and st.num_params == 12
        y, p = st(rand(3, 2, 4, 6, 8), return_params=True)
        assert y.shape == (3, 2, 3, 5, 7) and p.shape == (3, 12)

    @pytest.mark.parametrize("name", ["translation", "attention", "rigid", "similarity", "affine", "projective", "tps"])
    def test_identity_at_init(self, name):
        st = SpatialTransformer(transform=name, in_channels=1, in_size=(4, 6, 8)).eval()
        x = rand(2, 1, 4, 6, 8)
        with torch.no_grad():
            y, p = st(x, return_params=True)
        assert torch.equal(p, st.family.identity(2))
        assert (y - x).abs().max() < 1e-5

    def test_bounded_identity_at_init(self):
        st = SpatialTransformer(transform="similarity", in_channels=1, in_size=(4, 4, 4), bounded=True)
        x = rand(1, 1, 4, 4, 4)
        assert (st(x) - x).abs().max() < 1e-5

    def test_a_3d_family_object_with_an_int_size_is_a_cube(self):
        st = SpatialTransformer(transform=get_transform("translation", dims=3), in_channels=1, in_size=4)
        assert st.dims == 3 and st.in_size == (4, 4, 4)
        assert st(rand(1, 1, 4, 4, 4)).shape == (1, 1, 4, 4, 4)

    def test_loc_size(self):
        st = SpatialTransformer(transform="affine", in_channels=1, in_size=(8, 8, 8), loc_size=4)
        x = rand(2, 1, 8, 8, 8)
        assert torch.allclose(st.loc_input(x), F.avg_pool3d(x, 2))
        assert st.localization[0].in_channels == 1 and st.head.in_features == 50
        st = SpatialTransformer(transform="affine", in_channels=1, in_size=(6, 7, 8), loc_size=(4, 4, 4))
        assert st.loc_input(rand(1, 1, 6, 7, 8)).shape == (1, 1, 4, 4, 4)
        assert st(rand(1, 1, 6, 7, 8)).shape == (1, 1, 6, 7, 8)

    def test_gradient_reaches_the_localisation_net(self):
        st = SpatialTransformer(transform="affine", in_channels=1, in_size=(4, 4, 4))
        perturb_head(st)
        st(rand(2, 1, 4, 4, 4)).square().sum().backward()
        grads = [p.grad for p in st.localization.parameters()]
        assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
        assert float(st.head.weight.grad.abs().sum()) > 0

    def test_gradcheck_float64(self):
        torch.manual_seed(0)
        st = SpatialTransformer(transform="affine", in_channels=1, in_size=(4, 4, 4), out_size=(2, 3, 3)).double()
        perturb_head(st, std=0.2)
        x = rand(1, 1, 4, 4, 4, dtype=F64).requires_grad_()
        assert gradcheck(st, (x,), eps=1e-6, atol=1e-5)

    def test_tps_3d(self):
        st = SpatialTransformer(transform=get_transform("tps", dims=3, grid_size=2), in_channels=1, in_size=4)
        assert st.dims == 3 and st.num_params == 24
        perturb_head(st, std=0.2)
        x = rand(1, 1, 4, 4, 4, dtype=F64).requires_grad_()
        st = st.double()
        y, p = st(x, return_params=True)
        assert y.shape == x.shape and p.shape == (1, 24)
        assert torch.equal(y, warp(x, p, st.family)) and (y - x).abs().max() > 1e-3
        assert gradcheck(st, (x,), eps=1e-6, atol=1e-5)

    def test_custom_localization_feature_size_is_found(self):
        st = SpatialTransformer(nn.Flatten(), transform="translation", in_channels=1, in_size=(2, 3, 4))
        assert st.head.in_features == 24
        assert st(rand(1, 1, 2, 3, 4)).shape == (1, 1, 2, 3, 4)

    @pytest.mark.parametrize(
        ("shape", "message"),
        [
            ((1, 1, 4, 4), "x must have shape (B, 1, 4, 4, 4) for this 3-D transformer, got shape (1, 1, 4, 4)"),
            ((1, 2, 4, 4, 4), "x must have shape (B, 1, 4, 4, 4) for this 3-D transformer, got shape (1, 2, 4, 4, 4)"),
            ((1, 1, 4, 4, 5), "x must have shape (B, 1, 4, 4, 4) for this 3-D transformer, got shape (1, 1, 4, 4, 5)"),
            ((1, 1, 1, 4, 4, 4), "x must have shape (B, C, H, W) or (B, C, D, H, W), got shape (1, 1, 1, 4, 4, 4)"),
        ],
    )
    def test_wrong_input_is_one_line(self, shape, message):
        st = SpatialTransformer(transform="affine", in_channels=1, in_size=(4, 4, 4))
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            st(torch.zeros(shape))

    def test_a_2d_transformer_refuses_a_volume(self):
        st = SpatialTransformer(transform="affine", in_channels=1, in_size=(4, 4))
        with pytest.raises(ValueError, match=r"^x must have shape \(B, C, H, W\), got shape \(1, 1, 4, 4, 4\)$"):
            st(torch.zeros(1, 1, 4, 4, 4))

    def test_refusals(self):
        with pytest.raises(ValueError, match=r"^mode 'bicubic' is 2-D only"):
            SpatialTransformer(in_channels=1, in_size=(4, 4, 4), mode="bicubic")
        with pytest.raises(TypeError, match=r"out_size must be an int or a triple \(D, H, W\)"):
            SpatialTransformer(in_channels=1, in_size=(4, 4, 4), out_size=(4, 4))
        with pytest.raises(ValueError, match=r"loc_size must not exceed in_size \(4, 4, 4\), got \(5, 4, 4\)"):
            SpatialTransformer(in_channels=1, in_size=(4, 4, 4), loc_size=(5, 4, 4))
        with pytest.raises(ValueError, match=r"unknown transform 'twirl' in 3-D"):
            SpatialTransformer(transform="twirl", in_channels=1, in_size=(4, 4, 4))
        with pytest.raises(ValueError, match=r"is a 2-D family, but dims=3 was asked for"):
            SpatialTransformer(transform=get_transform("affine"), in_channels=1, in_size=(4, 4, 4))
