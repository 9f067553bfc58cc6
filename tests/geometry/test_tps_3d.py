"""stnkit.geometry.ThinPlateSpline3D: the thin-plate spline on volumes (kernel U(r) = r).

References never come from the code under test: scipy's RBFInterpolator with
kernel="linear" (-r) and degree 1 on the control points (the spline), then
scipy.ndimage.map_coordinates(order=1) at the documented voxel coordinates (the
warp); the 3-D affine family and F.affine_grid (affine maps are reproduced);
central finite differences (the Jacobian). Volumes are 3-7 voxels a side.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from scipy.interpolate import RBFInterpolator
from torch.autograd import gradcheck

import stnkit
from stnkit.geometry import ThinPlateSpline3D, base_grid_3d, get_transform, sample, warp

F64 = torch.float64
SIZE = (3, 5, 7)  # (D, H, W)
PROPERTY = settings(deadline=None, max_examples=20)


def esc(s: str) -> str:
    return re.escape(s)


def control_points(k: int) -> np.ndarray:
    """(k^3, 3) control points (x, y, z) from the documented layout: z outermost, x innermost."""
    c = np.linspace(-1.0, 1.0, k)
    cz, cy, cx = np.meshgrid(c, c, c, indexing="ij")
    return np.stack([cx.ravel(), cy.ravel(), cz.ravel()], -1)


def ref_points(size, align_corners) -> np.ndarray:
    """(D*H*W, 3) voxel centres (x, y, z), depth outermost, from the documented formula."""

    def centres(n):
        j = np.arange(n, dtype=np.float64)
        if align_corners:
            return 2 * j / (n - 1) - 1 if n > 1 else np.zeros(1)
        return (2 * j + 1) / n - 1

    gz, gy, gx = np.meshgrid(*(centres(n) for n in size), indexing="ij")
    return np.stack([gx.ravel(), gy.ravel(), gz.ravel()], -1)


def scipy_spline(k: int, offsets: np.ndarray, reg: float = 0.0) -> RBFInterpolator:
    ctrl = control_points(k)
    return RBFInterpolator(ctrl, ctrl + offsets.reshape(-1, 3), kernel="linear", degree=1, smoothing=reg)


def scipy_warp(x: np.ndarray, grid: np.ndarray, align_corners: bool) -> np.ndarray:
    """map_coordinates(order=1, zeros outside) of a (C, D, H, W) volume at normalised points (D', H', W', 3)."""
    spatial = x.shape[1:]
    coords = []
    for axis, n in enumerate(spatial):  # tensor axis d, h, w reads grid coordinate z, y, x
        g = grid[..., 2 - axis]
        coords.append((g + 1) * (n - 1) / 2 if align_corners else ((g + 1) * n - 1) / 2)
    return np.stack([ndimage.map_coordinates(c, coords, order=1, mode="grid-constant", cval=0.0) for c in x])


def offsets(k: int, std: float, seed: int, dtype=F64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return std * torch.randn(1, 3 * k**3, generator=gen, dtype=dtype)


def one_line(exc, fn, pattern):
    with pytest.raises(exc, match=pattern) as info:
        fn()
    assert "\n" not in str(info.value)


class TestSmoke:
    def test_lookup_and_shapes(self, device):
        fam = get_transform("tps", dims=3)
        assert isinstance(fam, ThinPlateSpline3D) and fam.dims == 3 and fam.num_params == 192
        assert repr(get_transform("tps", dims=3, grid_size=3)) == "ThinPlateSpline3D(grid_size=3, reg=0.0)"
        assert get_transform("tps", dims=3, grid_size=3).num_params == 81
        p = fam.random(2, generator=torch.Generator().manual_seed(0), device=device)
        assert fam.grid(p, SIZE).shape == (2, *SIZE, 3) and fam.grid(p, SIZE).device.type == device.type
        assert fam.transform_points(p, torch.rand(2, 9, 3, device=device)).shape == (2, 9, 3)
        assert fam.inverse_grid(p, 4).shape == (2, 4, 4, 4, 3)
        assert fam.jacobian_det(p, SIZE).shape == (2, *SIZE) and fam.folds(p, SIZE).shape == (2,)
        assert fam.bound(torch.full((2, 192), 1e9)).sub(fam.identity(2)).abs().max() <= 1
        x = torch.rand(2, 3, *SIZE, device=device)
        assert warp(x, p, "tps").shape == x.shape  # the dimension comes from x
        assert warp(x, p, "tps", out_size=(2, 3, 4)).shape == (2, 3, 2, 3, 4)

    def test_exceptions(self):
        fam = get_transform("tps", dims=3, grid_size=2)
        x = torch.rand(1, 1, *SIZE)
        one_line(
            ValueError,
            lambda: warp(x, torch.zeros(1, 8), fam),
            esc("params for the 3-D transform 'tps' (grid_size=2) must have shape (B, 24), got shape (1, 8)"),
        )
        one_line(ValueError, lambda: fam.grid(torch.full((1, 24), float("nan")), 3), "params must be finite")
        one_line(ValueError, lambda: ThinPlateSpline3D(reg=-1.0), esc("reg must be a finite number >= 0, got -1.0"))
        one_line(ValueError, lambda: ThinPlateSpline3D(grid_size=1), "grid_size must be")
        one_line(
            ValueError,
            lambda: fam.transform_points(fam.identity(1), torch.zeros(1, 4, 2)),
            esc("points must have shape (B, N, 3) with x, y, z in that order, got shape (1, 4, 2)"),
        )
        one_line(
            ValueError,
            lambda: warp(torch.rand(1, 1, 4, 4), fam.identity(1), fam),
            esc("is 3-D, but x of shape (1, 1, 4, 4) is a (B, C, H, W) image"),
        )


class TestIdentity:
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_identity_is_exact(self, align_corners):
        fam = ThinPlateSpline3D(grid_size=3)
        ident = fam.identity(2, dtype=F64)
        assert torch.equal(ident, torch.zeros(2, 81, dtype=F64))
        ref = base_grid_3d(SIZE, align_corners, dtype=F64).expand(2, -1, -1, -1, -1)
        assert torch.equal(fam.grid(ident, SIZE, align_corners), ref)
        x = torch.rand(2, 2, *SIZE, dtype=F64)
        torch.testing.assert_close(warp(x, ident, fam, align_corners=align_corners), x, atol=1e-12, rtol=0)
        torch.testing.assert_close(fam.jacobian_det(ident, SIZE, align_corners), torch.ones(2, *SIZE, dtype=F64))
        torch.testing.assert_close(fam.inverse_grid(ident, SIZE, align_corners), ref, atol=1e-12, rtol=0)
        assert torch.equal(fam.bound(torch.zeros_like(ident)), ident)
        assert torch.equal(fam.random(2, 0.0, dtype=F64), ident)
        assert not fam.folds(ident, SIZE).any()


class TestAgainstScipy:
    @pytest.mark.parametrize("k", [2, 3, 4])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_grid_is_scipy_rbf_linear(self, k, align_corners):
        off = offsets(k, 0.15, seed=k)
        ref = scipy_spline(k, off.numpy())(ref_points(SIZE, align_corners))
        grid = get_transform("tps", dims=3, grid_size=k).grid(off, SIZE, align_corners)
        np.testing.assert_allclose(grid.view(-1, 3).numpy(), ref, atol=1e-10, rtol=0)
        # control: the reference tells a wrong kernel apart (r^2 log r^2, the 2-D one)
        ctrl = control_points(k)
        wrong = RBFInterpolator(ctrl, ctrl + off.numpy().reshape(-1, 3), kernel="thin_plate_spline", degree=1)
        assert np.abs(wrong(ref_points(SIZE, align_corners)) - ref).max() > 1e-3

    def test_smoothing_is_scipy_smoothing(self):
        off = offsets(3, 0.2, seed=5)
        pts = np.random.default_rng(0).uniform(-1, 1, (40, 3))
        fam = ThinPlateSpline3D(grid_size=3, reg=0.3)
        out = fam.transform_points(off, torch.from_numpy(pts)[None])[0].numpy()
        np.testing.assert_allclose(out, scipy_spline(3, off.numpy(), reg=0.3)(pts), atol=1e-10, rtol=0)
        # smoothing: the control points no longer land on their targets
        tgt = fam.targets(off)
        assert (fam.transform_points(off, fam.control_points[None]) - tgt).abs().max() > 1e-3

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_warp_is_map_coordinates(self, align_corners, device, dtype):
        off = offsets(4, 0.08, seed=7)
        x = torch.rand(2, 2, 6, 5, 7, dtype=F64, generator=torch.Generator().manual_seed(1))
        grid = scipy_spline(4, off.numpy())(ref_points((4, 6, 5), align_corners)).reshape(4, 6, 5, 3)
        ref = np.stack([scipy_warp(xb.numpy(), grid, align_corners) for xb in x])
        params = off.to(device, dtype).expand(2, -1)
        out = warp(x.to(device, dtype), params, "tps", out_size=(4, 6, 5), align_corners=align_corners)
        tol = 1e-10 if dtype == F64 else 1e-5
        np.testing.assert_allclose(out.cpu().double().numpy(), ref, atol=tol, rtol=0)

    def test_points_are_scipy(self, device):
        off = offsets(3, 0.2, seed=9)
        pts = np.random.default_rng(1).uniform(-1.2, 1.2, (50, 3))
        out = get_transform("tps", dims=3, grid_size=3).transform_points(
            off.to(device), torch.from_numpy(pts).to(device)[None]
        )
        np.testing.assert_allclose(out[0].cpu().numpy(), scipy_spline(3, off.numpy())(pts), atol=1e-10, rtol=0)


def _affine_3d():
    small = st.floats(-0.3, 0.3)
    return st.tuples(*[small] * 12).map(lambda v: torch.tensor(v, dtype=F64).view(1, 3, 4))


class TestLaws:
    @PROPERTY
    @given(theta=_affine_3d(), k=st.integers(2, 4))
    def test_affine_maps_are_reproduced(self, theta, k):
        """Offsets that move the control points by an affine map give that affine map's grid."""
        theta = theta + torch.eye(3, 4, dtype=F64)
        fam = ThinPlateSpline3D(grid_size=k)
        c = fam.control_points
        off = (c @ theta[0, :, :3].T + theta[0, :, 3] - c).reshape(1, -1)
        ref = torch.nn.functional.affine_grid(theta, [1, 1, *SIZE], align_corners=False)
        torch.testing.assert_close(fam.grid(off, SIZE), ref, atol=1e-10, rtol=0)
        det = torch.linalg.det(theta[0, :, :3]).expand(1, *SIZE)
        torch.testing.assert_close(fam.jacobian_det(off, SIZE), det, atol=1e-10, rtol=0)

    @PROPERTY
    @given(seed=st.integers(0, 2**16), std=st.floats(0.0, 0.06))
    def test_inverse_grid_inverts(self, seed, std):
        """T(inverse_grid(p)) is the identity grid for a spline that does not fold."""
        fam = ThinPlateSpline3D(grid_size=3)
        off = offsets(3, std, seed)
        if fam.folds(off, 6).any():
            return
        u = fam.inverse_grid(off, (3, 4, 5))
        back = fam.transform_points(off, u.view(1, -1, 3))
        torch.testing.assert_close(back, base_grid_3d((3, 4, 5), dtype=F64).view(1, -1, 3), atol=1e-8, rtol=0)

    def test_inverse_warp_brings_the_volume_back(self):
        fam = ThinPlateSpline3D(grid_size=3)
        off = offsets(3, 0.04, seed=3)
        z, y, x = torch.meshgrid(*(torch.linspace(-1, 1, 24, dtype=F64),) * 3, indexing="ij")
        vol = (torch.sin(2 * x) * torch.cos(y) + z)[None, None]
        back = sample(warp(vol, off, fam), fam.inverse_grid(off, 24))
        inner = (slice(None), slice(None), *(slice(6, -6),) * 3)
        err = (back - vol)[inner].abs().max()  # trilinear resampling twice: 0.024 at 12^3, 0.008 at 24^3
        assert err < 0.012 and (warp(vol, off, fam) - vol)[inner].abs().max() > 5 * err

    def test_jacobian_is_finite_differences(self):
        fam = ThinPlateSpline3D(grid_size=3)
        off = offsets(3, 0.1, seed=4)
        size = (4, 4, 4)  # voxel centres away from the control points (where r has no derivative)
        pts = base_grid_3d(size, dtype=F64).view(1, -1, 3)
        h = 1e-6
        cols = []
        for j in range(3):
            e = torch.zeros(3, dtype=F64)
            e[j] = h
            cols.append((fam.transform_points(off, pts + e) - fam.transform_points(off, pts - e)) / (2 * h))
        ref = torch.linalg.det(torch.stack(cols, -1)).view(1, *size)
        torch.testing.assert_close(fam.jacobian_det(off, size), ref, atol=1e-7, rtol=0)

    def test_folds(self):
        fam = ThinPlateSpline3D(grid_size=3)
        params = torch.zeros(2, 81, dtype=F64)
        params[1, 39] = 1.5  # the centre point (index 13) past its right neighbour along x
        assert fam.folds(params, 8).tolist() == [False, True]
        assert (fam.jacobian_det(params, 8)[1] <= 0).any()


class TestGradients:
    def test_gradcheck_warp(self, device):
        fam = ThinPlateSpline3D(grid_size=2)
        x = torch.rand(1, 2, 3, 4, 4, dtype=F64, device=device, requires_grad=True)
        p = offsets(2, 0.1, seed=1).to(device).requires_grad_()
        assert gradcheck(lambda x, p: warp(x, p, fam, out_size=(2, 3, 3)), (x, p), eps=1e-6, atol=1e-6)

    def test_gradcheck_points_inverse_and_jacobian(self, device):
        fam = ThinPlateSpline3D(grid_size=2)
        p = offsets(2, 0.1, seed=2).to(device).requires_grad_()
        pts = (0.3 * torch.rand(1, 5, 3, dtype=F64, device=device) + 0.1).requires_grad_()
        assert gradcheck(fam.transform_points, (p, pts), eps=1e-6, atol=1e-6)
        assert gradcheck(lambda p: fam.inverse_grid(p, (2, 2, 3), iters=3), (p,), eps=1e-6, atol=1e-6)
        assert gradcheck(lambda p: fam.jacobian_det(p, (2, 3, 2)), (p,), eps=1e-6, atol=1e-6)

    def test_float32_and_half_grids(self):
        fam = ThinPlateSpline3D(grid_size=2)
        p = offsets(2, 0.1, seed=3)
        g64 = fam.grid(p, SIZE)
        assert (fam.grid(p.float(), SIZE).double() - g64).abs().max() < 1e-6
        assert fam.grid(p.half(), SIZE).dtype == torch.float16

    def test_huge_offsets_stay_finite(self):
        g = ThinPlateSpline3D(grid_size=2).grid(torch.full((1, 24), 1e30), 3)
        assert torch.isfinite(g).all() and g.abs().max() <= stnkit.geometry.GRID_LIMIT
