"""stnkit.geometry.cubic: the cubic B-spline prefilter and sampler against scipy.ndimage.

References: scipy.ndimage.map_coordinates(order=3) and spline_filter1d, and the
interpolation equations x[k] = (c[k-1] + 4 c[k] + c[k+1]) / 6 written out here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch.autograd import gradcheck

from stnkit.geometry import bspline_prefilter, sample_cubic

F64 = torch.float64
# stnkit padding mode and align_corners -> scipy mode
SCIPY_MODES = [
    ("zeros", False, "grid-constant"),
    ("zeros", True, "grid-constant"),
    ("border", False, "nearest"),
    ("border", True, "nearest"),
    ("reflection", False, "reflect"),
    ("reflection", True, "mirror"),
]


def extend(c: np.ndarray, boundary: str) -> np.ndarray:
    """c[-1] and c[n] of the symmetric extension along the last axis."""
    if boundary == "mirror":
        lo, hi = c[..., 1:2], c[..., -2:-1]
    else:
        lo, hi = c[..., :1], c[..., -1:]
    return np.concatenate([lo, c, hi], -1)


def voxel(g: np.ndarray, n: int, align_corners: bool) -> np.ndarray:
    return (g + 1) * (n - 1) / 2 if align_corners else ((g + 1) * n - 1) / 2


class TestBsplinePrefilter:
    @pytest.mark.parametrize("boundary", ["reflect", "mirror"])
    @pytest.mark.parametrize("n", [2, 3, 5, 16])
    def test_solves_the_interpolation_equations(self, boundary, n, device, dtype):
        s = np.random.default_rng(n).random((2, 3, n))
        c = bspline_prefilter(torch.from_numpy(s).to(device, dtype), boundary, spatial_dims=1).cpu().double().numpy()
        e = extend(c, boundary)
        back = (e[..., :-2] + 4 * e[..., 1:-1] + e[..., 2:]) / 6
        np.testing.assert_allclose(back, s, atol=50 * torch.finfo(dtype).eps, rtol=0)

    @pytest.mark.parametrize("boundary", ["reflect", "mirror"])
    def test_against_scipy(self, boundary):
        # scipy's half-sample initialisation is truncated on short axes: compare on long ones
        s = np.random.default_rng(0).random((1, 2, 9, 12, 10))
        ref = ndimage.spline_filter(s[0, 0], 3, mode=boundary)
        out = bspline_prefilter(torch.from_numpy(s), boundary)[0, 0].numpy()
        np.testing.assert_allclose(out, ref, atol=1e-10, rtol=0)

    def test_errors(self):
        with pytest.raises(ValueError, match="boundary must be one of"):
            bspline_prefilter(torch.zeros(1, 1, 4, 4), "wrap")


class TestSampleCubic:
    @pytest.mark.parametrize(("padding_mode", "align_corners", "scipy_mode"), SCIPY_MODES)
    @pytest.mark.parametrize("ndim", [2, 3])
    def test_against_scipy_map_coordinates(self, padding_mode, align_corners, scipy_mode, ndim, device, dtype):
        shape = (9, 11) if ndim == 2 else (6, 7, 8)
        gen = np.random.default_rng(ndim)
        x = gen.random((2, 2, *shape))
        g = gen.uniform(-1.4, 1.4, size=(2, *([5] * ndim), ndim))  # some points outside the image
        out = sample_cubic(
            torch.from_numpy(x).to(device, dtype), torch.from_numpy(g).to(device, dtype), padding_mode, align_corners
        )
        assert out.shape == (2, 2, *([5] * ndim)) and out.dtype == dtype
        ref = np.zeros_like(out.cpu().double().numpy())
        for b in range(2):
            coords = [voxel(g[b, ..., ndim - 1 - a], shape[a], align_corners) for a in range(ndim)]
            for c in range(2):
                ref[b, c] = ndimage.map_coordinates(x[b, c], coords, order=3, mode=scipy_mode, cval=0.0)
        np.testing.assert_allclose(out.cpu().double().numpy(), ref, atol=1e-4, rtol=0)

    @pytest.mark.parametrize("ndim", [2, 3])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_interpolates_and_reproduces_constants(self, ndim, align_corners, device):
        shape = (5, 6) if ndim == 2 else (4, 5, 6)
        x = torch.rand(1, 2, *shape, dtype=F64, generator=torch.Generator().manual_seed(1)).to(device)
        theta = torch.eye(ndim, ndim + 1, dtype=F64, device=device)[None]
        grid = F.affine_grid(theta, x.shape, align_corners=align_corners)
        for pm in ("zeros", "border", "reflection"):
            torch.testing.assert_close(sample_cubic(x, grid, pm, align_corners), x, atol=1e-8, rtol=0)
        ones = torch.ones_like(x)
        shifted = grid + 0.13
        for pm in ("border", "reflection"):
            torch.testing.assert_close(sample_cubic(ones, shifted, pm, align_corners), ones, atol=1e-12, rtol=0)

    def test_differs_from_keys_bicubic(self):
        # grid_sample's bicubic is Keys' convolution, not the B-spline: they agree at the nodes only
        x = torch.rand(1, 1, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(2))
        grid = F.affine_grid(torch.tensor([[[0.9, 0.1, 0.05], [-0.1, 0.9, 0.02]]], dtype=F64), x.shape, False)
        keys = F.grid_sample(x, grid, mode="bicubic", padding_mode="reflection", align_corners=False)
        assert (sample_cubic(x, grid, "reflection") - keys).abs().max() > 1e-3

    @pytest.mark.parametrize("ndim", [2, 3])
    @pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
    def test_gradcheck(self, ndim, padding_mode, device):
        shape = (4, 5) if ndim == 2 else (3, 4, 4)
        gen = torch.Generator().manual_seed(3)
        x = torch.rand(1, 1, *shape, dtype=F64, generator=gen).to(device).requires_grad_()
        g = (2.2 * torch.rand(1, *([2] * ndim), ndim, dtype=F64, generator=gen) - 1.1).to(device).requires_grad_()
        if ndim == 3 and padding_mode != "reflection":
            # the padded volume makes the image's numerical Jacobian slow; the map is linear in x
            # (checked in 2-D and with reflection), so check the grid alone here
            assert gradcheck(lambda b: sample_cubic(x.detach(), b, padding_mode), (g,))
        else:
            assert gradcheck(lambda a, b: sample_cubic(a, b, padding_mode), (x, g))

    def test_errors(self):
        with pytest.raises(ValueError, match="grid must have shape"):
            sample_cubic(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, 3))
        with pytest.raises(ValueError, match="padding_mode must be one of"):
            sample_cubic(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, 2), "wrap")
        with pytest.raises(ValueError, match="x must have shape"):
            sample_cubic(torch.zeros(1, 4, 4), torch.zeros(1, 4, 2))
