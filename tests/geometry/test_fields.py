"""stnkit.geometry.fields: dense displacement and velocity fields in 2-D and 3-D.

References never come from the code under test: identity grids written out here from
the documented convention (numpy), torch's F.affine_grid / F.grid_sample, closed forms
(shifts, matrix exponentials, det(I + A), the inverse of an affine map), numpy's
gradient and scipy.ndimage.map_coordinates sampling voxel coordinates as VoxelMorph's
SpatialTransformer and MONAI's Warp do (voxel index + flow, channels in axis order,
linear interpolation, zeros or border padding).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from torch.autograd import gradcheck

from stnkit.geometry import (
    base_grid_3d,
    compose_fields,
    field_from_pixels,
    field_grid,
    field_to_pixels,
    folding_fraction,
    from_monai,
    from_voxelmorph,
    grid_to_field,
    integrate_velocity,
    invert_field,
    jacobian_determinant,
    to_monai,
    to_voxelmorph,
    warp_field,
)

F64 = torch.float64
SHAPES = {2: (12, 17), 3: (7, 9, 11)}  # anisotropic on purpose: x, y, z scale differently


# -- references written from the documented convention ----------------------------------


def centres(n: int, align_corners: bool) -> np.ndarray:
    j = np.arange(n, dtype=np.float64)
    if align_corners:
        return 2.0 * j / (n - 1) - 1.0
    return (2.0 * j + 1.0) / n - 1.0


def ref_points(spatial: tuple[int, ...], align_corners: bool = False, device="cpu", dtype=F64) -> torch.Tensor:
    """(1, n, *spatial): channel k the normalised coordinate along (x, y[, z]) = the reversed tensor axes."""
    axes = [centres(s, align_corners) for s in spatial]  # ([d,] h, w) order
    mesh = np.meshgrid(*axes, indexing="ij")
    return torch.from_numpy(np.stack(mesh[::-1])[None]).to(device, dtype)


def linear_field(m: torch.Tensor, t: torch.Tensor, spatial, align_corners=False, device="cpu", dtype=F64):
    """u(p) = M p + t in the normalised frame, (1, n, *spatial)."""
    p = ref_points(spatial, align_corners, device, F64)
    u = torch.einsum("ij,bj...->bi...", m.to(device, F64), p) + t.to(device, F64).view(1, -1, *[1] * len(spatial))
    return u.to(dtype)


def smooth_field(spatial, amp: float, seed: int, batch: int = 1, align_corners=False, device="cpu", dtype=F64):
    """A few low-frequency sinusoids per channel, max amplitude about ``amp`` (normalised units)."""
    gen = np.random.default_rng(seed)
    n = len(spatial)
    p = ref_points(spatial, align_corners).numpy()[0]
    out = np.zeros((batch, n, *spatial))
    for b in range(batch):
        for k in range(n):
            for _ in range(3):
                freq = gen.uniform(0.5, 1.5, size=n)
                phase = gen.uniform(0, 2 * np.pi)
                arg = np.tensordot(freq, p, axes=1) * np.pi / 2 + phase
                out[b, k] += gen.uniform(-1, 1) * amp / 3 * np.sin(arg)
    return torch.from_numpy(out).to(device, dtype)


def rand(*shape, seed=0, dtype=F64, device="cpu"):
    return torch.rand(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed)).to(device)


def eps(dtype) -> float:
    return torch.finfo(dtype).eps


def norms(u: torch.Tensor) -> torch.Tensor:
    return u.square().sum(1).sqrt()


def check_gradients(fn, *inputs):
    on_cuda = any(t.is_cuda for t in inputs)
    assert gradcheck(fn, inputs, nondet_tol=1e-12 if on_cuda else 0.0)


# -- the identity grid -----------------------------------------------------------------


class TestBaseGrid3d:
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_is_affine_grid_of_the_identity(self, align_corners, device, dtype):
        size = (4, 5, 6)
        g = base_grid_3d(size, align_corners, device=device, dtype=dtype)
        ref = F.affine_grid(torch.eye(3, 4, device=device, dtype=dtype)[None], (1, 1, *size), align_corners)[0]
        assert g.shape == (4, 5, 6, 3) and g.dtype == dtype and g.device.type == device.type
        torch.testing.assert_close(g, ref, atol=4 * eps(dtype), rtol=0)

    def test_x_y_z_order(self):
        g = base_grid_3d((2, 3, 4))
        expect = ref_points((2, 3, 4), dtype=torch.float32)[0].movedim(0, -1)
        torch.testing.assert_close(g, expect)

    def test_errors(self):
        with pytest.raises(TypeError, match="out_size"):
            base_grid_3d((2, 3))
        with pytest.raises(ValueError, match="out_size must be positive"):
            base_grid_3d((2, 0, 3))


class TestFieldGrid:
    @pytest.mark.parametrize("ndim", [2, 3])
    def test_round_trip_and_affine_grid(self, ndim, device):
        spatial = SHAPES[ndim]
        theta = torch.eye(ndim, ndim + 1, dtype=F64) + 0.1 * rand(ndim, ndim + 1, seed=1)
        grid = F.affine_grid(theta[None].to(device), (1, 1, *spatial), align_corners=False)
        u = grid_to_field(grid)
        assert u.shape == (1, ndim, *spatial)
        torch.testing.assert_close(field_grid(u), grid, atol=1e-14, rtol=0)
        # the field of an affine grid is u(p) = (theta[:, :n] - I) p + theta[:, n]
        ref = linear_field(theta[:, :ndim] - torch.eye(ndim, dtype=F64), theta[:, ndim], spatial, device=device)
        torch.testing.assert_close(u, ref, atol=1e-14, rtol=0)

    def test_errors(self):
        with pytest.raises(ValueError, match="u must have shape"):
            field_grid(torch.zeros(1, 3, 4, 4))
        with pytest.raises(ValueError, match="grid must have shape"):
            grid_to_field(torch.zeros(1, 4, 4, 3))
        with pytest.raises(TypeError, match="u must have a floating dtype"):
            field_grid(torch.zeros(1, 2, 4, 4, dtype=torch.int64))


# -- warp_field --------------------------------------------------------------------------


class TestWarpField:
    @pytest.mark.parametrize("ndim", [2, 3])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_zero_field_is_the_identity(self, ndim, align_corners, device, dtype):
        x = rand(2, 3, *SHAPES[ndim], seed=ndim, dtype=dtype, device=device)
        u = torch.zeros(2, ndim, *SHAPES[ndim], device=device, dtype=dtype)
        # nearest: bit-identical; (tri)linear: grid_sample's unnormalisation rounds, a few ulps
        assert torch.equal(warp_field(x, u, mode="nearest", align_corners=align_corners), x)
        out = warp_field(x, u, align_corners=align_corners)
        assert out.shape == x.shape and out.dtype == dtype
        assert (out - x).abs().max().item() <= 16 * eps(dtype)

    @pytest.mark.parametrize("ndim", [2, 3])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_equals_grid_sample_of_affine_grid(self, ndim, align_corners, device):
        spatial = SHAPES[ndim]
        x = rand(1, 2, *spatial, seed=3, device=device)
        theta = (torch.eye(ndim, ndim + 1, dtype=F64) + 0.2 * (rand(ndim, ndim + 1, seed=4) - 0.5))[None].to(device)
        m, t = theta[0, :, :ndim] - torch.eye(ndim, dtype=F64, device=device), theta[0, :, ndim]
        u = linear_field(m, t, spatial, align_corners, device)
        ref = F.grid_sample(x, F.affine_grid(theta, x.shape, align_corners), align_corners=align_corners)
        torch.testing.assert_close(warp_field(x, u, align_corners=align_corners), ref, atol=1e-12, rtol=0)

    @pytest.mark.parametrize("shift", [1, 3, -2])
    def test_translation_2d(self, shift, device, dtype):
        h, w = 5, 8
        x = rand(1, 2, h, w, seed=5, dtype=dtype, device=device)
        u = torch.zeros(1, 2, h, w, device=device, dtype=dtype)
        u[:, 0] = 2.0 * shift / w  # read `shift` columns to the right
        u[:, 1] = -2.0 / h  # and one row up
        out = warp_field(x, u)
        ref = torch.zeros_like(x)
        cols = slice(max(0, -shift), min(w, w - shift))
        src = slice(max(0, shift), min(w, w + shift))
        ref[:, :, 1:, cols] = x[:, :, :-1, src]
        torch.testing.assert_close(out, ref, atol=16 * eps(dtype), rtol=0)

    def test_translation_3d(self, device, dtype):
        x = rand(1, 1, 4, 5, 6, seed=6, dtype=dtype, device=device)
        u = torch.zeros(1, 3, 4, 5, 6, device=device, dtype=dtype)
        u[:, 2] = 2.0 / 4  # z: one slice deeper
        u[:, 0] = -2.0 * 2 / 6  # x: two columns left
        ref = torch.zeros_like(x)
        ref[:, :, :-1, :, 2:] = x[:, :, 1:, :, :-2]
        torch.testing.assert_close(warp_field(x, u), ref, atol=16 * eps(dtype), rtol=0)

    def test_input_of_another_size(self, device):
        # the frame is normalised: a field on 4 x 4 samples an 8 x 8 image
        x = rand(1, 1, 8, 8, seed=7, device=device)
        out = warp_field(x, torch.zeros(1, 2, 4, 4, dtype=F64, device=device))
        torch.testing.assert_close(out, F.avg_pool2d(x, 2), atol=1e-12, rtol=0)

    @pytest.mark.parametrize("ndim", [2, 3])
    def test_gradcheck(self, ndim, device):
        spatial = (4, 5) if ndim == 2 else (3, 4, 5)
        x = rand(1, 2, *spatial, seed=8, device=device).requires_grad_()
        u = (0.3 * (rand(1, ndim, *spatial, seed=9, device=device) - 0.5)).requires_grad_()
        check_gradients(lambda a, b: warp_field(a, b, padding_mode="border"), x, u)

    def test_errors(self):
        x, u = torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4)
        with pytest.raises(ValueError, match=r"x must have shape \(B, C, D, H, W\) for a 3-D field"):
            warp_field(x, torch.zeros(1, 3, 2, 4, 4))
        with pytest.raises(ValueError, match="u must have the batch size of x"):
            warp_field(x, torch.zeros(2, 2, 4, 4))
        with pytest.raises(ValueError, match="bicubic' is 2-D only"):
            warp_field(torch.zeros(1, 1, 2, 4, 4), torch.zeros(1, 3, 2, 4, 4), mode="bicubic")
        with pytest.raises(ValueError, match="padding_mode must be one of"):
            warp_field(x, u, padding_mode="wrap")
        with pytest.raises(ValueError, match="u must have shape"):
            warp_field(x, torch.zeros(1, 2, 4))


# -- compose_fields ----------------------------------------------------------------------


def affine_image(spatial, align_corners=False, device="cpu", dtype=F64) -> torch.Tensor:
    """(1, 2, *spatial): channels affine in the position; (tri)linear sampling reproduces them exactly."""
    p = ref_points(spatial, align_corners)[0]
    n = len(spatial)
    c0 = 1.0 + sum((k + 1) * p[k] for k in range(n))
    c1 = -0.5 + sum((-1) ** k * (0.3 + k) * p[k] for k in range(n))
    return torch.stack([c0, c1])[None].to(device, dtype)


def inside(pts: torch.Tensor, spatial, align_corners=False, margin=0.0) -> torch.Tensor:
    """(B, *spatial) mask of points (B, n, *spatial) inside the hull of the voxel centres, less ``margin``."""
    ok = torch.ones_like(pts[:, 0], dtype=torch.bool)
    for k, n in enumerate(reversed(spatial)):
        lim = (1.0 if align_corners else 1.0 - 1.0 / n) - margin
        ok &= pts[:, k].abs() <= lim
    return ok


class TestComposeFields:
    @pytest.mark.parametrize("ndim", [2, 3])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_law_exact_on_an_affine_image(self, ndim, align_corners, device, dtype):
        """warp(warp(x, a), b) == warp(x, compose(a, b)) exactly where (tri)linear sampling is exact."""
        spatial = SHAPES[ndim] if ndim == 2 else (10, 12, 14)
        x = affine_image(spatial, align_corners, device, dtype)
        a = smooth_field(spatial, 0.15, seed=1, align_corners=align_corners, device=device, dtype=dtype)
        b = smooth_field(spatial, 0.15, seed=2, align_corners=align_corners, device=device, dtype=dtype)
        c = compose_fields(a, b, align_corners)
        two = warp_field(warp_field(x, a, align_corners=align_corners), b, align_corners=align_corners)
        one = warp_field(x, c, align_corners=align_corners)
        p = ref_points(spatial, align_corners, device, dtype)
        # exact where every point read lies inside the centres' hull: q = p + b(p), and n + a(n) at the
        # nodes n of q's cell (then p + c(p), their convex combination, is inside too)
        good = inside(p + a, spatial, align_corners).to(dtype).unsqueeze(1)
        pool = F.max_pool2d if ndim == 2 else F.max_pool3d
        good = -pool(-good, 3, stride=1, padding=1)  # eroded by one voxel: q's cell lies around its nearest node
        ok = warp_field(good, b, mode="nearest", align_corners=align_corners)[:, 0] == 1
        ok &= inside(p + b, spatial, align_corners)
        assert ok.float().mean() > 0.25
        err = (two - one).abs().amax(1)[ok].max().item()
        assert err <= 200 * eps(dtype)
        # the other order is a different map: the law pins the order
        swapped = warp_field(x, compose_fields(b, a, align_corners), align_corners=align_corners)
        assert (two - swapped).abs().amax(1)[ok].max().item() > 1e-3

    @pytest.mark.parametrize("ndim", [2, 3])
    def test_law_on_a_smooth_image(self, ndim, device):
        """The law up to interpolation error, O(h^2) for a smooth image; the other order is off by more."""
        spatial = (48, 52) if ndim == 2 else (24, 26, 28)
        p = ref_points(spatial, device=device)
        x = torch.cos(2 * p[:, :1]) * torch.sin(1.5 * p[:, 1:2] + 0.3)
        a = smooth_field(spatial, 0.2, seed=3, device=device)
        b = smooth_field(spatial, 0.2, seed=4, device=device)
        c = compose_fields(a, b)
        two = warp_field(warp_field(x, a, padding_mode="border"), b, padding_mode="border")
        one = warp_field(x, c, padding_mode="border")
        swapped = warp_field(x, compose_fields(b, a), padding_mode="border")
        ok = inside(p + b, spatial, margin=0.1) & inside(p + c, spatial, margin=0.1)
        assert ok.float().mean() > 0.5
        h2 = (2.0 / min(spatial)) ** 2
        assert (two - one).abs()[:, 0][ok].max().item() < 2 * h2
        assert (two - swapped).abs()[:, 0][ok].max().item() > 4 * h2

    def test_constant_fields_add(self, device, dtype):
        a = torch.zeros(2, 2, 6, 7, device=device, dtype=dtype)
        b = torch.zeros_like(a)
        a[:, 0], a[:, 1], b[:, 0], b[:, 1] = 0.3, -0.2, -0.1, 0.45
        torch.testing.assert_close(compose_fields(a, b), a + b, atol=8 * eps(dtype), rtol=0)

    @pytest.mark.parametrize("ndim", [2, 3])
    def test_affine_fields_compose_as_matrices(self, ndim, device):
        spatial = SHAPES[ndim]
        ma, mb = 0.1 * (rand(ndim, ndim, seed=10) - 0.5), 0.1 * (rand(ndim, ndim, seed=11) - 0.5)
        ta, tb = 0.1 * (rand(ndim, seed=12) - 0.5), 0.1 * (rand(ndim, seed=13) - 0.5)
        a = linear_field(ma, ta, spatial, device=device)
        b = linear_field(mb, tb, spatial, device=device)
        eye = torch.eye(ndim, dtype=F64)
        # (I + Ma)((I + Mb) p + tb) + ta - p
        ref = linear_field((eye + ma) @ (eye + mb) - eye, (eye + ma) @ tb + ta, spatial, device=device)
        p = ref_points(spatial, device=device)
        ok = inside(p + b, spatial)
        c = compose_fields(a, b)
        assert ok.float().mean() > 0.5
        assert (c - ref).abs().amax(1)[ok].max().item() < 1e-12

    @settings(max_examples=15, deadline=None)
    @given(seed=st.integers(0, 10_000), amp=st.floats(0.02, 0.15), ndim=st.sampled_from([2, 3]))
    def test_associative(self, seed, amp, ndim):
        spatial = (24, 26) if ndim == 2 else (12, 13, 14)
        a, b, c = (smooth_field(spatial, amp, seed=seed + i) for i in range(3))
        left = compose_fields(compose_fields(a, b), c)
        bc = compose_fields(b, c)
        right = compose_fields(a, bc)
        # where no field is read outside its grid (border padding breaks associativity there, by design)
        p = ref_points(spatial)
        ok = inside(p + c, spatial) & inside(p + bc, spatial)
        assert ok.float().mean() > 0.5
        # interpolation error of a smooth field sampled between nodes: O(h^2 |u''|), h = 2 / n
        h = 2.0 / min(spatial)
        assert (left - right).abs().amax(1)[ok].max().item() <= 4 * amp * h**2 + 1e-12

    @pytest.mark.parametrize("ndim", [2, 3])
    def test_gradcheck(self, ndim, device):
        spatial = (4, 5) if ndim == 2 else (3, 4, 5)
        a = (0.3 * (rand(1, ndim, *spatial, seed=14, device=device) - 0.5)).requires_grad_()
        b = (0.3 * (rand(1, ndim, *spatial, seed=15, device=device) - 0.5)).requires_grad_()
        check_gradients(compose_fields, a, b)

    def test_errors(self):
        with pytest.raises(ValueError, match="a and b must be fields of the same dimension and batch"):
            compose_fields(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 2, 4, 4))
        with pytest.raises(ValueError, match="b must have shape"):
            compose_fields(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4))


# -- integrate_velocity ------------------------------------------------------------------


class TestIntegrateVelocity:
    @pytest.mark.parametrize(
        ("ndim", "generator", "radius"),
        [(2, [[0.0, -1.0], [1.0, 0.0]], 0.8), (3, [[0.0, -0.5, 0.3], [0.5, 0.0, -0.2], [-0.3, 0.2, 0.0]], 0.6)],
    )
    def test_rotation_against_matrix_exp(self, ndim, generator, radius, device, dtype):
        """v(p) = A p, A skew: the flow is the rotation exp(A); the error falls as 2^-steps."""
        spatial = (32, 32) if ndim == 2 else (12, 12, 12)
        a = torch.tensor(generator, dtype=F64)
        v = linear_field(a, torch.zeros(ndim), spatial, device=device, dtype=dtype)
        rot = torch.linalg.matrix_exp(a)
        truth = linear_field(rot - torch.eye(ndim, dtype=F64), torch.zeros(ndim), spatial, device=device)
        p = ref_points(spatial, device=device)
        disc = norms(p) < radius
        errs = []
        for steps in (2, 4, 6, 8):
            u = integrate_velocity(v, steps)
            assert u.dtype == dtype
            err = norms(u.to(F64) - truth)[disc].max().item()
            # (I + A / 2^s)^(2^s) - exp(A) ~ |A|^2 / 2^(s+1): linear fields are sampled exactly
            assert err <= torch.linalg.matrix_norm(a, 2).item() ** 2 * radius / 2**steps + 1e-5
            errs.append(err)
        assert all(e1 < 0.3 * e0 for e0, e1 in zip(errs, errs[1:]))

    def test_zero_steps_and_constant_velocity(self, device, dtype):
        v = smooth_field((6, 7), 0.2, seed=0, device=device, dtype=dtype)
        assert torch.equal(integrate_velocity(v, 0), v)
        c = torch.zeros(1, 3, 4, 5, 6, device=device, dtype=dtype)
        c[:, 0], c[:, 1], c[:, 2] = 0.3, -0.4, 0.2
        torch.testing.assert_close(integrate_velocity(c), c, atol=64 * eps(dtype), rtol=0)

    def test_is_diffeomorphic_where_the_displacement_is_not(self, device):
        # a velocity whose one-step displacement folds integrates to a field that does not
        v = smooth_field((32, 32), 1.2, seed=5, device=device)
        assert folding_fraction(v).item() > 0
        assert folding_fraction(integrate_velocity(v, 7)).item() == 0

    @pytest.mark.parametrize("ndim", [2, 3])
    def test_gradcheck(self, ndim, device):
        spatial = (4, 5) if ndim == 2 else (3, 4, 4)
        v = (0.4 * (rand(1, ndim, *spatial, seed=16, device=device) - 0.5)).requires_grad_()
        check_gradients(lambda t: integrate_velocity(t, steps=2), v)

    def test_errors(self):
        with pytest.raises(ValueError, match="steps must be an int >= 0"):
            integrate_velocity(torch.zeros(1, 2, 4, 4), -1)
        with pytest.raises(TypeError, match="steps must be an int"):
            integrate_velocity(torch.zeros(1, 2, 4, 4), 2.0)


# -- invert_field ------------------------------------------------------------------------


class TestInvertField:
    @pytest.mark.parametrize("ndim", [2, 3])
    def test_affine_against_the_analytic_inverse(self, ndim, device):
        spatial = SHAPES[ndim]
        m = 0.15 * (rand(ndim, ndim, seed=20) - 0.5)
        t = 0.1 * (rand(ndim, seed=21) - 0.5)
        u = linear_field(m, t, spatial, device=device)
        w, res = invert_field(u, iterations=200, tol=1e-12)
        eye = torch.eye(ndim, dtype=F64)
        inv = torch.linalg.inv(eye + m)
        truth = linear_field(inv - eye, -inv @ t, spatial, device=device)  # (I + M)^-1 (p - t) - p
        assert res.shape == (1,) and res.item() <= 1e-12
        # the returned residual bounds the error through the Lipschitz constant of the inverse
        p = ref_points(spatial, device=device)
        ok = inside(p + w, spatial)  # where u is read inside its grid, no border clamping
        assert ok.float().mean() > 0.6
        lip = torch.linalg.matrix_norm(inv, 2).item()
        assert norms(w - truth)[ok].max().item() <= lip * res.item() + 1e-12

    @pytest.mark.parametrize("ndim", [2, 3])
    def test_smooth_field_both_sides(self, ndim, device, dtype):
        spatial = (32, 34) if ndim == 2 else (14, 15, 16)
        u = smooth_field(spatial, 0.1, seed=22, batch=2, device=device, dtype=dtype)
        tol = 1e-10 if dtype == F64 else 1e-5
        w, res = invert_field(u, iterations=100, tol=tol)
        assert res.shape == (2,) and bool((res <= tol).all())
        # the residual is the largest norm of compose_fields(u, w), computed here again
        right = compose_fields(u, w)
        torch.testing.assert_close(norms(right).flatten(1).amax(1), res, atol=0, rtol=0)
        # the left composition is close to zero too, up to interpolation error
        left = compose_fields(w, u)
        p = ref_points(spatial, device=device, dtype=dtype)
        ok = inside(p + u, spatial, margin=0.05)
        assert norms(left)[ok].max().item() < 2e-3
        # warp by u, then by w: back to the image where nothing read the padding, up to two
        # bilinear interpolations of the image, each <= h^2 / 8 (|f_xx| + |f_yy|) <= 0.8 h^2
        x = torch.cos(2 * p[:, :1]) * torch.sin(1.5 * p[:, 1:2] + 0.3)
        x = x.expand(2, -1, *spatial)
        back = warp_field(warp_field(x, u, padding_mode="border"), w, padding_mode="border")
        assert (back - x)[:, 0][ok].abs().max().item() < 2 * (2.0 / min(spatial)) ** 2

    def test_zero_iterations(self, device):
        u = smooth_field((8, 9), 0.1, seed=23, device=device)
        w, res = invert_field(u, iterations=0)
        assert torch.equal(w, torch.zeros_like(u))
        torch.testing.assert_close(res, norms(u).flatten(1).amax(1), atol=0, rtol=0)

    def test_constant_field(self, device, dtype):
        u = torch.zeros(1, 3, 4, 5, 6, device=device, dtype=dtype)
        u[:, 1] = 0.3
        w, res = invert_field(u)
        torch.testing.assert_close(w, -u, atol=8 * eps(dtype), rtol=0)
        assert res.item() <= 8 * eps(dtype)

    def test_errors(self):
        with pytest.raises(ValueError, match="tol must be"):
            invert_field(torch.zeros(1, 2, 4, 4), tol=-1.0)


# -- jacobian_determinant, folding_fraction ----------------------------------------------


def ref_jacobian(u: torch.Tensor, align_corners: bool) -> np.ndarray:
    """numpy: voxel displacements, np.gradient (central inside, one-sided at the borders), det(I + grad)."""
    un = u.detach().cpu().double().numpy()
    n = un.shape[1]
    spatial = un.shape[2:]
    sizes = list(reversed(spatial))  # along x, y[, z]
    out = np.zeros((un.shape[0], *spatial))
    for b in range(un.shape[0]):
        jac = np.zeros((*spatial, n, n))
        for k in range(n):
            dk = un[b, k] * ((sizes[k] - 1) / 2 if align_corners else sizes[k] / 2)
            grads = np.gradient(dk)  # along tensor axes ([d,] h, w)
            for j in range(n):
                jac[..., k, j] = grads[n - 1 - j] + (k == j)
        out[b] = np.linalg.det(jac)
    return out


class TestJacobianDeterminant:
    @pytest.mark.parametrize("ndim", [2, 3])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_affine_field_is_det_i_plus_a(self, ndim, align_corners, device, dtype):
        spatial = SHAPES[ndim]
        m = 0.6 * (rand(ndim, ndim, seed=30 + ndim) - 0.5)
        u = linear_field(m, torch.full((ndim,), 0.1), spatial, align_corners, device, dtype)
        det = jacobian_determinant(u, align_corners)
        assert det.shape == (1, *spatial) and det.dtype == dtype
        expect = torch.linalg.det(torch.eye(ndim, dtype=F64) + m).item()
        torch.testing.assert_close(det, torch.full_like(det, expect), atol=64 * eps(dtype), rtol=0)

    def test_zero_field_is_one(self, device, dtype):
        det = jacobian_determinant(torch.zeros(2, 3, 3, 4, 5, device=device, dtype=dtype))
        assert torch.equal(det, torch.ones_like(det))

    @pytest.mark.parametrize("ndim", [2, 3])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_against_numpy_gradient(self, ndim, align_corners, device):
        spatial = SHAPES[ndim]
        u = smooth_field(spatial, 0.3, seed=33, batch=2, align_corners=align_corners, device=device)
        det = jacobian_determinant(u, align_corners).cpu().numpy()
        np.testing.assert_allclose(det, ref_jacobian(u, align_corners), atol=1e-12, rtol=0)

    def test_voxelmorph_pixel_field(self):
        # a field of 1 voxel per column along x: x -> 2 x in voxels, det 2, whatever the frame
        d = torch.zeros(1, 2, 5, 6, dtype=F64)
        d[:, 0] = torch.arange(6, dtype=F64)
        for ac in (False, True):
            det = jacobian_determinant(field_from_pixels(d, ac), ac)
            torch.testing.assert_close(det, torch.full_like(det, 2.0))

    def test_depth_one(self):
        u = smooth_field((6, 7), 0.3, seed=34)
        det2 = jacobian_determinant(u)
        u3 = torch.cat([u, torch.zeros_like(u[:, :1])], 1).unsqueeze(2)  # (1, 3, 1, 6, 7)
        torch.testing.assert_close(jacobian_determinant(u3)[:, 0], det2)

    @pytest.mark.parametrize("ndim", [2, 3])
    def test_gradcheck(self, ndim, device):
        spatial = (4, 5) if ndim == 2 else (3, 4, 5)
        u = (0.3 * (rand(1, ndim, *spatial, seed=35, device=device) - 0.5)).requires_grad_()
        check_gradients(jacobian_determinant, u)


class TestFoldingFraction:
    def test_folding_field(self, device, dtype):
        # x -> x + 0.5 sin(4 pi x) / (4 pi) * 4: slope 1 + 2 cos(...) < 0 on a band
        h, w = 8, 64
        p = ref_points((h, w), device=device, dtype=dtype)
        u = torch.zeros(1, 2, h, w, device=device, dtype=dtype)
        u[:, 0] = 0.5 / math.pi * torch.sin(4 * math.pi * p[:, 0])
        frac = folding_fraction(u)
        assert frac.shape == (1,) and frac.dtype == dtype
        # 1 + 2 cos(4 pi x) <= 0 on a third of the period
        assert 0.25 < frac.item() < 0.42

    @pytest.mark.parametrize("ndim", [2, 3])
    def test_smooth_small_field_does_not_fold(self, ndim, device, dtype):
        u = smooth_field(SHAPES[ndim], 0.05, seed=36, batch=3, device=device, dtype=dtype)
        assert torch.equal(folding_fraction(u), torch.zeros(3, device=device, dtype=dtype))

    def test_mirror_folds_everywhere(self, device):
        u = torch.zeros(1, 3, 3, 4, 5, dtype=F64, device=device)
        u[:, 2] = -2.0 * ref_points((3, 4, 5), device=device)[:, 2]  # z -> -z
        assert folding_fraction(u).item() == 1.0


# -- voxel units and the peers' conventions ----------------------------------------------


def voxel_sample(x: np.ndarray, flow: np.ndarray, mode: str) -> np.ndarray:
    """scipy: sample every channel of x (B, C, *spatial) at voxel index + flow, channels of flow in axis order."""
    b, c = x.shape[:2]
    spatial = x.shape[2:]
    idx = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in spatial], indexing="ij"))
    out = np.zeros_like(x)
    for i in range(b):
        coords = idx + flow[i]
        for j in range(c):
            out[i, j] = ndimage.map_coordinates(x[i, j], coords, order=1, mode=mode, cval=0.0)
    return out


class TestPixels:
    @pytest.mark.parametrize("ndim", [2, 3])
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("order", ["xyz", "dhw"])
    def test_round_trip(self, ndim, align_corners, order, device, dtype):
        u = smooth_field(SHAPES[ndim], 0.3, seed=40, device=device, dtype=dtype)
        d = field_to_pixels(u, align_corners, order)
        torch.testing.assert_close(field_from_pixels(d, align_corners, order), u)

    def test_scale_and_order(self):
        u = torch.zeros(1, 3, 4, 6, 10, dtype=F64)
        u[:, 0], u[:, 1], u[:, 2] = 1.0, 0.5, -0.5  # along x (10), y (6), z (4)
        d = field_to_pixels(u)[0, :, 0, 0, 0]
        torch.testing.assert_close(d, torch.tensor([5.0, 1.5, -1.0], dtype=F64))
        d = field_to_pixels(u, align_corners=True, order="dhw")[0, :, 0, 0, 0]
        torch.testing.assert_close(d, torch.tensor([-0.75, 1.25, 4.5], dtype=F64))

    def test_errors(self):
        with pytest.raises(ValueError, match="order must be one of"):
            field_to_pixels(torch.zeros(1, 2, 4, 4), order="zyx")
        with pytest.raises(ValueError, match="align_corners=True needs at least 2 voxels"):
            field_from_pixels(torch.zeros(1, 3, 1, 4, 4), align_corners=True)

    @pytest.mark.parametrize("ndim", [2, 3])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_voxelmorph_against_scipy(self, ndim, align_corners, device, dtype):
        """VoxelMorph's SpatialTransformer reads voxel i at i + flow(i), linear, zeros outside."""
        spatial = SHAPES[ndim]
        x = rand(2, 2, *spatial, seed=41)
        flow = 3.0 * (rand(2, ndim, *spatial, seed=42) - 0.5)  # up to 1.5 voxels, some outside
        ref = voxel_sample(x.numpy(), flow.numpy(), "grid-constant")
        u = from_voxelmorph(flow.to(device, dtype), align_corners)
        out = warp_field(x.to(device, dtype), u, align_corners=align_corners)
        np.testing.assert_allclose(out.cpu().double().numpy(), ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(to_voxelmorph(u, align_corners).cpu().double(), flow)

    @pytest.mark.parametrize("ndim", [2, 3])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_monai_against_scipy(self, ndim, align_corners, device, dtype):
        """MONAI's Warp reads voxel i at i + ddf(i), linear, border padding by default."""
        spatial = SHAPES[ndim]
        x = rand(1, 3, *spatial, seed=43)
        ddf = 4.0 * (rand(1, ndim, *spatial, seed=44) - 0.5)
        ref = voxel_sample(x.numpy(), ddf.numpy(), "nearest")  # nearest: the edge value beyond the edge
        u = from_monai(ddf.to(device, dtype), align_corners)
        out = warp_field(x.to(device, dtype), u, padding_mode="border", align_corners=align_corners)
        np.testing.assert_allclose(out.cpu().double().numpy(), ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(to_monai(u, align_corners).cpu().double(), ddf)

    def test_oracle_sees_the_channel_order(self):
        # swapping the channel order must break the oracle: the test can fail
        spatial = SHAPES[3]
        x = rand(1, 1, *spatial, seed=45)
        flow = 3.0 * (rand(1, 3, *spatial, seed=46) - 0.5)
        ref = voxel_sample(x.numpy(), flow.numpy(), "grid-constant")
        wrong = warp_field(x, field_from_pixels(flow, order="xyz"))
        assert np.abs(wrong.numpy() - ref).max() > 0.1
