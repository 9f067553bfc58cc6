"""stnkit.geometry: the convention, independent references, properties, gradients, degenerate input.

References never come from the code under test: torch's own affine_grid/grid_sample,
torch.rot90, scipy.ndimage.map_coordinates, OpenCV and formulas written out here
from the documented convention (output -> input, normalised [-1, 1], x before y).
"""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from scipy.interpolate import RBFInterpolator
from torch.autograd import gradcheck

import stnkit
from stnkit.geometry import (
    GRID_LIMIT,
    MODES,
    PADDING_MODES,
    ThinPlateSpline,
    base_grid,
    compose_grid,
    from_pixel_matrix,
    get_transform,
    to_pixel_matrix,
    warp,
)

FAMILIES = ["translation", "attention", "similarity", "affine", "projective", "tps"]
MATRIX_FAMILIES = ["translation", "attention", "similarity", "affine", "projective"]
F64 = torch.float64

# affine_grid warns about unit-size grids with align_corners=True; the sizes are deliberate
pytestmark = pytest.mark.filterwarnings("ignore:Since version 1.3.0, affine_grid:UserWarning")


def centres(n: int, align_corners: bool) -> np.ndarray:
    """Normalised coordinates of the n pixel centres, written from the documented convention."""
    j = np.arange(n, dtype=np.float64)
    if align_corners:
        return 2.0 * j / (n - 1) - 1.0 if n > 1 else np.zeros(1)
    return (2.0 * j + 1.0) / n - 1.0


def ref_base_grid(h: int, w: int, align_corners: bool) -> torch.Tensor:
    """(H*W, 2) identity points, x before y, row-major (y outer)."""
    gy, gx = np.meshgrid(centres(h, align_corners), centres(w, align_corners), indexing="ij")
    return torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], axis=-1))


def rand_params(name: str, batch: int, strength: float = 1.0, seed: int = 0, dtype=F64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return get_transform(name).random(batch, strength, generator=gen, dtype=dtype)


def linear_image(h: int, w: int, align_corners: bool = False) -> torch.Tensor:
    """A (1, 2, H, W) image whose channels are affine functions of position.

    Bilinear interpolation reproduces affine functions exactly, so warping it
    once or several times gives the same values wherever nothing reads the padding.
    """
    g = ref_base_grid(h, w, align_corners).view(h, w, 2)
    a = 0.7 * g[..., 0] - 0.3 * g[..., 1] + 0.2
    b = -0.4 * g[..., 0] + 0.9 * g[..., 1] - 0.1
    return torch.stack([a, b])[None]


# ----------------------------------------------------------------------------------------
class TestIdentity:
    """family.identity leaves the image unchanged (bilinear), every family, both align_corners."""

    @pytest.mark.parametrize("name", FAMILIES)
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("channels", [1, 3])
    def test_float64_every_size(self, name, align_corners, channels):
        fam = get_transform(name)
        for h, w in [(5, 6), (28, 28), (7, 3), (1, 4), (9, 1), (32, 17)]:
            x = torch.rand(2, channels, h, w, dtype=F64)
            y = warp(x, fam.identity(2, dtype=F64), name, align_corners=align_corners)
            torch.testing.assert_close(y, x, atol=1e-6, rtol=0)

    @pytest.mark.parametrize("name", FAMILIES)
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("channels", [1, 3])
    def test_float32_small(self, name, align_corners, channels):
        # float32 holds 1e-6 on small sizes; on 28x28 affine_grid's own float32 rounding
        # of the base grid reaches ~2e-6 (see test_float32_28x28)
        fam = get_transform(name)
        for h, w in [(5, 6), (8, 8), (3, 4)]:
            x = torch.rand(2, channels, h, w)
            y = warp(x, fam.identity(2), name, align_corners=align_corners)
            torch.testing.assert_close(y, x, atol=1e-6, rtol=0)

    @pytest.mark.parametrize("name", FAMILIES)
    def test_float32_28x28(self, name):
        # honest bound for float32 at MNIST size: a few ulp of the [0, 1] values
        x = torch.rand(2, 1, 28, 28)
        y = warp(x, get_transform(name).identity(2), name)
        torch.testing.assert_close(y, x, atol=5e-6, rtol=0)

    @pytest.mark.parametrize("mode", ["nearest", "bicubic"])
    def test_other_modes(self, mode):
        x = torch.rand(1, 2, 6, 7, dtype=F64)
        for name in FAMILIES:
            y = warp(x, get_transform(name).identity(1, dtype=F64), name, mode=mode)
            torch.testing.assert_close(y, x, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------
class TestAffineMatchesTorch:
    """warp(x, theta, "affine") == F.grid_sample(x, F.affine_grid(theta)) bit for bit."""

    @pytest.mark.parametrize(
        ("mode", "padding_mode", "align_corners"), list(itertools.product(MODES, PADDING_MODES, [False, True]))
    )
    @pytest.mark.parametrize("dtype", [torch.float32, F64])
    def test_exact(self, mode, padding_mode, align_corners, dtype):
        sizes = [((7, 9), (7, 9)), ((7, 9), (5, 11)), ((4, 5), (9, 8))]
        for i, (in_size, out_size) in enumerate(sizes):
            x = torch.rand(3, 2, *in_size, dtype=dtype)
            theta = rand_params("affine", 3, strength=2.0, seed=i, dtype=dtype)  # large: exercises the padding
            grid = F.affine_grid(theta.view(3, 2, 3), [3, 2, *out_size], align_corners=align_corners)
            ref = F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
            kw = dict(out_size=out_size, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
            # stnkit builds the grid with one cached matrix product instead of affine_grid's
            # batched one: the points agree to rounding, and the sampler is torch's own
            ours = get_transform("affine").grid(theta, out_size, align_corners)
            torch.testing.assert_close(ours, grid, atol=4 * torch.finfo(dtype).eps, rtol=0)
            sampled = F.grid_sample(x, ours, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
            assert torch.equal(warp(x, theta, "affine", **kw), sampled)
            assert torch.equal(warp(x, theta.view(3, 2, 3), "affine", **kw), sampled)  # affine_grid's (B, 2, 3)
            assert torch.equal(stnkit.warp(x, theta, **kw), sampled)  # "affine" is the default
            if mode != "nearest":  # a rounding-size shift can move a nearest lookup by a whole pixel
                torch.testing.assert_close(sampled, ref, atol=100 * torch.finfo(dtype).eps, rtol=0)

    @pytest.mark.parametrize("dtype", [torch.float32, F64])
    def test_grid_equals_affine_grid(self, dtype):
        theta = rand_params("affine", 4, dtype=dtype)
        for ac in (False, True):
            ref = F.affine_grid(theta.view(4, 2, 3), [4, 1, 6, 10], align_corners=ac)
            ours = get_transform("affine").grid(theta, (6, 10), ac)
            torch.testing.assert_close(ours, ref, atol=4 * torch.finfo(dtype).eps, rtol=0)

    @pytest.mark.parametrize("name", ["translation", "attention", "similarity", "affine", "projective", "tps"])
    def test_identity_grid_is_exact(self, name):
        # the cached operators keep the identity exact: zero coefficients add nothing
        for ac in (False, True):
            fam = get_transform(name)
            ident = fam.identity(3, dtype=F64)
            assert torch.equal(fam.grid(ident, (5, 7), ac), base_grid((5, 7), ac, dtype=F64).expand(3, -1, -1, -1))


# ----------------------------------------------------------------------------------------
class TestFamilyEquivalences:
    """Each family against the affine warp it must reduce to."""

    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
    def test_projective_with_zero_last_row_is_affine(self, align_corners, mode):
        theta = rand_params("affine", 3, strength=1.5)
        proj = torch.cat([theta, torch.zeros(3, 2, dtype=F64)], dim=1)
        x = torch.rand(3, 2, 9, 7, dtype=F64)
        for out_size in [(9, 7), (5, 12)]:
            kw = dict(out_size=out_size, mode=mode, align_corners=align_corners)
            torch.testing.assert_close(warp(x, proj, "projective", **kw), warp(x, theta, "affine", **kw))

    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize(("grid_size", "reg"), [(4, 0.0), (3, 0.0), (5, 0.0), (4, 0.5)])
    def test_tps_reproduces_affine(self, align_corners, grid_size, reg):
        # move the documented control points (k x k over [-1, 1]^2, y outer, x inner) by an
        # affine map: the spline must equal that affine map everywhere, smoothing or not
        fam = get_transform("tps", grid_size=grid_size, reg=reg)
        theta = rand_params("affine", 2, strength=1.5, seed=grid_size)
        c = torch.linspace(-1, 1, grid_size, dtype=F64)
        cy, cx = torch.meshgrid(c, c, indexing="ij")
        ctrl = torch.stack([cx, cy], -1).reshape(-1, 2)
        a = theta.view(2, 2, 3)
        targets = ctrl @ a[:, :, :2].transpose(1, 2) + a[:, None, :, 2]
        offsets = (targets - ctrl).reshape(2, -1)
        x = torch.rand(2, 3, 8, 11, dtype=F64)
        for out_size in [(8, 11), (6, 4)]:
            ref = warp(x, theta, "affine", out_size=out_size, align_corners=align_corners)
            out = warp(x, offsets, fam, out_size=out_size, align_corners=align_corners)
            torch.testing.assert_close(out, ref, atol=1e-9, rtol=0)
        pts = torch.rand(2, 10, 2, dtype=F64) * 2.4 - 1.2  # also outside the control grid
        ref_pts = pts @ a[:, :, :2].transpose(1, 2) + a[:, None, :, 2]
        torch.testing.assert_close(fam.transform_points(offsets, pts), ref_pts, atol=1e-9, rtol=0)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_low_families_equal_affine_with_their_matrix(self, align_corners):
        # matrices written from the documented parameterisations
        s, ang, tx, ty = 0.8, 0.6, 0.3, -0.2
        cases = {
            "translation": ([tx, ty], [[1, 0, tx], [0, 1, ty]]),
            "attention": ([s, tx, ty], [[s, 0, tx], [0, s, ty]]),
            "similarity": (
                [s, ang, tx, ty],
                [[s * math.cos(ang), -s * math.sin(ang), tx], [s * math.sin(ang), s * math.cos(ang), ty]],
            ),
        }
        x = torch.rand(1, 3, 10, 12, dtype=F64)
        for name, (p, m) in cases.items():
            p = torch.tensor([p], dtype=F64)
            theta = torch.tensor([m], dtype=F64)
            torch.testing.assert_close(get_transform(name).matrix(p)[:, :2], theta, atol=1e-15, rtol=0)
            for mode in MODES:
                out = warp(x, p, name, mode=mode, align_corners=align_corners)
                ref = warp(x, theta, "affine", mode=mode, align_corners=align_corners)
                torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------------------
class TestIndependentReferences:
    """Regression against references that do not use grid_sample."""

    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("n", [6, 7])
    def test_quarter_turn_is_rot90(self, align_corners, n):
        # Output pixel (row i, col j) sits at p = (x_j, y_i) and reads the input at
        # R(pi/2) p = (cos*x - sin*y, sin*x + cos*y) = (-y_i, x_j): column n-1-i, row j.
        # So out[i, j] = in[j, n-1-i], which is torch.rot90(k=1, dims=(H, W)): with y down
        # a positive angle shows the content turned counter-clockwise on screen.
        x = torch.rand(2, 3, n, n, dtype=F64)
        for angle, k in [(math.pi / 2, 1), (-math.pi / 2, -1), (math.pi, 2)]:
            p = torch.tensor([[1.0, angle, 0.0, 0.0]], dtype=F64).expand(2, 4)
            out = warp(x, p, "similarity", align_corners=align_corners)
            torch.testing.assert_close(out, torch.rot90(x, k, dims=(-2, -1)), atol=1e-9, rtol=0)
        # the explicit index formula, in case rot90's direction were misremembered
        out = warp(x, torch.tensor([[1.0, math.pi / 2, 0, 0]] * 2, dtype=F64), "similarity")
        i, j = 1, 4
        torch.testing.assert_close(out[..., i, j], x[..., j, n - 1 - i], atol=1e-9, rtol=0)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_one_pixel_translation(self, align_corners):
        # tx = one pixel: the output pixel j reads input pixel j + 1 (content moves left)
        h, w = 5, 8
        x = torch.rand(1, 2, h, w, dtype=F64)
        step_x = 2.0 / (w - 1) if align_corners else 2.0 / w
        step_y = 2.0 / (h - 1) if align_corners else 2.0 / h
        out = warp(x, torch.tensor([[step_x, 0.0]], dtype=F64), "translation", align_corners=align_corners)
        torch.testing.assert_close(out[..., :-1], x[..., 1:], atol=1e-9, rtol=0)
        out = warp(x, torch.tensor([[0.0, -step_y]], dtype=F64), "translation", align_corners=align_corners)
        torch.testing.assert_close(out[..., 1:, :], x[..., :-1, :], atol=1e-9, rtol=0)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_affine_matches_scipy_map_coordinates(self, align_corners):
        h, w = 16, 21
        theta = rand_params("affine", 1, seed=3)
        img = np.random.default_rng(0).random((h, w))
        a = theta.view(2, 3).numpy()
        xs, ys = np.meshgrid(centres(w, align_corners), centres(h, align_corners))  # output points
        sx = a[0, 0] * xs + a[0, 1] * ys + a[0, 2]  # input points, normalised
        sy = a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
        if align_corners:  # normalised -> pixel index (inverse of `centres`)
            col, row = (sx + 1) * (w - 1) / 2, (sy + 1) * (h - 1) / 2
        else:
            col, row = ((sx + 1) * w - 1) / 2, ((sy + 1) * h - 1) / 2
        ref = ndimage.map_coordinates(img, [row, col], order=1, mode="nearest")
        out = warp(torch.from_numpy(img)[None, None], theta, "affine", align_corners=align_corners)[0, 0].numpy()
        inside = (col >= 0) & (col <= w - 1) & (row >= 0) & (row <= h - 1)
        assert inside.mean() > 0.5  # the comparison covers most of the image
        np.testing.assert_allclose(out[inside], ref[inside], atol=1e-9, rtol=0)

    @staticmethod
    def _opencv_case(name, m_pix, in_size, out_size, align_corners, seed):
        """Warp with OpenCV and stnkit; compare where OpenCV's source point is inside the image."""
        (h, w), (ho, wo) = in_size, out_size
        img = np.random.default_rng(seed).random((h, w)).astype(np.float32)
        if name == "affine":
            ref = cv2.warpAffine(img, m_pix[:2], (wo, ho), flags=cv2.INTER_LINEAR, borderValue=0)
        else:
            ref = cv2.warpPerspective(img, m_pix, (wo, ho), flags=cv2.INTER_LINEAR, borderValue=0)
        # source pixel of each destination pixel, from OpenCV's matrix alone
        jj, ii = np.meshgrid(np.arange(wo), np.arange(ho))
        src = np.linalg.inv(m_pix) @ np.stack([jj.ravel(), ii.ravel(), np.ones(jj.size)])
        with np.errstate(divide="ignore", invalid="ignore"):  # on the horizon: never inside
            col, row = (src[:2] / src[2]).reshape(2, ho, wo)
        inside = (col >= 0) & (col <= w - 1) & (row >= 0) & (row <= h - 1)
        assert inside.mean() > 0.4
        return img, ref, inside

    def _check(self, out, ref, inside):
        diff = np.abs(out - ref)[inside]
        # OpenCV rounds source coordinates to 1/32 px (INTER_BITS = 5): on [0, 1] noise that
        # is at most ~1/32; a half-pixel convention error would give errors near 0.5
        assert diff.max() < 0.04
        assert diff.mean() < 0.01

    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("out_size", [(20, 24), (15, 30)])
    def test_to_pixel_matrix_warp_affine(self, align_corners, out_size):
        in_size = (20, 24)
        theta = rand_params("affine", 1, seed=1)
        m = to_pixel_matrix(get_transform("affine").matrix(theta), in_size, out_size, align_corners)[0].numpy()
        img, ref, inside = self._opencv_case("affine", m, in_size, out_size, align_corners, seed=1)
        out = warp(torch.from_numpy(img)[None, None], theta.float(), "affine", out_size, align_corners=align_corners)
        self._check(out[0, 0].numpy(), ref, inside)

    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("out_size", [(20, 24), (26, 18)])
    def test_to_pixel_matrix_warp_perspective(self, align_corners, out_size):
        in_size = (20, 24)
        p = rand_params("projective", 1, strength=0.7, seed=2)
        m = to_pixel_matrix(get_transform("projective").matrix(p), in_size, out_size, align_corners)[0].numpy()
        img, ref, inside = self._opencv_case("projective", m, in_size, out_size, align_corners, seed=2)
        out = warp(torch.from_numpy(img)[None, None], p.float(), "projective", out_size, align_corners=align_corners)
        self._check(out[0, 0].numpy(), ref, inside)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_warp_perspective_across_the_horizon(self, align_corners):
        # w = 1 + 3x vanishes at x = -1/3 inside the image; left of it w < 0 and, as in
        # OpenCV, the division by a negative w still picks a point inside the image
        in_size = out_size = (21, 25)
        p = torch.tensor([[1.0, 0.0, 0.5, 0.0, 1.0, 0.0, 3.0, 0.0]], dtype=F64)
        m = to_pixel_matrix(get_transform("projective").matrix(p), in_size, out_size, align_corners)[0].numpy()
        img, ref, inside = self._opencv_case("projective", m, in_size, out_size, align_corners, seed=6)
        xs = centres(out_size[1], align_corners)
        assert inside[:, xs < -1 / 3].sum() > 20  # the w < 0 side is really compared
        out = warp(torch.from_numpy(img)[None, None], p.float(), "projective", align_corners=align_corners)
        self._check(out[0, 0].numpy(), ref, inside)

    @pytest.mark.parametrize(("grid_size", "reg"), [(4, 0.0), (3, 0.0), (5, 0.0), (4, 0.3)])
    def test_tps_matches_scipy_thin_plate_rbf(self, grid_size, reg):
        # scipy's thin_plate_spline kernel is r^2 log r; stnkit's is U = r^2 log r^2 = 2 r^2 log r
        # (documented in _tps_kernel), so stnkit's reg equals scipy's smoothing * 2
        fam = get_transform("tps", grid_size=grid_size, reg=reg)
        c = np.linspace(-1, 1, grid_size)
        cy, cx = np.meshgrid(c, c, indexing="ij")
        ctrl = np.stack([cx.ravel(), cy.ravel()], axis=-1)
        off = np.random.default_rng(grid_size).normal(0, 0.2, ctrl.shape)
        rbf = RBFInterpolator(ctrl, ctrl + off, kernel="thin_plate_spline", degree=1, smoothing=reg / 2)
        params = torch.from_numpy(off.reshape(1, -1))
        pts = np.random.default_rng(0).uniform(-1.2, 1.2, (40, 2))
        out = fam.transform_points(params, torch.from_numpy(pts)[None])[0].numpy()
        np.testing.assert_allclose(out, rbf(pts), atol=1e-9, rtol=0)
        for ac in (False, True):  # the cached grid path
            grid = fam.grid(params, (7, 9), ac).view(-1, 2).numpy()
            np.testing.assert_allclose(grid, rbf(ref_base_grid(7, 9, ac).numpy()), atol=1e-9, rtol=0)
        if reg == 0:  # an interpolating spline sends every control point to its target
            hit = fam.transform_points(params, torch.from_numpy(ctrl)[None])[0].numpy()
            np.testing.assert_allclose(hit, ctrl + off, atol=1e-9, rtol=0)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_from_pixel_matrix_of_opencv_rotation(self, align_corners):
        # a matrix made by OpenCV itself, converted to stnkit's convention
        in_size = out_size = (22, 19)
        m = np.vstack([cv2.getRotationMatrix2D((8.3, 11.1), 23.0, 0.9), [0, 0, 1]])
        img, ref, inside = self._opencv_case("affine", m, in_size, out_size, align_corners, seed=4)
        theta = from_pixel_matrix(torch.from_numpy(m)[None], in_size, out_size, align_corners)
        torch.testing.assert_close(theta[:, 2], torch.tensor([[0.0, 0.0, 1.0]], dtype=F64))
        out = warp(torch.from_numpy(img)[None, None], theta[:, :2].float(), "affine", align_corners=align_corners)
        self._check(out[0, 0].numpy(), ref, inside)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_pixel_matrix_roundtrip(self, align_corners):
        for name in ["affine", "projective"]:
            fam = get_transform(name)
            m = fam.matrix(rand_params(name, 3, seed=5))
            for out_size in [None, (9, 13)]:
                pix = to_pixel_matrix(m, (12, 10), out_size, align_corners)
                torch.testing.assert_close(from_pixel_matrix(pix, (12, 10), out_size, align_corners), m)
        theta = rand_params("affine", 2).view(2, 2, 3)  # (B, 2, 3) accepted too
        back = from_pixel_matrix(to_pixel_matrix(theta, (8, 8)), (8, 8))
        torch.testing.assert_close(back[:, :2], theta)


# ----------------------------------------------------------------------------------------
# hypothesis: well-conditioned parameters near the identity
def _params(name: str):
    small = st.floats(-0.4, 0.4)
    per_family = {
        "translation": [st.floats(-1.5, 1.5)] * 2,
        "attention": [st.floats(0.4, 2.0), st.floats(-1, 1), st.floats(-1, 1)],
        "similarity": [st.floats(0.4, 2.0), st.floats(-3.0, 3.0), st.floats(-1, 1), st.floats(-1, 1)],
        "affine": [small] * 6,
        "projective": [small] * 6 + [st.floats(-0.3, 0.3)] * 2,
        "tps": [st.floats(-0.3, 0.3)] * 32,
    }[name]
    ident = get_transform(name).identity(1, dtype=F64)[0]
    add_identity = name in ("affine", "projective")
    return st.tuples(*per_family).map(lambda v: (torch.tensor(v, dtype=F64) + (ident if add_identity else 0))[None])


def _matrix_identity(name):
    """(1, num_params) identity, to compare against or shrink towards."""
    return get_transform(name).identity(1, dtype=F64)


PROPERTY = settings(deadline=None, max_examples=25)


class TestProperties:
    @pytest.mark.parametrize("name", MATRIX_FAMILIES)
    def test_compose_with_inverse_is_identity(self, name):
        fam = get_transform(name)

        @PROPERTY
        @given(p=_params(name))
        def check(p):
            inv = fam.inverse(p)
            for q in (fam.compose(p, inv), fam.compose(inv, p)):
                torch.testing.assert_close(fam.matrix(q), torch.eye(3, dtype=F64)[None], atol=1e-9, rtol=0)
                torch.testing.assert_close(q, _matrix_identity(name), atol=1e-9, rtol=0)

        check()

    @pytest.mark.parametrize("name", MATRIX_FAMILIES)
    def test_compose_is_associative(self, name):
        fam = get_transform(name)

        @PROPERTY
        @given(a=_params(name), b=_params(name), c=_params(name))
        def check(a, b, c):
            left = fam.matrix(fam.compose(fam.compose(a, b), c))
            right = fam.matrix(fam.compose(a, fam.compose(b, c)))
            torch.testing.assert_close(left, right, atol=1e-9, rtol=1e-9)

        check()

    @pytest.mark.parametrize("name", MATRIX_FAMILIES)
    def test_compose_applies_b_first(self, name):
        fam = get_transform(name)

        @PROPERTY
        @given(a=_params(name), b=_params(name), seed=st.integers(0, 2**16))
        def check(a, b, seed):
            pts = torch.rand(1, 9, 2, dtype=F64, generator=torch.Generator().manual_seed(seed)) * 2 - 1
            chained = fam.transform_points(a, fam.transform_points(b, pts))
            torch.testing.assert_close(fam.transform_points(fam.compose(a, b), pts), chained, atol=1e-9, rtol=1e-9)

        check()

    @pytest.mark.parametrize("name", FAMILIES)
    def test_transform_points_matches_grid(self, name):
        fam = get_transform(name)

        @PROPERTY
        @given(p=_params(name), h=st.integers(2, 9), w=st.integers(2, 9), ac=st.booleans())
        def check(p, h, w, ac):
            grid = fam.grid(p, (h, w), ac).view(1, -1, 2)
            pts = fam.transform_points(p, ref_base_grid(h, w, ac)[None])
            torch.testing.assert_close(pts, grid, atol=1e-9, rtol=1e-9)

        check()

    @pytest.mark.parametrize("name", ["translation", "attention", "similarity", "affine"])
    def test_compose_equals_sequential_warps(self, name):
        # warp(warp(x, a), b) == warp(x, compose(a, b)) on a linear image (exact under bilinear)
        fam = get_transform(name)
        x = linear_image(32, 32)

        @PROPERTY
        @given(a=_params(name), b=_params(name))
        def check(a, b):
            # shrink towards the identity (scale <= 1.1, shift <= 0.15) so that from the
            # checked centre (|p| <= 0.36) both warps read well inside the image (|A(B(p))| < 0.85)
            a = a * 0.1 + _matrix_identity(name) * 0.9
            b = b * 0.1 + _matrix_identity(name) * 0.9
            seq = warp(warp(x, a, fam), b, fam)
            once = warp(x, fam.compose(a, b), fam)
            torch.testing.assert_close(seq[..., 12:-12, 12:-12], once[..., 12:-12, 12:-12], atol=1e-9, rtol=0)

        check()


# ----------------------------------------------------------------------------------------
class TestGradcheck:
    """Analytic gradients equal finite differences (float64, tiny sizes)."""

    @pytest.mark.parametrize("name", FAMILIES)
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_warp_params_and_image(self, name, align_corners):
        fam = get_transform(name)
        x = torch.rand(1, 1, 5, 6, dtype=F64, generator=torch.Generator().manual_seed(0)).requires_grad_()
        p = rand_params(name, 1, strength=0.5, seed=7).requires_grad_()
        assert gradcheck(lambda x, p: warp(x, p, fam, align_corners=align_corners), (x, p))
        # a different output size goes through the same code with another grid
        assert gradcheck(lambda x, p: warp(x, p, fam, out_size=(3, 4), align_corners=align_corners), (x, p))

    def test_bicubic(self):
        x = torch.rand(1, 2, 5, 6, dtype=F64).requires_grad_()
        p = rand_params("affine", 1, strength=0.5).requires_grad_()
        assert gradcheck(lambda x, p: warp(x, p, "affine", mode="bicubic", padding_mode="border"), (x, p))

    @pytest.mark.parametrize("name", FAMILIES)
    def test_transform_points(self, name):
        fam = get_transform(name)
        p = rand_params(name, 2, strength=0.5, seed=8).requires_grad_()
        pts = (torch.rand(2, 7, 2, dtype=F64) * 2 - 1).requires_grad_()
        assert gradcheck(fam.transform_points, (p, pts))

    def test_compose_grid(self):
        pa = rand_params("similarity", 1, 0.5).requires_grad_()
        pb = rand_params("tps", 1, 0.5).requires_grad_()
        assert gradcheck(lambda a, b: compose_grid([a, b], ["similarity", "tps"], (3, 4)), (pa, pb))


# ----------------------------------------------------------------------------------------
class TestDegenerate:
    """Degenerate transforms read the padding: finite output, never NaN."""

    @pytest.mark.parametrize("name", ["attention", "similarity", "affine", "projective"])
    def test_singular_matrix_gives_finite_constant_image(self, name):
        # all matrix entries except translation zero: every output pixel reads one input point
        fam = get_transform(name)
        p = {
            "attention": [0.0, 0.1, -0.2],
            "similarity": [0.0, 0.7, 0.1, -0.2],
            "affine": [0.0, 0.0, 0.1, 0.0, 0.0, -0.2],
            "projective": [0.0, 0.0, 0.1, 0.0, 0.0, -0.2, 0.0, 0.0],
        }[name]
        x = torch.rand(1, 2, 6, 7)
        for mode, pad in itertools.product(MODES, PADDING_MODES):
            out = warp(x, torch.tensor([p]), fam, mode=mode, padding_mode=pad)
            assert torch.isfinite(out).all()
            # constant per channel: the value at the single point (0.1, -0.2)
            assert torch.allclose(out, out[..., :1, :1].expand_as(out))

    def test_rank_one_affine_is_finite(self):
        x = torch.rand(2, 1, 8, 8)
        p = torch.tensor([[1.0, 2.0, 0.0, 2.0, 4.0, 0.0], [0.5, 0.5, 0.1, 0.5, 0.5, 0.1]])
        assert torch.isfinite(warp(x, p, "affine")).all()

    @pytest.mark.parametrize("name", FAMILIES)
    @pytest.mark.parametrize("dtype", [torch.float32, F64])
    def test_huge_params(self, name, dtype):
        fam = get_transform(name)
        x = torch.rand(2, 2, 5, 6, dtype=dtype)
        big = torch.finfo(dtype).max / 10
        signs = torch.randint(0, 2, (2, fam.num_params), generator=torch.Generator().manual_seed(0)) * 2 - 1
        for p in [
            torch.full((2, fam.num_params), 1e30, dtype=dtype),
            torch.full((2, fam.num_params), -1e30, dtype=dtype),
            signs.to(dtype) * 1e30,
            signs.to(dtype) * big,
        ]:
            grid = fam.grid(p, (5, 6))
            assert torch.isfinite(grid).all() and grid.abs().max() <= GRID_LIMIT
            for mode, pad, ac in itertools.product(MODES, PADDING_MODES, [False, True]):
                out = warp(x, p, fam, mode=mode, padding_mode=pad, align_corners=ac)
                assert torch.isfinite(out).all(), (mode, pad, ac)

    @pytest.mark.parametrize("name", FAMILIES)
    def test_huge_params_have_finite_gradients(self, name):
        fam = get_transform(name)
        p = torch.full((1, fam.num_params), 1e30, requires_grad=True)
        x = torch.rand(1, 1, 5, 6, requires_grad=True)
        warp(x, p, fam, padding_mode="border").sum().backward()
        assert torch.isfinite(p.grad).all() and torch.isfinite(x.grad).all()

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_projective_points_at_infinity(self, align_corners):
        # h31 = 4: the denominator 4x + 1 vanishes on the column x = -0.25, which is a pixel
        # centre of a 4-wide image (align_corners=False) or of a 9-wide one (True)
        w = 9 if align_corners else 4
        col = int(np.argmin(np.abs(centres(w, align_corners) + 0.25)))
        assert centres(w, align_corners)[col] == -0.25
        p = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 4.0, 0.0]], requires_grad=True)
        x = torch.rand(1, 3, 5, w) + 0.5  # strictly positive, so a zero is padding
        for pad in PADDING_MODES:
            out = warp(x, p, "projective", padding_mode=pad, align_corners=align_corners)
            assert torch.isfinite(out).all()
            if pad == "zeros":
                assert (out[..., col] == 0).all()  # the horizon reads the padding
        out.sum().backward()
        assert torch.isfinite(p.grad).all()
        pts = torch.tensor([[[-0.25, 0.3], [-0.25, -0.9]]])
        assert torch.isfinite(get_transform("projective").transform_points(p, pts)).all()

    @pytest.mark.parametrize("name", ["attention", "similarity", "affine", "projective"])
    def test_inverse_of_singular_raises(self, name):
        fam = get_transform(name)
        with pytest.raises(ValueError, match="singular"):
            fam.inverse(torch.zeros(1, fam.num_params))
        rank_one = {
            "attention": [0.0, 0.3, 0.3],
            "similarity": [0.0, 1.0, 0.3, 0.3],
            "affine": [1.0, 2.0, 0.0, 2.0, 4.0, 0.0],
            "projective": [1.0, 2.0, 0.0, 2.0, 4.0, 0.0, 0.0, 0.0],
        }[name]
        with pytest.raises(ValueError, match="singular"):
            fam.inverse(torch.tensor([rank_one]))

    @pytest.mark.parametrize("name", ["attention", "similarity"])
    def test_inverse_of_numerically_singular_raises(self, name):
        # a scale of 1e-40 is a float32 denormal: the LU pivot is not exactly zero but the
        # inverse overflows; it must raise, not return NaN parameters
        p = get_transform(name).identity(1)
        p[0, 0] = 1e-40
        with pytest.raises(ValueError, match="singular"):
            get_transform(name).inverse(p)

    def test_inverse_of_regular_is_finite(self):
        for name in ["attention", "similarity", "affine", "projective"]:
            inv = get_transform(name).inverse(rand_params(name, 4, seed=9))
            assert torch.isfinite(inv).all()


# ----------------------------------------------------------------------------------------
class TestTpsCache:
    """The spline's grid weights are computed once per (size, align_corners, dtype, device)."""

    def test_weights_computed_once(self, monkeypatch):
        fam = ThinPlateSpline(grid_size=3)  # a fresh instance, not the shared cached one
        calls = []
        real = fam.weights
        monkeypatch.setattr(fam, "weights", lambda pts: calls.append(1) or real(pts))
        p = fam.random(2, generator=torch.Generator().manual_seed(0))
        g1 = fam.grid(p, (6, 7))
        g2 = fam.grid(p * 2, (6, 7))
        assert len(calls) == 1
        ident = fam.grid(torch.zeros_like(p), (6, 7))
        torch.testing.assert_close(g2 - ident, 2 * (g1 - ident))  # the reused weights act linearly on offsets
        fam.grid(p, (6, 7), align_corners=True)
        fam.grid(p.double(), (6, 7))
        fam.grid(p, (7, 6))
        assert len(calls) == 4
        fam.grid(p, (6, 7), align_corners=True)
        fam.grid(p.double(), (6, 7))
        assert len(calls) == 4

    def test_same_object_returned(self):
        fam = get_transform("tps")
        a = fam.grid_weights((9, 5), device=torch.device("cpu"), dtype=torch.float32)
        b = fam.grid_weights((9, 5), device=torch.device("cpu"), dtype=torch.float32)
        assert a[0] is b[0] and a[1] is b[1]
        c = fam.grid_weights((9, 5), device=torch.device("cpu"), dtype=F64)
        assert c[1] is not a[1] and c[1].dtype == F64

    def test_get_transform_shares_the_instance(self):
        assert get_transform("tps") is get_transform("tps")
        assert get_transform("tps", grid_size=3) is not get_transform("tps")

    def test_cached_grid_equals_direct_spline(self):
        fam = get_transform("tps")
        p = rand_params("tps", 2, seed=11)
        for ac in (False, True):
            pts = ref_base_grid(5, 8, ac)[None].expand(2, -1, -1)
            torch.testing.assert_close(fam.grid(p, (5, 8), ac).view(2, -1, 2), fam.transform_points(p, pts))


# ----------------------------------------------------------------------------------------
class TestComposeGrid:
    """One sampling through compose_grid equals warping in series (params[0] first)."""

    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("last", ["tps", "projective", "affine"])
    def test_linear_image_exact(self, align_corners, last):
        # every stage but the last is affine-type, so each intermediate image stays linear
        # and the series of bilinear warps is exact where no stage reads the padding
        names = ["similarity", "affine", "translation", "attention", last]
        params = [rand_params(n, 1, strength=0.4, seed=20 + i) for i, n in enumerate(names)]
        x = linear_image(32, 32, align_corners)
        seq = x
        for n, p in zip(names, params):
            seq = warp(seq, p, n, align_corners=align_corners)
        grid = compose_grid(params, names, (32, 32), align_corners)
        once = F.grid_sample(x, grid, align_corners=align_corners)
        crop = (..., slice(10, -10), slice(10, -10))
        assert grid[:, 10:-10, 10:-10].abs().max() < 0.6  # the crop reads deep inside
        torch.testing.assert_close(seq[crop], once[crop], atol=1e-9, rtol=0)

    def test_smooth_image_tps_first(self):
        # a non-affine first stage makes the intermediate image non-linear; on a smooth image
        # the two differ only by interpolation error, while the wrong order differs a lot
        h = w = 48
        yy, xx = torch.meshgrid(torch.arange(h, dtype=F64), torch.arange(w, dtype=F64), indexing="ij")
        x = (torch.sin(xx / 10.0) * torch.cos(yy / 12.0))[None, None]
        names = ["tps", "projective", "similarity"]
        params = [rand_params(n, 1, strength=1.0, seed=30 + i) for i, n in enumerate(names)]
        seq = x
        for n, p in zip(names, params):
            seq = warp(seq, p, n)
        once = F.grid_sample(x, compose_grid(params, names, (h, w)), align_corners=False)
        wrong = F.grid_sample(x, compose_grid(params[::-1], names[::-1], (h, w)), align_corners=False)
        crop = (..., slice(12, -12), slice(12, -12))
        err = (seq[crop] - once[crop]).abs().max()
        assert err < 0.01
        assert (seq[crop] - wrong[crop]).abs().max() > 5 * err

    def test_single_stage_is_the_family_grid(self):
        for name in FAMILIES:
            p = rand_params(name, 2, seed=40)
            assert torch.equal(compose_grid([p], [name], (5, 7)), get_transform(name).grid(p, (5, 7)))

    def test_out_size_and_matrix_product(self):
        # for matrix families the chain is the matrix product T_0 T_1 T_2
        names = ["affine", "similarity", "projective"]
        params = [rand_params(n, 3, seed=50 + i) for i, n in enumerate(names)]
        m = torch.eye(3, dtype=F64)
        for n, p in zip(names, params):
            m = m @ get_transform(n).matrix(p)
        pts = ref_base_grid(4, 9, False)[None].expand(3, -1, -1)
        hom = torch.cat([pts, torch.ones_like(pts[..., :1])], -1) @ m.transpose(1, 2)
        ref = (hom[..., :2] / hom[..., 2:]).view(3, 4, 9, 2)
        torch.testing.assert_close(compose_grid(params, names, (4, 9)), ref)


class TestGuardOnlyWhenNeeded:
    """Grids skip the NaN/limit guard when the parameters prove it idle; the result must not change."""

    @pytest.mark.parametrize("name", FAMILIES)
    @given(strength=st.floats(0.0, 40.0), seed=st.integers(0, 2**16))
    @settings(max_examples=25, deadline=None)
    def test_same_as_guarded_reference(self, name, strength, seed):
        fam = get_transform(name)
        p = rand_params(name, 3, strength=strength, seed=seed)
        pts = ref_base_grid(6, 5, False)[None].expand(3, -1, -1)
        if name == "tps":
            ref = fam.transform_points(p, pts)
        else:  # the homogeneous product written out, with the documented guards
            m = fam.matrix(p)
            q = pts @ m[:, :2, :2].transpose(1, 2) + m[:, None, :2, 2]
            w = pts @ m[:, 2:, :2].transpose(1, 2) + m[:, None, 2:, 2]
            w = torch.where(w.abs() < 1e-8, torch.where(w < 0, -1e-8, 1e-8), w)
            ref = q / w
        ref = torch.nan_to_num(ref, nan=GRID_LIMIT, posinf=GRID_LIMIT, neginf=-GRID_LIMIT).clamp(
            -GRID_LIMIT, GRID_LIMIT
        )
        torch.testing.assert_close(fam.grid(p, (6, 5)).view(3, -1, 2), ref, atol=1e-9 * max(1.0, strength), rtol=1e-9)

    def test_projective_horizon_inside_the_square_is_guarded(self):
        # w = 1 - x / 0.375 vanishes on the pixel centres of column 5 of 8: guarded path, finite output
        p = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1 / 0.375, 0.0]], dtype=F64)
        grid = get_transform("projective").grid(p, (8, 8))
        assert torch.isfinite(grid).all() and grid.abs().max() <= GRID_LIMIT
        assert grid[0, :, 5].abs().max() == GRID_LIMIT  # the horizon itself reads the padding


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", FAMILIES)
def test_low_precision_follows_the_input(name, dtype):
    # dtype and device follow the input; the cached operators are kept per dtype
    fam = get_transform(name)
    x = torch.rand(3, 2, 12, 10).to(dtype)
    p = rand_params(name, 3, strength=0.5, seed=1, dtype=torch.float32).to(dtype)
    ref = warp(x.float(), p.float(), fam)  # the same (rounded) inputs in float32
    low = warp(x, p, fam)
    assert low.dtype == dtype
    # grid points rounded to the dtype move samples by up to a few eps x the image's slope (~5 per unit)
    torch.testing.assert_close(low.float(), ref, atol=20 * torch.finfo(dtype).eps, rtol=0)
