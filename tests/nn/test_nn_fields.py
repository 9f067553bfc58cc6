"""Dense and velocity fields in SpatialTransformer, and the 3-D parallel, series and inverse compositional stacks.

References never come from the code under test: F.interpolate + F.affine_grid + F.grid_sample
written out here (the dense transformer's warp), the documented 4x4 matrices applied to the
field's grid (a series of an affine and a dense stage), F.affine_grid of the product of two
matrices (the 3-D IC's composition).
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck

from stnkit.geometry import get_transform, integrate_velocity
from stnkit.nn import (
    InverseCompositionalTransformer,
    ParallelTransformers,
    SeriesTransformers,
    SpatialTransformer,
)

F64 = torch.float64
SIZES = {2: (12, 10), 3: (6, 8, 10)}


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def perturb_head(st, std=0.05, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        st.head.weight.copy_(torch.randn(st.head.weight.shape, generator=gen) * std)
        st.head.bias.add_(torch.randn(st.head.bias.shape, generator=gen) * std)


def reference_dense_warp(x, field, align_corners, velocity_steps=None):
    """F.interpolate the low-resolution field to x's size, add it to F.affine_grid's identity, grid_sample."""
    b, dims = x.shape[0], x.ndim - 2
    mode = "bilinear" if dims == 2 else "trilinear"
    u = F.interpolate(field, size=x.shape[2:], mode=mode, align_corners=align_corners)
    if velocity_steps is not None:
        u = integrate_velocity(u, velocity_steps, align_corners)
    eye = torch.eye(dims, dims + 1, dtype=x.dtype).expand(b, -1, -1)
    grid = F.affine_grid(eye, list(x.shape), align_corners=align_corners) + u.movedim(1, -1)
    return F.grid_sample(x, grid, align_corners=align_corners)


def one_line(exc, fn, pattern):
    with pytest.raises(exc, match=pattern) as info:
        fn()
    assert "\n" not in str(info.value)


class TestFieldTransformer:
    @pytest.mark.parametrize("dims", [2, 3])
    @pytest.mark.parametrize("name", ["dense", "velocity"])
    def test_identity_at_init(self, dims, name):
        st = SpatialTransformer(transform=name, in_channels=2, in_size=SIZES[dims]).eval()
        x = rand(3, 2, *SIZES[dims])
        with torch.no_grad():
            y, field = st(x, return_params=True)
        assert st.dims == dims and st.family.name == name and st.family.dims == dims
        want = tuple(min(n, 8) for n in SIZES[dims])  # the documented default: sides capped at 8
        assert st.field_size == want and field.shape == (3, dims, *want)
        assert torch.equal(field, torch.zeros_like(field)) and st.num_params == dims * torch.Size(want).numel()
        assert (y - x).abs().max() < 1e-5

    @pytest.mark.parametrize("dims", [2, 3])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_warp_is_the_upsampled_field(self, dims, align_corners):
        st = SpatialTransformer(
            transform="dense", in_channels=1, in_size=SIZES[dims], field_size=3, align_corners=align_corners
        ).double()
        perturb_head(st, 0.02)
        x = rand(2, 1, *SIZES[dims], dtype=F64)
        y, field = st(x, return_params=True)
        assert field.shape == (2, dims, *(3,) * dims) and field.abs().max() > 1e-3
        torch.testing.assert_close(y, reference_dense_warp(x, field, align_corners), atol=1e-12, rtol=0)
        assert (y - x).abs().max() > 1e-3

    @pytest.mark.parametrize("dims", [2, 3])
    def test_velocity_is_upsampled_then_integrated(self, dims):
        fam = get_transform("velocity", dims=dims, steps=4)
        st = SpatialTransformer(transform=fam, in_channels=1, in_size=SIZES[dims], field_size=4).double()
        perturb_head(st, 0.02, seed=1)
        x = rand(1, 1, *SIZES[dims], dtype=F64, seed=2)
        y, v = st(x, return_params=True)
        torch.testing.assert_close(y, reference_dense_warp(x, v, False, velocity_steps=4), atol=1e-12, rtol=0)
        # control: the reference tells dense from velocity apart
        assert (y - reference_dense_warp(x, v, False)).abs().max() > 1e-6

    def test_field_at_the_output_size_is_not_resampled(self):
        st = SpatialTransformer(transform="dense", in_channels=1, in_size=(6, 6), field_size=6)
        f = torch.randn(1, 2, 6, 6)
        assert st.upsample_field(f, (6, 6)) is f
        assert st.grid(f, (6, 6)).shape == (1, 6, 6, 2)

    def test_out_size(self):
        st = SpatialTransformer(transform="dense", in_channels=1, in_size=(8, 8, 8), out_size=(4, 5, 6))
        assert st.field_size == (4, 5, 6)  # from out_size
        assert st(rand(2, 1, 8, 8, 8)).shape == (2, 1, 4, 5, 6)

    @pytest.mark.parametrize("dims", [2, 3])
    def test_gradcheck_float64(self, dims):
        size = (4, 5) if dims == 2 else (3, 4, 4)
        st = SpatialTransformer(transform="velocity", in_channels=1, in_size=size, field_size=2).double()
        perturb_head(st, 0.1)
        x = rand(1, 1, *size, dtype=F64).requires_grad_()
        assert gradcheck(st, (x,), eps=1e-6, atol=1e-5)

    def test_gradients_reach_the_localisation_net(self):
        st = SpatialTransformer(transform="dense", in_channels=1, in_size=(8, 8, 8))
        perturb_head(st)
        st(rand(2, 1, 8, 8, 8)).square().sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in st.localization.parameters())

    def test_custom_localization_and_lazy_head(self):
        st = SpatialTransformer(nn.Flatten(), transform="dense", field_size=(2, 3))
        x = rand(2, 1, 6, 6)
        y, field = st(x, return_params=True)
        assert st.head.in_features == 36 and field.shape == (2, 2, 2, 3) and torch.equal(field, torch.zeros_like(field))
        assert (y - x).abs().max() < 1e-5

    def test_refusals_are_one_line(self):
        one_line(
            ValueError,
            lambda: SpatialTransformer(transform="dense", in_channels=1, in_size=(4, 4), bounded=True),
            re.escape("bounded=True has no meaning for the 'dense' transform (a field), got True"),
        )
        one_line(
            ValueError,
            lambda: SpatialTransformer(transform="affine", in_channels=1, in_size=(4, 4), field_size=2),
            re.escape("field_size is for the 'dense' and 'velocity' transforms, got field_size=2 with transform"),
        )
        one_line(
            ValueError,
            lambda: SpatialTransformer(nn.Flatten(), transform="velocity"),
            re.escape("the 'velocity' transform needs field_size, or out_size or in_size to derive it, got None"),
        )
        one_line(
            TypeError,
            lambda: SpatialTransformer(transform="dense", in_channels=1, in_size=(4, 4, 4), field_size=(2, 2)),
            re.escape("field_size must be an int or a triple (D, H, W)"),
        )
        st = SpatialTransformer(transform="affine", in_channels=1, in_size=4)
        one_line(ValueError, lambda: st.upsample_field(torch.zeros(1, 2, 2, 2), (4, 4)), "upsample_field is for")


class TestStacks3D:
    def test_parallel(self):
        a = SpatialTransformer(transform="rigid", in_channels=1, in_size=(4, 6, 6))
        b = SpatialTransformer(transform="dense", in_channels=1, in_size=(4, 6, 6))
        x = rand(2, 1, 4, 6, 6)
        out, params = ParallelTransformers(a, b)(x, return_params=True)
        assert out.shape == (2, 2, 4, 6, 6) and [p.shape for p in params] == [(2, 6), (2, 3, 4, 6, 6)]
        assert (out - x.repeat(1, 2, 1, 1, 1)).abs().max() < 1e-5
        flat = SpatialTransformer(transform="affine", in_channels=1, in_size=(6, 6))
        one_line(
            ValueError, lambda: ParallelTransformers(a, flat), re.escape("must all be 2-D or all 3-D, got dims [3, 2]")
        )

    def test_series_affine_then_dense(self):
        x = rand(2, 1, 4, 6, 6, dtype=F64)
        a = SpatialTransformer(transform="affine", in_channels=1, in_size=(4, 6, 6)).double()
        b = SpatialTransformer(transform="dense", in_channels=1, in_size=(4, 6, 6), field_size=2).double()
        series = SeriesTransformers(a, b)
        assert (series(x) - x).abs().max() < 1e-12  # identity at init
        perturb_head(a, 0.02, seed=1)
        perturb_head(b, 0.02, seed=2)
        out, (theta, field) = series(x, return_params=True)
        # reference: the dense stage's grid (F.interpolate + F.affine_grid), then the affine's 3x4 matrix
        u = F.interpolate(field, size=(4, 6, 6), mode="trilinear", align_corners=False)
        eye = torch.eye(3, 4, dtype=F64).expand(2, -1, -1)
        g = F.affine_grid(eye, [2, 1, 4, 6, 6], align_corners=False) + u.movedim(1, -1)
        m = theta.view(2, 3, 4)
        g = torch.einsum("bij,bdhwj->bdhwi", m[:, :, :3], g) + m[:, None, None, None, :, 3]
        torch.testing.assert_close(out, F.grid_sample(x, g, align_corners=False), atol=1e-12, rtol=0)
        assert (out - x).abs().max() > 1e-3

    def test_series_matrices_compose(self):
        x = rand(1, 1, 5, 5, 5, dtype=F64)
        a = SpatialTransformer(transform=get_transform("rigid", dims=3), in_channels=1, in_size=5).double()
        b = SpatialTransformer(transform=get_transform("affine", dims=3), in_channels=1, in_size=5).double()
        perturb_head(a, 0.05, seed=3)
        perturb_head(b, 0.05, seed=4)
        out, (p, q) = SeriesTransformers(a, b)(x, return_params=True)
        m = a.family.matrix(p) @ b.family.matrix(q)
        ref = F.grid_sample(x, F.affine_grid(m[:, :3], [1, 1, 5, 5, 5], align_corners=False), align_corners=False)
        torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)

    def test_series_refusals(self):
        d = SpatialTransformer(transform="dense", in_channels=1, in_size=(4, 4, 4))
        a = SpatialTransformer(transform="affine", in_channels=1, in_size=(4, 4, 4))
        one_line(
            ValueError, lambda: SeriesTransformers(d, a), "can only be the last stage of a series, got one at stage 0"
        )
        flat = SpatialTransformer(transform="affine", in_channels=1, in_size=(4, 4))
        one_line(
            ValueError, lambda: SeriesTransformers(a, flat), re.escape("must all be 2-D or all 3-D, got dims [3, 2]")
        )

    def test_series_2d_dense_last(self):
        a = SpatialTransformer(transform="similarity", in_channels=1, in_size=8)
        d = SpatialTransformer(transform="dense", in_channels=1, in_size=8, field_size=4)
        x = rand(2, 1, 8, 8)
        assert (SeriesTransformers(a, d)(x) - x).abs().max() < 1e-5

    @pytest.mark.parametrize("name", ["rigid", "similarity", "affine", "projective"])
    def test_inverse_compositional_3d(self, name):
        ic = InverseCompositionalTransformer(transform=name, steps=2, in_channels=1, in_size=(4, 5, 6))
        x = rand(2, 1, 4, 5, 6)
        y, p = ic(x, return_params=True)
        assert ic.dims == 3 and p.shape == (2, ic.family.num_params) and (y - x).abs().max() < 1e-5

    def test_inverse_compositional_3d_composes_matrices(self):
        ic = InverseCompositionalTransformer(transform="affine", steps=2, in_channels=1, in_size=(4, 4, 4)).double()
        perturb_head(ic, 0.05)
        x = rand(1, 1, 4, 4, 4, dtype=F64)
        p1, p2 = ic.step_params(x)
        warped = F.grid_sample(
            x, F.affine_grid(p1.view(1, 3, 4), [1, 1, 4, 4, 4], align_corners=False), align_corners=False
        )
        dp = ic.predict_params(warped).view(1, 3, 4)
        last = torch.tensor([[[0.0, 0.0, 0.0, 1.0]]], dtype=F64)
        m = torch.cat([p1.view(1, 3, 4), last], 1) @ torch.cat([dp, last], 1)
        torch.testing.assert_close(p2.view(1, 3, 4), m[:, :3], atol=1e-12, rtol=0)
        x = x.requires_grad_()
        assert gradcheck(lambda x: ic(x), (x,), eps=1e-6, atol=1e-5)

    def test_inverse_compositional_3d_refusals(self):
        for name in ("tps", "dense"):
            one_line(
                ValueError,
                lambda name=name: InverseCompositionalTransformer(transform=name, in_channels=1, in_size=(4, 4, 4)),
                re.escape("transform must be a matrix family (translation, attention, rigid, similarity"),
            )
